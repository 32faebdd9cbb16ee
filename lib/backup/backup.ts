/**
 * Backup VM Disk, the engine: lock the VM, choose full or incremental, check free space, write the
 * images (strategies.ts), hash them once on the host, write the manifest last, keep the libvirt
 * checkpoint chain tidy. Any failure removes the half-written folder and the new checkpoint.
 */
import { LibvirtBackupError, isLibvirtBackupError } from '../errors';
import {
	abortJob,
	checkpointDirtyBytes,
	deleteCheckpoints,
	discoverVms,
	listCheckpoints,
	runVirsh,
	type DiscoveredDisk,
	type DiscoveredVm,
	type Quiesce,
} from '../libvirt';
import type { SshConnection } from '../ssh';
import { createBackupFolder, formatBytes, freeBytes, hashFiles, finalizeBackupFolder, latestBackup, removeIncompleteFolders } from './hostFiles';
import { backupId, backupDir, vmBackupDir } from './layout';
import { acquireVmLock } from './lock';
import { MANIFEST_FORMAT, MANIFEST_VERSION, type BackupKind, type BackupMethod, type Manifest, type ManifestDisk } from './manifest';
import { offlineConvert, pushBackup, type DiskPlan, type Progress, type StrategyContext } from './strategies';

export type BackupMode = 'auto' | 'full' | 'incremental' | 'copy';

export interface BackupRequest {
	uri: string;
	/** VM name or UUID. */
	vm: string;
	dest: string;
	mode: BackupMode;
	/** Disk targets to include; empty = every backupable disk. */
	disks?: string[];
	compression: 'none' | 'qcow2-compressed';
	quiesce: Quiesce;
	timeoutMs?: number;
	/** Who holds the lock (shown to a second job that finds the VM locked). */
	holder: string;
	/** Host name recorded in the manifest. */
	host: string;
}

export interface BackupHooks {
	onProgress?: (progress: Progress) => void;
	signal?: AbortSignal;
	now?: () => Date;
}

export interface DiskResult extends ManifestDisk {
	seconds: number;
	mbPerSecond: number;
}

export interface BackupResult {
	vm: string;
	uuid: string;
	host: string;
	id: string;
	path: string;
	kind: BackupKind;
	parent?: string;
	method: BackupMethod;
	consistency: Manifest['consistency'];
	checkpoint?: string;
	disks: DiskResult[];
	totalBytes: number;
	startedAt: string;
	finishedAt: string;
	durationSeconds: number;
	warnings: string[];
}

export const CHECKPOINT_PREFIX = 'lvb-';
/** qcow2 metadata and rounding: ask for a little more than the data itself. */
const SPACE_MARGIN = 1.02;

export async function backupVm(ssh: SshConnection, request: BackupRequest, hooks: BackupHooks = {}): Promise<BackupResult> {
	const now = hooks.now ?? (() => new Date());
	const started = now();
	const [vm] = (await discoverVms(ssh, request.uri, { domains: [request.vm], excludeDevices: [] }, hooks.signal)).vms;
	const vmDir = vmBackupDir(request.dest, vm.name);
	const lock = await acquireVmLock(ssh, vmDir, request.holder, vm.name);
	try {
		return await backupLocked(ssh, request, hooks, vm, vmDir, started, now);
	} finally {
		await lock.release();
	}
}

async function backupLocked(
	ssh: SshConnection,
	request: BackupRequest,
	hooks: BackupHooks,
	vm: DiscoveredVm,
	vmDir: string,
	started: Date,
	now: () => Date,
): Promise<BackupResult> {
	const warnings: string[] = [];
	const live = vm.state === 'running' || vm.state === 'paused';
	await recoverFromInterruptedRun(ssh, request.uri, vm, vmDir, live, warnings);
	const disks = selectDisks(vm, request.disks);

	const previous = request.mode === 'auto' || request.mode === 'incremental' ? await latestBackup(ssh, vmDir) : undefined;
	const chain = live && previous ? await usableChain(ssh, request.uri, vm, disks, previous) : { reason: live ? 'no previous backup' : 'the VM is not running' };
	if (request.mode === 'incremental' && 'reason' in chain) warnings.push(`incremental not possible (${chain.reason}): full backup instead`);
	if (request.mode === 'auto' && 'reason' in chain && previous) warnings.push(`full backup: ${chain.reason}`);
	const kind: BackupKind = request.mode === 'copy' ? 'copy' : 'parent' in chain && request.mode !== 'full' ? 'incremental' : 'full';
	const parent = kind === 'incremental' && 'parent' in chain ? chain.parent : undefined;
	if (request.compression !== 'none' && live && kind === 'incremental') warnings.push('incremental images are not compressed');

	const needed = Math.ceil(
		disks.reduce((sum, disk) => sum + (parent ? ('dirty' in chain ? (chain.dirty.get(disk.target) ?? fullEstimate(disk)) : 0) : fullEstimate(disk)), 0) * SPACE_MARGIN,
	);
	const free = await freeBytes(ssh, vmDir);
	if (needed > free.bytes) {
		throw new LibvirtBackupError('NO_SPACE', `Not enough space on ${free.mount}: need ${formatBytes(needed)}, ${formatBytes(free.bytes)} free`, { needed, free: free.bytes });
	}

	const id = await createBackupFolder(ssh, vmDir, backupId(started));
	const dir = backupDir(request.dest, vm.name, id);
	// Bitmaps live only in qcow2 images: a VM without one can have no checkpoint.
	const checkpoint = live && kind !== 'copy' && disks.some((disk) => disk.format === 'qcow2') ? `${CHECKPOINT_PREFIX}${id}` : undefined;
	const plans: DiskPlan[] = disks.map((disk) => {
		const parentDisk = parent?.disks.find((d) => d.target === disk.target);
		const incremental = parent && parentDisk && disk.format === 'qcow2' && parent.checkpoint;
		return {
			disk,
			file: `${disk.target}.qcow2`,
			...(incremental ? { incrementalFrom: parent.checkpoint, backingFile: `../${parent.id}/${parentDisk.file}` } : {}),
		};
	});
	const context: StrategyContext = {
		ssh,
		uri: request.uri,
		vm,
		dir,
		disks: plans,
		compress: request.compression === 'qcow2-compressed' && kind !== 'incremental',
		quiesce: request.quiesce,
		checkpoint,
		signal: hooks.signal,
		timeoutMs: request.timeoutMs,
		onProgress: hooks.onProgress ?? (() => undefined),
		warn: (warning) => warnings.push(warning),
	};

	let succeeded = false;
	try {
		const written = live ? await pushBackup(context) : await offlineConvert(context);
		await finishImages(ssh, context, live);
		context.onProgress({ phase: 'hash', percent: 0, message: 'computing sha256 on the host' });
		const hashes = await hashFiles(ssh, dir, plans.map((plan) => `${plan.file}.partial`), hooks.signal);
		const domainXml = await readDomainXml(ssh, request.uri, vm);
		const finished = now();
		const manifestDisks: ManifestDisk[] = plans.map((plan, index) => ({
			target: plan.disk.target,
			source: plan.disk.source.path as string,
			sourceFormat: plan.disk.format,
			file: plan.file,
			format: 'qcow2',
			virtualBytes: plan.disk.virtualBytes ?? 0,
			bytes: hashes[index].bytes,
			sha256: hashes[index].sha256,
			...(plan.backingFile ? { backingFile: plan.backingFile } : {}),
			compressed: context.compress,
		}));
		const diskResults: DiskResult[] = manifestDisks.map((disk) => {
			const seconds = written.seconds.get(disk.target) ?? 0;
			return { ...disk, seconds, mbPerSecond: seconds > 0 ? Math.round((disk.bytes / 1e6 / seconds) * 10) / 10 : 0 };
		});
		const manifest: Manifest = {
			format: MANIFEST_FORMAT,
			version: MANIFEST_VERSION,
			vm: { name: vm.name, uuid: vm.uuid },
			host: request.host,
			id,
			startedAt: started.toISOString(),
			finishedAt: finished.toISOString(),
			kind,
			...(parent ? { parent: parent.id } : {}),
			method: live ? 'push' : 'offline-convert',
			consistency: written.consistency,
			...(checkpoint ? { checkpoint } : {}),
			disks: manifestDisks,
			warnings,
		};
		context.onProgress({ phase: 'finalize', percent: 100, message: 'writing manifest' });
		await finalizeBackupFolder(ssh, dir, plans.map((plan) => plan.file), manifest, domainXml);
		succeeded = true;
		if (checkpoint) await pruneOldCheckpoints(ssh, request.uri, vm, checkpoint, warnings);
		return {
			vm: vm.name,
			uuid: vm.uuid,
			host: request.host,
			id,
			path: dir,
			kind,
			parent: parent?.id,
			method: manifest.method,
			consistency: manifest.consistency,
			checkpoint,
			disks: diskResults,
			totalBytes: manifestDisks.reduce((sum, disk) => sum + disk.bytes, 0),
			startedAt: manifest.startedAt,
			finishedAt: manifest.finishedAt,
			durationSeconds: (finished.getTime() - started.getTime()) / 1000,
			warnings,
		};
	} finally {
		if (!succeeded) await discardFailedBackup(ssh, request.uri, vm, vmDir, id, checkpoint);
	}
}

/** Upper bound of what a full backup of a disk writes: its data (with backing files), at most its size. */
function fullEstimate(disk: DiscoveredDisk): number {
	const allocated = (disk.allocatedBytes ?? 0) + disk.backingChain.reduce((sum, layer) => sum + layer.allocatedBytes, 0);
	return Math.min(disk.virtualBytes ?? allocated, allocated || (disk.virtualBytes ?? 0));
}

function selectDisks(vm: DiscoveredVm, targets: string[] | undefined): DiscoveredDisk[] {
	if (targets && targets.length > 0) {
		return targets.map((target) => {
			const disk = vm.disks.find((d) => d.target === target);
			if (!disk) throw new LibvirtBackupError('INVALID_INPUT', `VM "${vm.name}" has no disk "${target}" (it has: ${vm.disks.map((d) => d.target).join(', ')})`);
			if (!disk.backupable) throw new LibvirtBackupError('INVALID_INPUT', `Disk ${target} of VM "${vm.name}" cannot be backed up: ${disk.reason}`);
			return disk;
		});
	}
	const disks = vm.disks.filter((disk) => disk.backupable);
	if (disks.length === 0) throw new LibvirtBackupError('INVALID_INPUT', `VM "${vm.name}" has no disk that can be backed up: ${vm.reasons.join('; ') || 'no disks'}`);
	return disks;
}

type Chain = { parent: Manifest; dirty: Map<string, number> } | { reason: string };

/** An incremental needs the previous backup's checkpoint in libvirt and its images on disk. */
async function usableChain(
	ssh: SshConnection,
	uri: string,
	vm: DiscoveredVm,
	disks: DiscoveredDisk[],
	previous: { manifest: Manifest; missingFiles: string[] },
): Promise<Chain> {
	const parent = previous.manifest;
	if (parent.vm.uuid !== vm.uuid) return { reason: `the previous backup ${parent.id} is of another VM with the same name` };
	if (!parent.checkpoint) return { reason: `the previous backup ${parent.id} has no checkpoint` };
	if (previous.missingFiles.length > 0) return { reason: `the previous backup ${parent.id} is missing ${previous.missingFiles.join(', ')}` };
	const missingDisks = disks.filter((disk) => !parent.disks.some((d) => d.target === disk.target)).map((disk) => disk.target);
	if (missingDisks.length > 0) return { reason: `the previous backup ${parent.id} has no ${missingDisks.join(', ')}` };
	if (!(await listCheckpoints(ssh, uri, vm.uuid)).includes(parent.checkpoint)) return { reason: `checkpoint ${parent.checkpoint} no longer exists in libvirt` };
	try {
		return { parent, dirty: await checkpointDirtyBytes(ssh, uri, vm.uuid, parent.checkpoint) };
	} catch (error) {
		if (isLibvirtBackupError(error)) return { reason: `checkpoint ${parent.checkpoint} is unusable: ${error.message}` };
		throw error;
	}
}

/** Incrementals name the previous backup as backing file; compressed live copies get a second pass. */
async function finishImages(ssh: SshConnection, context: StrategyContext, live: boolean): Promise<void> {
	for (const plan of context.disks) {
		const image = `${context.dir}/${plan.file}.partial`;
		if (plan.backingFile) {
			// backup-begin writes the LIVE disk as backing file: point it at the parent backup instead.
			await ssh.run(['qemu-img', 'rebase', '-u', '-f', 'qcow2', '-b', plan.backingFile, '-F', 'qcow2', image], { label: 'qemu-img rebase' });
		} else if (live && context.compress) {
			await ssh.run(['qemu-img', 'convert', '-c', '-f', 'qcow2', '-O', 'qcow2', image, `${image}.c`], { label: 'qemu-img convert -c', signal: context.signal });
			await ssh.run(['mv', '-f', '--', `${image}.c`, image], { label: 'mv' });
		}
	}
}

/** The definition to restore: the persistent (inactive) one when there is one. */
async function readDomainXml(ssh: SshConnection, uri: string, vm: DiscoveredVm): Promise<string> {
	const argv = ['virsh', '-q', '-c', uri, 'dumpxml', '--domain', vm.uuid, ...(vm.persistent ? ['--inactive'] : [])];
	return (await runVirsh(ssh, argv, uri, 'virsh dumpxml')).stdout;
}

/**
 * A run that died (dropped connection, killed worker) may have left a backup job writing into an
 * incomplete folder of ours: stop that job, then remove the folder. We hold the lock, so nothing
 * else of ours writes there.
 */
async function recoverFromInterruptedRun(ssh: SshConnection, uri: string, vm: DiscoveredVm, vmDir: string, live: boolean, warnings: string[]): Promise<void> {
	if (live) {
		const { stdout } = await runVirsh(ssh, ['env', 'LC_ALL=C', 'virsh', '-c', uri, 'domjobinfo', '--domain', vm.uuid, '--rawstats'], uri, 'virsh domjobinfo');
		const active = /Job type: [12]\b/.test(stdout) && /operation: 9\b/.test(stdout);
		if (active) {
			const { stdout: files } = await ssh.run(['sh', '-c', 'ls -1d -- "$1"/*/.lvb-incomplete 2>/dev/null || true', 'lvb-find-incomplete', vmDir], { label: 'ls' });
			if (files.trim() === '') throw new LibvirtBackupError('BACKUP_FAILED', `VM "${vm.name}" already has a backup job running that is not ours; wait for it to finish`);
			await abortJob(ssh, uri, vm.uuid);
			warnings.push('stopped a backup job left running by an interrupted earlier run');
		}
	}
	const removed = await removeIncompleteFolders(ssh, vmDir);
	if (removed.length > 0) warnings.push(`removed incomplete backup folder(s) left by an interrupted run: ${removed.join(', ')}`);
}

async function discardFailedBackup(ssh: SshConnection, uri: string, vm: DiscoveredVm, vmDir: string, id: string, checkpoint?: string): Promise<void> {
	await removeIncompleteFolders(ssh, vmDir, id).catch(() => undefined);
	if (checkpoint) {
		const existing = await listCheckpoints(ssh, uri, vm.uuid).catch(() => [] as string[]);
		if (existing.includes(checkpoint)) await deleteCheckpoints(ssh, uri, vm.uuid, [checkpoint]).catch(() => undefined);
	}
}

/** Only the newest checkpoint is needed for the next incremental; older ones of ours cost I/O. */
async function pruneOldCheckpoints(ssh: SshConnection, uri: string, vm: DiscoveredVm, keep: string, warnings: string[]): Promise<void> {
	try {
		const ours = (await listCheckpoints(ssh, uri, vm.uuid)).filter((name) => name.startsWith(CHECKPOINT_PREFIX) && name !== keep);
		await deleteCheckpoints(ssh, uri, vm.uuid, ours);
	} catch (error) {
		warnings.push(`old checkpoints could not be removed: ${(error as Error).message}`);
	}
}
