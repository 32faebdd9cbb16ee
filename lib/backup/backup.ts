/**
 * Backup VM Disk, the engine: lock the VM, choose full or incremental, check free space, write the
 * images (strategies.ts), hash them once on the host, write the manifest last, keep the libvirt
 * checkpoint chain tidy. Any failure removes the half-written folder and the new checkpoint.
 */
import { LibvirtBackupError, isLibvirtBackupError } from '../errors';
import {
	abortJob,
	domainFolderTokens,
	inDomainFolderArgv,
	preflightStateStep,
	readDomainsStep,
	vmFromBlockStats,
	type HostDomains,
	type PreflightState,
	backupState,
	deleteCheckpoints,
	deleteCheckpointsStep,
	discoverVms,
	dumpDomainXml,
	dumpDomainXmlStep,
	type CheckpointDeletion,
	listCheckpoints,
	removeStaleBitmaps,
	type BackupState,
	type DiscoveredDisk,
	type DiscoveredVm,
	type Quiesce,
} from '../libvirt';
import type { SshConnection } from '../ssh';
import { readCatalog, readCatalogStep, type Catalog } from '../catalog/list';
import { formatBytes } from '../format';
import { FINALIZE_TIMEOUT_MS, finalizeStep, finishImages, finishImagesStep, inspectVmFolder, inspectVmFolderStep, removeIncompleteFolders, type HashedFile, type MeasuredDisk, type VmFolder } from './hostFiles';
import { runSteps, type RemoteStep } from '../batch';
import { CHECKPOINT_PREFIX, checkpointPrefix, isDestinationCheckpoint, planBackup, selectDisks, type BackupMode, type NewFullPolicy, type StoreState } from './plan';
import { backupDir, backupId, checkDestination, vmBackupDir, vmDirName } from '../store/layout';
import { acquireVmLock, lockAndRun, type VmLock } from '../store/lock';
import { isBackupId, MANIFEST_FORMAT, MANIFEST_VERSION, type BackupKind, type BackupMethod, type Manifest, type ManifestDisk } from '../store/manifest';
import { offlineConvert, pushBackupStep, recoverPendingOverlays, snapshotBackup, type Progress, type StrategyContext, type StrategyResult } from './strategies';

export type { BackupMode } from './plan';

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
	/** When auto mode starts a new chain although the old one is still usable (nothing set: never). */
	newFullAfter?: NewFullPolicy;
	timeoutMs?: number;
	/** Who holds the lock (shown to a second job that finds the VM locked). */
	holder: string;
	/** Host name recorded in the manifest. */
	host: string;
}

export interface BackupHooks {
	onProgress?: (progress: Progress) => void;
	/** The VM the request named, once found: a failure after this point is this VM's. */
	onVm?: (vm: { name: string; uuid: string }) => void;
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

export { CHECKPOINT_PREFIX } from './plan';
/** Longest Timeout (Minutes) accepted: 7 days. A single copy step that needs longer is not a backup anyone waits for. */
export const MAX_TIMEOUT_MINUTES = 7 * 24 * 60;
/** New Full Backup After bounds: a chain longer than this is no plan anyone means. */
export const MAX_NEW_FULL_INCREMENTALS = 10_000;
export const MAX_NEW_FULL_DAYS = 3650;
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
	for (const [field, max] of [['incrementals', MAX_NEW_FULL_INCREMENTALS], ['days', MAX_NEW_FULL_DAYS]] as const) {
		const value = request.newFullAfter?.[field];
		if (value !== undefined && !(Number.isInteger(value) && value >= 0 && value <= max)) {
			fail(`New Full Backup After: ${field} must be a whole number from 0 (no limit) to ${max}; got ${JSON.stringify(value)}`);
		}
	}
}

export async function backupVm(ssh: SshConnection, request: BackupRequest, hooks: BackupHooks = {}): Promise<BackupResult> {
	checkBackupRequest(request);
	const now = hooks.now ?? (() => new Date());
	const started = now();
	const plannedId = backupId(started);
	const { vm, vmDir, lock, read } = await lockVm(ssh, request, plannedId, hooks);
	let succeeded = false;
	try {
		hooks.onVm?.({ name: vm.name, uuid: vm.uuid });
		const result = await backupLocked(ssh, request, hooks, vm, vmDir, plannedId, read, started, now);
		succeeded = true;
		return result;
	} finally {
		// A first backup that failed leaves no empty VM folder behind (lock file included).
		await lock.release({ removeCreatedFolder: !succeeded });
	}
}

/** What a backup reads under the lock before it plans: libvirt's state of the VM, its folder, its backups. */
type Look = [BackupState | undefined, VmFolder, Catalog];

/** Longest file name (bytes) on Linux file systems. */
const NAME_MAX = 255;
const UUID_SHAPE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/**
 * Finds the VM and takes its lock, and reads everything the plan needs under it, in ONE exec (one
 * round trip): the VM's definition, libvirt's block stats and checkpoint state for the domain virsh
 * resolves the request to, the folder and the VM's backups. A request by name locks that name's
 * folder; one by UUID locks the folder of the name virsh gives for it (found in the same exec).
 * What virsh resolved is used only when it is the domain (and the folder) the exact match here
 * finds, and the block stats only when they describe every disk; otherwise they are asked again.
 * A name too long to be a folder name is no VM of ours: discovery says so first.
 */
async function lockVm(ssh: SshConnection, request: BackupRequest, plannedId: string, hooks: BackupHooks): Promise<{ vm: DiscoveredVm; vmDir: string; lock: VmLock; read?: Look }> {
	const byUuid = UUID_SHAPE.test(request.vm);
	const dest = checkDestination(request.dest);
	const tokens = domainFolderTokens();
	const username = ssh.target.username;
	const located = byUuid || Buffer.byteLength(vmDirName(request.vm)) > NAME_MAX ? undefined : { dir: vmBackupDir(dest, request.vm), name: vmDirName(request.vm) };
	const taken =
		byUuid || located
			? await lockedOrMissing(ssh, request, hooks, lockAndRun<[HostDomains, PreflightState, VmFolder, Catalog]>(
					ssh,
					located?.dir ?? { dest, token: tokens.path, locate: (marker, lockArgv) => inDomainFolderArgv(request.uri, request.vm, dest, marker, tokens, lockArgv) },
					request.holder,
					request.vm,
					[
						readDomainsStep(request.uri, username),
						preflightStateStep(request.uri, request.vm, CHECKPOINT_PREFIX, username),
						inspectVmFolderStep(located?.dir ?? tokens.path, plannedId),
						readCatalogStep(dest, [located?.name ?? tokens.name]),
					],
				))
			: undefined;
	if (taken) {
		const { lock, results, vmDir } = taken;
		try {
			const [host, resolved, folder, catalog] = results;
			const sure = (vm: DiscoveredVm | undefined) => vm !== undefined && resolved.uuid?.toLowerCase() === vm.uuid.toLowerCase();
			let vm = vmFromBlockStats(host, request.uri, request.vm, resolved.blockStats);
			if (!sure(vm)) [vm] = (await discoverVms(ssh, request.uri, { domains: [request.vm], excludeDevices: [] }, hooks.signal)).vms;
			// The folder locked is the one of the VM the exact match found (by UUID: the name virsh gave).
			if (vmBackupDir(dest, vm!.name) === vmDir) {
				const live = vm!.state === 'running' || vm!.state === 'paused';
				const state = !live ? undefined : sure(vm) ? resolved.state : await backupState(ssh, request.uri, vm!.uuid, CHECKPOINT_PREFIX);
				return { vm: vm!, vmDir, lock, read: [state, folder, catalog] };
			}
			await lock.release({ removeCreatedFolder: true });
		} catch (error) {
			await lock.release({ removeCreatedFolder: true });
			throw error;
		}
	}
	const [vm] = (await discoverVms(ssh, request.uri, { domains: [request.vm], excludeDevices: [] }, hooks.signal)).vms;
	const vmDir = vmBackupDir(dest, vm.name);
	return { vm, vmDir, lock: await acquireVmLock(ssh, vmDir, request.holder, vm.name) };
}

/**
 * The lock is taken before the VM is looked up (one round trip less), so a failure to take it comes
 * before the VM is known: then ask libvirt once more. A VM that does not exist is "VM not found"
 * (not "locked" by another request for the same missing VM, nor a folder that cannot be made); one
 * that does is named to the caller (onVm), so the error item says which VM failed.
 */
async function lockedOrMissing<T>(ssh: SshConnection, request: BackupRequest, hooks: BackupHooks, taking: Promise<T>): Promise<T> {
	try {
		return await taking;
	} catch (error) {
		if (!isLibvirtBackupError(error) || error.code === 'ABORTED' || error.code === 'SSH_CONNECTION_LOST') throw error;
		let found: DiscoveredVm | undefined;
		try {
			[found] = (await discoverVms(ssh, request.uri, { domains: [request.vm], excludeDevices: [] }, hooks.signal)).vms;
		} catch (lookup) {
			if (isLibvirtBackupError(lookup) && lookup.code === 'VM_NOT_FOUND') throw lookup;
		}
		if (found) hooks.onVm?.({ name: found.name, uuid: found.uuid });
		throw error;
	}
}

async function backupLocked(
	ssh: SshConnection,
	request: BackupRequest,
	hooks: BackupHooks,
	discovered: DiscoveredVm,
	vmDir: string,
	plannedId: string,
	read: Look | undefined,
	started: Date,
	now: () => Date,
): Promise<BackupResult> {
	const warnings: string[] = [];
	let vm = discovered;
	const live = vm.state === 'running' || vm.state === 'paused';
	let disks = selectDisks(vm, request.disks);
	// Independent questions to libvirt and to the file system, asked at once.
	const look = (): Promise<Look> =>
		Promise.all([
			live ? backupState(ssh, request.uri, vm.uuid, CHECKPOINT_PREFIX) : undefined,
			inspectVmFolder(ssh, vmDir, plannedId, measured(disks)),
			readCatalog(ssh, request.dest, [vmDirName(vm.name)], hooks.signal),
		]);
	let [state, folder, catalog] = read ?? (await look());
	if (state?.backupJobActive || folder.incomplete.length > 0 || folder.pending) {
		await recoverFromInterruptedRun(ssh, request.uri, vm, vmDir, state, folder, warnings);
		// Merged overlays change the disks' sources: look at the VM again.
		if (folder.pending) {
			[vm] = (await discoverVms(ssh, request.uri, { domains: [vm.uuid], excludeDevices: [] }, hooks.signal)).vms;
			disks = selectDisks(vm, request.disks);
		}
		[state, folder, catalog] = await look();
	}

	const id = freeId(plannedId, folder.taken);
	const prefix = checkpointPrefix(checkDestination(request.dest));
	const planned = (measuredFolder: VmFolder) =>
		planBackup({
			request: { mode: request.mode, method: request.method, disks: request.disks, compression: request.compression, newFull: request.newFullAfter },
			vm,
			host: state,
			store: storeState(catalog),
			id,
			checkpointPrefix: prefix,
			now: started,
			fullBytes: new Map(disks.map((disk) => [disk.target, fullEstimate(disk, measuredFolder)])),
		});
	let plan = planned(folder);
	// The read under the lock does not measure the disks' data (qemu-img map): only a full needs it.
	if (plan.kind !== 'incremental' && folder.dataBytes.size === 0 && measured(disks).length > 0) {
		folder = await inspectVmFolder(ssh, vmDir, plannedId, measured(disks));
		plan = planned(folder);
	}
	warnings.push(...plan.warnings);
	if (plan.neededBytes > folder.free.bytes) {
		throw new LibvirtBackupError('NO_SPACE', `Not enough space on ${folder.free.mount}: need ${formatBytes(plan.neededBytes)}, ${formatBytes(folder.free.bytes)} free`, {
			needed: plan.neededBytes,
			free: folder.free.bytes,
		});
	}
	const { kind, parent, checkpoint, compress, disks: plans } = plan;
	const snapshot = plan.method === 'snapshot-commit';
	const dir = backupDir(request.dest, vm.name, id);
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
		const images = plans.map((plan) => ({ file: plan.file, backingFile: plan.backingFile, compress: live && !snapshot && compress }));
		const hashing = () => context.onProgress({ phase: 'hash', percent: 0, message: 'computing sha256 on the host' });
		let written: StrategyResult;
		let hashes: HashedFile[];
		let domainXml: string;
		if (live && !snapshot) {
			// Job, hashes and the domain XML in one exec: one round trip.
			[written, hashes, domainXml] = await runSteps<[StrategyResult, HashedFile[], string]>(
				ssh,
				[pushBackupStep(context, hashing), finishImagesStep(dir, images), dumpDomainXmlStep(request.uri, vm.uuid, vm.persistent, ssh.target.username)],
				{ label: 'backup job', signal: hooks.signal, timeoutMs: request.timeoutMs },
			);
		} else {
			written = snapshot ? await snapshotBackup(context, vmDir, id) : await offlineConvert(context);
			hashing();
			[hashes, domainXml] = await Promise.all([finishImages(ssh, dir, images, hooks.signal, request.timeoutMs), dumpDomainXml(ssh, request.uri, vm.uuid, vm.persistent)]);
		}
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
			method: plan.method,
			consistency: written.consistency,
			...(checkpoint ? { checkpoint } : {}),
			disks: manifestDisks,
			warnings,
		};
		context.onProgress({ phase: 'finalize', percent: 100, message: 'writing manifest' });
		// The manifest, then the checkpoints this one replaces, in one exec: one round trip.
		const stale = checkpoint ? staleCheckpoints(checkpoint, prefix, state?.checkpoints ?? []) : [];
		const [, deletion] = await runSteps<[void, CheckpointDeletion | undefined]>(
			ssh,
			[finalizeStep(dir, plans.map((plan) => plan.file), manifest, domainXml), ...(stale.length > 0 ? [deleteCheckpointsStep(request.uri, vm.uuid, stale)] : [])] as [RemoteStep<void>, RemoteStep<CheckpointDeletion | undefined>],
			{ label: 'finalize backup', timeoutMs: FINALIZE_TIMEOUT_MS },
		);
		succeeded = true;
		if (deletion?.metadataOnly.length) warnings.push(`removed checkpoint(s) whose bitmap QEMU had lost: ${deletion.metadataOnly.join(', ')}`);
		if (deletion?.error) warnings.push(`old checkpoints could not be removed: ${deletion.error}`);
		if (kind !== 'incremental') await removeStaleBitmapsOfOurs(ssh, request.uri, vm, warnings, hooks.signal);
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

/** The VM's backups as the planner sees them; folders whose manifest cannot be used are named, never built on. */
function storeState(catalog: Catalog): StoreState {
	return {
		backups: catalog.backups.map((backup) => ({
			manifest: backup.manifest,
			missingFiles: backup.missingFiles,
			...(backup.verification ? { verification: backup.verification.status } : {}),
		})),
		unreadable: catalog.incomplete.filter((folder) => folder.unreadableManifest).map((folder) => ({ id: folder.id, reason: folder.reason })),
	};
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

/**
 * Only the newest checkpoint is needed for this destination's next incremental; older ones cost
 * I/O. Those of other destinations are their chains: left alone.
 */
function staleCheckpoints(keep: string, prefix: string, known: readonly string[]): string[] {
	return known.filter((name) => isDestinationCheckpoint(name, prefix) && name !== keep);
}

/** Named as our checkpoints are (any destination's, or before they were per destination): `lvb-[<8 hex>-]<backup id>`. */
export function isOurBitmap(name: string): boolean {
	return name.startsWith(CHECKPOINT_PREFIX) && isBackupId(name.slice(CHECKPOINT_PREFIX.length).replace(/^[0-9a-f]{8}-/, ''));
}

/**
 * A checkpoint whose metadata libvirt lost leaves its bitmap in the image, updated on every guest
 * write. Such a loss always makes the next backup a full (its parent's checkpoint is gone), so
 * only then look: asking QEMU directly taints a running domain ("custom-monitor").
 */
async function removeStaleBitmapsOfOurs(ssh: SshConnection, uri: string, vm: DiscoveredVm, warnings: string[], signal?: AbortSignal): Promise<void> {
	const named = (bitmaps: { target: string; name: string }[]) => bitmaps.map((bitmap) => `${bitmap.target}: ${bitmap.name}`).join(', ');
	try {
		const { removed, failed } = await removeStaleBitmaps(ssh, uri, vm, isOurBitmap, signal);
		if (removed.length > 0) warnings.push(`removed stale bitmap(s) of ours that libvirt had no checkpoint for: ${named(removed)}`);
		if (failed.length > 0) warnings.push(`stale bitmap(s) of ours could not be removed: ${failed.map((bitmap) => `${named([bitmap])} (${bitmap.error})`).join(', ')}`);
	} catch (error) {
		warnings.push(`stale bitmaps of ours could not be looked for: ${(error as Error).message}`);
	}
}
