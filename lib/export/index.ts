/**
 * Export Archive's engine: backups read from a host as streams, packed into one tar (optionally
 * compressed), delivered as a stream (n8n binary data) or written to a file on a host (this one or
 * another) under a temp name renamed when complete. Nothing here knows n8n.
 */
import { pipeline } from 'stream/promises';
import { Transform, type Readable } from 'stream';
import { LibvirtBackupError } from '../errors';
import type { SshConnection } from '../ssh';
import { ARCHIVE_FORMATS, checkLevel, compressor, packArchive, type Compression, type CompressedOpener, type PackedArchive } from './archive';
import { createHostFileWriter } from './sink';
import { hostCompressCommand, hostHasProgram, openHostCompressed, openHostFile, type ExportableBackup, type ExportFile } from './source';

export { ARCHIVE_FORMATS, compressor, entryName, feedInChunks, packArchive, rechunk, tarSize } from './archive';
export type { Compression, CompressedOpener, FileOpener, PackedArchive } from './archive';
export { openHostFile, resolveBackups } from './source';
export type { ExportFile, ExportableBackup } from './source';
export { createHostFileWriter } from './sink';
export type { HostFileWriter, HostFileWriterOptions } from './sink';
export { writeArchiveOffThread } from './offThread';
export { replicateBackups } from './replica';
export type { ReplicaOptions, ReplicaProgress, ReplicaResult } from './replica';

export interface ArchiveSummary {
	/** Bytes of the archive as delivered (compressed when asked). */
	bytes: number;
	sha256: string;
	/** Bytes of the uncompressed tar. */
	tarBytes: number;
	/** Where the compression ran: 'host' only when asked for and the host had the program (absent for a plain tar). */
	compressedOn?: 'n8n' | 'host';
	files: number;
	backups: { vm: string; id: string; path: string }[];
}

/**
 * Where an archive's compression runs: in n8n (the default), or on the source host, which then
 * sends compressed bytes (fewer over a network, none of n8n's CPU); a host without the program
 * gets its archive compressed in n8n.
 */
export type CompressOn = 'n8n' | 'host';

/**
 * The archive's compression and where it runs, from the node's parameters as given (an expression can
 * give anything): a clear error for every value outside the options, never a silent default. A
 * missing Compress On (a workflow saved before it existed) is n8n.
 */
export function archiveSettings(kind: unknown, level: unknown, compressOn: unknown = 'n8n'): { compression: Compression; compressOn: CompressOn } {
	if (kind !== 'none' && kind !== 'gzip' && kind !== 'zstd') {
		throw new LibvirtBackupError('INVALID_INPUT', `Compression must be one of ${Object.keys(ARCHIVE_FORMATS).join(', ')}; got ${JSON.stringify(kind)}`);
	}
	if (compressOn !== 'n8n' && compressOn !== 'host') throw new LibvirtBackupError('INVALID_INPUT', `Compress On must be n8n or host; got ${JSON.stringify(compressOn)}`);
	// A plain tar compresses nothing: where is moot.
	if (kind === 'none') return { compression: { kind }, compressOn: 'n8n' };
	const compression: Exclude<Compression, { kind: 'none' }> = { kind, level: typeof level === 'number' ? level : typeof level === 'string' && level.trim() !== '' ? Number(level) : Number.NaN };
	checkLevel(compression, level);
	return { compression, compressOn };
}

/**
 * The archive of these backups, read from `ssh` one file at a time, each checked against the
 * manifest as it streams (compressed on the host: checked there, see openHostCompressed).
 */
export async function openArchive(
	ssh: SshConnection,
	backups: readonly ExportableBackup[],
	compression: Compression,
	signal?: AbortSignal,
	options: { hashOutput?: boolean; compressOn?: CompressOn } = {},
): Promise<PackedArchive> {
	const open = (item: ExportableBackup, file: ExportFile) => openHostFile(ssh, `${item.backup.path}/${file.name}`, file, signal);
	let openCompressed: CompressedOpener | undefined;
	if (compression.kind !== 'none' && options.compressOn === 'host') {
		compressor(compression); // a bad level, or no zstd in this Node, is refused before the host is asked
		const command = hostCompressCommand(compression);
		if (await hostHasProgram(ssh, command[0], signal)) {
			openCompressed = (item, file) => openHostCompressed(ssh, `${item.backup.path}/${file.name}`, { bytes: file.bytes, sha256: file.sha256! }, compression, signal);
		}
	}
	return await packArchive(backups, open, compression, signal, { hashOutput: options.hashOutput, openCompressed });
}

export function summarize(archive: PackedArchive, backups: readonly ExportableBackup[]): ArchiveSummary {
	return {
		...archive.digest(),
		tarBytes: archive.tarBytes,
		...(archive.compressedOn ? { compressedOn: archive.compressedOn } : {}),
		files: backups.reduce((total, item) => total + item.files.length, 0),
		backups: backups.map((item) => ({ vm: item.backup.manifest.vm.name, id: item.backup.id, path: item.backup.path })),
	};
}

/** A pass-through that fails once more than `max` bytes went through it (for a store with a size cap). */
export function capBytes(max: number, tooLarge: () => Error): Transform {
	let seen = 0;
	return new Transform({
		transform(chunk: Buffer, _encoding, callback) {
			seen += chunk.length;
			callback(seen > max ? tooLarge() : null, chunk);
		},
	});
}

/**
 * Writes the archive to `finalPath` on the host of `target` (the source host or another one): under
 * a temp name, renamed only when every byte arrived and was flushed; on any failure the temp file is
 * removed and nothing is left at the final name.
 */
export async function writeArchiveToHost(
	source: SshConnection,
	target: SshConnection,
	backups: readonly ExportableBackup[],
	finalPath: string,
	compression: Compression,
	options: { signal?: AbortSignal; overwrite?: boolean; compressOn?: CompressOn } = {},
): Promise<ArchiveSummary> {
	const expected = ARCHIVE_FORMATS[compression.kind].extension;
	if (!finalPath.endsWith(expected)) throw new LibvirtBackupError('INVALID_INPUT', `${finalPath}: a ${compression.kind === 'none' ? 'tar' : compression.kind} archive's name must end in ${expected}`);
	const archive = await openArchive(source, backups, compression, options.signal, { compressOn: options.compressOn });
	let writer;
	try {
		writer = await createHostFileWriter(target, finalPath, { signal: options.signal, overwrite: options.overwrite });
	} catch (error) {
		archive.stream.destroy();
		throw error;
	}
	try {
		await pipeline(archive.stream as Readable, writer.stream);
		// commit() checks that the host holds exactly the bytes sent.
		await writer.commit();
		return summarize(archive, backups);
	} catch (error) {
		archive.stream.destroy();
		await writer.abort();
		throw error;
	}
}
