/**
 * How disk data gets into a backup folder: `qemu-img convert` for a VM that is shut off, a push-mode
 * `virsh backup-begin` job (one point in time for all disks) for a running or paused VM. Each
 * strategy writes `<file>.partial` images and leaves hashing and the manifest to backup.ts.
 */
import {
	abortJob,
	startBackupJob,
	waitForBackupJob,
	type DiscoveredDisk,
	type DiscoveredVm,
	type Quiesce,
} from '../libvirt';
import type { SshConnection } from '../ssh';
import type { Consistency } from './manifest';

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
	onProgress: (progress: Progress) => void;
	warn: (warning: string) => void;
}

export interface StrategyResult {
	consistency: Consistency;
	/** Seconds spent writing each disk's image. */
	seconds: Map<string, number>;
}

/** Shut-off VM: each disk flattened (backing chain included) into a standalone sparse qcow2. */
export async function offlineConvert(context: StrategyContext): Promise<StrategyResult> {
	const { ssh, dir, signal } = context;
	const seconds = new Map<string, number>();
	for (const plan of context.disks) {
		const started = Date.now();
		const source = plan.disk.source.path as string;
		// Always name the source format: probing a raw disk's content for a format header is unsafe.
		const argv = ['qemu-img', 'convert', '-p', '-f', plan.disk.format ?? 'raw', '-O', 'qcow2', ...(context.compress ? ['-c'] : []), source, `${dir}/${plan.file}.partial`];
		let last = -1;
		await ssh.run(argv, {
			label: `qemu-img convert (${plan.disk.target})`,
			signal,
			timeoutMs: context.timeoutMs,
			onStdout: (chunk) => {
				const match = /\((\d+(?:\.\d+)?)\/100%\)[^(]*$/.exec(chunk.toString('utf8'));
				const percent = match ? Math.floor(Number(match[1])) : last;
				if (percent > last) {
					last = percent;
					context.onProgress({ phase: 'copy', target: plan.disk.target, percent, message: `${plan.disk.target}: ${percent}%` });
				}
			},
		});
		seconds.set(plan.disk.target, (Date.now() - started) / 1000);
	}
	return { consistency: 'offline', seconds };
}

function escapeXml(value: string): string {
	return value.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/'/g, '&apos;').replace(/"/g, '&quot;').replace(/\r/g, '&#13;').replace(/\n/g, '&#10;');
}

export function backupXml(context: Pick<StrategyContext, 'vm' | 'dir' | 'disks'>): string {
	const planned = new Map(context.disks.map((plan) => [plan.disk.target, plan]));
	const disks = context.vm.disks.map((disk) => {
		const plan = planned.get(disk.target);
		if (!plan) return `<disk name='${escapeXml(disk.target)}' backup='no'/>`;
		const mode = plan.incrementalFrom ? ` backupmode='incremental' incremental='${escapeXml(plan.incrementalFrom)}'` : ` backupmode='full'`;
		return `<disk name='${escapeXml(disk.target)}' backup='yes' type='file'${mode}><driver type='qcow2'/><target file='${escapeXml(`${context.dir}/${plan.file}.partial`)}'/></disk>`;
	});
	return `<domainbackup mode='push'><disks>${disks.join('')}</disks></domainbackup>`;
}

export function checkpointXml(context: Pick<StrategyContext, 'vm' | 'disks'>, name: string): string {
	const planned = new Set(context.disks.map((plan) => plan.disk.target));
	// Bitmaps live in qcow2 images only: other disks are backed up in full every time.
	const disks = context.vm.disks.map(
		(disk) => `<disk name='${escapeXml(disk.target)}' checkpoint='${planned.has(disk.target) && disk.format === 'qcow2' ? 'bitmap' : 'no'}'/>`,
	);
	return `<domaincheckpoint><name>${escapeXml(name)}</name><disks>${disks.join('')}</disks></domaincheckpoint>`;
}

/** Running or paused VM: one push-mode backup job for all disks, frozen guest when possible. */
export async function pushBackup(context: StrategyContext): Promise<StrategyResult> {
	const { ssh, uri, vm, signal } = context;
	const started = Date.now();
	const checkpoint = context.checkpoint ? checkpointXml(context, context.checkpoint) : undefined;
	const start = await startBackupJob(ssh, uri, vm.uuid, context.dir, backupXml(context), checkpoint, context.quiesce);
	if (start.noFreezeReason) context.warn(`${start.noFreezeReason}: crash-consistent`);
	let finished = false;
	try {
		await waitForBackupJob(
			ssh,
			uri,
			vm.uuid,
			(progress) => {
				const percent = progress.totalBytes > 0 ? Math.floor((progress.processedBytes / progress.totalBytes) * 100) : 0;
				context.onProgress({ phase: 'copy', percent, processedBytes: progress.processedBytes, message: `backup job: ${percent}%` });
			},
			signal,
			context.timeoutMs,
		);
		finished = true;
	} finally {
		if (!finished) await abortJob(ssh, uri, vm.uuid).catch(() => undefined);
	}
	const elapsed = (Date.now() - started) / 1000;
	return { consistency: start.frozen ? 'application' : 'crash', seconds: new Map(context.disks.map((plan) => [plan.disk.target, elapsed])) };
}
