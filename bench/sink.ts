/**
 * Writing a stream to a file on a host: the ways lib/export/sink.ts could do it, in one run, over
 * one SSH connection to the lab (lab up, run as root on the lab machine):
 *   npx tsx bench/sink.ts [--mib 1024] [--runs 3]
 *
 * - sink:      createHostFileWriter (framed stdin of one receiver; temp + O_EXCL + fsync + rename)
 * - sftp:      ssh2's SFTP write stream ('wx': O_CREAT|O_EXCL), fsync@openssh.com, rename
 * - raw stdin: `dd of=FILE conv=fsync` on the stdin of an exec, no framing: the upper bound of any
 *              stdin design (it cannot tell a cut stream from a complete one)
 * Data: --mib MiB from one 4 MiB incompressible buffer, written in 64 KiB chunks as a pipeline
 * would, to a fresh folder under the lab's test-dest; removed at the end. Prints MB/s (10^6 B/s)
 * per run, median last. The machine is shared: run it on a quiet one for numbers to publish.
 */
import { randomBytes } from 'node:crypto';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createHostFileWriter } from '../lib/export/sink';
import { SshConnection } from '../lib/ssh';
import { quoteArg as q } from '../lib/shell';
import { labTarget } from '../test/support/targets';
import { testDestination, host } from '../test/support/testVm';

const argv = process.argv.slice(2);
const option = (name: string, fallback: number): number => (argv.includes(name) ? Number(argv[argv.indexOf(name) + 1]) : fallback);
const MIB = option('--mib', 1024);
const RUNS = option('--runs', 3);
const block = randomBytes(4 * 1024 * 1024);
const CHUNK = 64 * 1024;

function source(): Readable {
	const total = MIB * 1024 * 1024;
	let offset = 0;
	return new Readable({
		highWaterMark: 1024 * 1024,
		read() {
			if (offset >= total) {
				this.push(null);
				return;
			}
			const at = offset % block.length;
			const length = Math.min(CHUNK, total - offset, block.length - at);
			offset += length;
			this.push(block.subarray(at, at + length));
		},
	});
}

async function viaSink(ssh: SshConnection, path: string): Promise<void> {
	const writer = await createHostFileWriter(ssh, path);
	await pipeline(source(), writer.stream);
	await writer.commit();
}

async function viaSftp(ssh: SshConnection, path: string): Promise<void> {
	const sftp = await ssh.sftp();
	const tmp = `${path}.partial`;
	const stream = sftp.createWriteStream(tmp, { flags: 'wx', autoClose: false });
	await pipeline(source(), stream);
	const handle = (stream as unknown as { handle: Buffer }).handle;
	await new Promise<void>((resolve, reject) => sftp.ext_openssh_fsync(handle, (error) => (error ? reject(error) : resolve())));
	await new Promise<void>((resolve, reject) => sftp.close(handle, (error) => (error ? reject(error) : resolve())));
	await new Promise<void>((resolve, reject) => sftp.rename(tmp, path, (error) => (error ? reject(error) : resolve())));
}

async function viaRawStdin(ssh: SshConnection, path: string): Promise<void> {
	const remote = await ssh.spawnWithStdin(['dd', `of=${path}`, 'conv=fsync', 'bs=4M', 'status=none'], { label: 'dd' });
	const sink = new Writable({
		write(chunk: Buffer, _encoding, callback) {
			if (remote.stdin.write(chunk)) callback();
			else remote.stdin.once('drain', () => callback());
		},
		final(callback) {
			remote.stdin.end();
			callback();
		},
	});
	await pipeline(source(), sink);
	await remote.done;
}

async function main(): Promise<void> {
	const destination = testDestination('bench-sink');
	const ssh = await SshConnection.connect(labTarget());
	const ways: [string, (ssh: SshConnection, path: string) => Promise<void>][] = [
		['sink', viaSink],
		['sftp', viaSftp],
		['raw stdin', viaRawStdin],
	];
	const results = new Map<string, number[]>(ways.map(([name]) => [name, []]));
	try {
		for (let run = 0; run < RUNS; run++) {
			for (const [name, way] of ways) {
				const path = `${destination.dest}/out-${run}.bin`;
				const started = process.hrtime.bigint();
				await way(ssh, path);
				const seconds = Number(process.hrtime.bigint() - started) / 1e9;
				const size = Number(host(`stat -c %s -- ${q(path)}`).trim());
				if (size !== MIB * 1024 * 1024) throw new Error(`${name}: wrote ${size} bytes`);
				host(`rm -f -- ${q(path)}`);
				const rate = (MIB * 1024 * 1024) / seconds / 1e6;
				results.get(name)?.push(rate);
				console.log(`run ${run + 1} ${name.padEnd(10)} ${seconds.toFixed(2)} s  ${rate.toFixed(0)} MB/s`);
			}
		}
		console.log(`\n${MIB} MiB, ${RUNS} runs, median MB/s:`);
		for (const [name, rates] of results) {
			const sorted = [...rates].sort((a, b) => a - b);
			console.log(`  ${name.padEnd(10)} ${sorted[Math.floor(sorted.length / 2)].toFixed(0)}`);
		}
	} finally {
		ssh.close();
		destination.cleanup();
	}
}

main().catch((error: unknown) => {
	console.error(error);
	process.exit(1);
});
