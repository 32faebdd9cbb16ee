/**
 * Backup benchmark, run by hand as root on the lab machine:
 *   bash scripts/lab/up.sh && npx tsx bench/backup.ts [--runs 5] [--no-nbd] [--keep]
 *
 * All in one run, on the same disk: a 4 GiB virtual qcow2 holding 1331 MiB of random (incompressible)
 * data in 7 regions, attached to two identical OS-less bench VMs of our own (`lvb-bench`, and
 * `lvb-bench-nbd` for virtnbdbackup, so neither tool's checkpoints break the other's chain), under
 * /var/lib/lvb-lab/bench/. The lab's VMs are never touched; everything is removed at the end.
 *
 * Timed wall-clock end to end, median of --runs:
 *   shut-off:  ours (backupVm full over SSH: convert, sha256, manifest) vs `qemu-img convert` +
 *              `openssl dgst -sha256` by hand, `cp --sparse=always`, and the old method (`rsync -ah` +
 *              `sha256sum` of source and copy); two references show what `sync` (durability) costs.
 *   running:   ours live full vs raw `virsh backup-begin` push by hand (no hash) vs virtnbdbackup full.
 *   16 MiB changed (random offset and pattern, written through the QEMU monitor into both VMs):
 *              ours incremental vs virtnbdbackup incremental.
 * Ours runs over one ssh2 connection to the lab sshd, opened before timing; each by-hand method is
 * ONE exec on that same connection, so it pays the per-exec cost (measured and printed) once.
 * Fairness: every source is read once before timing (warm cache for all), methods rotate their order
 * every round, and after every timed run its output is removed and `sync` runs (untimed), so no
 * method pays for another's dirty pages. A run that throws is reported and run once more.
 * Checked once, untimed: our shut-off image equals the source (`qemu-img compare`) and its manifest
 * sha256 is right; our incremental chain (and virtnbdbackup's, restored with virtnbdrestore)
 * reconstructs the live disk. Prints the tables and writes them to bench/results/backup-latest.md.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { backupVm, type BackupMode, type BackupRequest, type BackupResult } from '../lib/backup';
import { SshConnection } from '../lib/ssh';
import { loadLab } from '../test/support/lab';
import { labTarget } from '../test/support/targets';
import { ExecLog, type ExecRecord } from './lib/execLog';
import { DATA_BYTES, MiB, VIRTUAL_MIB, createBenchVms, engineState, loadAverage, median, qemuIo, removeBenchVms, rotate, settle, sh, sshCosts, sshLine, runBench } from './lib/host';

const argv = process.argv.slice(2);
const RUNS = Number(argv.includes('--runs') ? argv[argv.indexOf('--runs') + 1] : 5);
const KEEP = argv.includes('--keep');
const WANT_NBD = !argv.includes('--no-nbd');
if (!Number.isInteger(RUNS) || RUNS < 1) throw new Error('--runs must be a positive integer');

const lab = loadLab();
const URI = lab.systemUri;
const BENCH = `${lab.labDir}/bench`;
const IMAGES = `${BENCH}/images`;
const OUT = `${BENCH}/out`;
const CHANGE_MIB = 16;

const VM = { name: 'lvb-bench', disk: `${IMAGES}/lvb-bench.qcow2` };
const VM_NBD = { name: 'lvb-bench-nbd', disk: `${IMAGES}/lvb-bench-nbd.qcow2` };

type MethodId = 'ours-offline' | 'convert' | 'convert-sync' | 'convert-psync' | 'cp' | 'old' | 'ours-live' | 'push' | 'nbd-full' | 'ours-inc' | 'nbd-inc';
const METHOD_ORDER: MethodId[] = ['ours-offline', 'convert', 'convert-sync', 'convert-psync', 'cp', 'old', 'ours-live', 'push', 'nbd-full', 'ours-inc', 'nbd-inc'];

const TITLES: Record<MethodId, string> = {
	'ours-offline': '(1) ours, shut-off full (`backupVm`: convert + sha256 + manifest, flushed)',
	convert: '(2) by hand: `qemu-img convert -O qcow2` + `openssl dgst -sha256`',
	'convert-sync': '(2a) reference: (2) + `sync` of the copy',
	'convert-psync': '(2b) reference: convert, then `sync` in parallel with `openssl dgst`',
	cp: '(3) by hand: `cp --sparse=always` (no hash)',
	old: '(4) old method: `rsync -ah` + `sha256sum` of source and copy',
	'ours-live': '(5) ours, live full (`backupVm`: push backup-begin + checkpoint + sha256 + manifest)',
	push: '(6) by hand: raw `virsh backup-begin` push, no hash (reference)',
	'nbd-full': '(8) virtnbdbackup full (`-l full`, no sha256)',
	'ours-inc': `(7) ours, incremental after a ${CHANGE_MIB} MiB change`,
	'nbd-inc': `(9) virtnbdbackup incremental (\`-l inc\`) after the same ${CHANGE_MIB} MiB change`,
};

interface Sample {
	seconds: number;
	/** SSH execs on the connection during the run (by-hand methods: 1). */
	execs: number;
	/** Size of what the run wrote. */
	outputBytes: number;
	execLog?: ExecRecord[];
}

const samples = new Map<MethodId, Sample[]>();
const notes: string[] = [];
const failures: string[] = [];
/** Timed runs that threw once (and were run again). */
const retried: string[] = [];
let diskNote = '';

function record(id: MethodId, sample: Sample): void {
	const list = samples.get(id) ?? [];
	list.push(sample);
	samples.set(id, list);
	console.error(`  ${id.padEnd(14)} ${sample.seconds.toFixed(2).padStart(6)} s  (${sample.execs} exec${sample.execs === 1 ? '' : 's'}, wrote ${(sample.outputBytes / MiB).toFixed(1)} MiB)`);
}

// ------------------------------------------------------------------------------------------------
// Bench VMs

function teardown(): void {
	removeBenchVms(URI, [VM.name, VM_NBD.name], BENCH);
}

async function warm(ssh: SshConnection): Promise<void> {
	await sh(ssh, 'for f in "$@"; do cat -- "$f" >/dev/null; done', [VM.disk, VM_NBD.disk], 'warm');
}

// ------------------------------------------------------------------------------------------------
// Methods

interface Conn {
	ssh: SshConnection;
	log: ExecLog;
}

function request(vm: string, dest: string, mode: BackupMode): BackupRequest {
	return { uri: URI, vm, dest, mode, compression: 'none', quiesce: 'auto', holder: `bench/backup.ts ${process.pid}`, host: 'lab' };
}

async function ours(conn: Conn, vm: string, dest: string, mode: BackupMode): Promise<{ result: BackupResult; seconds: number; execs: number; execLog: ExecRecord[] }> {
	const before = conn.ssh.execCount;
	conn.log.mark();
	const started = performance.now();
	const result = await backupVm(conn.ssh, request(vm, dest, mode));
	const seconds = (performance.now() - started) / 1000;
	return { result, seconds, execs: conn.ssh.execCount - before, execLog: conn.log.take() };
}

const BY_HAND: Partial<Record<MethodId, string>> = {
	convert: 'qemu-img convert -O qcow2 "$1" "$2" && openssl dgst -sha256 "$2"',
	'convert-sync': 'qemu-img convert -O qcow2 "$1" "$2" && openssl dgst -sha256 "$2" && sync "$2"',
	'convert-psync': 'qemu-img convert -O qcow2 "$1" "$2" && { sync "$2" & openssl dgst -sha256 "$2"; wait $!; }',
	cp: 'cp --sparse=always "$1" "$2"',
	old: 'rsync -ah "$1" "$2" && sha256sum "$1" && sha256sum "$2"',
	push: `uri=$1 dom=$2 dst=$3 xml=$4
printf "<domainbackup mode='push'><disks><disk name='vda' backup='yes' type='file'><driver type='qcow2'/><target file='%s'/></disk></disks></domainbackup>" "$dst" >"$xml" || exit 1
virsh -q -c "$uri" backup-begin --domain "$dom" --backupxml "$xml" >/dev/null || exit 1
export LC_ALL=C
# libvirt 9.0 can answer "backup job data missing" while a job ends: ask again.
errors=0
while :; do
  if ! out=$(virsh -c "$uri" domjobinfo --domain "$dom" --rawstats); then
    errors=$((errors+1)); [ $errors -lt 5 ] || exit 1; sleep 0.1; continue
  fi
  case $out in *"Job type: 1"*|*"Job type: 2"*) sleep 0.1;; *) break;; esac
done
virsh -c "$uri" domjobinfo --domain "$dom" --completed --rawstats | grep -Eq '^Job type: *3$'`,
	'nbd-full': 'virtnbdbackup -n -U "$1" -d "$2" -l full -o "$3" 2>&1',
	'nbd-inc': 'virtnbdbackup -n -U "$1" -d "$2" -l inc -o "$3" 2>&1',
};

/**
 * Runs one timed run; if it throws, reports it, cleans `cleanup` and tries once more (a second
 * failure ends the benchmark). Failures are listed in the results.
 */
async function attempt(what: string, conn: Conn, cleanup: string[], run: () => Promise<void>): Promise<void> {
	try {
		await run();
	} catch (error) {
		const message = (error as Error).message.split('\n')[0];
		retried.push(`${what} failed once and was run again: ${message}`);
		console.error(`  ${what} FAILED (${message}); running it again`);
		await settle(conn.ssh, undefined, cleanup);
		await run();
	}
}

/** A by-hand command: one exec, timed end to end. */
async function byHand(conn: Conn, id: MethodId, args: string[]): Promise<number> {
	const started = performance.now();
	await sh(conn.ssh, BY_HAND[id] as string, args, id);
	return (performance.now() - started) / 1000;
}

async function runShutOff(id: MethodId, conn: Conn, verify: boolean): Promise<void> {
	if (id === 'ours-offline') {
		const dest = `${OUT}/ours-offline`;
		const run = await ours(conn, VM.name, dest, 'full');
		if (run.result.method !== 'offline-convert' || run.result.kind !== 'full') throw new Error(`ours shut-off: got ${run.result.kind}/${run.result.method}`);
		if (verify) await verifyOffline(conn.ssh, run.result);
		record(id, { seconds: run.seconds, execs: run.execs, outputBytes: await settle(conn.ssh, run.result.path, [dest]), execLog: run.execLog });
	} else {
		const dst = `${OUT}/${id}.img`;
		const seconds = await byHand(conn, id, [VM.disk, dst]);
		record(id, { seconds, execs: 1, outputBytes: await settle(conn.ssh, dst, [dst]) });
	}
}

async function runLiveFull(id: MethodId, conn: Conn): Promise<void> {
	if (id === 'ours-live') {
		const dest = `${OUT}/ours-live`;
		const run = await ours(conn, VM.name, dest, 'full');
		if (run.result.method !== 'push' || run.result.kind !== 'full' || !run.result.checkpoint) throw new Error(`ours live: got ${run.result.kind}/${run.result.method}`);
		record(id, { seconds: run.seconds, execs: run.execs, outputBytes: await settle(conn.ssh, run.result.path, [dest]), execLog: run.execLog });
	} else if (id === 'push') {
		const dst = `${OUT}/push.qcow2`;
		const seconds = await byHand(conn, id, [URI, VM.name, dst, `${OUT}/push.xml`]);
		record(id, { seconds, execs: 1, outputBytes: await settle(conn.ssh, dst, [dst, `${OUT}/push.xml`]) });
	} else {
		const dir = `${OUT}/nbd-full`;
		const seconds = await byHand(conn, id, [URI, VM_NBD.name, dir]);
		record(id, { seconds, execs: 1, outputBytes: await settle(conn.ssh, dir, [dir]) });
	}
}

async function guestWrite(ssh: SshConnection, vm: string, pattern: number, offsetMiB: number): Promise<void> {
	await qemuIo(ssh, URI, vm, `write -P 0x${pattern.toString(16)} ${offsetMiB}M ${CHANGE_MIB}M`);
}

/** One 16 MiB change into both VMs, then both incrementals. Returns our newest image. */
async function runIncremental(conn: Conn, round: number, nbd: boolean, changes: string[]): Promise<string> {
	const offsetMiB = Math.floor(Math.random() * (VIRTUAL_MIB - CHANGE_MIB));
	const pattern = 1 + Math.floor(Math.random() * 254);
	changes.push(`0x${pattern.toString(16).padStart(2, '0')} @ ${offsetMiB} MiB`);
	await guestWrite(conn.ssh, VM.name, pattern, offsetMiB);
	if (nbd) await guestWrite(conn.ssh, VM_NBD.name, pattern, offsetMiB);
	await settle(conn.ssh, undefined, []);
	let top = '';
	for (const id of rotate<MethodId>(nbd ? ['ours-inc', 'nbd-inc'] : ['ours-inc'], round)) {
		await attempt(id, conn, [], async () => {
			if (id === 'ours-inc') {
				const run = await ours(conn, VM.name, `${OUT}/ours-chain`, 'incremental');
				if (run.result.kind !== 'incremental') throw new Error(`ours incremental fell back to ${run.result.kind}: ${run.result.warnings.join('; ')}`);
				top = `${run.result.path}/${run.result.disks[0].file}`;
				record(id, { seconds: run.seconds, execs: run.execs, outputBytes: await settle(conn.ssh, run.result.path, []), execLog: run.execLog });
			} else {
				const chain = `${OUT}/nbd-chain`;
				const before = Number((await sh(conn.ssh, 'du -sb -- "$1" | cut -f1', [chain], 'du')).trim());
				const seconds = await byHand(conn, id, [URI, VM_NBD.name, chain]);
				record(id, { seconds, execs: 1, outputBytes: (await settle(conn.ssh, chain, [])) - before });
			}
		});
	}
	return top;
}

// ------------------------------------------------------------------------------------------------
// Correctness checks (untimed)

async function verifyOffline(ssh: SshConnection, result: BackupResult): Promise<void> {
	const image = `${result.path}/${result.disks[0].file}`;
	const out = await sh(ssh, 'qemu-img compare -f qcow2 -F qcow2 -- "$1" "$2" 2>&1; echo "rc=$?"\nopenssl dgst -sha256 -r -- "$2" | cut -d" " -f1', [VM.disk, image], 'verify');
	const [compare, sha] = out.trim().split('\n').slice(-2);
	const identical = compare === 'rc=0';
	const shaOk = sha === result.disks[0].sha256;
	notes.push(`ours shut-off image vs the source, \`qemu-img compare\`: ${identical ? 'identical' : `DIFFERENT (${out.trim()})`}; manifest sha256 ${shaOk ? 'matches' : 'does NOT match'} the file.`);
	if (!identical || !shaOk) failures.push('ours shut-off backup is not equal to the source, or its sha256 is wrong');
}

async function verifyChains(ssh: SshConnection, oursTop: string, nbd: boolean): Promise<void> {
	for (const vm of nbd ? [VM, VM_NBD] : [VM]) {
		// Push QEMU's qcow2 metadata cache to the file so `qemu-img compare -U` reads what the guest sees.
		await qemuIo(ssh, URI, vm.name, 'flush');
	}
	const out = await sh(ssh, 'qemu-img compare -U -f qcow2 -F qcow2 -- "$1" "$2" 2>&1; echo "rc=$?"\nqemu-img info -U --backing-chain -- "$2" | grep -c "^image:"', [VM.disk, oursTop], 'verify');
	const lines = out.trim().split('\n');
	const ok = lines[lines.length - 2] === 'rc=0';
	notes.push(`ours incremental chain (${lines[lines.length - 1]} images: one full + ${RUNS} incrementals, opened through the newest) vs the live disk, \`qemu-img compare -U\`: ${ok ? 'identical' : `DIFFERENT (${out.trim()})`}.`);
	if (!ok) failures.push('ours incremental chain does not reconstruct the disk');
	if (!nbd) return;
	const restored = await sh(
		ssh,
		`virtnbdrestore -n -i "$1" -o "$2" >/dev/null 2>&1 || { echo "virtnbdrestore failed"; exit 0; }
# virtnbdrestore returns while the qemu-nbd it forked may still be writing the image: wait for it.
img="$2/${path.basename(VM_NBD.disk)}" n=0
while pgrep -f -- "qemu-nbd.* $img " >/dev/null && [ $n -lt 300 ]; do sleep 0.1; n=$((n+1)); done
echo "waited $n"
qemu-img compare -U -f qcow2 -F qcow2 -- "$3" "$img" 2>&1; echo "rc=$?"`,
		[`${OUT}/nbd-chain`, `${OUT}/nbd-restore`, VM_NBD.disk],
		'verify',
	);
	const nbdOk = restored.trim().endsWith('rc=0');
	const waited = Number(/waited (\d+)/.exec(restored)?.[1] ?? 0) / 10;
	notes.push(
		`virtnbdbackup chain (one full + ${RUNS} incrementals), restored with \`virtnbdrestore\`, vs its live disk: ${nbdOk ? 'identical' : `NOT identical (${restored.trim()})`} ` +
			`(compared once the qemu-nbd that virtnbdrestore forks had exited, ${waited.toFixed(1)} s after virtnbdrestore returned: comparing at once can report a mismatch).`,
	);
	await sh(ssh, 'rm -rf -- "$1"', [`${OUT}/nbd-restore`], 'rm');
}

// ------------------------------------------------------------------------------------------------
// Report

const fmt = (seconds: number) => seconds.toFixed(2);
const med = (id: MethodId) => {
	const list = samples.get(id);
	return list?.length ? median(list.map((s) => s.seconds)) : NaN;
};

function resultTable(nbdWhyNot: string | undefined): string[] {
	const lines: string[] = [];
	const old = med('old');
	const convert = med('convert');
	lines.push('| method | runs (s) | median s | data MB/s | t / t(old) | t / t(convert+openssl) | SSH execs | output MiB |');
	lines.push('| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |');
	for (const id of METHOD_ORDER) {
		const list = samples.get(id);
		if (!list?.length) {
			if (id.startsWith('nbd')) lines.push(`| ${TITLES[id]} | not run: ${nbdWhyNot ?? 'skipped'} | | | | | | |`);
			continue;
		}
		const m = med(id);
		const bytes = id.endsWith('-inc') ? CHANGE_MIB * MiB : DATA_BYTES;
		lines.push(
			`| ${TITLES[id]} | ${list.map((s) => fmt(s.seconds)).join(', ')} | **${fmt(m)}** | ${(bytes / 1e6 / m).toFixed(0)} | ${(m / old).toFixed(2)}x | ${(m / convert).toFixed(2)}x | ` +
				`${median(list.map((s) => s.execs))} | ${(median(list.map((s) => s.outputBytes)) / MiB).toFixed(1)} |`,
		);
	}
	lines.push('');
	const oursOff = med('ours-offline');
	const oursLive = med('ours-live');
	const nbdFull = med('nbd-full');
	const oursInc = med('ours-inc');
	const nbdInc = med('nbd-inc');
	const nbd = !Number.isNaN(nbdFull);
	const verdict = (pass: boolean | undefined) => (pass === undefined ? 'n/a' : pass ? 'PASS' : 'FAIL');
	lines.push('## Targets');
	lines.push('');
	lines.push('| target | measured | result |');
	lines.push('| --- | --- | --- |');
	lines.push(`| shut-off backup with sha256 at least 5x faster than the old method | ${fmt(old)} s / ${fmt(oursOff)} s = ${(old / oursOff).toFixed(1)}x faster | ${verdict(old / oursOff >= 5)} |`);
	lines.push(`| shut-off backup within 1.3x of convert + openssl by hand | ${fmt(oursOff)} s / ${fmt(convert)} s = ${(oursOff / convert).toFixed(2)}x | ${verdict(oursOff / convert <= 1.3)} |`);
	lines.push(`| live full backup with sha256 faster than virtnbdbackup full | ${nbd ? `${fmt(oursLive)} s vs ${fmt(nbdFull)} s (${(oursLive / nbdFull).toFixed(2)}x)` : 'virtnbdbackup not run'} | ${verdict(nbd ? oursLive < nbdFull : undefined)} |`);
	lines.push(
		`| incremental after a ${CHANGE_MIB} MiB change in under half of virtnbdbackup's incremental | ${nbd ? `${fmt(oursInc)} s vs ${fmt(nbdInc)} s (${(oursInc / nbdInc).toFixed(2)}x)` : 'virtnbdbackup not run'} | ${verdict(nbd ? oursInc < nbdInc / 2 : undefined)} |`,
	);
	lines.push('');
	lines.push(`Ours, live full vs shut-off full: ${fmt(oursLive)} s vs ${fmt(oursOff)} s (${(oursLive / oursOff).toFixed(2)}x); incremental vs live full: ${fmt(oursInc)} s vs ${fmt(oursLive)} s (${(oursInc / oursLive).toFixed(2)}x).`);
	lines.push('');
	return lines;
}

function breakdown(): string[] {
	const lines: string[] = [
		'## Where our time goes: every SSH exec of the median run',
		'',
		'ms = how long the exec ran; @ = when it started, ms after `backupVm` was called. Overlapping execs ran in parallel on the connection; `lock` is held for the whole backup.',
		'',
	];
	for (const id of ['ours-offline', 'ours-live', 'ours-inc'] as MethodId[]) {
		const list = samples.get(id) ?? [];
		if (!list.length) continue;
		const m = med(id);
		const pick = [...list].sort((a, b) => Math.abs(a.seconds - m) - Math.abs(b.seconds - m))[0];
		lines.push(`${TITLES[id]}: ${fmt(pick.seconds)} s, ${pick.execs} execs`);
		lines.push('');
		lines.push('| # | exec | ms | @ |');
		lines.push('| ---: | --- | ---: | ---: |');
		(pick.execLog ?? []).forEach((r, i) => lines.push(`| ${i + 1} | ${r.label}${r.ok ? '' : ' (ended by release/stop)'} | ${r.ms.toFixed(0)} | ${r.startMs.toFixed(0)} |`));
		lines.push('');
	}
	return lines;
}

function report(meta: { engine: string; date: string; ssh: { execMs: number; connectMs: number }; versions: string; loadStart: string; loadEnd: string; changes: string[]; nbdWhyNot?: string }): string {
	const lines: string[] = [];
	lines.push('# Backup benchmark: results');
	lines.push('');
	lines.push(`${meta.date}. Command (as root on the lab machine): \`bash scripts/lab/up.sh && npx tsx bench/backup.ts${RUNS !== 5 ? ` --runs ${RUNS}` : ''}\` (about 5 minutes).`);
	lines.push('');
	lines.push(`- Engine measured: ${meta.engine}.`);
	lines.push(`- ${diskNote}`);
	lines.push(`- Median of ${RUNS} runs per method, wall clock end to end; methods rotate their order every round; sources read once before timing; after every run its output is removed and \`sync\` runs (untimed).`);
	lines.push(`- Machine: ${os.cpus().length} cores; load average ${meta.loadStart} at start, ${meta.loadEnd} at the end (1/5/15 min; other work shared the machine). ${meta.versions}`);
	lines.push(`- ${sshLine(meta.ssh)}`);
	lines.push('- MB/s = guest data covered / time (1331 MiB for full copies, 16 MiB for incrementals), 1 MB = 10^6 bytes. Ratios are time ratios (0.20x = 5 times faster).');
	lines.push(`- Changes written before the incrementals (${CHANGE_MIB} MiB each, same offset and byte in both VMs): ${meta.changes.join(', ')}.`);
	lines.push('');
	lines.push(...resultTable(meta.nbdWhyNot));
	lines.push('## Checks (untimed)');
	lines.push('');
	for (const note of notes) lines.push(`- ${note}`);
	for (const failure of failures) lines.push(`- FAILED: ${failure}`);
	for (const failure of retried) lines.push(`- Run failure: ${failure}`);
	lines.push('');
	lines.push(...breakdown());
	return lines.join('\n');
}

// ------------------------------------------------------------------------------------------------

async function main(): Promise<void> {
	if (process.getuid?.() !== 0) throw new Error('run as root on the lab machine (it manages VMs and files under /var/lib/lvb-lab)');
	const loadStart = loadAverage();
	const date = new Date().toISOString().replace(/\.\d+Z$/, 'Z');
	const engineStart = engineState();
	teardown();

	const ssh = await SshConnection.connect(labTarget());
	const conn: Conn = { ssh, log: new ExecLog(ssh) };
	const changes: string[] = [];
	let costs = { execMs: NaN, connectMs: NaN };
	let nbdWhyNot: string | undefined;
	let versions = '';
	try {
		costs = await sshCosts(ssh);
		console.error(`per-exec cost: ${costs.execMs.toFixed(1)} ms`);

		const tools = await sh(ssh, 'for t in qemu-img openssl rsync sha256sum virtnbdbackup virtnbdrestore; do command -v "$t" >/dev/null || echo "$t"; done', [], 'tools');
		const missing = tools.split('\n').filter(Boolean);
		if (['qemu-img', 'openssl', 'rsync', 'sha256sum'].some((t) => missing.includes(t))) {
			throw new Error(`missing on the host: ${missing.join(', ')} (apt-get install -y --no-install-recommends rsync openssl qemu-utils)`);
		}
		if (!WANT_NBD) nbdWhyNot = 'skipped (--no-nbd)';
		else if (missing.includes('virtnbdbackup')) nbdWhyNot = 'virtnbdbackup is not installed (apt-get install -y --no-install-recommends virtnbdbackup)';
		const nbd = nbdWhyNot === undefined;
		versions = (
			await sh(
				ssh,
				`echo "kernel $(uname -r);"
echo "$(qemu-img --version | head -1 | cut -d' ' -f1-3);"
echo "libvirtd $(libvirtd --version 2>/dev/null | awk '{print $NF}');"
echo "$(openssl version | cut -d' ' -f1-2);"
echo "$(sha256sum --version | head -1);"
echo "$(rsync --version | head -1 | awk '{print $1, $3}');"
command -v virtnbdbackup >/dev/null && echo "virtnbdbackup $(virtnbdbackup --version 2>&1 | tail -1);"
echo "$(df -T -- "$1" | awk 'NR==2{print $2}') filesystem; domain type $2."`,
				[lab.labDir, lab.domainType],
				'versions',
			)
		)
			.split('\n')
			.filter(Boolean)
			.join(' ');

		console.error('creating the bench VMs...');
		diskNote = await createBenchVms(ssh, { uri: URI, domainType: lab.domainType, dir: IMAGES, vms: [VM, VM_NBD], description: 'n8n-nodes-libvirt-backup bench VM (bench/backup.ts), removed at the end' });
		await sh(ssh, 'mkdir -p -- "$1"', [OUT], 'mkdir');
		console.error(diskNote);

		console.error('shut-off VM:');
		await warm(ssh);
		for (let round = 0; round < RUNS; round++) {
			for (const id of rotate<MethodId>(['ours-offline', 'convert', 'convert-sync', 'convert-psync', 'cp', 'old'], round)) {
				await attempt(id, conn, [`${OUT}/ours-offline`, `${OUT}/${id}.img`], () => runShutOff(id, conn, round === 0 && id === 'ours-offline'));
			}
		}

		console.error('running VMs, full:');
		await sh(ssh, 'uri=$1; shift; for d in "$@"; do virsh -q -c "$uri" start "$d" >/dev/null || exit 1; done', [URI, VM.name, ...(nbd ? [VM_NBD.name] : [])], 'start');
		await warm(ssh);
		for (let round = 0; round < RUNS; round++) {
			for (const id of rotate<MethodId>(nbd ? ['ours-live', 'push', 'nbd-full'] : ['ours-live', 'push'], round)) {
				await attempt(id, conn, [`${OUT}/ours-live`, `${OUT}/push.qcow2`, `${OUT}/nbd-full`], () => runLiveFull(id, conn));
			}
		}

		console.error('running VMs, incremental (untimed base fulls first):');
		await backupVm(ssh, request(VM.name, `${OUT}/ours-chain`, 'full'));
		if (nbd) await sh(ssh, BY_HAND['nbd-full'] as string, [URI, VM_NBD.name, `${OUT}/nbd-chain`], 'nbd-base');
		await settle(ssh, undefined, []);
		let top = '';
		for (let round = 0; round < RUNS; round++) top = await runIncremental(conn, round, nbd, changes);
		await verifyChains(ssh, top, nbd);
	} finally {
		ssh.close();
		if (!KEEP) teardown();
		else console.error(`--keep: bench VMs and ${BENCH} left in place`);
	}
	const engineEnd = engineState();
	if (engineEnd.key !== engineStart.key) notes.push(`lib/ changed during the run (now ${engineEnd.text}); the numbers are for the code loaded at the start`);
	const markdown = report({
		engine: engineStart.text,
		date,
		ssh: costs,
		versions,
		loadStart,
		loadEnd: loadAverage(),
		changes,
		nbdWhyNot,
	});
	console.log(markdown);
	const file = path.join(__dirname, 'results', 'backup-latest.md');
	fs.mkdirSync(path.dirname(file), { recursive: true });
	fs.writeFileSync(file, markdown);
	console.error(`written to ${path.relative(process.cwd(), file)}`);
	if (failures.length > 0) process.exitCode = 1;
}

runBench(main, () => {
	if (!KEEP) teardown();
});
