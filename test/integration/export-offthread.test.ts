// The export's worker thread (lib/export/offThread.ts) against the lab: the archive it writes into a
// sink is the archive (tar lists it, its sha256 is the summary's), and every way it can stop early
// rejects with a clear error and leaves nothing reading on the host: the caller cancels, the sink
// (the HTTP client) goes away, an image turns out not to be what its manifest says. Needs
// `npm run build` (the worker runs dist/lib/export/worker.js).
import { createHash } from 'crypto';
import { spawnSync } from 'child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'fs';
import * as os from 'os';
import * as path from 'path';
import { Writable } from 'stream';
import { isLibvirtBackupError } from '../../lib/errors';
import { resolveBackups, writeArchiveOffThread } from '../../lib/export';
import { SshConnection } from '../../lib/ssh';
import { flipByte, makeBackups, makeDest, onHost, removeDest, type MadeBackup } from '../support/backupFixtures';
import { shq } from '../support/lab';
import { labTarget } from '../support/targets';

jest.setTimeout(120_000);

let ssh: SshConnection;
let dest: string;
let made: MadeBackup[];
let work: string;

/** A sink that keeps what it is given and answers each write after `delayMs`. */
function collector(delayMs = 0): Writable & { data: () => Buffer; writes: number } {
	const chunks: Buffer[] = [];
	const sink = new Writable({
		write(chunk: Buffer, _encoding, callback) {
			chunks.push(Buffer.from(chunk)); // a copy: the ring slot is reused once the write is answered
			sink.writes++;
			setTimeout(callback, delayMs);
		},
	}) as Writable & { data: () => Buffer; writes: number };
	sink.writes = 0;
	sink.data = () => Buffer.concat(chunks);
	return sink;
}

/** `dd` processes still reading this destination on the host (the lab host is this machine). */
function readersOnHost(): string {
	return spawnSync('pgrep', ['-af', `dd .*${dest}`], { encoding: 'utf8' }).stdout.trim();
}

async function noReadersWithin(ms: number): Promise<string> {
	const until = Date.now() + ms;
	while (readersOnHost() && Date.now() < until) await new Promise((resolve) => setTimeout(resolve, 200));
	return readersOnHost();
}

beforeAll(async () => {
	dest = makeDest('offthread');
	work = mkdtempSync(path.join(os.tmpdir(), 'lvb-offthread-'));
	made = makeBackups(dest, [
		{ vm: 'web01', id: '20261120T010000Z', disks: [{ target: 'vda', pattern: 0x31, dataKiB: 12 * 1024, virtualMiB: 16 }] },
		{ vm: 'web02', id: '20261120T020000Z', disks: [{ target: 'vda', pattern: 0x32, dataKiB: 12 * 1024, virtualMiB: 16 }] },
	]);
	ssh = await SshConnection.connect(labTarget());
});

afterAll(() => {
	ssh?.close();
	removeDest(dest);
	rmSync(work, { recursive: true, force: true });
});

test('the sink receives the whole archive: tar lists every file, sha256 and size are the summary', async () => {
	const backups = await resolveBackups(ssh, made.map((backup) => backup.path));
	const sink = collector();
	const summary = await writeArchiveOffThread(labTarget(), backups, { kind: 'none' }, sink);
	const data = sink.data();
	expect(summary.bytes).toBe(data.length);
	expect(summary.tarBytes).toBe(data.length);
	expect(summary.sha256).toBe(createHash('sha256').update(data).digest('hex'));
	expect(sink.writes).toBeGreaterThan(2);
	const file = path.join(work, 'whole.tar');
	writeFileSync(file, data);
	const listed = spawnSync('tar', ['-tf', file], { encoding: 'utf8' });
	expect(listed.status).toBe(0);
	expect(listed.stdout.split('\n').filter(Boolean)).toHaveLength(backups.reduce((total, backup) => total + backup.files.length, 0));
});

test('cancelled mid-way: rejects with ABORTED, and nothing is left reading on the host', async () => {
	const backups = await resolveBackups(ssh, made.map((backup) => backup.path));
	const sink = collector(300);
	const cancel = new AbortController();
	const started = writeArchiveOffThread(labTarget(), backups, { kind: 'none' }, sink, cancel.signal);
	while (sink.writes === 0) await new Promise((resolve) => setTimeout(resolve, 20));
	cancel.abort();
	await expect(started).rejects.toMatchObject({ code: 'ABORTED' });
	expect(await noReadersWithin(10_000)).toBe('');
});

test('the sink goes away mid-way (the client hung up): rejects with ABORTED, nothing left reading', async () => {
	const backups = await resolveBackups(ssh, made.map((backup) => backup.path));
	const sink = collector(300);
	const started = writeArchiveOffThread(labTarget(), backups, { kind: 'none' }, sink);
	while (sink.writes === 0) await new Promise((resolve) => setTimeout(resolve, 20));
	sink.destroy();
	const error = await started.catch((caught: unknown) => caught);
	expect(isLibvirtBackupError(error, 'ABORTED')).toBe(true);
	expect((error as Error).message).toMatch(/closed the connection/);
	expect(await noReadersWithin(10_000)).toBe('');
});

test('an image that is not what its manifest says fails the export with the reason', async () => {
	const [bad] = makeBackups(dest, [{ vm: 'web03', id: '20261120T030000Z', disks: [{ target: 'vda', pattern: 0x33, dataKiB: 4 * 1024, virtualMiB: 8 }] }]);
	const backups = await resolveBackups(ssh, [bad.path]);
	const image = onHost(`ls -- ${shq(bad.path)} | grep -v -e manifest -e domain -e verification | head -1`).trim();
	flipByte(`${bad.path}/${image}`, 1024 * 1024);
	await expect(writeArchiveOffThread(labTarget(), backups, { kind: 'none' }, collector())).rejects.toThrow(/sha256 .*manifest says/);
	expect(await noReadersWithin(10_000)).toBe('');
});
