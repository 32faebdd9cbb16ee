// e2e: the shipped nightly workflow in REAL n8n against the lab: discover -> back up -> verify ->
// prune -> summary, with the failure and invalid branches, and the notifications received by real
// receivers on loopback (SMTP for the Send Email nodes, HTTP for the chat webhook).
import * as path from 'node:path';
import { promises as fs } from 'node:fs';
import { quoteArg as q } from '../../lib/shell';
import { loadLab } from '../support/lab';
import { labBackup } from '../support/labBackup';
import { createUserFolder, nodeOutput, packPackage, REPO_ROOT, type ExecuteResult, type N8nInstance } from '../support/n8n';
import { startHttpReceiver, startMailReceiver, type HttpReceiver, type MailReceiver } from '../support/receivers';
import { labCredentialData } from '../support/targets';
import { createTestVm, host, testDestination, type TestVm } from '../support/testVm';
import { SHIPPED_DEST, SHIPPED_HOOK } from '../support/shipped';

jest.setTimeout(600_000);

const WORKFLOW = path.join(REPO_ROOT, 'workflows', 'nightly-backup.json');
const lab = loadLab();
const TAB_VM = lab.hostileVms.find((name) => name.includes('\t'))!;
/** Lab VMs the run backs up: live, paused, offline with a chain, odd disks, hostile names (shell characters, a tab). */
const VMS = ['lvb-running', 'lvb-paused', 'lvb-off-chain', 'lvb-two-disks', 'lvb-odd-disks', ...lab.hostileVms.filter((name) => name.startsWith('lvb-evil')), TAB_VM];
const NO_DISK_VM = `lvb-t-nodisk-${process.pid}`;

let n8n: N8nInstance | undefined;
let chat: HttpReceiver;
let mail: MailReceiver;
let destination: { dest: string; cleanup(): void };
let run: ExecuteResult;
let replace: Record<string, string>;

function escapeRegex(text: string): string {
	return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** The chat messages received so far. */
function chatTexts(): string[] {
	return chat.posts.map((post) => String((post.body as { text?: unknown }).text));
}

/** The shipped workflow limited to the VMs `names` matches, under its own name (n8n keys nothing on it, but logs read better). */
async function nightlyFor(name: string, vmNames: string[]): Promise<Record<string, unknown>> {
	const workflow = JSON.parse(await fs.readFile(WORKFLOW, 'utf8'));
	workflow.name = name;
	const discover = workflow.nodes.find((node: { name: string }) => node.name === 'Discover VMs');
	discover.parameters.nameRegex = `^(${vmNames.map(escapeRegex).join('|')})$`;
	return workflow;
}

function succeeded(result: ExecuteResult): NonNullable<ExecuteResult['run']> {
	if (result.run?.status !== 'success') throw new Error(`run failed (${result.exitCode}):\n${result.stdout.slice(-4000)}\n${result.stderr.slice(-2000)}`);
	return result.run;
}

beforeAll(async () => {
	destination = testDestination('nightly');
	// A VM with nothing to back up (only a cdrom): its backup fails and takes the failure branch.
	const xml = `<domain type='${lab.domainType}'><name>${NO_DISK_VM}</name><memory unit='MiB'>96</memory><os><type arch='x86_64'>hvm</type></os><devices><disk type='file' device='cdrom'><target dev='sda' bus='sata'/><readonly/></disk></devices></domain>`;
	host(`printf '%s' ${q(xml)} > /tmp/${NO_DISK_VM}.xml && virsh -q define /tmp/${NO_DISK_VM}.xml >/dev/null && rm -f /tmp/${NO_DISK_VM}.xml`);

	[chat, mail] = await Promise.all([startHttpReceiver(), startMailReceiver()]);
	const tgz = await packPackage();
	n8n = await createUserFolder(tgz);
	await fs.rm(path.dirname(tgz), { recursive: true, force: true });
	const [libvirt, smtp] = await n8n.importCredentials([
		{ name: 'Libvirt host', type: 'libvirtSshApi', data: labCredentialData() },
		{ name: 'SMTP', type: 'smtp', data: { host: mail.host, port: mail.port, secure: false, disableStartTls: true, user: 'any', password: 'any' } },
	]);
	replace = { REPLACE_CREDENTIAL_ID: libvirt.id, REPLACE_SMTP_CREDENTIAL_ID: smtp.id, [SHIPPED_DEST]: destination.dest, [SHIPPED_HOOK]: `${chat.url}/hook` };
	const id = await n8n.importWorkflow(await nightlyFor('Nightly, lab VMs', [...VMS, NO_DISK_VM]), replace);
	run = await n8n.execute(id, 540_000);
}, 20 * 60_000);

afterAll(async () => {
	await n8n?.cleanup();
	await chat?.close();
	await mail?.close();
	host(`virsh -q undefine ${q(NO_DISK_VM)} >/dev/null 2>&1 || true`);
	destination?.cleanup();
});

test('the run backs up, verifies and prunes every selected VM', () => {
	const backups = nodeOutput(succeeded(run), 'Backup VM Disk');
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

test('a VM that cannot be backed up takes the failure branch: an email and a chat message with the reason', async () => {
	expect(nodeOutput(run.run, 'Backup VM Disk', 1)).toEqual([expect.objectContaining({ error: expect.stringContaining(`VM "${NO_DISK_VM}" has no disk that can be backed up`) })]);
	expect(chatTexts()).toContainEqual(expect.stringMatching(new RegExp(`^Backup of ${NO_DISK_VM} FAILED: VM "${NO_DISK_VM}" has no disk`)));
	const email = await mail.waitFor((m) => m.subject.includes(NO_DISK_VM));
	expect(email).toMatchObject({ from: expect.stringContaining('n8n-backup@example.com'), to: ['backup-admin@example.com'], subject: `Backup of ${NO_DISK_VM} FAILED` });
	expect(email.text).toContain(`VM "${NO_DISK_VM}" has no disk that can be backed up`);
});

test('the summary reaches the chat webhook: counts, one line per VM, control characters escaped, readable sizes', () => {
	const [summary] = nodeOutput(run.run, 'Summary');
	expect(summary).toMatchObject({ succeeded: VMS.length, failed: 1, invalid: 0 });
	// All results waits for every branch: one summary, not one per branch that reached it
	expect(run.run?.data?.resultData?.runData?.Summary).toHaveLength(1);
	expect(chatTexts().filter((text) => text.startsWith('Libvirt backup:'))).toHaveLength(1);
	const posted = chatTexts().find((text) => text.startsWith('Libvirt backup:'));
	expect(posted).toMatch(new RegExp(`^Libvirt backup: ${VMS.length} VMs backed up, 1 failed, 0 invalid, `));
	const lines = posted!.split('\n');
	// the header, one line per VM backed up, one per failure: a name with a tab or newline cannot split or forge a line
	expect(lines).toHaveLength(1 + VMS.length + 1);
	expect(posted).not.toContain('\t');
	expect(lines).toContainEqual(expect.stringMatching(/^lvb-tab\\tname: full /));
	for (const vm of VMS.filter((name) => name !== TAB_VM)) expect(lines).toContainEqual(expect.stringMatching(new RegExp(`^${escapeRegex(vm)}: full `)));
	expect(lines).toContainEqual(expect.stringMatching(new RegExp(`^${NO_DISK_VM}: FAILED: VM "${NO_DISK_VM}" has no disk that can be backed up`)));
	// the lab's disks are a few MiB: sizes read as such, never "0.00 GiB"
	expect(posted).not.toContain('0.00 GiB');
	for (const line of lines.slice(1, 1 + VMS.length)) expect(line).toMatch(/, \d+(\.\d)? (B|KiB|MiB|GiB|TiB) in \d+\.\d s/);
});

describe('every backup fails (the destination is not a folder): the failure email names the reason, the summary is still posted', () => {
	let vm: TestVm;
	let failDest: { dest: string; cleanup(): void };
	let failRun: ExecuteResult;

	beforeAll(async () => {
		vm = createTestVm('allfail', [{ target: 'vda', format: 'qcow2', virtualMiB: 16 }], 'shutoff');
		failDest = testDestination('allfail');
		host(`touch ${q(`${failDest.dest}/file`)}`);
		const id = await n8n!.importWorkflow(await nightlyFor('Nightly, every backup fails', [vm.name]), { ...replace, [SHIPPED_DEST]: `${failDest.dest}/file/backups` });
		failRun = await n8n!.execute(id, 300_000);
	}, 10 * 60_000);

	afterAll(() => {
		vm?.destroy();
		failDest?.cleanup();
	});

	test('the failure email and chat message carry the reason; the summary says 0 backed up, 1 failed', async () => {
		const run = succeeded(failRun);
		const [error] = nodeOutput(run, 'Backup VM Disk', 1);
		expect(error?.error).toEqual(expect.any(String));
		const email = await mail.waitFor((m) => m.subject === `Backup of ${vm.name} FAILED`);
		expect(email.text).toContain(String(error.error));
		expect(chatTexts()).toContainEqual(`Backup of ${vm.name} FAILED: ${String(error.error)}`);
		expect(nodeOutput(run, 'Summary')[0]).toMatchObject({ succeeded: 0, failed: 1, invalid: 0 });
		const summary = await chat.waitFor((post) => String((post.body as { text?: unknown }).text).startsWith('Libvirt backup: 0 VMs backed up, 1 failed'));
		expect(String((summary.body as { text: string }).text).split('\n')).toContainEqual(`${vm.name}: FAILED: ${String(error.error)}`);
	});
});

describe('a backup whose parent was damaged on the store is INVALID: the Invalid alert goes by email and chat', () => {
	let vm: TestVm;
	let invalidDest: { dest: string; cleanup(): void };
	let parentId: string;
	let invalidRun: ExecuteResult;

	beforeAll(async () => {
		vm = createTestVm('invalid', [{ target: 'vda', format: 'qcow2', virtualMiB: 16, writes: [{ pattern: 0x3c, offsetMiB: 0, lengthMiB: 2 }] }]);
		invalidDest = testDestination('invalid');
		// A full made outside the workflow (never verified), then one byte of its image data flipped on the store:
		// the nightly's incremental builds on it, and its Verify re-hashes that unverified parent.
		const full = await labBackup(vm.name, invalidDest.dest);
		parentId = full.id;
		const image = `${full.path}/${full.disks[0].file}`;
		const map = JSON.parse(host(`qemu-img map -f qcow2 --output=json ${q(image)}`)) as Array<{ data: boolean; offset?: number }>;
		const offset = map.find((extent) => extent.data && extent.offset !== undefined)!.offset!;
		host(`printf '\\377' | dd of=${q(image)} bs=1 seek=${offset + 4096} conv=notrunc status=none`);
		vm.guestWrite('vda', 0x4d, 4, 1);
		const id = await n8n!.importWorkflow(await nightlyFor('Nightly, damaged parent', [vm.name]), { ...replace, [SHIPPED_DEST]: invalidDest.dest });
		invalidRun = await n8n!.execute(id, 300_000);
	}, 10 * 60_000);

	afterAll(() => {
		vm?.destroy();
		invalidDest?.cleanup();
	});

	test('Verify sends the incremental to Invalid; the email and the chat alert name the VM and the damaged parent', async () => {
		const run = succeeded(invalidRun);
		const [backup] = nodeOutput(run, 'Backup VM Disk');
		expect(backup).toMatchObject({ vm: vm.name, kind: 'incremental', parent: parentId });
		const [invalid] = nodeOutput(run, 'Verify Checksum', 1);
		expect(invalid).toMatchObject({ vm: vm.name, valid: false });
		const problems = invalid.problems as string[];
		expect(problems.join(' ')).toContain(parentId);
		const email = await mail.waitFor((m) => m.subject === `Backup of ${vm.name} is INVALID`);
		expect(email.to).toEqual(['backup-admin@example.com']);
		for (const problem of problems) expect(email.text).toContain(problem);
		expect(email.text).toContain(String(backup.path));
		expect(chatTexts()).toContainEqual(expect.stringMatching(new RegExp(`^Backup of ${escapeRegex(vm.name)} is INVALID: .*${parentId}`)));
		expect(nodeOutput(run, 'Summary')[0]).toMatchObject({ succeeded: 1, failed: 0, invalid: 1 });
		expect(chatTexts()).toContainEqual(expect.stringMatching(/^Libvirt backup: 1 VMs backed up, 0 failed, 1 invalid, /));
	});
});

describe('three nights of the shipped workflow on one VM: the chain goes on, is consolidated and pruned', () => {
	let vm: TestVm;
	let nightsDest: { dest: string; cleanup(): void };
	const nights: ExecuteResult[] = [];

	beforeAll(async () => {
		vm = createTestVm('nights', [{ target: 'vda', format: 'qcow2', virtualMiB: 32, writes: [{ pattern: 0x11, offsetMiB: 0, lengthMiB: 2 }] }]);
		nightsDest = testDestination('nights');
		const id = await n8n!.importWorkflow(await nightlyFor('Nightly, one VM', [vm.name]), { ...replace, [SHIPPED_DEST]: nightsDest.dest });
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
		for (const night of nights) succeeded(night);
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
		expect(chatTexts()).toContainEqual(expect.stringMatching(/^Libvirt backup: 1 VMs backed up, 0 failed, 0 invalid, .*; 1 old backups pruned, 1 consolidated\./));
	});
});
