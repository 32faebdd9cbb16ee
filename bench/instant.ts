/**
 * Instant-recovery benchmark, run by hand as root on the lab machine:
 *   bash scripts/lab/up.sh && npx tsx bench/instant.ts [--runs 3] [--fill-mib 3584] [--keep]
 *
 * Setup (untimed): an OS-less bench VM of our own (`lvb-bench-instant`, under
 * /var/lib/lvb-lab/bench-instant/) with a 4 GiB virtual qcow2 of which --fill-mib MiB (default
 * 3584: 87.5 %) are allocated data written with `qemu-io -c 'write -P ...'` (one pattern per
 * 256 MiB, so every cluster is allocated and no two regions are alike), running; a live full
 * backup of it (backupVm), verified once with Verify Checksum.
 *
 * Timed wall-clock, median of --runs, all in one run on the same backup:
 *   (a) instant recover, the backup verified earlier (its record vouches: nothing hashed):
 *       from the call to the new domain running; with the bytes the overlays hold after the start;
 *   (b) instant recover with Verify First on a backup without a record (verification.json moved
 *       aside for the run, put back after): the same plus hashing the image;
 *   (c) a full restore by hand: `qemu-img convert -O qcow2` of the same backup image to a new file
 *       + `sync` (one exec), the copy the instant recovery avoids;
 * each instant VM discarded after its run (untimed), each copy removed and `sync` run (untimed).
 * Prints the table and writes it to bench/results/instant-latest.md.
 */
import * as fs from 'fs';
import * as path from 'path';
import { backupVm, type BackupRequest } from '../lib/backup';
import { BackupVerifier } from '../lib/catalog';
import { discardInstant, instantRecover, type InstantRecoverResult } from '../lib/restore/instant';
import { SshConnection } from '../lib/ssh';
import { loadLab } from '../test/support/lab';
import { labTarget } from '../test/support/targets';
import { MiB, VIRTUAL_MIB, benchDomainXml, loadAverage, median, removeBenchVms, sh } from './lib/host';

const argv = process.argv.slice(2);
const option = (name: string, fallback: number) => (argv.includes(name) ? Number(argv[argv.indexOf(name) + 1]) : fallback);
const RUNS = option('--runs', 3);
const FILL_MIB = option('--fill-mib', 3584);
const KEEP = argv.includes('--keep');
if (!Number.isInteger(RUNS) || RUNS < 1) throw new Error('--runs must be a positive integer');
if (!Number.isInteger(FILL_MIB) || FILL_MIB < 256 || FILL_MIB > VIRTUAL_MIB) throw new Error(`--fill-mib must be 256..${VIRTUAL_MIB}`);

const lab = loadLab();
const URI = lab.systemUri;
const BENCH = `${lab.labDir}/bench-instant`;
const VM = { name: 'lvb-bench-instant', disk: `${BENCH}/lvb-bench-instant.qcow2` };
const DEST = `${BENCH}/dest`;
const OVERLAYS = `${BENCH}/overlays`;
const COPY = `${BENCH}/copy.qcow2`;

interface Run {
	seconds: number;
	bytes: number;
	result?: InstantRecoverResult;
}

async function setup(ssh: SshConnection): Promise<{ backupPath: string; image: string; line: string }> {
	const started = performance.now();
	const chunks = Array.from({ length: Math.ceil(FILL_MIB / 256) }, (_, index) => index);
	await sh(
		ssh,
		`set -e
dir=$1 disk=$2 size=$3 fill=$4 xml=$5 uri=$6 name=$7
mkdir -p -- "$dir"
qemu-img create -q -f qcow2 "$disk" "$size"
i=0 off=0
set --
while [ "$off" -lt "$fill" ]; do
  len=256; [ $((off + len)) -gt "$fill" ] && len=$((fill - off))
  set -- "$@" -c "write -P $(( (i * 37 + 11) % 255 + 1 )) \${off}M \${len}M"
  off=$((off + len)); i=$((i+1))
done
qemu-io -f qcow2 "$@" "$disk" >/dev/null
printf '%s' "$xml" > "$dir/vm.xml"
virsh -q -c "$uri" define "$dir/vm.xml" >/dev/null
virsh -q -c "$uri" start --domain "$name" >/dev/null`,
		[BENCH, VM.disk, `${VIRTUAL_MIB}M`, String(FILL_MIB), benchDomainXml(lab.domainType, VM.name, VM.disk, 'bench/instant.ts'), URI, VM.name],
		'setup',
	);
	const request: BackupRequest = { uri: URI, vm: VM.name, dest: DEST, mode: 'full', compression: 'none', quiesce: 'off', holder: `bench/instant.ts ${process.pid}`, host: 'lab' };
	const backup = await backupVm(ssh, request);
	const verified = await new BackupVerifier(ssh).verify(backup.path);
	if (!verified.valid) throw new Error(`the bench backup did not verify: ${verified.problems.join('; ')}`);
	const image = `${backup.path}/${backup.disks[0].file}`;
	const info = JSON.parse(await sh(ssh, 'qemu-img info -U --output=json -- "$1"', [image], 'info')) as { 'virtual-size': number; 'actual-size': number };
	const line =
		`Bench VM disk: qcow2 ${(VIRTUAL_MIB / 1024).toFixed(0)} GiB virtual, ${FILL_MIB} MiB written with qemu-io (${chunks.length} patterns); ` +
		`its full backup image ${(info['actual-size'] / 2 ** 30).toFixed(2)} GiB allocated, sha256 ${backup.disks[0].sha256.slice(0, 12)}...; setup ${((performance.now() - started) / 1000).toFixed(1)} s (untimed).`;
	return { backupPath: backup.path, image, line };
}

async function instant(ssh: SshConnection, backupPath: string, run: number, verifyFirst: boolean): Promise<Run> {
	const name = `lvb-bench-instant-r${run}-${verifyFirst ? 'v' : 't'}`;
	const started = performance.now();
	const result = await instantRecover(ssh, { uri: URI, backupPath, overlayDir: OVERLAYS, name, verifyFirst });
	const seconds = (performance.now() - started) / 1000;
	await discardInstant(ssh, { uri: URI, domain: result.uuid });
	await sh(ssh, 'sync', [], 'sync');
	return { seconds, bytes: result.bytesWritten, result };
}

async function convert(ssh: SshConnection, image: string): Promise<Run> {
	const started = performance.now();
	await sh(ssh, 'set -e\nqemu-img convert -O qcow2 -- "$1" "$2"\nsync -- "$2"', [image, COPY], 'convert');
	const seconds = (performance.now() - started) / 1000;
	const bytes = Number((await sh(ssh, 'stat -c "%b %B" -- "$1" | awk \'{ print $1 * $2 }\'; rm -f -- "$1"; sync', [COPY], 'settle')).trim().split('\n')[0]);
	return { seconds, bytes };
}

function fmt(bytes: number): string {
	return bytes >= 2 ** 30 ? `${(bytes / 2 ** 30).toFixed(2)} GiB` : bytes >= MiB ? `${(bytes / MiB).toFixed(1)} MiB` : `${(bytes / 1024).toFixed(0)} KiB`;
}

async function main(): Promise<void> {
	removeBenchVms(URI, [VM.name], BENCH);
	const ssh = await SshConnection.connect(labTarget());
	try {
		const { backupPath, image, line } = await setup(ssh);
		const record = `${backupPath}/verification.json`;
		const runs: Record<'trusted' | 'verify' | 'convert', Run[]> = { trusted: [], verify: [], convert: [] };
		for (let run = 0; run < RUNS; run++) {
			runs.trusted.push(await instant(ssh, backupPath, run, true));
			await sh(ssh, 'mv -- "$1" "$1.aside"', [record], 'aside');
			try {
				runs.verify.push(await instant(ssh, backupPath, run, true));
			} finally {
				await sh(ssh, 'mv -f -- "$1.aside" "$1"', [record], 'back');
			}
			runs.convert.push(await convert(ssh, image));
		}
		const row = (label: string, list: Run[]) =>
			`| ${label} | ${median(list.map((r) => r.seconds)).toFixed(2)} | ${list.map((r) => r.seconds.toFixed(2)).join(', ')} | ${fmt(median(list.map((r) => r.bytes)))} |`;
		const trusted = runs.trusted[0].result;
		const report = [
			`# Instant recovery benchmark (${new Date().toISOString()})`,
			'',
			`Command: \`npx tsx bench/instant.ts --runs ${RUNS} --fill-mib ${FILL_MIB}\` on ${lab.domainType === 'kvm' ? 'KVM' : 'TCG'} libvirt, load average before: ${loadAverage()}.`,
			line,
			'',
			'| method | median s | runs s | bytes written |',
			'|---|---|---|---|',
			row('(a) instant recover, backup verified earlier (trusted: nothing hashed), call to domain running', runs.trusted),
			row('(b) instant recover with Verify First, no earlier record (image hashed first), call to domain running', runs.verify),
			row('(c) full restore by hand: `qemu-img convert -O qcow2` of the backup image + `sync`', runs.convert),
			'',
			`(a) verification: ${trusted?.verification}; (b) verification: ${runs.verify[0].result?.verification}, hashed ${fmt(runs.verify[0].result?.bytesHashed ?? 0)} in ${median(runs.verify.map((r) => r.result?.verifySeconds ?? 0)).toFixed(2)} s (median).`,
			'Bytes written: allocated bytes of the overlay right after the start (instant), of the copy (convert).',
			'',
		].join('\n');
		console.log(report);
		fs.mkdirSync(path.join(__dirname, 'results'), { recursive: true });
		fs.writeFileSync(path.join(__dirname, 'results', 'instant-latest.md'), report);
	} finally {
		ssh.close();
		if (!KEEP) removeBenchVms(URI, [VM.name], BENCH);
	}
}

main().catch((error: unknown) => {
	console.error(error);
	process.exitCode = 1;
});
