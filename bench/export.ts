/**
 * Export Archive benchmark, run by hand as root on the lab machine:
 *   npm run lab:up && npx tsx bench/export.ts [--small | --image-mib N] [--runs 3] [--pid <n8n pid>] [--link RATE] [--stages] [--only PREFIX,...]
 * Makes a backup set on the lab host (2 x 1 GiB images, or 2 x 64 MiB with --small; half random,
 * half real program bytes so compression has something to do), then measures in the same run:
 * - ours, lib level: resolveBackups + openArchive into a sink in this process that discards, for tar,
 *   gzip -1 and zstd -1 (zstd: Node >= 22.15) compressed in this process (one exec per file, sha256
 *   of every image checked in Node, zlib), and gzip -1 / zstd -1 compressed on the host (compressOn
 *   'host': `dd | tee | <program>` per image there, its sha256 taken there);
 * - by hand: `ssh host tar cf - <folders> | cat`, `| gzip -1`, `| zstd -1` with the system ssh client
 *   (OpenSSH's default cipher), output discarded; for the host rows `ssh host 'tar cf - ... | zstd -1'`.
 * --link RATE (tc's syntax, e.g. 1gbit): the set is on fleet host lvb-h1 instead, whose link to this
 *   side is limited to RATE by a tbf qdisc for the run (removed at the end): a hypervisor across a
 *   network, where compressing at the source sends fewer bytes.
 * --stages (needs `npm run build`): tar and zstd -1 also as n8n's Export Archive runs them, in its
 *   worker thread into a sink that discards, then into an HTTP response that curl downloads: where the
 *   time goes between the engine and bench/export-n8n.ts. --only: the rows whose name starts so.
 * Throughput is uncompressed tar bytes per second for every row. Prints a markdown report (copy it
 * to bench/results/export-latest.md). --pid also reports VmHWM/VmRSS of that process (e.g. n8n
 * running an export) from /proc; this process's own VmHWM is always reported.
 */
import { spawn, spawnSync } from 'child_process';
import * as fs from 'fs';
import { Writable } from 'stream';
import { pipeline } from 'stream/promises';
import * as zlib from 'zlib';
import * as http from 'http';
import { openArchive, resolveBackups, writeArchiveOffThread, type Compression, type CompressOn } from '../lib/export';
import { SshConnection } from '../lib/ssh';
import { MANIFEST_FORMAT, MANIFEST_VERSION, serializeManifest, type Manifest } from '../lib/store/manifest';
import { loadLab, shq } from '../test/support/lab';
import { fleetHost, fleetLab } from '../test/support/lab';
import { fleetTarget, labTarget } from '../test/support/targets';
import { makeDest, onHost, removeDest } from '../test/support/backupFixtures';

const args = process.argv.slice(2);
const small = args.includes('--small');
const runs = args.includes('--runs') ? Number(args[args.indexOf('--runs') + 1]) : small ? 1 : 3;
const pid = args.includes('--pid') ? Number(args[args.indexOf('--pid') + 1]) : undefined;
const IMAGE_MIB = args.includes('--image-mib') ? Number(args[args.indexOf('--image-mib') + 1]) : small ? 64 : 1024;
const IMAGES = 2;
/** --link RATE: the set on fleet host lvb-h1 behind a link of RATE. */
const LINK = args.includes('--link') ? args[args.indexOf('--link') + 1] : undefined;
if (LINK !== undefined && !/^\d+(\.\d+)?[kmg]?bit$/.test(LINK)) throw new Error('--link takes a tc rate such as 1gbit or 500mbit');
/** --stages: tar and zstd -1 also as n8n runs them: in its worker thread into a sink that discards, then into an HTTP response that curl downloads to /dev/null (needs `npm run build`). */
const STAGES = args.includes('--stages');
/** --only PREFIX,...: only the rows whose name starts with one of them. */
const ONLY = args.includes('--only') ? args[args.indexOf('--only') + 1].split(',').filter(Boolean) : undefined;

/** Where the set lives and how to reach it: the lab host, or (--link) fleet host lvb-h1. */
interface Place {
	/** The destination folder as the host sees it. */
	dest: string;
	/** Runs a shell command as root where the files are (this machine; for h1 its store is a folder here). */
	run(command: string, input?: string): string;
	target: ReturnType<typeof labTarget>;
	/** The system ssh command line to the host (no remote command). */
	sshLine: string;
	cleanup(): void;
}

function labPlace(): Place {
	const lab = loadLab();
	const dest = makeDest('bench-export');
	const known = `${lab.labDir}/bench-known-hosts`;
	fs.writeFileSync(known, `${lab.knownHostsLine}\n`);
	return {
		dest,
		run: onHost,
		target: labTarget(),
		sshLine: `ssh -p ${lab.port} -i ${shq(lab.users.root.privateKeyPath)} -o UserKnownHostsFile=${shq(known)} -o BatchMode=yes root@${lab.host}`,
		cleanup: () => removeDest(dest),
	};
}

function linkPlace(rate: string): Place {
	const fleet = fleetLab();
	const host = fleetHost(1);
	const local = `${host.backupStore}/bench-export-link`;
	const dest = `${fleet.destinationFolder}/bench-export-link`;
	const known = `${loadLab().labDir}/bench-known-hosts-h1`;
	fs.writeFileSync(known, `${host.knownHostsLine}\n`);
	const run = (command: string, input?: string) => {
		// The same files as h1 sees them at `dest`, written here as root and handed to the fleet user.
		const result = spawnSync('bash', ['-c', `set -e; ${command.split(dest).join(local)}`], { input, encoding: 'utf8', maxBuffer: 1 << 26 });
		if (result.status !== 0) throw new Error(`${command.slice(0, 200)}: ${result.stderr}`);
		return result.stdout;
	};
	const tc = (command: string) => spawnSync('ip', ['netns', 'exec', host.netns, 'tc', ...command.split(' ')], { encoding: 'utf8' });
	tc(`qdisc del dev ${host.vethInNetns} root`);
	const added = tc(`qdisc add dev ${host.vethInNetns} root tbf rate ${rate} burst 1mb latency 50ms`);
	if (added.status !== 0) throw new Error(`tc tbf on ${host.netns}: ${added.stderr}`);
	return {
		dest,
		run,
		target: fleetTarget(host),
		sshLine: `ssh -p ${host.port} -i ${shq(fleet.user.privateKeyPath)} -o UserKnownHostsFile=${shq(known)} -o BatchMode=yes ${fleet.user.username}@${host.address}`,
		cleanup: () => {
			tc(`qdisc del dev ${host.vethInNetns} root`);
			spawnSync('rm', ['-rf', '--', local]);
		},
	};
}

function memory(of: number | 'self'): { hwm: string; rss: string } {
	const status = fs.readFileSync(`/proc/${of}/status`, 'utf8');
	const field = (name: string) => /^(\S+):\s+(.*)$/m.exec(status.split('\n').find((line) => line.startsWith(`${name}:`)) ?? '')?.[2] ?? '?';
	return { hwm: field('VmHWM'), rss: field('VmRSS') };
}

/** One backup folder with IMAGES images of IMAGE_MIB each: 16 MiB blocks alternating random and program bytes. */
function makeBenchSet(place: Place): string[] {
	const dest = place.dest;
	const id = '20261201T000000Z';
	const dir = `${dest}/bench-vm/${id}`;
	const blocks = IMAGE_MIB / 16;
	const lines = place.run(`set -e
mkdir -p -- ${shq(dir)} && cd -- ${shq(dir)}
cat /usr/bin/* 2>/dev/null | head -c 16777216 > .program
for d in ${Array.from({ length: IMAGES }, (_v, i) => `vd${String.fromCharCode(97 + i)}`).join(' ')}; do
  i=0; while [ $i -lt ${blocks} ]; do if [ $((i % 2)) = 0 ]; then head -c 16777216 /dev/urandom; else cat .program; fi; i=$((i + 1)); done > $d.qcow2
  echo "$d $(sha256sum < $d.qcow2 | cut -c1-64) $(stat -c %s $d.qcow2)"
done
rm -f .program
printf '<domain/>\\n' > domain.xml`)
		.trim()
		.split('\n');
	const manifest: Manifest = {
		format: MANIFEST_FORMAT,
		version: MANIFEST_VERSION,
		vm: { name: 'bench-vm', uuid: '6f1c7d0e-0000-4000-8000-0000000000be' },
		host: 'lvb-lab',
		id,
		startedAt: '2026-12-01T00:00:00.000Z',
		finishedAt: '2026-12-01T00:01:00.000Z',
		kind: 'full',
		method: 'offline-convert',
		consistency: 'offline',
		disks: lines.map((line) => {
			const [target, sha256, bytes] = line.split(' ');
			return { target, source: `/var/lib/libvirt/images/${target}.qcow2`, sourceFormat: 'qcow2', file: `${target}.qcow2`, format: 'qcow2', virtualBytes: Number(bytes), bytes: Number(bytes), sha256, compressed: false };
		}),
		warnings: [],
	};
	place.run(`cat > ${shq(`${dir}/manifest.json`)}`, serializeManifest(manifest));
	if (LINK) place.run(`chown -R ${shq(fleetLab().user.username)}: ${shq(dest)}`);
	return [dir];
}

const discard = () =>
	new Writable({
		write(_chunk, _encoding, callback) {
			callback();
		},
	});

async function ours(ssh: SshConnection, paths: string[], compression: Compression, compressOn: CompressOn): Promise<{ seconds: number; tarBytes: number; outBytes: number }> {
	const started = performance.now();
	const backups = await resolveBackups(ssh, paths);
	const archive = await openArchive(ssh, backups, compression, undefined, { compressOn });
	await pipeline(archive.stream, discard());
	return { seconds: (performance.now() - started) / 1000, tarBytes: archive.tarBytes, outBytes: archive.digest().bytes };
}

/** The export as n8n's Export Archive runs it (a worker thread of its own, its connection, the ring), into a discarding sink or (`http`) a response that curl downloads to /dev/null. */
async function offThread(target: Place['target'], ssh: SshConnection, paths: string[], compression: Compression, stage: 'worker' | 'http'): Promise<{ seconds: number; tarBytes: number; outBytes: number }> {
	const started = performance.now();
	const backups = await resolveBackups(ssh, paths);
	const summary = stage === 'worker' ? await writeArchiveOffThread(target, backups, compression, discard()) : await throughHttp(target, backups, compression);
	return { seconds: (performance.now() - started) / 1000, tarBytes: summary.tarBytes, outBytes: summary.bytes };
}

/** The worker's archive as the response to one HTTP request, which curl makes and writes to /dev/null. */
async function throughHttp(target: Place['target'], backups: Awaited<ReturnType<typeof resolveBackups>>, compression: Compression): Promise<{ bytes: number; tarBytes: number }> {
	let done: Promise<{ bytes: number; tarBytes: number }> | undefined;
	const server = http.createServer((_request, response) => {
		response.writeHead(200, { 'content-type': 'application/octet-stream' });
		done = writeArchiveOffThread(target, backups, compression, response).then((summary) => {
			response.end();
			return summary;
		});
	});
	await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
	const port = (server.address() as { port: number }).port;
	// Not spawnSync: the server answering it runs in this process.
	const curl = spawn('curl', ['-sS', '-o', '/dev/null', `http://127.0.0.1:${port}/`], { stdio: ['ignore', 'ignore', 'inherit'] });
	const status = await new Promise<number | null>((resolve) => curl.once('close', resolve));
	server.close();
	if (status !== 0) throw new Error(`curl exited ${status}`);
	return await done!;
}

/** `ssh host 'tar cf - ...[ | onHost]' | here`, output discarded: the wall time. */
function byHand(place: Place, folders: string[], here: string, onHost?: string): number {
	const remote = `tar cf - -C ${shq(place.dest)} ${folders.map(shq).join(' ')}${onHost ? ` | ${onHost}` : ''}`;
	const started = performance.now();
	const result = spawnSync('bash', ['-o', 'pipefail', '-c', `${place.sshLine} ${shq(remote)} | ${here} > /dev/null`], { stdio: ['ignore', 'ignore', 'pipe'] });
	if (result.status !== 0) throw new Error(`by hand failed: ${result.stderr}`);
	return (performance.now() - started) / 1000;
}

function median(values: number[]): number {
	const sorted = [...values].sort((a, b) => a - b);
	return sorted[Math.floor(sorted.length / 2)];
}

async function main(): Promise<void> {
	const place = LINK ? linkPlace(LINK) : labPlace();
	const dest = place.dest;
	const load = () => fs.readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' / ');
	const loadStart = load();
	try {
		const made = Date.now();
		const paths = makeBenchSet(place);
		const madeSeconds = (Date.now() - made) / 1000;
		const folders = paths.map((path) => path.slice(dest.length + 1));
		const ssh = await SshConnection.connect(place.target);
		const before = memory('self');
		const hasZstd = 'createZstdCompress' in zlib;
		const cases: { name: string; compression: Compression; compressOn: CompressOn; here: string; onHost?: string; stage?: 'worker' | 'http' }[] = [
			{ name: 'tar', compression: { kind: 'none' }, compressOn: 'n8n', here: 'cat' },
			{ name: 'gzip -1', compression: { kind: 'gzip', level: 1 }, compressOn: 'n8n', here: 'gzip -1' },
			{ name: 'zstd -1', compression: { kind: 'zstd', level: 1 }, compressOn: 'n8n', here: 'zstd -1 -q -c' },
			{ name: 'gzip -1 on the host', compression: { kind: 'gzip', level: 1 }, compressOn: 'host', here: 'cat', onHost: 'gzip -1' },
			{ name: 'zstd -1 on the host', compression: { kind: 'zstd', level: 1 }, compressOn: 'host', here: 'cat', onHost: 'zstd -1 -q -c' },
		];
		if (STAGES) {
			cases.push(
				{ name: 'tar, in the worker thread', compression: { kind: 'none' }, compressOn: 'n8n', here: 'cat', stage: 'worker' },
				{ name: 'tar, worker into an HTTP response, curl', compression: { kind: 'none' }, compressOn: 'n8n', here: 'cat', stage: 'http' },
				{ name: 'zstd -1, in the worker thread', compression: { kind: 'zstd', level: 1 }, compressOn: 'n8n', here: 'zstd -1 -q -c', stage: 'worker' },
				{ name: 'zstd -1, worker into an HTTP response, curl', compression: { kind: 'zstd', level: 1 }, compressOn: 'n8n', here: 'zstd -1 -q -c', stage: 'http' },
			);
		}
		const rows: string[] = [];
		let tarBytes = 0;
		try {
			// Untimed: the files in the host's page cache for every method alike.
			place.run(`cat ${paths.map((path) => `${shq(path)}/*`).join(' ')} > /dev/null`);
			for (const { name, compression, compressOn, here, onHost: hostFilter, stage } of cases) {
				if (ONLY && !ONLY.some((prefix) => name.startsWith(prefix))) continue;
				const oursTimes: number[] = [];
				const handTimes: number[] = [];
				let outBytes = 0;
				for (let run = 0; run < runs; run++) {
					if (compression.kind !== 'zstd' || hasZstd) {
						const result = stage ? await offThread(place.target, ssh, paths, compression, stage) : await ours(ssh, paths, compression, compressOn);
						oursTimes.push(result.seconds);
						tarBytes = result.tarBytes;
						outBytes = result.outBytes;
					}
					handTimes.push(byHand(place, folders, here, hostFilter));
				}
				const mbps = (seconds: number) => (tarBytes / 1e6 / seconds).toFixed(0);
				const hand = median(handTimes);
				if (oursTimes.length === 0) {
					rows.push(`| ${name} | n/a: Node ${process.version} has no zlib zstd | ${hand.toFixed(2)} s, ${mbps(hand)} MB/s | - | - |`);
					continue;
				}
				const mine = median(oursTimes);
				rows.push(`| ${name} | ${mine.toFixed(2)} s, **${mbps(mine)} MB/s** | ${hand.toFixed(2)} s, ${mbps(hand)} MB/s | **${((hand / mine) * 100).toFixed(0)} %** | ${(outBytes / 1024 / 1024).toFixed(1)} |`);
			}
		} finally {
			ssh.close();
		}
		const self = memory('self');
		const lines = [
			'# Export Archive benchmark: results',
			'',
			`${new Date().toISOString()}. Command (as root on the lab machine): \`npx tsx bench/export.ts ${args.join(' ')}\`.`,
			'',
			`- Backup set: ${IMAGES} images x ${IMAGE_MIB} MiB (16 MiB blocks alternating /dev/urandom and /usr/bin bytes) + domain.xml + manifest.json; tar ${(tarBytes / 1024 / 1024).toFixed(1)} MiB; made in ${madeSeconds.toFixed(1)} s (untimed).`,
			`- Median of ${runs} run(s). Throughput = uncompressed tar bytes / wall time. Ours: one ssh2 connection (aes128-gcm@openssh.com, ssh2's first choice), one \`dd\` exec per file, sha256 of every image in Node, our tar headers, Node ${process.version} zlib (host rows: the host's gzip/zstd, decompressed and hashed in Node), output discarded in this process. By hand: system \`ssh\` (OpenSSH default cipher) running \`tar cf -\`, piped to the filter, output to /dev/null.`,
			`- Machine: load average ${loadStart} at start, ${load()} at the end (other work may have shared it).`,
			'',
			'| format | ours (lib) | by hand: ssh tar \\| filter | ours / by hand | ours output MiB |',
			'| --- | --- | --- | ---: | ---: |',
			...rows,
			'',
			`Peak RSS of this bench process (ours ran in it): VmHWM ${before.hwm} before the first export, ${self.hwm} after all (VmRSS now ${self.rss}).`,
			...(pid ? [`Process ${pid}: VmHWM ${memory(pid).hwm}, VmRSS ${memory(pid).rss}.`] : []),
		];
		console.log(lines.join('\n'));
	} finally {
		place.cleanup();
	}
}

main().catch((error) => {
	console.error(error);
	process.exit(1);
});
