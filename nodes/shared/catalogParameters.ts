/** Parameters List Backups and Prune Old Backups share, with the same names and wording, and their readers. */
import type { IExecuteFunctions, INodeProperties } from 'n8n-workflow';
import { LibvirtBackupError } from '../../lib/errors';
import { listMode, vmNamesInput } from './vmPicker';

export const destinationProperty: INodeProperties = {
	displayName: 'Destination',
	name: 'destination',
	type: 'string',
	required: true,
	default: '',
	placeholder: '/var/backups/libvirt',
	description: 'Absolute path of the backup destination on the host; backups live in <destination>/<VM>/<backup ID>/',
};

/** The VM filter: one VM picked from the host, or names (backups are filed by VM name, so no UUID mode). */
export const vmNamesProperty: INodeProperties = {
	displayName: 'VM Names',
	name: 'vmNames',
	type: 'resourceLocator',
	default: { mode: 'name', value: '' },
	description: 'Only backups of this VM (picked from the host) or of these VMs (by name: comma or newline separated, exact names). Empty means all.',
	modes: [listMode('searchVmNames'), { displayName: 'By Name', name: 'name', type: 'string', placeholder: 'web01, db01' }],
};

/** The VMs to select, or undefined for every VM (see selectVmNames and vmNamesInput). */
export function readVmNames(context: IExecuteFunctions, itemIndex: number): string[] | undefined {
	const { raw, names } = vmNamesInput(context.getNode().parameters.vmNames, context.getNodeParameter('vmNames', itemIndex, ''));
	return selectVmNames(raw, names);
}

/**
 * Every VM only when the field itself is empty. A field that is filled in but names no VM (",", an
 * expression that yields "" or []) is refused: it is what a filter that matched nothing produces,
 * and reading it as "every VM" would prune every VM's backups.
 */
export function selectVmNames(rawParameter: unknown, resolved: unknown): string[] | undefined {
	const names = parseNameList(resolved);
	if (names.length > 0) return names;
	if (rawParameter === undefined || rawParameter === '') return undefined;
	throw new LibvirtBackupError('INVALID_INPUT', `VM Names is set but names no VM (it resolved to ${show(resolved)}). Leave the field empty to select every VM.`, { field: 'vmNames' });
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

export interface NumberLimits {
	min: number;
	max: number;
	integer?: boolean;
}

/** A number parameter as typed or as an expression made it (a decimal string is accepted). */
export function readNumber(context: IExecuteFunctions, name: string, label: string, itemIndex: number, fallback: number, limits: NumberLimits): number {
	return checkNumber(label, context.getNodeParameter(name, itemIndex, fallback), limits);
}

/** NaN, text, Infinity or a value out of range is an error naming the parameter, never dropped. */
export function checkNumber(label: string, value: unknown, { min, max, integer = false }: NumberLimits): number {
	const number = typeof value === 'number' ? value : typeof value === 'string' && /^\s*-?\d+(\.\d+)?\s*$/.test(value) ? Number(value) : Number.NaN;
	if (!(number >= min && number <= max) || (integer && !Number.isInteger(number))) {
		throw new LibvirtBackupError('INVALID_INPUT', `${label} must be a ${integer ? 'whole number' : 'number'} from ${min} to ${max}, got ${show(value)}`);
	}
	return number;
}

/** Only a real boolean: an expression yielding "" or "false" must not silently pick a side. */
export function checkBoolean(label: string, value: unknown): boolean {
	if (typeof value !== 'boolean') throw new LibvirtBackupError('INVALID_INPUT', `${label} must be true or false, got ${show(value)}`);
	return value;
}

function show(value: unknown): string {
	return typeof value === 'string' || Array.isArray(value) ? JSON.stringify(value) : String(value);
}
