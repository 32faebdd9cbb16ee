/**
 * Reading finished backups out of a host, for Export Archive and replicas: which files make up a
 * backup (checked against the catalog, so only finished, usable backups are read), and each file
 * as a stream that fails rather than ends short. The destination may be writable by others: no
 * read here follows a symbolic link or blocks on a FIFO, and every byte is counted and (for images)
 * hashed in Node as it passes, against what the manifest promises.
 */
import { createHash } from 'crypto';
import { Transform, type Readable } from 'stream';
import * as zlib from 'zlib';
import { LibvirtBackupError } from '../errors';
import { newMarker, splitSections } from '../batch';
import { readCatalog, type CatalogBackup } from '../catalog/list';
import { scriptArgv } from '../shell';
import type { SshConnection } from '../ssh';
import { MANIFEST_FILE, VERIFICATION_FILE } from '../store/manifest';
import { DOMAIN_XML_FILE } from '../store/savedDomain';
import { parseBackupPath, type BackupLocation } from '../store/paths';

export interface ExportFile {
	name: string;
	bytes: number;
	/** The manifest's value (images only). */
	sha256?: string;
}

export interface ExportableBackup {
	backup: CatalogBackup;
	/** Images first, then domain.xml, verification.json (if present) and manifest.json last, as the writer makes them. */
	files: ExportFile[];
}

/** A metadata walk: minutes mean a hung share. */
const STAT_TIMEOUT_MS = 5 * 60_000;
/** A PATH lookup (`command -v`): milliseconds; a minute means a hung host. */
const PROBE_TIMEOUT_MS = 60_000;

/**
 * `sh -c STAT_SCRIPT lvb-export-stat MARKER [DIR FILE... ''] ...`: per file, in order, `MARKER file`
 * and `<type> <bytes>` from `stat` on the entry itself (never its target), so a symbolic link
 * reads as one and is refused.
 */
const STAT_SCRIPT = `export LC_ALL=C
m=$1; shift
dir=
for a in "$@"; do
  if [ -z "$a" ]; then dir=; continue; fi
  if [ -z "$dir" ]; then dir=$a; continue; fi
  echo "$m file"
  stat -c '%F %s' -- "$dir/$a" 2>/dev/null || echo missing
done
echo "$m end"`;

/**
 * The backups at these paths, each with the files an export carries, in input order (a path given
 * twice counts once). One catalog read per VM folder and one `stat` for all files: anything that
 * is not a finished, usable backup is refused with the reason.
 */
export async function resolveBackups(ssh: SshConnection, backupPaths: string[], signal?: AbortSignal): Promise<ExportableBackup[]> {
	const locations: BackupLocation[] = [];
	for (const path of backupPaths) {
		const location = parseBackupPath(path);
		if (!locations.some((known) => known.path === location.path)) locations.push(location);
	}
	const folders = new Map<string, { dest: string; vmDir: string }>();
	for (const location of locations) folders.set(`${location.dest}/${location.vmDir}`, { dest: location.dest, vmDir: location.vmDir });
	const catalogs = new Map<string, Awaited<ReturnType<typeof readCatalog>>>();
	for (const [key, folder] of folders) catalogs.set(key, await readCatalog(ssh, folder.dest, [folder.vmDir], signal));

	const backups = locations.map((location) => usableBackup(location, catalogs.get(`${location.dest}/${location.vmDir}`)!));
	const planned = backups.map((backup) => ({ backup, files: plannedFiles(backup) }));
	const sizes = await statFiles(ssh, planned, signal);
	return planned.map(({ backup, files }) => ({
		backup,
		files: files.map((file) => {
			const where = `${backup.path}/${file.name}`;
			const found = sizes.get(where);
			if (!found || found.type === 'missing') throw notExportable(backup.path, `${file.name} is missing`);
			if (found.type !== 'regular file' && found.type !== 'regular empty file') throw notExportable(backup.path, `${file.name} is not a regular file (${found.type}); nothing was followed`);
			if (file.bytes !== undefined && file.bytes !== found.bytes) {
				throw notExportable(backup.path, `${file.name} has ${found.bytes} bytes, the manifest says ${file.bytes}: the image was changed or truncated (run Verify Checksum)`);
			}
			return { name: file.name, bytes: found.bytes, ...(file.sha256 ? { sha256: file.sha256 } : {}) };
		}),
	}));
}

function usableBackup(location: BackupLocation, catalog: Awaited<ReturnType<typeof readCatalog>>): CatalogBackup {
	const backup = catalog.backups.find((candidate) => candidate.id === location.id);
	if (!backup) {
		const incomplete = catalog.incomplete.find((candidate) => candidate.id === location.id);
		if (incomplete) throw notExportable(location.path, `it is not a finished backup: ${incomplete.reason}`);
		if (catalog.quarantined.some((candidate) => candidate.id === location.id)) throw notExportable(location.path, 'only its quarantined copy exists (it failed verification)');
		throw notExportable(location.path, 'no such backup on the host');
	}
	if (backup.verification?.status === 'invalid') {
		throw notExportable(backup.path, `its latest verification (${backup.verification.verifiedAt}) found it invalid: ${backup.verification.problems.join('; ') || 'damaged'}`);
	}
	if (backup.consolidation) throw notExportable(backup.path, 'a consolidation into a synthetic full is unfinished there; the next Prune finishes or discards it');
	if (backup.missingFiles.length > 0) throw notExportable(backup.path, `image files are missing: ${backup.missingFiles.join(', ')}`);
	return backup;
}

interface PlannedFile {
	name: string;
	/** Known in advance for images (the manifest's size). */
	bytes?: number;
	sha256?: string;
}

function plannedFiles(backup: CatalogBackup): PlannedFile[] {
	return [
		...backup.manifest.disks.map((disk) => ({ name: disk.file, bytes: disk.bytes, sha256: disk.sha256 })),
		{ name: DOMAIN_XML_FILE },
		...(backup.verification ? [{ name: VERIFICATION_FILE }] : []),
		{ name: MANIFEST_FILE },
	];
}

async function statFiles(ssh: SshConnection, planned: { backup: CatalogBackup; files: PlannedFile[] }[], signal?: AbortSignal): Promise<Map<string, { type: string; bytes: number }>> {
	const marker = newMarker();
	const args = planned.flatMap(({ backup, files }) => [backup.path, ...files.map((file) => file.name), '']);
	const { stdout } = await ssh.run(scriptArgv(STAT_SCRIPT, 'lvb-export-stat', [marker, ...args]), { label: 'stat backup files', signal, timeoutMs: STAT_TIMEOUT_MS });
	const sections = splitSections(stdout, marker);
	const stats = sections.filter((section) => section.kind === 'file');
	const paths = planned.flatMap(({ backup, files }) => files.map((file) => `${backup.path}/${file.name}`));
	if (sections.at(-1)?.kind !== 'end' || stats.length !== paths.length) {
		throw new LibvirtBackupError('PARSE_ERROR', 'Reading the sizes of the backup files ended early: the output is incomplete');
	}
	const sizes = new Map<string, { type: string; bytes: number }>();
	stats.forEach((section, index) => {
		const line = section.body.trim();
		const space = line.lastIndexOf(' ');
		const bytes = Number(line.slice(space + 1));
		sizes.set(paths[index], space < 0 || !Number.isSafeInteger(bytes) ? { type: 'missing', bytes: 0 } : { type: line.slice(0, space), bytes });
	});
	return sizes;
}

function notExportable(path: string, why: string): LibvirtBackupError {
	return new LibvirtBackupError('INVALID_INPUT', `Backup ${path} cannot be exported: ${why}`, { path });
}

/**
 * `sh -c READ_SCRIPT lvb-read DIR FILE`: enters DIR (not through a symbolic link) and copies FILE
 * to stdout only if it is a regular file, opened O_NOFOLLOW|O_NONBLOCK so a link swapped in is
 * refused and a FIFO swapped in cannot block (its short read fails the byte count).
 */
/** Enters DIR and refuses FILE unless it is a regular file, neither followed through a symbolic link (READ_SCRIPT, COMPRESS_SCRIPT). */
const REFUSE_UNSAFE = `[ -L "$dir" ] && { echo "$dir is a symbolic link: not followed" >&2; exit 1; }
cd -- "$dir" || exit 1
[ -L "$f" ] && { echo "$dir/$f is a symbolic link: not followed" >&2; exit 1; }
[ -f "$f" ] || { echo "$dir/$f is not a regular file" >&2; exit 1; }`;
const READ_SCRIPT = `dir=$1 f=$2
${REFUSE_UNSAFE}
exec dd if="$f" iflag=nofollow,nonblock bs=1M status=none`;

/**
 * One regular file on the host as a stream with backpressure end to end (the SSH window stays
 * closed while the consumer is slow). The stream ERRORS, never ends cleanly, when the read fails,
 * the byte count differs from `expect.bytes`, or the sha256 (computed here as the bytes pass)
 * differs from `expect.sha256`; destroying it stops the command on the host.
 */
export async function openHostFile(ssh: SshConnection, path: string, expect: { bytes: number; sha256?: string }, signal?: AbortSignal): Promise<Readable> {
	const { dir, name } = splitPath(path);
	const remote = await ssh.spawnReadable(scriptArgv(READ_SCRIPT, 'lvb-read', [dir, name]), { label: `reading ${path}`, signal });
	const hash = expect.sha256 ? createHash('sha256') : undefined;
	let seen = 0;
	const wrong = (why: string) => damaged(path, why);
	const checked = new Transform({
		transform(chunk: Buffer, _encoding, callback) {
			seen += chunk.length;
			if (seen > expect.bytes) return callback(wrong(`has more than the expected ${expect.bytes} bytes`));
			hash?.update(chunk);
			callback(null, chunk);
		},
		flush(callback) {
			remote.done.then(
				() => {
					if (seen !== expect.bytes) return callback(wrong(`has ${seen} bytes, expected ${expect.bytes}`));
					const actual = hash?.digest('hex');
					if (actual !== undefined && actual !== expect.sha256) return callback(wrong(`has sha256 ${actual}, the manifest says ${expect.sha256}`));
					callback();
				},
				(error: Error) => callback(error),
			);
		},
		destroy(error, callback) {
			remote.stop();
			callback(error);
		},
	});
	// A failed command may still end its stdout cleanly: its error must reach the consumer first.
	remote.done.catch((error: Error) => checked.destroy(error));
	remote.stdout.on('error', (error: Error) => checked.destroy(error));
	remote.stdout.pipe(checked);
	return checked;
}

function splitPath(path: string): { dir: string; name: string } {
	const slash = path.lastIndexOf('/');
	if (!path.startsWith('/') || slash === path.length - 1) throw new LibvirtBackupError('INVALID_INPUT', `Not an absolute file path: ${path}`);
	return { dir: path.slice(0, slash) || '/', name: path.slice(slash + 1) };
}

function damaged(path: string, why: string): LibvirtBackupError {
	return new LibvirtBackupError('BACKUP_FAILED', `${path} ${why}: the backup was changed or damaged on the host (run Verify Checksum)`, { path });
}

/** The host's program for an archive's compression, as argv: compressed stdin to stdout, one frame (gzip member, zstd frame), quiet. */
export function hostCompressCommand(compression: { kind: 'gzip' | 'zstd'; level: number }): string[] {
	return compression.kind === 'gzip' ? ['gzip', `-${compression.level}`, '-c'] : ['zstd', `-${compression.level}`, '-c', '-q'];
}

/** Whether the host has the program (one `command -v`); a host without it gets its archive compressed in n8n. */
export async function hostHasProgram(ssh: SshConnection, program: string, signal?: AbortSignal): Promise<boolean> {
	const { stdout } = await ssh.run(scriptArgv('command -v "$1" >/dev/null && echo yes || echo no', 'lvb-probe', [program]), { label: `looking for ${program}`, signal, timeoutMs: PROBE_TIMEOUT_MS });
	return stdout.trim() === 'yes';
}

/** `sh -c COMPRESS_SCRIPT lvb-compress DIR FILE PROGRAM ARG...`: FILE read as READ_SCRIPT reads it, piped into PROGRAM ARG... */
const COMPRESS_SCRIPT = `dir=$1 f=$2
shift 2
${REFUSE_UNSAFE}
dd if="$f" iflag=nofollow,nonblock bs=1M status=none | "$@"`;

/** Output chunk of the decompression that checks a host's frames. */
const VERIFY_CHUNK = 256 * 1024;

/**
 * One image compressed on its host (by `command`, hostCompressCommand's by default), as a stream of
 * the compressed bytes, with backpressure end to end. What is delivered is checked, not what the host
 * says: every compressed chunk is also decompressed here and the result counted and hashed, so the
 * stream ERRORS, never ends cleanly, unless the frames hold exactly the manifest's bytes and sha256
 * and the host's command succeeded. Destroying it stops the command on the host.
 */
export async function openHostCompressed(
	ssh: SshConnection,
	path: string,
	expect: { bytes: number; sha256: string },
	compression: { kind: 'gzip' | 'zstd'; level: number },
	signal?: AbortSignal,
	command: readonly string[] = hostCompressCommand(compression),
): Promise<Readable> {
	const { dir, name } = splitPath(path);
	const verify = compression.kind === 'gzip' ? zlib.createGunzip({ chunkSize: VERIFY_CHUNK }) : zstdDecompress();
	const remote = await ssh.spawnReadable(scriptArgv(COMPRESS_SCRIPT, 'lvb-compress', [dir, name, ...command]), { label: `compressing ${path}`, signal });
	const hash = createHash('sha256');
	let seen = 0;
	const checked = new Transform({
		transform(chunk: Buffer, _encoding, callback) {
			if (verify.write(chunk)) return callback(null, chunk);
			verify.once('drain', () => callback(null, chunk));
		},
		flush(callback) {
			verify.end();
			Promise.all([remote.done, verified]).then(
				([result]) => {
					const said = result.stderr.trim() ? ` (the host said: ${result.stderr.trim().slice(-300)})` : '';
					if (seen !== expect.bytes) return callback(damaged(path, `has ${seen} bytes, expected ${expect.bytes}${said}`));
					const actual = hash.digest('hex');
					if (actual !== expect.sha256) return callback(damaged(path, `has sha256 ${actual}, the manifest says ${expect.sha256}${said}`));
					callback();
				},
				(error: Error) => callback(error),
			);
		},
		destroy(error, callback) {
			remote.stop();
			verify.destroy();
			callback(error);
		},
	});
	verify.on('data', (chunk: Buffer) => {
		seen += chunk.length;
		if (seen > expect.bytes) checked.destroy(damaged(path, `has more than the expected ${expect.bytes} bytes`));
		else hash.update(chunk);
	});
	const verified = new Promise<void>((resolve, reject) => {
		verify.once('end', resolve);
		verify.once('error', (error: Error) => {
			const wrong = new LibvirtBackupError('BACKUP_FAILED', `${path}: what the host sent does not decompress (${error.message}): the host's ${command[0]} failed or the data was damaged on the way`, { path });
			checked.destroy(wrong);
			reject(wrong);
		});
	});
	verified.catch(() => undefined); // the error reaches the consumer through `checked`
	remote.done.catch((error: Error) => checked.destroy(error));
	remote.stdout.on('error', (error: Error) => checked.destroy(error));
	remote.stdout.pipe(checked);
	return checked;
}

function zstdDecompress(): Transform {
	const create = (zlib as unknown as { createZstdDecompress?: (options: { chunkSize: number }) => Transform }).createZstdDecompress;
	if (!create) throw new LibvirtBackupError('INVALID_INPUT', `zstd needs Node.js 22.15 / 23.8 or newer; this n8n runs on Node.js ${process.version}`);
	return create({ chunkSize: VERIFY_CHUNK });
}
