/**
 * Backup VM Disk, the engine: lock the VM, choose full or incremental, check free space, write the
 * images (strategies.ts), hash them once on the host, write the manifest last, keep the libvirt
 * checkpoint chain tidy. Any failure removes the half-written folder and the new checkpoint.
 */
import { LibvirtBackupError } from '../errors';
import {
	abortJob,
	backupState,
	deleteCheckpoints,
	discoverVms,
	dumpDomainXml,
	listCheckpoints,
	type BackupState,
	type DiscoveredDisk,
	type DiscoveredVm,
	type Quiesce,
} from '../libvirt';
import type { SshConnection } from '../ssh';
import { finalizeBackupFolder, finishImages, formatBytes, inspectVmFolder, removeIncompleteFolders, type MeasuredDisk, type VmFolder } from './hostFiles';
import { backupDir, backupId, checkDestination, vmBackupDir } from '../store/layout';
import { acquireVmLock } from '../store/lock';
import { MANIFEST_FORMAT, MANIFEST_VERSION, type BackupKind, type BackupMethod, type Manifest, type ManifestDisk } from '../store/manifest';
import { offlineConvert, pushBackup, recoverPendingOverlays, snapshotBackup, type DiskPlan, type Progress, type StrategyContext } from './strategies';

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
	/** How a running VM is copied: push-mode backup-begin, or the snapshot + blockcommit fallback (auto: push when the host has it). */
	method?: 'auto' | 'push' | 'snapshot';
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
/** Longest Timeout (Minutes) accepted: 7 days. A single copy step that needs longer is not a backup anyone waits for. */
export const MAX_TIMEOUT_MINUTES = 7 * 24 * 60;
/** qcow2 metadata and rounding: ask for a little more than the data itself. */
const SPACE_MARGIN = 1.02;

const CHOICES = {
	mode: ['auto', 'full', 'incremental', 'copy'],
	compression: ['none', 'qcow2-compressed'],
	quiesce: ['auto', 'require', 'off'],
	method: ['auto', 'push', 'snapshot'],
} as const;

/** Parameters come from workflows (expressions too): refuse anything off before touching the host. */
export function checkBackupRequest(request: BackupRequest): void {
	const fail = (message: string) => {
		throw new LibvirtBackupError('INVALID_INPUT', message);
	};
	if (typeof request.vm !== 'string' || request.vm.trim() === '') fail('VM name or UUID is empty');
	checkDestination(request.dest);
	for (const [field, allowed] of Object.entries(CHOICES) as [keyof typeof CHOICES, readonly string[]][]) {
		const value = request[field];
		if (value === undefined && field === 'method') continue;
		if (!allowed.includes(value as string)) fail(`${field} must be one of ${allowed.join(', ')}; got ${JSON.stringify(value)}`);
	}
	for (const disk of request.disks ?? []) if (!/^[A-Za-z0-9_.-]+$/.test(disk)) fail(`"${disk}" is not a disk target name (like vda or sdb)`);
	if (request.timeoutMs !== undefined && !(request.timeoutMs > 0)) fail(`timeout must be a positive number of minutes; got ${request.timeoutMs / 60_000}`);
	if (request.timeoutMs !== undefined && request.timeoutMs > MAX_TIMEOUT_MINUTES * 60_000) {
		fail(`timeout (minutes) must be at most ${MAX_TIMEOUT_MINUTES} (7 days); got ${request.timeoutMs / 60_000}`);
	}
}

export async function backupVm(ssh: SshConnection, request: BackupRequest, hooks: BackupHooks = {}): Promise<BackupResult> {
	checkBackupRequest(request);
	const now = hooks.now ?? (() => new Date());
	const started = now();
	const [vm] = (await discoverVms(ssh, request.uri, { domains: [request.vm], excludeDevices: [] }, hooks.signal)).vms;
	const vmDir = vmBackupDir(request.dest, vm.name);
	const lock = await acquireVmLock(ssh, vmDir, request.holder, vm.name);
	let succeeded = false;
	try {
		const result = await backupLocked(ssh, request, hooks, vm, vmDir, started, now);
		succeeded = true;
		return result;
	} finally {
		// A first backup that failed leaves no empty VM folder behind (lock file included).
		await lock.release({ removeCreatedFolder: !succeeded });
	}
}

async function backupLocked(
	ssh: SshConnection,
	request: BackupRequest,
	hooks: BackupHooks,
	discovered: DiscoveredVm,
	vmDir: string,
	started: Date,
	now: () => Date,
): Promise<BackupResult> {
	const warnings: string[] = [];
	let vm = discovered;
	const live = vm.state === 'running' || vm.state === 'paused';
	const plannedId = backupId(started);
	let disks = selectDisks(vm, request.disks);
	// Independent questions to libvirt and to the file system: one round trip for both.
	let [state, folder] = await Promise.all([
		live ? backupState(ssh, request.uri, vm.uuid, CHECKPOINT_PREFIX) : undefined,
		inspectVmFolder(ssh, vmDir, plannedId, measured(disks)),
	]);
	if (state?.backupJobActive || folder.incomplete.length > 0 || folder.pending) {
		await recoverFromInterruptedRun(ssh, request.uri, vm, vmDir, state, folder, warnings);
		// Merged overlays change the disks' sources: look at the VM again.
		if (folder.pending) {
			[vm] = (await discoverVms(ssh, request.uri, { domains: [vm.uuid], excludeDevices: [] }, hooks.signal)).vms;
			disks = selectDisks(vm, request.disks);
		}
		[state, folder] = await Promise.all([
			live ? backupState(ssh, request.uri, vm.uuid, CHECKPOINT_PREFIX) : undefined,
			inspectVmFolder(ssh, vmDir, plannedId, measured(disks)),
		]);
	}
	const snapshot = live && (request.method === 'snapshot' || (request.method !== 'push' && state?.pushBackupSupported === false));
	if (live && request.method === 'push' && state?.pushBackupSupported === false) {
		throw new LibvirtBackupError('BACKUP_FAILED', 'This host has no push-mode backup-begin (libvirt >= 7.2 needed): set Method to Auto or Snapshot');
	}
	if (snapshot && request.mode === 'incremental') warnings.push('incremental backups need push-mode backup-begin (libvirt >= 7.2): full backup instead');

	const wantsChain = request.mode === 'auto' || request.mode === 'incremental';
	const previous = wantsChain ? folder.latest : undefined;
	const chain: Chain = !live
		? { reason: 'the VM is not running' }
		: snapshot
			? { reason: 'snapshot backups are always full' }
			: !previous
				? { reason: 'no previous backup' }
				: usableChain(vm, disks, previous, state!);
	if (request.mode === 'incremental' && 'reason' in chain && !snapshot) warnings.push(`incremental not possible (${chain.reason}): full backup instead`);
	if (request.mode === 'auto' && 'reason' in chain && previous) warnings.push(`full backup: ${chain.reason}`);
	const parent = 'parent' in chain ? chain.parent : undefined;
	const kind: BackupKind = request.mode === 'copy' ? 'copy' : parent ? 'incremental' : 'full';
	if (request.compression !== 'none' && kind === 'incremental') warnings.push('incremental images are not compressed');

	const needed = Math.ceil(disks.reduce((sum, disk) => sum + (parent && 'dirty' in chain ? (chain.dirty.get(disk.target) ?? fullEstimate(disk, folder)) : fullEstimate(disk, folder)), 0) * SPACE_MARGIN);
	if (needed > folder.free.bytes) {
		throw new LibvirtBackupError('NO_SPACE', `Not enough space on ${folder.free.mount}: need ${formatBytes(needed)}, ${formatBytes(folder.free.bytes)} free`, {
			needed,
			free: folder.free.bytes,
		});
	}

	const id = freeId(plannedId, folder.taken);
	const dir = backupDir(request.dest, vm.name, id);
	// Bitmaps live only in qcow2 images: a VM without one can have no checkpoint.
	const checkpoint = live && !snapshot && kind !== 'copy' && disks.some((disk) => disk.format === 'qcow2') ? `${CHECKPOINT_PREFIX}${id}` : undefined;
	const plans: DiskPlan[] = disks.map((disk) => {
		const parentDisk = parent?.disks.find((d) => d.target === disk.target);
		const incremental = parent?.checkpoint && parentDisk && disk.format === 'qcow2';
		return {
			disk,
			file: `${disk.target}.qcow2`,
			...(incremental ? { incrementalFrom: parent.checkpoint, backingFile: `../${parent.id}/${parentDisk.file}` } : {}),
		};
	});
	const compress = request.compression === 'qcow2-compressed' && kind !== 'incremental';
	const context: StrategyContext = {
		ssh,
		uri: request.uri,
		vm,
		dir,
		disks: plans,
		compress,
		quiesce: request.quiesce,
		checkpoint,
		signal: hooks.signal,
		timeoutMs: request.timeoutMs,
		onProgress: hooks.onProgress ?? (() => undefined),
		warn: (warning) => warnings.push(warning),
	};

	let succeeded = false;
	try {
		const written = snapshot
			? await snapshotBackup(context, vmDir, id)
			: live
				? await pushBackup(context)
				: await offlineConvert(context);
		context.onProgress({ phase: 'hash', percent: 0, message: 'computing sha256 on the host' });
		const [hashes, domainXml] = await Promise.all([
			finishImages(
				ssh,
				dir,
				plans.map((plan) => ({ file: plan.file, backingFile: plan.backingFile, compress: live && !snapshot && compress })),
				hooks.signal,
				request.timeoutMs,
			),
			dumpDomainXml(ssh, request.uri, vm.uuid, vm.persistent),
		]);
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
			compressed: compress,
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
			method: snapshot ? 'snapshot-commit' : live ? 'push' : 'offline-convert',
			consistency: written.consistency,
			...(checkpoint ? { checkpoint } : {}),
			disks: manifestDisks,
			warnings,
		};
		context.onProgress({ phase: 'finalize', percent: 100, message: 'writing manifest' });
		await finalizeBackupFolder(ssh, dir, plans.map((plan) => plan.file), manifest, domainXml);
		succeeded = true;
		if (checkpoint) await pruneOldCheckpoints(ssh, request.uri, vm, checkpoint, [...(state?.checkpoints ?? [])], warnings);
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

/** The disks whose data the folder inspection measures: those with a source path on the host. */
function measured(disks: DiscoveredDisk[]): MeasuredDisk[] {
	return disks.flatMap((disk) => (disk.source.path ? [{ target: disk.target, format: disk.format ?? 'raw', path: disk.source.path }] : []));
}

/** The planned id, or the first `-N` suffix not taken (two backups within one second). */
function freeId(id: string, taken: string[]): string {
	const names = new Set(taken);
	let candidate = id;
	for (let n = 1; [...names].some((name) => name === candidate || name.startsWith(`${candidate}.`)); n++) candidate = `${id}-${n}`;
	return candidate;
}

/**
 * What a full backup of a disk writes: its data at the virtual level as `qemu-img map` counts it (a
 * compressed qcow2 expands to this), else its files' allocated size (with backing files), at most
 * its size.
 */
function fullEstimate(disk: DiscoveredDisk, folder: VmFolder): number {
	const data = folder.dataBytes.get(disk.target);
	if (data !== undefined) return data;
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
function usableChain(vm: DiscoveredVm, disks: DiscoveredDisk[], previous: NonNullable<VmFolder['latest']>, state: BackupState): Chain {
	const parent = previous.manifest;
	if (parent.vm.uuid !== vm.uuid) return { reason: `the previous backup ${parent.id} is of another VM with the same name` };
	if (!parent.checkpoint) return { reason: `the previous backup ${parent.id} has no checkpoint` };
	if (previous.missingFiles.length > 0) return { reason: `the previous backup ${parent.id} is missing ${previous.missingFiles.join(', ')}` };
	const missingDisks = disks.filter((disk) => !parent.disks.some((d) => d.target === disk.target)).map((disk) => disk.target);
	if (missingDisks.length > 0) return { reason: `the previous backup ${parent.id} has no ${missingDisks.join(', ')}` };
	if (!state.checkpoints.includes(parent.checkpoint)) return { reason: `checkpoint ${parent.checkpoint} no longer exists in libvirt` };
	const dirty = state.dirtyBytes.get(parent.checkpoint);
	if (!dirty) return { reason: `checkpoint ${parent.checkpoint} is unusable: libvirt reports no changed-block size for it` };
	return { parent, dirty };
}

/**
 * A run that died (dropped connection, killed worker) may have left a backup job writing into an
 * incomplete folder of ours: stop that job, then remove the folder. We hold the lock, so nothing
 * else of ours writes there.
 */
async function recoverFromInterruptedRun(
	ssh: SshConnection,
	uri: string,
	vm: DiscoveredVm,
	vmDir: string,
	state: BackupState | undefined,
	folder: VmFolder,
	warnings: string[],
): Promise<void> {
	if (folder.pending) {
		await recoverPendingOverlays(ssh, uri, vm, vmDir, folder.pending);
		warnings.push('merged back the disk overlays an interrupted snapshot backup had left on the VM');
	}
	if (state?.backupJobActive) {
		if (folder.incomplete.length === 0) throw new LibvirtBackupError('BACKUP_FAILED', `VM "${vm.name}" already has a backup job running that is not ours; wait for it to finish`);
		await abortJob(ssh, uri, vm.uuid);
		warnings.push('stopped a backup job left running by an interrupted earlier run');
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
async function pruneOldCheckpoints(ssh: SshConnection, uri: string, vm: DiscoveredVm, keep: string, known: string[], warnings: string[]): Promise<void> {
	const ours = known.filter((name) => name.startsWith(CHECKPOINT_PREFIX) && name !== keep);
	try {
		await deleteCheckpoints(ssh, uri, vm.uuid, ours);
	} catch (error) {
		warnings.push(`old checkpoints could not be removed: ${(error as Error).message}`);
	}
}
