// e2e: the shipped nightly workflow in REAL n8n against the lab: discover -> back up -> verify ->
// prune -> summary, with the failure branch, and the notifications received by a local webhook.
import * as http from 'node:http';
import * as path from 'node:path';
import { promises as fs } from 'node:fs';
import { quoteArg as q } from '../../lib/shell';
import { loadLab } from '../support/lab';
import { createUserFolder, nodeOutput, packPackage, REPO_ROOT, type ExecuteResult, type N8nInstance } from '../support/n8n';
import { labCredentialData } from '../support/targets';
import { createTestVm, host, testDestination, type TestVm } from '../support/testVm';

jest.setTimeout(600_000);

const WORKFLOW = path.join(REPO_ROOT, 'workflows', 'nightly-backup.json');
const SHIPPED_DEST = '/mnt/storage/backups/vm_backups';
const SHIPPED_HOOK = 'https://chat.example.com/hooks/REPLACE_WITH_YOUR_WEBHOOK';
const lab = loadLab();
/** Lab VMs the run backs up: live, paused, offline with a chain, odd disks, a hostile name. */
const VMS = ['lvb-running', 'lvb-paused', 'lvb-off-chain', 'lvb-two-disks', 'lvb-odd-disks', ...lab.hostileVms.filter((name) => name.startsWith('lvb-evil'))];
const NO_DISK_VM = `lvb-t-nodisk-${process.pid}`;

let n8n: N8nInstance | undefined;
let server: http.Server;
let hookUrl: string;
const notifications: { text: string }[] = [];
let destination: { dest: string; cleanup(): void };
let run: ExecuteResult;
let credentialId: string;

function escapeRegex(text: string): string {
	return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

beforeAll(async () => {
	destination = testDestination('nightly');
	// A VM with nothing to back up (only a cdrom): its backup fails and takes the failure branch.
	const xml = `<domain type='${lab.domainType}'><name>${NO_DISK_VM}</name><memory unit='MiB'>96</memory><os><type arch='x86_64'>hvm</type></os><devices><disk type='file' device='cdrom'><target dev='sda' bus='sata'/><readonly/></disk></devices></domain>`;
	host(`printf '%s' ${q(xml)} > /tmp/${NO_DISK_VM}.xml && virsh -q define /tmp/${NO_DISK_VM}.xml >/dev/null && rm -f /tmp/${NO_DISK_VM}.xml`);

	server = http.createServer((request, response) => {
		let body = '';
		request.on('data', (chunk: Buffer) => (body += chunk.toString()));
		request.on('end', () => {
			notifications.push(JSON.parse(body));
			response.end('ok');
		});
	});
	await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
	hookUrl = `http://127.0.0.1:${(server.address() as { port: number }).port}/hook`;

	const tgz = await packPackage();
	n8n = await createUserFolder(tgz);
	await fs.rm(path.dirname(tgz), { recursive: true, force: true });
	const credential = await n8n.importCredential({
		name: 'Libvirt lab host',
		type: 'libvirtSshApi',
		data: labCredentialData(),
	});
	const workflow = JSON.parse(await fs.readFile(WORKFLOW, 'utf8'));
	const discover = workflow.nodes.find((node: { name: string }) => node.name === 'Discover VMs');
	discover.parameters.nameRegex = `^(${[...VMS, NO_DISK_VM].map(escapeRegex).join('|')})$`;
	credentialId = credential.id;
	const id = await n8n.importWorkflow(workflow, { REPLACE_CREDENTIAL_ID: credential.id, [SHIPPED_DEST]: destination.dest, [SHIPPED_HOOK]: hookUrl });
	run = await n8n.execute(id, 540_000);
}, 20 * 60_000);

afterAll(async () => {
	await n8n?.cleanup();
	server?.close();
	host(`virsh -q undefine ${q(NO_DISK_VM)} >/dev/null 2>&1 || true`);
	destination?.cleanup();
});

test('the run backs up, verifies and prunes every selected VM', () => {
	if (run.run?.status !== 'success') throw new Error(`run failed (${run.exitCode}):\n${run.stdout.slice(-4000)}\n${run.stderr.slice(-2000)}`);
	const backups = nodeOutput(run.run, 'Backup VM Disk');
	expect(backups.map((b) => b.vm).sort()).toEqual([...VMS].sort());
	for (const backup of backups) {
		expect(backup).toMatchObject({ kind: 'full', consistency: expect.stringMatching(/^(crash|offline)$/) });
		expect(host(`test -f ${q(`${backup.path}/manifest.json`)} && echo ok`).trim()).toBe('ok');
	}
	// A lab VM re-defined by an earlier lab run may carry bitmaps of ours libvirt forgot: a full removes them, and says so.
	const own = (vm: string) => ((backups.find((b) => b.vm === vm)?.warnings ?? []) as string[]).filter((w) => !w.startsWith('removed stale bitmap(s) of ours'));
	expect(own('lvb-paused')).toEqual(['VM is paused: crash-consistent']);
	expect(own('lvb-running')).toEqual(['no guest agent configured: crash-consistent']);
	expect(nodeOutput(run.run, 'Verify Checksum', 0).map((v) => v.valid)).toEqual(VMS.map(() => true));
	expect(nodeOutput(run.run, 'Verify Checksum', 1)).toEqual([]);
	const pruned = nodeOutput(run.run, 'Prune Old Backups');
	expect(pruned.length).toBe(VMS.length);
	expect(pruned.every((p) => p.action === 'keep')).toBe(true);
});

test('a VM that cannot be backed up takes the failure branch and is reported', () => {
	expect(nodeOutput(run.run, 'Backup VM Disk', 1)).toEqual([
		expect.objectContaining({ error: expect.stringContaining(`VM "${NO_DISK_VM}" has no disk that can be backed up`) }),
	]);
	expect(notifications).toContainEqual({ text: expect.stringMatching(new RegExp(`^Backup of ${NO_DISK_VM} failed: VM "${NO_DISK_VM}" has no disk`)) });
});

test('the summary reaches the chat webhook', () => {
	const [summary] = nodeOutput(run.run, 'Summary');
	expect(summary).toMatchObject({ succeeded: VMS.length, failed: 1, invalid: 0 });
	const posted = notifications.find((n) => n.text.startsWith('Libvirt backup:'));
	expect(posted?.text).toMatch(new RegExp(`^Libvirt backup: ${VMS.length} VMs backed up, 1 failed, 0 invalid, `));
	for (const vm of VMS) expect(posted?.text).toContain(`${vm}: full `);
});

describe('three nights of the shipped workflow on one VM: the chain goes on, is consolidated and pruned', () => {
	let vm: TestVm;
	let nightsDest: { dest: string; cleanup(): void };
	const nights: ExecuteResult[] = [];

	beforeAll(async () => {
		vm = createTestVm('nights', [{ target: 'vda', format: 'qcow2', virtualMiB: 32, writes: [{ pattern: 0x11, offsetMiB: 0, lengthMiB: 2 }] }]);
		nightsDest = testDestination('nights');
		const workflow = JSON.parse(await fs.readFile(WORKFLOW, 'utf8'));
		workflow.name = 'Nightly, one VM';
		const discover = workflow.nodes.find((node: { name: string }) => node.name === 'Discover VMs');
		discover.parameters.nameRegex = `^${escapeRegex(vm.name)}$`;
		const id = await n8n!.importWorkflow(workflow, { REPLACE_CREDENTIAL_ID: credentialId, [SHIPPED_DEST]: nightsDest.dest, [SHIPPED_HOOK]: hookUrl });
		for (let night = 0; night < 3; night++) {
			if (night > 0) vm.guestWrite('vda', 0x20 + night, 4 + night, 1);
			nights.push(await n8n!.execute(id, 300_000));
		}
	}, 15 * 60_000);

	afterAll(() => {
		vm?.destroy();
		nightsDest?.cleanup();
	});

	test('night 1 is a full; nights 2 and 3 are incrementals, each consolidated by Prune, whose chain below is pruned', () => {
		for (const night of nights) {
			if (night.run?.status !== 'success') throw new Error(`run failed (${night.exitCode}):\n${night.stdout.slice(-4000)}\n${night.stderr.slice(-2000)}`);
		}
		const backups = nights.map((night) => nodeOutput(night.run, 'Backup VM Disk')[0]);
		expect(backups.map((b) => b.kind)).toEqual(['full', 'incremental', 'incremental']);
		expect(backups[1].parent).toBe(backups[0].id);
		expect(backups[2].parent).toBe(backups[1].id);
		// Every night keeps only its newest backup (all are on one day): it is rebuilt as a full, and the chain below it goes.
		const actions = nights.map((night) => nodeOutput(night.run, 'Prune Old Backups').map((item) => [item.id, item.action, item.error]));
		expect(actions[0]).toEqual([[backups[0].id, 'keep', undefined]]);
		expect(actions[1]).toEqual([
			[backups[1].id, 'consolidate', undefined],
			[backups[0].id, 'prune', undefined],
		]);
		expect(actions[2]).toEqual([
			[backups[2].id, 'consolidate', undefined],
			[backups[1].id, 'prune', undefined],
		]);
		expect(nodeOutput(nights[2].run, 'Summary')[0]).toMatchObject({ succeeded: 1, failed: 0, invalid: 0, pruned: 1, consolidated: 1 });
		const manifest = JSON.parse(host(`cat ${q(`${backups[2].path}/manifest.json`)}`));
		expect(manifest).toMatchObject({ kind: 'full', consolidated: { from: [backups[2].id, backups[1].id] } });
		expect(host(`ls -A ${q(path.dirname(String(backups[2].path)))}`).split('\n').filter(Boolean).sort()).toEqual(['.lvb.lock', backups[2].id].sort());
		expect(notifications).toContainEqual({ text: expect.stringMatching(/^Libvirt backup: 1 VMs backed up, 0 failed, 0 invalid, .*; 1 old backups pruned, 1 consolidated\./) });
	});
});
