// Integration: bad node input and the "Skip Host Key Verification" warning, through the REAL n8n
// engine in-process (n8n-core WorkflowExecute, our package loaded from dist/ by its
// PackageDirectoryLoader, the lab host behind a real sshd). Needs `npm run build` and the lab.
import type { IDataObject, IExecuteFunctions, INode, INodeExecutionData } from 'n8n-workflow';
import { backupId } from '../../lib/store/layout';
import { libvirtSshConnectionTest } from '../../nodes/shared/connectionTest';
import { LibvirtPruneBackups } from '../../nodes/LibvirtPruneBackups/LibvirtPruneBackups.node';
import { exists, makeBackups, makeDest, makeUnfinished, removeDest } from '../support/backupFixtures';
import { loadLab, type Lab } from '../support/lab';
import { InProcessN8n, type CredentialStore, type InProcessRun, type WorkflowJson } from '../support/n8n-inprocess';
import { labCredentialData } from '../support/targets';

jest.setTimeout(120_000);

const PACKAGE = 'n8n-nodes-libvirt-backup';
const TRIGGER = 'When clicking ‘Execute workflow’';
const VERIFIED_ID = 'labVerifiedCred1';
const UNVERIFIED_ID = 'labUnverifiedCr1';
const WARNING = /^host key NOT verified: /;

let lab: Lab;
let n8n: InProcessN8n;
let dest: string;

/** Both lab credentials: pinned host key, and "Skip Host Key Verification" with no key at all. */
function credentials(overrides: Record<string, string | number | boolean> = {}): CredentialStore {
	return {
		[VERIFIED_ID]: { type: 'libvirtSshApi', data: labCredentialData(overrides) },
		[UNVERIFIED_ID]: { type: 'libvirtSshApi', data: labCredentialData({ skipHostKeyVerification: true, hostKeys: '', ...overrides }) },
	};
}

interface NodeSpec {
	name?: string;
	type: string;
	parameters: Record<string, unknown>;
	credential?: string;
	continueOnFail?: boolean;
}

/** Manual Trigger -> node -> node ... in a line. */
function chain(...specs: NodeSpec[]): WorkflowJson {
	const nodes: INode[] = [{ id: 'trigger', name: TRIGGER, type: 'n8n-nodes-base.manualTrigger', typeVersion: 1, position: [0, 0], parameters: {} }];
	const connections: WorkflowJson['connections'] = {};
	specs.forEach((spec, index) => {
		const name = spec.name ?? 'Node';
		connections[nodes[nodes.length - 1].name] = { main: [[{ node: name, type: 'main', index: 0 }]] };
		nodes.push({
			id: `node${index}`,
			name,
			type: `${PACKAGE}.${spec.type}`,
			typeVersion: 1,
			position: [200 * (index + 1), 0],
			parameters: spec.parameters as INode['parameters'],
			credentials: { libvirtSshApi: { id: spec.credential ?? UNVERIFIED_ID, name: 'lab' } },
			...(spec.continueOnFail ? { onError: 'continueRegularOutput' as const } : {}),
		});
	});
	return { nodes, connections };
}

function hints(result: InProcessRun, node = 'Node'): string[] {
	return (result.run.data.resultData.runData[node]?.[0]?.hints ?? []).map((hint) => hint.message);
}

function allItems(result: InProcessRun, node = 'Node'): IDataObject[] {
	return (result.run.data.resultData.runData[node]?.[0]?.data?.main ?? []).flatMap((items) => (items ?? []).map((item) => item.json));
}

beforeAll(async () => {
	lab = loadLab();
	n8n = await InProcessN8n.create();
});

afterAll(async () => {
	await n8n?.shutdown();
});

beforeEach(() => {
	dest = makeDest();
	makeBackups(dest, [
		{ vm: 'web01', id: '20261120T010000Z' },
		{ vm: 'web01', id: '20261121T010000Z' },
		{ vm: 'db01', id: '20261121T010000Z' },
	]);
});

afterEach(() => removeDest(dest));

describe('Skip Host Key Verification is never silent', () => {
	const nodes: Array<[string, NodeSpec]> = [
		['Discover VMs', { type: 'libvirtDiscoverVms', parameters: {} }],
		['List Backups', { type: 'libvirtListBackups', parameters: { destination: '' } }],
		['Prune Old Backups (dry run)', { type: 'libvirtPruneBackups', parameters: { destination: '', keepLast: 1 } }],
		['Verify Checksum', { type: 'libvirtVerifyChecksum', parameters: { backupPath: '' }, continueOnFail: true }],
		['Backup VM Disk (VM not found)', { type: 'libvirtBackupVmDisk', parameters: { vm: 'lvb-no-such-vm', destination: '' }, continueOnFail: true }],
	];

	test.each(nodes)('%s: a warning hint and hostKeyWarning on every item, error items included', async (_label, spec) => {
		const parameters = { ...spec.parameters };
		if ('destination' in parameters) parameters.destination = dest;
		if ('backupPath' in parameters) parameters.backupPath = `${dest}/web01/20261121T010000Z`;
		const result = await n8n.run(chain({ ...spec, parameters }), { credentials: credentials() });

		expect(result.error).toBeUndefined();
		const items = allItems(result);
		expect(items.length).toBeGreaterThan(0);
		for (const item of items) expect(item.hostKeyWarning).toMatch(WARNING);
		expect(items[0].hostKeyWarning).toContain(lab.hostKeyFingerprint);
		expect(items[0].hostKeyWarning).toContain(`${lab.host}:${lab.port}`);
		expect(hints(result)).toContainEqual(items[0].hostKeyWarning);
		const hint = result.run.data.resultData.runData.Node[0].hints?.find((h) => WARNING.test(h.message));
		expect(hint).toMatchObject({ type: 'warning', location: 'outputPane' });
	});

	test('an item that fails because the host is unreachable carries the warning too', async () => {
		const result = await n8n.run(chain({ type: 'libvirtListBackups', parameters: { destination: dest }, continueOnFail: true }), { credentials: credentials({ port: 1 }) });
		const items = allItems(result);
		expect(items).toEqual([{ error: expect.stringMatching(/connection refused/), hostKeyWarning: expect.stringMatching(WARNING) }]);
	});

	test('a run that stops with an error says it in the error description', async () => {
		const result = await n8n.run(chain({ type: 'libvirtListBackups', parameters: { destination: 'relative/path' } }), { credentials: credentials() });
		expect(result.run.status).toBe('error');
		expect(result.error?.description).toMatch(/host key NOT verified: /);
	});

	test('with a pinned host key there is no warning, and one inherited from an unverified node is not passed on', async () => {
		const result = await n8n.run(
			chain(
				{ name: 'List', type: 'libvirtListBackups', parameters: { destination: dest, vmNames: 'db01' } },
				{ name: 'Verify', type: 'libvirtVerifyChecksum', parameters: { backupPath: '={{ $json.path }}' }, credential: VERIFIED_ID },
			),
			{ credentials: credentials() },
		);
		expect(result.error).toBeUndefined();
		expect(allItems(result, 'List').map((item) => typeof item.hostKeyWarning)).toEqual(['string']);
		expect(allItems(result, 'Verify')).toEqual([expect.objectContaining({ valid: true, path: `${dest}/db01/20261121T010000Z` })]);
		expect(allItems(result, 'Verify')[0]).not.toHaveProperty('hostKeyWarning');
		expect(hints(result, 'Verify').filter((message) => WARNING.test(message))).toEqual([]);
	});

	test('the credential test answers OK with the warning and the presented fingerprint', async () => {
		const answer = await libvirtSshConnectionTest.call({} as never, { id: 'x', name: 'lab', type: 'libvirtSshApi', data: credentials()[UNVERIFIED_ID].data });
		expect(answer.status).toBe('OK');
		expect(answer.message).toMatch(/^Connected to qemu:\/\/\/system: libvirt .*\. WARNING: host key NOT verified: /);
		expect(answer.message).toContain(lab.hostKeyFingerprint);
	});
});

describe('Prune Old Backups refuses input that would prune the wrong thing', () => {
	const prune = (parameters: Record<string, unknown>) =>
		n8n.run(chain({ type: 'libvirtPruneBackups', parameters: { destination: dest, dryRun: false, keepLast: 1, ...parameters }, credential: VERIFIED_ID }), { credentials: credentials() });

	test.each<[string, Record<string, unknown>, RegExp]>([
		['a VM list of only separators', { vmNames: ',' }, /^VM Names is set but names no VM \(it resolved to ","\)/],
		['a VM list of spaces and a separator', { vmNames: ' , ' }, /^VM Names is set but names no VM/],
		['an expression that yields no VM', { vmNames: "={{ '' }}" }, /^VM Names is set but names no VM \(it resolved to ""\)/],
		['an expression that yields an empty list', { vmNames: '={{ [] }}' }, /^VM Names is set but names no VM \(it resolved to \[\]\)/],
		['Keep Last NaN', { keepLast: '={{ Number("many") }}' }, /^Keep Last must be a whole number from 0 to 1000000, got NaN$/],
		['Keep Last as text', { keepLast: "={{ 'three' }}" }, /^Keep Last must be a whole number from 0 to 1000000, got "three"$/],
		['Keep Last 1e308', { keepLast: 1e308 }, /^Keep Last must be a whole number from 0 to 1000000, got 1e\+308$/],
		['Keep Daily NaN next to a good Keep Last', { keepDaily: '={{ Number("x") }}' }, /^Keep Daily must be a whole number/],
		['Retention Days NaN', { retentionDays: '={{ Number("x") }}' }, /^Retention Days must be a whole number/],
		['a 999999999-day window', { keepWithin: '999999999d' }, /^keepWithin "999999999d" is longer than 1000 years/],
		['a 99999999-year window', { keepWithin: '99999999y' }, /^keepWithin "99999999y" is longer than 1000 years/],
		['Retention Days past 1000 years', { keepLast: 0, retentionDays: 999_999_999 }, /^retentionDays 999999999 is longer than 1000 years/],
		['a stale age of 0 hours', { options: { staleAfterHours: 0 } }, /^Stale Unfinished Backups After \(Hours\) must be a number from 1 to 8765820, got 0$/],
		['a negative stale age', { options: { staleAfterHours: -5 } }, /^Stale Unfinished Backups After \(Hours\) must be a number from 1/],
		['a stale age of NaN', { options: { staleAfterHours: '={{ Number("x") }}' } }, /^Stale Unfinished Backups After \(Hours\) must be a number from 1 to 8765820, got NaN$/],
		['Dry Run from an empty expression', { dryRun: "={{ '' }}" }, /^Dry Run must be true or false, got ""$/],
	])('%s: the run fails and nothing is removed', async (_label, parameters, message) => {
		const fresh = makeUnfinished(dest, 'web01', backupId(new Date(Date.now() - 60_000)));
		const result = await prune(parameters);
		expect(result.run.status).toBe('error');
		expect(result.error?.message).toMatch(message);
		for (const path of [`${dest}/web01/20261120T010000Z`, `${dest}/web01/20261121T010000Z`, `${dest}/db01/20261121T010000Z`, fresh]) expect(exists(path)).toBe(true);
	});

	test('an empty VM Names field still means every VM', async () => {
		const result = await n8n.run(chain({ type: 'libvirtPruneBackups', parameters: { destination: dest, keepLast: 1 }, credential: VERIFIED_ID }), { credentials: credentials() });
		expect(result.error).toBeUndefined();
		expect(allItems(result).map((item) => [item.vm, item.id, item.action])).toEqual([
			['db01', '20261121T010000Z', 'keep'],
			['web01', '20261121T010000Z', 'keep'],
			['web01', '20261120T010000Z', 'prune'],
		]);
	});
});

describe('List Backups refuses numbers it cannot use', () => {
	test.each<[Record<string, unknown>, RegExp]>([
		[{ newerThanDays: '={{ Number("x") }}' }, /^Newer Than \(Days\) must be a number from 0 to 365242, got NaN$/],
		[{ olderThanDays: -1 }, /^Older Than \(Days\) must be a number from 0 to 365242, got -1$/],
		[{ olderThanDays: 1e308 }, /^Older Than \(Days\) must be a number from 0 to 365242, got 1e\+308$/],
	])('options %j', async (options, message) => {
		const result = await n8n.run(chain({ type: 'libvirtListBackups', parameters: { destination: dest, options }, credential: VERIFIED_ID }), { credentials: credentials() });
		expect(result.run.status).toBe('error');
		expect(result.error?.message).toMatch(message);
	});
});

describe('Prune Old Backups as an AI agent tool', () => {
	/**
	 * n8n gives a usableAsTool node to an agent as the node type `<name>Tool` (convertNodeToAiTool)
	 * and runs the same execute(). The engine cannot run it here without an agent, so execute() gets
	 * a minimal context whose node has that type, and a workflow JSON that says Dry Run = false.
	 */
	test('never removes a backup, whatever Dry Run says', async () => {
		const hintsSeen: string[] = [];
		const params: Record<string, unknown> = { destination: dest, vmNames: '', dryRun: false, keepLast: 1, options: {} };
		const context = {
			getInputData: () => [{ json: {} }],
			getNodeParameter: (name: string, _itemIndex: number, fallback?: unknown) => (name in params ? params[name] : fallback),
			getCredentials: async () => labCredentialData(),
			getExecutionCancelSignal: () => undefined,
			continueOnFail: () => false,
			getNode: () => ({ id: 'n1', name: 'Prune', type: `${PACKAGE}.libvirtPruneBackupsTool`, typeVersion: 1, position: [0, 0], parameters: { dryRun: false } }),
			addExecutionHints: (...found: Array<{ message: string }>) => hintsSeen.push(...found.map((hint) => hint.message)),
			getWorkflow: () => ({ id: 'wf1', name: 'agent', active: false }),
			getExecutionId: () => 'ex1',
			getTimezone: () => 'UTC',
		} as unknown as IExecuteFunctions;

		const [items] = (await new LibvirtPruneBackups().execute.call(context)) as INodeExecutionData[][];
		expect(items.map(({ json }) => [json.vm, json.id, json.action, json.dryRun, json.removed])).toEqual([
			['db01', '20261121T010000Z', 'keep', true, false],
			['web01', '20261121T010000Z', 'keep', true, false],
			['web01', '20261120T010000Z', 'prune', true, false],
		]);
		expect(exists(`${dest}/web01/20261120T010000Z`)).toBe(true);
		expect(hintsSeen).toContain('Dry run: 1 backup(s) would be pruned, nothing was removed. As an AI tool this node never removes backups.');
	});

	test('its Dry Run switch is hidden in the tool and a notice says why', () => {
		const { properties } = new LibvirtPruneBackups().description;
		expect(properties.find((p) => p.name === 'dryRun')?.displayOptions).toEqual({ hide: { '@tool': [true] } });
		expect(properties.find((p) => p.type === 'notice' && p.displayOptions?.show?.['@tool'])?.displayName).toMatch(/never removes backups/);
	});
});
