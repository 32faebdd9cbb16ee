/**
 * The three node files against the lab host, through a minimal IExecuteFunctions: parameters in,
 * items out on the right outputs, paired with their input items.
 */
import type { IDataObject, IExecuteFunctions, INodeExecutionData } from 'n8n-workflow';
import { LibvirtListBackups } from '../../../nodes/LibvirtListBackups/LibvirtListBackups.node';
import { LibvirtPruneBackups } from '../../../nodes/LibvirtPruneBackups/LibvirtPruneBackups.node';
import { LibvirtVerifyChecksum } from '../../../nodes/LibvirtVerifyChecksum/LibvirtVerifyChecksum.node';
import { flipByte, makeBackups, makeDest, makeUnfinished, removeDest } from '../../support/backupFixtures';
import { loadLab } from '../../support/lab';

jest.setTimeout(120_000);

interface Run {
	outputs: INodeExecutionData[][];
	hints: string[];
}

/** Runs a node's execute() with `params` (per item: a function of the item's json) and the lab root credential. */
async function run(node: { execute(this: IExecuteFunctions): Promise<INodeExecutionData[][]> }, input: IDataObject[], params: Record<string, unknown | ((json: IDataObject) => unknown)>, continueOnFail = false): Promise<Run> {
	const lab = loadLab();
	const hints: string[] = [];
	const context = {
		getInputData: () => input.map((json) => ({ json })),
		getNodeParameter: (name: string, itemIndex: number, fallback?: unknown) => {
			const value = params[name];
			if (typeof value === 'function') return value(input[itemIndex]);
			return value === undefined ? fallback : value;
		},
		getCredentials: async () => ({
			host: lab.host,
			port: lab.port,
			username: 'root',
			authMethod: 'privateKey',
			privateKey: lab.users.root.privateKey,
			hostKeys: lab.knownHostsLine,
			sudoMode: 'none',
			libvirtUri: lab.systemUri,
		}),
		getExecutionCancelSignal: () => undefined,
		continueOnFail: () => continueOnFail,
		getNode: () => ({ id: 'n1', name: 'node under test', type: 'test', typeVersion: 1, position: [0, 0], parameters: {} }),
		addExecutionHints: (...found: Array<{ message: string }>) => hints.push(...found.map((hint) => hint.message)),
		getWorkflow: () => ({ id: 'wf1', name: 'test', active: false }),
		getExecutionId: () => 'ex1',
		getTimezone: () => 'UTC',
	} as unknown as IExecuteFunctions;
	return { outputs: await node.execute.call(context), hints };
}

describe('node files', () => {
	let dest: string;
	beforeEach(() => {
		dest = makeDest();
	});
	afterEach(() => removeDest(dest));

	test('List Backups -> Verify Checksum: valid and invalid backups leave on their own outputs, paired', async () => {
		const [good, bad] = makeBackups(dest, [
			{ vm: 'web01', id: '20261120T010000Z' },
			{ vm: 'db01', id: '20261120T010000Z' },
		]);
		flipByte(`${bad.path}/vda.qcow2`, 200_000);
		makeUnfinished(dest, 'web01', '20261121T010000Z');

		const listed = await run(new LibvirtListBackups(), [{}], { destination: dest, vmNames: '', kinds: [], options: {} });
		expect(listed.outputs[0].map((item) => item.json.path)).toEqual([bad.path, good.path]);
		expect(listed.outputs[0][1].json).toMatchObject({ vm: 'web01', kind: 'full', verified: 'never', protected: false, host: loadLab().host, parent: null });
		expect(listed.hints).toEqual([`${dest} also holds 1 incomplete folder(s), not listed as backups (see the node options)`]);

		// Verify never removes a VM's last backup not known to be invalid: db01 gets an older good one.
		makeBackups(dest, [{ vm: 'db01', id: '20261119T010000Z' }]);
		const items = listed.outputs[0].map((item) => item.json);
		const verified = await run(new LibvirtVerifyChecksum(), [...items, { path: `${dest}/web01/20261121T010000Z` }], { backupPath: (json: IDataObject) => json.path, onInvalid: 'quarantine' }, true);

		const [valid, invalid] = verified.outputs;
		expect(valid.map((item) => [item.json.path, item.json.valid, item.json.action, item.pairedItem])).toEqual([[good.path, true, 'kept', { item: 1 }]]);
		expect(invalid.map((item) => [item.json.valid, item.json.action, item.pairedItem])).toEqual([
			[false, 'quarantined', { item: 0 }],
			[undefined, undefined, { item: 2 }],
		]);
		expect(invalid[0].json).toMatchObject({ path: `${bad.path}.quarantined`, vmUuid: items[0].vmUuid });
		expect(invalid[1].json.error).toMatch(/is not a backup: no manifest/);

		const after = await run(new LibvirtListBackups(), [{}], { destination: dest, options: { includeQuarantined: true, includeIncomplete: true } });
		expect(after.outputs[0].map((item) => [item.json.vm, item.json.verified ?? (item.json.quarantined ? 'quarantined' : 'incomplete')])).toEqual([
			['db01', 'never'],
			['web01', 'ok'],
			['web01', 'incomplete'],
			['db01', 'quarantined'],
		]);
	});

	test('Prune Old Backups: per-backup items or one summary; dry run by default', async () => {
		makeBackups(dest, [
			{ vm: 'web01', id: '20261120T010000Z' },
			{ vm: 'web01', id: '20261121T010000Z' },
			{ vm: 'web01', id: '20261122T010000Z' },
		]);
		const policy = { destination: dest, keepLast: 1 };

		const dry = await run(new LibvirtPruneBackups(), [{}], { ...policy, options: {} });
		expect(dry.outputs[0].map((item) => [item.json.id, item.json.action, item.json.dryRun, item.json.removed, item.json.freedBytes ? 'frees' : 'none'])).toEqual([
			['20261122T010000Z', 'keep', true, false, 'none'],
			['20261121T010000Z', 'prune', true, false, 'frees'],
			['20261120T010000Z', 'prune', true, false, 'frees'],
		]);
		expect(dry.hints).toEqual(['Dry run: 2 backup(s) would be pruned, nothing was removed. Turn off Dry Run to prune.']);

		const real = await run(new LibvirtPruneBackups(), [{}], { ...policy, dryRun: false, options: { output: 'summary' } });
		expect(real.outputs[0]).toHaveLength(1);
		const summary = real.outputs[0][0].json;
		expect(summary).toMatchObject({ destination: dest, dryRun: false, backups: 3, kept: 1, pruned: 2, removed: 2, lockedVms: [], errors: [] });
		expect(summary.freedBytes).toBeGreaterThan(0);
		expect(summary.prunedPaths).toEqual([`${dest}/web01/20261121T010000Z`, `${dest}/web01/20261120T010000Z`]);

		const empty = await run(new LibvirtPruneBackups(), [{}], { destination: dest, dryRun: false, options: {} }).catch((error: Error) => error);
		expect((empty as Error).message).toMatch(/Retention policy is empty/);
	});
});
