/**
 * Packs backups into one tar stream, `<vm dir>/<id>/<file>` as in the store (so unpacking an
 * archive into a folder gives a destination List Backups reads), optionally compressed with zlib.
 * Pure streaming: one file is read at a time, and the packer, zlib and the consumer pass
 * backpressure back to the file's source, so memory holds a few buffers whatever the size. A
 * source that errors fails the archive stream: it never ends short. Images may come compressed
 * from their host (see PackOptions.openCompressed).
 */
import { createHash } from 'crypto';
import { PassThrough, Transform, Writable, pipeline, type Readable } from 'stream';
import { pipeline as pipelineAsync } from 'stream/promises';
import * as zlib from 'zlib';
import { LibvirtBackupError } from '../errors';
import type { ExportableBackup, ExportFile } from './source';
import { BLOCK, TAR_END, padding, tarHeader, tarHeaderBytes, type TarEntry } from './tarHeader';

export type Compression = { kind: 'none' } | { kind: 'gzip'; level: number } | { kind: 'zstd'; level: number };

export const ARCHIVE_FORMATS = {
	none: { extension: '.tar', mimeType: 'application/x-tar' },
	gzip: { extension: '.tar.gz', mimeType: 'application/gzip' },
	zstd: { extension: '.tar.zst', mimeType: 'application/zstd' },
} as const;

/** Output chunk of zlib (default 16 KiB): fewer, larger thread-pool round trips. */
const ZLIB_CHUNK = 256 * 1024;
/** Input chunk of zlib (see packArchive). */
const COMPRESS_CHUNK = 1024 * 1024;

/** Opens one file of one backup as a stream that errors (never ends short) when it is not what was promised. */
export type FileOpener = (backup: ExportableBackup, file: ExportFile) => Promise<Readable>;

export interface PackedArchive {
	/** The archive bytes (compressed when asked). */
	stream: Readable;
	/** Exact size of the uncompressed tar, known before anything is read. */
	tarBytes: number;
	/** Where the compression runs (absent for a plain tar). */
	compressedOn?: 'n8n' | 'host';
	/** Bytes and sha256 of what `stream` delivered; valid once it has ended. */
	digest(): { bytes: number; sha256: string };
}

export function entryName(backup: ExportableBackup, file: ExportFile): string {
	return `${backup.backup.vmDir}/${backup.backup.id}/${file.name}`;
}

function entryHeader(backup: ExportableBackup, file: ExportFile): TarEntry {
	return { name: entryName(backup, file), size: file.bytes, mode: 0o644, mtime: new Date(backup.backup.manifest.finishedAt) };
}

/** The exact byte size of the tar `packArchive` writes: each file's header(s), its data padded to 512-byte blocks, and the end. */
export function tarSize(backups: readonly ExportableBackup[]): number {
	let total = TAR_END.length;
	for (const backup of backups) for (const file of backup.files) total += tarHeaderBytes(entryHeader(backup, file)) + Math.ceil(file.bytes / BLOCK) * BLOCK;
	return total;
}

/**
 * Joins small chunks into ones of at least `bytes` (the last may be smaller), for a consumer that
 * pays per chunk: zlib (one thread-pool round trip each, see packArchive) and a store that writes
 * each chunk with its own call (n8n's filesystem binary data store: 1 GiB took 6.9 s at 16 KiB per
 * chunk and 2.3 s at 32 KiB, Node 24, measured).
 */
export function rechunk(bytes: number): Transform {
	let pending: Buffer[] = [];
	let size = 0;
	return new Transform({
		transform(chunk: Buffer, _encoding, callback) {
			pending.push(chunk);
			size += chunk.length;
			if (size < bytes) return callback();
			const joined = Buffer.concat(pending, size);
			pending = [];
			size = 0;
			callback(null, joined);
		},
		flush(callback) {
			callback(null, size > 0 ? Buffer.concat(pending, size) : undefined);
		},
	});
}

/**
 * A writable that feeds `into` (zlib) chunks of exactly `bytes` (the last may be smaller), copied into
 * `slots` buffers it reuses once `into` has consumed them (its write callback), and ends `into` when
 * it ends. Unlike `rechunk`, it allocates nothing per chunk: in the export's worker thread every
 * allocated buffer is external memory, and external memory is what starts its garbage collections.
 */
export function feedInChunks(into: Writable, bytes: number, slots = 3): Writable {
	const free: Buffer[] = Array.from({ length: slots }, () => Buffer.allocUnsafe(bytes));
	let waiting: (() => void) | undefined;
	let current: Buffer | undefined;
	let used = 0;
	let failed: Error | undefined;
	const send = (buffer: Buffer, length: number) => {
		into.write(buffer.subarray(0, length), (error) => {
			if (error) return;
			free.push(buffer);
			const resume = waiting;
			waiting = undefined;
			resume?.();
		});
	};
	/** Calls `then` once a buffer is free to fill (at once when one is). */
	const slot = (then: () => void) => {
		if (failed || current || free.length > 0) {
			current ??= free.shift();
			return then();
		}
		waiting = () => slot(then);
	};
	const feeder = new Writable({
		write(chunk: Buffer, _encoding, callback) {
			let offset = 0;
			const fill = () => {
				if (failed) return callback(failed);
				while (offset < chunk.length) {
					if (!current) return slot(fill);
					const n = chunk.copy(current, used, offset);
					offset += n;
					used += n;
					if (used === bytes) {
						send(current, used);
						current = undefined;
						used = 0;
					}
				}
				callback();
			};
			fill();
		},
		final(callback) {
			if (current && used > 0) send(current, used);
			into.end();
			callback();
		},
		destroy(error, callback) {
			// After a normal finish (autoDestroy) `into` is still flushing: only a stop cuts it short.
			if (!feeder.writableFinished && !into.writableFinished) into.destroy(error ?? undefined);
			callback(error);
		},
	});
	into.once('close', () => {
		if (into.writableFinished) return;
		failed = new LibvirtBackupError('ABORTED', 'The archive was stopped before it was complete');
		waiting?.();
		if (!feeder.destroyed) feeder.destroy(failed);
	});
	return feeder;
}

/** The zlib stream for a compression, or a clear error when this Node has no zstd. */
export function compressor(compression: Compression): Transform | undefined {
	if (compression.kind === 'none') return undefined;
	checkLevel(compression);
	if (compression.kind === 'gzip') return zlib.createGzip({ level: compression.level, chunkSize: ZLIB_CHUNK });
	const zstd = (zlib as unknown as { createZstdCompress?: (options: { chunkSize: number; params: Record<number, number> }) => Transform }).createZstdCompress;
	const levelParam = (zlib.constants as unknown as Record<string, number>).ZSTD_c_compressionLevel;
	if (!zstd || levelParam === undefined) {
		throw new LibvirtBackupError(
			'INVALID_INPUT',
			`zstd compression needs Node.js 22.15 / 23.8 or newer (zlib.createZstdCompress); this n8n runs on Node.js ${process.version}. Choose gzip, or run n8n on a newer Node.js (n8n 2.x images ship Node 22/24).`,
		);
	}
	return zstd({ chunkSize: ZLIB_CHUNK, params: { [levelParam]: compression.level } });
}

/** Refuses a level outside the compression's range; `given` is the value as the user wrote it, for the message. */
export function checkLevel(compression: Exclude<Compression, { kind: 'none' }>, given: unknown = compression.level): void {
	const [min, max] = compression.kind === 'gzip' ? [1, 9] : [1, 19];
	if (!Number.isInteger(compression.level) || compression.level < min || compression.level > max) {
		throw new LibvirtBackupError('INVALID_INPUT', `${compression.kind} level must be a whole number from ${min} to ${max}, got ${String(given)}`);
	}
}

/**
 * Opens an image compressed on its host, in the archive's compression: its data as compressed
 * frames (no header, no padding). The stream errors, never ends cleanly, unless the frames hold
 * exactly the manifest's bytes (see openHostCompressed).
 */
export type CompressedOpener = (backup: ExportableBackup, file: ExportFile) => Promise<Readable>;

export interface PackOptions {
	/** Off: the caller hashes what it delivers (the export worker leaves it to the other thread); digest() then has sha256 ''. */
	hashOutput?: boolean;
	/**
	 * Images (the files with a manifest sha256) compressed on their host: the archive is then a
	 * series of frames (gzip members, zstd frames), the host's for image data and our own for
	 * headers, padding and the small files, which together decompress to the same tar.
	 */
	openCompressed?: CompressedOpener;
}

/**
 * The archive of these backups as one stream. Files are opened one after another only when the
 * packer wants them; the compression is checked (zstd availability, level) before anything starts.
 * A file that delivers more or fewer bytes than its header says fails the archive.
 */
export async function packArchive(
	backups: readonly ExportableBackup[],
	open: FileOpener,
	compression: Compression,
	signal?: AbortSignal,
	options: PackOptions = {},
): Promise<PackedArchive> {
	const compress = compressor(compression);
	const openCompressed = compression.kind === 'none' ? undefined : options.openCompressed;
	const tarBytes = tarSize(backups);
	const hash = options.hashOutput === false ? undefined : createHash('sha256');
	let bytes = 0;
	let sha256: string | undefined;
	// Every stream stage costs per chunk on the (busy) packing thread: the tar enters at `head`, which
	// also joins chunks for zlib, and leaves through `out`, which also counts and hashes.
	const out = new Transform({
		readableHighWaterMark: 1024 * 1024,
		transform(chunk: Buffer, _encoding, callback) {
			bytes += chunk.length;
			hash?.update(chunk);
			callback(null, chunk);
		},
		flush(callback) {
			sha256 = hash?.digest('hex') ?? '';
			callback();
		},
	});
	const fail = (error: Error) => {
		if (!out.destroyed) out.destroy(error);
	};
	// zlib is fed ~1 MiB chunks, not the SSH-packet-sized ones files arrive in: each chunk is one thread-pool
	// round trip, and zstd -1 compressed 1 GiB at 554 MB/s in 32 KiB writes, 1139 MB/s in 1 MiB ones (Node 24).
	// They are copied into three reused buffers, not joined into new ones (see feedInChunks).
	const zlibStream = openCompressed ? undefined : compress;
	const first = zlibStream ?? new PassThrough({ highWaterMark: 1024 * 1024 });
	const head: Writable = zlibStream ? feedInChunks(zlibStream, COMPRESS_CHUNK) : first;
	pipeline(first, out, (error) => {
		if (error) fail(error);
	});
	const stopped = () => new LibvirtBackupError('ABORTED', 'The archive was stopped before it was complete');
	const put = async (chunk: Buffer): Promise<void> => {
		if (head.destroyed) throw stopped();
		if (chunk.length === 0 || head.write(chunk)) return;
		await new Promise<void>((resolve, reject) => {
			const done = () => {
				head.off('drain', done);
				head.off('close', done);
				if (head.destroyed) reject(stopped());
				else resolve();
			};
			head.on('drain', done);
			head.on('close', done);
		});
	};
	let current: Readable | undefined;
	/** Pipes a file's stream into `into` (the archive, not ended); with `bytes`, fails unless it delivers exactly that many. */
	const pour = async (opening: Promise<Readable>, name: string, bytes?: number, into: Writable = head): Promise<void> => {
		const source = (current = await opening);
		if (head.destroyed) {
			// The consumer stopped while the file was being opened.
			source.destroy();
			throw stopped();
		}
		let seen = 0;
		// Counted by a listener, not one more stream stage.
		if (bytes !== undefined) {
			source.on('data', (chunk: Buffer) => {
				seen += chunk.length;
				if (seen > bytes) source.destroy(new LibvirtBackupError('BACKUP_FAILED', `${name} delivered more than the ${bytes} bytes its header says`));
			});
		}
		await pipelineAsync(source, into, { end: false });
		if (bytes !== undefined && seen !== bytes) throw new LibvirtBackupError('BACKUP_FAILED', `${name} delivered ${seen} bytes, its header says ${bytes}`);
	};

	const tar = async () => {
		for (const backup of backups) {
			for (const file of backup.files) {
				await put(tarHeader(entryHeader(backup, file)));
				await pour(open(backup, file), entryName(backup, file), file.bytes);
				await put(padding(file.bytes));
			}
		}
		await put(TAR_END);
	};
	// Our bytes (headers, padding, small files) as frames of up to ~1 MiB of input each, the images' frames as their host sent them.
	const frames = async (openImage: CompressedOpener) => {
		let pending: Buffer[] = [];
		let size = 0;
		const frame = async () => {
			const input = Buffer.concat(pending, size);
			pending = [];
			size = 0;
			await put(compressSync(compression as Exclude<Compression, { kind: 'none' }>, input));
		};
		const add = (chunk: Buffer) => {
			pending.push(chunk);
			size += chunk.length;
		};
		// A small file's bytes join our pending frame rather than the stream.
		const collect = new Writable({
			write(chunk: Buffer, _encoding, callback) {
				add(chunk);
				if (size < COMPRESS_CHUNK) return callback();
				frame().then(() => callback(), callback);
			},
		});
		for (const backup of backups) {
			for (const file of backup.files) {
				add(tarHeader(entryHeader(backup, file)));
				if (file.sha256 !== undefined) {
					await frame();
					await pour(openImage(backup, file), entryName(backup, file));
				} else {
					await pour(open(backup, file), entryName(backup, file), file.bytes, collect);
				}
				add(padding(file.bytes));
			}
		}
		add(TAR_END);
		await frame();
	};
	(openCompressed ? frames(openCompressed) : tar()).then(
		() => head.end(),
		(error: Error) => {
			current?.destroy();
			fail(error);
		},
	);

	const onAbort = () => fail(new LibvirtBackupError('ABORTED', 'Cancelled: the archive was not finished'));
	signal?.addEventListener('abort', onAbort, { once: true });
	out.once('close', () => {
		signal?.removeEventListener('abort', onAbort);
		// A consumer that stops (or fails) stops the file being read, and with it the read on the host.
		if (!out.readableEnded) {
			current?.destroy();
			head.destroy();
		}
	});

	return {
		stream: out,
		tarBytes,
		...(compress ? { compressedOn: openCompressed ? 'host' : 'n8n' } : {}),
		digest: () => {
			if (sha256 === undefined) throw new LibvirtBackupError('BACKUP_FAILED', 'The archive has not been completely written');
			return { bytes, sha256 };
		},
	};
}

/** One frame (a gzip member, a zstd frame) of `input`: concatenated, they decompress to the concatenated inputs. */
function compressSync(compression: Exclude<Compression, { kind: 'none' }>, input: Buffer): Buffer {
	if (compression.kind === 'gzip') return zlib.gzipSync(input, { level: compression.level });
	const zstd = (zlib as unknown as { zstdCompressSync: (data: Buffer, options: { params: Record<number, number> }) => Buffer }).zstdCompressSync;
	return zstd(input, { params: { [(zlib.constants as unknown as Record<string, number>).ZSTD_c_compressionLevel]: compression.level } });
}
