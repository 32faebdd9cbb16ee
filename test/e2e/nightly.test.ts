// e2e: the shipped nightly workflow in REAL n8n against the lab: discover -> back up -> verify ->
// prune -> summary, with the failure branch, and the notifications received by a local webhook.
import * as http from 'node:http';
import * as path from 'node:path';
import { promises as fs } from 'node:fs';
import { quoteArg as q } from '../../lib/shell';
import { loadLab } from '../support/lab';
import { createUserFolder, nodeOutput, packPackage, REPO_ROOT, type ExecuteResult, type N8nInstance } from '../support/n8n';
import { labCredentialData } from '../support/targets';
import { host, testDestination } from '../support/testVm';

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
	expect(backups.find((b) => b.vm === 'lvb-paused')?.warnings).toEqual(['VM is paused: crash-consistent']);
	expect(backups.find((b) => b.vm === 'lvb-running')?.warnings).toEqual(['no guest agent configured: crash-consistent']);
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
