/**
 * Consolidation benchmark, run by hand as root on the lab machine:
 *   bash scripts/lab/up.sh && npx tsx bench/consolidate.ts [--runs 3] [--keep]
 *
 * Setup (untimed): an OS-less bench VM of our own (`lvb-bench-consolidate`, under
 * /var/lib/lvb-lab/bench-consolidate/, apart from bench/backup.ts's folder so the two can run on one
 * machine) with a 4 GiB virtual qcow2 holding 1331 MiB of random data, running; a live full backup
 * (backupVm), then 6 times: 64 MiB of fresh random data written by the VM's QEMU at random offsets
 * (4 x 16 MiB through the monitor's qemu-io) and an auto backup, which must be an incremental. The
 * newest incremental's folder is copied aside (`cp -a --sparse=always`): consolidation rewrites only
 * that folder, so restoring it after each of our runs (untimed) gives every run, and every method,
 * the same chain to read, in the same files.
 *
 * Timed wall-clock end to end, median of --runs, all in one run on the same chain:
 *   ours:      `consolidateBackup` of the newest incremental (convert of the explicit json: chain
 *              while every chain image is hashed against its manifest, sync, sha256, journal,
 *              rename, manifest), the step Prune runs to close a chain;
 *   by hand:   `qemu-img convert -O qcow2` of the newest incremental (qemu follows the backing
 *              files in the image headers) + `sync` of the copy, and the same + `openssl dgst -sha256`;
 *   the alternative: a fresh live full backup of the running VM (backupVm mode full);
 *   references: the hash of the 7 chain images alone (the cost of our chain check); our build
 *              script with the chain check off; ours' steps by hand in one exec (chain hashed in the
 *              background of the convert, sync, hash), and the same with sync and hash in parallel.
 * Fairness as in bench/backup.ts: one ssh2 connection opened before timing, each by-hand method ONE
 * exec on it; every source read once before timing (warm cache for all); methods rotate their order
 * every round; after every run its output is removed (ours: the folder restored) and `sync` runs,
 * untimed, then every run waits REST_MS before its timer starts (see there why). A run that throws
 * is reported and run once more.
 * Checked once, untimed: our consolidated image equals the newest incremental's chain and the live
 * disk (`qemu-img compare`), has no backing file, and its manifest (kind full) carries its sha256.
 * Prints the tables and writes them to bench/results/consolidate-latest.md.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { backupVm, type BackupMode, type BackupRequest, type BackupResult } from '../lib/backup';
import { newMarker } from '../lib/batch';
import { CONSOLIDATE_SCRIPT, consolidateBackup, layerSpec, listCatalog, type CatalogBackup } from '../lib/catalog';
import { scriptArgv } from '../lib/shell';
import { FULL_PARTIAL_SUFFIX } from '../lib/store/consolidation';
import { SshConnection } from '../lib/ssh';
import { loadLab } from '../test/support/lab';
import { labTarget } from '../test/support/targets';
import { ExecLog, type ExecRecord } from './lib/execLog';
import { MiB, VIRTUAL_MIB, createBenchVms, engineState, loadAverage, median, qemuIo, removeBenchVms, rotate, settle, sh, sshCosts, sshLine, runBench } from './lib/host';

const argv = process.argv.slice(2);
const RUNS = Number(argv.includes('--runs') ? argv[argv.indexOf('--runs') + 1] : 3);
const KEEP = argv.includes('--keep');
if (!Number.isInteger(RUNS) || RUNS < 1) throw new Error('--runs must be a positive integer');

const lab = loadLab();
const URI = lab.systemUri;
const BENCH = `${lab.labDir}/bench-consolidate`;
const IMAGES = `${BENCH}/images`;
const CHAIN = `${BENCH}/chain`;
const PRISTINE = `${BENCH}/pristine-top`;
const OUT = `${BENCH}/out`;
const INCREMENTALS = 6;
const CHUNKS = 4;
const CHUNK_MIB = 16;
const VM = { name: 'lvb-bench-consolidate', disk: `${IMAGES}/lvb-bench-consolidate.qcow2` };

type MethodId = 'ours' | 'convert' | 'convert-hash' | 'full' | 'hash-chain' | 'no-check' | 'steps' | 'steps-psync' | 'convert-hot';
const METHODS: MethodId[] = ['ours', 'convert', 'convert-hot', 'convert-hash', 'full', 'hash-chain', 'no-check', 'steps', 'steps-psync'];
/**
 * Pause before every timed run. This lab machine is a VM whose balloon reports free pages to its
 * host about 2 s after they are freed; writing into such memory again costs host page faults:
 * measured here, `qemu-img convert` writing 1.6 GiB took 0.6-0.7 s (0.4-0.6 s system time) into
 * memory freed just before and 2.5-4 s (2.3-3.3 s system time) after a pause of 2 s or more.
 * Without the pause a method was fast or slow depending on what the previous run freed and when;
 * with it every method starts from the same state. (b0) measures the difference each run.
 */
const REST_MS = 4000;

const TITLES: Record<MethodId, string> = {
	ours: '(a) ours: `consolidateBackup` of the newest incremental (chain hashed against manifests, convert, sync, sha256, journal, rename, manifest)',
	convert: '(b) by hand: `qemu-img convert -O qcow2` of the newest incremental + `sync`',
	'convert-hash': '(b2) by hand: (b) + `openssl dgst -sha256` of the copy',
	full: '(c) ours: fresh live full backup of the running VM (`backupVm` mode full)',
	'hash-chain': '(d) reference: `openssl dgst -sha256` of the 7 chain images alone (our chain check)',
	'no-check': "(e) reference: ours' build step (CONSOLIDATE_SCRIPT: measure, convert, sync, sha256) with the chain check off (no image/sha256 pairs given)",
	steps: "(f) reference: ours' steps by hand, one exec: (d) in the background of the convert, then `sync`, then sha256 of the copy",
	'steps-psync': '(g) reference: (f) with the `sync` of the copy in parallel with its sha256',
	'convert-hot': '(b0) reference: (b) right after an untimed convert whose output was deleted at once (memory not yet returned to the host, see the note)',
};

interface Sample {
	seconds: number;
	execs: number;
	outputBytes: number;
	execLog?: ExecRecord[];
}

interface Conn {
	ssh: SshConnection;
	log: ExecLog;
}

interface Chain {
	top: CatalogBackup;
	/** The top first, down to its full. */
	members: CatalogBackup[];
	/** Image paths, top first. */
	images: string[];
	topImage: string;
}

const samples = new Map<MethodId, Sample[]>();
const notes: string[] = [];
const failures: string[] = [];
const retried: string[] = [];

function record(id: MethodId, sample: Sample): void {
	const list = samples.get(id) ?? [];
	list.push(sample);
	samples.set(id, list);
	console.error(`  ${id.padEnd(13)} ${sample.seconds.toFixed(2).padStart(6)} s  (${sample.execs} exec${sample.execs === 1 ? '' : 's'}, wrote ${(sample.outputBytes / MiB).toFixed(1)} MiB)`);
}

function teardown(): void {
	removeBenchVms(URI, [VM.name], BENCH);
}

function request(dest: string, mode: BackupMode): BackupRequest {
	return { uri: URI, vm: VM.name, dest, mode, compression: 'none', quiesce: 'auto', holder: `bench/consolidate.ts ${process.pid}`, host: 'lab' };
}

// ------------------------------------------------------------------------------------------------
// Setup (untimed)

/** CHUNKS x CHUNK_MIB of fresh random data at random 1 MiB-aligned offsets, written by the VM's QEMU. */
async function guestChange(ssh: SshConnection): Promise<string[]> {
	const where: string[] = [];
	const source = `${IMAGES}/change.bin`;
	for (let i = 0; i < CHUNKS; i++) {
		const offsetMiB = Math.floor(Math.random() * (VIRTUAL_MIB - CHUNK_MIB));
		await sh(ssh, 'head -c "$2" /dev/urandom >"$1"', [source, String(CHUNK_MIB * MiB)], 'random');
		await qemuIo(ssh, URI, VM.name, `write -s ${source} ${offsetMiB}M ${CHUNK_MIB}M`);
		where.push(`${offsetMiB}`);
	}
	await sh(ssh, 'rm -f -- "$1"', [source], 'rm');
	return where;
}

async function buildChain(ssh: SshConnection, changes: string[]): Promise<Chain> {
	await sh(ssh, 'virsh -q -c "$1" start "$2" >/dev/null', [URI, VM.name], 'start');
	const full = await backupVm(ssh, request(CHAIN, 'full'));
	if (full.kind !== 'full' || full.method !== 'push') throw new Error(`base backup: got ${full.kind}/${full.method}`);
	let parent: BackupResult = full;
	for (let i = 0; i < INCREMENTALS; i++) {
		changes.push(`${(await guestChange(ssh)).join(', ')} MiB`);
		const inc = await backupVm(ssh, request(CHAIN, 'auto'));
		if (inc.kind !== 'incremental' || inc.parent !== parent.id) throw new Error(`backup ${i + 2}: got ${inc.kind} on ${inc.parent ?? 'nothing'} (${inc.warnings.join('; ')})`);
		parent = inc;
	}
	const catalog = await listCatalog(ssh, CHAIN, { vmNames: [VM.name] });
	const byId = new Map(catalog.backups.map((backup) => [backup.id, backup]));
	const members: CatalogBackup[] = [];
	for (let member = byId.get(parent.id); member; member = member.manifest.parent ? byId.get(member.manifest.parent) : undefined) members.push(member);
	const kinds = members.map((member) => member.manifest.kind);
	if (members.length !== INCREMENTALS + 1 || kinds.slice(0, -1).some((kind) => kind !== 'incremental') || kinds[kinds.length - 1] !== 'full') {
		throw new Error(`the catalog's chain is ${kinds.join(' <- ')}`);
	}
	const images = members.map((member) => `${member.path}/${member.manifest.disks[0].file}`);
	const top = members[0];
	await sh(ssh, 'cp -a --sparse=always -- "$1" "$2" && sync', [top.path, PRISTINE], 'pristine');
	const sizes = members
		.map((member) => `${member.manifest.kind} ${(member.manifest.disks[0].bytes / MiB).toFixed(1)} MiB`)
		.reverse()
		.join(', ');
	notes.push(`The chain (oldest first, image sizes): ${sizes}.`);
	return { top, members, images, topImage: images[0] };
}

/** Untimed: puts the newest incremental's folder back as it was before consolidation. */
async function restoreTop(ssh: SshConnection, chain: Chain): Promise<void> {
	await sh(ssh, 'rm -rf -- "$2" && cp -a --sparse=always -- "$1" "$2" && sync', [PRISTINE, chain.top.path], 'restore');
}

async function warm(ssh: SshConnection, chain: Chain): Promise<void> {
	await sh(ssh, 'for f in "$@"; do cat -- "$f" >/dev/null; done', [VM.disk, ...chain.images], 'warm');
}

// ------------------------------------------------------------------------------------------------
// Methods

const BY_HAND: Partial<Record<MethodId, string>> = {
	convert: 'qemu-img convert -O qcow2 "$1" "$2" && sync "$2"',
	'convert-hot': 'qemu-img convert -O qcow2 "$1" "$2" && sync "$2"',
	'convert-hash': 'qemu-img convert -O qcow2 "$1" "$2" && sync "$2" && openssl dgst -sha256 "$2"',
	'hash-chain': 'openssl dgst -sha256 -- "$@"',
	steps: `top=$1 out=$2; shift 2
openssl dgst -sha256 -- "$@" >/dev/null &
checker=$!
qemu-img convert -O qcow2 "$top" "$out" || exit 1
wait $checker || exit 1
sync "$out" && openssl dgst -sha256 "$out"`,
	'steps-psync': `top=$1 out=$2; shift 2
openssl dgst -sha256 -- "$@" >/dev/null &
checker=$!
qemu-img convert -O qcow2 "$top" "$out" || exit 1
wait $checker || exit 1
sync "$out" &
syncer=$!
openssl dgst -sha256 "$out" && wait $syncer`,
};

async function byHand(conn: Conn, id: MethodId, args: string[]): Promise<number> {
	const started = performance.now();
	await sh(conn.ssh, BY_HAND[id] as string, args, id);
	return (performance.now() - started) / 1000;
}

async function timed<T>(conn: Conn, run: () => Promise<T>): Promise<{ value: T; seconds: number; execs: number; execLog: ExecRecord[] }> {
	const before = conn.ssh.execCount;
	conn.log.mark();
	const started = performance.now();
	const value = await run();
	const seconds = (performance.now() - started) / 1000;
	return { value, seconds, execs: conn.ssh.execCount - before, execLog: conn.log.take() };
}

async function runMethod(id: MethodId, conn: Conn, chain: Chain, verify: boolean): Promise<void> {
	const { ssh } = conn;
	await new Promise((resolve) => setTimeout(resolve, REST_MS));
	if (id === 'convert-hot') await sh(ssh, 'qemu-img convert -O qcow2 "$1" "$2" && rm -f -- "$2"', [chain.topImage, `${OUT}/hot.qcow2`], 'pre-step');
	if (id === 'ours') {
		const run = await timed(conn, () => consolidateBackup(ssh, chain.top, chain.members, { now: new Date() }));
		if (run.value.kind !== 'full' || run.value.parent !== undefined) throw new Error(`ours: the consolidated manifest is ${run.value.kind} on ${run.value.parent}`);
		const outputBytes = await settle(ssh, chain.topImage, []);
		if (verify) await verifyOurs(ssh, chain, run.value.disks[0].sha256);
		await restoreTop(ssh, chain);
		record(id, { seconds: run.seconds, execs: run.execs, outputBytes, execLog: run.execLog });
	} else if (id === 'full') {
		const dest = `${OUT}/full`;
		const run = await timed(conn, () => backupVm(ssh, request(dest, 'full')));
		if (run.value.kind !== 'full' || run.value.method !== 'push') throw new Error(`fresh full: got ${run.value.kind}/${run.value.method}`);
		record(id, { seconds: run.seconds, execs: run.execs, outputBytes: await settle(ssh, run.value.path, [dest]), execLog: run.execLog });
	} else if (id === 'no-check') {
		const disk = chain.top.manifest.disks[0];
		const started = performance.now();
		await ssh.run(scriptArgv(CONSOLIDATE_SCRIPT, 'lvb-consolidate', [newMarker(), chain.top.path, '1', disk.file, layerSpec(chain.top, disk, chain.members)]), { label: 'consolidate, no chain check' });
		const seconds = (performance.now() - started) / 1000;
		const partial = `${chain.topImage}${FULL_PARTIAL_SUFFIX}`;
		record(id, { seconds, execs: 1, outputBytes: await settle(ssh, partial, [partial]) });
	} else if (id === 'hash-chain') {
		record(id, { seconds: await byHand(conn, id, chain.images), execs: 1, outputBytes: 0 });
	} else {
		const out = `${OUT}/${id}.qcow2`;
		const seconds = await byHand(conn, id, id.startsWith('steps') ? [chain.topImage, out, ...chain.images] : [chain.topImage, out]);
		record(id, { seconds, execs: 1, outputBytes: await settle(ssh, out, [out]) });
	}
}

/** Runs one timed run; if it throws, reports it, puts the chain and OUT back and tries once more. */
async function attempt(id: MethodId, conn: Conn, chain: Chain, run: () => Promise<void>): Promise<void> {
	try {
		await run();
	} catch (error) {
		const message = (error as Error).message.split('\n')[0];
		retried.push(`${id} failed once and was run again: ${message}`);
		console.error(`  ${id} FAILED (${message}); running it again`);
		await settle(conn.ssh, undefined, [OUT]);
		await sh(conn.ssh, 'mkdir -p -- "$1"', [OUT], 'mkdir');
		await restoreTop(conn.ssh, chain);
		await run();
	}
}

// ------------------------------------------------------------------------------------------------
// Correctness checks (untimed)

/**
 * With our consolidated image in place: moved aside, the folder restored, then compared with the
 * newest incremental as qemu opens it (through its header's backing chain) and with the live disk.
 */
async function verifyOurs(ssh: SshConnection, chain: Chain, sha256: string): Promise<void> {
	const rebuilt = `${OUT}/consolidated.qcow2`;
	const manifest = JSON.parse(await sh(ssh, 'cat -- "$1"', [`${chain.top.path}/manifest.json`], 'verify')) as { kind: string; parent?: string; disks: { sha256: string }[] };
	const out = await sh(
		ssh,
		`img=$1 rebuilt=$2
echo "backing $(qemu-img info -f qcow2 --output=json -- "$img" | grep -c '"backing-filename"')"
echo "sha $(openssl dgst -sha256 -r -- "$img" | cut -d' ' -f1)"
mv -- "$img" "$rebuilt"`,
		[chain.topImage, rebuilt],
		'verify',
	);
	await restoreTop(ssh, chain);
	await qemuIo(ssh, URI, VM.name, 'flush');
	const compare = await sh(
		ssh,
		`rebuilt=$1 top=$2 live=$3
echo "layers $(qemu-img info --backing-chain -- "$top" | grep -c '^image:')"
qemu-img compare -f qcow2 -F qcow2 -- "$rebuilt" "$top" >/dev/null 2>&1; echo "chain $?"
qemu-img compare -U -f qcow2 -F qcow2 -- "$rebuilt" "$live" >/dev/null 2>&1; echo "live $?"
rm -f -- "$rebuilt"`,
		[rebuilt, chain.topImage, VM.disk],
		'verify',
	);
	const field = (text: string, key: string) => new RegExp(`^${key} (.*)$`, 'm').exec(text)?.[1];
	const fileSha = field(out, 'sha');
	const checks = {
		manifest: manifest.kind === 'full' && manifest.parent === undefined && manifest.disks[0].sha256 === fileSha && sha256 === fileSha,
		standalone: field(out, 'backing') === '0',
		chain: field(compare, 'chain') === '0',
		live: field(compare, 'live') === '0',
	};
	notes.push(
		`ours, consolidated image: vs the newest incremental opened through its own backing chain (${field(compare, 'layers')} images), \`qemu-img compare\`: ${checks.chain ? 'identical' : 'DIFFERENT'}; ` +
			`vs the live disk (\`-U\`): ${checks.live ? 'identical' : 'DIFFERENT'}; backing file: ${checks.standalone ? 'none' : 'STILL THERE'}; ` +
			`manifest: ${checks.manifest ? 'kind full, sha256 matches the file' : `WRONG (kind ${manifest.kind}, parent ${manifest.parent}, manifest sha256 ${manifest.disks[0].sha256}, file ${fileSha})`}.`,
	);
	for (const [what, ok] of Object.entries(checks)) if (!ok) failures.push(`consolidated image check failed: ${what}`);
}

// ------------------------------------------------------------------------------------------------
// Report

const fmt = (seconds: number) => seconds.toFixed(2);
const med = (id: MethodId) => {
	const list = samples.get(id);
	return list?.length ? median(list.map((s) => s.seconds)) : NaN;
};

function resultTable(): string[] {
	const convert = med('convert');
	const full = med('full');
	const lines = ['| method | runs (s) | median s | t / t(b) | t / t(c) | SSH execs | output MiB |', '| --- | --- | ---: | ---: | ---: | ---: | ---: |'];
	for (const id of METHODS) {
		const list = samples.get(id);
		if (!list?.length) continue;
		const m = med(id);
		lines.push(
			`| ${TITLES[id]} | ${list.map((s) => fmt(s.seconds)).join(', ')} | **${fmt(m)}** | ${(m / convert).toFixed(2)}x | ${(m / full).toFixed(2)}x | ` +
				`${median(list.map((s) => s.execs))} | ${id === 'hash-chain' ? '-' : (median(list.map((s) => s.outputBytes)) / MiB).toFixed(1)} |`,
		);
	}
	const ours = med('ours');
	// The build exec of each of our runs (the commit exec after it is a fraction of a second).
	const build = median((samples.get('ours') ?? []).map((s) => (s.execLog ?? []).find((r) => r.label.startsWith('consolidating'))?.ms ?? NaN)) / 1000;
	lines.push('');
	lines.push(
		`Ours / convert by hand: ${fmt(ours)} s / ${fmt(convert)} s = **${(ours / convert).toFixed(2)}x**; ours / convert + sha256 by hand: ${(ours / med('convert-hash')).toFixed(2)}x; ` +
			`ours / fresh full backup: ${fmt(ours)} s / ${fmt(full)} s = **${(ours / full).toFixed(2)}x**. ` +
			`The chain check alone (d) takes ${fmt(med('hash-chain'))} s. Ours' build exec (median ${fmt(build)} s) vs the same script without the chain check (e): ${fmt(med('no-check'))} s. Ours' steps by hand (f): ${fmt(med('steps'))} s = ${(med('steps') / med('convert-hash')).toFixed(2)}x (b2); with sync and sha256 of the copy in parallel (g): ${fmt(med('steps-psync'))} s.`,
	);
	lines.push('');
	return lines;
}

function breakdown(): string[] {
	const lines = ['## Where our time goes: every SSH exec of the median run', '', 'ms = how long the exec ran; @ = when it started, ms after the call.', ''];
	for (const id of ['ours', 'full'] as MethodId[]) {
		const list = samples.get(id) ?? [];
		if (!list.length) continue;
		const m = med(id);
		const pick = [...list].sort((a, b) => Math.abs(a.seconds - m) - Math.abs(b.seconds - m))[0];
		lines.push(`${TITLES[id]}: ${fmt(pick.seconds)} s, ${pick.execs} execs`, '', '| # | exec | ms | @ |', '| ---: | --- | ---: | ---: |');
		(pick.execLog ?? []).forEach((r, i) => lines.push(`| ${i + 1} | ${r.label.replace(/\/var\/lib\/\S+/g, '<folder>')}${r.ok ? '' : ' (ended by release/stop)'} | ${r.ms.toFixed(0)} | ${r.startMs.toFixed(0)} |`));
		lines.push('');
	}
	return lines;
}

function report(meta: { engine: string; date: string; ssh: { execMs: number; connectMs: number }; versions: string; loadStart: string; loadEnd: string; diskNote: string; changes: string[] }): string {
	const lines: string[] = [];
	lines.push('# Consolidation benchmark: results', '');
	lines.push(`${meta.date}. Command (as root on the lab machine): \`bash scripts/lab/up.sh && npx tsx bench/consolidate.ts${RUNS !== 3 ? ` --runs ${RUNS}` : ''}\`.`, '');
	lines.push(`- Engine measured: ${meta.engine}.`);
	lines.push(`- ${meta.diskNote}`);
	lines.push(
		`- The chain: a live full backup of the running VM, then ${INCREMENTALS} x (${CHUNKS * CHUNK_MIB} MiB of fresh random data written by the VM's QEMU, ${CHUNKS} x ${CHUNK_MIB} MiB at random offsets, then an auto backup = incremental). ` +
			`Offsets per incremental: ${meta.changes.join('; ')}.`,
	);
	lines.push(
		`- Median of ${RUNS} runs per method, wall clock end to end; methods rotate their order every round; sources read once before timing; after every run its output is removed ` +
			`(ours: the newest incremental's folder is put back from a copy) and \`sync\` runs (untimed).`,
	);
	lines.push(`- Machine: ${os.cpus().length} cores; load average ${meta.loadStart} at start, ${meta.loadEnd} at the end (1/5/15 min; other work shared the machine). ${meta.versions}`);
	lines.push(`- ${sshLine(meta.ssh)}`);
	lines.push(
		`- Every timed run starts ${REST_MS / 1000} s after the untimed clean-up before it: this machine is a VM whose balloon returns freed memory to its host ~2 s after it is freed, ` +
			`and writing into that memory again costs host page faults (what (b0) vs (b) shows); the pause gives every method the same state. A host without that pays less for every method that writes.`,
	);
	lines.push('- t / t(b): time ratio to convert + sync by hand; t / t(c): to a fresh full backup (0.50x = twice as fast).', '');
	lines.push(...resultTable());
	lines.push('## Checks (untimed)', '');
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
	let versions = '';
	let diskNote = '';
	try {
		costs = await sshCosts(ssh);
		console.error(`per-exec cost: ${costs.execMs.toFixed(1)} ms`);
		const free = Number((await sh(ssh, 'df -P -B1 -- "$1" | awk \'NR == 2 { print $4 }\'', [lab.labDir], 'df')).trim());
		if (free < 10 * 1024 * MiB) throw new Error(`${lab.labDir} has ${(free / 1024 / MiB).toFixed(1)} GiB free; the benchmark needs 10 GiB`);
		const missing = (await sh(ssh, 'for t in qemu-img openssl; do command -v "$t" >/dev/null || echo "$t"; done', [], 'tools')).trim();
		if (missing) throw new Error(`missing on the host: ${missing} (apt-get install -y --no-install-recommends openssl qemu-utils)`);
		versions = (
			await sh(
				ssh,
				`echo "kernel $(uname -r);"
echo "$(qemu-img --version | head -1 | cut -d' ' -f1-3);"
echo "libvirtd $(libvirtd --version 2>/dev/null | awk '{print $NF}');"
echo "$(openssl version | cut -d' ' -f1-2);"
echo "$(df -T -- "$1" | awk 'NR==2{print $2}') filesystem; domain type $2."`,
				[lab.labDir, lab.domainType],
				'versions',
			)
		)
			.split('\n')
			.filter(Boolean)
			.join(' ');

		console.error('creating the bench VM and its chain...');
		diskNote = await createBenchVms(ssh, { uri: URI, domainType: lab.domainType, dir: IMAGES, vms: [VM], description: 'n8n-nodes-libvirt-backup bench VM (bench/consolidate.ts), removed at the end' });
		await sh(ssh, 'mkdir -p -- "$1"', [OUT], 'mkdir');
		const chain = await buildChain(ssh, changes);
		await settle(ssh, undefined, []);
		console.error(diskNote);
		console.error(notes.join('\n'));

		await warm(ssh, chain);
		for (let round = 0; round < RUNS; round++) {
			for (const id of rotate(METHODS, round)) await attempt(id, conn, chain, () => runMethod(id, conn, chain, round === 0 && id === 'ours'));
		}
	} finally {
		ssh.close();
		if (!KEEP) teardown();
		else console.error(`--keep: the bench VM and ${BENCH} left in place`);
	}
	const engineEnd = engineState();
	if (engineEnd.key !== engineStart.key) notes.push(`lib/ changed during the run (now ${engineEnd.text}); the numbers are for the code loaded at the start`);
	const markdown = report({ engine: engineStart.text, date, ssh: costs, versions, loadStart, loadEnd: loadAverage(), diskNote, changes });
	console.log(markdown);
	const file = path.join(__dirname, 'results', 'consolidate-latest.md');
	fs.mkdirSync(path.dirname(file), { recursive: true });
	fs.writeFileSync(file, markdown);
	console.error(`written to ${path.relative(process.cwd(), file)}`);
	if (failures.length > 0) process.exitCode = 1;
}

runBench(main, () => {
	if (!KEEP) teardown();
});
