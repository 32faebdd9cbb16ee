// e2e: workflows saved before the VM picker (plain strings for "vm", "disks", "vmNames", as the
// shipped workflows hold them) and workflows saved with it (resource locator values, disks as a list)
// both run in a REAL n8n 2.41.1 (`n8n import:workflow` + `n8n execute`) against the lab.
// `npm run test:e2e` builds dist first; this file only packs it.
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { createUserFolder, ensureN8n, nodeOutput, packPackage, type N8nInstance } from '../support/n8n';
import { labCredentialData } from '../support/targets';
import { createTestVm, testDestination, type TestVm } from '../support/testVm';

jest.setTimeout(240_000);

const PACKAGE = 'n8n-nodes-libvirt-backup';
const TRIGGER = 'When clicking ‘Execute workflow’';

let n8n: N8nInstance | undefined;
let tgzDir: string | undefined;
let vm: TestVm;
let uuid: string;
let destination: { dest: string; cleanup(): void };
let credentialId: string;

function workflow(name: string, steps: Array<{ name: string; type: string; parameters: Record<string, unknown> }>): Record<string, unknown> {
	const nodes: Array<Record<string, unknown>> = [{ id: 'trigger', name: TRIGGER, type: 'n8n-nodes-base.manualTrigger', typeVersion: 1, position: [0, 0], parameters: {} }];
	const connections: Record<string, unknown> = {};
	steps.forEach((step, index) => {
		connections[String(nodes[nodes.length - 1].name)] = { main: [[{ node: step.name, type: 'main', index: 0 }]] };
		nodes.push({
			id: `step${index}`,
			name: step.name,
			type: `${PACKAGE}.${step.type}`,
			typeVersion: 1,
			position: [220 * (index + 1), 0],
			parameters: step.parameters,
			credentials: { libvirtSshApi: { id: credentialId, name: 'Libvirt host' } },
		});
	});
	return { name, nodes, connections, active: false, settings: { executionOrder: 'v1' } };
}

beforeAll(async () => {
	await ensureN8n();
	const tgz = await packPackage();
	tgzDir = path.dirname(tgz);
	n8n = await createUserFolder(tgz);
	({ id: credentialId } = await n8n.importCredential({ name: 'Libvirt host', type: 'libvirtSshApi', data: labCredentialData() }));
	vm = createTestVm('picker-e2e', [
		{ target: 'vda', format: 'qcow2', virtualMiB: 16 },
		{ target: 'vdb', format: 'raw', virtualMiB: 8 },
	], 'shutoff');
	uuid = vm.host(`virsh -q domuuid ${vm.name}`).trim();
	destination = testDestination('picker-e2e');
}, 20 * 60_000);

afterAll(async () => {
	destination?.cleanup();
	vm?.destroy();
	await n8n?.cleanup();
	if (tgzDir) await fs.rm(tgzDir, { recursive: true, force: true });
});

test.each<[string, () => Record<string, unknown>, string[]]>([
	[
		'saved before the picker: plain strings, as in workflows/nightly-backup.json',
		() =>
			workflow('old form', [
				{ name: 'Discover VMs', type: 'libvirtDiscoverVms', parameters: { names: vm.name } },
				{ name: 'Backup VM Disk', type: 'libvirtBackupVmDisk', parameters: { vm: '={{ $json.uuid }}', destination: destination.dest, mode: 'copy', disks: 'vda, vdb' } },
				{ name: 'List Backups', type: 'libvirtListBackups', parameters: { destination: destination.dest, vmNames: '={{ $json.vm }}' } },
			]),
		['vda', 'vdb'],
	],
	[
		'saved with the picker: VM and VM Names from the list, disks from the options',
		() =>
			workflow('new form', [
				{
					name: 'Backup VM Disk',
					type: 'libvirtBackupVmDisk',
					parameters: { vm: { __rl: true, mode: 'list', value: uuid, cachedResultName: vm.name }, destination: destination.dest, mode: 'copy', disks: ['vdb'] },
				},
				{ name: 'List Backups', type: 'libvirtListBackups', parameters: { destination: destination.dest, vmNames: { __rl: true, mode: 'list', value: vm.name, cachedResultName: vm.name } } },
			]),
		['vdb'],
	],
])('%s: runs in n8n', async (_label, build, disks) => {
	const id = await n8n!.importWorkflow(build());
	const result = await n8n!.execute(id);
	if (result.exitCode !== 0) throw new Error(`n8n execute failed (${result.exitCode}):\n${result.stdout.slice(-4000)}\n${result.stderr.slice(-2000)}`);
	expect(result.run?.status).toBe('success');
	const [backup] = nodeOutput(result.run, 'Backup VM Disk');
	expect({ vm: backup.vm, disks: (backup.disks as Array<{ target: string }>).map((disk) => disk.target) }).toEqual({ vm: vm.name, disks });
	const listed = nodeOutput(result.run, 'List Backups');
	expect(listed.length).toBeGreaterThan(0);
	expect(new Set(listed.map((item) => item.vm))).toEqual(new Set([vm.name]));
	expect(listed.map((item) => item.path)).toContain(backup.path);
});
