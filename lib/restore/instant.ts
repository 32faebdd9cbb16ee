/**
 * Instant recovery: boot a VM straight from a backup without copying it. Per disk a qcow2 overlay
 * (in a folder of the host's own, never in the backup destination) over the read-only backup
 * chain, a new domain on the overlays, started in seconds whatever the disk size. Then either
 * make it permanent (the chain merged into standalone disks while the VM keeps running) or
 * discard it; the backup's images are never written either way.
 *
 * While the VM exists, every backup folder of its chain holds our in-use marker
 * (lib/store/instant.ts), written under the VM folder's lock, so a Prune (which plans under the
 * same lock) never removes or consolidates what the VM runs on.
 */
import { performance } from 'node:perf_hooks';
import { newMarker, splitSections } from '../batch';
import { jsonSpec } from '../catalog/consolidate';
import { readCatalog, type CatalogBackup } from '../catalog/list';
import { BackupVerifier } from '../catalog/verify';
import { LibvirtBackupError } from '../errors';
import { defineDomain, startDomain, stopDomain, undefineDomain } from '../libvirt/domains';
import { parseDomainXml, rewriteForNewVm } from '../libvirt/domainXml';
import {
	abortLeftCopy,
	blockCopyPivot,
	definedDisks,
	definedDomainUuids,
	instantDomainXml,
	parseInstantMetadata,
	readDomain,
	redefineDomain,
	standaloneDomainXml,
	type InstantMetadata,
} from '../libvirt/instant';
import { scriptArgv } from '../shell';
import type { SshConnection } from '../ssh';
import { INSTANT_MARKER_FORMAT, INSTANT_MARKER_PREFIX, INSTANT_MARKER_SUFFIX, instantMarkerName, isUuid, serializeInstantMarker, type InstantUse } from '../store/instant';
import { acquireVmLock } from '../store/lock';
import { vmDirName } from '../store/layout';
import { MANIFEST_FILE } from '../store/manifest';
import { parseBackupPath } from '../store/paths';
import { readSavedDomainXml } from '../store/savedDomain';
import { checkOverlayDir, planInstant, type InstantPlan } from './instantPlan';

const SHORT_TIMEOUT_MS = 120_000;
/** An offline merge reads the whole chain: hours on a big disk, never forever. */
const CONVERT_TIMEOUT_MS = 12 * 3_600_000;

/**
 * `sh -c OVERLAY_SCRIPT lvb-instant-overlays MARKER DIR [FILE BACKING FORMAT BYTES]...`: makes DIR
 * (not through a link) and in it each FILE, a qcow2 overlay whose header names BACKING, created
 * without opening it (`-u`: no header of the backup is read here). An existing FILE is refused;
 * on failure the overlays made so far go. Answers the host name and each overlay's allocation.
 */
const OVERLAY_SCRIPT = `export LC_ALL=C
m=$1 dir=$2; shift 2
if [ -L "$dir" ]; then echo "$dir is a symbolic link" >&2; exit 65; fi
mkdir -p -- "$dir" || exit 1
if [ -L "$dir" ] || [ ! -d "$dir" ]; then echo "$dir is not a folder" >&2; exit 65; fi
cd -- "$dir" || exit 1
ok= made=
trap '[ -n "$ok" ] || rm -f -- $made' EXIT
trap 'exit 130' INT TERM HUP
echo "$m host $(uname -n)"
while [ $# -ge 4 ]; do
  f=$1 b=$2 fmt=$3 size=$4; shift 4
  if [ -e "$f" ] || [ -L "$f" ]; then echo "$dir/$f already exists: discard the instant-recovery VM that uses it, or choose another name or folder" >&2; exit 65; fi
  qemu-img create -q -f qcow2 -u -b "$b" -F "$fmt" "$f" "$size" || exit 1
  made="$made $f"
done
ok=1`;

/**
 * `sh -c FILES_SCRIPT lvb-instant-files MARKER OP PATH...`: OP size prints each regular file's
 * size and allocated bytes; OP remove removes each path that is a regular file (a link or
 * anything else is left and reported).
 */
const FILES_SCRIPT = `export LC_ALL=C
m=$1 op=$2; shift 2
i=0
for p in "$@"; do
  i=$((i+1))
  if [ -L "$p" ] || { [ -e "$p" ] && [ ! -f "$p" ]; }; then echo "$m skipped $i"; continue; fi
  [ -e "$p" ] || { echo "$m missing $i"; continue; }
  if [ "$op" = remove ]; then rm -f -- "$p" && echo "$m removed $i" || echo "$m failed $i"
  else echo "$m file $i"; stat -c '%s %b %B' -- "$p"
  fi
done
echo "$m end"`;

/**
 * `sh -c MARK_SCRIPT lvb-instant-mark MARKER OP DEST VMDIR NAME DATA ID...`: OP mark writes DATA
 * as NAME into each backup folder (temp file created O_EXCL, renamed over: a planted link is
 * replaced, never written through); OP unmark removes NAME. Nothing is done through a symbolic
 * link: not the VM folder, not a backup folder.
 */
const MARK_SCRIPT = `export LC_ALL=C
m=$1 op=$2 dest=$3 v=$4 name=$5 data=$6; shift 6
case $name in ${INSTANT_MARKER_PREFIX}*${INSTANT_MARKER_SUFFIX}) ;; *) echo "not a marker name" >&2; exit 64;; esac
case $name in */*) echo "not a marker name" >&2; exit 64;; esac
case $v in .*|*[!A-Za-z0-9_+.%-]*|'') echo "not a VM folder name" >&2; exit 64;; esac
if ! cd -- "$dest" 2>/dev/null || [ -L "$v" ] || [ ! -d "$v" ] || ! cd -- "$v"; then
  for id in "$@"; do echo "$m refused $id"; echo "the VM folder $dest/$v is missing or a symbolic link"; done
  echo "$m end"; exit 0
fi
for id in "$@"; do
  case $id in [0-9]*) ;; *) echo "$m refused $id"; echo "not a backup id"; continue;; esac
  case $id in *[!0-9A-Za-z-]*) echo "$m refused $id"; echo "not a backup id"; continue;; esac
  if [ -L "$id" ] || [ ! -d "$id" ]; then echo "$m refused $id"; echo "missing or a symbolic link"; continue; fi
  f="$id/$name"
  if [ "$op" = mark ]; then
    if [ -L "$id/${MANIFEST_FILE}" ] || [ ! -f "$id/${MANIFEST_FILE}" ]; then echo "$m refused $id"; echo "no manifest"; continue; fi
    if rm -f -- "$f.tmp" && printf '%s' "$data" | dd of="$f.tmp" conv=excl,fsync status=none && mv -fT -- "$f.tmp" "$f"; then echo "$m done $id"; continue; fi
    rm -f -- "$f.tmp"
  else
    [ -e "$f" ] || [ -L "$f" ] || { echo "$m absent $id"; continue; }
    if [ -d "$f" ] && [ ! -L "$f" ]; then echo "$m refused $id"; echo "$f is a folder"; continue; fi
    if rm -f -- "$f"; then echo "$m done $id"; continue; fi
  fi
  echo "$m failed $id"
done
echo "$m end"`;

/**
 * `sh -c CONVERT_SCRIPT lvb-instant-convert DEST SPEC`: merges a shut-off VM's disk (SPEC, a
 * `json:` chain naming every layer) into DEST, written as DEST.partial and renamed when flushed.
 */
const CONVERT_SCRIPT = `dest=$1 spec=$2
p="$dest.partial"
if [ -e "$dest" ] || [ -L "$dest" ]; then echo "$dest already exists" >&2; exit 65; fi
if [ -L "$p" ]; then echo "$p is a symbolic link" >&2; exit 65; fi
rm -f -- "$p" || exit 1
trap 'rm -f -- "$p"' EXIT
trap 'exit 130' INT TERM HUP
qemu-img convert -O qcow2 "$spec" "$p" || exit 1
sync -- "$p" || exit 1
mv -T -- "$p" "$dest" || exit 1
trap - EXIT`;

/**
 * `sh -c TARGETS_SCRIPT lvb-instant-targets DIR FILE...`: makes DIR (not through a link); refuses
 * any FILE that exists, so a standalone disk never replaces a file.
 */
const TARGETS_SCRIPT = `dir=$1; shift
if [ -L "$dir" ]; then echo "$dir is a symbolic link" >&2; exit 65; fi
mkdir -p -- "$dir" || exit 1
if [ -L "$dir" ] || [ ! -d "$dir" ]; then echo "$dir is not a folder" >&2; exit 65; fi
for f in "$@"; do
  if [ -e "$dir/$f" ] || [ -L "$dir/$f" ] || [ -e "$dir/$f.partial" ] || [ -L "$dir/$f.partial" ]; then echo "$dir/$f already exists" >&2; exit 65; fi
done`;

export interface InstantRecoverRequest {
	uri: string;
	/** A backup folder (List Backups' path). */
	backupPath: string;
	/** Folder on the host for the overlays (outside the backup destination); made if missing. */
	overlayDir: string;
	/** Name of the new domain. */
	name: string;
	/** Start the new domain (default true). */
	start?: boolean;
	/** Hash what no earlier valid verification vouches for before booting (default true). */
	verifyFirst?: boolean;
	/** Written into the VM folder's lock while the markers are written. */
	lockHolder?: string;
}

export interface InstantOverlay {
	target: string;
	path: string;
	/** Bytes allocated on the host: what the recovery has written so far. */
	bytes: number;
}

export interface InstantRecoverResult {
	operation: 'instantRecover';
	name: string;
	uuid: string;
	backupPath: string;
	/** Backup folders the VM runs on, nearest first. */
	chain: string[];
	overlays: InstantOverlay[];
	bytesWritten: number;
	started: boolean;
	/** From the call to the domain running (or defined, when not started). */
	secondsToRunning: number;
	/** trusted: an earlier valid verification vouched for every image; hashed: verified now; unverified: Verify First was off. */
	verification: 'trusted' | 'hashed' | 'unverified';
	bytesHashed: number;
	verifySeconds: number;
	warnings: string[];
	/** In-use markers on the chain whose domain no longer exists on this host (see Discard). */
	staleMarkers: (InstantUse & { backup: string })[];
}

export async function instantRecover(ssh: SshConnection, request: InstantRecoverRequest, signal?: AbortSignal): Promise<InstantRecoverResult> {
	const started = performance.now();
	const location = parseBackupPath(request.backupPath);
	const catalog = await readCatalog(ssh, location.dest, [location.vmDir], signal);
	const planRequest = { backupId: location.id, backups: catalog.backups, dest: location.dest, overlayDir: request.overlayDir, name: request.name, now: new Date() };
	const plan = planInstant({ ...planRequest, verifyFirst: request.verifyFirst ?? true });

	let verifySeconds = 0;
	if (plan.verification === 'hash') {
		const verifyStart = performance.now();
		const verified = await new BackupVerifier(ssh).verify(plan.backup.path, { signal });
		verifySeconds = (performance.now() - verifyStart) / 1000;
		if (!verified.valid) {
			throw new LibvirtBackupError('INVALID_INPUT', `${plan.backup.path} was not booted: its verification found it ${verified.status} (${verified.problems.join('; ') || 'see its verification.json'})`);
		}
	}

	const saved = await readSavedDomainXml(ssh, plan.backup.path, signal);
	const newVm = rewriteForNewVm(saved, { name: request.name, disks: plan.disks.map((disk) => ({ target: disk.target, path: disk.overlay, format: 'qcow2' })) });
	const metadata: InstantMetadata = {
		backup: plan.backup.path,
		chain: plan.chain.map((member) => member.path),
		overlays: plan.disks.map((disk) => ({ target: disk.target, path: disk.overlay })),
		createdAt: new Date().toISOString(),
	};
	const xml = instantDomainXml(newVm.xml, plan.disks.map((disk) => ({ target: disk.target, overlay: disk.overlay, chain: disk.chain })), metadata);
	const warnings = [...plan.warnings, ...newVm.warnings, ...(newVm.dropped.length > 0 ? [`disks not in the backup are left out of the new VM: ${newVm.dropped.join(', ')}`] : [])];

	const overlayDir = checkOverlayDir(request.overlayDir, location.dest);
	const host = await createOverlays(ssh, overlayDir, plan, signal);
	const overlayPaths = plan.disks.map((disk) => disk.overlay);
	let domain: { name: string; uuid: string } | undefined;
	let marked = false;
	let running = false;
	try {
		domain = await defineDomain(ssh, request.uri, xml);
		const lock = await acquireVmLock(ssh, `${location.dest}/${location.vmDir}`, request.lockHolder ?? `n8n instant recovery of ${plan.backup.id}`, plan.backup.vm);
		try {
			// Under the lock Prune plans under: the chain must still be there, as planned.
			const fresh = await readCatalog(ssh, location.dest, [location.vmDir], signal);
			const again = planInstant({ ...planRequest, backups: fresh.backups, verifyFirst: false });
			if (JSON.stringify(again.disks) !== JSON.stringify(plan.disks)) throw new LibvirtBackupError('COMMAND_FAILED', `The chain of ${plan.backup.path} changed while the VM was being prepared; try again`);
			marked = true;
			await markChain(ssh, 'mark', plan.chain, domain, host, plan.backup.path, signal);
		} finally {
			await lock.release();
		}
		if (request.start ?? true) {
			await startDomain(ssh, request.uri, domain.uuid);
			running = true;
		}
	} catch (error) {
		if (domain) {
			if (running) await stopDomain(ssh, request.uri, domain.uuid, { graceful: false, timeoutMs: 30_000 }).catch(() => undefined);
			await undefineDomain(ssh, request.uri, domain.uuid).catch(() => undefined);
			if (marked) await markChain(ssh, 'unmark', plan.chain, domain, host, plan.backup.path).catch(() => undefined);
		}
		await fileOp(ssh, 'remove', overlayPaths).catch(() => undefined);
		throw error;
	}
	const secondsToRunning = (performance.now() - started) / 1000;
	const sizes = await fileOp(ssh, 'size', overlayPaths, signal);
	const overlays = plan.disks.map((disk, index): InstantOverlay => ({ target: disk.target, path: disk.overlay, bytes: sizes[index]?.allocated ?? 0 }));
	const staleMarkers = await staleMarkersOf(ssh, request.uri, plan.chain, signal);
	return {
		operation: 'instantRecover',
		name: domain.name,
		uuid: domain.uuid,
		backupPath: plan.backup.path,
		chain: plan.chain.map((member) => member.path),
		overlays,
		bytesWritten: overlays.reduce((total, overlay) => total + overlay.bytes, 0),
		started: running,
		secondsToRunning,
		verification: plan.verification === 'hash' ? 'hashed' : plan.verification,
		bytesHashed: plan.bytesToHash,
		verifySeconds,
		warnings,
		staleMarkers,
	};
}

export interface MakePermanentRequest {
	uri: string;
	/** The instant-recovery VM: name or UUID. */
	domain: string;
	/** Folder for the standalone disks (outside the backup destination); made if missing. */
	targetDir: string;
}

export interface MakePermanentResult {
	operation: 'makePermanent';
	name: string;
	uuid: string;
	/** live: copied while the VM ran and pivoted onto the copies; offline: merged while shut off. */
	mode: 'live' | 'offline';
	disks: { target: string; path: string; bytes: number }[];
	bytesWritten: number;
	seconds: number;
	backupPath: string;
	overlaysRemoved: string[];
	markersRemoved: string[];
	warnings: string[];
}

export async function makePermanent(ssh: SshConnection, request: MakePermanentRequest, signal?: AbortSignal): Promise<MakePermanentResult> {
	const started = performance.now();
	const { info, metadata, name } = await instantDomain(ssh, request.uri, request.domain, signal);
	const backup = parseBackupPath(metadata.backup);
	const targetDir = checkOverlayDir(request.targetDir, backup.dest, 'disk folder');
	const disks = metadata.overlays.map((overlay) => ({ target: overlay.target, path: `${targetDir}/${vmDirName(name)}.${overlay.target}.qcow2`, format: 'qcow2' as const }));
	const live = info.state === 'running' || info.state === 'paused';
	// A run cut short after some pivots is finished by the next: a disk already on its copy is done.
	const onCopy = new Set(live ? definedDisks(info.xml).filter((current) => disks.some((disk) => disk.target === current.target && disk.path === current.path && current.chain.length === 0)).map((current) => current.target) : []);
	const todo = disks.filter((disk) => !onCopy.has(disk.target));
	// A run killed mid-copy before its own cleanup leaves the copy job (and its file) on the VM.
	const leftCopies = live ? definedDisks(info.xml).filter((current) => todo.some((disk) => disk.target === current.target && disk.path === current.mirror)) : [];
	for (const copy of leftCopies) await abortLeftCopy(ssh, request.uri, info.uuid, copy.target, copy.mirror ?? '', signal);
	await ssh.run(scriptArgv(TARGETS_SCRIPT, 'lvb-instant-targets', [targetDir, ...todo.map((disk) => disk.path.slice(targetDir.length + 1))]), { label: 'prepare the disk folder', signal, timeoutMs: SHORT_TIMEOUT_MS });

	if (live) {
		for (const disk of todo) await blockCopyPivot(ssh, request.uri, info.uuid, disk.target, disk.path, signal);
	} else {
		const defined = new Map(definedDisks(info.inactiveXml).map((disk) => [disk.target, disk]));
		for (const disk of disks) {
			const current = defined.get(disk.target);
			if (!current || current.path !== metadata.overlays.find((overlay) => overlay.target === disk.target)?.path) {
				throw new LibvirtBackupError('INVALID_INPUT', `Disk ${disk.target} of ${name} is no longer on its instant-recovery overlay: nothing was changed`);
			}
			const spec = jsonSpec([{ path: current.path, format: current.format }, ...current.chain]);
			await ssh.run(scriptArgv(CONVERT_SCRIPT, 'lvb-instant-convert', [disk.path, spec]), { label: `qemu-img convert ${disk.target}`, signal, timeoutMs: CONVERT_TIMEOUT_MS });
		}
	}
	// libvirt 9.0 points the persistent definition at a pivoted copy itself; the redefine makes that
	// so for the offline merge too, and drops our metadata: the VM is an ordinary one from now on.
	const after = await readDomain(ssh, request.uri, info.uuid, signal);
	if (!after) throw new LibvirtBackupError('VM_NOT_FOUND', `VM ${name} disappeared while its disks were made permanent`);
	await redefineDomain(ssh, request.uri, standaloneDomainXml(after.inactiveXml, disks), signal);
	const check = await readDomain(ssh, request.uri, info.uuid, signal);
	for (const disk of disks) {
		const now = check && definedDisks(check.inactiveXml).find((candidate) => candidate.target === disk.target);
		if (!now || now.path !== disk.path || now.chain.length > 0) throw new LibvirtBackupError('COMMAND_FAILED', `The definition of ${name} does not point disk ${disk.target} at ${disk.path}: its overlay and the backup markers were kept`);
	}
	const overlayPaths = metadata.overlays.map((overlay) => overlay.path);
	const removed = await fileOp(ssh, 'remove', overlayPaths, signal);
	const markersRemoved = await unmarkAll(ssh, metadata.chain, info.uuid, signal);
	const sizes = await fileOp(ssh, 'size', disks.map((disk) => disk.path), signal);
	const written = disks.map((disk, index) => ({ target: disk.target, path: disk.path, bytes: sizes[index]?.allocated ?? 0 }));
	return {
		operation: 'makePermanent',
		name,
		uuid: info.uuid,
		mode: live ? 'live' : 'offline',
		disks: written,
		bytesWritten: written.reduce((total, disk) => total + disk.bytes, 0),
		seconds: (performance.now() - started) / 1000,
		backupPath: metadata.backup,
		overlaysRemoved: overlayPaths.filter((_path, index) => removed[index]?.status === 'removed'),
		markersRemoved,
		warnings: overlayPaths.filter((_path, index) => removed[index]?.status !== 'removed').map((path) => `overlay ${path} was not removed (${removed[overlayPaths.indexOf(path)]?.status ?? 'unknown'})`),
	};
}

export interface DiscardRequest {
	uri: string;
	/** The instant-recovery VM: name or UUID (a UUID when the VM is gone and only its markers are left). */
	domain: string;
	/** Only when the VM no longer exists: the backup whose chain still carries its marker. */
	backupPath?: string;
}

export interface DiscardResult {
	operation: 'discard';
	uuid: string;
	name?: string;
	/** false: the VM was already gone and only its markers were cleared. */
	domainRemoved: boolean;
	backupPath: string;
	overlaysRemoved: string[];
	markersRemoved: string[];
	warnings: string[];
}

export async function discardInstant(ssh: SshConnection, request: DiscardRequest, signal?: AbortSignal): Promise<DiscardResult> {
	const found = await readDomain(ssh, request.uri, request.domain, signal);
	if (!found) return clearStaleMarkers(ssh, request, signal);
	const { info, metadata, name } = await instantDomain(ssh, request.uri, request.domain, signal, found);
	await stopDomain(ssh, request.uri, info.uuid, { graceful: false, timeoutMs: 30_000, signal });
	await undefineDomain(ssh, request.uri, info.uuid);
	// Only files that are both in our metadata and the disks the definition ran on.
	const sources = new Set(definedDisks(info.inactiveXml).map((disk) => disk.path));
	const overlayPaths = metadata.overlays.map((overlay) => overlay.path).filter((path) => sources.has(path));
	const removed = await fileOp(ssh, 'remove', overlayPaths, signal);
	const markersRemoved = await unmarkAll(ssh, metadata.chain, info.uuid, signal);
	return {
		operation: 'discard',
		uuid: info.uuid,
		name,
		domainRemoved: true,
		backupPath: metadata.backup,
		overlaysRemoved: overlayPaths.filter((_path, index) => removed[index]?.status === 'removed'),
		markersRemoved,
		warnings: overlayPaths.filter((_path, index) => removed[index]?.status !== 'removed').map((path) => `overlay ${path} was not removed (${removed[overlayPaths.indexOf(path)]?.status ?? 'unknown'})`),
	};
}

/**
 * A VM that is gone (undefined by hand) leaves its markers keeping the chain: given its UUID and
 * the backup, they are removed. Its overlay files are not known here (a marker is untrusted and
 * names none): the folder the VM was recovered into is the user's to clean.
 */
async function clearStaleMarkers(ssh: SshConnection, request: DiscardRequest, signal?: AbortSignal): Promise<DiscardResult> {
	const uuid = request.domain.trim().toLowerCase();
	if (!isUuid(uuid) || !request.backupPath) {
		throw new LibvirtBackupError(
			'VM_NOT_FOUND',
			`VM ${JSON.stringify(request.domain)} does not exist on the host. To clear the in-use markers a vanished instant-recovery VM left, give its domain UUID (shown in the prune reason) and the backup path.`,
		);
	}
	const location = parseBackupPath(request.backupPath);
	const catalog = await readCatalog(ssh, location.dest, [location.vmDir], signal);
	const backup = catalog.backups.find((candidate) => candidate.id === location.id);
	if (!backup) throw new LibvirtBackupError('INVALID_INPUT', `No backup at ${location.path}`);
	const chain = ancestry(backup, catalog.backups);
	const markersRemoved = await unmarkAll(ssh, chain.map((member) => member.path), uuid, signal);
	return {
		operation: 'discard',
		uuid,
		domainRemoved: false,
		backupPath: backup.path,
		overlaysRemoved: [],
		markersRemoved,
		warnings: markersRemoved.length === 0 ? [`no marker of domain ${uuid} was found on the chain of ${backup.path}`] : [`VM ${uuid} no longer exists: only its markers were removed; delete its overlay files by hand if they are still there`],
	};
}

function ancestry(backup: CatalogBackup, backups: readonly CatalogBackup[]): CatalogBackup[] {
	const byId = new Map(backups.map((candidate) => [candidate.id, candidate]));
	const chain: CatalogBackup[] = [];
	for (let member: CatalogBackup | undefined = backup; member && !chain.includes(member); member = member.manifest.parent === undefined ? undefined : byId.get(member.manifest.parent)) chain.push(member);
	return chain;
}

async function instantDomain(ssh: SshConnection, uri: string, ref: string, signal?: AbortSignal, known?: Awaited<ReturnType<typeof readDomain>>) {
	const info = known ?? (await readDomain(ssh, uri, ref, signal));
	if (!info) throw new LibvirtBackupError('VM_NOT_FOUND', `VM not found: ${ref}`);
	const metadata = parseInstantMetadata(info.inactiveXml);
	if (!metadata) throw new LibvirtBackupError('INVALID_INPUT', `VM ${ref} is not an instant-recovery VM (its definition has no instant-recovery metadata): nothing was changed`);
	return { info, metadata, name: parseDomainXml(info.inactiveXml).name };
}

async function createOverlays(ssh: SshConnection, overlayDir: string, plan: InstantPlan, signal?: AbortSignal): Promise<string> {
	const marker = newMarker();
	const args = plan.disks.flatMap((disk) => [disk.overlay.slice(overlayDir.length + 1), disk.chain[0].path, disk.chain[0].format, String(disk.virtualBytes)]);
	const { stdout } = await ssh.run(scriptArgv(OVERLAY_SCRIPT, 'lvb-instant-overlays', [marker, overlayDir, ...args]), { label: 'qemu-img create (overlays)', signal, timeoutMs: SHORT_TIMEOUT_MS });
	return splitSections(stdout, marker).find((section) => section.kind === 'host')?.arg.trim() ?? '';
}

type FileOutcome = { status: 'removed' | 'skipped' | 'missing' | 'failed' | 'file'; bytes?: number; allocated?: number };

async function fileOp(ssh: SshConnection, op: 'size' | 'remove', paths: readonly string[], signal?: AbortSignal): Promise<FileOutcome[]> {
	if (paths.length === 0) return [];
	const marker = newMarker();
	const { stdout } = await ssh.run(scriptArgv(FILES_SCRIPT, 'lvb-instant-files', [marker, op, ...paths]), { label: op === 'remove' ? 'remove overlays' : 'stat', signal, timeoutMs: SHORT_TIMEOUT_MS });
	const outcomes: FileOutcome[] = paths.map(() => ({ status: 'failed' }));
	for (const section of splitSections(stdout, marker)) {
		const index = Number(section.arg) - 1;
		if (!(index >= 0 && index < paths.length)) continue;
		if (section.kind === 'file') {
			const [bytes, blocks, blockSize] = section.body.trim().split(' ').map(Number);
			outcomes[index] = { status: 'file', bytes, allocated: blocks * blockSize };
		} else if (['removed', 'skipped', 'missing', 'failed'].includes(section.kind)) {
			outcomes[index] = { status: section.kind as FileOutcome['status'] };
		}
	}
	return outcomes;
}

/** Writes (or removes) the domain's marker in every backup folder of the chain; a mark that fails throws. */
async function markChain(ssh: SshConnection, op: 'mark' | 'unmark', chain: readonly CatalogBackup[], domain: { name: string; uuid: string }, host: string, backup: string, signal?: AbortSignal): Promise<void> {
	const [first] = chain;
	const data = serializeInstantMarker({ format: INSTANT_MARKER_FORMAT, version: 1, domain, host, backup, createdAt: new Date().toISOString() });
	const outcomes = await markerOp(ssh, op, first.dest, first.vmDir, domain.uuid, data, chain.map((member) => member.id), signal);
	const failed = outcomes.filter((outcome) => outcome.status !== 'done');
	if (failed.length > 0) throw new LibvirtBackupError('COMMAND_FAILED', `Could not ${op} the backups the VM runs on: ${failed.map((outcome) => `${outcome.id} ${outcome.status} ${outcome.detail}`.trim()).join('; ')}`);
}

/** Removes the domain's marker from each backup folder path (all in one VM folder, as our chains are). */
async function unmarkAll(ssh: SshConnection, paths: readonly string[], uuid: string, signal?: AbortSignal): Promise<string[]> {
	const locations = paths.map((path) => parseBackupPath(path));
	const removed: string[] = [];
	const groups = new Map<string, typeof locations>();
	for (const location of locations) groups.set(`${location.dest}\0${location.vmDir}`, [...(groups.get(`${location.dest}\0${location.vmDir}`) ?? []), location]);
	for (const group of groups.values()) {
		const outcomes = await markerOp(ssh, 'unmark', group[0].dest, group[0].vmDir, uuid, '', group.map((location) => location.id), signal);
		for (const outcome of outcomes) if (outcome.status === 'done') removed.push(`${group[0].dest}/${group[0].vmDir}/${outcome.id}/${instantMarkerName(uuid)}`);
	}
	return removed;
}

async function markerOp(ssh: SshConnection, op: 'mark' | 'unmark', dest: string, vmDir: string, uuid: string, data: string, ids: readonly string[], signal?: AbortSignal) {
	const marker = newMarker();
	const { stdout } = await ssh.run(scriptArgv(MARK_SCRIPT, 'lvb-instant-mark', [marker, op, dest, vmDir, instantMarkerName(uuid), data, ...ids]), {
		label: op === 'mark' ? 'mark the backups in use' : 'remove the in-use markers',
		signal,
		timeoutMs: SHORT_TIMEOUT_MS,
	});
	const sections = splitSections(stdout, marker);
	if (!sections.some((section) => section.kind === 'end')) throw new LibvirtBackupError('PARSE_ERROR', 'The marker script ended early (no end marker)');
	return ids.map((id) => {
		const section = sections.find((candidate) => candidate.kind !== 'end' && candidate.arg.trim() === id);
		return { id, status: section?.kind ?? 'failed', detail: section?.body.trim() ?? '' };
	});
}

async function staleMarkersOf(ssh: SshConnection, uri: string, chain: readonly CatalogBackup[], signal?: AbortSignal): Promise<InstantRecoverResult['staleMarkers']> {
	const uses = chain.flatMap((member) => (member.inUse ?? []).map((use) => ({ ...use, backup: member.path })));
	if (uses.length === 0) return [];
	const defined = await definedDomainUuids(ssh, uri, signal);
	return uses.filter((use) => !defined.has(use.uuid));
}
