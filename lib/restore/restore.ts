/**
 * Restore VM Disk's engine: a backup (full or incremental) rebuilt into standalone images, onto the
 * VM's own disk files or into a folder (optionally defining a new VM on them). Every disk is
 * written under a temp name while every image of its chain is hashed against its manifest; only
 * when all disks are written, flushed and every hash matched are the temps renamed into place, so
 * a failed, cancelled or corrupted restore leaves every original disk as it was.
 */
import { isOurBitmap } from '../backup/backup';
import { HASH_FN } from '../backup/hostFiles';
import { formatBytes } from '../format';
import { newMarker, splitSections } from '../batch';
import { CHECK_CHAIN_FN } from '../catalog/consolidate';
import { readCatalog } from '../catalog/list';
import { LibvirtBackupError, isLibvirtBackupError } from '../errors';
import { discoverVms } from '../libvirt/discover';
import { rewriteForNewVm, type NewVmXml } from '../libvirt/domainXml';
import { defineDomain, deleteCheckpointMetadata, domainNameTaken, listCheckpoints, startDomain, stopDomain } from '../libvirt';
import { scriptArgv } from '../shell';
import type { SshConnection } from '../ssh';
import { acquireVmLock } from '../store/lock';
import { parseBackupPath } from '../store/paths';
import { readSavedDomainXml } from '../store/savedDomain';
import { RESTORE_TEMP_SUFFIX, planRestore, type RestoreFacts, type RestorePlan, type RestoreRequest } from './plan';

/**
 * `sh -c RESTORE_SCRIPT lvb-restore MARKER MODE FORCE NDISKS [OUT SPEC FORMAT]... [IMAGE SHA256]...`
 *
 * Checks each output (MODE folder: the name must be free; original: a regular file no process
 * holds open, which `qemu-img info` proves by taking its lock), the free space per file system
 * (`qemu-img measure`), then converts each chain SPEC (a qemu `json:` description) into
 * `<OUT>.lvb-restore.partial` while a background loop hashes every chain IMAGE against its
 * manifest. A mismatch ends it (FORCE 1: reported as `MARKER mismatch` instead). Each temp is
 * flushed while it is hashed (`MARKER file <bytes>` + sha256), takes the old file's owner and
 * mode, and only then are all renamed over their outputs. Any failure or signal removes the temps.
 */
export const RESTORE_SCRIPT = `export LC_ALL=C
m=$1 mode=$2 force=$3 nd=$4; shift 4
${HASH_FN}
${CHECK_CHAIN_FN}
fail() { echo "$1" >&2; exit "\${2:-1}"; }
work=$(mktemp -d) || exit 1
made= ok=
checker=
cleanup() {
  [ -n "$checker" ] && kill "$checker" 2>/dev/null
  if [ -z "$ok" ]; then for j in $made; do rm -f -- "$(cat "$work/out$j")${RESTORE_TEMP_SUFFIX}"; done; fi
  rm -rf -- "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP PIPE
i=0
while [ $i -lt "$nd" ]; do
  i=$((i+1))
  printf '%s' "$1" > "$work/out$i"; printf '%s' "$2" > "$work/spec$i"; printf '%s' "$3" > "$work/fmt$i"
  shift 3
done
inuse() { qemu-img info -f "$2" --output=json -- "$1" >/dev/null 2>"$work/err" || fail "$1 is in use or cannot be opened (a running VM holds it?): $(tail -n 1 "$work/err")" 65; }
i=0
while [ $i -lt "$nd" ]; do
  i=$((i+1))
  out=$(cat "$work/out$i") fmt=$(cat "$work/fmt$i")
  d=\${out%/*}; [ -n "$d" ] || d=/
  if [ "$mode" = folder ]; then
    mkdir -p -- "$d" || exit 1
    if [ -e "$out" ] || [ -L "$out" ]; then fail "$out exists already: a restore to a folder never replaces a file" 65; fi
  else
    [ -f "$out" ] && [ ! -L "$out" ] || fail "$out is missing, not a regular file, or a symbolic link" 65
    inuse "$out" "$fmt"
  fi
  [ -d "$d" ] || fail "$d is not a folder" 65
  p="$out${RESTORE_TEMP_SUFFIX}"
  if [ -L "$p" ] || { [ -e "$p" ] && [ ! -f "$p" ]; }; then fail "$p is a symbolic link or not a regular file: nothing was changed" 65; fi
  rm -f -- "$p" || exit 1
  r=$(qemu-img measure --output=json -O "$fmt" "$(cat "$work/spec$i")" | awk -F'[:,]' '/"required"/ { gsub(/ /, "", $2); print $2 }') || exit 1
  case $r in ''|*[!0-9]*) fail "qemu-img measure gave no size for $out";; esac
  echo "$r" > "$work/need$i"; stat -c %d -- "$d" > "$work/dev$i" || exit 1
done
i=0
while [ $i -lt "$nd" ]; do
  i=$((i+1)) need=0 j=0
  while [ $j -lt "$nd" ]; do j=$((j+1)); [ "$(cat "$work/dev$j")" = "$(cat "$work/dev$i")" ] && need=$((need + $(cat "$work/need$j"))); done
  out=$(cat "$work/out$i")
  free=$(df -P -B1 -- "\${out%/*}/" | awk 'NR == 2 { print $4 }')
  if [ "$need" -gt "$free" ]; then echo "$m nospace $need"; echo "$free \${out%/*}"; exit 0; fi
done
check_chain "$work/bad" "$@" &
checker=$!
i=0
while [ $i -lt "$nd" ]; do
  i=$((i+1))
  out=$(cat "$work/out$i") fmt=$(cat "$work/fmt$i")
  made="$made $i"
  qemu-img convert -O "$fmt" "$(cat "$work/spec$i")" "$out${RESTORE_TEMP_SUFFIX}" || exit 1
done
wait "$checker"
checker=
if [ -s "$work/bad" ]; then
  [ "$force" = 1 ] || { cat "$work/bad" >&2; exit 66; }
  echo "$m mismatch"; cat "$work/bad"
fi
i=0
while [ $i -lt "$nd" ]; do
  i=$((i+1))
  out=$(cat "$work/out$i") p="$(cat "$work/out$i")${RESTORE_TEMP_SUFFIX}"
  # The flush runs while the image is hashed from the page cache; both must succeed.
  sync -- "$p" &
  flush=$!
  h=$(hash "$p") || exit 1
  wait "$flush" || fail "flushing $p to disk failed"
  if [ "$mode" = original ]; then
    chown --reference="$out" -- "$p" 2>/dev/null
    chmod --reference="$out" -- "$p" || exit 1
  fi
  echo "$m file $(stat -c %s -- "$p")"
  echo "\${h%% *}"
done
# A VM started meanwhile holds its disk open: renaming over it now would lose its writes.
if [ "$mode" = original ]; then i=0; while [ $i -lt "$nd" ]; do i=$((i+1)); inuse "$(cat "$work/out$i")" "$(cat "$work/fmt$i")"; done; fi
ok=1
i=0
while [ $i -lt "$nd" ]; do
  i=$((i+1))
  out=$(cat "$work/out$i")
  mv -fT -- "$out${RESTORE_TEMP_SUFFIX}" "$out" || { ok=; echo "$m renamed $((i-1))"; exit 1; }
  sync -- "\${out%/*}/" 2>/dev/null
done
echo "$m renamed $nd"`;

/** A restore reads the whole chain and writes whole disks: hours on a big disk, never forever. */
export const DEFAULT_RESTORE_TIMEOUT_MS = 12 * 3_600_000;

export interface RestoreOptions {
	uri: string;
	/** The backup folder (`path` of a List Backups or Backup VM Disk item). */
	backupPath: string;
	request: RestoreRequest;
	/** Graceful shutdown's bound (Shut Down First). */
	shutdownTimeoutMs?: number;
	/** Written into the per-VM lock file of the destination while the restore runs. */
	holder: string;
	signal?: AbortSignal;
	timeoutMs?: number;
}

export interface RestoredDiskResult {
	target: string;
	path: string;
	format: 'qcow2' | 'raw';
	bytes: number;
	sha256: string;
}

export interface RestoreResult {
	vm: string;
	backupId: string;
	backupPath: string;
	target: 'original' | 'folder';
	disks: RestoredDiskResult[];
	/** Whether the VM was stopped first (Shut Down First). */
	stopped: boolean;
	domain?: { name: string; uuid: string; defined: true; started: boolean };
	/** Our checkpoints of the VM whose bitmaps went with the old images (metadata removed). */
	checkpointsRemoved: string[];
	durationMs: number;
	warnings: string[];
}

export async function restoreBackup(ssh: SshConnection, options: RestoreOptions): Promise<RestoreResult> {
	const started = Date.now();
	const location = parseBackupPath(options.backupPath);
	const lock = await acquireVmLock(ssh, `${location.dest}/${location.vmDir}`, options.holder, location.vm);
	try {
		const catalog = await readCatalog(ssh, location.dest, [location.vmDir], options.signal);
		const backup = catalog.backups.find((candidate) => candidate.id === location.id);
		if (!backup) throw new LibvirtBackupError('INVALID_INPUT', `${location.path} is not a backup (no valid manifest there)`);
		const facts = options.request.target === 'original' ? await vmFacts(ssh, options.uri, backup.manifest.vm.uuid, options.signal) : {};
		const plan = planRestore(backup, catalog, options.request, facts);
		const warnings = [...plan.warnings];
		if (plan.defineVm && (await domainNameTaken(ssh, options.uri, plan.defineVm.name))) {
			throw new LibvirtBackupError('INVALID_INPUT', `A VM named ${JSON.stringify(plan.defineVm.name)} already exists on the host: choose another name for the new VM`);
		}
		// The new VM's definition is made before any disk is written (the disks' paths are planned): a
		// saved domain.xml that cannot be used refuses the restore, not the end of it.
		const newVm = plan.defineVm
			? rewriteForNewVm(await readSavedDomainXml(ssh, backup.path, options.signal), { name: plan.defineVm.name, disks: plan.disks.map(({ target, path, format }) => ({ target, path, format })) })
			: undefined;
		if (plan.stop) {
			await stopDomain(ssh, options.uri, plan.stop.uuid, {
				graceful: plan.stop.mode !== 'force',
				forceAfterTimeout: plan.stop.mode === 'graceful-then-force',
				timeoutMs: options.shutdownTimeoutMs ?? 120_000,
				signal: options.signal,
			});
		}
		const disks = await writeDisks(ssh, plan, options, warnings);
		const checkpointsRemoved = plan.vmUuid ? await dropStaleCheckpoints(ssh, options.uri, plan.vmUuid, warnings) : [];
		const domain = plan.defineVm && newVm ? await defineNewVm(ssh, options.uri, plan.defineVm.start, newVm, warnings) : undefined;
		return {
			vm: backup.manifest.vm.name,
			backupId: backup.id,
			backupPath: backup.path,
			target: plan.target,
			disks,
			stopped: plan.stop !== undefined,
			...(domain ? { domain } : {}),
			checkpointsRemoved,
			durationMs: Date.now() - started,
			warnings,
		};
	} finally {
		await lock.release({ removeCreatedFolder: true });
	}
}

async function vmFacts(ssh: SshConnection, uri: string, uuid: string, signal?: AbortSignal): Promise<RestoreFacts> {
	try {
		const [vm] = (await discoverVms(ssh, uri, { domains: [uuid], excludeDevices: [] }, signal)).vms;
		return { vm: { uuid: vm.uuid, name: vm.name, state: vm.state, persistent: vm.persistent, disks: vm.disks.map((disk) => ({ target: disk.target, type: disk.type, format: disk.format, path: disk.source.path })) } };
	} catch (error) {
		if (isLibvirtBackupError(error, 'VM_NOT_FOUND')) return {};
		throw error;
	}
}

async function writeDisks(ssh: SshConnection, plan: RestorePlan, options: RestoreOptions, warnings: string[]): Promise<RestoredDiskResult[]> {
	const marker = newMarker();
	const images = plan.disks.flatMap((disk) => disk.layers.flatMap((layer) => [layer.path, layer.sha256]));
	const argv = scriptArgv(RESTORE_SCRIPT, 'lvb-restore', [marker, plan.target, plan.force ? '1' : '0', String(plan.disks.length), ...plan.disks.flatMap((disk) => [disk.path, disk.spec, disk.format]), ...images]);
	let stdout: string;
	try {
		({ stdout } = await ssh.run(argv, { label: `restoring ${plan.backup.path}`, signal: options.signal, timeoutMs: options.timeoutMs ?? DEFAULT_RESTORE_TIMEOUT_MS }));
	} catch (error) {
		if (isLibvirtBackupError(error, 'COMMAND_FAILED') && error.details.exitCode === 66) {
			throw new LibvirtBackupError('BACKUP_FAILED', `Backup ${plan.backup.id} is damaged, nothing was restored and no disk was changed: ${String(error.details.stderr ?? '').trim()}. Verify Checksum tells more; Force restores it anyway.`);
		}
		throw error;
	}
	const sections = splitSections(stdout, marker);
	const noSpace = sections.find((section) => section.kind === 'nospace');
	if (noSpace) {
		const [free, ...where] = noSpace.body.trim().split(' ');
		throw new LibvirtBackupError('NO_SPACE', `Not enough space on ${where.join(' ')} to restore: need ${formatBytes(Number(noSpace.arg))}, ${formatBytes(Number(free))} free`);
	}
	const mismatch = sections.find((section) => section.kind === 'mismatch');
	if (mismatch) warnings.push(`restored with Force although the backup does not match its manifest: ${mismatch.body.trim().split('\n').join('; ')}`);
	const files = sections.filter((section) => section.kind === 'file');
	if (files.length !== plan.disks.length || sections.find((section) => section.kind === 'renamed')?.arg !== String(plan.disks.length)) {
		throw new LibvirtBackupError('COMMAND_FAILED', `Restoring ${plan.backup.path} reported ${files.length} images for ${plan.disks.length} disks`);
	}
	return plan.disks.map((disk, index) => {
		const sha256 = files[index].body.trim();
		const bytes = Number(files[index].arg);
		if (!/^[0-9a-f]{64}$/.test(sha256) || !Number.isSafeInteger(bytes)) throw new LibvirtBackupError('COMMAND_FAILED', `Could not hash the restored ${disk.path}`);
		return { target: disk.target, path: disk.path, format: disk.format, bytes, sha256 };
	});
}

/**
 * The restored images carry no bitmaps, so the VM's checkpoints of ours (any destination's) name
 * bitmaps that are gone: their metadata goes, and the next backup is a full. Checkpoints of other
 * tools are stale too, but not ours to remove: named in a warning.
 */
async function dropStaleCheckpoints(ssh: SshConnection, uri: string, uuid: string, warnings: string[]): Promise<string[]> {
	try {
		const all = await listCheckpoints(ssh, uri, uuid);
		const ours = all.filter(isOurBitmap);
		const others = all.filter((name) => !isOurBitmap(name));
		if (others.length > 0) warnings.push(`checkpoints of other tools now name bitmaps the restored disks do not have: ${others.join(', ')}`);
		await deleteCheckpointMetadata(ssh, uri, uuid, ours);
		return ours;
	} catch (error) {
		warnings.push(`the VM's checkpoints could not be removed (the next backup may fail over to a full): ${(error as Error).message}`);
		return [];
	}
}

async function defineNewVm(ssh: SshConnection, uri: string, start: boolean, rewritten: NewVmXml, warnings: string[]): Promise<RestoreResult['domain']> {
	if (rewritten.dropped.length > 0) warnings.push(`the new VM has no disk ${rewritten.dropped.join(', ')} (not restored)`);
	warnings.push(...rewritten.warnings);
	const domain = await defineDomain(ssh, uri, rewritten.xml);
	if (start) {
		try {
			await startDomain(ssh, uri, domain.uuid);
		} catch (error) {
			throw new LibvirtBackupError('COMMAND_FAILED', `VM ${JSON.stringify(domain.name)} (${domain.uuid}) was defined on the restored disks but did not start: ${(error as Error).message}`);
		}
	}
	return { ...domain, defined: true, started: start };
}
