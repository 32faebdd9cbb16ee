/**
 * Restore VM Disk's instant-recovery operations (Instant Recover, Make Permanent, Discard): their
 * options, parameters and the per-item call into lib/restore/instant.ts. The node file lists the
 * options and parameters and routes these three operations here.
 */
import { NodeOperationError, type IDataObject, type IExecuteFunctions, type INodeProperties, type INodePropertyOptions } from 'n8n-workflow';
import { discardInstant, instantRecover, makePermanent } from '../../lib/restore/instant';
import type { SshConnection } from '../../lib/ssh';
import type { LibvirtHost } from '../shared/target';

export const INSTANT_OPERATIONS = ['instantRecover', 'makePermanent', 'discard'] as const;

export const instantOperationOptions: INodePropertyOptions[] = [
	{
		name: 'Instant Recover',
		value: 'instantRecover',
		action: 'Boot a VM straight from a backup',
		description:
			'Define a new VM on qcow2 overlays over the read-only backup images and start it: running in seconds whatever the disk size, nothing copied. The backup is kept from Prune while the VM runs on it.',
	},
	{
		name: 'Make Permanent',
		value: 'makePermanent',
		action: 'Make an instant recovery VM permanent',
		description: 'Merge an instant-recovery VM’s disks into standalone images (live, while it keeps running, or offline when shut off); then its overlays and the backup’s in-use markers go',
	},
	{
		name: 'Discard',
		value: 'discard',
		action: 'Discard an instant recovery VM',
		description: 'Power off and remove an instant-recovery VM, its overlays and the backup’s in-use markers; the backup itself is never written',
	},
];

const show = (...operation: string[]) => ({ show: { operation } });

export const instantProperties: INodeProperties[] = [
	{
		displayName: 'Backup Path',
		name: 'instantBackupPath',
		type: 'string',
		required: true,
		default: '={{ $json.path }}',
		placeholder: '/var/backups/libvirt/web01/20261128T144300Z',
		description: 'Folder of the backup to boot (full or incremental): the path field of a List Backups or Backup VM Disk item',
		displayOptions: show('instantRecover'),
	},
	{
		displayName: 'New VM Name',
		name: 'instantVmName',
		type: 'string',
		required: true,
		default: '',
		placeholder: 'web01-recovered',
		description: 'Name of the new VM, defined from the backup’s saved domain.xml with a new UUID and new MAC addresses. A VM of that name must not exist.',
		displayOptions: show('instantRecover'),
	},
	{
		displayName: 'Overlay Folder',
		name: 'instantOverlayFolder',
		type: 'string',
		required: true,
		default: '',
		placeholder: '/var/lib/libvirt/images/instant',
		description:
			'Folder on the host for the overlays the VM writes to (made if missing). Not inside the backup destination: that may be a share others write, and Prune manages it. The VM’s writes land here, so give it room for what the guest will change.',
		displayOptions: show('instantRecover'),
	},
	{
		displayName: 'Start VM',
		name: 'instantStart',
		type: 'boolean',
		default: true,
		description: 'Whether to start the new VM once it is defined',
		displayOptions: show('instantRecover'),
	},
	{
		displayName: 'Verify First',
		name: 'instantVerifyFirst',
		type: 'boolean',
		default: true,
		description:
			'Whether to hash the backup’s images before booting when no earlier valid verification vouches for them. A backup Verify Checksum found valid earlier boots at once; otherwise every image of the backup (and of each parent not verified before) is read in full first: as long as reading those images once at the disk’s speed, so the VM starts that much later. A backup whose latest verification found it invalid is always refused.',
		displayOptions: show('instantRecover'),
	},
	{
		displayName: 'VM',
		name: 'instantDomain',
		type: 'string',
		required: true,
		default: '={{ $json.uuid }}',
		placeholder: 'web01-recovered',
		description: 'Name or UUID of the instant-recovery VM (the uuid field of an Instant Recover item). Only VMs made by Instant Recover are accepted.',
		displayOptions: show('makePermanent', 'discard'),
	},
	{
		displayName: 'Disk Folder',
		name: 'instantDiskFolder',
		type: 'string',
		required: true,
		default: '',
		placeholder: '/var/lib/libvirt/images',
		description: 'Folder on the host for the standalone disks (made if missing; not inside the backup destination). Files are named <VM>.<target>.qcow2; an existing file is never replaced.',
		displayOptions: show('makePermanent'),
	},
	{
		displayName: 'Backup Path (VM Already Gone)',
		name: 'instantStaleBackupPath',
		type: 'string',
		default: '',
		placeholder: '/var/backups/libvirt/web01/20261128T144300Z',
		description:
			'Only for a VM that was removed by hand and left its in-use markers (Prune keeps the backup, saying "in use by instant-recovery VM … (domain <UUID>)"): give that UUID as VM and the backup here to clear the markers. Leave empty otherwise.',
		displayOptions: show('discard'),
	},
];

function text(context: IExecuteFunctions, name: string, itemIndex: number, label: string, required = true): string {
	const value = String(context.getNodeParameter(name, itemIndex, '') ?? '').trim();
	if (required && value === '') throw new NodeOperationError(context.getNode(), `${label} is empty`, { itemIndex });
	return value;
}

/** One item of an instant-recovery operation; the result goes to the node's main output. */
export async function runInstantOperation(
	context: IExecuteFunctions,
	ssh: SshConnection,
	host: LibvirtHost,
	itemIndex: number,
	operation: string,
	signal?: AbortSignal,
): Promise<IDataObject[]> {
	const holder = `n8n Restore VM Disk (workflow ${context.getWorkflow().id ?? '?'}, execution ${context.getExecutionId()})`;
	switch (operation) {
		case 'instantRecover': {
			const result = await instantRecover(
				ssh,
				{
					uri: host.uri,
					backupPath: text(context, 'instantBackupPath', itemIndex, 'Backup Path'),
					name: text(context, 'instantVmName', itemIndex, 'New VM Name'),
					overlayDir: text(context, 'instantOverlayFolder', itemIndex, 'Overlay Folder'),
					start: context.getNodeParameter('instantStart', itemIndex, true) === true,
					verifyFirst: context.getNodeParameter('instantVerifyFirst', itemIndex, true) === true,
					lockHolder: holder,
				},
				signal,
			);
			return [result as unknown as IDataObject];
		}
		case 'makePermanent': {
			const result = await makePermanent(ssh, { uri: host.uri, domain: text(context, 'instantDomain', itemIndex, 'VM'), targetDir: text(context, 'instantDiskFolder', itemIndex, 'Disk Folder') }, signal);
			return [result as unknown as IDataObject];
		}
		case 'discard': {
			const backupPath = text(context, 'instantStaleBackupPath', itemIndex, 'Backup Path', false);
			const result = await discardInstant(ssh, { uri: host.uri, domain: text(context, 'instantDomain', itemIndex, 'VM'), ...(backupPath ? { backupPath } : {}) }, signal);
			return [result as unknown as IDataObject];
		}
		default:
			throw new NodeOperationError(context.getNode(), `Unknown instant-recovery operation ${JSON.stringify(operation)}`, { itemIndex });
	}
}
