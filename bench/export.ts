/**
 * Export Archive benchmark, run by hand as root on the lab machine:
 *   npm run lab:up && npx tsx bench/export.ts [--small | --image-mib N] [--runs 3] [--pid <n8n pid>]
 * Makes a backup set on the lab host (2 x 1 GiB images, or 2 x 64 MiB with --small; half random,
 * half real program bytes so compression has something to do), then measures in the same run:
 * - ours, lib level: resolveBackups + openArchive (one exec per file, sha256 checked in Node, tar-stream,
 *   zlib) into a sink in this process that discards, for tar / gzip -1 / zstd -1 (zstd: Node >= 22.15);
 * - by hand: `ssh host tar cf - <folders> | cat`, `| gzip -1`, `| zstd -1` with the system ssh client
 *   (OpenSSH's default cipher), output discarded.
 * Throughput is uncompressed tar bytes per second for every row. Prints a markdown report (copy it
 * to bench/results/export-latest.md). --pid also reports VmHWM/VmRSS of that process (e.g. n8n
 * running an export) from /proc; this process's own VmHWM is always reported.
 */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import { Writable } from 'stream';
import { pipeline } from 'stream/promises';
import * as zlib from 'zlib';
import { openArchive, resolveBackups, type Compression } from '../lib/export';
import { SshConnection } from '../lib/ssh';
import { MANIFEST_FORMAT, MANIFEST_VERSION, serializeManifest, type Manifest } from '../lib/store/manifest';
import { loadLab, shq } from '../test/support/lab';
import { labTarget } from '../test/support/targets';
import { makeDest, onHost, removeDest } from '../test/support/backupFixtures';

const args = process.argv.slice(2);
const small = args.includes('--small');
const runs = args.includes('--runs') ? Number(args[args.indexOf('--runs') + 1]) : small ? 1 : 3;
const pid = args.includes('--pid') ? Number(args[args.indexOf('--pid') + 1]) : undefined;
const IMAGE_MIB = args.includes('--image-mib') ? Number(args[args.indexOf('--image-mib') + 1]) : small ? 64 : 1024;
const IMAGES = 2;

function memory(of: number | 'self'): { hwm: string; rss: string } {
	const status = fs.readFileSync(`/proc/${of}/status`, 'utf8');
	const field = (name: string) => /^(\S+):\s+(.*)$/m.exec(status.split('\n').find((line) => line.startsWith(`${name}:`)) ?? '')?.[2] ?? '?';
	return { hwm: field('VmHWM'), rss: field('VmRSS') };
}

/** One backup folder with IMAGES images of IMAGE_MIB each: 16 MiB blocks alternating random and program bytes. */
function makeBenchSet(dest: string): string[] {
	const id = '20261201T000000Z';
	const dir = `${dest}/bench-vm/${id}`;
	const blocks = IMAGE_MIB / 16;
	const lines = onHost(`set -e
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
	onHost(`cat > ${shq(`${dir}/manifest.json`)}`, serializeManifest(manifest));
	return [dir];
}

const discard = () =>
	new Writable({
		write(_chunk, _encoding, callback) {
			callback();
		},
	});

async function ours(ssh: SshConnection, paths: string[], compression: Compression): Promise<{ seconds: number; tarBytes: number; outBytes: number }> {
	const started = performance.now();
	const backups = await resolveBackups(ssh, paths);
	const archive = await openArchive(ssh, backups, compression);
	await pipeline(archive.stream, discard());
	return { seconds: (performance.now() - started) / 1000, tarBytes: archive.tarBytes, outBytes: archive.digest().bytes };
}

function byHand(dest: string, folders: string[], filter: string): number {
	const lab = loadLab();
	const key = lab.users.root.privateKeyPath;
	const known = `${lab.labDir}/bench-known-hosts`;
	fs.writeFileSync(known, `${lab.knownHostsLine}\n`);
	const remote = `tar cf - -C ${shq(dest)} ${folders.map(shq).join(' ')}`;
	const ssh = `ssh -p ${lab.port} -i ${shq(key)} -o UserKnownHostsFile=${shq(known)} -o BatchMode=yes root@${lab.host} ${shq(remote)}`;
	const started = performance.now();
	const result = spawnSync('bash', ['-o', 'pipefail', '-c', `${ssh} | ${filter} > /dev/null`], { stdio: ['ignore', 'ignore', 'pipe'] });
	if (result.status !== 0) throw new Error(`by hand failed: ${result.stderr}`);
	return (performance.now() - started) / 1000;
}

function median(values: number[]): number {
	const sorted = [...values].sort((a, b) => a - b);
	return sorted[Math.floor(sorted.length / 2)];
}

async function main(): Promise<void> {
	const dest = makeDest('bench-export');
	const load = () => fs.readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' / ');
	const loadStart = load();
	try {
		const made = Date.now();
		const paths = makeBenchSet(dest);
		const madeSeconds = (Date.now() - made) / 1000;
		const folders = paths.map((path) => path.slice(dest.length + 1));
		const ssh = await SshConnection.connect(labTarget());
		const before = memory('self');
		const hasZstd = 'createZstdCompress' in zlib;
		const cases: { name: string; compression: Compression; filter: string }[] = [
			{ name: 'tar', compression: { kind: 'none' }, filter: 'cat' },
			{ name: 'gzip -1', compression: { kind: 'gzip', level: 1 }, filter: 'gzip -1' },
			{ name: 'zstd -1', compression: { kind: 'zstd', level: 1 }, filter: 'zstd -1 -q -c' },
		];
		const rows: string[] = [];
		let tarBytes = 0;
		try {
			// Untimed: the files in the host's page cache for every method alike.
			onHost(`cat ${paths.map((path) => `${shq(path)}/*`).join(' ')} > /dev/null`);
			for (const { name, compression, filter } of cases) {
				const oursTimes: number[] = [];
				const handTimes: number[] = [];
				let outBytes = 0;
				for (let run = 0; run < runs; run++) {
					if (compression.kind !== 'zstd' || hasZstd) {
						const result = await ours(ssh, paths, compression);
						oursTimes.push(result.seconds);
						tarBytes = result.tarBytes;
						outBytes = result.outBytes;
					}
					handTimes.push(byHand(dest, folders, filter));
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
			`- Median of ${runs} run(s). Throughput = uncompressed tar bytes / wall time. Ours: one ssh2 connection (aes128-gcm@openssh.com, ssh2's first choice), one \`dd\` exec per file, sha256 of every image in Node, tar-stream, Node ${process.version} zlib, output discarded in this process. By hand: system \`ssh\` (OpenSSH default cipher) running \`tar cf -\`, piped to the filter, output to /dev/null.`,
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
		removeDest(dest);
	}
}

main().catch((error) => {
	console.error(error);
	process.exit(1);
});
