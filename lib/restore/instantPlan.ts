/**
 * Instant recovery, planned without I/O: from a VM's catalog and the backup asked for, the chain
 * the VM will run on, what must be verified first, and one overlay per disk. Everything refused
 * here is refused before anything is created on the host.
 */
import { chainLayers } from '../catalog/consolidate';
import type { CatalogBackup } from '../catalog/list';
import { trustedRecord } from '../catalog/verify';
import { LibvirtBackupError } from '../errors';
import type { ChainLayer } from '../libvirt/instant';
import { checkDestination, vmDirName } from '../store/layout';

export interface InstantPlanRequest {
	/** The backup to boot (a folder of `backups`). */
	backupId: string;
	/** The catalog's backups of that VM folder. */
	backups: readonly CatalogBackup[];
	/** The backup destination, where no overlay may go. */
	dest: string;
	/** Folder for the overlays (absolute). */
	overlayDir: string;
	/** Name of the new domain. */
	name: string;
	/** Hash what no earlier valid record vouches for before booting (default true). */
	verifyFirst: boolean;
	now: Date;
}

export interface InstantPlanDisk {
	target: string;
	overlay: string;
	virtualBytes: number;
	/** Backup images under the overlay, nearest first. */
	chain: ChainLayer[];
}

export interface InstantPlan {
	backup: CatalogBackup;
	/** The backup and its ancestors, nearest first. */
	chain: CatalogBackup[];
	/**
	 * trusted: every member's images are vouched for by an earlier valid record (nothing read);
	 * hash: Verify runs first over `toHash`; unverified: Verify First is off and no record vouches.
	 */
	verification: 'trusted' | 'hash' | 'unverified';
	/** Backups whose images Verify reads (the backup itself is always re-hashed by Verify). */
	toHash: string[];
	bytesToHash: number;
	disks: InstantPlanDisk[];
	warnings: string[];
}

const TARGET = /^[A-Za-z0-9_-]{1,32}$/;

function refuse(message: string): LibvirtBackupError {
	return new LibvirtBackupError('INVALID_INPUT', message);
}

export function planInstant(request: InstantPlanRequest): InstantPlan {
	const dest = checkDestination(request.dest);
	const overlayDir = checkOverlayDir(request.overlayDir, dest);
	if (request.name.trim() === '') throw refuse('The new VM needs a name');
	const byId = new Map(request.backups.map((backup) => [backup.id, backup]));
	const backup = byId.get(request.backupId);
	if (!backup) throw refuse(`No backup ${request.backupId} in the catalog`);

	const chain: CatalogBackup[] = [backup];
	for (let parentId = backup.manifest.parent; parentId !== undefined; ) {
		const parent = byId.get(parentId);
		if (!parent) throw refuse(`${backup.path} cannot be booted: its parent backup ${parentId} is missing from the store`);
		if (chain.includes(parent)) throw refuse(`${backup.path} cannot be booted: backup ${parentId} is its own ancestor`);
		chain.push(parent);
		parentId = parent.manifest.parent;
	}
	for (const member of chain) {
		if (member.verification?.status === 'invalid') {
			throw refuse(`${backup.path} cannot be booted: the latest verification of backup ${member.id} found it invalid (${member.verification.problems.join('; ') || 'see its verification.json'})`);
		}
		if (member.missingFiles.length > 0) throw refuse(`${backup.path} cannot be booted: backup ${member.id} is missing ${member.missingFiles.join(', ')}`);
		if (member.consolidation) throw refuse(`${backup.path} cannot be booted: backup ${member.id} is in the middle of a consolidation; run Prune to finish it first`);
	}
	if (backup.manifest.disks.length === 0) throw refuse(`${backup.path} holds no disk image`);

	const fileBase = vmDirName(request.name);
	const disks = backup.manifest.disks.map((disk): InstantPlanDisk => {
		if (!TARGET.test(disk.target)) throw refuse(`${backup.path}: disk target ${JSON.stringify(disk.target)} is not a device name`);
		if (!Number.isSafeInteger(disk.virtualBytes) || disk.virtualBytes <= 0) throw refuse(`${backup.path}: disk ${disk.target} has no virtual size in its manifest`);
		return { target: disk.target, overlay: `${overlayDir}/${fileBase}.${disk.target}.qcow2`, virtualBytes: disk.virtualBytes, chain: chainLayers(backup, disk, chain) };
	});

	const untrusted = chain.filter((member) => trustedRecord(member, request.now) === undefined);
	const warnings: string[] = [];
	let verification: InstantPlan['verification'] = 'trusted';
	if (untrusted.length > 0) {
		if (request.verifyFirst) verification = 'hash';
		else {
			verification = 'unverified';
			warnings.push(`booted without verification: no earlier valid verification vouches for ${untrusted.map((member) => member.id).join(', ')}`);
		}
	}
	// Verify always re-reads the backup it is given, and the parents no record vouches for.
	const toHash = verification === 'hash' ? [...new Set([backup, ...untrusted])] : [];
	return {
		backup,
		chain,
		verification,
		toHash: toHash.map((member) => member.id),
		bytesToHash: toHash.reduce((total, member) => total + member.manifest.disks.reduce((sum, disk) => sum + disk.bytes, 0), 0),
		disks,
		warnings,
	};
}

/** An absolute, normalized folder that is neither the destination nor inside it (a share others write). */
export function checkOverlayDir(overlayDir: string, dest: string, label = 'overlay folder'): string {
	let dir: string;
	try {
		dir = checkDestination(overlayDir);
	} catch (error) {
		throw refuse(`The ${label}: ${(error as Error).message.replace(/^Destination/, 'it')}`);
	}
	if (dir === dest || dir.startsWith(`${dest}/`)) {
		throw refuse(`The ${label} ${dir} is inside the backup destination ${dest}: use the host's own storage (the destination may be a share others write, and Prune manages it)`);
	}
	return dir;
}
