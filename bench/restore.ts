/**
 * Restore benchmark, run by hand as root on the lab machine:
 *   bash scripts/lab/up.sh && npx tsx bench/restore.ts [--runs 5] [--keep]
 *
 * All in one run: two identical OS-less bench VMs (`lvb-bench-restore`, and `lvb-bench-restore-nbd`
 * for virtnbdbackup, so neither tool's checkpoints break the other's chain) with the bench disk of
 * bench/lib/host.ts (4 GiB virtual qcow2, 1331 MiB of random data), under
 * /var/lib/lvb-lab/bench-restore/. Untimed setup: each VM, running, gets a full backup and two
 * incrementals, each after the same 16 MiB change written through the QEMU monitor into both
 * (ours: `backupVm`; theirs: `virtnbdbackup -l full`/`-l inc`); then both VMs are shut off.
 *
 * Timed wall-clock end to end, median of --runs, the same chain (full + 2 incrementals) restored
 * into a fresh folder:
 *   ours:  `restoreBackup` (target folder): space check, `qemu-img convert` of the chain while every
 *          chain image is hashed against its manifest, flush + sha256 of the result, rename.
 *   virtnbdrestore `-i chain -o folder`, timed until the qemu-nbd it forks has exited (the image
 *          is not complete before), and the same + `sync` (ours flushes; this is the fair pair).
 *   reference: `qemu-img convert` of our chain by hand (no hash, no flush).
 * Methods rotate their order every round; every chain is read once before timing (warm cache for
 * all); after each run its output is removed and `sync` runs (untimed).
 * Checked once, untimed: ours and virtnbdrestore's images equal their VM's disk (`qemu-img compare`).
 * Prints the table and writes it to bench/results/restore-latest.md.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { backupVm, type BackupMode, type BackupRequest, type BackupResult } from '../lib/backup';
import { restoreBackup } from '../lib/restore';
import { SshConnection } from '../lib/ssh';
import { loadLab } from '../test/support/lab';
import { labTarget } from '../test/support/targets';
import { DATA_BYTES, createBenchVms, engineState, loadAverage, median, qemuIo, removeBenchVms, rotate, settle, sh, sshCosts, sshLine, runBench } from './lib/host';

const argv = process.argv.slice(2);
const RUNS = Number(argv.includes('--runs') ? argv[argv.indexOf('--runs') + 1] : 5);
const KEEP = argv.includes('--keep');
if (!Number.isInteger(RUNS) || RUNS < 1) throw new Error('--runs must be a positive integer');

const lab = loadLab();
const URI = lab.systemUri;
const BENCH = `${lab.labDir}/bench-restore`;
const IMAGES = `${BENCH}/images`;
const OUT = `${BENCH}/out`;
const CHANGE_MIB = 16;

const VM = { name: 'lvb-bench-restore', disk: `${IMAGES}/lvb-bench-restore.qcow2` };
const VM_NBD = { name: 'lvb-bench-restore-nbd', disk: `${IMAGES}/lvb-bench-restore-nbd.qcow2` };

type MethodId = 'ours' | 'nbd' | 'nbd-sync' | 'convert';
const METHOD_ORDER: MethodId[] = ['ours', 'nbd-sync', 'nbd', 'convert'];
const TITLES: Record<MethodId, string> = {
	ours: '(1) ours: `restoreBackup` to a folder (chain hashed against manifests, result flushed + sha256)',
	'nbd-sync': '(2) `virtnbdrestore` + `sync` of the result (no hash)',
	nbd: '(2a) `virtnbdrestore` alone (not flushed, no hash)',
	convert: '(3) reference: `qemu-img convert -O qcow2` of our chain by hand (no hash, no flush)',
};

const samples = new Map<MethodId, number[]>();
const notes: string[] = [];
const failures: string[] = [];

/** Waits until the qemu-nbd virtnbdrestore forked for `img` has exited (it writes after virtnbdrestore returns). */
const NBD_RESTORE = `virtnbdrestore -n -i "$1" -o "$2" -L "$3" >/dev/null 2>&1 || { echo "virtnbdrestore failed, see $3" >&2; exit 1; }
img="$2/$4" n=0
while pgrep -f -- "qemu-nbd.* $img " >/dev/null && [ $n -lt 3000 ]; do sleep 0.05; n=$((n+1)); done
[ "$5" = sync ] && sync -- "$img"
exit 0`;

function request(vm: string, dest: string, mode: BackupMode): BackupRequest {
	return { uri: URI, vm, dest, mode, compression: 'none', quiesce: 'off', holder: `bench/restore.ts ${process.pid}`, host: 'lab' };
}

async function run(ssh: SshConnection, id: MethodId, chainTop: BackupResult, round: number): Promise<void> {
	const out = `${OUT}/${id}-${round}`;
	const started = performance.now();
	if (id === 'ours') {
		await restoreBackup(ssh, { uri: URI, backupPath: chainTop.path, request: { target: 'folder', folder: out }, holder: `bench/restore.ts ${process.pid}` });
	} else if (id === 'convert') {
		await sh(ssh, 'mkdir -p -- "$2" && qemu-img convert -O qcow2 -- "$1" "$2/vda.qcow2"', [`${chainTop.path}/vda.qcow2`, out], 'convert');
	} else {
		await sh(ssh, NBD_RESTORE, [`${OUT}/nbd-chain`, out, `${OUT}/virtnbdrestore.log`, path.basename(VM_NBD.disk), id === 'nbd-sync' ? 'sync' : ''], 'nbd');
	}
	const seconds = (performance.now() - started) / 1000;
	const list = samples.get(id) ?? [];
	list.push(seconds);
	samples.set(id, list);
	console.error(`  ${id.padEnd(9)} ${seconds.toFixed(2).padStart(6)} s`);
	// The first run of each is kept for the checks, the others go at once.
	if (round > 0) await settle(ssh, undefined, [out]);
	else await settle(ssh, undefined, []);
}

async function check(ssh: SshConnection): Promise<void> {
	const compare = async (a: string, b: string) => (await sh(ssh, 'qemu-img compare -f qcow2 -F qcow2 -- "$1" "$2" 2>&1; echo "rc=$?"', [a, b], 'compare')).trim();
	const ours = await compare(VM.disk, `${OUT}/ours-0/${path.basename(VM.disk)}`);
	notes.push(`ours restored image vs its VM's disk at the last incremental, \`qemu-img compare\`: ${ours.endsWith('rc=0') ? 'identical' : `DIFFERENT (${ours})`}.`);
	if (!ours.endsWith('rc=0')) failures.push('ours restored image differs from the disk');
	const nbd = await compare(VM_NBD.disk, `${OUT}/nbd-0/${path.basename(VM_NBD.disk)}`);
	notes.push(`virtnbdrestore's image vs its VM's disk: ${nbd.endsWith('rc=0') ? 'identical' : `DIFFERENT (${nbd})`}.`);
	if (!nbd.endsWith('rc=0')) failures.push("virtnbdrestore's image differs from the disk");
}

function report(meta: { engine: string; date: string; ssh: { execMs: number; connectMs: number }; versions: string; loadStart: string; loadEnd: string; diskNote: string; changes: string[] }): string {
	const med = (id: MethodId) => median(samples.get(id) ?? [NaN]);
	const fmt = (seconds: number) => seconds.toFixed(2);
	const lines = [
		'# Restore benchmark: results',
		'',
		`${meta.date}. Command (as root on the lab machine): \`bash scripts/lab/up.sh && npx tsx bench/restore.ts${RUNS !== 5 ? ` --runs ${RUNS}` : ''}\`.`,
		'',
		`- Engine measured: ${meta.engine}.`,
		`- ${meta.diskNote}`,
		`- Chain restored: one full + 2 incrementals (each after a ${CHANGE_MIB} MiB change, the same in both VMs: ${meta.changes.join(', ')}), into a fresh folder.`,
		`- Median of ${RUNS} run(s) per method, wall clock end to end; methods rotate their order every round; chains read once before timing; after every run its output is removed and \`sync\` runs (untimed).`,
		`- Machine: ${os.cpus().length} cores; load average ${meta.loadStart} at start, ${meta.loadEnd} at the end (1/5/15 min; other work shared the machine). ${meta.versions}`,
		`- ${sshLine(meta.ssh)}`,
		'- MB/s = guest data restored (1331 MiB) / time, 1 MB = 10^6 bytes. Ratios are time ratios (0.50x = twice as fast).',
		'',
		'| method | runs (s) | median s | data MB/s | t / t(virtnbdrestore + sync) |',
		'| --- | --- | ---: | ---: | ---: |',
		...METHOD_ORDER.map((id) => `| ${TITLES[id]} | ${(samples.get(id) ?? []).map(fmt).join(', ')} | **${fmt(med(id))}** | ${(DATA_BYTES / 1e6 / med(id)).toFixed(0)} | ${(med(id) / med('nbd-sync')).toFixed(2)}x |`),
		'',
		'| target | measured | verdict |',
		'| --- | --- | --- |',
		`| restore of full + 2 incrementals faster than virtnbdrestore (both flushed) | ${fmt(med('ours'))} s vs ${fmt(med('nbd-sync'))} s (${(med('ours') / med('nbd-sync')).toFixed(2)}x) | ${med('ours') < med('nbd-sync') ? 'PASS' : 'FAIL'} |`,
		'',
		'## Checks (untimed)',
		'',
		...notes.map((note) => `- ${note}`),
		...failures.map((failure) => `- FAILED: ${failure}`),
		'',
	];
	return lines.join('\n');
}

function teardown(): void {
	removeBenchVms(URI, [VM.name, VM_NBD.name], BENCH);
}

async function main(): Promise<void> {
	if (process.getuid?.() !== 0) throw new Error('run as root on the lab machine (it manages VMs and files under /var/lib/lvb-lab)');
	const loadStart = loadAverage();
	const date = new Date().toISOString().replace(/\.\d+Z$/, 'Z');
	const engine = engineState();
	teardown();
	const ssh = await SshConnection.connect(labTarget());
	const changes: string[] = [];
	let costs = { execMs: NaN, connectMs: NaN };
	let versions = '';
	let diskNote = '';
	try {
		const missing = (await sh(ssh, 'for t in qemu-img qemu-nbd virtnbdbackup virtnbdrestore; do command -v "$t" >/dev/null || echo "$t"; done', [], 'tools')).split('\n').filter(Boolean);
		if (missing.length > 0) throw new Error(`missing on the host: ${missing.join(', ')} (apt-get install -y --no-install-recommends qemu-utils virtnbdbackup)`);
		costs = await sshCosts(ssh);
		versions = (
			await sh(
				ssh,
				`echo "kernel $(uname -r); $(qemu-img --version | head -1 | cut -d' ' -f1-3); libvirtd $(libvirtd --version 2>/dev/null | awk '{print $NF}'); virtnbdbackup $(virtnbdbackup --version 2>&1 | tail -1); $(df -T -- "$1" | awk 'NR==2{print $2}') filesystem; domain type $2."`,
				[lab.labDir, lab.domainType],
				'versions',
			)
		).trim();
		console.error('creating the bench VMs...');
		diskNote = await createBenchVms(ssh, { uri: URI, domainType: lab.domainType, dir: IMAGES, vms: [VM, VM_NBD], description: 'n8n-nodes-libvirt-backup bench VM (bench/restore.ts), removed at the end' });
		await sh(ssh, 'mkdir -p -- "$1" && uri=$2; shift 2; for d in "$@"; do virsh -q -c "$uri" start "$d" >/dev/null || exit 1; done', [OUT, URI, VM.name, VM_NBD.name], 'start');

		console.error('backing up: full + 2 incrementals each (untimed)...');
		let top = await backupVm(ssh, request(VM.name, `${OUT}/ours-chain`, 'full'));
		await sh(ssh, 'virtnbdbackup -n -U "$1" -d "$2" -l full -o "$3" >/dev/null 2>&1 || { echo "virtnbdbackup full failed" >&2; exit 1; }', [URI, VM_NBD.name, `${OUT}/nbd-chain`], 'nbd-full');
		for (let i = 0; i < 2; i++) {
			const offset = 64 + Math.floor(Math.random() * 3900);
			const pattern = 1 + Math.floor(Math.random() * 254);
			changes.push(`${CHANGE_MIB} MiB of 0x${pattern.toString(16)} at ${offset} MiB`);
			for (const vm of [VM, VM_NBD]) await qemuIo(ssh, URI, vm.name, `write -P ${pattern} ${offset}M ${CHANGE_MIB}M`);
			top = await backupVm(ssh, request(VM.name, `${OUT}/ours-chain`, 'incremental'));
			if (top.kind !== 'incremental') throw new Error(`our backup ${i + 2} is a ${top.kind}, not an incremental`);
			await sh(ssh, 'virtnbdbackup -n -U "$1" -d "$2" -l inc -o "$3" >/dev/null 2>&1 || { echo "virtnbdbackup inc failed" >&2; exit 1; }', [URI, VM_NBD.name, `${OUT}/nbd-chain`], 'nbd-inc');
		}
		await sh(ssh, 'uri=$1; shift; for d in "$@"; do virsh -q -c "$uri" destroy "$d" >/dev/null || exit 1; done', [URI, VM.name, VM_NBD.name], 'stop');
		await sh(ssh, 'find "$@" -type f -exec cat -- {} + >/dev/null', [`${OUT}/ours-chain`, `${OUT}/nbd-chain`], 'warm');
		await settle(ssh, undefined, []);

		for (let round = 0; round < RUNS; round++) {
			for (const id of rotate<MethodId>(['ours', 'nbd-sync', 'nbd', 'convert'], round)) await run(ssh, id, top, round);
		}
		await check(ssh);
	} finally {
		ssh.close();
		if (!KEEP) teardown();
		else console.error(`--keep: bench VMs and ${BENCH} left in place`);
	}
	const markdown = report({ engine: engine.text, date, ssh: costs, versions, loadStart, loadEnd: loadAverage(), diskNote, changes });
	console.log(markdown);
	const file = path.join(__dirname, 'results', 'restore-latest.md');
	fs.writeFileSync(file, markdown);
	console.error(`written to ${path.relative(process.cwd(), file)}`);
	if (failures.length > 0) process.exitCode = 1;
}

runBench(main, () => {
	if (!KEEP) teardown();
});
