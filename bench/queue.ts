/**
 * n8n queue mode, 1 worker vs 2 workers on the same batch, run by hand as root on the lab machine:
 *   bash scripts/lab/up.sh && npm run build && npx tsx bench/queue.ts [--runs 2] [--vms 6] [--mib 128]
 *   ... npx tsx bench/queue.ts --fleet [--rtt-ms 50] [--runs 2]
 *
 * `--fleet`: the batch is instead every VM of the lab's 3 fleet hosts (scripts/lab/fleet.sh; one
 * credential, the call's body names the host: Backup VM Disk and Verify Checksum get Host =
 * {{ $json.body.host }}), mode "copy", with `--rtt-ms` of round-trip delay on each host link
 * (scripts/lab/netem.sh), as a fleet far from n8n; worker concurrency 1 only.
 *
 * Setup (untimed): `--vms` throwaway running VMs (`lvb-t-queue-bN-<pid>`, no OS), each a 512 MiB qcow2
 * holding `--mib` MiB of data; a private redis, `n8n start` in queue mode with the shipped
 * workflows/webhook-backup.json (Backup VM Disk -> Verify Checksum -> answer). All VMs are on the one
 * lab host (see `--fleet` for the 3 fleet hosts).
 *
 * Timed, wall clock: the batch = one webhook call per VM (mode "copy": a standalone full that leaves
 * no checkpoint, so every run does the same work), all fired at once, until the last answer. Every
 * answer must be a valid backup. For each worker concurrency (`n8n worker --concurrency`, 1 and 5),
 * 1 worker then 2 workers (order rotates every round); workers are started fresh for each
 * configuration and warmed up (each has run one execution) before timing. Between runs the copies are
 * removed and `sync` runs (untimed). Writes bench/results/queue-latest.md.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { quoteArg as q } from '../lib/shell';
import { vmBackupDir } from '../lib/store';
import { createUserFolder, N8N_VERSION, packPackage, REPO_ROOT, type N8nInstance } from '../test/support/n8n';
import { startQueue, type QueueSetup } from '../test/support/n8nQueue';
import { postWebhook } from '../test/support/n8nRest';
import { SHIPPED_DEST, TOKEN_HEADER } from '../test/support/shipped';
import { fleetLab, fleetSshExec } from '../test/support/lab';
import { fleetCredentialData, labCredentialData } from '../test/support/targets';
import { createTestVm, host, testDestination, type TestVm } from '../test/support/testVm';
import { engineState, loadAverage, median, rotate, runBench } from './lib/host';

const argv = process.argv.slice(2);
const arg = (name: string, fallback: number) => (argv.includes(name) ? Number(argv[argv.indexOf(name) + 1]) : fallback);
const RUNS = arg('--runs', 2);
const VMS = arg('--vms', 6);
const MIB = arg('--mib', 128);
for (const [name, value] of Object.entries({ RUNS, VMS, MIB })) if (!Number.isInteger(value) || value < 1) throw new Error(`${name} must be a positive integer`);
const FLEET = argv.includes('--fleet');
const RTT_MS = arg('--rtt-ms', 50);
if (FLEET && (RTT_MS % 2 !== 0 || RTT_MS < 0)) throw new Error('--rtt-ms must be an even number of milliseconds');
const CONCURRENCIES = FLEET ? [1] : [1, 5];
/** Who the batch backs up: `host` empty = the credential's host. */
const targets: Array<{ name: string; host: string }> = [];
const TOKEN = 'bench-queue-token';
const HOOK = 'libvirt-backup';

interface Config {
	workers: number;
	concurrency: number;
}
interface Run {
	seconds: number;
	/** Backups each worker ran in this batch. */
	perWorker: number[];
}

const vms: TestVm[] = [];
let destination: { dest: string; cleanup(): void } | undefined;
let n8n: N8nInstance | undefined;
let queue: QueueSetup | undefined;

let fleetDest: string | undefined;

function teardown(): void {
	for (const vm of vms) vm.destroy();
	destination?.cleanup();
	if (fleetDest) {
		execFileSync('bash', [path.join(REPO_ROOT, 'scripts', 'lab', 'netem.sh'), 'all', 'off'], { stdio: 'inherit' });
		for (const fleetHost of fleetLab().hosts) fleetSshExec(fleetHost, `rm -rf -- ${q(fleetDest)}`);
		fleetDest = undefined;
	}
}

const key = (config: Config) => `${config.workers}x${config.concurrency}`;

async function warmUp(setup: QueueSetup): Promise<void> {
	// Until every worker has run one execution (loaded the package, opened its first SSH connection).
	for (let attempt = 0; setup.workers.some((worker) => worker.executions().length === 0); attempt++) {
		if (attempt >= 10) throw new Error('a worker took no warm-up execution in 10 tries');
		await Promise.all(Array.from({ length: setup.workers.length * 2 }, () => postWebhook(setup.main.url, HOOK, { [TOKEN_HEADER]: TOKEN }, { vm: `lvb-t-missing-${process.pid}` })));
	}
}

async function batch(setup: QueueSetup, dest: string): Promise<Run> {
	const before = setup.workers.map((worker) => worker.executions().length);
	const started = performance.now();
	const answers = await Promise.all(targets.map((target) => postWebhook(setup.main.url, HOOK, { [TOKEN_HEADER]: TOKEN }, { vm: target.name, host: target.host, mode: 'copy' }, 900_000)));
	const seconds = (performance.now() - started) / 1000;
	for (const [i, answer] of answers.entries()) {
		if (answer.status !== 200 || answer.json?.valid !== true) throw new Error(`backup of ${targets[i].name} failed: HTTP ${answer.status} ${answer.text.slice(0, 1000)}`);
	}
	if (FLEET) for (const fleetHost of fleetLab().hosts) fleetSshExec(fleetHost, `rm -rf ${fleetHost.vms.map((vm) => `${q(vmBackupDir(dest, vm.name))}/*/`).join(' ')} && sync`);
	else host(`rm -rf ${targets.map((target) => `${q(vmBackupDir(dest, target.name))}/*/`).join(' ')} && sync`);
	return { seconds, perWorker: setup.workers.map((worker, i) => worker.executions().length - before[i]) };
}

async function main(): Promise<void> {
	const loadStart = loadAverage();
	let dest: string;
	if (FLEET) {
		const fleet = fleetLab();
		dest = `${fleet.destinationFolder}/bench-queue-${process.pid}`;
		fleetDest = dest;
		for (const fleetHost of fleet.hosts) {
			if (fleetSshExec(fleetHost, `mkdir -p -- ${q(dest)}`).code !== 0) throw new Error(`mkdir on ${fleetHost.name} failed`);
			for (const vm of fleetHost.vms) targets.push({ name: vm.name, host: `${fleetHost.address}:${fleetHost.port}` });
		}
		execFileSync('bash', [path.join(REPO_ROOT, 'scripts', 'lab', 'netem.sh'), 'all', `${RTT_MS / 2}ms`], { stdio: 'inherit' });
	} else {
		destination = testDestination('bench-queue');
		dest = destination.dest;
		for (let i = 1; i <= VMS; i++) vms.push(createTestVm(`queue-b${i}`, [{ target: 'vda', format: 'qcow2', virtualMiB: 512, writes: [{ pattern: 0x40 + i, offsetMiB: 0, lengthMiB: MIB }] }]));
		targets.push(...vms.map((vm) => ({ name: vm.name, host: '' })));
	}
	const tgz = await packPackage();
	n8n = await createUserFolder(tgz);
	const [libvirt, headerAuth] = await n8n.importCredentials([
		{ name: 'Libvirt host', type: 'libvirtSshApi', data: FLEET ? fleetCredentialData() : labCredentialData() },
		{ name: 'Backup webhook token', type: 'httpHeaderAuth', data: { name: TOKEN_HEADER, value: TOKEN } },
	]);
	const workflow = JSON.parse(readFileSync(path.join(REPO_ROOT, 'workflows', 'webhook-backup.json'), 'utf8'));
	if (FLEET) {
		for (const node of workflow.nodes as Array<{ name: string; parameters: Record<string, unknown> }>) {
			if (node.name === 'Backup VM Disk') node.parameters.host = "={{ $json.body.host ?? '' }}";
			if (node.name === 'Verify Checksum') node.parameters.host = '={{ $json.host }}';
		}
	}
	const id = await n8n.importWorkflow(workflow, { REPLACE_CREDENTIAL_ID: libvirt.id, REPLACE_HEADER_AUTH_ID: headerAuth.id, [SHIPPED_DEST]: dest });
	await n8n.publishWorkflow(id);
	queue = await startQueue(n8n, { workers: 0, waitForWebhooks: [`POST ${HOOK}`] });

	const configs: Config[] = CONCURRENCIES.flatMap((concurrency) => [1, 2].map((workers) => ({ workers, concurrency })));
	const runs = new Map<string, Run[]>(configs.map((config) => [key(config), []]));
	for (let round = 0; round < RUNS; round++) {
		for (const config of rotate(configs, round)) {
			for (let w = 0; w < config.workers; w++) await queue.addWorker(config.concurrency);
			await warmUp(queue);
			const run = await batch(queue, dest);
			runs.get(key(config))!.push(run);
			console.log(`round ${round + 1}: ${config.workers} worker(s) x concurrency ${config.concurrency}: ${run.seconds.toFixed(1)} s (backups per worker: ${run.perWorker.join(' + ')})`);
			for (const worker of [...queue.workers]) await queue.removeWorker(worker);
		}
	}

	const rows = configs.map((config) => {
		const list = runs.get(key(config))!;
		const t = median(list.map((run) => run.seconds));
		const one = median(runs.get(key({ workers: 1, concurrency: config.concurrency }))!.map((run) => run.seconds));
		return `| ${config.workers} | ${config.concurrency} | ${list.map((run) => run.seconds.toFixed(1)).join(', ')} | **${t.toFixed(1)}** | ${(t / one).toFixed(2)}x | ${list.map((run) => run.perWorker.join('+')).join(', ')} |`;
	});
	const report = [
		'# Queue mode benchmark: 1 worker vs 2 workers',
		'',
		`${new Date().toISOString().replace(/\.\d+Z$/, 'Z')}. Command (as root on the lab machine): \`bash scripts/lab/up.sh && npm run build && npx tsx bench/queue.ts --runs ${RUNS} ${FLEET ? `--fleet --rtt-ms ${RTT_MS}` : `--vms ${VMS} --mib ${MIB}`}\`.`,
		'',
		`- Engine: ${engineState().text}; n8n ${N8N_VERSION} in queue mode (redis-server on loopback, one \`n8n start\`, workers started fresh per configuration and warmed up), SQLite database shared by main and workers.`,
		FLEET
			? `- Batch: every VM of the lab's ${fleetLab().hosts.length} fleet hosts (${targets.length}: per host one running, one shut off, 64 MiB qcow2 disks), one call of the shipped webhook-backup workflow per VM with Host = the call's host (mode "copy", then Verify Checksum), all fired at once, ${RTT_MS} ms RTT on each host link (scripts/lab/netem.sh); time = wall clock until the last answer; every answer a valid backup. Copies removed between runs (untimed).`
			: `- Batch: ${VMS} running VMs on the ONE lab host, each a 512 MiB qcow2 holding ${MIB} MiB of data; one call of the shipped webhook-backup workflow per VM (mode "copy": Backup VM Disk, push backup-begin, then Verify Checksum), all fired at once; time = wall clock until the last answer; every answer a valid backup. Copies removed and \`sync\` between runs (untimed).`,
		`- Configurations rotate their order every round; ${RUNS} run(s) each.`,
		`- Machine: ${os.cpus().length} cores; load average ${loadStart} at start, ${loadAverage()} at the end (1/5/15 min; other work shared the machine).`,
		'',
		'| workers | concurrency per worker | runs (s) | median s | t / t(1 worker) | backups per worker |',
		'| ---: | ---: | --- | ---: | ---: | --- |',
		...rows,
		'',
	].join('\n');
	const file = FLEET ? 'queue-fleet-latest.md' : 'queue-latest.md';
	writeFileSync(path.join(REPO_ROOT, 'bench', 'results', file), report);
	console.log(`\n${report}\nwritten to bench/results/${file}`);
}

runBench(
	async () => {
		try {
			await main();
		} finally {
			await queue?.stop();
			await n8n?.cleanup();
			teardown();
		}
	},
	teardown,
);
