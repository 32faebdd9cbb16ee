/**
 * createHostFileWriter against the lab's sshd: a stream becomes a file under its final name only
 * when complete; refusals and cut-offs leave nothing behind; nothing planted in the folder (links,
 * FIFOs, a file at the final name) is followed or replaced.
 */
import { createHash, randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { isLibvirtBackupError } from '../../lib/errors';
import { RECEIVE_SCRIPT, SILENCE_SECONDS, createHostFileWriter, trailer } from '../../lib/export/sink';
import { newMarker } from '../../lib/batch';
import { quoteArg as q, scriptArgv } from '../../lib/shell';
import { SshConnection } from '../../lib/ssh';
import { makeDest, onHost, removeDest } from '../support/backupFixtures';
import { labTarget, type LabUser } from '../support/targets';

jest.setTimeout(120_000);

const CANARY = 'canary: root-only secret 77ab1\n';

function data(bytes: number): Buffer {
	const block = randomBytes(64 * 1024);
	const out = Buffer.alloc(bytes);
	for (let at = 0; at < bytes; at += block.length) block.copy(out, at);
	return out;
}

function sha(buffer: Buffer): string {
	return createHash('sha256').update(buffer).digest('hex');
}

/** Everything in `dir` (names), sorted. */
function listing(dir: string): string[] {
	return onHost(`ls -A1 -- ${q(dir)}`).split('\n').filter(Boolean).sort();
}

function errorOf(promise: Promise<unknown>): Promise<Error> {
	return promise.then(
		() => {
			throw new Error('expected a failure');
		},
		(error: Error) => error,
	);
}

/** Polls the host until `check` holds (the receiver cleans up after the client is gone). */
async function eventually(check: () => boolean, what: string): Promise<void> {
	for (let attempt = 0; attempt < 100; attempt++) {
		if (check()) return;
		await new Promise((resolve) => setTimeout(resolve, 200));
	}
	throw new Error(`never happened: ${what}`);
}

async function write(ssh: SshConnection, path: string, content: Buffer, overwrite = false): Promise<{ bytes: number }> {
	const writer = await createHostFileWriter(ssh, path, { overwrite });
	await pipeline(Readable.from([content.subarray(0, 1000), content.subarray(1000)]), writer.stream);
	return await writer.commit();
}

describe('createHostFileWriter', () => {
	let ssh: SshConnection;
	let dest: string;
	let canary: string;
	beforeAll(async () => {
		ssh = await SshConnection.connect(labTarget());
	});
	afterAll(() => ssh.close());
	beforeEach(() => {
		dest = makeDest();
		canary = `${dest.slice(0, dest.lastIndexOf('/'))}/canary`;
		onHost(`printf '%s' ${q(CANARY)} > ${q(canary)}`);
	});
	afterEach(() => removeDest(dest));

	it('writes the stream under its final name, flushed, and leaves no temp file', async () => {
		const content = data(9 * 1024 * 1024 + 123);
		const result = await write(ssh, `${dest}/a.tar`, content);
		expect(result.bytes).toBe(content.length);
		expect(listing(dest)).toEqual(['a.tar']);
		expect(onHost(`sha256sum < ${q(`${dest}/a.tar`)}`).slice(0, 64)).toBe(sha(content));
	});

	it('writes an empty file', async () => {
		const writer = await createHostFileWriter(ssh, `${dest}/empty`);
		expect(await writer.commit()).toEqual({ bytes: 0 });
		expect(onHost(`stat -c %s -- ${q(`${dest}/empty`)}`).trim()).toBe('0');
	});

	it.each<LabUser>(['sudo', 'sudoPassword'])('writes through sudo (%s): stdin carries the password first, then the data', async (user) => {
		const sudoSsh = await SshConnection.connect(labTarget(user));
		try {
			const content = data(3 * 1024 * 1024);
			await write(sudoSsh, `${dest}/s.bin`, content);
			expect(onHost(`stat -c %U -- ${q(`${dest}/s.bin`)}`).trim()).toBe('root');
			expect(onHost(`sha256sum < ${q(`${dest}/s.bin`)}`).slice(0, 64)).toBe(sha(content));
		} finally {
			sudoSsh.close();
		}
	});

	it('refuses an existing final name unless overwrite, and then replaces it', async () => {
		onHost(`printf old > ${q(`${dest}/a.tar`)}`);
		const error = await errorOf(write(ssh, `${dest}/a.tar`, data(1024)));
		expect(error.message).toMatch(/exists already .*overwrite is off/);
		expect(onHost(`cat ${q(`${dest}/a.tar`)}`)).toBe('old');
		expect(listing(dest)).toEqual(['a.tar']);
		await write(ssh, `${dest}/a.tar`, Buffer.from('new'), true);
		expect(onHost(`cat ${q(`${dest}/a.tar`)}`)).toBe('new');
		expect(listing(dest)).toEqual(['a.tar']);
	});

	it('refuses a final name that appears while the data is written, and removes its temp file', async () => {
		const writer = await createHostFileWriter(ssh, `${dest}/late`);
		writer.stream.write(data(2 * 1024 * 1024));
		onHost(`printf theirs > ${q(`${dest}/late`)}`);
		const error = await errorOf(writer.commit());
		expect(error.message).toMatch(/exists already/);
		expect(onHost(`cat ${q(`${dest}/late`)}`)).toBe('theirs');
		expect(listing(dest)).toEqual(['late']);
	});

	it.each([false, true])('refuses a symbolic link or a FIFO at the final name (overwrite %s): nothing followed', async (overwrite) => {
		onHost(`ln -s ${q(canary)} ${q(`${dest}/link`)} && mkfifo ${q(`${dest}/fifo`)}`);
		for (const name of ['link', 'fifo']) {
			const error = await errorOf(write(ssh, `${dest}/${name}`, data(1024), overwrite));
			expect(isLibvirtBackupError(error)).toBe(true);
			expect(error.message).toMatch(/symbolic link|not a regular file/);
		}
		expect(onHost(`cat ${q(canary)}`)).toBe(CANARY);
		expect(listing(dest)).toEqual(['fifo', 'link']);
	});

	it('refuses a link, FIFO or file planted at the temp name, before anything is written', async () => {
		onHost(`ln -s ${q(canary)} ${q(`${dest}/t-link`)} && mkfifo ${q(`${dest}/t-fifo`)} && printf x > ${q(`${dest}/t-file`)}`);
		for (const tmp of ['t-link', 't-fifo', 't-file']) {
			const marker = newMarker();
			const token = randomBytes(16).toString('hex');
			const remote = await ssh.spawnWithStdin(scriptArgv(RECEIVE_SCRIPT, 'lvb-receive', [`${dest}/${tmp}`, `${dest}/final`, '0', '30', token, marker]), { okExitCodes: [1, 3] });
			remote.stdin.end(Buffer.concat([Buffer.from('evil'), trailer(token, 4)]));
			const result = await remote.done;
			expect(result.stdout).toContain(`${marker} refused tmp-exists`);
		}
		expect(onHost(`cat ${q(canary)}`)).toBe(CANARY);
		expect(listing(dest)).toEqual(['t-fifo', 't-file', 't-link']);
		expect(onHost(`cat ${q(`${dest}/t-file`)}`)).toBe('x');
	});

	it('fails when the temp file is swapped for a symbolic link mid-write: the link target is untouched, nothing is left', async () => {
		const writer = await createHostFileWriter(ssh, `${dest}/swap`);
		writer.stream.write(data(1024 * 1024));
		let tmp = '';
		await eventually(() => (tmp = listing(dest).find((name) => name.endsWith('.partial')) ?? '') !== '', 'the temp file exists');
		onHost(`cd ${q(dest)} && rm -f -- ${q(tmp)} && ln -s ${q(canary)} ${q(tmp)}`);
		const error = await errorOf(writer.commit());
		expect(error.message).toMatch(/replaced or removed/);
		expect(onHost(`cat ${q(canary)}`)).toBe(CANARY);
		expect(listing(dest)).toEqual([]);
	});

	it('abort() and a cancelled signal remove the temp file', async () => {
		const writer = await createHostFileWriter(ssh, `${dest}/aborted`);
		writer.stream.write(data(2 * 1024 * 1024));
		await writer.abort();
		expect(listing(dest)).toEqual([]);

		const controller = new AbortController();
		const cancelled = await createHostFileWriter(ssh, `${dest}/cancelled`, { signal: controller.signal });
		cancelled.stream.write(data(2 * 1024 * 1024));
		controller.abort();
		const error = await errorOf(cancelled.commit());
		expect(isLibvirtBackupError(error, 'ABORTED')).toBe(true);
		expect(listing(dest)).toEqual([]);
	});

	it('a connection closed mid-write: the host-side receiver removes the temp file itself', async () => {
		const own = await SshConnection.connect(labTarget());
		const writer = await createHostFileWriter(own, `${dest}/cut`);
		const failed = errorOf(pipeline(Readable.from((function* () { for (let i = 0; i < 1000; i++) yield data(1024 * 1024); })()), writer.stream));
		await eventually(() => listing(dest).some((name) => name.endsWith('.partial')), 'the temp file exists');
		own.close();
		expect(await failed).toBeInstanceOf(Error);
		await eventually(() => listing(dest).length === 0, 'the temp file is removed by the host');
		await expect(writer.commit()).rejects.toThrow();
	});

	it(`a silent client: the receiver stops when the temp file has not grown for its limit (${SILENCE_SECONDS} s in production, 5 s here)`, async () => {
		const marker = newMarker();
		const remote = await ssh.spawnWithStdin(
			scriptArgv(RECEIVE_SCRIPT, 'lvb-receive', [`${dest}/silent.partial`, `${dest}/silent`, '0', '5', randomBytes(16).toString('hex'), marker]),
			{ okExitCodes: [1, 3] },
		);
		remote.stdin.write(data(1024));
		const result = await remote.done;
		expect(result.stdout).toContain(`${marker} failed silence`);
		expect(listing(dest)).toEqual([]);
	});

	it('a cut stream (EOF without the trailer) is not committed', async () => {
		const marker = newMarker();
		const token = randomBytes(16).toString('hex');
		const remote = await ssh.spawnWithStdin(scriptArgv(RECEIVE_SCRIPT, 'lvb-receive', [`${dest}/c.partial`, `${dest}/c`, '0', '30', token, marker]), { okExitCodes: [1, 3] });
		// A trailer whose count does not match what came before it, as a cut inside a longer stream looks.
		remote.stdin.end(Buffer.concat([data(4096), trailer(token, 4095)]));
		const result = await remote.done;
		expect(result.stdout).toContain(`${marker} failed cut`);
		expect(listing(dest)).toEqual([]);
	});
});
