/**
 * The export's worker thread (see offThread.ts): its own SSH connection, the archive packed here (each
 * image hashed against its manifest; the archive's own sha256 is taken by the other thread), the bytes copied into the shared ring's free slots, one message per filled slot. All the
 * per-packet allocation of SSH decryption happens in this thread's small heap, not in n8n's.
 */
import { parentPort, workerData } from 'worker_threads';
import { isLibvirtBackupError } from '../errors';
import { SshConnection } from '../ssh';
import { openArchive, summarize } from './index';
import type { WorkerInit, WorkerMessage } from './offThread';

const init = workerData as WorkerInit;
const port = parentPort!;
const post = (message: WorkerMessage) => port.postMessage(message);
const abort = new AbortController();
const free = Array.from({ length: init.slots }, (_unused, slot) => slot);
let slotFreed: (() => void) | undefined;

port.on('message', (message: { free?: number; abort?: boolean }) => {
	if (message.free !== undefined) {
		free.push(message.free);
		slotFreed?.();
		slotFreed = undefined;
	}
	if (message.abort) abort.abort();
});

async function run(): Promise<void> {
	const ring = Buffer.from(init.ring);
	const ssh = await SshConnection.connect(init.target, abort.signal);
	try {
		const archive = await openArchive(ssh, init.backups, init.compression, abort.signal, { hashOutput: false, compressOn: init.compressOn });
		let slot = -1;
		let used = 0;
		const flush = () => {
			if (slot >= 0 && used > 0) post({ kind: 'slot', slot, bytes: used });
			slot = -1;
			used = 0;
		};
		for await (const chunk of archive.stream as AsyncIterable<Buffer>) {
			for (let offset = 0; offset < chunk.length; ) {
				if (slot < 0) {
					while (free.length === 0) await new Promise<void>((resolve) => (slotFreed = resolve));
					slot = free.shift()!;
				}
				const bytes = Math.min(chunk.length - offset, init.slotBytes - used);
				chunk.copy(ring, slot * init.slotBytes + used, offset, offset + bytes);
				used += bytes;
				offset += bytes;
				if (used === init.slotBytes) flush();
			}
		}
		flush();
		post({ kind: 'done', summary: summarize(archive, init.backups) });
	} finally {
		ssh.close();
	}
}

run().catch((error: unknown) => {
	const code = isLibvirtBackupError(error) ? error.code : 'BACKUP_FAILED';
	post({ kind: 'error', code, message: error instanceof Error ? error.message : String(error) });
});
