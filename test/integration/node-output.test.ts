// Integration: node outputs that chain without reaching back to an earlier node, and that read in
// n8n's Table view (key order = column order), through the REAL n8n engine in-process (our package
// from dist/, a throwaway VM in the lab's libvirtd). Needs `npm run build` and the lab.
import type { INode } from 'n8n-workflow';
import { InProcessN8n, type CredentialStore, type InProcessRun, type WorkflowJson } from '../support/n8n-inprocess';
import { labCredentialData } from '../support/targets';
import { createTestVm, testDestination, type TestVm } from '../support/testVm';

jest.setTimeout(180_000);

const PACKAGE = 'n8n-nodes-libvirt-backup';
const TRIGGER = 'When clicking ‘Execute workflow’';
const CRED_ID = 'labNodeOutput001';

let n8n: InProcessN8n;
let vm: TestVm;
let uuid: string;
let destination: { dest: string; cleanup(): void };

const credentials = (): CredentialStore => ({ [CRED_ID]: { type: 'libvirtSshApi', data: labCredentialData() } });

interface Step {
	name: string;
	type: string;
	parameters: Record<string, unknown>;
	continueOnFail?: boolean;
	/** "On Error: Continue (using error output)": failed items leave on an output of their own. */
	errorOutput?: boolean;
}

/** Manual Trigger -> steps in a line (each on the previous node's first output). */
function chain(...steps: Step[]): WorkflowJson {
	const nodes: INode[] = [{ id: 'trigger', name: TRIGGER, type: 'n8n-nodes-base.manualTrigger', typeVersion: 1, position: [0, 0], parameters: {} }];
	const connections: WorkflowJson['connections'] = {};
	steps.forEach((step, index) => {
		connections[nodes[nodes.length - 1].name] = { main: [[{ node: step.name, type: 'main', index: 0 }]] };
		nodes.push({
			id: `node${index}`,
			name: step.name,
			type: `${PACKAGE}.${step.type}`,
			typeVersion: 1,
			position: [200 * (index + 1), 0],
			parameters: step.parameters as INode['parameters'],
			credentials: { libvirtSshApi: { id: CRED_ID, name: 'lab' } },
			...(step.continueOnFail ? { onError: 'continueRegularOutput' as const } : {}),
			...(step.errorOutput ? { onError: 'continueErrorOutput' as const } : {}),
		});
	});
	return { nodes, connections };
}

const discover = (): Step => ({ name: 'Discover', type: 'libvirtDiscoverVms', parameters: { names: vm.name } });

beforeAll(async () => {
	n8n = await InProcessN8n.create();
	vm = createTestVm('nodeout', [
		{ target: 'vda', format: 'qcow2', virtualMiB: 16, writes: [{ pattern: 0x5a, offsetMiB: 0, lengthMiB: 1 }] },
		{ target: 'vdb', format: 'raw', virtualMiB: 8 },
	], 'shutoff');
	uuid = vm.host(`virsh -q domuuid ${vm.name}`).trim();
	destination = testDestination('nodeout');
});

afterAll(async () => {
	destination?.cleanup();
	vm?.destroy();
	await n8n?.shutdown();
});

describe('Discover VMs reads in Table view', () => {
	test('the fields a person scans come first, details after, raw values kept', async () => {
		const result = await n8n.run(chain(discover()), { credentials: credentials() });
		expect(result.error).toBeUndefined();
		const [item] = result.output('Discover');
		expect(Object.keys(item).slice(0, 6)).toEqual(['name', 'state', 'backupable', 'virtualSize', 'allocatedSize', 'diskSummary']);
		expect(item).toMatchObject({ name: vm.name, state: 'shutoff', backupable: true, virtualSize: '24.0 MiB', diskSummary: 'vda 16.0 MiB qcow2, vdb 8.0 MiB raw', uuid, totalVirtualBytes: 24 * 1024 * 1024 });
		const keys = Object.keys(item);
		for (const detail of ['disks', 'uuid', 'host', 'totalVirtualBytes', 'totalAllocatedBytes']) {
			expect(keys.indexOf(detail)).toBeGreaterThan(keys.indexOf('diskSummary'));
		}
	});
});

describe('Backup VM Disk error items name the VM', () => {
	// A file where the destination's parent folder should be: the lock folder cannot be made.
	const unwritable = '/etc/hostname/backups';

	test('from a Discover item: the error item carries the VM name and UUID', async () => {
		const result = await n8n.run(
			chain(discover(), { name: 'Backup', type: 'libvirtBackupVmDisk', parameters: { destination: unwritable }, continueOnFail: true }),
			{ credentials: credentials() },
		);
		expect(result.error).toBeUndefined();
		expect(result.output('Backup')).toEqual([{ vm: vm.name, uuid, error: expect.any(String) }]);
	});

	test('a VM typed by name, nothing in the input: the name and the UUID discovery found', async () => {
		const result = await n8n.run(
			chain({ name: 'Backup', type: 'libvirtBackupVmDisk', parameters: { vm: vm.name, destination: unwritable }, continueOnFail: true }),
			{ credentials: credentials() },
		);
		expect(result.output('Backup')).toEqual([{ vm: vm.name, uuid, error: expect.any(String) }]);
	});

	test('a VM that does not exist: the name asked for, no UUID', async () => {
		const result = await n8n.run(
			chain({ name: 'Backup', type: 'libvirtBackupVmDisk', parameters: { vm: 'lvb-no-such-vm', destination: destination.dest }, continueOnFail: true }),
			{ credentials: credentials() },
		);
		expect(result.output('Backup')).toEqual([{ vm: 'lvb-no-such-vm', uuid: null, error: expect.stringMatching(/lvb-no-such-vm/) }]);
	});

	// n8n moves an item to the error output only when it carries an error or its json holds nothing
	// but error/message/details: any other field on a failed item sent it down the success branch.
	test('with the error output on, the failed item leaves on the error output, not the success one', async () => {
		const result = await n8n.run(
			chain(discover(), { name: 'Backup', type: 'libvirtBackupVmDisk', parameters: { destination: unwritable }, errorOutput: true }),
			{ credentials: credentials() },
		);
		expect(result.error).toBeUndefined();
		expect(result.output('Backup', 0)).toEqual([]);
		// n8n merges the input item (the Discover item: name, uuid) into it; the rest is in details.
		expect(result.output('Backup', 1)).toEqual([expect.objectContaining({ name: vm.name, uuid, error: expect.any(String), details: { vm: vm.name } })]);
	});

	test('a credential that skips host key verification: the failed item (with hostKeyWarning) still leaves on the error output', async () => {
		const skipping = { [CRED_ID]: { type: 'libvirtSshApi', data: labCredentialData({ skipHostKeyVerification: true, hostKeys: '', port: 1 }) } };
		const result = await n8n.run(chain({ name: 'List', type: 'libvirtListBackups', parameters: { destination: destination.dest }, errorOutput: true }), { credentials: skipping });
		expect(result.error).toBeUndefined();
		expect(result.output('List', 0)).toEqual([]);
		expect(result.output('List', 1)).toEqual([{ error: expect.stringMatching(/connection refused/), details: { hostKeyWarning: expect.stringMatching(/^host key NOT verified/) } }]);
	});
});

describe('Backup -> Verify', () => {
	let run: InProcessRun;
	beforeAll(async () => {
		run = await n8n.run(
			chain(
				discover(),
				{ name: 'Backup', type: 'libvirtBackupVmDisk', parameters: { destination: destination.dest, mode: 'full' } },
				{ name: 'Verify', type: 'libvirtVerifyChecksum', parameters: {} },
			),
			{ credentials: credentials() },
		);
	});

	test('Verify keeps the shape of the disks it was given and adds its checks to each', () => {
		expect(run.error).toBeUndefined();
		const [backup] = run.output('Backup');
		const [verified] = run.output('Verify');
		expect(verified).toMatchObject({ vm: vm.name, id: backup.id, valid: true, status: 'valid', action: 'kept', uuid });
		const inDisks = backup.disks as Record<string, unknown>[];
		const outDisks = verified.disks as Record<string, unknown>[];
		expect(outDisks.map((disk) => disk.target)).toEqual(['vda', 'vdb']);
		expect(outDisks.map((disk) => disk.target)).toEqual(inDisks.map((disk) => disk.target));
		outDisks.forEach((disk, index) => {
			expect(disk).toMatchObject(inDisks[index]);
			expect(disk).toMatchObject({ ok: true, status: 'valid', actualSha256: inDisks[index].sha256 });
		});
	});

	test('Backup and Verify read in Table view: what a person scans first, details after', () => {
		const [backup] = run.output('Backup');
		expect(Object.keys(backup).slice(0, 4)).toEqual(['vm', 'id', 'kind', 'consistency']);
		expect(backup).toMatchObject({ vm: vm.name, uuid, kind: 'full', consistency: 'offline', size: expect.stringMatching(/ (B|KiB|MiB)$/) });
		expect(backup.diskSummary).toMatch(/^vda \S+ \S+ qcow2, vdb \S+ \S+ qcow2$/);
		const backupKeys = Object.keys(backup);
		for (const detail of ['disks', 'uuid', 'host', 'totalBytes', 'durationSeconds']) expect(backupKeys.indexOf(detail)).toBeGreaterThan(backupKeys.indexOf('diskSummary'));

		const [verified] = run.output('Verify');
		expect(Object.keys(verified).slice(0, 4)).toEqual(['vm', 'id', 'valid', 'status']);
		const verifyKeys = Object.keys(verified);
		for (const detail of ['disks', 'parents', 'uuid', 'host', 'checkedAt']) expect(verifyKeys.indexOf(detail)).toBeGreaterThan(verifyKeys.indexOf('checkSummary'));
	});
});
