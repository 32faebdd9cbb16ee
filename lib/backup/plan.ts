/**
 * The backup planner: what the VM, the host and the store look like in; what to write, and why,
 * out. Pure (no I/O), so every chain rule is a table test (test/unit/backup/plan.test.ts), the way
 * retention is. backup.ts gathers the state, calls planBackup, and carries the plan out.
 */
import { createHash } from 'node:crypto';
import { LibvirtBackupError } from '../errors';
import type { DiscoveredDisk, DiscoveredVm } from '../libvirt';
import type { BackupKind, BackupMethod, Manifest } from '../store/manifest';

export type BackupMode = 'auto' | 'full' | 'incremental' | 'copy';
export type LiveMethod = 'auto' | 'push' | 'snapshot';

/** When auto/incremental mode starts a new chain although the old one is still usable. */
export interface NewFullPolicy {
	/** Start a new full once the chain holds this many incrementals (0 or undefined: no limit). */
	incrementals?: number;
	/** Start a new full once the chain's full is this many days old (0 or undefined: no limit). */
	days?: number;
}

export interface PlanRequest {
	mode: BackupMode;
	method?: LiveMethod;
	/** Disk targets to include; empty = every backupable disk. */
	disks?: string[];
	compression: 'none' | 'qcow2-compressed';
	newFull?: NewFullPolicy;
}

/** What libvirt says about the domain (live VMs only). */
export interface HostState {
	pushBackupSupported: boolean;
	checkpoints: readonly string[];
	/** For our checkpoints: bytes changed per disk target since the checkpoint; a disk without a size has no usable bitmap. */
	dirtyBytes: ReadonlyMap<string, ReadonlyMap<string, number>>;
}

/** A backup of this VM's folder as the store shows it. */
export interface StoredBackup {
	manifest: Manifest;
	/** Image files the manifest names that are not in the folder. */
	missingFiles: readonly string[];
	/** The backup's latest verification, when it has one. */
	verification?: 'valid' | 'invalid' | 'unverifiable';
}

export interface StoreState {
	/** Readable backups of the VM folder, any order. */
	backups: readonly StoredBackup[];
	/** Folders with a manifest that could not be used (unreadable, future format): reported, never built on. */
	unreadable?: readonly { id: string; reason: string }[];
}

export interface PlanInput {
	request: PlanRequest;
	vm: DiscoveredVm;
	/** undefined for a VM that is not running or paused. */
	host?: HostState;
	store: StoreState;
	/** The new backup's id (also names its checkpoint). */
	id: string;
	/** Names this destination's checkpoints (checkpointPrefix), so each destination keeps its own chain. */
	checkpointPrefix: string;
	now: Date;
	/** Upper bound of what a full copy of each selected disk writes (measured on the host). */
	fullBytes: ReadonlyMap<string, number>;
}

export interface DiskStep {
	disk: DiscoveredDisk;
	/** Image file name in the backup folder. */
	file: string;
	/** For an incremental disk: the parent checkpoint its changes are read against. */
	incrementalFrom?: string;
	/** For an incremental disk: the parent's image, relative, that the new image names as backing file. */
	backingFile?: string;
	/** Bytes this disk may write. */
	estimatedBytes: number;
}

export interface BackupPlan {
	id: string;
	kind: BackupKind;
	method: BackupMethod;
	/** The backup an incremental builds on. */
	parent?: Manifest;
	/** libvirt checkpoint to create with this backup. */
	checkpoint?: string;
	disks: DiskStep[];
	compress: boolean;
	/** What the destination must have free (with a small margin for qcow2 metadata). */
	neededBytes: number;
	/** Why this kind (and parent), in words a person reads in the result. */
	reason: string;
	warnings: string[];
}

export const CHECKPOINT_PREFIX = 'lvb-';
/** Checkpoints named before they were per destination: `lvb-<backup id>`. */
const LEGACY_CHECKPOINT = /^lvb-\d{8}T\d{6}Z/;

/**
 * `lvb-<8 hex of the destination path>-`: one VM backed up to two destinations keeps a checkpoint
 * (and so an incremental chain) for each, and a backup to one never deletes the other's.
 */
export function checkpointPrefix(dest: string): string {
	return `${CHECKPOINT_PREFIX}${createHash('sha256').update(dest).digest('hex').slice(0, 8)}-`;
}

/** Our checkpoints that a backup to this destination may delete: its own, and those named before checkpoints were per destination. */
export function isDestinationCheckpoint(name: string, prefix: string): boolean {
	return name.startsWith(prefix) || LEGACY_CHECKPOINT.test(name);
}
/** qcow2 metadata and rounding: ask for a little more than the data itself. */
const SPACE_MARGIN = 1.02;

export function planBackup(input: PlanInput): BackupPlan {
	const { request, vm, host, id } = input;
	const warnings: string[] = [];
	for (const folder of input.store.unreadable ?? []) warnings.push(`backup ${folder.id} was skipped: ${folder.reason}`);
	const live = vm.state === 'running' || vm.state === 'paused';
	const disks = selectDisks(vm, request.disks);
	const snapshot = live && (request.method === 'snapshot' || (request.method !== 'push' && host?.pushBackupSupported === false));
	if (live && request.method === 'push' && host?.pushBackupSupported === false) {
		throw new LibvirtBackupError('BACKUP_FAILED', 'This host has no push-mode backup-begin (libvirt >= 7.2 needed): set Method to Auto or Snapshot');
	}

	const choice = chooseParent(input, live, snapshot, disks);
	const parent = 'parent' in choice ? choice.parent : undefined;
	const whyFull = 'reason' in choice ? choice : undefined;
	const kind: BackupKind = request.mode === 'copy' ? 'copy' : parent ? 'incremental' : 'full';
	if (whyFull && request.mode === 'incremental') warnings.push(`incremental not possible (${whyFull.reason}): full backup instead`);
	if (whyFull?.worthWarning && request.mode === 'auto') warnings.push(`full backup: ${whyFull.reason}`);
	if (request.compression !== 'none' && kind === 'incremental') warnings.push('incremental images are not compressed');

	// Bitmaps live only in qcow2 images: a VM without one can have no checkpoint.
	const checkpoint = live && !snapshot && kind !== 'copy' && disks.some((disk) => disk.format === 'qcow2') ? `${input.checkpointPrefix}${id}` : undefined;
	const steps = disks.map((disk): DiskStep => {
		const full = input.fullBytes.get(disk.target) ?? 0;
		const parentDisk = parent?.disks.find((candidate) => candidate.target === disk.target);
		if (parent?.checkpoint && parentDisk && disk.format === 'qcow2') {
			const dirty = host?.dirtyBytes.get(parent.checkpoint)?.get(disk.target) ?? full;
			return { disk, file: `${disk.target}.qcow2`, incrementalFrom: parent.checkpoint, backingFile: `../${parent.id}/${parentDisk.file}`, estimatedBytes: dirty };
		}
		return { disk, file: `${disk.target}.qcow2`, estimatedBytes: full };
	});
	return {
		id,
		kind,
		method: snapshot ? 'snapshot-commit' : live ? 'push' : 'offline-convert',
		...(parent ? { parent } : {}),
		...(checkpoint ? { checkpoint } : {}),
		disks: steps,
		compress: request.compression === 'qcow2-compressed' && kind !== 'incremental',
		neededBytes: Math.ceil(steps.reduce((sum, step) => sum + step.estimatedBytes, 0) * SPACE_MARGIN),
		reason: kind === 'copy' ? 'copy: a standalone full that leaves the chain alone' : (whyFull?.reason ?? `incremental on ${parent?.id}`),
		warnings,
	};
}

export function selectDisks(vm: DiscoveredVm, targets: readonly string[] | undefined): DiscoveredDisk[] {
	if (targets && targets.length > 0) {
		return targets.map((target) => {
			const disk = vm.disks.find((candidate) => candidate.target === target);
			if (!disk) throw new LibvirtBackupError('INVALID_INPUT', `VM "${vm.name}" has no disk "${target}" (it has: ${vm.disks.map((d) => d.target).join(', ')})`);
			if (!disk.backupable) throw new LibvirtBackupError('INVALID_INPUT', `Disk ${target} of VM "${vm.name}" cannot be backed up: ${disk.reason}`);
			return disk;
		});
	}
	const disks = vm.disks.filter((disk) => disk.backupable);
	if (disks.length === 0) throw new LibvirtBackupError('INVALID_INPUT', `VM "${vm.name}" has no disk that can be backed up: ${vm.reasons.join('; ') || 'no disks'}`);
	return disks;
}

/** The parent an incremental builds on, or why the backup is a full (and whether that deserves a warning). */
type ParentChoice = { parent: Manifest } | { reason: string; worthWarning: boolean };

function chooseParent(input: PlanInput, live: boolean, snapshot: boolean, disks: readonly DiscoveredDisk[]): ParentChoice {
	const { request, vm, host } = input;
	const full = (reason: string, worthWarning = true): ParentChoice => ({ reason, worthWarning });
	if (request.mode === 'full') return full('full backup requested', false);
	if (request.mode === 'copy') return full('copy requested', false);
	if (!live) return full('the VM is not running', false);
	if (snapshot) return full('snapshot backups are always full; incrementals need push-mode backup-begin, libvirt >= 7.2', request.mode === 'incremental');

	const ours = input.store.backups.filter((backup) => backup.manifest.vm.uuid === vm.uuid);
	const byId = new Map(ours.map((backup) => [backup.manifest.id, backup]));
	// A copy leaves the chain alone: the chain continues from the newest full or incremental.
	const previous = ours.filter((backup) => backup.manifest.kind !== 'copy').sort((a, b) => (a.manifest.id < b.manifest.id ? 1 : -1))[0];
	if (!previous) {
		const others = input.store.backups.length - ours.length;
		return full(others > 0 ? `no previous backup of this VM (uuid ${vm.uuid}); ${others} backup(s) in its folder belong to another VM of the same name` : 'no previous backup', others > 0);
	}
	const parent = previous.manifest;
	const chain = chainOf(previous, byId);
	const bad = chain.members.find((member) => member.verification === 'invalid');
	if (bad) return full(`backup ${bad.manifest.id} of the chain failed verification`);
	if (chain.brokenAt) return full(`the chain of ${parent.id} is broken: ${chain.brokenAt}`);
	if (!parent.checkpoint) return full(`the previous backup ${parent.id} has no checkpoint`);
	const damaged = chain.members.find((member) => member.missingFiles.length > 0);
	if (damaged) return full(`backup ${damaged.manifest.id} of the chain is missing ${damaged.missingFiles.join(', ')}`);
	const newDisks = disks.filter((disk) => !parent.disks.some((d) => d.target === disk.target)).map((disk) => disk.target);
	if (newDisks.length > 0) return full(`the previous backup ${parent.id} has no ${newDisks.join(', ')}`);
	if (!host?.checkpoints.includes(parent.checkpoint)) return full(`checkpoint ${parent.checkpoint} no longer exists in libvirt`);
	const sizes = host.dirtyBytes.get(parent.checkpoint);
	const noBitmap = disks.filter((disk) => disk.format === 'qcow2' && sizes?.get(disk.target) === undefined).map((disk) => disk.target);
	if (!sizes || noBitmap.length > 0) {
		return full(`checkpoint ${parent.checkpoint} is unusable: missing or broken bitmap for ${(noBitmap.length > 0 ? noBitmap : disks.map((disk) => disk.target)).join(', ')}`);
	}
	const limit = request.newFull ?? {};
	const incrementals = chain.members.length - 1;
	if (limit.incrementals && incrementals >= limit.incrementals) {
		return full(`the chain already holds ${incrementals} incremental(s) (New Full Backup After: ${limit.incrementals})`, false);
	}
	const base = chain.members[chain.members.length - 1].manifest;
	const ageDays = (input.now.getTime() - Date.parse(base.startedAt)) / 86_400_000;
	if (limit.days && ageDays >= limit.days) {
		return full(`the chain's full backup ${base.id} is ${Math.floor(ageDays)} day(s) old (New Full Backup After: ${limit.days} days)`, false);
	}
	return { parent };
}

/** The backup and its ancestors, newest first, down to its full; where the walk broke, if it did. */
function chainOf(newest: StoredBackup, byId: ReadonlyMap<string, StoredBackup>): { members: StoredBackup[]; brokenAt?: string } {
	const members = [newest];
	const seen = new Set([newest.manifest.id]);
	let current = newest;
	while (current.manifest.kind === 'incremental') {
		const parentId = current.manifest.parent ?? '';
		const parent = byId.get(parentId);
		if (seen.has(parentId)) return { members, brokenAt: `backup ${parentId} is its own ancestor` };
		if (!parent) return { members, brokenAt: `parent backup ${parentId} of ${current.manifest.id} is not in the store` };
		if (parent.manifest.kind === 'copy') return { members, brokenAt: `parent backup ${parentId} is a copy` };
		members.push(parent);
		seen.add(parentId);
		current = parent;
	}
	return { members };
}
