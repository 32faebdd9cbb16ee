/**
 * Faults on the n8n side (issue 11), against REAL n8n processes (`n8n start`) and the lab: the
 * shipped webhook-backup workflow backs up a throwaway VM with enough data (256 MiB) that "mid-backup"
 * is a real moment, seen on the host as a `.partial` image that grows. Two n8n instances share
 * nothing but the lab host (own user folder, database, encryption key, port).
 *   1. the execution stopped over n8n's REST API mid-backup;
 *   2. a Prune execution started during a backup of the same VM;
 *   3. two backups of one VM at once from the two n8n processes;
 *   4. the n8n process killed (SIGKILL) mid-backup, started again, the workflow run again.
 * After each: the checks of test/support/afterFault.ts, one ledger entry, and the next run succeeds.
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { quoteArg as q } from '../../lib/shell';
import { vmBackupDir } from '../../lib/store';
import { growingPartial, measureAfterFault, plantForeignFile, waitForHostWorkToEnd, type FaultCounts, type ForeignFile } from '../support/afterFault';
import { labBackup } from '../support/labBackup';
import { createUserFolder, N8nInstance, packPackage, REPO_ROOT, freePort, type N8nServer } from '../support/n8n';
import { N8nRest, postWebhook, type WebhookAnswer } from '../support/n8nRest';
import { SHIPPED_DEST, TOKEN_HEADER } from '../support/shipped';
import { labCredentialData } from '../support/targets';
import { createTestVm, host, testDestination, type TestVm } from '../support/testVm';
import { record } from './ledger';

jest.setTimeout(300_000);

const BACKUP_WORKFLOW = path.join(REPO_ROOT, 'workflows', 'webhook-backup.json');
const BACKUP_WORKFLOW_NAME = 'Libvirt: back up one VM on request (webhook)';
const BACKUP_HOOK = 'libvirt-backup';
const PRUNE_HOOK = 'lvb-faults-prune';
const token = randomBytes(18).toString('hex');
const auth = { [TOKEN_HEADER]: token };

/** One `n8n start` with its own user folder, and what the tests call on it. */
interface Instance {
	label: string;
	n8n: N8nInstance;
	server?: N8nServer;
	rest?: N8nRest;
	backupWorkflowId: string;
	pruneWorkflowId?: string;
	webhooks: string[];
}

let a: Instance | undefined;
let b: Instance | undefined;
let destination: { dest: string; cleanup(): void };
const vms: TestVm[] = [];

/** Prune Old Backups on request: keep the newest backup (and what it needs), no consolidation; an error is the answer. */
function pruneWorkflow(credentialId: string, headerAuthId: string, dest: string): Record<string, unknown> {
	return {
		name: 'Faults: prune one VM on request (webhook)',
		nodes: [
			{
				parameters: { httpMethod: 'POST', path: PRUNE_HOOK, authentication: 'headerAuth', responseMode: 'lastNode', options: {} },
				id: 'f4000000-0000-4000-8000-000000000001',
				name: 'Prune requested',
				type: 'n8n-nodes-base.webhook',
				typeVersion: 2,
				position: [0, 0],
				webhookId: '6b1f0d3e-2a4c-4e5f-9a7b-1c2d3e4f5a6b',
				credentials: { httpHeaderAuth: { id: headerAuthId, name: 'Backup webhook token' } },
			},
			{
				parameters: { destination: dest, vmNames: '={{ $json.body.vm }}', dryRun: false, consolidate: false, keepLast: 1, options: { output: 'summary' } },
				id: 'f4000000-0000-4000-8000-000000000002',
				name: 'Prune Old Backups',
				type: 'n8n-nodes-libvirt-backup.libvirtPruneBackups',
				typeVersion: 1,
				position: [240, 0],
				credentials: { libvirtSshApi: { id: credentialId, name: 'Libvirt host' } },
				onError: 'continueRegularOutput',
			},
		],
		connections: { 'Prune requested': { main: [[{ node: 'Prune Old Backups', type: 'main', index: 0 }]] } },
		settings: {},
	};
}

/** A second user folder with the same installed package (copied, not installed again), its own database and key. */
async function cloneInstance(from: N8nInstance): Promise<N8nInstance> {
	const userFolder = await fs.mkdtemp(path.join(path.dirname(from.userFolder), 'lvb-n8n-'));
	await fs.mkdir(path.join(userFolder, '.n8n'), { recursive: true });
	await fs.cp(from.nodesDir, path.join(userFolder, '.n8n', 'nodes'), { recursive: true, verbatimSymlinks: true });
	return new N8nInstance(from.paths, userFolder, randomBytes(24).toString('hex'), await freePort());
}

async function prepare(label: string, n8n: N8nInstance, withPrune: boolean): Promise<Instance> {
	const [libvirt, headerAuth] = await n8n.importCredentials([
		{ name: 'Libvirt host', type: 'libvirtSshApi', data: labCredentialData() },
		{ name: 'Backup webhook token', type: 'httpHeaderAuth', data: { name: TOKEN_HEADER, value: token } },
	]);
	const replace = { REPLACE_CREDENTIAL_ID: libvirt.id, REPLACE_HEADER_AUTH_ID: headerAuth.id, [SHIPPED_DEST]: destination.dest };
	const ids = await n8n.importWorkflows([
		{ workflow: BACKUP_WORKFLOW, replace },
		...(withPrune ? [{ workflow: pruneWorkflow(libvirt.id, headerAuth.id, destination.dest) }] : []),
	]);
	for (const id of ids) await n8n.publishWorkflow(id);
	return { label, n8n, backupWorkflowId: ids[0], pruneWorkflowId: ids[1], webhooks: [`POST ${BACKUP_HOOK}`, ...(withPrune ? [`POST ${PRUNE_HOOK}`] : [])] };
}

/** `n8n start` on the instance's user folder (again, after a kill) and an owner session for its REST API. */
async function start(instance: Instance, firstStart: boolean): Promise<void> {
	instance.server = await instance.n8n.startServer({ waitForWebhooks: instance.webhooks, env: { N8N_PERSONALIZATION_ENABLED: 'false' } });
	if (firstStart) instance.rest = await N8nRest.ownerSetup(instance.server);
}

function started(instance: Instance | undefined): Required<Pick<Instance, 'server' | 'rest'>> & Instance {
	if (!instance?.server || !instance.rest) throw new Error(`n8n ${instance?.label ?? '?'} is not running`);
	return instance as Required<Pick<Instance, 'server' | 'rest'>> & Instance;
}

/** A throwaway running VM whose full backup takes a few seconds: 1 GiB written in a 2 GiB qcow2. */
function bigVm(purpose: string): TestVm {
	// 1 GiB to copy: the fault (a stop, a kill, a second run) must land while the job copies, also now that the
	// backup's last steps take fewer round trips (with 256 MiB a stop landed after the copy, CI on cf07df1).
	const vm = createTestVm(purpose, [{ target: 'vda', format: 'qcow2', virtualMiB: 2048, writes: [{ pattern: 0x5a, offsetMiB: 0, lengthMiB: 1024 }] }]);
	vms.push(vm);
	return vm;
}

function plantForeign(vm: TestVm): ForeignFile[] {
	return [plantForeignFile(`${destination.dest}/FOREIGN-${vm.name}.txt`), plantForeignFile(`${vmBackupDir(destination.dest, vm.name)}/foreign-notes.txt`)];
}

const backupRequest = (instance: Instance, vm: Pick<TestVm, 'name'>, mode: string) => postWebhook(started(instance).server.url, BACKUP_HOOK, auth, { vm: vm.name, mode });

/** Whether the job writing `dir` still copies: what a fault's second run must overlap. */
function stillCopying(dir: string): boolean {
	return host(`ls ${q(dir)} 2>/dev/null | grep -q '[.]partial$' && echo yes || echo no`).trim() === 'yes';
}


/** Processes whose parent is `pid` (n8n's task runner). */
function childPids(pid: number): number[] {
	const found = spawnSync('pgrep', ['-P', String(pid)], { encoding: 'utf8' }).stdout;
	return found.split('\n').filter(Boolean).map(Number);
}

function alive(pid: number): boolean {
	try {
		process.kill(pid, 0);
		return true;
	} catch {
		return false;
	}
}

function lockIsFree(vm: TestVm): boolean {
	const lock = `${vmBackupDir(destination.dest, vm.name)}/.lvb.lock`;
	return host(`if [ ! -e ${q(lock)} ] || flock -n ${q(lock)} true; then echo free; else echo held; fi`).trim() === 'free';
}

/** The answer of a run that must have succeeded: the backup, verified valid. */
function succeeded(answer: WebhookAnswer, instance: Instance): { id: string; path: string; kind: string; parent: string | null; warnings: string[] } {
	if (answer.status !== 200 || answer.json?.ok !== true || answer.json.valid !== true) {
		throw new Error(`backup run failed: HTTP ${answer.status} ${answer.text.slice(0, 2000)}\n--- n8n ${instance.label} log (tail) ---\n${instance.server?.log().slice(-4000)}`);
	}
	const json = answer.json;
	return { id: String(json.id), path: String(json.path), kind: String(json.kind), parent: (json.parent as string | null) ?? null, warnings: (json.warnings as string[]) ?? [] };
}

/**
 * A fault test: `inject` injects the fault, runs the next run and returns the measured counts. One
 * ledger entry either way (a run that threw did not survive); then the test fails on any count.
 */
function faultTest(title: string, ledgerName: string, inject: () => Promise<FaultCounts>): void {
	test(title, async () => {
		let counts: FaultCounts | undefined;
		try {
			counts = await inject();
		} finally {
			const measured = counts ?? { dataLost: 0, vmsLeftUnclean: 0, partialBackupsListed: 0, foreignFilesRemoved: 0, findings: [] };
			const survived = counts !== undefined && measured.dataLost + measured.vmsLeftUnclean + measured.partialBackupsListed + measured.foreignFilesRemoved === 0;
			const { dataLost, vmsLeftUnclean, partialBackupsListed, foreignFilesRemoved } = measured;
			record({ kind: 'fault', name: ledgerName, survived, dataLost, vmsLeftUnclean, partialBackupsListed, foreignFilesRemoved });
		}
		expect(counts.findings).toEqual([]);
		expect(counts).toMatchObject({ dataLost: 0, vmsLeftUnclean: 0, partialBackupsListed: 0, foreignFilesRemoved: 0 });
	});
}

function sum(...all: FaultCounts[]): FaultCounts {
	return {
		dataLost: all.reduce((total, c) => total + c.dataLost, 0),
		vmsLeftUnclean: all.reduce((total, c) => total + c.vmsLeftUnclean, 0),
		partialBackupsListed: all.reduce((total, c) => total + c.partialBackupsListed, 0),
		foreignFilesRemoved: all.reduce((total, c) => total + c.foreignFilesRemoved, 0),
		findings: all.flatMap((c) => c.findings),
	};
}

function log(line: string): void {
	process.stdout.write(`[n8n-faults] ${line}\n`);
}

beforeAll(async () => {
	destination = testDestination('n8n-faults');
	const tgz = await packPackage();
	const first = await createUserFolder(tgz);
	await fs.rm(path.dirname(tgz), { recursive: true, force: true });
	const second = await cloneInstance(first);
	[a, b] = await Promise.all([prepare('A', first, true), prepare('B', second, false)]);
	await Promise.all([start(a, true), start(b, true)]);
	// Each instance's first execution loads the package and opens its first SSH connection: done
	// here, so that a fault's second run reaches the lock while the first one still copies.
	const missing = `lvb-t-missing-${process.pid}`;
	const warmUps = await Promise.all([
		backupRequest(a, { name: missing }, 'auto'),
		backupRequest(b, { name: missing }, 'auto'),
		postWebhook(started(a).server.url, PRUNE_HOOK, auth, { vm: missing }),
	]);
	for (const answer of warmUps.slice(0, 2)) expect(String(answer.json?.error)).toContain(`VM not found: ${missing}`);
	expect(warmUps[2].json).toMatchObject({ backups: 0, pruned: 0 });
}, 8 * 60_000);

afterAll(async () => {
	await Promise.all([a?.server?.stop(), b?.server?.stop()]);
	await Promise.all([a?.n8n.cleanup(), b?.n8n.cleanup()]);
	for (const vm of vms) vm.destroy();
	destination?.cleanup();
});

faultTest(
	'the execution stopped over the REST API mid-backup: it stops, the host job ends, the lock is free, the next run succeeds',
	'backup (running VM): n8n execution stopped over the REST API mid-copy',
	async () => {
		const n8n = started(a);
		const vm = bigVm('n8nf-stop');
		const foreign = plantForeign(vm);
		const good = await labBackup(vm.name, destination.dest, { mode: 'full' });

		const run = backupRequest(n8n, vm, 'full');
		const partial = await growingPartial(destination.dest, vm, run);
		const execution = await n8n.rest.runningExecution(n8n.backupWorkflowId);
		const stopAt = Date.now();
		const stopped = await n8n.rest.stop(execution.id);
		const stopMs = Date.now() - stopAt;
		const status = await n8n.rest.finishedStatus(execution.id, 60_000);
		const hostMs = await waitForHostWorkToEnd(destination.dest, 120_000, `the backup job on the host to end after execution ${execution.id} was stopped`);
		const answer = await Promise.race([run, new Promise<WebhookAnswer>((resolve) => setTimeout(() => resolve({ status: -1, json: undefined, text: 'no answer within 30 s', ms: 30_000 }), 30_000))]);
		log(`stop: REST answered ${stopped.status} in ${stopMs} ms; host work ended ${Date.now() - stopAt} ms after the stop (${hostMs} ms of waiting); execution status ${status}; webhook caller got HTTP ${answer.status} ${answer.text.slice(0, 300)}`);
		expect(status).toBe('canceled');
		expect(lockIsFree(vm)).toBe(true);
		const cancelled = await measureAfterFault({ dest: destination.dest, vms: [vm], good: [], interrupted: [partial.id], foreign });

		const next = succeeded(await backupRequest(n8n, vm, 'auto'), n8n);
		expect(next).toMatchObject({ kind: 'incremental', parent: good.id });
		expect(host(`test -e ${q(partial.dir)} && echo left || echo gone`).trim()).toBe('gone');
		const after = await measureAfterFault({ dest: destination.dest, vms: [vm], good: [good.path, next.path], interrupted: [partial.id], foreign, parents: [next.parent ?? undefined] });
		return sum(cancelled, after);
	},
);

faultTest(
	'a prune started during a backup of the same VM: it fails at once naming the backup that holds the lock; nothing is removed; the next runs succeed',
	'prune (running VM): started by a second n8n execution during a backup of the same VM',
	async () => {
		const n8n = started(a);
		const vm = bigVm('n8nf-prune');
		const foreign = plantForeign(vm);
		const oldest = await labBackup(vm.name, destination.dest, { mode: 'full' });
		const older = await labBackup(vm.name, destination.dest, { mode: 'full' });

		const run = backupRequest(n8n, vm, 'full');
		const partial = await growingPartial(destination.dest, vm, run);
		const execution = await n8n.rest.runningExecution(n8n.backupWorkflowId);
		const prune = await postWebhook(n8n.server.url, PRUNE_HOOK, auth, { vm: vm.name });
		const overlapped = stillCopying(partial.dir);
		log(`prune during backup: HTTP ${prune.status} after ${prune.ms} ms (the backup ${overlapped ? 'still copying' : 'already past its copy'}): ${prune.text.slice(0, 400)}`);
		if (prune.json?.error === undefined && !overlapped) throw new Error(`the backup's copy was over before the prune reached the lock (prune answered after ${prune.ms} ms): the machine is too slow for this VM's data; nothing was tested`);
		expect(prune.status).toBe(200);
		expect(String(prune.json?.error)).toBe(
			`VM "${vm.name}" is locked by n8n execution ${execution.id} (workflow "${BACKUP_WORKFLOW_NAME}") (${vmBackupDir(destination.dest, vm.name)}/.lvb.lock); try again when that job has finished`,
		);
		const backup = succeeded(await run, n8n);
		expect(backup.id).toBe(partial.id);
		const during = await measureAfterFault({ dest: destination.dest, vms: [vm], good: [oldest.path, older.path, backup.path], interrupted: [], foreign });

		const next = succeeded(await backupRequest(n8n, vm, 'auto'), n8n);
		expect(next).toMatchObject({ kind: 'incremental', parent: backup.id });
		const nextPrune = await postWebhook(n8n.server.url, PRUNE_HOOK, auth, { vm: vm.name });
		// Keep Last 1 keeps the newest backup and the full it needs: the two older fulls go, by policy.
		expect(nextPrune.json).toMatchObject({ pruned: 2, removed: 2, errors: [], lockedVms: [] });
		expect([...(nextPrune.json?.prunedPaths as string[])].sort()).toEqual([oldest.path, older.path].sort());
		const after = await measureAfterFault({ dest: destination.dest, vms: [vm], good: [backup.path, next.path], interrupted: [], foreign, parents: [next.parent ?? undefined] });
		return sum(during, after);
	},
);

faultTest(
	'two backups of one VM at once from two n8n processes: the second fails fast naming the first; the first and the next run succeed',
	'backup (running VM): two at once from two n8n processes',
	async () => {
		const first = started(a);
		const second = started(b);
		const vm = bigVm('n8nf-two');
		const foreign = plantForeign(vm);

		const run = backupRequest(first, vm, 'full');
		const partial = await growingPartial(destination.dest, vm, run);
		const execution = await first.rest.runningExecution(first.backupWorkflowId);
		const refused = await backupRequest(second, vm, 'full');
		const overlapped = stillCopying(partial.dir);
		log(`second n8n: HTTP ${refused.status} after ${refused.ms} ms (the first ${overlapped ? 'still copying' : 'already past its copy'}): ${refused.text.slice(0, 400)}`);
		if (refused.status === 200 && !overlapped) throw new Error(`the first backup's copy was over before the second n8n reached the lock (it answered after ${refused.ms} ms): the machine is too slow for this VM's data; nothing was tested`);
		expect(refused.status).toBe(422);
		expect(refused.json).toMatchObject({ ok: false, reason: 'failed', vm: vm.name });
		expect(String(refused.json?.error)).toContain(`VM "${vm.name}" is locked by n8n execution ${execution.id} (workflow "${BACKUP_WORKFLOW_NAME}")`);
		const backup = succeeded(await run, first);
		expect(backup.id).toBe(partial.id);

		const next = succeeded(await backupRequest(second, vm, 'auto'), second);
		expect(next).toMatchObject({ kind: 'incremental', parent: backup.id });
		return await measureAfterFault({ dest: destination.dest, vms: [vm], good: [backup.path, next.path], interrupted: [], foreign, parents: [next.parent ?? undefined] });
	},
);

faultTest(
	'n8n killed (SIGKILL) mid-backup: the host aborts the orphaned job; the partial folder is never listed and the next run removes it with a warning',
	'backup (running VM): n8n process killed (SIGKILL) mid-copy, started again, workflow run again',
	async () => {
		const n8n = started(b);
		const vm = bigVm('n8nf-kill');
		const foreign = plantForeign(vm);
		const good = await labBackup(vm.name, destination.dest, { mode: 'full' });

		const run = backupRequest(n8n, vm, 'full');
		const partial = await growingPartial(destination.dest, vm, run);
		const children = childPids(n8n.server.pid);
		process.kill(n8n.server.pid, 'SIGKILL');
		const killedAt = Date.now();
		const answer = await run;
		expect(answer.status).toBe(0);
		// n8n's own children (its task runner) lose their parent with it: ended here if they linger.
		await new Promise((resolve) => setTimeout(resolve, 2_000));
		const lingering = children.filter((pid) => alive(pid));
		for (const pid of lingering) process.kill(pid, 'SIGKILL');
		log(`SIGKILL: n8n's children ${children.join(', ') || '(none)'}; still alive 2 s later (ended by the test): ${lingering.join(', ') || 'none'}`);
		const hostMs = await waitForHostWorkToEnd(destination.dest, 180_000, 'the host to abort the backup job orphaned by the killed n8n (its SSH connection is gone); a libvirtd restarted by another test meanwhile can delay this');
		log(`SIGKILL: host work ended ${Date.now() - killedAt} ms after the kill (${hostMs} ms of waiting after the children were checked)`);
		const orphaned = await measureAfterFault({ dest: destination.dest, vms: [vm], good: [good.path], interrupted: [partial.id], foreign });
		expect(host(`test -d ${q(partial.dir)} && echo left || echo gone`).trim()).toBe('left');

		await start(n8n, false);
		const next = succeeded(await backupRequest(n8n, vm, 'auto'), n8n);
		expect(next).toMatchObject({ kind: 'incremental', parent: good.id });
		expect(next.warnings).toContain(`removed incomplete backup folder(s) left by an interrupted run: ${partial.id}`);
		expect(host(`test -e ${q(partial.dir)} && echo left || echo gone`).trim()).toBe('gone');
		const after = await measureAfterFault({ dest: destination.dest, vms: [vm], good: [good.path, next.path], interrupted: [partial.id], foreign, parents: [next.parent ?? undefined] });
		return sum(orphaned, after);
	},
);
