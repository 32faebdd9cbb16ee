import {
	NodeConnectionTypes,
	type IDataObject,
	type IExecuteFunctions,
	type INodeExecutionData,
	type INodeType,
	type INodeTypeDescription,
} from 'n8n-workflow';
import type { BackupKind } from '../../lib/store/manifest';
import { listCatalog, type CatalogBackup, type CatalogFilter } from '../../lib/catalog';
import { describeInstantUse } from '../../lib/store/instant';
import { libvirtSshConnectionTest } from '../shared/connectionTest';
import { executePerItem } from '../shared/execute';
import { searchVmNames } from '../shared/vmPicker';
import { MAX_WINDOW_YEARS } from '../../lib/retention';
import { checkNumber, destinationProperty, readVmNames, vmNamesProperty } from '../shared/catalogParameters';
import { fleetProperties } from '../shared/fleetParameters';

const DAY_MS = 86_400_000;
const DAYS = { min: 0, max: Math.floor(MAX_WINDOW_YEARS * 365.2425) };

export class LibvirtListBackups implements INodeType {
	description: INodeTypeDescription = {
		displayName: 'List Backups',
		name: 'libvirtListBackups',
		icon: { light: 'file:../icons/libvirt.svg', dark: 'file:../icons/libvirt.dark.svg' },
		group: ['input'],
		version: 1,
		subtitle: '={{$parameter["destination"]}}',
		documentationUrl: 'https://github.com/n8n-nodes-libvirt-backup/n8n-nodes-libvirt-backup/blob/main/docs/nodes/list-backups.md',
		description: 'List the backups in a destination folder on a libvirt host',
		defaults: { name: 'List Backups' },
		usableAsTool: true,
		inputs: [NodeConnectionTypes.Main],
		outputs: [NodeConnectionTypes.Main],
		credentials: [{ name: 'libvirtSshApi', required: true, testedBy: 'libvirtSshConnectionTest' }],
		properties: [
			...fleetProperties,
			destinationProperty,
			vmNamesProperty,
			{
				displayName: 'Kinds',
				name: 'kinds',
				type: 'multiOptions',
				options: [
					{ name: 'Full', value: 'full' },
					{ name: 'Incremental', value: 'incremental' },
					{ name: 'Copy', value: 'copy' },
				],
				default: [],
				description: 'Only backups of these kinds. Empty means all.',
			},
			{
				displayName: 'Options',
				name: 'options',
				type: 'collection',
				placeholder: 'Add Option',
				default: {},
				options: [
					{
						displayName: 'Include Incomplete',
						name: 'includeIncomplete',
						type: 'boolean',
						default: false,
						description:
							'Whether to also output folders that look like backups but have no valid manifest, as items with incomplete: true and the reason. Otherwise they are only counted in a hint.',
					},
					{
						displayName: 'Include Quarantined',
						name: 'includeQuarantined',
						type: 'boolean',
						default: false,
						description: 'Whether to also output backups quarantined after a failed verification, as items with quarantined: true',
					},
					{
						displayName: 'Newer Than (Days)',
						name: 'newerThanDays',
						type: 'number',
						typeOptions: { minValue: 0 },
						default: 0,
						description: 'Only backups started within this many days. 0 means no limit.',
					},
					{
						displayName: 'Older Than (Days)',
						name: 'olderThanDays',
						type: 'number',
						typeOptions: { minValue: 0 },
						default: 0,
						description: 'Only backups started more than this many days ago. 0 means no limit.',
					},
				],
			},
		],
	};

	methods = { credentialTest: { libvirtSshConnectionTest }, listSearch: { searchVmNames } };

	async execute(this: IExecuteFunctions): Promise<INodeExecutionData[][]> {
		return await executePerItem(this, async (ssh, { name: hostName }, itemIndex, signal) => {
			const options = this.getNodeParameter('options', itemIndex, {}) as {
				includeIncomplete?: boolean;
				includeQuarantined?: boolean;
				newerThanDays?: unknown;
				olderThanDays?: unknown;
			};
			const now = Date.now();
			const newerThanDays = checkNumber('Newer Than (Days)', options.newerThanDays ?? 0, DAYS);
			const olderThanDays = checkNumber('Older Than (Days)', options.olderThanDays ?? 0, DAYS);
			const filter: CatalogFilter = {
				vmNames: readVmNames(this, itemIndex),
				kinds: this.getNodeParameter('kinds', itemIndex, []) as BackupKind[],
				newerThan: newerThanDays ? new Date(now - newerThanDays * DAY_MS) : undefined,
				olderThan: olderThanDays ? new Date(now - olderThanDays * DAY_MS) : undefined,
			};
			const catalog = await listCatalog(ssh, String(this.getNodeParameter('destination', itemIndex)), filter, signal);

			const items: IDataObject[] = catalog.backups.map((backup) => backupItem(backup, hostName));
			if (options.includeIncomplete) {
				items.push(...catalog.incomplete.map(({ path, vm, id, reason }) => ({ incomplete: true, path, vm, id, reason, host: hostName })));
			}
			if (options.includeQuarantined) {
				items.push(...catalog.quarantined.map(({ path, vm, id }) => ({ quarantined: true, path, vm, id, host: hostName })));
			}
			const leftOut = [
				!options.includeIncomplete && catalog.incomplete.length > 0 ? `${catalog.incomplete.length} incomplete folder(s)` : '',
				!options.includeQuarantined && catalog.quarantined.length > 0 ? `${catalog.quarantined.length} quarantined backup(s)` : '',
			].filter(Boolean);
			if (leftOut.length > 0) {
				this.addExecutionHints({ message: `${catalog.dest} also holds ${leftOut.join(' and ')}, not listed as backups (see the node options)`, location: 'outputPane' });
			}
			if (catalog.backups.length === 0) this.addExecutionHints({ message: `No backups found in ${catalog.dest} for these filters`, location: 'outputPane' });
			return items;
		});
	}
}

/** The item a workflow gets for one backup (what Verify Checksum, Export and Restore take). */
function backupItem(backup: CatalogBackup, host: string): IDataObject {
	const { manifest, verification } = backup;
	return {
		vm: backup.vm,
		vmUuid: manifest.vm.uuid,
		id: backup.id,
		timestamp: manifest.startedAt,
		finishedAt: manifest.finishedAt,
		kind: manifest.kind,
		parent: manifest.parent ?? null,
		method: manifest.method,
		consistency: manifest.consistency,
		disks: manifest.disks.map(({ target, file, format, virtualBytes, bytes, sha256 }) => ({ target, file, format, virtualBytes, bytes, sha256 })),
		totalBytes: manifest.disks.reduce((total, disk) => total + disk.bytes, 0),
		diskBytes: backup.diskBytes,
		verified: verification === undefined ? 'never' : verification.status === 'unverifiable' ? 'unverifiable' : verification.ok ? 'ok' : 'failed',
		verifiedAt: verification?.verifiedAt ?? null,
		protected: backup.protected,
		// Instant-recovery VMs running on it: Prune keeps it while there are any.
		inUseBy: (backup.inUse ?? []).map(describeInstantUse),
		path: backup.path,
		destination: backup.dest,
		host,
	};
}
