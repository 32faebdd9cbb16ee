// e2e: the shipped restore-drill workflow in REAL n8n (`n8n execute`) against the lab: the newest backup
// of each VM is verified (whole chain), booted by instant recovery as a never-started `<vm>-drill`,
// read back by Discover VMs and discarded; the report with the time to recover per VM reaches a real
// HTTP receiver. Afterwards no drill VM, overlay or in-use marker is left and the backups still verify.
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { BackupVerifier } from '../../lib/catalog';
import { quoteArg as q } from '../../lib/shell';
import { withSsh } from '../../lib/ssh';
import { loadLab } from '../support/lab';
import { labBackup } from '../support/labBackup';
import { createUserFolder, nodeOutput, packPackage, REPO_ROOT, type ExecuteResult, type N8nInstance } from '../support/n8n';
import { startHttpReceiver, type HttpReceiver } from '../support/receivers';
import { labCredentialData, labTarget } from '../support/targets';
import { createTestVm, host, testDestination, type TestVm } from '../support/testVm';
import { SHIPPED_DEST, SHIPPED_HOOK, SHIPPED_OVERLAYS } from '../support/shipped';

jest.setTimeout(600_000);

const WORKFLOW = path.join(REPO_ROOT, 'workflows', 'restore-drill.json');

let n8n: N8nInstance | undefined;
let chat: HttpReceiver | undefined;
let chained: TestVm;
let single: TestVm;
let destination: { dest: string; cleanup(): void };
let overlays: { dest: string; cleanup(): void };
/** chained: full + incremental; single: one full. */
const backups: Record<string, { id: string; path: string; kind: string }[]> = {};
let workflowId: string;
let drill: ExecuteResult;
let squatter: string;

function text(post: { body: unknown }): string {
	return String((post.body as { text?: unknown }).text ?? '');
}

function assertSuccess(result: ExecuteResult): void {
	if (result.run?.status !== 'success') throw new Error(`run failed (${result.exitCode}):\n${result.stdout.slice(-4000)}\n${result.stderr.slice(-2000)}`);
}

function definedVms(): string[] {
	return host('virsh -q list --all --name').split('\n').map((name) => name.trim()).filter(Boolean);
}

beforeAll(async () => {
	destination = testDestination('drill-dest');
	overlays = testDestination('drill-overlays');
	chained = createTestVm('drill', [{ target: 'vda', format: 'qcow2', virtualMiB: 32, writes: [{ pattern: 0x71, offsetMiB: 0, lengthMiB: 4 }] }]);
	single = createTestVm('drill-one', [{ target: 'vda', format: 'qcow2', virtualMiB: 16, writes: [{ pattern: 0x72, offsetMiB: 2, lengthMiB: 2 }] }], 'shutoff');
	backups[chained.name] = [];
	for (let index = 0; index < 2; index++) {
		if (index > 0) chained.guestWrite('vda', 0x73, 12, 1);
		backups[chained.name].push(await labBackup(chained.name, destination.dest));
	}
	backups[single.name] = [await labBackup(single.name, destination.dest)];
	expect(backups[chained.name].map((backup) => backup.kind)).toEqual(['full', 'incremental']);
	squatter = `${single.name}-drill`;

	chat = await startHttpReceiver();
	const tgz = await packPackage();
	n8n = await createUserFolder(tgz);
	await fs.rm(path.dirname(tgz), { recursive: true, force: true });
	const libvirt = await n8n.importCredential({ name: 'Libvirt host', type: 'libvirtSshApi', data: labCredentialData() });
	workflowId = await n8n.importWorkflow(WORKFLOW, {
		REPLACE_CREDENTIAL_ID: libvirt.id,
		[SHIPPED_DEST]: destination.dest,
		[SHIPPED_OVERLAYS]: overlays.dest,
		[SHIPPED_HOOK]: `${chat.url}/hook`,
	});
	drill = await n8n.execute(workflowId, 300_000);
}, 15 * 60_000);

afterAll(async () => {
	await n8n?.cleanup();
	await chat?.close();
	// A failed drill must not leave VMs in the shared lab (Discard would remove their overlays too; the folders go below).
	for (const vm of [chained, single]) if (vm) host(`virsh -q destroy ${q(`${vm.name}-drill`)} >/dev/null 2>&1; virsh -q undefine ${q(`${vm.name}-drill`)} >/dev/null 2>&1 || true`);
	chained?.destroy();
	single?.destroy();
	destination?.cleanup();
	overlays?.cleanup();
});

test('the newest backup of each VM is verified, booted as a drill VM that is defined with its disks readable, and discarded', () => {
	assertSuccess(drill);
	const newest = [chained.name, single.name].map((vm) => backups[vm][backups[vm].length - 1]);
	expect(nodeOutput(drill.run, 'Verify whole chain').map((item) => [item.id, item.valid])).toEqual(expect.arrayContaining(newest.map((backup) => [backup.id, true])));
	const booted = nodeOutput(drill.run, 'Boot as drill VM');
	expect(booted.map((item) => [item.name, item.started]).sort()).toEqual([
		[`${chained.name}-drill`, false],
		[`${single.name}-drill`, false],
	]);
	const [report] = nodeOutput(drill.run, 'Report');
	if (report.passed !== 2) {
		const steps = ['Is it defined?', 'Clean up (Discard)'].map((name) => [name, nodeOutput(drill.run, name, 0), nodeOutput(drill.run, name, 1)]);
		throw new Error(`drill did not pass: ${JSON.stringify({ report, steps }, null, 1).slice(0, 8000)}`);
	}
	expect(report).toMatchObject({ vms: 2, passed: 2, failed: 0, notCleanedUp: 0 });
	const drills = report.drills as Array<Record<string, unknown>>;
	for (const [vm, chain] of [
		[chained.name, 2],
		[single.name, 1],
	] as const) {
		const mine = drills.find((entry) => entry.vm === vm);
		expect(mine).toMatchObject({
			backup: backups[vm][chain - 1].id,
			chainValid: true,
			drillVm: `${vm}-drill`,
			secondsToRecover: expect.any(Number),
			defined: true,
			state: 'shutoff',
			disks: [{ target: 'vda', readable: true, reason: null, backingImages: chain }],
			cleanedUp: true,
			ok: true,
		});
	}
});

test('the report posted to chat gives the time to recover per VM', async () => {
	const post = await chat!.waitFor((candidate) => text(candidate).startsWith('Restore drill: '));
	const lines = text(post).split('\n');
	expect(lines[0]).toBe('Restore drill: 2 VMs, 2 passed, 0 failed.');
	const incremental = backups[chained.name][1];
	expect(lines).toContainEqual(
		expect.stringMatching(new RegExp(`^${chained.name}: backup ${incremental.id} \\(incremental\\) recovered in \\d+\\.\\d s as ${chained.name}-drill, defined \\(shutoff\\), disks vda over 2 backup image\\(s\\), cleaned up$`)),
	);
	expect(lines).toContainEqual(expect.stringMatching(new RegExp(`^${single.name}: backup ${backups[single.name][0].id} \\(full\\) recovered in \\d+\\.\\d s as `)));
	expect(chat!.posts.filter((candidate) => !text(candidate).startsWith('Restore drill: '))).toEqual([]);
});

test('afterwards no drill VM is defined, no overlay or in-use marker is left, and the backups still verify', async () => {
	expect(definedVms().filter((name) => name.endsWith('-drill') && (name.startsWith(chained.name) || name.startsWith(single.name)))).toEqual([]);
	expect(host(`ls -A ${q(overlays.dest)}`).trim()).toBe('');
	expect(host(`find ${q(destination.dest)} -name '.lvb-instant-*'`).trim()).toBe('');
	for (const vm of [chained.name, single.name]) {
		const newest = backups[vm][backups[vm].length - 1];
		const verified = await withSsh(labTarget(), (ssh) => new BackupVerifier(ssh).verify(newest.path, { rehashChain: true }));
		expect([verified.valid, verified.problems]).toEqual([true, []]);
	}
});

test('a drill that cannot boot (its name is taken) is reported with the reason; the other VM still passes', async () => {
	host(`printf '%s' ${q(`<domain type='${loadLab().domainType}'><name>${squatter}</name><memory unit='MiB'>16</memory><os><type arch='x86_64'>hvm</type></os></domain>`)} > /tmp/${squatter}.xml && virsh -q define /tmp/${squatter}.xml >/dev/null && rm -f /tmp/${squatter}.xml`);
	const again = await n8n!.execute(workflowId, 300_000);
	assertSuccess(again);
	const failure = await chat!.waitFor((candidate) => text(candidate).startsWith(`Restore drill of ${single.name} `));
	expect(text(failure)).toMatch(new RegExp(`^Restore drill of ${single.name} \\(backup ${backups[single.name][0].id}\\) failed: .*${squatter}`));
	const [report] = nodeOutput(again.run, 'Report');
	expect(report).toMatchObject({ vms: 2, passed: 1, failed: 1, notCleanedUp: 0 });
	const posted = chat!.posts.map(text).filter((candidate) => candidate.startsWith('Restore drill: '));
	expect(posted).toHaveLength(2);
	expect(posted[1]).toMatch(new RegExp(`^Restore drill: 2 VMs, 1 passed, 1 failed\\.\\n`));
	expect(posted[1]).toContain(`\n${single.name}: backup ${backups[single.name][0].id} (full) did NOT boot: `);
	expect(definedVms().filter((name) => name === `${chained.name}-drill`)).toEqual([]);
});
