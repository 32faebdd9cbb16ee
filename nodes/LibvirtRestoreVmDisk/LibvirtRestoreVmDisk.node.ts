import { NodeConnectionTypes, NodeHelpers, NodeOperationError, type IDataObject, type IExecuteFunctions, type INodeExecutionData, type INodeProperties, type INodeType, type INodeTypeDescription } from 'n8n-workflow';
import { MAX_TIMEOUT_MINUTES } from '../../lib/backup';
import { restoreBackup, type RestoreRequest, type ShutdownFirst } from '../../lib/restore';
import type { SshConnection } from '../../lib/ssh';
import { checkBoolean, checkNumber } from '../shared/catalogParameters';
import { libvirtSshConnectionTest } from '../shared/connectionTest';
import { executePerItem } from '../shared/execute';
import type { LibvirtHost } from '../shared/target';
import { INSTANT_OPERATIONS, instantOperationOptions, instantProperties, runInstantOperation } from './instant';
import { fleetProperties } from '../shared/fleetParameters';

const restoreOnly = { show: { operation: ['restore'] } };

/** The parameters of the Restore operation. */
const restoreProperties: INodeProperties[] = [
	{
		displayName: 'Restore To',
		name: 'target',
		type: 'options',
		displayOptions: restoreOnly,
		options: [
			{ name: 'Original Disks', value: 'original', description: "Over the VM's own disk files (the VM must be shut off, or Shut Down First set)" },
			{ name: 'Folder', value: 'folder', description: 'New files in a folder on the host, optionally as a new VM' },
		],
		default: 'original',
	},
	{
		displayName: 'Folder',
		name: 'folder',
		type: 'string',
		displayOptions: { show: { operation: ['restore'], target: ['folder'] } },
		default: '',
		required: true,
		placeholder: '/var/lib/libvirt/images/restored',
		description: 'Absolute folder on the host (created if missing). A file that exists there is never replaced: the restore is refused instead.',
	},
	{
		displayName: 'Disks',
		name: 'disks',
		type: 'string',
		displayOptions: restoreOnly,
		default: '',
		placeholder: 'vda, vdb',
		description: 'Disk targets to restore, comma separated. Empty means every disk of the backup.',
	},
	{
		displayName: 'Shut Down First',
		name: 'shutdownFirst',
		type: 'options',
		displayOptions: { show: { operation: ['restore'], target: ['original'] } },
		options: [
			{ name: 'No (Refuse a Running VM)', value: 'no' },
			{ name: 'Graceful (ACPI)', value: 'graceful', description: 'Ask the guest to shut down; the restore fails if it is still running at the timeout' },
			{ name: 'Graceful, Then Force Off', value: 'graceful-then-force', description: 'Ask the guest to shut down, power it off at the timeout' },
			{ name: 'Force Off', value: 'force', description: 'Power the VM off at once (like pulling the plug)' },
		],
		default: 'no',
		description: 'What to do when the VM is running or paused. A guest without an OS or ACPI support never answers a graceful shutdown.',
	},
	{
		displayName: 'Shutdown Timeout (Seconds)',
		name: 'shutdownTimeoutSeconds',
		type: 'number',
		typeOptions: { minValue: 1, maxValue: 3600 },
		displayOptions: { show: { operation: ['restore'], target: ['original'], shutdownFirst: ['graceful', 'graceful-then-force'] } },
		default: 120,
	},
	{
		displayName: 'Define New VM',
		name: 'defineNewVm',
		type: 'boolean',
		displayOptions: { show: { operation: ['restore'], target: ['folder'] } },
		default: false,
		description: "Whether to define a new VM on the restored disks from the backup's saved domain.xml (new name, new UUID, new MAC addresses; disks not restored are left out)",
	},
	{
		displayName: 'New VM Name',
		name: 'newVmName',
		type: 'string',
		displayOptions: { show: { operation: ['restore'], target: ['folder'], defineNewVm: [true] } },
		default: '',
		required: true,
		description: "Name of the new VM: must not exist on the host; no '/' or control characters",
	},
	{
		displayName: 'Start New VM',
		name: 'startNewVm',
		type: 'boolean',
		displayOptions: { show: { operation: ['restore'], target: ['folder'], defineNewVm: [true] } },
		default: false,
		description: 'Whether to start the new VM once it is defined',
	},
	{
		displayName: 'Force (Restore an Invalid Backup)',
		name: 'force',
		type: 'boolean',
		displayOptions: restoreOnly,
		default: false,
		description:
			'Whether to restore a backup whose latest verification found it invalid, or whose images do not match their manifest (the result says so in its warnings). Off: such a restore is refused and nothing is changed.',
	},
	{
		displayName: 'Timeout (Minutes)',
		name: 'timeoutMinutes',
		type: 'number',
		typeOptions: { minValue: 1, maxValue: MAX_TIMEOUT_MINUTES },
		displayOptions: restoreOnly,
		default: 240,
		description: `Longest the restore may take before it is stopped on the host and its temp files removed (at most ${MAX_TIMEOUT_MINUTES}, 7 days)`,
	},
];

export class LibvirtRestoreVmDisk implements INodeType {
	description: INodeTypeDescription = {
		displayName: 'Restore VM Disk',
		name: 'libvirtRestoreVmDisk',
		icon: { light: 'file:../icons/libvirt.svg', dark: 'file:../icons/libvirt.dark.svg' },
		group: ['transform'],
		version: 1,
		subtitle: '={{$parameter["operation"] + ($parameter["target"] ? " to " + $parameter["target"] : "")}}',
		documentationUrl: 'https://github.com/n8n-nodes-libvirt-backup/n8n-nodes-libvirt-backup/blob/main/docs/nodes/restore-vm-disk.md',
		description: 'Restore a VM backup onto its disks, into a folder or as a new VM',
		defaults: { name: 'Restore VM Disk' },
		usableAsTool: true,
		inputs: [NodeConnectionTypes.Main],
		outputs: [NodeConnectionTypes.Main],
		credentials: [{ name: 'libvirtSshApi', required: true, testedBy: 'libvirtSshConnectionTest' }],
		properties: [
			{
				displayName: 'Operation',
				name: 'operation',
				type: 'options',
				noDataExpression: true,
				options: [
					{ name: 'Restore', value: 'restore', action: 'Restore a backup to disks', description: 'Rebuild the backup into standalone disk images' },
					...instantOperationOptions,
				],
				default: 'restore',
			},
			...fleetProperties,
			{
				displayName: 'Backup Path',
				name: 'backupPath',
				type: 'string',
				required: true,
				displayOptions: restoreOnly,
				default: '={{ $json.path }}',
				placeholder: '/var/backups/libvirt/web01/20261128T144300Z',
				description: 'Folder of the backup on the host: the path field of a Backup VM Disk or List Backups item, or a path typed here',
			},
			{
				displayName: 'As an AI agent tool, Restore VM Disk only restores into a folder: it never replaces the disks of an existing VM',
				name: 'toolNotice',
				type: 'notice',
				default: '',
				displayOptions: { show: { '@tool': [true] } },
			},
			...restoreProperties,
			...instantProperties,
		],
	};

	methods = { credentialTest: { libvirtSshConnectionTest } };

	async execute(this: IExecuteFunctions): Promise<INodeExecutionData[][]> {
		const holder = `n8n Restore VM Disk (execution ${this.getExecutionId() ?? '?'}, workflow "${this.getWorkflow().name ?? this.getWorkflow().id}")`;
		return await executePerItem(this, async (ssh, host, itemIndex, signal) => {
			const operation = this.getNodeParameter('operation', itemIndex, 'restore') as string;
			if (operation === 'restore') return [await restore(this, ssh, host, itemIndex, holder, signal)];
			if ((INSTANT_OPERATIONS as readonly string[]).includes(operation)) return await runInstantOperation(this, ssh, host, itemIndex, operation, signal);
			throw new NodeOperationError(this.getNode(), `Unknown operation "${operation}"`, { itemIndex });
		});
	}
}

async function restore(context: IExecuteFunctions, ssh: SshConnection, { uri }: LibvirtHost, itemIndex: number, holder: string, signal?: AbortSignal): Promise<IDataObject> {
	const backupPath = String(context.getNodeParameter('backupPath', itemIndex, '')).trim();
	if (!backupPath) throw new NodeOperationError(context.getNode(), 'No backup path: connect a Backup VM Disk or List Backups node, or enter the backup folder', { itemIndex });
	const target = context.getNodeParameter('target', itemIndex) as RestoreRequest['target'];
	// An agent decides on its own when to call a tool: it may add disks, never overwrite a VM's.
	if (target === 'original' && NodeHelpers.isToolType(context.getNode().type)) {
		throw new NodeOperationError(context.getNode(), 'As an AI agent tool, Restore VM Disk only restores into a folder', { itemIndex });
	}
	const defineNewVm = target === 'folder' && checkBoolean('Define New VM', context.getNodeParameter('defineNewVm', itemIndex, false));
	const request: RestoreRequest = {
		target,
		disks: String(context.getNodeParameter('disks', itemIndex, ''))
			.split(',')
			.map((disk) => disk.trim())
			.filter(Boolean),
		force: checkBoolean('Force', context.getNodeParameter('force', itemIndex, false)),
		...(target === 'folder' ? { folder: String(context.getNodeParameter('folder', itemIndex, '')) } : { shutdownFirst: context.getNodeParameter('shutdownFirst', itemIndex, 'no') as ShutdownFirst }),
		...(defineNewVm ? { newVmName: String(context.getNodeParameter('newVmName', itemIndex, '')), startNewVm: checkBoolean('Start New VM', context.getNodeParameter('startNewVm', itemIndex, false)) } : {}),
	};
	const graceful = request.shutdownFirst === 'graceful' || request.shutdownFirst === 'graceful-then-force';
	const result = await restoreBackup(ssh, {
		uri,
		backupPath,
		request,
		shutdownTimeoutMs: graceful ? checkNumber('Shutdown Timeout (Seconds)', context.getNodeParameter('shutdownTimeoutSeconds', itemIndex, 120), { min: 1, max: 3600 }) * 1000 : undefined,
		timeoutMs: checkNumber('Timeout (Minutes)', context.getNodeParameter('timeoutMinutes', itemIndex, 240), { min: 1, max: MAX_TIMEOUT_MINUTES }) * 60_000,
		holder,
		signal,
	});
	return result as unknown as IDataObject;
}
