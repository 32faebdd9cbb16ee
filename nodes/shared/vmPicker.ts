/**
 * The VM picker of the nodes that take a VM: a resource locator (from a list of the host's VMs, by
 * name, by UUID, or an expression), the list and disk options the editor loads over the node's
 * credential, and the readers execute() uses.
 *
 * Workflows saved before the picker hold plain strings (`"vm": "={{ $json.name }}"`, `"disks":
 * "vda, vdb"`): n8n hands a plain string for a resourceLocator or multiOptions parameter through
 * unchanged (n8n-core's extractValue and getNodeParameter touch only `{ __rl, mode, value }`
 * objects), so the readers here take both forms and resolve them to the string used before.
 */
import {
	NodeOperationError,
	type IDataObject,
	type IExecuteFunctions,
	type ILoadOptionsFunctions,
	type INodeListSearchItems,
	type INodeListSearchResult,
	type INodeProperties,
	type INodePropertyOptions,
} from 'n8n-workflow';
import { formatBytes } from '../../lib/format';
import { LibvirtBackupError } from '../../lib/errors';
import { discoverVms, listDomains, type HostDomain } from '../../lib/libvirt';
import { withSsh, type SshConnection } from '../../lib/ssh';
import { hostForItem, hostFromCredentials } from './target';

const UUID_REGEX = '[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}';
const UUID = new RegExp(`^${UUID_REGEX}$`);

/** The "From List" mode of a VM resource locator, listing the host's VMs with the given method. */
export const listMode = (searchListMethod: string) => ({
	displayName: 'From List',
	name: 'list',
	type: 'list' as const,
	placeholder: 'Select a VM...',
	typeOptions: { searchListMethod, searchable: true },
});

/** Backup VM Disk's VM. From the list the value is the UUID: it survives a rename and is never ambiguous. */
export const vmProperty: INodeProperties = {
	displayName: 'VM',
	name: 'vm',
	type: 'resourceLocator',
	default: { mode: 'name', value: '={{ $json.uuid || $json.name }}' },
	required: true,
	description: 'The VM to back up: pick it from the host, or give its name or UUID. The default takes the UUID (else the name) of the incoming item, e.g. from Discover VMs.',
	modes: [
		listMode('searchVms'),
		{ displayName: 'By Name', name: 'name', type: 'string', placeholder: 'web01', hint: 'The exact VM name (a UUID is accepted too)' },
		{
			displayName: 'By UUID',
			name: 'id',
			type: 'string',
			placeholder: '4dea22b3-1d52-d8f3-2516-782e98ab3fa0',
			validation: [{ type: 'regex', properties: { regex: UUID_REGEX, errorMessage: 'Not a UUID: 32 hex digits as 8-4-4-4-12' } }],
		},
	],
};

/**
 * Backup VM Disk's disks: the chosen VM's disks, or names typed or given by an expression. Arbitrary
 * values are allowed so that the editor does not flag "vda, vdb" saved by the former text field, nor
 * disks of a VM that only an expression names (its list stays empty).
 */
export const disksProperty: INodeProperties = {
	displayName: 'Disks',
	name: 'disks',
	type: 'multiOptions',
	typeOptions: { loadOptionsMethod: 'getVmDisks', loadOptionsDependsOn: ['vm.value'] },
	allowArbitraryValues: true,
	default: [],
	description:
		'Disk targets to back up (the chosen VM\'s disks); empty means every disk that can be backed up. Choose from the list, or specify IDs using an <a href="https://docs.n8n.io/code/expressions/">expression</a>.',
	hint: 'An expression may give a list or comma-separated targets, e.g. vda, vdb',
};

interface VmReference {
	mode: string;
	value: string;
}

function isLocatorValue(value: unknown): value is IDataObject & { value: unknown } {
	return typeof value === 'object' && value !== null && !Array.isArray(value) && 'value' in value;
}

/** A resolved parameter value as { mode, value }; a plain string (saved before the picker) is mode 'legacy'. */
export function vmReference(resolved: unknown): VmReference {
	const [mode, value] = isLocatorValue(resolved) ? [typeof resolved.mode === 'string' ? resolved.mode : 'name', resolved.value] : ['legacy', resolved];
	return { mode, value: value === undefined || value === null ? '' : String(value) };
}

/** The name or UUID Backup VM Disk hands the engine, as the plain string field gave it before. */
export function vmForBackup(resolved: unknown): string {
	const { mode, value } = vmReference(resolved);
	// A name is taken exactly: libvirt allows spaces at either end, and a trimmed name can be another VM.
	const vm = mode === 'name' ? value : value.trim();
	// The editor checks the pattern only for typed values: one an expression gives is checked here.
	if (mode === 'id' && !UUID.test(vm)) throw new LibvirtBackupError('INVALID_INPUT', `VM "By UUID" is not a UUID: ${JSON.stringify(value)}`, { field: 'vm' });
	return vm;
}

export function readVm(context: IExecuteFunctions, itemIndex: number): string {
	return vmForBackup(context.getNodeParameter('vm', itemIndex));
}

/** The disk targets: a list from the options, or text split on commas as the string field did. */
export function diskTargets(resolved: unknown): string[] {
	const parts = Array.isArray(resolved) ? resolved.map((disk) => String(disk)) : String(resolved ?? '').split(',');
	return parts.map((disk) => disk.trim()).filter(Boolean);
}

/**
 * The VM Names filter as selectVmNames takes it: what was typed (to tell an empty field from one
 * that names nothing) and what it resolved to (an expression may give a list). A VM picked from
 * the list is one exact name, never split on commas.
 */
export function vmNamesInput(raw: unknown, resolved: unknown): { raw: unknown; names: unknown } {
	const typed = isLocatorValue(raw) ? raw.value : raw;
	if (!isLocatorValue(resolved)) return { raw: typed, names: resolved };
	if (resolved.mode === 'list') return { raw: typed, names: resolved.value === '' || resolved.value === undefined || resolved.value === null ? [] : [String(resolved.value)] };
	return { raw: typed, names: resolved.value };
}

const ESCAPES: Record<string, string> = { '\n': '\\n', '\r': '\\r', '\t': '\\t' };

/** One display line whatever the name holds: a VM name may contain line breaks and control characters. */
export function printable(name: string): string {
	return name.replace(/[\p{Cc}\u2028\u2029]/gu, (char) => ESCAPES[char] ?? `\\u${char.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

/**
 * Runs `read` over the node's credential, on the node's Host when it is typed as a fixed value (an
 * expression has no item to resolve against here: then the credential's host); a failure says which
 * host could not be read, and what to do.
 */
async function onHost<T>(context: ILoadOptionsFunctions, read: (ssh: SshConnection, uri: string) => Promise<T>): Promise<T> {
	const typedHost = context.getCurrentNodeParameter('host');
	const fixedHost = typeof typedHost === 'string' && !typedHost.startsWith('=') ? typedHost : '';
	const { target, uri } = hostForItem(hostFromCredentials(await context.getCredentials('libvirtSshApi')), fixedHost);
	try {
		return await withSsh(target, async (ssh) => await read(ssh, uri));
	} catch (error) {
		const message = error instanceof Error ? error.message : String(error);
		throw new NodeOperationError(context.getNode(), `Could not read the VMs of ${target.username}@${target.host}:${target.port} (${uri}): ${message}`, {
			description: 'Check the Libvirt SSH credential (its Test button says what fails), or give the VM by name or UUID instead.',
		});
	}
}

async function searchList(context: ILoadOptionsFunctions, filter: string | undefined, value: (vm: HostDomain) => string): Promise<INodeListSearchResult> {
	const wanted = (filter ?? '').trim().toLowerCase();
	const vms = (await onHost(context, async (ssh, uri) => await listDomains(ssh, uri))).filter(
		(vm) => wanted === '' || vm.name.toLowerCase().includes(wanted) || vm.uuid.toLowerCase().includes(wanted),
	);
	return { results: vms.map((vm): INodeListSearchItems => ({ name: `${printable(vm.name)} (${vm.state})`, value: value(vm) })) };
}

export async function searchVms(this: ILoadOptionsFunctions, filter?: string): Promise<INodeListSearchResult> {
	return await searchList(this, filter, (vm) => vm.uuid);
}

export async function searchVmNames(this: ILoadOptionsFunctions, filter?: string): Promise<INodeListSearchResult> {
	return await searchList(this, filter, (vm) => vm.name);
}

/** The chosen VM's disks; none while no VM is chosen or it comes from an expression (known only at run time). */
export async function getVmDisks(this: ILoadOptionsFunctions): Promise<INodePropertyOptions[]> {
	const { value } = vmReference(this.getCurrentNodeParameter('vm'));
	const vm = value.trim();
	if (vm === '' || vm.startsWith('=')) return [];
	const [found] = (await onHost(this, async (ssh, uri) => await discoverVms(ssh, uri, { domains: [vm], excludeDevices: [] }))).vms;
	return (found?.disks ?? []).map((disk) => ({
		name: `${disk.target} (${[disk.device, disk.format, disk.virtualBytes === null ? undefined : formatBytes(disk.virtualBytes)].filter(Boolean).join(', ')})`,
		value: disk.target,
		description: disk.backupable ? printable(disk.source.path ?? disk.type) : `Cannot be backed up: ${disk.reason ?? 'unknown reason'}`,
	}));
}
