/**
 * n8n in queue mode (issue 12): a private redis, `n8n start` (main) and two `n8n worker` processes
 * on one user folder, running the shipped webhook-backup and export-download workflows against the
 * lab. What is checked:
 *   a. six backup calls at once (three VMs, two calls each) spread over both workers: every call
 *      answers; every backup made is valid; a call that met a VM another worker was backing up is
 *      refused (422) naming the execution that holds the lock; no VM was backed up twice at once.
 *   b. the worker running a backup killed (SIGKILL) mid-copy: the host aborts the orphaned job, the VM
 *      and the store are consistent, and the next call (served by the other worker) succeeds.
 *      What the caller of the killed run sees is n8n's doing, measured and logged.
 *   c. Export Archive's streamed response refuses queue mode with a clear error (HTTP 500 + reason);
 *      to n8n binary data (database mode, queue mode's default) + Respond to Webhook it downloads.
 */
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, promises as fs, readdirSync, readFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { quoteArg as q } from '../../lib/shell';
import { vmBackupDir } from '../../lib/store';
import { growingPartial, measureAfterFault, waitForHostWorkToEnd, type FaultCounts } from '../support/afterFault';
import { labBackup } from '../support/labBackup';
import { createUserFolder, packPackage, REPO_ROOT, type N8nInstance } from '../support/n8n';
import { startQueue, type QueueSetup } from '../support/n8nQueue';
import { N8nRest, postWebhook, type WebhookAnswer } from '../support/n8nRest';
import { SHIPPED_DEST, TOKEN_HEADER } from '../support/shipped';
import { fleetCredentialData, labCredentialData } from '../support/targets';
import { fleetLab, fleetSshExec } from '../support/lab';
import { createTestVm, host, testDestination, type TestVm } from '../support/testVm';
import { record } from '../faults/ledger';

jest.setTimeout(300_000);

const BACKUP_WORKFLOW_NAME = 'Libvirt: back up one VM on request (webhook)';
const BACKUP_HOOK = 'libvirt-backup';
const EXPORT_HOOK = 'libvirt-export';
const EXPORT_BINARY_HOOK = 'libvirt-export-bin';
const FLEET_HOOK = 'libvirt-fleet';
const FLEET_BACKUP_HOOK = 'libvirt-fleet-backup';
const token = randomBytes(18).toString('hex');
/** Bull's job lock and stalled-check interval for this suite (n8n's defaults: 60 s and 30 s). */
const STALL = { lockMs: 20_000, checkMs: 10_000 };
const auth = { [TOKEN_HEADER]: token };

let n8n: N8nInstance | undefined;
let queue: QueueSetup | undefined;
let rest: N8nRest;
let backupWorkflowId: string;
let destination: { dest: string; cleanup(): void };
/** This suite's folder under the fleet lab's destination (the same path on each fleet host). */
let fleetDest: string | undefined;
const vms: TestVm[] = [];

function log(line: string): void {
	process.stdout.write(`[queue] ${line}\n`);
}

function setup(): QueueSetup {
	if (!queue) throw new Error('queue mode is not running');
	return queue;
}

/** A throwaway running VM: `writtenMiB` of data in a 512 MiB qcow2 (what makes its backup take a while). */
function testVm(purpose: string, writtenMiB: number): TestVm {
	const vm = createTestVm(purpose, [{ target: 'vda', format: 'qcow2', virtualMiB: Math.max(512, 2 * writtenMiB), writes: [{ pattern: 0x3c, offsetMiB: 0, lengthMiB: writtenMiB }] }]);
	vms.push(vm);
	return vm;
}

const backupRequest = (vm: Pick<TestVm, 'name'>, mode: string) => postWebhook(setup().main.url, BACKUP_HOOK, auth, { vm: vm.name, mode });

function logs(): string {
	const { main, workers } = setup();
	return [`--- main (tail) ---\n${main.log().slice(-3000)}`, ...workers.map((worker) => `--- worker ${worker.label} (tail) ---\n${worker.log().slice(-3000)}`)].join('\n');
}

/** The answer of a run that must have succeeded: the backup, verified valid by the workflow's Verify Checksum. */
function succeeded(answer: WebhookAnswer): { id: string; path: string; kind: string; parent: string | null; warnings: string[] } {
	if (answer.status !== 200 || answer.json?.ok !== true || answer.json.valid !== true) throw new Error(`backup run failed: HTTP ${answer.status} ${answer.text.slice(0, 2000)}\n${logs()}`);
	const json = answer.json;
	return { id: String(json.id), path: String(json.path), kind: String(json.kind), parent: (json.parent as string | null) ?? null, warnings: (json.warnings as string[]) ?? [] };
}


/** Start and end of every backup of `vm` on the host, from the manifests, in start order. */
function backupIntervals(vm: TestVm): Array<{ id: string; start: number; end: number }> {
	const dir = vmBackupDir(destination.dest, vm.name);
	const text = host(`for m in ${q(dir)}/*/manifest.json; do [ -f "$m" ] && cat "$m" && echo; done; true`);
	return text
		.split(/\n(?=\{)/)
		.map((part) => part.trim())
		.filter(Boolean)
		.map((part) => JSON.parse(part) as { id: string; startedAt: string; finishedAt: string })
		.map((manifest) => ({ id: manifest.id, start: Date.parse(manifest.startedAt), end: Date.parse(manifest.finishedAt) }))
		.sort((x, y) => x.start - y.start);
}

/** The shipped download workflow the queue-mode way: Export Archive to n8n binary data, sent by Respond to Webhook. */
function exportToBinaryData(): Record<string, unknown> {
	const workflow = JSON.parse(readFileSync(path.join(REPO_ROOT, 'workflows', 'export-download.json'), 'utf8'));
	delete workflow.id;
	for (const node of workflow.nodes as Array<{ type: string; name: string; parameters: Record<string, unknown>; webhookId?: string }>) {
		if (node.type === 'n8n-nodes-base.webhook') Object.assign(node, { webhookId: '8d0c2a57-64f1-4c3e-9b1a-2f6e0d4c7b99', parameters: { ...node.parameters, path: EXPORT_BINARY_HOOK } });
		if (node.name === 'Export Archive') node.parameters.target = 'binary';
	}
	workflow.nodes.push({ id: '00000000-0000-4000-8000-0000000000b1', name: 'Send the archive', type: 'n8n-nodes-base.respondToWebhook', typeVersion: 1.1, position: [880, -100], parameters: { respondWith: 'binary', options: {} } });
	workflow.connections['Export Archive'] = { main: [[{ node: 'Send the archive', type: 'main', index: 0 }], [{ node: 'Answer the error', type: 'main', index: 0 }]] };
	workflow.name = 'Export to n8n binary data (queue e2e)';
	return workflow;
}

/** The shipped fleet workflow started by a webhook (so a worker runs it), answering with its fleet report; no chat or email. */
function fleetByWebhook(): Record<string, unknown> {
	const workflow = JSON.parse(readFileSync(path.join(REPO_ROOT, 'workflows', 'fleet-backup.json'), 'utf8'));
	workflow.name = 'Fleet backup (queue e2e)';
	const hosts = fleetLab().hosts.map((host) => ({ json: { host: `${host.address}:${host.port}` } }));
	workflow.nodes = (workflow.nodes as Array<{ name: string; parameters: Record<string, unknown> }>).filter((node) => !/^(Chat|Email): /.test(node.name) && node.name !== 'Run now' && node.name !== 'Every night at 02:00');
	for (const node of workflow.nodes) if (node.name === 'Fleet hosts') node.parameters.jsCode = `return ${JSON.stringify(hosts)};`;
	workflow.nodes.push(
		{ id: '00000000-0000-4000-8000-0000000000f1', name: 'Fleet backup requested', type: 'n8n-nodes-base.webhook', typeVersion: 2, position: [0, 0], webhookId: '5f0c7a41-2d3e-4b6f-9a81-7c2e4d9b1f20', parameters: { httpMethod: 'POST', path: FLEET_HOOK, authentication: 'headerAuth', responseMode: 'responseNode', options: {} }, credentials: { httpHeaderAuth: { id: 'REPLACE_HEADER_AUTH_ID', name: 'Backup webhook token' } } },
		{ id: '00000000-0000-4000-8000-0000000000f2', name: 'Send the report', type: 'n8n-nodes-base.respondToWebhook', typeVersion: 1.1, position: [2000, -100], parameters: { respondWith: 'firstIncomingItem', options: {} } },
	);
	delete workflow.connections['Run now'];
	delete workflow.connections['Every night at 02:00'];
	workflow.connections['Fleet backup requested'] = { main: [[{ node: 'Fleet hosts', type: 'main', index: 0 }]] };
	workflow.connections['Fleet report'] = { main: [[{ node: 'Send the report', type: 'main', index: 0 }]] };
	return workflow;
}

/** The shipped webhook-backup workflow on the fleet credential (so on the first fleet host), at its own path. */
function fleetWebhookBackup(): Record<string, unknown> {
	const workflow = JSON.parse(readFileSync(path.join(REPO_ROOT, 'workflows', 'webhook-backup.json'), 'utf8'));
	workflow.name = 'Back up one VM of fleet host 1 (queue e2e)';
	for (const node of workflow.nodes as Array<{ type: string; parameters: Record<string, unknown>; webhookId?: string; credentials?: Record<string, { id: string }> }>) {
		if (node.type === 'n8n-nodes-base.webhook') Object.assign(node, { webhookId: '9a3e5c17-0b2d-4e8f-a6c4-3d1f7b2e8c05', parameters: { ...node.parameters, path: FLEET_BACKUP_HOOK } });
		if (node.credentials?.libvirtSshApi) node.credentials.libvirtSshApi.id = 'REPLACE_FLEET_CREDENTIAL_ID';
	}
	return workflow;
}

beforeAll(async () => {
	destination = testDestination('queue');
	const tgz = await packPackage();
	n8n = await createUserFolder(tgz);
	await fs.rm(path.dirname(tgz), { recursive: true, force: true });
	const [libvirt, headerAuth, fleetCredential] = await n8n.importCredentials([
		{ name: 'Libvirt host', type: 'libvirtSshApi', data: labCredentialData() },
		{ name: 'Backup webhook token', type: 'httpHeaderAuth', data: { name: TOKEN_HEADER, value: token } },
		{ name: 'Libvirt fleet', type: 'libvirtSshApi', data: fleetCredentialData() },
	]);
	const replace = { REPLACE_CREDENTIAL_ID: libvirt.id, REPLACE_HEADER_AUTH_ID: headerAuth.id, [SHIPPED_DEST]: destination.dest };
	fleetDest = `${fleetLab().destinationFolder}/queue-${process.pid}`;
	for (const fleetHost of fleetLab().hosts) expect(fleetSshExec(fleetHost, `mkdir -p -- ${q(fleetDest)}`).code).toBe(0);
	const fleetReplace = { REPLACE_CREDENTIAL_ID: fleetCredential.id, REPLACE_FLEET_CREDENTIAL_ID: fleetCredential.id, REPLACE_HEADER_AUTH_ID: headerAuth.id, [SHIPPED_DEST]: fleetDest };
	const ids = await n8n.importWorkflows([
		{ workflow: path.join(REPO_ROOT, 'workflows', 'webhook-backup.json'), replace },
		{ workflow: path.join(REPO_ROOT, 'workflows', 'export-download.json'), replace },
		{ workflow: exportToBinaryData(), replace },
		{ workflow: fleetByWebhook(), replace: fleetReplace },
		{ workflow: fleetWebhookBackup(), replace: fleetReplace },
	]);
	for (const id of ids) await n8n.publishWorkflow(id);
	backupWorkflowId = ids[0];
	// Three slots per worker: six calls at once need both workers.
	// n8n notices a dead worker's job when its Bull lock runs out and a stalled check runs: with the
	// defaults (60 s lock, 30 s check) that took 96-139 s here; shorter here to keep the suite short.
	const env = { QUEUE_WORKER_LOCK_DURATION: String(STALL.lockMs), QUEUE_WORKER_LOCK_RENEW_TIME: String(STALL.lockMs / 4), QUEUE_WORKER_STALLED_INTERVAL: String(STALL.checkMs) };
	queue = await startQueue(n8n, { workers: 2, concurrency: 3, env, waitForWebhooks: [`POST ${BACKUP_HOOK}`, EXPORT_HOOK, EXPORT_BINARY_HOOK, `POST ${FLEET_HOOK}`, `POST ${FLEET_BACKUP_HOOK}`] });
	rest = await N8nRest.ownerSetup(queue.main);
	// Each worker's first execution loads the package and opens its first SSH connection: done here
	// (six calls, so both workers get some), so the calls under test start together.
	const missing = `lvb-t-missing-${process.pid}`;
	const warmUps = await Promise.all(Array.from({ length: 6 }, () => backupRequest({ name: missing }, 'auto')));
	for (const answer of warmUps) expect([answer.status, String(answer.json?.error)]).toEqual([422, expect.stringContaining(`VM not found: ${missing}`)]);
	log(`warm-up: executions per worker ${queue.workers.map((worker) => `${worker.label}=${worker.executions().length}`).join(', ')}`);
}, 10 * 60_000);

afterAll(async () => {
	await queue?.stop();
	await n8n?.cleanup();
	for (const vm of vms) vm.destroy();
	destination?.cleanup();
	if (fleetDest) for (const fleetHost of fleetLab().hosts) fleetSshExec(fleetHost, `rm -rf -- ${q(fleetDest)}`);
});

test('six backup calls at once for three VMs over two workers: each VM backed up by one at a time, the other call refused naming the lock holder, every backup valid', async () => {
	const { workers } = setup();
	const targets = [testVm('q-a', 96), testVm('q-b', 96), testVm('q-c', 96)];
	const before = workers.map((worker) => worker.executions().length);

	const calls = targets.flatMap((vm) => [vm, vm]);
	const answers = await Promise.all(calls.map((vm) => backupRequest(vm, 'full')));

	const taken = workers.map((worker, i) => worker.executions().slice(before[i]));
	log(`executions taken: ${workers.map((worker, i) => `${worker.label}: ${taken[i].join(', ') || 'none'}`).join('; ')}`);
	const made: string[] = [];
	let refused = 0;
	for (const [i, answer] of answers.entries()) {
		const vm = calls[i];
		log(`${vm.name}: HTTP ${answer.status} after ${answer.ms} ms: ${answer.text.slice(0, 300)}`);
		if (answer.status === 200) {
			made.push(succeeded(answer).path);
			continue;
		}
		// The lock's holder is the other call's execution, which a worker logged taking.
		expect(answer.status).toBe(422);
		expect(answer.json).toMatchObject({ ok: false, reason: 'failed', vm: vm.name });
		const error = String(answer.json?.error);
		const holder = /is locked by n8n execution (\d+) \(workflow "([^"]*)"\)/.exec(error);
		expect(error).toBe(`VM "${vm.name}" is locked by n8n execution ${holder?.[1]} (workflow "${BACKUP_WORKFLOW_NAME}") (${vmBackupDir(destination.dest, vm.name)}/.lvb.lock); try again when that job has finished`);
		expect(taken.flat()).toContain(holder?.[1]);
		log(`${vm.name}: refused; the lock holder, execution ${holder?.[1]}, ran on worker ${setup().workerOf(String(holder?.[1]))?.label}`);
		refused++;
	}
	expect(taken.flat()).toHaveLength(6);
	// Both workers ran some of the six.
	expect(taken.map((ids) => ids.length > 0)).toEqual([true, true]);
	if (refused === 0) throw new Error('no call met a locked VM: the two calls for each VM did not overlap, so the lock across workers was not tested');

	for (const vm of targets) {
		const intervals = backupIntervals(vm);
		expect(intervals.length).toBeGreaterThanOrEqual(1);
		for (let k = 1; k < intervals.length; k++) {
			// Each backup of a VM started after the previous one had finished.
			expect([vm.name, intervals[k].id, intervals[k].start >= intervals[k - 1].end]).toEqual([vm.name, intervals[k].id, true]);
		}
	}
	expect(made).toHaveLength(answers.length - refused);
	const counts = await measureAfterFault({ dest: destination.dest, vms: targets, good: made, interrupted: [], foreign: [] });
	expect(counts.findings).toEqual([]);
	log(`${made.length} backups made and re-verified, ${refused} calls refused by the lock`);
});

test('the worker running a backup killed (SIGKILL) mid-copy: the host aborts the orphaned job, VM and store stay consistent, the next call succeeds on the other worker', async () => {
	const { workers } = setup();
	const vm = testVm('q-kill', 1024);
	const good = await labBackup(vm.name, destination.dest, { mode: 'full' });
	let counts: FaultCounts | undefined;
	try {
		const run = backupRequest(vm, 'full');
		let answer: WebhookAnswer | undefined;
		void run.then((a) => (answer = a));
		const partial = await growingPartial(destination.dest, vm, run);
		const execution = await rest.runningExecution(backupWorkflowId);
		const worker = setup().workerOf(execution.id);
		if (!worker) throw new Error(`no worker logged taking execution ${execution.id}\n${logs()}`);
		await worker.kill9();
		const killedAt = Date.now();
		log(`SIGKILL to worker ${worker.label} (pid ${worker.pid}) running execution ${execution.id}, partial ${partial.id}`);

		const hostMs = await waitForHostWorkToEnd(destination.dest, 180_000, 'the host to abort the backup job orphaned by the killed worker (its SSH connection is gone)');
		log(`host work ended ${Date.now() - killedAt} ms after the kill (${hostMs} ms of waiting)`);
		const orphaned = await measureAfterFault({ dest: destination.dest, vms: [vm], good: [good.path], interrupted: [partial.id], foreign: [] });

		const survivor = workers.find((other) => other !== worker);
		const next = succeeded(await backupRequest(vm, 'auto'));
		log(`next call: ${next.kind} ${next.id} on worker ${survivor?.label} (its last execution ${survivor?.executions().at(-1)}); warnings: ${next.warnings.join(' | ')}`);
		expect(next).toMatchObject({ kind: 'incremental', parent: good.id });
		expect(next.warnings).toContain(`removed incomplete backup folder(s) left by an interrupted run: ${partial.id}`);
		expect(host(`test -e ${q(partial.dir)} && echo left || echo gone`).trim()).toBe('gone');
		const after = await measureAfterFault({ dest: destination.dest, vms: [vm], good: [good.path, next.path], interrupted: [partial.id], foreign: [], parents: [next.parent ?? undefined] });
		counts = {
			dataLost: orphaned.dataLost + after.dataLost,
			vmsLeftUnclean: orphaned.vmsLeftUnclean + after.vmsLeftUnclean,
			partialBackupsListed: orphaned.partialBackupsListed + after.partialBackupsListed,
			foreignFilesRemoved: 0,
			findings: [...orphaned.findings, ...after.findings],
		};

		// What the caller of the killed run and the Executions list show is n8n's doing: the job's
		// Bull lock (QUEUE_WORKER_LOCK_DURATION) runs out, a worker's stalled check
		// (QUEUE_WORKER_STALLED_INTERVAL) fails it (n8n sets maxStalledCount 0: never run again), and
		// the main ends the execution as "error" and answers the caller 500.
		const statusAt = (await rest.execution(execution.id)).status;
		log(`${Math.round((Date.now() - killedAt) / 1000)} s after the kill: execution ${execution.id} is "${statusAt}"; its webhook caller is ${answer ? 'answered' : 'still waiting'}`);
		const status = await rest.finishedStatus(execution.id, 240_000);
		const caller = await run;
		log(`${Math.round((Date.now() - killedAt) / 1000)} s after the kill: execution ${execution.id} is "${status}"; the webhook caller got HTTP ${caller.status} after ${caller.ms} ms: ${caller.text.slice(0, 300)}`);
		expect(status).toBe('error');
		expect([caller.status, caller.json]).toEqual([500, { message: 'Error in workflow' }]);
		expect(setup().main.log()).toContain(`job stalled more than maxStalledCount (execution ${execution.id})`);
	} finally {
		const measured = counts ?? { dataLost: 0, vmsLeftUnclean: 0, partialBackupsListed: 0, foreignFilesRemoved: 0, findings: [] };
		const survived = counts !== undefined && measured.dataLost + measured.vmsLeftUnclean + measured.partialBackupsListed === 0;
		record({ kind: 'fault', name: 'backup (running VM): n8n queue-mode worker killed (SIGKILL) mid-copy, next call on the other worker', survived, dataLost: measured.dataLost, vmsLeftUnclean: measured.vmsLeftUnclean, partialBackupsListed: measured.partialBackupsListed, foreignFilesRemoved: 0 });
	}
	expect(counts.findings).toEqual([]);
});

test("Export Archive's streamed response refuses queue mode: HTTP 500 with the reason, nothing streamed", async () => {
	const { main } = setup();
	const vm = vms[0];
	const response = await fetch(`${main.url}/webhook/${EXPORT_HOOK}?vm=${encodeURIComponent(vm.name)}`, { headers: auth, signal: AbortSignal.timeout(120_000) });
	const text = await response.text();
	log(`export in queue mode: HTTP ${response.status} ${response.headers.get('content-type')}: ${text.slice(0, 400)}`);
	expect(response.status).toBe(500);
	expect(JSON.parse(text)).toEqual({
		error: expect.stringContaining(`in n8n's regular mode: in queue mode a worker cannot stream a response. Use "N8n Binary Data" with Respond to Webhook instead.`),
	});
});

test('Export Archive to n8n binary data (database mode, what queue mode uses) with Respond to Webhook: the download is a tar.gz whose images hash to their manifests', async () => {
	const { main } = setup();
	const vm = vms[0];
	const response = await fetch(`${main.url}/webhook/${EXPORT_BINARY_HOOK}?vm=${encodeURIComponent(vm.name)}`, { headers: auth, signal: AbortSignal.timeout(300_000) });
	const body = Buffer.from(await response.arrayBuffer());
	if (response.status !== 200) throw new Error(`HTTP ${response.status}: ${body.toString('utf8').slice(0, 1000)}\n${logs()}`);
	const work = await fs.mkdtemp(path.join(os.tmpdir(), 'lvb-queue-export-'));
	try {
		const file = path.join(work, 'export.tar.gz');
		await fs.writeFile(file, body);
		execFileSync('tar', ['-xzf', file, '-C', work]);
		const manifests = execFileSync('find', [work, '-name', 'manifest.json'], { encoding: 'utf8' }).split('\n').filter(Boolean);
		expect(manifests).toHaveLength(1);
		const manifest = JSON.parse(readFileSync(manifests[0], 'utf8')) as { disks: { file: string; sha256: string }[] };
		for (const disk of manifest.disks) expect(createHash('sha256').update(readFileSync(path.join(path.dirname(manifests[0]), disk.file))).digest('hex')).toBe(disk.sha256);
		log(`export to binary data in queue mode: HTTP 200, ${body.length} bytes (${response.headers.get('content-type')})`);
	} finally {
		await fs.rm(work, { recursive: true, force: true });
	}
});

test('the fleet workflow on a worker while webhook calls back up VMs of one fleet host: every backup valid, no VM backed up twice at once, each conflict a clear lock error', async () => {
	const fleet = fleetLab();
	const [first] = fleet.hosts;
	const answers = await Promise.all([
		postWebhook(setup().main.url, FLEET_HOOK, auth, {}),
		...first.vms.map((vm) => postWebhook(setup().main.url, FLEET_BACKUP_HOOK, auth, { vm: vm.name, mode: 'auto' })),
	]);
	const [fleetAnswer, ...calls] = answers;
	log(`fleet: HTTP ${fleetAnswer.status} after ${fleetAnswer.ms} ms: ${fleetAnswer.text.slice(0, 1500)}`);
	if (fleetAnswer.status !== 200) throw new Error(`fleet run failed: HTTP ${fleetAnswer.status} ${fleetAnswer.text.slice(0, 2000)}\n${logs()}`);
	const report = fleetAnswer.json as { vms: number; ok: number; failed: number; unreachable: number; text: string };
	const vmCount = fleet.hosts.reduce((sum, host) => sum + host.vms.length, 0);
	expect(report).toMatchObject({ vms: vmCount, unreachable: 0 });
	expect(report.ok + report.failed).toBe(vmCount);
	// A fleet backup that failed met a VM a webhook call was backing up: the reason says so, naming the holder.
	const failures = report.text.split('\n').filter((line) => line.includes(': FAILED: '));
	expect(failures).toHaveLength(report.failed);
	for (const line of failures) expect(line).toMatch(/: FAILED: VM "[^"]+" is locked by n8n execution \d+ \(workflow "Back up one VM of fleet host 1 \(queue e2e\)"\)/);
	let refused = 0;
	for (const [i, answer] of calls.entries()) {
		log(`${first.vms[i].name} on ${first.name}: HTTP ${answer.status} after ${answer.ms} ms: ${answer.text.slice(0, 300)}`);
		if (answer.status === 200) {
			succeeded(answer);
			continue;
		}
		expect(answer.status).toBe(422);
		expect(String(answer.json?.error)).toMatch(/is locked by n8n execution \d+ \(workflow "Fleet backup \(queue e2e\)"\)/);
		refused++;
	}
	log(`fleet report: ${report.ok} OK, ${report.failed} failed (lock); webhook calls refused: ${refused}`);
	// Every VM of the fleet has a backup, and no two backups of one VM overlapped in time.
	for (const fleetHost of fleet.hosts) {
		for (const vm of fleetHost.vms) {
			const dir = path.join(fleetHost.backupStore, path.basename(fleetDest!), vm.name);
			const manifests = readdirSafe(dir)
				.map((id) => path.join(dir, id, 'manifest.json'))
				.filter((file) => existsSync(file))
				.map((file) => JSON.parse(readFileSync(file, 'utf8')) as { startedAt: string; finishedAt: string })
				.map((m) => ({ start: Date.parse(m.startedAt), end: Date.parse(m.finishedAt) }))
				.sort((a, b) => a.start - b.start);
			expect([fleetHost.name, vm.name, manifests.length > 0]).toEqual([fleetHost.name, vm.name, true]);
			for (let k = 1; k < manifests.length; k++) expect(manifests[k].start).toBeGreaterThanOrEqual(manifests[k - 1].end);
		}
	}
});

function readdirSafe(dir: string): string[] {
	try {
		return readdirSync(dir);
	} catch {
		return [];
	}
}
