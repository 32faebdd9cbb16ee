/**
 * How disk data gets into a backup folder: `qemu-img convert` for a VM that is shut off, a push-mode
 * `virsh backup-begin` job (one point in time for all disks) for a running or paused VM. Each
 * strategy creates the folder (with the incomplete marker) and writes `<file>.partial` images in
 * ONE remote command, and leaves hashing and the manifest to backup.ts.
 */
import { posix } from 'node:path';
import { LibvirtBackupError } from '../errors';
import { newMarker, splitSections, type RemoteStep } from '../batch';
import { backupXml, checkpointXml, mergeOverlays, pushJobStep, runOnOverlays, type DiscoveredDisk, type DiscoveredVm, type DiskOverlay, type Quiesce } from '../libvirt';
import { scriptArgv } from '../shell';
import type { SshConnection } from '../ssh';
import { INCOMPLETE_MARKER, isBackupId, type Consistency } from '../store/manifest';
import { PENDING_FILE } from './hostFiles';

export interface Progress {
	phase: 'copy' | 'hash' | 'finalize';
	target?: string;
	percent: number;
	processedBytes?: number;
	message: string;
}

export interface DiskPlan {
	disk: DiscoveredDisk;
	/** Image file name in the backup folder. */
	file: string;
	/** For an incremental: the parent checkpoint this disk's changes are read against. */
	incrementalFrom?: string;
	/** For an incremental: backing file (relative) the written image must name. */
	backingFile?: string;
}

export interface StrategyContext {
	ssh: SshConnection;
	uri: string;
	vm: DiscoveredVm;
	dir: string;
	disks: DiskPlan[];
	compress: boolean;
	quiesce: Quiesce;
	/** libvirt checkpoint to create with this backup (not for copies or offline backups). */
	checkpoint?: string;
	signal?: AbortSignal;
	timeoutMs?: number;
	/** Read sources that a running VM holds open (`qemu-img -U`): the snapshot fallback's bases. */
	forceShare?: boolean;
	onProgress: (progress: Progress) => void;
	warn: (warning: string) => void;
}

export interface StrategyResult {
	consistency: Consistency;
	/** Seconds spent writing each disk's image. */
	seconds: Map<string, number>;
}

const CONVERT_SCRIPT = `export LC_ALL=C
dir=$1 marker=$2 compress=$3 share=$4 m=$5; shift 5
mkdir -- "$dir" && : >"$dir/$marker" || exit 1
i=0
while [ $# -gt 0 ]; do
  format=$1 source=$2 file=$3; shift 3
  echo "$m disk $i"
  if [ "$compress" = 1 ]; then c=-c; else c=-p; fi
  if [ "$share" = 1 ]; then u=-U; else u=-p; fi
  qemu-img convert -p $c $u -f "$format" -O qcow2 -- "$source" "$dir/$file.partial" || exit 1
  i=$((i+1))
done
echo "$m done $i"
`;

interface Convert {
	argv: string[];
	/** Feeds the command's output: reports progress, times each disk. */
	onStdout(chunk: Buffer): void;
	/** Seconds spent writing each disk's image (call when the command has ended). */
	seconds(): Map<string, number>;
}

/** The command that writes every disk's image, and the reader of its progress. */
function convert(context: StrategyContext): Convert {
	const args = context.disks.flatMap((plan) => {
		const source = plan.disk.source.path as string;
		if (!source.startsWith('/')) throw new LibvirtBackupError('INVALID_INPUT', `Disk ${plan.disk.target} has a relative source path "${source}"`);
		// Always name the source format: probing a raw disk's content for a format header is unsafe.
		return [plan.disk.format ?? 'raw', source, plan.file];
	});
	const marker = newMarker();
	const seconds = new Map<string, number>();
	let output = '';
	let current = -1;
	let currentStarted = Date.now();
	let lastPercent = -1;
	const finishDisk = () => {
		if (current >= 0) seconds.set(context.disks[current].disk.target, (Date.now() - currentStarted) / 1000);
	};
	return {
		argv: scriptArgv(CONVERT_SCRIPT, 'lvb-convert', [context.dir, INCOMPLETE_MARKER, context.compress ? '1' : '0', context.forceShare ? '1' : '0', marker, ...args]),
		onStdout: (chunk) => {
			output += chunk.toString('utf8');
			const sections = splitSections(output, marker);
			const disks = sections.filter((section) => section.kind === 'disk').length - 1;
			if (disks > current || sections.some((section) => section.kind === 'done')) {
				finishDisk();
				current = disks;
				currentStarted = Date.now();
				lastPercent = -1;
			}
			const match = /\((\d+(?:\.\d+)?)\/100%\)[^(]*$/.exec(sections.at(-1)?.body ?? '');
			const percent = match ? Math.floor(Number(match[1])) : -1;
			if (percent > lastPercent && current >= 0 && current < context.disks.length) {
				lastPercent = percent;
				const target = context.disks[current].disk.target;
				context.onProgress({ phase: 'copy', target, percent, message: `${target}: ${percent}%` });
			}
			// Keep only the current disk's output: progress lines would otherwise pile up.
			const lastMarker = output.lastIndexOf(`${marker} `);
			if (lastMarker > 0) output = output.slice(lastMarker);
		},
		seconds: () => {
			if (!seconds.has(context.disks.at(-1)!.disk.target)) finishDisk();
			return seconds;
		},
	};
}

/** Shut-off VM: each disk flattened (backing chain included) into a standalone sparse qcow2. */
export async function offlineConvert(context: StrategyContext): Promise<StrategyResult> {
	const command = convert(context);
	await context.ssh.run(command.argv, { label: 'qemu-img convert', signal: context.signal, timeoutMs: context.timeoutMs, onStdout: command.onStdout });
	return { consistency: 'offline', seconds: command.seconds() };
}

/**
 * Running or paused VM: one push-mode backup job for all disks, frozen guest when possible, as a
 * step of a batched command (the hashing follows it in the same exec). `onEnd`: the job has ended.
 */
export function pushBackupStep(context: StrategyContext, onEnd: () => void = () => undefined): RemoteStep<StrategyResult> {
	const started = Date.now();
	let ended: number | undefined;
	let quiesce = context.quiesce;
	if (context.vm.state === 'paused' && quiesce !== 'off') {
		// A paused guest cannot answer its agent: its disks are as the pause left them.
		if (quiesce === 'require') {
			throw new LibvirtBackupError('BACKUP_FAILED', `Quiesce is required but VM "${context.vm.name}" is paused, so its guest agent cannot freeze the filesystems. Resume it, or set Quiesce to Auto.`);
		}
		context.warn('VM is paused: crash-consistent');
		quiesce = 'off';
	}
	const job = pushJobStep(
		{
			uri: context.uri,
			uuid: context.vm.uuid,
			dir: context.dir,
			markerFile: INCOMPLETE_MARKER,
			backupXml: backupXml(
				context.vm.disks.map((disk) => disk.target),
				context.disks.map((plan) => ({ target: plan.disk.target, file: `${context.dir}/${plan.file}.partial`, incrementalFrom: plan.incrementalFrom })),
			),
			checkpoint: context.checkpoint
				? {
						name: context.checkpoint,
						xml: checkpointXml(
							context.checkpoint,
							context.vm.disks.map((disk) => disk.target),
							// Bitmaps live in qcow2 images only: other disks are backed up in full every time.
							context.disks.filter((plan) => plan.disk.format === 'qcow2').map((plan) => plan.disk.target),
						),
					}
				: undefined,
			quiesce,
		},
		context.ssh.target.username,
		(progress) => {
			const percent = progress.totalBytes > 0 ? Math.floor((progress.processedBytes / progress.totalBytes) * 100) : 0;
			context.onProgress({ phase: 'copy', percent, processedBytes: progress.processedBytes, message: `backup job: ${percent}%` });
		},
		() => {
			ended = Date.now();
			onEnd();
		},
	);
	return {
		...job,
		parse: (stdout, exitCode) => {
			const result = job.parse(stdout, exitCode);
			if (result.noFreezeReason) context.warn(`${result.noFreezeReason}: crash-consistent`);
			const elapsed = ((ended ?? Date.now()) - started) / 1000;
			return { consistency: result.frozen ? 'application' : 'crash', seconds: new Map(context.disks.map((plan) => [plan.disk.target, elapsed])) };
		},
	};
}

const OVERLAY_PREFIX = '.lvb-overlay-';

/**
 * Where a snapshot backup puts a disk's overlay: beside the disk file, so that the guest's writes
 * during the copy land where its disk lives and a full destination cannot stop them; for a block
 * device (whose folder is /dev), in the VM's backup folder. The VM's UUID in the name keeps VMs
 * whose disks share a folder apart.
 */
export function overlayPath(disk: Pick<DiscoveredDisk, 'type' | 'source'>, vmDir: string, uuid: string, id: string, target: string): string {
	const dir = disk.type === 'file' ? posix.dirname(disk.source.path as string) : vmDir;
	return `${dir === '/' ? '' : dir}/${OVERLAY_PREFIX}${uuid}-${id}-${target}.qcow2`;
}

/**
 * Fallback for hosts without push-mode backup-begin: overlays on the disks (one atomic snapshot,
 * one point in time), copy the now-unchanging bases, merge the overlays back (blockcommit --active
 * --pivot), all in one host script that merges whatever happens to this process or its connection.
 * The pending file is written before the snapshot and removed after the merge, so a run whose host
 * script was killed too is rolled back by the next one (see recoverPendingOverlays).
 */
export async function snapshotBackup(context: StrategyContext, vmDir: string, id: string): Promise<StrategyResult> {
	const { vm } = context;
	const overlays: DiskOverlay[] = context.disks.map((plan) => ({ target: plan.disk.target, overlay: overlayPath(plan.disk, vmDir, vm.uuid, id, plan.disk.target) }));
	const copy = convert({ ...context, forceShare: true });
	const snapshot = await runOnOverlays(
		context.ssh,
		{
			uri: context.uri,
			uuid: vm.uuid,
			overlays,
			allTargets: vm.disks.map((disk) => disk.target),
			quiesce: vm.state === 'paused' ? 'off' : context.quiesce,
			pendingFile: `${vmDir}/${PENDING_FILE}`,
			pendingContent: JSON.stringify({ uuid: vm.uuid, overlays }),
			command: copy.argv,
		},
		copy.onStdout,
		context.signal,
		context.timeoutMs,
	);
	if (snapshot.noFreezeReason) context.warn(`${snapshot.noFreezeReason}: crash-consistent`);
	return { consistency: snapshot.frozen ? 'application' : 'crash', seconds: copy.seconds() };
}

/** A value read from the destination, quoted (no line breaks) and cut short, for an error message. */
function shown(value: string): string {
	return JSON.stringify(value.length > 200 ? `${value.slice(0, 200)}…` : value);
}

/**
 * The pending file as read back from the destination, which others may write: accepted only when
 * it is what snapshotBackup writes for THIS VM, each overlay at the very path overlayPath gives for
 * that disk's base as the domain XML names it (the overlay's own base when the VM still runs on
 * it: beside it, or in the VM's backup folder had it been a block device). Anything else is refused
 * before anything is changed.
 */
export function validatePendingOverlays(text: string, vm: DiscoveredVm, vmDir: string): DiskOverlay[] {
	const file = `${vmDir}/${PENDING_FILE}`;
	const refuse = (why: string): never => {
		throw new LibvirtBackupError(
			'BACKUP_FAILED',
			`${file} was not accepted (${why}); nothing was changed. If an interrupted snapshot backup left VM "${vm.name}" on .lvb-overlay-* files (virsh domblklist), merge them with virsh blockcommit --active --pivot; then delete this file.`,
		);
	};
	let parsed: unknown;
	try {
		parsed = JSON.parse(text);
	} catch {
		return refuse('not JSON');
	}
	const record = parsed as { uuid?: unknown; overlays?: unknown } | null;
	if (typeof record !== 'object' || record === null || Array.isArray(record)) return refuse('not a JSON object');
	// Only a UUID-shaped value is shown: the file may be a planted link to something else.
	if (record.uuid !== vm.uuid) return refuse(`it is for ${typeof record.uuid === 'string' && /^[0-9a-f-]{36}$/i.test(record.uuid) ? `VM ${record.uuid}` : 'no valid VM UUID'}, not ${vm.uuid}`);
	if (!Array.isArray(record.overlays) || record.overlays.length === 0) return refuse('no overlay list');
	const seen = new Set<string>();
	return record.overlays.map((entry: unknown) => {
		const { target, overlay } = (entry ?? {}) as { target?: unknown; overlay?: unknown };
		if (typeof target !== 'string' || typeof overlay !== 'string') return refuse('an overlay entry without target and path');
		const disk = vm.disks.find((d) => d.target === target);
		if (!disk) return refuse(`the VM has no disk ${shown(target)}`);
		if (seen.has(target)) return refuse(`disk ${target} is listed twice`);
		if (!disk.source.path) return refuse(`disk ${target} has no source file`);
		seen.add(target);
		const name = posix.basename(overlay);
		const prefix = `${OVERLAY_PREFIX}${vm.uuid}-`;
		const suffix = `-${target}.qcow2`;
		const id = name.startsWith(prefix) && name.endsWith(suffix) ? name.slice(prefix.length, -suffix.length) : '';
		if (!isBackupId(id)) return refuse(`${shown(overlay)} is not an overlay name of ours for disk ${target}`);
		const inVmDir = overlayPath({ type: 'block', source: {} }, vmDir, vm.uuid, id, target);
		const onOverlay = disk.source.path === overlay && disk.backingStore.length > 0;
		const expected = onOverlay
			? [overlayPath({ type: 'file', source: { path: disk.backingStore[0] } }, vmDir, vm.uuid, id, target), inVmDir]
			: [overlayPath(disk, vmDir, vm.uuid, id, target)];
		if (!expected.includes(overlay)) return refuse(`${shown(overlay)} is not where an overlay of disk ${target} is made (${expected.join(' or ')})`);
		return { target, overlay };
	});
}

/** A VM left on our overlays by a snapshot backup killed outright: merge them back first. */
export async function recoverPendingOverlays(ssh: SshConnection, uri: string, vm: DiscoveredVm, vmDir: string, text: string): Promise<void> {
	const overlays = validatePendingOverlays(text, vm, vmDir);
	await mergeOverlays(
		ssh,
		uri,
		vm.uuid,
		overlays.map((entry) => entry.overlay),
		`${vmDir}/${PENDING_FILE}`,
	);
}
