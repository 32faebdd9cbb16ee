/**
 * Which names under a destination can belong to us. Everything List, Verify and Prune touch is
 * `<dest>/<vm dir>/<backup id>` with a vm dir as `vmDirName` encodes it and a backup id as the
 * manifest format defines it; anything else is foreign and is neither listed nor touched.
 * The remote scripts repeat these checks on the host before they change anything.
 */
import { LibvirtBackupError } from '../errors';
import { checkDestination, vmDirName, vmNameFromDir } from './layout';
import { INCOMPLETE_MARKER, MANIFEST_FILE, isBackupId } from './manifest';
import { DOMAIN_XML_FILE } from './savedDomain';

/** A backup that failed verification is renamed to `<id>.quarantined`: kept for a person, never listed as good. */
export const QUARANTINE_SUFFIX = '.quarantined';

/**
 * The only entries a stale incomplete folder may hold for Prune to remove it: what our writer
 * (lib/backup) leaves when it is interrupted. Besides these exact names, any `<name>.partial`.
 */
export const STALE_FOLDER_FILES = [INCOMPLETE_MARKER, DOMAIN_XML_FILE, `${MANIFEST_FILE}.tmp`, '.lvb-backup.xml', '.lvb-checkpoint.xml'] as const;

const VM_DIR = /^[A-Za-z0-9_+%-][A-Za-z0-9_+.%-]*$/;

/** A folder name `vmDirName` can produce (percent-encoded, no leading dot, no separators). */
export function isVmDirName(name: string): boolean {
	return name.length <= 255 && VM_DIR.test(name);
}

export function isQuarantinedName(name: string): boolean {
	return name.endsWith(QUARANTINE_SUFFIX) && isBackupId(name.slice(0, -QUARANTINE_SUFFIX.length));
}

/** Whether a file in an incomplete folder is one our writer leaves behind (see STALE_FOLDER_FILES). */
export function isStaleFolderEntry(name: string): boolean {
	return (STALE_FOLDER_FILES as readonly string[]).includes(name) || (name.endsWith('.partial') && name.length > '.partial'.length);
}

export interface BackupLocation {
	dest: string;
	vmDir: string;
	/** The VM name the folder name encodes (the manifest holds the authoritative one). */
	vm: string;
	id: string;
	path: string;
}

export function backupLocation(dest: string, vmDir: string, id: string): BackupLocation {
	return { dest, vmDir, vm: vmNameFromDir(vmDir), id, path: `${dest}/${vmDir}/${id}` };
}

/**
 * Splits a backup folder path into destination, vm dir and id, refusing anything that is not
 * exactly `<absolute normalized dest>/<vm dir>/<backup id>`.
 */
export function parseBackupPath(path: string): BackupLocation {
	const trimmed = path.trim().replace(/\/+$/, '');
	const parts = trimmed.split('/');
	const id = parts.pop() ?? '';
	const vmDir = parts.pop() ?? '';
	const where = `"${path}" is not a backup folder (expected <destination>/<vm>/<backup id>)`;
	if (id.endsWith(QUARANTINE_SUFFIX) && isQuarantinedName(id)) {
		throw new LibvirtBackupError('INVALID_INPUT', `${where}: it is a quarantined backup; rename it back to ${id.slice(0, -QUARANTINE_SUFFIX.length)} to use it again`);
	}
	if (!isBackupId(id)) throw new LibvirtBackupError('INVALID_INPUT', `${where}: "${id}" is not a backup id like 20261128T144300Z`);
	if (!isVmDirName(vmDir)) throw new LibvirtBackupError('INVALID_INPUT', `${where}: "${vmDir}" is not a VM folder name`);
	const dest = checkDestination(parts.join('/') || '/');
	return backupLocation(dest, vmDir, id);
}

/** The VM folder names for a VM name filter (names as typed, encoded the way backups are stored). */
export function vmDirsFor(vmNames: readonly string[]): string[] {
	return [...new Set(vmNames.map((name) => vmDirName(name)))];
}
