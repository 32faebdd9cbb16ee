/**
 * How disk data gets into a backup folder: `qemu-img convert` for a VM that is shut off, a push-mode
 * `virsh backup-begin` job (one point in time for all disks) for a running or paused VM. Each
 * strategy creates the folder (with the incomplete marker) and writes `<file>.partial` images in
 * ONE remote command, and leaves hashing and the manifest to backup.ts.
 */
import { LibvirtBackupError } from '../errors';
import { newMarker, splitSections } from '../batch';
import { backupXml, checkpointXml, commitOverlays, runPushBackupJob, snapshotOverlays, type DiscoveredDisk, type DiscoveredVm, type DiskOverlay, type Quiesce } from '../libvirt';
import { scriptArgv } from '../shell';
import type { SshConnection } from '../ssh';
import { INCOMPLETE_MARKER, type Consistency } from '../store/manifest';

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

/** Shut-off VM: each disk flattened (backing chain included) into a standalone sparse qcow2. */
export async function offlineConvert(context: StrategyContext): Promise<StrategyResult> {
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
	await context.ssh.run(scriptArgv(CONVERT_SCRIPT, 'lvb-convert', [context.dir, INCOMPLETE_MARKER, context.compress ? '1' : '0', context.forceShare ? '1' : '0', marker, ...args]), {
		label: 'qemu-img convert',
		signal: context.signal,
		timeoutMs: context.timeoutMs,
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
	});
	if (!seconds.has(context.disks.at(-1)!.disk.target)) finishDisk();
	return { consistency: 'offline', seconds };
}

/** Running or paused VM: one push-mode backup job for all disks, frozen guest when possible. */
export async function pushBackup(context: StrategyContext): Promise<StrategyResult> {
	const started = Date.now();
	let quiesce = context.quiesce;
	if (context.vm.state === 'paused' && quiesce !== 'off') {
		// A paused guest cannot answer its agent: its disks are as the pause left them.
		if (quiesce === 'require') {
			throw new LibvirtBackupError('BACKUP_FAILED', `Quiesce is required but VM "${context.vm.name}" is paused, so its guest agent cannot freeze the filesystems. Resume it, or set Quiesce to Auto.`);
		}
		context.warn('VM is paused: crash-consistent');
		quiesce = 'off';
	}
	const result = await runPushBackupJob(
		context.ssh,
		{
			uri: context.uri,
			uuid: context.vm.uuid,
			dir: context.dir,
			markerFile: INCOMPLETE_MARKER,
			backupXml: backupXml(
				context.vm.disks.map((disk) => disk.target),
				context.disks.map((plan) => ({ target: plan.disk.target, file: `${context.dir}/${plan.file}.partial`, incrementalFrom: plan.incrementalFrom })),
			),
			checkpointXml: context.checkpoint
				? checkpointXml(
						context.checkpoint,
						context.vm.disks.map((disk) => disk.target),
						// Bitmaps live in qcow2 images only: other disks are backed up in full every time.
						context.disks.filter((plan) => plan.disk.format === 'qcow2').map((plan) => plan.disk.target),
					)
				: undefined,
			quiesce,
		},
		(progress) => {
			const percent = progress.totalBytes > 0 ? Math.floor((progress.processedBytes / progress.totalBytes) * 100) : 0;
			context.onProgress({ phase: 'copy', percent, processedBytes: progress.processedBytes, message: `backup job: ${percent}%` });
		},
		context.signal,
		context.timeoutMs,
	);
	if (result.noFreezeReason) context.warn(`${result.noFreezeReason}: crash-consistent`);
	const elapsed = (Date.now() - started) / 1000;
	return { consistency: result.frozen ? 'application' : 'crash', seconds: new Map(context.disks.map((plan) => [plan.disk.target, elapsed])) };
}

/**
 * Fallback for hosts without push-mode backup-begin: overlays on the disks (one atomic snapshot,
 * one point in time), copy the now-unchanging bases, then merge the overlays back (blockcommit
 * --active --pivot). The pending file is written BEFORE the snapshot and removed after the merge,
 * so a run that dies in between is rolled back by the next one (see recoverPendingOverlays).
 */
export async function snapshotBackup(context: StrategyContext, pending: PendingOverlays): Promise<StrategyResult> {
	const { ssh, uri, vm } = context;
	await writePendingOverlays(ssh, pending);
	let snapshotTaken = false;
	try {
		const snapshot = await snapshotOverlays(ssh, uri, vm.uuid, pending.overlays, vm.disks.map((disk) => disk.target), vm.state === 'paused' ? 'off' : context.quiesce);
		snapshotTaken = true;
		if (snapshot.noFreezeReason) context.warn(`${snapshot.noFreezeReason}: crash-consistent`);
		const written = await offlineConvert({ ...context, forceShare: true });
		return { consistency: snapshot.frozen ? 'application' : 'crash', seconds: written.seconds };
	} finally {
		// Merge back whatever happened; if this fails too, the pending file stays for the next run.
		if (snapshotTaken) await commitOverlays(ssh, uri, vm.uuid, pending.overlays);
		await removePendingOverlays(ssh, pending.file);
	}
}

export interface PendingOverlays {
	/** `<vm dir>/.lvb-pending.json` */
	file: string;
	uuid: string;
	overlays: DiskOverlay[];
}

async function writePendingOverlays(ssh: SshConnection, pending: PendingOverlays): Promise<void> {
	const content = JSON.stringify({ uuid: pending.uuid, overlays: pending.overlays });
	await ssh.run(scriptArgv(`printf '%s' "$2" >"$1.tmp" && sync -- "$1.tmp" && mv -f -- "$1.tmp" "$1"`, 'lvb-pending', [pending.file, content]), { label: 'write pending state' });
}

async function removePendingOverlays(ssh: SshConnection, file: string): Promise<void> {
	await ssh.run(['rm', '-f', '--', file], { label: 'remove pending state' });
}

/** A VM left on our overlays by an interrupted snapshot backup: merge them back first. */
export async function recoverPendingOverlays(ssh: SshConnection, uri: string, file: string, text: string): Promise<void> {
	let pending: { uuid: string; overlays: DiskOverlay[] };
	try {
		pending = JSON.parse(text);
	} catch {
		throw new LibvirtBackupError('BACKUP_FAILED', `${file} is not readable JSON: merge the VM's disk overlays back by hand (virsh blockcommit --active --pivot), then delete it`);
	}
	await commitOverlays(ssh, uri, pending.uuid, pending.overlays);
	await removePendingOverlays(ssh, file);
}
