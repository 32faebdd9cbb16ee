import {
	NodeConnectionTypes,
	NodeHelpers,
	NodeOperationError,
	type IExecuteFunctions,
	type INodeExecutionData,
	type INodeType,
	type INodeTypeDescription,
} from 'n8n-workflow';
import { BackupVerifier, type InvalidAction } from '../../lib/catalog';
import { libvirtSshConnectionTest } from '../shared/connectionTest';
import { executeRouted } from '../shared/executeRouted';
import { verifiedItem } from '../shared/items';
import { fleetProperties } from '../shared/fleetParameters';
import type { SshConnection } from '../../lib/ssh';

const VALID = 0;
const INVALID = 1;

export class LibvirtVerifyChecksum implements INodeType {
	description: INodeTypeDescription = {
		displayName: 'Verify Checksum',
		name: 'libvirtVerifyChecksum',
		icon: { light: 'file:../icons/libvirt.svg', dark: 'file:../icons/libvirt.dark.svg' },
		group: ['transform'],
		version: 1,
		subtitle: '={{"if invalid: " + $parameter["onInvalid"]}}',
		documentationUrl: 'https://github.com/n8n-nodes-libvirt-backup/n8n-nodes-libvirt-backup/blob/main/docs/nodes/verify-checksum.md',
		description: 'Check a backup against its checksums and qemu-img check',
		defaults: { name: 'Verify Checksum' },
		usableAsTool: true,
		inputs: [NodeConnectionTypes.Main],
		outputs: [NodeConnectionTypes.Main, NodeConnectionTypes.Main],
		outputNames: ['Valid', 'Invalid'],
		credentials: [{ name: 'libvirtSshApi', required: true, testedBy: 'libvirtSshConnectionTest' }],
		properties: [
			...fleetProperties,
			{
				displayName: 'Backup Path',
				name: 'backupPath',
				type: 'string',
				required: true,
				default: '={{ $json.path }}',
				placeholder: '/var/backups/libvirt/web01/20261128T144300Z',
				description: 'Folder of the backup on the host: the path field of a Backup VM Disk or List Backups item, or a path typed here',
			},
			{
				displayName: 'As an AI agent tool, Verify Checksum only reports: a backup that fails verification is always kept',
				name: 'toolNotice',
				type: 'notice',
				default: '',
				displayOptions: { show: { '@tool': [true] } },
			},
			{
				displayName: 'If Invalid',
				name: 'onInvalid',
				type: 'options',
				displayOptions: { show: { '@tool': [false] } },
				options: [
					{ name: 'Keep', value: 'keep', description: 'Leave the backup where it is (its failed result is recorded next to its manifest)' },
					{
						name: 'Quarantine',
						value: 'quarantine',
						description: 'Rename the folder to <ID>.quarantined: kept for inspection, never listed or used as a good backup',
					},
					{ name: 'Delete', value: 'delete', description: 'Remove the backup folder from the host' },
				],
				default: 'keep',
				description:
					'What to do with a backup whose damage is proven (a hash differs, qemu-img check finds corruption, an image or its parent backup is gone). An unverifiable backup is always kept, and so is the last backup of a VM not known to be invalid.',
			},
			{
				displayName: 'Re-Hash Whole Chain',
				name: 'rehashChain',
				type: 'boolean',
				default: false,
				description:
					'Whether to re-hash every backup an incremental builds on. Off: a parent whose own verification record says it was verified valid earlier is trusted (its folder and images must still be there) and only the others are re-hashed, so a nightly Verify reads only the new images.',
			},
		],
	};

	methods = { credentialTest: { libvirtSshConnectionTest } };

	async execute(this: IExecuteFunctions): Promise<INodeExecutionData[][]> {
		const items = this.getInputData();
		// One verifier per host connection (it remembers which parents it already checked there).
		const verifiers = new Map<SshConnection, BackupVerifier>();
		return await executeRouted(this, 2, INVALID, async (ssh, _host, itemIndex, signal) => {
			const verifier = verifiers.get(ssh) ?? new BackupVerifier(ssh);
			verifiers.set(ssh, verifier);
			const backupPath = String(this.getNodeParameter('backupPath', itemIndex, ''));
			if (!backupPath.trim()) {
				throw new NodeOperationError(this.getNode(), 'No backup path: connect a Backup VM Disk or List Backups node, or enter the backup folder', { itemIndex });
			}
			// An agent decides on its own when to call a tool: it may report, never remove.
			const asTool = NodeHelpers.isToolType(this.getNode().type);
			const result = await verifier.verify(backupPath, {
				onInvalid: asTool ? 'keep' : (this.getNodeParameter('onInvalid', itemIndex, 'keep') as InvalidAction),
				lockHolder: `n8n Verify Checksum (workflow ${this.getWorkflow().id ?? '?'}, execution ${this.getExecutionId()})`,
				rehashChain: this.getNodeParameter('rehashChain', itemIndex, false) === true,
				signal,
			});
			return [{ output: result.valid ? VALID : INVALID, json: verifiedItem(items[itemIndex].json, result) }];
		});
	}
}
