/**
 * An archive packed in a worker thread and written to a sink (an HTTP response) from a ring of
 * shared memory: no buffer is allocated per chunk in the calling thread.
 *
 * Why: inside n8n the same export ran about 3x slower than outside it. `--trace-gc` of the n8n
 * process showed 95 full mark-compacts of its ~180 MB heap (19 s of a 52 s export of 2.6 GiB), each
 * started by the memory of short-lived Buffers (ssh2 without its optional native crypto, which
 * n8n's `npm install --ignore-scripts` never builds, makes about two per SSH packet). In a worker
 * those allocations land in a heap of a few MB, where a mark-compact costs milliseconds, and the
 * calling thread only writes views of the shared ring, freeing a slot when its write is done.
 */
import { createHash } from 'crypto';
import { existsSync } from 'fs';
import * as path from 'path';
import type { Writable } from 'stream';
import { Worker } from 'worker_threads';
import { LibvirtBackupError, type ErrorCode } from '../errors';
import type { SshTarget } from '../ssh';
import type { ArchiveSummary, CompressOn } from './index';
import type { Compression } from './archive';
import type { ExportableBackup } from './source';

export interface WorkerInit {
	target: SshTarget;
	backups: readonly ExportableBackup[];
	compression: Compression;
	compressOn: CompressOn;
	ring: SharedArrayBuffer;
	slots: number;
	slotBytes: number;
}

export type WorkerMessage =
	| { kind: 'slot'; slot: number; bytes: number }
	| { kind: 'done'; summary: ArchiveSummary }
	| { kind: 'error'; code: ErrorCode; message: string };

const SLOTS = 4;
const SLOT_BYTES = 1024 * 1024;

/** The compiled worker next to this file (dist), or, from the TypeScript sources (tests), in dist. */
function workerFile(): string {
	const here = path.join(__dirname, 'worker.js');
	if (existsSync(here)) return here;
	const built = path.resolve(__dirname, '..', '..', 'dist', 'lib', 'export', 'worker.js');
	if (existsSync(built)) return built;
	throw new LibvirtBackupError('BACKUP_FAILED', `The export worker is missing (${here}): build the package (npm run build)`);
}

/**
 * Packs `backups` (read over a connection of the worker's own to `target`) into `sink`, which it
 * does not end. Resolves with the archive's summary once every byte has been written to the sink.
 */
export async function writeArchiveOffThread(
	target: SshTarget,
	backups: readonly ExportableBackup[],
	compression: Compression,
	sink: Writable,
	signal?: AbortSignal,
	compressOn: CompressOn = 'n8n',
): Promise<ArchiveSummary> {
	const ring = new SharedArrayBuffer(SLOTS * SLOT_BYTES);
	const init: WorkerInit = { target, backups, compression, compressOn, ring, slots: SLOTS, slotBytes: SLOT_BYTES };
	// Limits on the worker's heap, for n8n's peak RSS (target: under 100 MiB over idle). Nearly all the
	// worker's garbage is Buffers (SSH packets, socket reads, zlib output) whose memory lies outside
	// the heap, and the old generation's limit decides both how much of it waits dead (RSS) and how
	// often the heap is collected (speed): `--trace-gc`, the same export, old 64 MiB: 356 of 903
	// mark-compacts "external memory pressure", stop-the-world; old 128 MiB: 25 of 707. tar.zst
	// through n8n, 2026-12-05 (`bench/export-n8n.ts --runs 2 --only zstd`, zlib fed from reused
	// buffers): old 64 MiB 65 % of the baseline, 67.5 MiB peak growth; 96 MiB: 80 %, 89.1 MiB;
	// 128 MiB: 88 %, 104.5 MiB (over the target). The young generation mattered less (8, 12 or 16 MiB
	// at old 128: 80-89 %). All forms with these limits: bench/results/export-n8n-latest.md.
	const worker = new Worker(workerFile(), { workerData: init, resourceLimits: { maxYoungGenerationSizeMb: 8, maxOldGenerationSizeMb: 96 } });
	return await new Promise<ArchiveSummary>((resolve, reject) => {
		let writing = 0;
		let delivered = 0;
		const hash = createHash('sha256');
		let summary: ArchiveSummary | undefined;
		let settled = false;
		const settle = (error?: Error) => {
			if (settled) return;
			settled = true;
			signal?.removeEventListener('abort', onAbort);
			sink.off('close', onClose);
			void worker.terminate();
			if (error) reject(error);
			else resolve(summary!);
		};
		const onAbort = () => settle(new LibvirtBackupError('ABORTED', 'Cancelled: the archive was not finished'));
		const onClose = () => settle(new LibvirtBackupError('ABORTED', 'The receiving side closed the connection before the archive was complete'));
		signal?.addEventListener('abort', onAbort, { once: true });
		sink.once('close', onClose);
		worker.on('message', (message: WorkerMessage) => {
			if (settled) return;
			if (message.kind === 'slot') {
				writing++;
				const chunk = Buffer.from(ring, message.slot * SLOT_BYTES, message.bytes);
				// The archive's sha256 here, on a thread that mostly waits, not in the busy worker.
				hash.update(chunk);
				delivered += chunk.length;
				sink.write(chunk, (error) => {
					writing--;
					if (error) return settle(error);
					if (!settled) worker.postMessage({ free: message.slot });
					if (summary && writing === 0) settle();
				});
			} else if (message.kind === 'done') {
				summary = { ...message.summary, bytes: delivered, sha256: hash.digest('hex') };
				if (writing === 0) settle();
			} else {
				settle(new LibvirtBackupError(message.code, message.message));
			}
		});
		worker.once('error', (error) => settle(error));
		worker.once('exit', (code) => settle(new LibvirtBackupError('BACKUP_FAILED', `The export worker stopped (exit code ${code}) before the archive was complete`)));
		if (signal?.aborted) onAbort();
	});
}
