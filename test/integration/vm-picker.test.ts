// Integration: the VM picker through the REAL n8n engine in-process (n8n-core's LoadOptionsContext for
// the editor's list and options calls, WorkflowExecute for runs; our package loaded from dist/), over
// the lab's real sshd and libvirt. Workflows saved before the picker (plain strings) and with it
// (resource locator values) both run. Needs `npm run build` and the lab.
import type { IDataObject, ILoadOptionsFunctions, INode, INodeListSearchResult, INodePropertyOptions, INodeType } from 'n8n-workflow';
import { listDomains } from '../../lib/libvirt';
import { withSsh } from '../../lib/ssh';
import { hostFromCredentials } from '../../nodes/shared/target';
import { loadLab, type Lab } from '../support/lab';
import { InProcessN8n, type CredentialStore, type WorkflowJson } from '../support/n8n-inprocess';
import { labCredentialData } from '../support/targets';
import { createTestVm, testDestination, type TestVm } from '../support/testVm';

jest.setTimeout(180_000);

const PACKAGE = 'n8n-nodes-libvirt-backup';
const TRIGGER = 'When clicking ‘Execute workflow’';
const CREDENTIAL_ID = 'labPickerCred01';

let lab: Lab;
let n8n: InProcessN8n;
let vm: TestVm;
let uuid: string;
let destination: { dest: string; cleanup(): void };

const credentials = (overrides: Record<string, string | number | boolean> = {}): CredentialStore => ({
	[CREDENTIAL_ID]: { type: 'libvirtSshApi', data: labCredentialData(overrides) },
});

function node(name: string, type: string, parameters: Record<string, unknown>): INode {
	return {
		id: name,
		name,
		type: `${PACKAGE}.${type}`,
		typeVersion: 1,
		position: [0, 0],
		parameters: parameters as INode['parameters'],
		credentials: { libvirtSshApi: { id: CREDENTIAL_ID, name: 'Libvirt host' } },
	};
}

/** Manual Trigger -> nodes in a line. */
function chain(...nodes: INode[]): WorkflowJson {
	const all: INode[] = [{ id: 'trigger', name: TRIGGER, type: 'n8n-nodes-base.manualTrigger', typeVersion: 1, position: [0, 0], parameters: {} }, ...nodes];
	const connections: WorkflowJson['connections'] = {};
	for (let index = 1; index < all.length; index++) connections[all[index - 1].name] = { main: [[{ node: all[index].name, type: 'main', index: 0 }]] };
	return { nodes: all, connections };
}

function methodsOf(type: string): NonNullable<INodeType['methods']> {
	const methods = n8n.nodeTypes.getByNameAndVersion(`${PACKAGE}.${type}`, 1).methods;
	if (!methods) throw new Error(`${type} has no methods`);
	return methods;
}

async function search(type: string, method: string, filter?: string, store = credentials()): Promise<INodeListSearchResult> {
	const context = n8n.loadOptionsContext(node('Picker', type, {}), 'parameters.vm', { credentials: store });
	const list = methodsOf(type).listSearch?.[method];
	if (!list) throw new Error(`no listSearch ${method}`);
	return await list.call(context, filter);
}

async function disks(vmValue: unknown): Promise<INodePropertyOptions[]> {
	const context: ILoadOptionsFunctions = n8n.loadOptionsContext(node('Picker', 'libvirtBackupVmDisk', { vm: vmValue as string }), 'parameters.disks', {
		credentials: credentials(),
	});
	return await methodsOf('libvirtBackupVmDisk').loadOptions!.getVmDisks.call(context);
}

beforeAll(async () => {
	lab = loadLab();
	n8n = await InProcessN8n.create();
	vm = createTestVm('picker', [
		{ target: 'vda', format: 'qcow2', virtualMiB: 16 },
		{ target: 'vdb', format: 'raw', virtualMiB: 8 },
	], 'shutoff');
	uuid = vm.host(`virsh -q domuuid ${vm.name}`).trim();
	destination = testDestination('picker');
});

afterAll(async () => {
	destination?.cleanup();
	vm?.destroy();
	await n8n?.shutdown();
});

describe('listSearch over the node credential', () => {
	test('Backup VM Disk lists the host VMs as name (state) with the UUID as value', async () => {
		const { results } = await search('libvirtBackupVmDisk', 'searchVms');
		expect(results).toContainEqual({ name: `${vm.name} (shutoff)`, value: uuid });
		expect(results).toContainEqual({ name: 'lvb-running (running)', value: expect.stringMatching(/^[0-9a-f-]{36}$/) });
	});

	test('the filter is a case-insensitive substring of the name', async () => {
		const { results } = await search('libvirtBackupVmDisk', 'searchVms', `T-PICKER-${process.pid}`);
		expect(results).toEqual([{ name: `${vm.name} (shutoff)`, value: uuid }]);
		expect((await search('libvirtBackupVmDisk', 'searchVms', 'no-such-vm-anywhere')).results).toEqual([]);
	});

	test('List Backups and Prune Old Backups list VM names as values', async () => {
		for (const type of ['libvirtListBackups', 'libvirtPruneBackups']) {
			const { results } = await search(type, 'searchVmNames', vm.name);
			expect(results).toEqual([{ name: `${vm.name} (shutoff)`, value: vm.name }]);
		}
	});

	test('hostile VM names are listed as data: every one, exact as value, on one display line', async () => {
		const store = credentials({ libvirtUri: lab.hostileUri });
		const byName = (await search('libvirtListBackups', 'searchVmNames', undefined, store)).results;
		expect(byName.map((item) => item.value).sort()).toEqual([...lab.hostileNames].sort());
		for (const item of byName) expect(item.name).not.toMatch(/[\n\r\t]/);
		expect(byName.find((item) => item.value === 'lvb-new\nline')?.name).toBe('lvb-new\\nline (shutoff)');
		const byUuid = (await search('libvirtBackupVmDisk', 'searchVms', '$(TOUCH', store)).results;
		expect(byUuid.length).toBeGreaterThan(0);
		for (const item of byUuid) expect(item.name.toLowerCase()).toContain('$(touch');
	});

	test(`a fleet of VMs is listed in one SSH command, no disk image inspected`, async () => {
		const store = credentials({ libvirtUri: lab.fleetUri });
		const { results } = await search('libvirtBackupVmDisk', 'searchVms', undefined, store);
		expect(results).toHaveLength(lab.fleetCount);
		const { target, uri } = hostFromCredentials(store[CREDENTIAL_ID].data);
		const execs = await withSsh(target, async (ssh) => {
			await listDomains(ssh, uri);
			return ssh.execCount;
		});
		expect(execs).toBe(1);
	});

	test('an unreachable host is a clear error', async () => {
		await expect(search('libvirtBackupVmDisk', 'searchVms', undefined, credentials({ port: 1 }))).rejects.toThrow(
			new RegExp(`^Could not read the VMs of root@${lab.host}:1 \\(qemu:///system\\): .*connection refused`, 'i'),
		);
	});
});

describe('loadOptions: the disks of the chosen VM', () => {
	test.each<[string, () => unknown]>([
		['picked from the list (UUID)', () => ({ __rl: true, mode: 'list', value: uuid, cachedResultName: vm.name })],
		['by name', () => ({ __rl: true, mode: 'name', value: vm.name })],
		['by UUID', () => ({ __rl: true, mode: 'id', value: uuid })],
		['a plain name (saved before the picker)', () => vm.name],
	])('%s', async (_label, value) => {
		const options = await disks(value());
		expect(options).toEqual([
			{ name: 'vda (disk, qcow2, 16.0 MiB)', value: 'vda', description: `${vm.dir}/vda.qcow2` },
			{ name: 'vdb (disk, raw, 8.0 MiB)', value: 'vdb', description: `${vm.dir}/vdb.raw` },
		]);
	});

	test('no VM chosen yet, or one from an expression: no options, no error', async () => {
		expect(await disks({ __rl: true, mode: 'name', value: '={{ $json.uuid || $json.name }}' })).toEqual([]);
		expect(await disks('={{ $json.name }}')).toEqual([]);
		expect(await disks({ __rl: true, mode: 'list', value: '' })).toEqual([]);
	});
});

describe('workflows run with the old string form and the new resource locator form', () => {
	const discover = () => node('Discover', 'libvirtDiscoverVms', { names: vm.name });
	const backup = (parameters: Record<string, unknown>) => node('Backup', 'libvirtBackupVmDisk', { destination: destination.dest, mode: 'copy', ...parameters });

	async function backupOf(workflow: WorkflowJson): Promise<IDataObject> {
		const result = await n8n.run(workflow, { credentials: credentials() });
		expect(result.error).toBeUndefined();
		const [item] = result.output('Backup');
		return item;
	}

	const disksOf = (item: IDataObject) => (item.disks as IDataObject[]).map((disk) => disk.target);

	test.each<[string, () => WorkflowJson, string[]]>([
		['old: "vm" and "disks" as strings', () => chain(discover(), backup({ vm: '={{ $json.name }}', disks: 'vdb' })), ['vdb']],
		['old: a plain name and comma-separated disks', () => chain(backup({ vm: vm.name, disks: 'vda, vdb' })), ['vda', 'vdb']],
		['old: no "vm" and no "disks" (the default expression, every disk)', () => chain(discover(), backup({})), ['vda', 'vdb']],
		['new: picked from the list, disks from the options', () => chain(backup({ vm: { __rl: true, mode: 'list', value: uuid, cachedResultName: vm.name }, disks: ['vda'] })), ['vda']],
		['new: by name', () => chain(backup({ vm: { __rl: true, mode: 'name', value: vm.name }, disks: ['vdb'] })), ['vdb']],
		['new: by UUID from an expression', () => chain(discover(), backup({ vm: { __rl: true, mode: 'id', value: '={{ $json.uuid }}' }, disks: '={{ ["vda"] }}' })), ['vda']],
	])('%s', async (_label, workflow, wantedDisks) => {
		const item = await backupOf(workflow());
		expect(item.error).toBeUndefined();
		expect(item.vm).toBe(vm.name);
		expect(disksOf(item)).toEqual(wantedDisks);
	});

	test('by UUID with a name from an expression fails, naming the field', async () => {
		const result = await n8n.run(chain(discover(), backup({ vm: { __rl: true, mode: 'id', value: '={{ $json.name }}' } })), { credentials: credentials() });
		expect(result.error?.message).toBe(`VM "By UUID" is not a UUID: ${JSON.stringify(vm.name)}`);
	});

	test('List Backups: the old string filter and a VM picked from the list select the same backups', async () => {
		const list = (vmNames: unknown) => n8n.run(chain(node('List', 'libvirtListBackups', { destination: destination.dest, vmNames })), { credentials: credentials() });
		const old = await list(vm.name);
		const picked = await list({ __rl: true, mode: 'list', value: vm.name, cachedResultName: vm.name });
		expect(old.error).toBeUndefined();
		expect(picked.error).toBeUndefined();
		const ids = (run: typeof old) => run.output('List').map((item) => `${item.vm}/${item.id}`);
		expect(ids(old).length).toBeGreaterThan(0);
		expect(ids(picked)).toEqual(ids(old));
		expect((await list({ __rl: true, mode: 'list', value: 'lvb-running' })).output('List')).toEqual([]);
	});
});
