import {
	NodeConnectionTypes,
	type IDataObject,
	type IExecuteFunctions,
	type INodeExecutionData,
	type INodeProperties,
	type INodeType,
	type INodeTypeDescription,
} from 'n8n-workflow';
import { DEFAULT_STALE_AFTER_MS, pruneBackups, type PruneItem, type PruneResult } from '../../lib/catalog';
import { MAX_KEEP_COUNT, MAX_WINDOW_YEARS, type RetentionPolicy } from '../../lib/retention';
import { checkBoolean, checkNumber, destinationProperty, readNumber, readVmNames, vmNamesProperty } from '../shared/catalogParameters';
import { libvirtSshConnectionTest } from '../shared/connectionTest';
import { executePerItem } from '../shared/execute';
import { searchVmNames } from '../shared/vmPicker';
import { fleetProperties } from '../shared/fleetParameters';

const COUNT_RULES: Array<[keyof RetentionPolicy, string, string]> = [
	['keepLast', 'Keep Last', 'Keep the newest N backups of each VM'],
	['keepHourly', 'Keep Hourly', 'Keep the newest backup of each of the last N hours that have backups'],
	['keepDaily', 'Keep Daily', 'Keep the newest backup of each of the last N days that have backups'],
	['keepWeekly', 'Keep Weekly', 'Keep the newest backup of each of the last N ISO weeks that have backups'],
	['keepMonthly', 'Keep Monthly', 'Keep the newest backup of each of the last N months that have backups'],
	['keepYearly', 'Keep Yearly', 'Keep the newest backup of each of the last N years that have backups'],
];

const HOUR_MS = 3_600_000;
const MAX_STALE_AFTER_HOURS = MAX_WINDOW_YEARS * 365.2425 * 24;

const ruleProperties: INodeProperties[] = COUNT_RULES.map(([name, displayName, description]) => ({
	displayName,
	name,
	type: 'number',
	typeOptions: { minValue: 0 },
	default: 0,
	description: `${description}. 0 turns the rule off.`,
}));

export class LibvirtPruneBackups implements INodeType {
	description: INodeTypeDescription = {
		displayName: 'Prune Old Backups',
		name: 'libvirtPruneBackups',
		icon: { light: 'file:../icons/libvirt.svg', dark: 'file:../icons/libvirt.dark.svg' },
		group: ['transform'],
		version: 1,
		// The policy at a glance on the canvas, e.g. "7d 4w 6m, dry run" (docs/nodes/prune-old-backups.md#subtitle).
		subtitle:
			'={{ ((($parameter["keepLast"] > 0 ? " last " + $parameter["keepLast"] : "") + ($parameter["keepHourly"] > 0 ? " " + $parameter["keepHourly"] + "h" : "") + ' +
			'($parameter["keepDaily"] > 0 ? " " + $parameter["keepDaily"] + "d" : "") + ($parameter["keepWeekly"] > 0 ? " " + $parameter["keepWeekly"] + "w" : "") + ' +
			'($parameter["keepMonthly"] > 0 ? " " + $parameter["keepMonthly"] + "m" : "") + ($parameter["keepYearly"] > 0 ? " " + $parameter["keepYearly"] + "y" : "") + ' +
			'($parameter["keepWithin"] ? " within " + $parameter["keepWithin"] : "") + ($parameter["retentionDays"] > 0 ? " within " + $parameter["retentionDays"] + "d" : "")).trim() || "no rules") + ' +
			'($parameter["dryRun"] === false ? ", prune" : ", dry run") }}',
		documentationUrl: 'https://github.com/n8n-nodes-libvirt-backup/n8n-nodes-libvirt-backup/blob/main/docs/nodes/prune-old-backups.md',
		description: 'Remove old VM backups by a retention policy',
		defaults: { name: 'Prune Old Backups' },
		usableAsTool: true,
		inputs: [NodeConnectionTypes.Main],
		outputs: [NodeConnectionTypes.Main],
		credentials: [{ name: 'libvirtSshApi', required: true, testedBy: 'libvirtSshConnectionTest' }],
		properties: [
			...fleetProperties,
			destinationProperty,
			vmNamesProperty,
			{
				displayName: 'As a tool for an AI agent this node only reports what would be pruned (dry run): it never removes backups',
				name: 'toolDryRunNotice',
				type: 'notice',
				default: '',
				displayOptions: { show: { '@tool': [true] } },
			},
			{
				displayName: 'Dry Run',
				name: 'dryRun',
				type: 'boolean',
				default: true,
				description:
					'Whether to only report what would be pruned. Turn off to remove backups: protected backups, the newest valid backup of each VM and the backups a kept incremental needs are never removed, and files that are not our backups never touched.',
				displayOptions: { hide: { '@tool': [true] } },
			},
			{
				displayName: 'Consolidate Chains',
				name: 'consolidate',
				type: 'boolean',
				default: true,
				description:
					'Whether to rebuild the oldest kept incremental of a chain into a standalone full when the policy drops the full below it, so that chain can go. Off: a kept incremental keeps its whole chain.',
			},
			...ruleProperties,
			{
				displayName: 'Keep Within',
				name: 'keepWithin',
				type: 'string',
				default: '',
				placeholder: '7d',
				description: 'Keep every backup newer than this: a duration such as 36h, 7d, 2w, 6m, 1y or 1d12h. Empty turns the rule off.',
			},
			{
				displayName: 'Retention Days',
				name: 'retentionDays',
				type: 'number',
				typeOptions: { minValue: 0 },
				default: 0,
				description: 'Shortcut for Keep Within N days (the old "delete backups older than N days"). 0 turns it off.',
			},
			{
				displayName: 'Options',
				name: 'options',
				type: 'collection',
				placeholder: 'Add Option',
				default: {},
				options: [
					{
						displayName: 'If a VM Is Locked',
						name: 'ifLocked',
						type: 'options',
						options: [
							{ name: 'Fail', value: 'fail', description: 'Stop with an error when a backup job holds a VM’s lock' },
							{ name: 'Skip That VM', value: 'skip', description: 'Leave the locked VM’s backups alone this time and prune the others' },
						],
						default: 'fail',
					},
					{
						displayName: 'Output',
						name: 'output',
						type: 'options',
						options: [
							{ name: 'One Item per Backup', value: 'backups', description: 'Vm, ID, path, action (keep/prune), reasons, bytes, freedBytes, removed' },
							{ name: 'One Summary Item', value: 'summary', description: 'Counts, total freedBytes and the pruned paths' },
						],
						default: 'backups',
					},
					{
						displayName: 'Stale Unfinished Backups After (Hours)',
						name: 'staleAfterHours',
						type: 'number',
						typeOptions: { minValue: 1 },
						default: DEFAULT_STALE_AFTER_MS / HOUR_MS,
						description: 'Folders our backups left unfinished (only partial files, no manifest) are removed once they started this long ago',
					},
					{
						displayName: 'Time Zone',
						name: 'timeZone',
						type: 'string',
						default: '',
						placeholder: 'Europe/Berlin',
						description: 'IANA time zone in which hours, days, weeks, months and years are counted. Empty means the workflow’s time zone.',
					},
				],
			},
		],
	};

	methods = { credentialTest: { libvirtSshConnectionTest }, listSearch: { searchVmNames } };

	async execute(this: IExecuteFunctions): Promise<INodeExecutionData[][]> {
		// n8n runs a usableAsTool node as the type `<name>Tool` (convertNodeToAiTool): an AI agent's
		// call, which must never remove backups whatever the workflow JSON says about Dry Run.
		const asTool = this.getNode().type.endsWith('Tool');
		return await executePerItem(this, async (ssh, _host, itemIndex, signal) => {
			const options = this.getNodeParameter('options', itemIndex, {}) as {
				ifLocked?: 'fail' | 'skip';
				output?: 'backups' | 'summary';
				staleAfterHours?: unknown;
				timeZone?: string;
			};
			const policy: RetentionPolicy = {};
			for (const [name, label] of COUNT_RULES) {
				const count = readNumber(this, name, label, itemIndex, 0, { min: 0, max: MAX_KEEP_COUNT, integer: true });
				if (count) Object.assign(policy, { [name]: count });
			}
			const keepWithin = String(this.getNodeParameter('keepWithin', itemIndex, '')).trim();
			if (keepWithin) policy.keepWithin = keepWithin;
			// The engine refuses a window over MAX_WINDOW_YEARS with the field named.
			const retentionDays = readNumber(this, 'retentionDays', 'Retention Days', itemIndex, 0, { min: 0, max: Number.MAX_SAFE_INTEGER, integer: true });
			if (retentionDays) policy.retentionDays = retentionDays;
			const staleAfterHours = checkNumber('Stale Unfinished Backups After (Hours)', options.staleAfterHours ?? DEFAULT_STALE_AFTER_MS / HOUR_MS, {
				min: 1,
				max: MAX_STALE_AFTER_HOURS,
			});

			const result = await pruneBackups(
				ssh,
				{
					dest: String(this.getNodeParameter('destination', itemIndex)),
					vmNames: readVmNames(this, itemIndex),
					policy,
					dryRun: asTool || checkBoolean('Dry Run', this.getNodeParameter('dryRun', itemIndex, true)),
					timeZone: options.timeZone?.trim() || this.getTimezone(),
					staleAfterMs: staleAfterHours * HOUR_MS,
					ifLocked: options.ifLocked ?? 'fail',
					consolidate: checkBoolean('Consolidate Chains', this.getNodeParameter('consolidate', itemIndex, true)),
					lockHolder: `n8n Prune Old Backups (workflow ${this.getWorkflow().id ?? '?'}, execution ${this.getExecutionId()})`,
				},
				signal,
			);
			if (result.dryRun && result.pruned + result.consolidated > 0) {
				const how = asTool ? 'As an AI tool this node never removes backups.' : 'Turn off Dry Run to prune.';
				const what = result.consolidated > 0 ? ` and ${result.consolidated} consolidated, nothing was changed` : ', nothing was removed';
				this.addExecutionHints({ message: `Dry run: ${result.pruned} backup(s) would be pruned${what}. ${how}`, location: 'outputPane' });
			}
			const failed = result.items.filter((item) => item.error);
			if (failed.length > 0) {
				this.addExecutionHints({ message: `${failed.length} planned removal(s) or consolidation(s) did not happen: see the error field of those items`, location: 'outputPane' });
			}
			return options.output === 'summary' ? [summaryItem(result)] : result.items.map(backupItem);
		});
	}
}

function backupItem(item: PruneItem): IDataObject {
	const { vm, id, path, kind, timestamp, action, reasons, bytes, freedBytes, dryRun, removed, consolidated, consolidateFrom, error } = item;
	return {
		vm,
		id,
		path,
		kind,
		timestamp,
		action,
		reasons,
		bytes,
		freedBytes,
		dryRun,
		removed,
		...(action === 'consolidate' ? { consolidated: consolidated ?? false, consolidateFrom } : {}),
		...(error ? { error } : {}),
	};
}

function summaryItem(result: PruneResult): IDataObject {
	const pruned = result.items.filter((item) => item.action === 'prune');
	return {
		destination: result.dest,
		dryRun: result.dryRun,
		backups: result.items.length,
		kept: result.kept,
		pruned: result.pruned,
		consolidated: result.consolidated,
		removed: pruned.filter((item) => item.removed).length,
		freedBytes: result.freedBytes,
		lockedVms: result.lockedVms,
		prunedPaths: pruned.map((item) => item.path),
		errors: result.items.filter((item) => item.error).map((item) => ({ path: item.path, error: item.error ?? '' })),
	};
}
