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
	return parseNameList(context.getNodeParameter('vmNames', itemIndex, ''));
}

/**
 * A list of VM names from a parameter: an array (from an expression) is taken as is; text with
 * commas or line breaks is split and each name trimmed; a single name is taken EXACTLY, so a VM
 * whose name starts or ends with a space (libvirt allows it) can still be selected, e.g. by
 * `{{ $json.vm }}`.
 */
export function parseNameList(value: unknown): string[] {
	if (Array.isArray(value)) return value.map(String).filter((name) => name !== '');
	const text = String(value ?? '');
	if (!/[,\n]/.test(text)) return text.trim() === '' ? [] : [text];
	return text
		.split(/[,\n]/)
		.map((name) => name.trim())
		.filter(Boolean);
}
