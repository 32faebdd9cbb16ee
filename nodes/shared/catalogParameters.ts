/** Parameters List Backups and Prune Old Backups share, with the same names and wording. */
import type { IExecuteFunctions, INodeProperties } from 'n8n-workflow';

export const destinationProperty: INodeProperties = {
	displayName: 'Destination',
	name: 'destination',
	type: 'string',
	required: true,
	default: '',
	placeholder: '/var/backups/libvirt',
	description: 'Absolute path of the backup destination on the host; backups live in <destination>/<VM>/<backup ID>/',
};

export const vmNamesProperty: INodeProperties = {
	displayName: 'VM Names',
	name: 'vmNames',
	type: 'string',
	default: '',
	placeholder: 'web01, db01',
	description: 'Only backups of these VMs (comma or newline separated, exact names). Empty means all.',
};

export function readVmNames(context: IExecuteFunctions, itemIndex: number): string[] {
	return String(context.getNodeParameter('vmNames', itemIndex, ''))
		.split(/[,\n]/)
		.map((name) => name.trim())
		.filter(Boolean);
}
