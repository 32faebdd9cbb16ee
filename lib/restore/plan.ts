/**
 * The restore plan (pure): from a backup, its chain in the store, the request and what the host
 * says about the VM now, which image each disk is rebuilt from, where it goes and under which temp
 * name, or why the restore is refused. Nothing here reads or writes a host.
 */
import { layerSpec } from '../catalog/consolidate';
import type { Catalog, CatalogBackup } from '../catalog/list';
import { LibvirtBackupError } from '../errors';
import type { DomainState } from '../libvirt/discover';
import { checkNewDomainName } from '../libvirt/domainXml';
import { checkDestination } from '../store/layout';
import { isPlainFileName, type ManifestDisk } from '../store/manifest';

/** The name a disk is written under until it is complete and checked; then it is renamed. */
export const RESTORE_TEMP_SUFFIX = '.lvb-restore.partial';

export type ShutdownFirst = 'no' | 'graceful' | 'graceful-then-force' | 'force';

export interface RestoreRequest {
	/** 'original': over the VM's own disk files; 'folder': new files in `folder`. */
	target: 'original' | 'folder';
	/** Absolute folder on the host (target 'folder'). */
	folder?: string;
	/** Disk targets to restore; empty or absent: every disk of the backup. */
	disks?: string[];
	/** Target 'folder': define a new VM of this name on the restored disks. */
	newVmName?: string;
	startNewVm?: boolean;
	/** Restore even from a backup whose verification found it invalid, or whose images do not match their manifest. */
	force?: boolean;
	/** Target 'original': what to do with a VM that is not shut off. */
	shutdownFirst?: ShutdownFirst;
}

export interface VmDiskFact {
	target: string;
	type: string;
	format?: string;
	path?: string;
}

/** The VM the backup is of, as the host has it now (target 'original'); absent when it does not exist. */
export interface RestoreFacts {
	vm?: { uuid: string; name: string; state: DomainState; persistent: boolean; disks: VmDiskFact[] };
}

export interface DiskRestorePlan {
	target: string;
	/** Chain images, the backup's own first, down to its full. */
	layers: { path: string; sha256: string }[];
	/** qemu `json:` description of the chain (no image header is followed). */
	spec: string;
	path: string;
	temp: string;
	format: 'qcow2' | 'raw';
	virtualBytes: number;
}

export interface RestorePlan {
	backup: CatalogBackup;
	/** The backup and its ancestors, nearest first. */
	chain: CatalogBackup[];
	target: 'original' | 'folder';
	disks: DiskRestorePlan[];
	/** Target 'original': the VM (by UUID) to stop first, and how; absent when it is shut off. */
	stop?: { uuid: string; mode: Exclude<ShutdownFirst, 'no'> };
	/** Target 'original': the VM whose checkpoints become stale. */
	vmUuid?: string;
	defineVm?: { name: string; start: boolean };
	force: boolean;
	warnings: string[];
}

function refuse(message: string): never {
	throw new LibvirtBackupError('INVALID_INPUT', message);
}

/** The backup and its ancestors, nearest first; refused when one is missing, unusable or loops. */
export function chainOf(backup: CatalogBackup, catalog: Pick<Catalog, 'backups'>): CatalogBackup[] {
	const byId = new Map(catalog.backups.filter((member) => member.vmDir === backup.vmDir).map((member) => [member.id, member]));
	const chain = [backup];
	let parentId = backup.manifest.parent;
	while (parentId !== undefined) {
		const parent = byId.get(parentId);
		if (!parent) refuse(`Backup ${backup.id} cannot be restored: its chain is incomplete (parent backup ${parentId} is not in the store)`);
		if (chain.includes(parent)) refuse(`Backup ${backup.id} cannot be restored: backup ${parentId} is its own ancestor`);
		chain.push(parent);
		parentId = parent.manifest.parent;
	}
	return chain;
}

/** An absolute, normalized folder (the destination's rules) that is not the root. */
function checkFolder(folder: string | undefined): string {
	if (!folder?.trim()) refuse('Restore to a folder needs the folder (an absolute path on the host)');
	try {
		return checkDestination(folder);
	} catch (error) {
		refuse((error as Error).message.replace(/^Destination/, 'Restore folder'));
	}
}

/** File names in the folder: the source disk's own name when usable and unique, else `<target>.<format>`. */
function folderFileNames(disks: readonly { disk: ManifestDisk; format: string }[]): string[] {
	const own = disks.map(({ disk }) => disk.source.split('/').pop() ?? '');
	return disks.map(({ disk, format }, index) => {
		const name = own[index];
		const usable = isPlainFileName(name) && !name.startsWith('.') && !name.endsWith('.partial') && own.indexOf(name) === own.lastIndexOf(name) && !/[\n\r]/.test(name);
		return usable ? name : `${disk.target}.${format}`;
	});
}

function diskFormat(disk: ManifestDisk): 'qcow2' | 'raw' {
	const format = disk.sourceFormat ?? 'qcow2';
	if (format !== 'qcow2' && format !== 'raw') refuse(`Disk ${disk.target} was a ${format} disk: only qcow2 and raw disks can be restored`);
	return format;
}

export function planRestore(backup: CatalogBackup, catalog: Pick<Catalog, 'backups'>, request: RestoreRequest, facts: RestoreFacts): RestorePlan {
	const warnings: string[] = [];
	const force = request.force === true;
	const chain = chainOf(backup, catalog);
	for (const member of chain) {
		if (member.consolidation?.journal !== undefined) refuse(`Backup ${member.id} is in the middle of a consolidation: run Prune Old Backups to finish it, then restore`);
		if (member.missingFiles.length > 0) refuse(`Backup ${member.id} cannot be restored from: image(s) ${member.missingFiles.join(', ')} are missing or not regular files`);
		if (member.verification?.status === 'invalid') {
			const what = member === backup ? `Backup ${member.id}` : `Backup ${member.id}, which backup ${backup.id} builds on,`;
			if (!force) refuse(`${what} failed its latest verification (${member.verification.verifiedAt}): ${member.verification.problems.join('; ') || 'invalid'}. Set Force to restore it anyway.`);
			warnings.push(`${what} failed its latest verification; restored because Force is set`);
		}
	}

	const wanted = request.disks?.length ? request.disks : backup.manifest.disks.map((disk) => disk.target);
	if (new Set(wanted).size !== wanted.length) refuse(`A disk is listed twice: ${wanted.join(', ')}`);
	const selected = wanted.map((target) => {
		const disk = backup.manifest.disks.find((candidate) => candidate.target === target);
		if (!disk) refuse(`Backup ${backup.id} has no disk ${target} (it has: ${backup.manifest.disks.map((candidate) => candidate.target).join(', ')})`);
		return { disk, format: diskFormat(disk) };
	});

	let stop: RestorePlan['stop'];
	let paths: string[];
	if (request.target === 'original') {
		if (request.newVmName) refuse('A new VM can only be defined on disks restored to a folder');
		const vm = facts.vm;
		if (!vm) refuse(`VM ${backup.manifest.vm.name} (uuid ${backup.manifest.vm.uuid}) is not defined on this host: restore to a folder instead (and define a new VM there)`);
		paths = selected.map(({ disk, format }) => {
			const current = vm.disks.find((candidate) => candidate.target === disk.target);
			if (!current) refuse(`VM ${vm.name} has no disk ${disk.target} now: restore it to a folder instead`);
			if (current.type !== 'file' || !current.path) refuse(`Disk ${disk.target} of VM ${vm.name} is a ${current.type} disk now: only file disks can be restored in place`);
			if (current.path !== disk.source) refuse(`Disk ${disk.target} of VM ${vm.name} is ${current.path} now, the backup is of ${disk.source}: restore it to a folder instead`);
			if ((current.format ?? 'raw') !== format) refuse(`Disk ${disk.target} of VM ${vm.name} is a ${current.format ?? 'raw'} disk now, the backup is of a ${format} disk: restore it to a folder instead`);
			return current.path;
		});
		if (vm.state !== 'shutoff') {
			const mode = request.shutdownFirst ?? 'no';
			if (mode === 'no') refuse(`VM ${vm.name} is ${vm.state}: its disks can only be restored while it is shut off. Shut it down, or set Shut Down First.`);
			if (!vm.persistent) refuse(`VM ${vm.name} is transient: shutting it down would remove it. Restore to a folder instead.`);
			stop = { uuid: vm.uuid, mode };
		}
	} else {
		const folder = checkFolder(request.folder);
		const names = folderFileNames(selected);
		paths = names.map((name) => `${folder}/${name}`);
		if (request.newVmName !== undefined && request.newVmName !== '') checkNewDomainName(request.newVmName);
		if (request.startNewVm && !request.newVmName) refuse('Start New VM needs a new VM name');
	}

	const disks = selected.map(({ disk, format }, index): DiskRestorePlan => {
		let spec: string;
		try {
			spec = layerSpec(backup, disk, chain);
		} catch (error) {
			refuse(`Backup ${backup.id} cannot be restored: ${(error as Error).message}`);
		}
		return {
			target: disk.target,
			layers: imagesOf(disk, chain),
			spec,
			path: paths[index],
			temp: `${paths[index]}${RESTORE_TEMP_SUFFIX}`,
			format,
			virtualBytes: disk.virtualBytes,
		};
	});
	return {
		backup,
		chain,
		target: request.target,
		disks,
		...(stop ? { stop } : {}),
		...(request.target === 'original' && facts.vm ? { vmUuid: facts.vm.uuid } : {}),
		...(request.target === 'folder' && request.newVmName ? { defineVm: { name: request.newVmName, start: request.startNewVm === true } } : {}),
		force,
		warnings,
	};
}

/** The images one disk's chain reads, with the hashes their manifests give (layerSpec has checked the links). */
function imagesOf(disk: ManifestDisk, chain: readonly CatalogBackup[]): { path: string; sha256: string }[] {
	const images: { path: string; sha256: string }[] = [];
	let current: ManifestDisk | undefined = disk;
	for (const member of chain) {
		if (!current) break;
		images.push({ path: `${member.path}/${current.file}`, sha256: current.sha256 });
		const file: string | undefined = current.backingFile?.split('/').pop();
		const parent = chain[chain.indexOf(member) + 1];
		current = file === undefined ? undefined : parent?.manifest.disks.find((candidate) => candidate.target === disk.target && candidate.file === file);
	}
	return images;
}
