import type { IDataObject, IExecuteFunctions, INodeExecutionData, INodeType, INodeTypeDescription } from 'n8n-workflow';
import { NodeConnectionTypes } from 'n8n-workflow';
import { backupVm, MAX_NEW_FULL_DAYS, MAX_NEW_FULL_INCREMENTALS, MAX_TIMEOUT_MINUTES, type BackupMode, type BackupRequest } from '../../lib/backup';
import type { Quiesce } from '../../lib/libvirt';
import { libvirtSshConnectionTest } from '../shared/connectionTest';
import { executePerItem } from '../shared/execute';
import { backupItem } from '../shared/items';
import { disksProperty, diskTargets, getVmDisks, readVm, searchVms, vmProperty } from '../shared/vmPicker';
import { fleetProperties } from '../shared/fleetParameters';

export class LibvirtBackupVmDisk implements INodeType {
	description: INodeTypeDescription = {
		displayName: 'Backup VM Disk',
		name: 'libvirtBackupVmDisk',
		icon: { light: 'file:../icons/libvirt.svg', dark: 'file:../icons/libvirt.dark.svg' },
		group: ['transform'],
		version: 1,
		subtitle: '={{$parameter["mode"] + " backup to " + $parameter["destination"]}}',
		documentationUrl: 'https://github.com/n8n-nodes-libvirt-backup/n8n-nodes-libvirt-backup/blob/main/docs/nodes/backup-vm-disk.md',
		description: 'Back up the disks of a libvirt VM, live or shut off, with checksums',
		defaults: { name: 'Backup VM Disk' },
		usableAsTool: true,
		inputs: [NodeConnectionTypes.Main],
		outputs: [NodeConnectionTypes.Main],
		credentials: [{ name: 'libvirtSshApi', required: true, testedBy: 'libvirtSshConnectionTest' }],
		properties: [
			...fleetProperties,
			vmProperty,
			{
				displayName: 'Destination Folder',
				name: 'destination',
				type: 'string',
				default: '/mnt/storage/backups/vm_backups',
				required: true,
				description: 'Absolute folder on the host. Each backup goes to <folder>/<VM>/<UTC time>/ with its manifest.',
			},
			{
				displayName: 'Mode',
				name: 'mode',
				type: 'options',
				options: [
					{ name: 'Auto', value: 'auto', description: 'Incremental when a valid chain exists, else full' },
					{ name: 'Full', value: 'full', description: 'A complete backup that starts a new incremental chain' },
					{ name: 'Incremental', value: 'incremental', description: 'Only blocks changed since the last backup (falls back to full with a warning)' },
					{ name: 'Copy', value: 'copy', description: 'A standalone full backup that leaves the incremental chain alone' },
				],
				default: 'auto',
			},
			{
				displayName: 'New Full Backup After (Incrementals)',
				name: 'newFullAfterIncrementals',
				type: 'number',
				typeOptions: { minValue: 0, maxValue: MAX_NEW_FULL_INCREMENTALS },
				displayOptions: { show: { mode: ['auto'] } },
				default: 7,
				description: 'Start a new chain with a full backup once the chain holds this many incrementals (0: no limit)',
			},
			{
				displayName: 'New Full Backup After (Days)',
				name: 'newFullAfterDays',
				type: 'number',
				typeOptions: { minValue: 0, maxValue: MAX_NEW_FULL_DAYS },
				displayOptions: { show: { mode: ['auto'] } },
				default: 7,
				description: "Start a new chain with a full backup once the chain's full backup is this many days old (0: no limit)",
			},
			disksProperty,
			{
				displayName: 'Compression',
				name: 'compression',
				type: 'options',
				options: [
					{ name: 'None', value: 'none' },
					{ name: 'Qcow2 Compressed', value: 'qcow2-compressed', description: 'Smaller files, more CPU on the host; not for incrementals' },
				],
				default: 'none',
			},
			{
				displayName: 'Quiesce',
				name: 'quiesce',
				type: 'options',
				options: [
					{ name: 'Auto', value: 'auto', description: 'Freeze guest filesystems when the guest agent answers, else crash-consistent' },
					{ name: 'Require', value: 'require', description: 'Fail unless the guest agent freezes the filesystems' },
					{ name: 'Off', value: 'off', description: 'Never freeze: crash-consistent' },
				],
				default: 'auto',
			},
			{
				displayName: 'Live Method',
				name: 'method',
				type: 'options',
				options: [
					{ name: 'Auto', value: 'auto', description: 'Push-mode backup job when the host has it (libvirt >= 7.2), else snapshot' },
					{ name: 'Push Backup Job', value: 'push', description: 'Virsh backup-begin: one point in time, the VM definition never changes, incrementals possible' },
					{ name: 'Snapshot + Blockcommit', value: 'snapshot', description: 'For older hosts: overlays while the disks are copied, then merged back; full backups only' },
				],
				default: 'auto',
				description: 'How a running or paused VM is copied (a shut-off VM is always copied directly)',
			},
			{
				displayName: 'Timeout (Minutes)',
				name: 'timeoutMinutes',
				type: 'number',
				typeOptions: { minValue: 1, maxValue: MAX_TIMEOUT_MINUTES },
				default: 240,
				description: `Longest a single copy step may take before it is stopped on the host and the backup is discarded (at most ${MAX_TIMEOUT_MINUTES}, 7 days)`,
			},
		],
	};

	methods = { credentialTest: { libvirtSshConnectionTest }, listSearch: { searchVms }, loadOptions: { getVmDisks } };

	async execute(this: IExecuteFunctions): Promise<INodeExecutionData[][]> {
		const holder = `n8n execution ${this.getExecutionId() ?? '?'} (workflow "${this.getWorkflow().name ?? this.getWorkflow().id}")`;
		// Error items name the VM: the one the engine found, else the one asked for, else the input's.
		const vms = new Map<number, { vm: string; uuid: string | null }>();
		return await executePerItem(this, async (ssh, { uri, name: hostName }, itemIndex, signal) => {
			const mode = this.getNodeParameter('mode', itemIndex) as BackupMode;
			const request: BackupRequest = {
				uri,
				vm: readVm(this, itemIndex),
				dest: String(this.getNodeParameter('destination', itemIndex)),
				mode,
				newFullAfter: mode === 'auto' ? { incrementals: Number(this.getNodeParameter('newFullAfterIncrementals', itemIndex, 7)), days: Number(this.getNodeParameter('newFullAfterDays', itemIndex, 7)) } : undefined,
				disks: diskTargets(this.getNodeParameter('disks', itemIndex, [])),
				compression: this.getNodeParameter('compression', itemIndex) as BackupRequest['compression'],
				quiesce: this.getNodeParameter('quiesce', itemIndex) as Quiesce,
				method: this.getNodeParameter('method', itemIndex, 'auto') as BackupRequest['method'],
				timeoutMs: Number(this.getNodeParameter('timeoutMinutes', itemIndex, 240)) * 60_000,
				holder,
				host: hostName,
			};
			vms.set(itemIndex, { vm: request.vm, uuid: null });
			let lastLogged = -10;
			const result = await backupVm(ssh, request, {
				signal,
				onVm: ({ name, uuid }) => vms.set(itemIndex, { vm: name, uuid }),
				onProgress: (progress) => {
					if (progress.percent >= lastLogged + 10 || progress.phase !== 'copy') {
						lastLogged = progress.phase === 'copy' ? progress.percent : lastLogged;
						this.logger.info(`Backup VM Disk: ${request.vm}: ${progress.message}`);
					}
				},
			});
			return [backupItem(result)];
		}, { errorJson: (input, message, itemIndex) => ({ ...(vms.get(itemIndex) ?? vmOfInput(input)), error: message }) });
	}
}

/** The VM an input item names: a Discover VMs item (name, uuid), a List Backups item (vm, vmUuid) or `{ vm }`. */
function vmOfInput(input: IDataObject): { vm: string | null; uuid: string | null } {
	const text = (value: unknown) => (typeof value === 'string' && value !== '' ? value : null);
	return { vm: text(input.name) ?? text(input.vm), uuid: text(input.uuid) ?? text(input.vmUuid) };
}
