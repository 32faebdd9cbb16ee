/**
 * Verify Checksum: re-hash every image of a backup, compare with its manifest, run `qemu-img check`
 * on qcow2 images, check the backups it builds on, record the result next to each manifest it
 * re-hashed, and optionally quarantine or delete a backup that failed (under the VM's lock).
 *
 * A parent whose own record says its images were found valid is trusted, not re-hashed (each night
 * would otherwise re-read the whole chain): its folder and images must still be there. Re-hashing
 * the whole chain is an option.
 *
 * Only proven damage makes a backup invalid and lets it be removed: a hash that differs, qemu-img
 * check reporting corruption, an image or a parent backup that is gone. What could not be read or
 * checked (permission, I/O error, a check that could not finish) makes it unverifiable: reported,
 * never acted on. And a VM is never left without a backup that is not known to be invalid.
 */
import { CONSOLIDATION_JOURNAL } from '../store/consolidation';
import { LibvirtBackupError, isLibvirtBackupError } from '../errors';
import { describeInstantUse } from '../store/instant';
import { acquireVmLock, type VmLock } from '../store/lock';
import type { Manifest, ManifestDisk } from '../store/manifest';
import type { SshConnection } from '../ssh';
import { changeFolders, type FolderChange } from './changes';
import { checkImages, type ImageResult } from './imageCheck';
import { readCatalog, type Catalog, type CatalogBackup } from './list';
import { QUARANTINE_SUFFIX, parseBackupPath, type BackupLocation } from '../store/paths';
import {
	VERIFICATION_FORMAT,
	VERIFICATION_VERSION,
	combineStatus,
	serializeVerification,
	type DiskVerification,
	type ParentVerification,
	type VerificationRecord,
	type VerificationStatus,
} from '../store/verification';

export type InvalidAction = 'keep' | 'quarantine' | 'delete';

export interface VerifyOptions {
	onInvalid?: InvalidAction;
	/** Written into the lock file while a failed backup is quarantined or deleted. */
	lockHolder?: string;
	signal?: AbortSignal;
	/** Re-hash every parent too, even one verified valid earlier (default: trust those). */
	rehashChain?: boolean;
}

export interface BackupVerification extends BackupLocation {
	manifest: Manifest;
	status: VerificationStatus;
	/** status === 'valid'. */
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
		// Mid-consolidation, a folder's images may already be the new full while its manifest is the
		// old incremental's: a hash would "prove" damage that is not there. Nothing is judged or written.
		const consolidating = members.filter((member) => member.consolidation?.journal !== undefined);
		if (consolidating.length > 0) {
			return {
				...location,
				vm: backup.vm,
				manifest: backup.manifest,
				status: 'unverifiable',
				valid: false,
				checkedAt: new Date().toISOString(),
				disks: [],
				parents: [],
				problems: consolidating.map((member) => `backup ${member.id} is in the middle of a consolidation (${CONSOLIDATION_JOURNAL}); the next Prune finishes it`),
				action: 'kept',
			};
		}
		const trusted = new Map<string, VerificationRecord>();
		if (!options.rehashChain) {
			const now = new Date();
			for (const parent of chain.found) {
				const record = this.hashed(parent) ? undefined : trustedRecord(parent, now);
				if (record) trusted.set(parent.id, record);
			}
		}
		await this.hash(members.filter((member) => !trusted.has(member.id)), options.signal);
		const checkedAt = new Date().toISOString();
		const records = recordsFor(members, chain.missing, (member) => this.own(member, trusted.get(member.id)), checkedAt);

		const written = await changeFolders(
			this.ssh,
			location.dest,
			location.vmDir,
			records.flatMap((record): FolderChange[] => (record ? [{ op: 'record', id: record.backupId, data: serializeVerification(record) }] : [])),
			{ signal: options.signal },
		);
		// The backup itself is always hashed, so it always gets a record.
		const record = records[0]!;
		const problems = [...record.problems];
		const notRecorded = written.find((outcome) => outcome.id === backup.id && outcome.status !== 'recorded');
		if (notRecorded) problems.push(`the result could not be recorded in the backup folder: ${notRecorded.status} ${notRecorded.detail}`.trim());

		const result: BackupVerification = {
			...location,
			vm: backup.vm,
			manifest: backup.manifest,
			status: record.status,
			valid: record.ok,
			checkedAt,
			disks: record.disks,
			parents: record.parents,
			problems,
			action: 'kept',
		};
		const onInvalid = options.onInvalid ?? 'keep';
		if (record.status === 'invalid' && onInvalid !== 'keep') await this.dispose(result, onInvalid, options);
		return result;
	}

	private async hash(members: readonly CatalogBackup[], signal?: AbortSignal): Promise<void> {
		const wanted = members.flatMap((member) =>
			member.manifest.disks.map((disk) => ({ path: `${member.path}/${disk.file}`, format: disk.format })).filter((image) => !this.images.has(image.path)),
		);
		if (wanted.length === 0) return;
		for (const [path, result] of await checkImages(this.ssh, wanted, signal)) this.images.set(path, result);
	}

	/** Whether this run has hashed all of a backup's images already: then they are judged on that, not on an older record. */
	private hashed(backup: CatalogBackup): boolean {
		return backup.manifest.disks.every((disk) => this.images.has(`${backup.path}/${disk.file}`));
	}

	private own(backup: CatalogBackup, trustedOn: VerificationRecord | undefined): OwnImages {
		return trustedOn ? { trustedOn } : { disks: this.ownDisks(backup) };
	}

	private ownDisks(backup: CatalogBackup): DiskVerification[] {
		return backup.manifest.disks.map((disk) => {
			const image = this.images.get(`${backup.path}/${disk.file}`);
			if (!image) throw new LibvirtBackupError('BACKUP_FAILED', `Image ${backup.path}/${disk.file} was not checked`);
			return judgeDisk(disk, image, backup.manifest.parent);
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
			// Read again under the lock, with this run's records in place: what the VM keeps is decided
			// on what is there now, not on what was there before the images were hashed.
			const { backups } = await readCatalog(this.ssh, result.dest, [result.vmDir], options.signal);
			// Removing or renaming it would pull the disk from under a running VM (its chain is marked too).
			const inUse = backups.find((backup) => backup.id === result.id)?.inUse ?? [];
			if (inUse.length > 0) {
				result.problems.push(`not ${action === 'delete' ? 'deleted' : 'quarantined'}: in use by instant-recovery VM ${inUse.map(describeInstantUse).join(', ')}`);
				return;
			}
			if (!leavesAGoodBackup(backups, result.id)) {
				result.problems.push(`not ${action === 'delete' ? 'deleted' : 'quarantined'}: VM "${result.vm}" would be left without a backup that is not known to be invalid`);
				return;
			}
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

export interface Ancestry {
	/** Existing ancestors, nearest first. */
	found: CatalogBackup[];
	/** The first ancestor that is not a usable backup, why, and whether that is proven (invalid) or may pass. */
	missing?: { id: string; path: string; detail: string; status: 'invalid' | 'unverifiable' };
}

function ancestry(backup: CatalogBackup, catalog: Catalog): Ancestry {
	const byId = new Map(catalog.backups.map((candidate) => [candidate.id, candidate]));
	const found: CatalogBackup[] = [];
	const seen = new Set([backup.id]);
	let parentId = backup.manifest.parent;
	while (parentId !== undefined) {
		const path = `${backup.dest}/${backup.vmDir}/${parentId}`;
		if (seen.has(parentId)) {
			return { found, missing: { id: parentId, path, detail: `backup ${parentId} is its own ancestor (a loop in the parent chain)`, status: 'invalid' } };
		}
		seen.add(parentId);
		const parent = byId.get(parentId);
		if (!parent) return { found, missing: { id: parentId, path, ...whyMissing(parentId, catalog) } };
		found.push(parent);
		parentId = parent.manifest.parent;
	}
	return { found };
}

/**
 * A parent that is gone or quarantined breaks the chain for good (the backing file path no longer
 * resolves). A parent folder that is there but not listed as a backup (its manifest could not be
 * read, e.g. no permission) may still hold intact images: that proves nothing.
 */
function whyMissing(id: string, catalog: Catalog): { detail: string; status: 'invalid' | 'unverifiable' } {
	if (catalog.quarantined.some((folder) => folder.id === id)) return { detail: `parent backup ${id} is quarantined`, status: 'invalid' };
	const incomplete = catalog.incomplete.find((folder) => folder.id === id);
	if (incomplete) return { detail: `parent backup ${id} is not a usable backup: ${incomplete.reason}`, status: 'unverifiable' };
	return { detail: `parent backup ${id} does not exist`, status: 'invalid' };
}

/**
 * One disk's verdict. Proven damage (invalid): the image is gone or replaced by something that is
 * not a regular file (our writer renames every image into place before it writes the manifest, and
 * no reader of ours follows a link), its hash differs, qemu-img check reports corruption, or its
 * backing file lies outside the parent backup. A failed read, a hash not read back, or a check
 * that could not finish proves nothing (unverifiable).
 */
export function judgeDisk(disk: ManifestDisk, image: ImageResult, parent: string | undefined): DiskVerification {
	const invalid: string[] = [];
	const doubts: string[] = [];
	if (image.state === 'unreadable') doubts.push(image.detail);
	else if (image.state !== 'read') invalid.push(image.detail);
	else if (image.sha256 === null) doubts.push('the sha256 of the image could not be read back');
	else if (image.sha256 !== disk.sha256) invalid.push(`sha256 mismatch: expected ${disk.sha256}, got ${image.sha256}`);
	if (image.qemuImgCheck === 'errors') invalid.push(image.detail);
	if (image.qemuImgCheck === 'incomplete') doubts.push(image.detail);
	if (disk.backingFile !== undefined && parent !== undefined && !disk.backingFile.startsWith(`../${parent}/`)) {
		invalid.push(`backing file ${disk.backingFile} is not in the parent backup ${parent}`);
	}
	const status: VerificationStatus = invalid.length > 0 ? 'invalid' : doubts.length > 0 ? 'unverifiable' : 'valid';
	const problems = [...invalid, ...doubts];
	return {
		target: disk.target,
		file: disk.file,
		expectedSha256: disk.sha256,
		actualSha256: image.sha256,
		status,
		ok: status === 'valid',
		qemuImgCheck: image.qemuImgCheck,
		detail: (problems.length > 0 ? problems : image.detail ? [image.detail] : []).join('; '),
	};
}

/**
 * Whether the VM keeps, without backup `id`, a backup that is not known to be invalid: one whose
 * whole chain is there, does not go through `id`, and holds no record of proven damage. Prune
 * never removes the newest such backup; Verify never removes the last way to one.
 */
export function leavesAGoodBackup(backups: readonly CatalogBackup[], id: string): boolean {
	const byId = new Map(backups.map((backup) => [backup.id, backup]));
	const good = (start: CatalogBackup): boolean => {
		const seen = new Set<string>();
		for (let member: CatalogBackup | undefined = start; member !== undefined; member = member.manifest.parent === undefined ? undefined : byId.get(member.manifest.parent)) {
			if (member.id === id || seen.has(member.id) || member.verification?.status === 'invalid') return false;
			seen.add(member.id);
			if (member.manifest.parent !== undefined && !byId.has(member.manifest.parent)) return false;
		}
		return true;
	};
	return backups.some((backup) => backup.id !== id && good(backup));
}

/**
 * The record on which a parent's images may be trusted without re-hashing them, or undefined (then
 * they are hashed). The destination is not trusted, so a record counts only when it says valid, is
 * for this backup, is dated after its manifest was written and not in the future, vouches for
 * exactly the images its manifest names today (same files, the same sha256 read back, qemu-img
 * check clean: a rewritten manifest or a record copied from elsewhere does not match), and every
 * one of those images is still a regular file in the folder.
 */
export function trustedRecord(backup: CatalogBackup, now: Date): VerificationRecord | undefined {
	const record = backup.verification;
	if (!record || record.status !== 'valid' || !record.ok || record.backupId !== backup.id || backup.missingFiles.length > 0) return undefined;
	const verifiedAt = Date.parse(record.verifiedAt);
	if (Number.isNaN(verifiedAt) || verifiedAt < Date.parse(backup.manifest.finishedAt) || verifiedAt > now.getTime()) return undefined;
	if (record.disks.length !== backup.manifest.disks.length) return undefined;
	const vouched = backup.manifest.disks.every((disk) =>
		record.disks.some(
			(checked) =>
				checked.file === disk.file &&
				checked.target === disk.target &&
				checked.status === 'valid' &&
				checked.expectedSha256 === disk.sha256 &&
				checked.actualSha256 === disk.sha256 &&
				(checked.qemuImgCheck === 'ok' || checked.qemuImgCheck === 'skipped'),
		),
	);
	return vouched ? record : undefined;
}

/** How a chain member's own images are judged: hashed in this run, or trusted on its earlier record. */
export type OwnImages = { disks: DiskVerification[] } | { trustedOn: VerificationRecord };

/**
 * The record of each chain member (nearest first), built from the oldest: a member is valid when
 * its own images are and the backup under it is; proven damage anywhere below makes it invalid,
 * a doubt anywhere below (and no damage) unverifiable. A trusted member gets no new record
 * (undefined): its own still says when its images were last read.
 */
export function recordsFor(
	members: readonly CatalogBackup[],
	missing: Ancestry['missing'],
	judge: (member: CatalogBackup) => OwnImages,
	verifiedAt: string,
): (VerificationRecord | undefined)[] {
	const records: (VerificationRecord | undefined)[] = new Array(members.length);
	let below: ParentVerification[] = missing
		? [{ id: missing.id, path: missing.path, exists: false, status: missing.status, ok: false, detail: missing.detail, trusted: false }]
		: [];
	for (let index = members.length - 1; index >= 0; index--) {
		const member = members[index];
		const judged = judge(member);
		const disks = 'disks' in judged ? judged.disks : [];
		const parent = below[0];
		const problems = disks.filter((disk) => !disk.ok).map((disk) => `${disk.target} (${disk.file}): ${disk.detail}`);
		if (parent && !parent.ok) {
			problems.push(!parent.exists ? parent.detail : parent.status === 'invalid' ? `parent backup ${parent.id} failed verification` : `parent backup ${parent.id} could not be verified`);
		}
		const status = combineStatus([...disks.map((disk) => disk.status), ...(parent ? [parent.status] : [])]);
		const own = disks.filter((disk) => !disk.ok).map((disk) => `${disk.target}: ${disk.detail}`);
		const detail = own.length > 0 ? own.join('; ') : problems.join('; ');
		const entry: ParentVerification = { id: member.id, path: member.path, exists: true, status, ok: status === 'valid', detail, trusted: false };
		if ('trustedOn' in judged) {
			entry.trusted = true;
			entry.verifiedAt = judged.trustedOn.verifiedAt;
		} else {
			records[index] = { format: VERIFICATION_FORMAT, version: VERIFICATION_VERSION, backupId: member.id, verifiedAt, status, ok: status === 'valid', disks, parents: below, problems };
		}
		below = [entry, ...below];
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
