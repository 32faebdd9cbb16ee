/**
 * A backup is one folder `<dest>/<vm dir>/<UTC timestamp>/` holding the disk images, `domain.xml`
 * and `manifest.json`, written last (temp + rename). No manifest = not a backup. This file is the
 * format's one definition: writers and readers (List, Verify, Prune, Export, Restore) share it.
 */
import { LibvirtBackupError } from '../errors';

export const MANIFEST_FILE = 'manifest.json';
export const MANIFEST_FORMAT = 'n8n-nodes-libvirt-backup/manifest';
export const MANIFEST_VERSION = 1;
/** Written next to the manifest by Verify Checksum. */
export const VERIFICATION_FILE = 'verification.json';
/** Present while a backup folder is being written; removed never (the manifest supersedes it). */
export const INCOMPLETE_MARKER = '.lvb-incomplete';
/** Marker that makes a backup immune to pruning. */
export const PROTECTED_MARKER = '.lvb-protected';

export type BackupKind = 'full' | 'incremental' | 'copy';
export type BackupMethod = 'offline-convert' | 'push' | 'snapshot-commit';
export type Consistency = 'application' | 'crash' | 'offline';

export interface ManifestDisk {
	target: string;
	/** Path of the source disk on the host when the backup was taken. */
	source: string;
	/** Format of the source disk (driver type). */
	sourceFormat?: string;
	/** Image file in the backup folder (a plain file name, never a path). */
	file: string;
	/** Format of the backup image (qcow2). */
	format: string;
	virtualBytes: number;
	/** Size of the image file written. */
	bytes: number;
	sha256: string;
	/** For an incremental: the image in the parent backup this image's qcow2 backing file names. */
	backingFile?: string;
	compressed: boolean;
}

export interface Manifest {
	format: typeof MANIFEST_FORMAT;
	version: typeof MANIFEST_VERSION;
	vm: { name: string; uuid: string };
	host: string;
	/** Backup id = folder name, a UTC timestamp like 20261128T144300Z (sorts by time). */
	id: string;
	startedAt: string;
	finishedAt: string;
	kind: BackupKind;
	/** Id of the backup an incremental builds on (a sibling folder). */
	parent?: string;
	method: BackupMethod;
	consistency: Consistency;
	/** libvirt checkpoint created with this backup (the base of the next incremental). */
	checkpoint?: string;
	disks: ManifestDisk[];
	warnings: string[];
	/**
	 * A synthetic full that Prune rebuilt from an incremental and its ancestors (a standalone copy
	 * of the same point in time): when, and the backups it was made from, this one first.
	 */
	consolidated?: { at: string; from: string[] };
}

const SHA256 = /^[0-9a-f]{64}$/;
const BACKUP_ID = /^\d{8}T\d{6}Z(?:-\d+)?$/;

/** Plain file names inside a backup folder: no separators, no dot-names. */
export function isPlainFileName(name: string): boolean {
	return name.length > 0 && name.length <= 255 && !name.includes('/') && !name.includes('\0') && name !== '.' && name !== '..';
}

export function isBackupId(id: string): boolean {
	return BACKUP_ID.test(id);
}

/** Parses and validates a manifest read from a host; anything off is an error, never a guess. */
export function parseManifest(text: string, where: string): Manifest {
	let value: unknown;
	try {
		value = JSON.parse(text);
	} catch (error) {
		throw new LibvirtBackupError('PARSE_ERROR', `${where}: manifest is not valid JSON (${(error as Error).message})`);
	}
	const fail = (why: string) => new LibvirtBackupError('PARSE_ERROR', `${where}: not a valid backup manifest: ${why}`);
	const manifest = value as Manifest;
	if (!manifest || typeof manifest !== 'object') throw fail('not an object');
	if (manifest.format !== MANIFEST_FORMAT) throw fail(`format is ${JSON.stringify(manifest.format)}`);
	if (manifest.version !== MANIFEST_VERSION) throw fail(`unsupported version ${JSON.stringify(manifest.version)}`);
	if (typeof manifest.vm?.name !== 'string' || typeof manifest.vm?.uuid !== 'string') throw fail('vm name/uuid missing');
	if (!isBackupId(manifest.id)) throw fail(`id ${JSON.stringify(manifest.id)} is not a backup timestamp`);
	if (Number.isNaN(Date.parse(manifest.startedAt)) || Number.isNaN(Date.parse(manifest.finishedAt))) throw fail('bad start/finish time');
	if (!['full', 'incremental', 'copy'].includes(manifest.kind)) throw fail(`kind ${JSON.stringify(manifest.kind)}`);
	if (manifest.kind === 'incremental' && (!manifest.parent || !isBackupId(manifest.parent))) throw fail('incremental without a valid parent');
	if (!Array.isArray(manifest.disks) || manifest.disks.length === 0) throw fail('no disks');
	for (const disk of manifest.disks) {
		if (!isPlainFileName(disk.file) || disk.file === MANIFEST_FILE) throw fail(`disk file ${JSON.stringify(disk.file)} is not a plain file name`);
		if (!SHA256.test(disk.sha256)) throw fail(`disk ${disk.target} has no sha256`);
		if (disk.backingFile !== undefined && !/^\.\.\/\d{8}T\d{6}Z(?:-\d+)?\/[^/]+$/.test(disk.backingFile)) throw fail(`disk ${disk.target} backing file ${JSON.stringify(disk.backingFile)} is not a sibling backup image`);
	}
	if (!Array.isArray(manifest.warnings)) throw fail('warnings missing');
	if (manifest.consolidated !== undefined) {
		const { at, from } = manifest.consolidated;
		if (manifest.kind !== 'full') throw fail('only a full backup can be consolidated');
		if (Number.isNaN(Date.parse(at)) || !Array.isArray(from) || from[0] !== manifest.id || !from.every((id) => typeof id === 'string' && isBackupId(id))) {
			throw fail('consolidated: bad time or list of backups');
		}
	}
	return manifest;
}

export function serializeManifest(manifest: Manifest): string {
	return `${JSON.stringify(manifest, null, 2)}\n`;
}
