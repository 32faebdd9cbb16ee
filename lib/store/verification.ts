/**
 * The verification record Verify Checksum writes next to a manifest (`verification.json`), so a
 * backup folder explains its own state and List/Prune know which backups failed.
 */
import { isBackupId } from './manifest';

export const VERIFICATION_FORMAT = 'n8n-nodes-libvirt-backup/verification';
export const VERIFICATION_VERSION = 1;

export type QemuImgCheck = 'ok' | 'errors' | 'skipped';

export interface DiskVerification {
	target: string;
	file: string;
	expectedSha256: string;
	/** null when the image could not be read (missing, not a regular file). */
	actualSha256: string | null;
	ok: boolean;
	qemuImgCheck: QemuImgCheck;
	/** What went wrong, or what qemu-img check said; empty when all is well. */
	detail: string;
}

export interface ParentVerification {
	id: string;
	path: string;
	exists: boolean;
	/** The parent's own images and, in turn, its parents verified. */
	ok: boolean;
	detail: string;
}

export interface VerificationRecord {
	format: typeof VERIFICATION_FORMAT;
	version: typeof VERIFICATION_VERSION;
	backupId: string;
	verifiedAt: string;
	ok: boolean;
	disks: DiskVerification[];
	parents: ParentVerification[];
	/** One line per problem found; empty when ok. */
	problems: string[];
}

export function serializeVerification(record: VerificationRecord): string {
	return `${JSON.stringify(record, null, 2)}\n`;
}

/**
 * Reads a record from a host. A record that does not parse, or belongs to another backup id,
 * counts as no verification at all (undefined) rather than as a pass or a failure.
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
	return record;
}
