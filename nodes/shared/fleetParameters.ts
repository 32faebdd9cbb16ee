/** The Host and Hosts in Parallel parameters every node has: one credential drives a fleet (executeRouted). */
import type { INodeProperties } from 'n8n-workflow';
import { DEFAULT_HOSTS_IN_PARALLEL } from './executeRouted';

export const MAX_HOSTS_IN_PARALLEL = 32;

export const hostProperty: INodeProperties = {
	displayName: 'Host',
	name: 'host',
	type: 'string',
	default: '',
	placeholder: "e.g. {{ $json.host }} or kvm02.example.com:22",
	description:
		"The libvirt host for each item, instead of the credential's host (empty: the credential's). Use an expression to drive a fleet from a list of hosts with one credential: its user, key and sudo mode are used on every host, and each host must present a key pinned for it (its known_hosts line in the credential).",
};

export const hostsInParallelProperty: INodeProperties = {
	displayName: 'Hosts in Parallel',
	name: 'hostsInParallel',
	type: 'number',
	typeOptions: { minValue: 1, maxValue: MAX_HOSTS_IN_PARALLEL },
	default: DEFAULT_HOSTS_IN_PARALLEL,
	displayOptions: { hide: { host: [''] } },
	description: 'How many different hosts are worked on at once. The items of one host always run one after another, in their order; the output keeps the input order.',
};

export const fleetProperties: INodeProperties[] = [hostProperty, hostsInParallelProperty];
