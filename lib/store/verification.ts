/**
 * The verification record Verify Checksum writes next to a manifest (`verification.json`), so a
 * backup folder explains its own state and List/Prune know which backups failed.
 *
 * `status` was added to format version 1 without a version bump: a record without it (written
 * before) reads as valid or invalid from `ok`, and a reader that knows only `ok` still reads a new
 * record safely, since `ok` stays true for a valid backup alone. A parent's `trusted` and
 * `verifiedAt` were added the same way: a parent entry without them was re-hashed.
 */
import { isBackupId } from './manifest';

export const VERIFICATION_FORMAT = 'n8n-nodes-libvirt-backup/verification';
export const VERIFICATION_VERSION = 1;

/**
 * valid: every image re-read and matching; invalid: damage proven (a hash differs, qemu-img check
 * found corruption, an image or a parent backup is gone); unverifiable: something could not be
 * read or checked (permission, I/O error), so nothing is proven either way.
 */
export type VerificationStatus = 'valid' | 'invalid' | 'unverifiable';

/** 'incomplete': qemu-img check could not finish (e.g. a backing file it could not open), which proves nothing. */
export type QemuImgCheck = 'ok' | 'errors' | 'incomplete' | 'skipped';

export interface DiskVerification {
	target: string;
	file: string;
	expectedSha256: string;
	/** null when the image could not be read (missing, not a regular file, no permission). */
	actualSha256: string | null;
	status: VerificationStatus;
	/** status === 'valid'. */
	ok: boolean;
	qemuImgCheck: QemuImgCheck;
	/** What went wrong, or what qemu-img check said; empty when all is well. */
	detail: string;
}

export interface ParentVerification {
	id: string;
	path: string;
	exists: boolean;
	/** The parent's own images and, in turn, its parents. */
	status: VerificationStatus;
	/** status === 'valid'. */
	ok: boolean;
	detail: string;
	/**
	 * true: its images were not re-hashed, on the strength of its own earlier record that found them
	 * valid (dated `verifiedAt`); false: re-hashed, or missing. Absent in records written before.
	 */
	trusted?: boolean;
	/** When trusted: the `verifiedAt` of the parent's record this trust rests on. */
	verifiedAt?: string;
}

export interface VerificationRecord {
	format: typeof VERIFICATION_FORMAT;
	version: typeof VERIFICATION_VERSION;
	backupId: string;
	verifiedAt: string;
	status: VerificationStatus;
	/** status === 'valid'. */
	ok: boolean;
	disks: DiskVerification[];
	parents: ParentVerification[];
	/** One line per problem found; empty when valid. */
	problems: string[];
}

const STATUSES: ReadonlySet<unknown> = new Set<VerificationStatus>(['valid', 'invalid', 'unverifiable']);

/** The status of a whole made of parts: any proven damage makes it invalid, any doubt unverifiable. */
export function combineStatus(parts: readonly VerificationStatus[]): VerificationStatus {
	if (parts.includes('invalid')) return 'invalid';
	return parts.includes('unverifiable') ? 'unverifiable' : 'valid';
}

export function serializeVerification(record: VerificationRecord): string {
	return `${JSON.stringify(record, null, 2)}\n`;
}

/**
 * Reads a record from a host. A record that does not parse, belongs to another backup id, or whose
 * status contradicts its `ok`, counts as no verification at all (undefined) rather than as a pass
 * or a failure.
 */
export function parseVerification(text: string, backupId: string): VerificationRecord | undefined {
	let value: unknown;
	try {
		value = JSON.parse(text);
	} catch {
		return undefined;
	}
	const record = value as VerificationRecord;
	if (!record || typeof record !== 'object' || record.format !== VERIFICATION_FORMAT || record.version !== VERIFICATION_VERSION) return undefined;
	if (!isBackupId(record.backupId) || record.backupId !== backupId) return undefined;
	if (typeof record.ok !== 'boolean' || Number.isNaN(Date.parse(record.verifiedAt))) return undefined;
	const status = statusOf(record);
	if (!status || !Array.isArray(record.disks) || !Array.isArray(record.parents)) return undefined;
	const disks = record.disks.map((disk) => ({ ...disk, status: statusOf(disk) }));
	const parents = record.parents.map((parent) => ({ ...parent, status: statusOf(parent) }));
	if (!disks.every(hasStatus) || !parents.every(hasStatus) || !parents.every(hasValidTrust)) return undefined;
	return { ...record, status, disks, parents };
}

/** A part's status, from `ok` when it predates `status`; undefined when the two disagree. */
function statusOf(part: { ok: unknown; status?: unknown }): VerificationStatus | undefined {
	if (typeof part !== 'object' || part === null || typeof part.ok !== 'boolean') return undefined;
	if (part.status === undefined) return part.ok ? 'valid' : 'invalid';
	if (!STATUSES.has(part.status) || part.ok !== (part.status === 'valid')) return undefined;
	return part.status as VerificationStatus;
}

/** A trust claim says on which record it rests; a hashed or missing parent names none. */
function hasValidTrust(parent: { trusted?: unknown; verifiedAt?: unknown }): boolean {
	if (parent.trusted === true) return typeof parent.verifiedAt === 'string' && !Number.isNaN(Date.parse(parent.verifiedAt));
	return (parent.trusted === undefined || parent.trusted === false) && parent.verifiedAt === undefined;
}

function hasStatus<T extends { status: VerificationStatus | undefined }>(part: T): part is T & { status: VerificationStatus } {
	return part.status !== undefined;
}
