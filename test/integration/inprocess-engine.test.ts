// Integration: "Manual Trigger -> Discover VMs" through the REAL n8n engine (n8n-core WorkflowExecute)
// in the jest process, with our compiled node and credential loaded from dist/ by n8n-core's
// PackageDirectoryLoader. No n8n server, no database: credentials come from the test (decrypted).
// Needs `npm run build` (dist/) and the lab (globalSetup). ~1 s per run instead of ~5 s via the CLI.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { loadLab, type Lab, type LabVmState } from '../support/lab';
import { InProcessN8n, REPO_ROOT, type WorkflowJson } from '../support/n8n-inprocess';

jest.setTimeout(60_000);

const NODE_TYPE = 'n8n-nodes-libvirt-backup.libvirtDiscoverVms';
const NODE_STATE: Record<LabVmState, string> = { running: 'running', paused: 'paused', 'shut off': 'shutoff' };
const CRED_ID = 'labRootCred00001';

let lab: Lab;
let n8n: InProcessN8n;

/** The shipped workflow, with its credential placeholder pointing at CRED_ID. */
function shippedWorkflow(parameters?: Record<string, unknown>): WorkflowJson {
	const text = fs.readFileSync(path.join(REPO_ROOT, 'workflows', 'discover-vms.json'), 'utf8');
	const copy: WorkflowJson = JSON.parse(text.split('REPLACE_CREDENTIAL_ID').join(CRED_ID));
	if (parameters) copy.nodes.find((n) => n.name === 'Discover VMs')!.parameters = parameters as never;
	return copy;
}

function rootCredential(overrides: Record<string, unknown> = {}) {
	const root = lab.users.root;
	return {
		[CRED_ID]: {
			type: 'libvirtSshApi',
			// Only what a user fills in: port, authMethod, sudoMode, libvirtUri... come from the
			// credential type's defaults, applied the way n8n applies them.
			data: { host: lab.host, port: lab.port, username: root.username, privateKey: root.privateKey, hostKeys: lab.knownHostsLine, ...overrides },
		},
	};
}

beforeAll(async () => {
	lab = loadLab();
	n8n = await InProcessN8n.create();
});

afterAll(async () => {
	await n8n?.shutdown();
});

test('our package loads through n8n-core PackageDirectoryLoader', () => {
	expect(n8n.loadedNodeTypes).toContain(NODE_TYPE);
	expect(n8n.loadedCredentialTypes).toContain('libvirtSshApi');
});

test('Manual Trigger -> Discover VMs lists every lab VM with state and disk count', async () => {
	const t = Date.now();
	const result = await n8n.run(shippedWorkflow(), { credentials: rootCredential() });
	const ms = Date.now() - t;
	expect(result.error).toBeUndefined();
	expect(result.run.status).toBe('success');
	expect(result.nodeExecutionOrder).toEqual(['When clicking ‘Execute workflow’', 'Discover VMs']);
	const items = result.output('Discover VMs');
	const byName = new Map(items.map((i) => [i.name as string, i]));
	for (const vm of lab.vms) {
		const item = byName.get(vm.name) as { state: string; disks: unknown[]; uuid: string } | undefined;
		expect({ vm: vm.name, found: !!item }).toEqual({ vm: vm.name, found: true });
		if (!item) continue;
		expect({ vm: vm.name, state: item.state, disks: item.disks.length, uuid: item.uuid }).toEqual({
			vm: vm.name,
			state: NODE_STATE[vm.state],
			disks: vm.disks.filter((d) => d.device !== 'cdrom').length,
			uuid: vm.uuid,
		});
	}
	console.info(`in-process discover run: ${ms} ms, ${items.length} items`);
});

test('node parameters are applied by the engine (state filter)', async () => {
	const result = await n8n.run(shippedWorkflow({ state: 'running' }), { credentials: rootCredential() });
	expect(result.error).toBeUndefined();
	const items = result.output('Discover VMs');
	// Other tests may define scratch VMs on the shared libvirtd: check only what the filter promises.
	expect(items.filter((i) => i.state !== 'running')).toEqual([]);
	const names = items.map((i) => i.name);
	expect(names).toEqual(expect.arrayContaining(lab.vms.filter((v) => v.state === 'running').map((v) => v.name)));
	for (const vm of lab.vms.filter((v) => v.state !== 'running')) expect(names).not.toContain(vm.name);
});

test('wrong pinned host key: the run fails at Discover VMs with the presented fingerprint', async () => {
	const result = await n8n.run(shippedWorkflow(), { credentials: rootCredential({ hostKeys: lab.wrongHostKeyLine }) });
	expect(result.run.status).toBe('error');
	expect(result.error?.node).toBe('Discover VMs');
	expect(result.error?.message).toMatch(/host key/i);
	expect(result.error?.message).toContain(lab.hostKeyFingerprint);
});

test('a workflow referencing a credential that does not exist fails like n8n does', async () => {
	const result = await n8n.run(shippedWorkflow(), { credentials: {} });
	expect(result.run.status).toBe('error');
	expect(result.error?.message).toContain(`Credential with ID "${CRED_ID}" does not exist`);
});

test('an invalid name regex fails the node with a clear error', async () => {
	const result = await n8n.run(shippedWorkflow({ nameRegex: '([unclosed' }), { credentials: rootCredential() });
	expect(result.run.status).toBe('error');
	expect(result.error?.node).toBe('Discover VMs');
	expect(result.error?.message).toMatch(/^Invalid name regex "\(\[unclosed": /);
});

test('with continueOnFail, a failing item becomes an error item paired to its input', async () => {
	const workflow = shippedWorkflow({ nameRegex: '([unclosed' });
	const node = workflow.nodes.find((n) => n.name === 'Discover VMs')! as unknown as Record<string, unknown>;
	node.onError = 'continueRegularOutput';
	const result = await n8n.run(workflow, { credentials: rootCredential() });
	expect(result.run.status).toBe('success');
	expect(result.output('Discover VMs')).toEqual([{ error: expect.stringMatching(/^Invalid name regex/) }]);
});
