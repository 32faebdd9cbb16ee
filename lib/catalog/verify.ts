/**
 * Verify Checksum: re-hash every image of a backup and of the backups it builds on, compare with
 * the manifests, run `qemu-img check` on qcow2 images, record the result next to each manifest,
 * and optionally quarantine or delete a backup that failed (under the VM's lock).
 */
import { LibvirtBackupError, isLibvirtBackupError } from '../errors';
import { acquireVmLock, type VmLock } from '../store/lock';
import type { Manifest } from '../store/manifest';
import type { SshConnection } from '../ssh';
import { changeFolders, type FolderChange } from './changes';
import { checkImages, type ImageResult } from './imageCheck';
import { readCatalog, type Catalog, type CatalogBackup } from './list';
import { QUARANTINE_SUFFIX, parseBackupPath, type BackupLocation } from '../store/paths';
import {
	VERIFICATION_FORMAT,
	VERIFICATION_VERSION,
	serializeVerification,
	type DiskVerification,
	type ParentVerification,
	type VerificationRecord,
} from '../store/verification';

export type InvalidAction = 'keep' | 'quarantine' | 'delete';

export interface VerifyOptions {
	onInvalid?: InvalidAction;
	/** Written into the lock file while a failed backup is quarantined or deleted. */
	lockHolder?: string;
	signal?: AbortSignal;
}

export interface BackupVerification extends BackupLocation {
	manifest: Manifest;
	valid: boolean;
	checkedAt: string;
	disks: DiskVerification[];
	/** The backups this one builds on, nearest first. */
	parents: ParentVerification[];
	problems: string[];
	action: 'kept' | 'quarantined' | 'deleted';
	/** Where the backup is now (changes when quarantined). */
	path: string;
}

/**
 * One verifier per node run: images already hashed in this run (an incremental's parents, shared
 * by every later incremental of the chain) are not read again.
 */
export class BackupVerifier {
	private readonly images = new Map<string, ImageResult>();

	constructor(private readonly ssh: SshConnection) {}

	async verify(backupPath: string, options: VerifyOptions = {}): Promise<BackupVerification> {
		const location = parseBackupPath(backupPath);
		const catalog = await readCatalog(this.ssh, location.dest, [location.vmDir], options.signal);
		const backup = catalog.backups.find((candidate) => candidate.id === location.id);
		if (!backup) throw notABackup(location, catalog);

		const chain = ancestry(backup, catalog);
		const members = [backup, ...chain.found];
		await this.hash(members, options.signal);
		const checkedAt = new Date().toISOString();
		const records = recordsFor(members, chain.missing, (member) => this.ownDisks(member), checkedAt);

		const written = await changeFolders(
			this.ssh,
			location.dest,
			location.vmDir,
			members.map((member, index): FolderChange => ({ op: 'record', id: member.id, data: serializeVerification(records[index]) })),
			{ signal: options.signal },
		);
		const record = records[0];
		const problems = [...record.problems];
		const notRecorded = written.find((outcome) => outcome.id === backup.id && outcome.status !== 'recorded');
		if (notRecorded) problems.push(`the result could not be recorded in the backup folder: ${notRecorded.status} ${notRecorded.detail}`.trim());

		const result: BackupVerification = {
			...location,
			vm: backup.vm,
			manifest: backup.manifest,
			valid: record.ok,
			checkedAt,
			disks: record.disks,
			parents: record.parents,
			problems,
			action: 'kept',
		};
		const onInvalid = options.onInvalid ?? 'keep';
		if (!record.ok && onInvalid !== 'keep') await this.dispose(result, onInvalid, options);
		return result;
	}

	private async hash(members: readonly CatalogBackup[], signal?: AbortSignal): Promise<void> {
		const wanted = members.flatMap((member) =>
			member.manifest.disks.map((disk) => ({ path: `${member.path}/${disk.file}`, format: disk.format })).filter((image) => !this.images.has(image.path)),
		);
		if (wanted.length === 0) return;
		for (const [path, result] of await checkImages(this.ssh, wanted, signal)) this.images.set(path, result);
	}

	private ownDisks(backup: CatalogBackup): DiskVerification[] {
		return backup.manifest.disks.map((disk): DiskVerification => {
			const image = this.images.get(`${backup.path}/${disk.file}`);
			if (!image) throw new LibvirtBackupError('BACKUP_FAILED', `Image ${backup.path}/${disk.file} was not checked`);
			const problems: string[] = [];
			if (image.state !== 'read') problems.push(image.detail);
			else if (image.sha256 !== disk.sha256) problems.push(`sha256 mismatch: expected ${disk.sha256}, got ${image.sha256 ?? 'no hash'}`);
			if (image.state === 'read' && image.qemuImgCheck === 'errors') problems.push(image.detail);
			if (disk.backingFile !== undefined && backup.manifest.parent !== undefined && !disk.backingFile.startsWith(`../${backup.manifest.parent}/`)) {
				problems.push(`backing file ${disk.backingFile} is not in the parent backup ${backup.manifest.parent}`);
			}
			const notes = problems.length > 0 ? problems : image.detail ? [image.detail] : [];
			return {
				target: disk.target,
				file: disk.file,
				expectedSha256: disk.sha256,
				actualSha256: image.sha256,
				ok: problems.length === 0,
				qemuImgCheck: image.state === 'read' ? image.qemuImgCheck : 'skipped',
				detail: notes.join('; '),
			};
		});
	}

	/** Quarantines or deletes under the VM's lock; a VM busy with a backup keeps the failed one, and says so. */
	private async dispose(result: BackupVerification, action: 'quarantine' | 'delete', options: VerifyOptions): Promise<void> {
		let lock: VmLock;
		try {
			lock = await acquireVmLock(this.ssh, `${result.dest}/${result.vmDir}`, options.lockHolder ?? `n8n Verify Checksum, ${new Date().toISOString()}`, result.vm);
		} catch (error) {
			if (!isLibvirtBackupError(error, 'LOCKED')) throw error;
			result.problems.push(`could not ${action} the backup: ${error.message}`);
			return;
		}
		try {
			const [outcome] = await changeFolders(this.ssh, result.dest, result.vmDir, [{ op: action === 'delete' ? 'remove' : 'quarantine', id: result.id }], {
				signal: options.signal,
			});
			if (outcome.status === 'quarantined') {
				result.action = 'quarantined';
				result.path = `${result.path}${QUARANTINE_SUFFIX}`;
			} else if (outcome.status === 'removed') {
				result.action = 'deleted';
			} else {
				result.problems.push(`could not ${action} the backup: ${outcome.status} ${outcome.detail}`.trim());
			}
		} finally {
			await lock.release();
		}
	}
}

interface Ancestry {
	/** Existing ancestors, nearest first. */
	found: CatalogBackup[];
	/** The first ancestor that is not a usable backup, and why. */
	missing?: { id: string; path: string; detail: string };
}

function ancestry(backup: CatalogBackup, catalog: Catalog): Ancestry {
	const byId = new Map(catalog.backups.map((candidate) => [candidate.id, candidate]));
	const found: CatalogBackup[] = [];
	const seen = new Set([backup.id]);
	let parentId = backup.manifest.parent;
	while (parentId !== undefined) {
		const path = `${backup.dest}/${backup.vmDir}/${parentId}`;
		if (seen.has(parentId)) return { found, missing: { id: parentId, path, detail: `backup ${parentId} is its own ancestor (a loop in the parent chain)` } };
		seen.add(parentId);
		const parent = byId.get(parentId);
		if (!parent) return { found, missing: { id: parentId, path, detail: whyMissing(parentId, catalog) } };
		found.push(parent);
		parentId = parent.manifest.parent;
	}
	return { found };
}

function whyMissing(id: string, catalog: Catalog): string {
	if (catalog.quarantined.some((folder) => folder.id === id)) return `parent backup ${id} is quarantined`;
	const incomplete = catalog.incomplete.find((folder) => folder.id === id);
	if (incomplete) return `parent backup ${id} is not a usable backup: ${incomplete.reason}`;
	return `parent backup ${id} does not exist`;
}

/**
 * The record of each chain member (nearest first), built from the oldest: a member is ok when its
 * own images are and every backup under it is.
 */
function recordsFor(
	members: readonly CatalogBackup[],
	missing: Ancestry['missing'],
	ownDisks: (member: CatalogBackup) => DiskVerification[],
	verifiedAt: string,
): VerificationRecord[] {
	const records: VerificationRecord[] = new Array(members.length);
	let below: ParentVerification[] = missing ? [{ id: missing.id, path: missing.path, exists: false, ok: false, detail: missing.detail }] : [];
	for (let index = members.length - 1; index >= 0; index--) {
		const member = members[index];
		const disks = ownDisks(member);
		const problems = [
			...disks.filter((disk) => !disk.ok).map((disk) => `${disk.target} (${disk.file}): ${disk.detail}`),
			...below.filter((parent) => !parent.ok).slice(0, 1).map((parent) => (parent.exists ? `parent backup ${parent.id} failed verification` : parent.detail)),
		];
		records[index] = {
			format: VERIFICATION_FORMAT,
			version: VERIFICATION_VERSION,
			backupId: member.id,
			verifiedAt,
			ok: problems.length === 0,
			disks,
			parents: below,
			problems,
		};
		const own = disks.filter((disk) => !disk.ok).map((disk) => `${disk.target}: ${disk.detail}`);
		const detail = own.length > 0 ? own.join('; ') : problems.length > 0 ? problems.join('; ') : '';
		below = [{ id: member.id, path: member.path, exists: true, ok: problems.length === 0, detail }, ...below];
	}
	return records;
}

function notABackup(location: BackupLocation, catalog: Catalog): LibvirtBackupError {
	const incomplete = catalog.incomplete.find((folder) => folder.id === location.id);
	if (incomplete) return new LibvirtBackupError('INVALID_INPUT', `${location.path} is not a backup: ${incomplete.reason}`);
	if (catalog.quarantined.some((folder) => folder.id === location.id)) {
		return new LibvirtBackupError('INVALID_INPUT', `${location.path} was quarantined (${location.path}${QUARANTINE_SUFFIX}) after a failed verification`);
	}
	return new LibvirtBackupError('INVALID_INPUT', `No backup at ${location.path}: the folder does not exist`);
}
