import {
	NodeConnectionTypes,
	type IExecuteFunctions,
	type INodeExecutionData,
	type INodeType,
	type INodeTypeDescription,
} from 'n8n-workflow';
import { discoverVms, type DiscoveryFilter } from '../../lib/libvirt';
import { parseNameList } from '../shared/catalogParameters';
import { libvirtSshConnectionTest } from '../shared/connectionTest';
import { executePerItem } from '../shared/execute';
import { discoveredVmItem } from '../shared/items';
import { fleetProperties } from '../shared/fleetParameters';

export class LibvirtDiscoverVms implements INodeType {
	description: INodeTypeDescription = {
		displayName: 'Discover VMs',
		name: 'libvirtDiscoverVms',
		icon: { light: 'file:../icons/libvirt.svg', dark: 'file:../icons/libvirt.dark.svg' },
		group: ['input'],
		version: 1,
		subtitle: '={{$parameter["state"] === "any" ? "all VMs" : $parameter["state"] + " VMs"}}',
		documentationUrl: 'https://github.com/n8n-nodes-libvirt-backup/n8n-nodes-libvirt-backup/blob/main/docs/nodes/discover-vms.md',
		description: 'List the VMs of a libvirt host with their state and disks',
		defaults: { name: 'Discover VMs' },
		usableAsTool: true,
		inputs: [NodeConnectionTypes.Main],
		outputs: [NodeConnectionTypes.Main],
		credentials: [{ name: 'libvirtSshApi', required: true, testedBy: 'libvirtSshConnectionTest' }],
		properties: [
			...fleetProperties,
			{
				displayName: 'VM Names',
				name: 'names',
				type: 'string',
				default: '',
				placeholder: 'web01, db01',
				description: 'Only these VMs (comma or newline separated, exact names). Empty means all.',
			},
			{
				displayName: 'Name Regex',
				name: 'nameRegex',
				type: 'string',
				default: '',
				placeholder: '^prod-',
				description:
					'Only VMs whose name matches this regular expression (JavaScript syntax without backreferences or lookaround; matched in linear time by RE2)',
			},
			{
				displayName: 'State',
				name: 'state',
				type: 'options',
				options: [
					{ name: 'Any', value: 'any' },
					{ name: 'Running', value: 'running' },
					{ name: 'Shut Off', value: 'shutoff' },
					{ name: 'Paused', value: 'paused' },
				],
				default: 'any',
			},
			{
				displayName: 'Persistence',
				name: 'persistence',
				type: 'options',
				options: [
					{ name: 'Any', value: 'any' },
					{ name: 'Persistent (Defined)', value: 'persistent' },
					{ name: 'Transient', value: 'transient' },
				],
				default: 'any',
			},
			{
				displayName: 'Exclude Device Types',
				name: 'excludeDeviceTypes',
				type: 'multiOptions',
				options: [
					{ name: 'CD-ROM', value: 'cdrom' },
					{ name: 'Floppy', value: 'floppy' },
					{ name: 'LUN', value: 'lun' },
				],
				default: ['cdrom', 'floppy'],
				description: 'Disks of these device types are left out of the output',
			},
		],
	};

	methods = { credentialTest: { libvirtSshConnectionTest } };

	async execute(this: IExecuteFunctions): Promise<INodeExecutionData[][]> {
		return await executePerItem(this, async (ssh, { uri, name: hostName }, itemIndex, signal) => {
			const { vms } = await discoverVms(ssh, uri, readFilter(this, itemIndex), signal);
			if (vms.length === 0) {
				this.addExecutionHints({ message: `No VMs found on ${hostName} (${uri}) for these filters`, location: 'outputPane' });
			}
			return vms.map((vm) => discoveredVmItem(vm, hostName));
		});
	}
}

function readFilter(context: IExecuteFunctions, itemIndex: number): DiscoveryFilter {
	const names = parseNameList(context.getNodeParameter('names', itemIndex, ''));
	return {
		names,
		nameRegex: String(context.getNodeParameter('nameRegex', itemIndex, '')) || undefined,
		state: context.getNodeParameter('state', itemIndex, 'any') as DiscoveryFilter['state'],
		persistence: context.getNodeParameter('persistence', itemIndex, 'any') as DiscoveryFilter['persistence'],
		excludeDevices: context.getNodeParameter('excludeDeviceTypes', itemIndex, ['cdrom', 'floppy']) as string[],
	};
}
