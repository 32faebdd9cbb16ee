// Integration: one credential, several hosts (the Host parameter, one connection per host, Hosts in
// Parallel), through the REAL n8n engine in-process against the lab's two real sshds: the main lab
// host and the replica host (its own address, port and host key). Needs `npm run build` and the lab.
import * as fs from 'node:fs';
import type { IConnections, IDataObject, INode } from 'n8n-workflow';
import { fleetLab, fleetSshExec, loadLab, shq, type Lab, type LabFleet, type LabFleetHost } from '../support/lab';
import { makeDest, removeDest } from '../support/backupFixtures';
import { InProcessN8n, type CredentialStore, type InProcessRun, type WorkflowJson } from '../support/n8n-inprocess';
import { labCredentialData } from '../support/targets';

jest.setTimeout(180_000);

const PACKAGE = 'n8n-nodes-libvirt-backup';
const TRIGGER = 'When clicking ‘Execute workflow’';
const CREDENTIAL = 'fleetCredential01';

let lab: Lab;
let n8n: InProcessN8n;
let main: string;
let replica: string;

/** The lab credential with both hosts' known_hosts lines pinned (or only the given ones). */
function credentials(hostKeys = `${lab.knownHostsLine}\n${lab.replicaHost!.knownHostsLine}`): CredentialStore {
	return { [CREDENTIAL]: { type: 'libvirtSshApi', data: labCredentialData({ hostKeys }) } };
}

/** Manual Trigger -> Items (the given items) -> our node (-> a second node of ours, `Next`). */
function workflow(items: IDataObject[], type: string, parameters: Record<string, unknown>, continueOnFail = false, next?: { type: string; parameters: Record<string, unknown> }): WorkflowJson {
	const nodes: INode[] = [
		{ id: 'trigger', name: TRIGGER, type: 'n8n-nodes-base.manualTrigger', typeVersion: 1, position: [0, 0], parameters: {} },
		{ id: 'items', name: 'Hosts', type: 'lvb-test.items', typeVersion: 1, position: [200, 0], parameters: { items: JSON.stringify(items) } },
		{
			id: 'node',
			name: 'Node',
			type: `${PACKAGE}.${type}`,
			typeVersion: 1,
			position: [400, 0],
			parameters: parameters as INode['parameters'],
			credentials: { libvirtSshApi: { id: CREDENTIAL, name: 'fleet' } },
			...(continueOnFail ? { onError: 'continueRegularOutput' as const } : {}),
		},
	];
	const connections: IConnections = {
		[TRIGGER]: { main: [[{ node: 'Hosts', type: 'main', index: 0 }]] },
		Hosts: { main: [[{ node: 'Node', type: 'main', index: 0 }]] },
	};
	if (next) {
		nodes.push({ ...nodes[2], id: 'next', name: 'Next', type: `${PACKAGE}.${next.type}`, position: [600, 0], parameters: next.parameters as INode['parameters'], onError: 'continueRegularOutput' });
		connections.Node = { main: [[{ node: 'Next', type: 'main', index: 0 }]] };
	}
	return { nodes, connections };
}

function output(result: InProcessRun, node = 'Node', outputIndex = 0): Array<{ json: IDataObject; item: number }> {
	const items = result.run.data.resultData.runData[node]?.[0]?.data?.main?.[outputIndex] ?? [];
	return items.map((entry) => ({ json: entry.json, item: (entry.pairedItem as { item: number }).item }));
}

const discover = (extra: Record<string, unknown> = {}) => ({ host: '={{ $json.host }}', nameRegex: '^lvb-(running|paused)$', ...extra });

beforeAll(async () => {
	lab = loadLab();
	if (!lab.replicaHost) throw new Error('lab.json has no replicaHost: run scripts/lab/up.sh');
	main = `${lab.host}:${lab.port}`;
	replica = `${lab.replicaHost.host}:${lab.replicaHost.port}`;
	n8n = await InProcessN8n.create();
});

afterAll(async () => {
	await n8n?.shutdown();
});

describe('Host per item', () => {
	test('each item runs on the host it names; the items keep their order and their host', async () => {
		const result = await n8n.run(workflow([{ host: main }, { host: replica }, { host: main }], 'libvirtDiscoverVms', discover()), { credentials: credentials() });
		expect(result.error).toBeUndefined();
		const items = output(result);
		// Both sshds reach the same libvirtd: two VMs per host item, in input order, each saying which host it came from.
		expect(items.map(({ item, json }) => [item, json.name, json.host])).toEqual([
			[0, 'lvb-paused', main],
			[0, 'lvb-running', main],
			[1, 'lvb-paused', replica],
			[1, 'lvb-running', replica],
			[2, 'lvb-paused', main],
			[2, 'lvb-running', main],
		]);
	});

	test('an empty Host means the credential host, as before', async () => {
		const result = await n8n.run(workflow([{}], 'libvirtDiscoverVms', discover({ host: '' })), { credentials: credentials() });
		expect(result.error).toBeUndefined();
		expect(output(result).map(({ json }) => json.host)).toEqual([lab.host, lab.host]);
	});

	test('a host whose key is not pinned for it fails its own items only, with a clear error', async () => {
		const result = await n8n.run(workflow([{ host: main }, { host: replica }, { host: main }], 'libvirtDiscoverVms', discover(), true), {
			credentials: credentials(lab.knownHostsLine),
		});
		const items = output(result);
		expect(items.filter(({ item }) => item !== 1).map(({ json }) => json.name)).toEqual(['lvb-paused', 'lvb-running', 'lvb-paused', 'lvb-running']);
		const failed = items.filter(({ item }) => item === 1);
		expect(failed).toHaveLength(1);
		expect(failed[0].json.error).toMatch(new RegExp(`None of the credential's pinned host keys is for ${replica.replace(/\./g, '\\.')}.*presented ${lab.replicaHost!.hostKeyFingerprint.replace(/[+/]/g, '\\$&')}`));
	});

	test("a key pinned under another host's name is no pin for this host", async () => {
		// The replica host's own key, but on a line that names the main host: a fleet credential binds
		// each key to its host, so the replica host is refused (a credential for one host, as before,
		// still takes any of its pinned keys).
		const replicaKeyNamedMain = lab.replicaHost!.knownHostsLine.replace(/^\S+/, `[${lab.host}]:${lab.port}`);
		const result = await n8n.run(workflow([{ host: replica }, { host: main }], 'libvirtDiscoverVms', discover(), true), {
			credentials: credentials(`${lab.knownHostsLine}\n${replicaKeyNamedMain}`),
		});
		const items = output(result);
		expect(items.filter(({ item }) => item === 0)).toEqual([{ item: 0, json: { error: expect.stringMatching(/^None of the credential's pinned host keys is for 127\.0\.0\.2:/) } }]);
		expect(items.filter(({ item }) => item === 1)).toHaveLength(2);
	});

	test('bad and hostile Host values are errors for their items, and never reach a shell', async () => {
		const hostile = ['a;touch /tmp/lvb-pwned', '$(touch /tmp/lvb-pwned)', 'web01\nevil', '../etc', '-oProxyCommand=x', `${lab.host}:99999`, `${lab.host}:0`, 'a b'];
		const result = await n8n.run(workflow([...hostile.map((host) => ({ host })), { host: main }], 'libvirtDiscoverVms', discover(), true), { credentials: credentials() });
		const items = output(result);
		for (let index = 0; index < hostile.length; index++) {
			const own = items.filter(({ item }) => item === index);
			expect(own).toEqual([{ item: index, json: { error: expect.stringMatching(/^Host ".*" (is not a host name or address|has a port that is not 1-65535)/) } }]);
		}
		expect(items.filter(({ item }) => item === hostile.length).map(({ json }) => json.name)).toEqual(['lvb-paused', 'lvb-running']);
		expect(fs.existsSync('/tmp/lvb-pwned')).toBe(false);
	});

	test('an unreachable host fails its items; without continueOnFail the run fails naming it', async () => {
		const down = '127.0.0.1:1';
		const tolerant = await n8n.run(workflow([{ host: down }, { host: replica }], 'libvirtDiscoverVms', discover(), true), { credentials: credentials() });
		const items = output(tolerant);
		expect(items.filter(({ item }) => item === 0)).toEqual([{ item: 0, json: { error: expect.stringMatching(/Cannot reach 127\.0\.0\.1:1: connection refused/) } }]);
		expect(items.filter(({ item }) => item === 1)).toHaveLength(2);

		const strict = await n8n.run(workflow([{ host: replica }, { host: down }], 'libvirtDiscoverVms', discover()), { credentials: credentials() });
		expect(strict.run.status).toBe('error');
		expect(strict.error?.message).toMatch(/Cannot reach 127\.0\.0\.1:1/);
	});
});

describe('Hosts in Parallel', () => {
	let dest: string;
	beforeEach(() => {
		dest = makeDest();
	});
	afterEach(() => removeDest(dest));

	/** Backs up two shut-off VMs, one on each host, and returns each backup's [start, end] in ms. */
	async function backupTwo(hostsInParallel: number): Promise<Array<[number, number]>> {
		const items = [
			{ host: main, vm: 'lvb-off-chain' },
			{ host: replica, vm: 'lvb-odd-disks' },
		];
		const parameters = { host: '={{ $json.host }}', hostsInParallel, vm: '={{ $json.vm }}', destination: dest, mode: 'full' };
		const result = await n8n.run(workflow(items, 'libvirtBackupVmDisk', parameters), { credentials: credentials() });
		expect(result.error).toBeUndefined();
		const backups = output(result);
		expect(backups.map(({ item, json }) => [item, json.vm, json.host])).toEqual([
			[0, 'lvb-off-chain', main],
			[1, 'lvb-odd-disks', replica],
		]);
		return backups.map(({ json }) => [Date.parse(String(json.startedAt)), Date.parse(String(json.finishedAt))]);
	}

	test('with 1, the second host starts after the first finished; with 2, both hosts work at once', async () => {
		const [first, second] = await backupTwo(1);
		expect(second[0]).toBeGreaterThanOrEqual(first[1]);
		const [a, b] = await backupTwo(2);
		// Overlapping intervals: each started before the other finished.
		expect(a[0]).toBeLessThan(b[1]);
		expect(b[0]).toBeLessThan(a[1]);
	});
});

describe('several hosts, each with its own libvirt and store (the fleet lab)', () => {
	let fleet: LabFleet;
	let dest: string;
	const sub = `host-per-item-${process.pid}`;
	const address = (host: LabFleetHost) => `${host.address}:${host.port}`;

	beforeAll(() => {
		fleet = fleetLab();
		dest = `${fleet.destinationFolder}/${sub}`;
		for (const host of fleet.hosts) expect(fleetSshExec(host, `mkdir -p -- ${shq(dest)}`).code).toBe(0);
	});
	afterAll(() => {
		for (const host of fleet?.hosts ?? []) fleetSshExec(host, `rm -rf -- ${shq(dest)}`);
	});

	function fleetCredentials(): CredentialStore {
		const [first] = fleet.hosts;
		return {
			[CREDENTIAL]: {
				type: 'libvirtSshApi',
				data: {
					host: first.address,
					port: first.port,
					username: fleet.user.username,
					authMethod: 'privateKey',
					privateKey: fleet.user.privateKey,
					hostKeys: fleet.hosts.map((host) => host.knownHostsLine).join('\n'),
					skipHostKeyVerification: false,
					sudoMode: 'none',
					libvirtUri: fleet.uri,
				},
			},
		};
	}

	test('Backup then Verify on two hosts: each item is verified on its own host (the same path on each)', async () => {
		// Defect found by the fleet e2e: Verify kept the first host's connection for every item, so a
		// backup on the second host was "not found" there.
		const [h1, h2] = fleet.hosts;
		const web = (host: LabFleetHost) => host.vms.find((vm) => vm.state === 'shut off')!.name;
		const items = [
			{ host: address(h1), vm: web(h1) },
			{ host: address(h2), vm: web(h2) },
		];
		const result = await n8n.run(
			workflow(items, 'libvirtBackupVmDisk', { host: '={{ $json.host }}', hostsInParallel: 1, vm: '={{ $json.vm }}', destination: dest, mode: 'full' }, false, {
				type: 'libvirtVerifyChecksum',
				parameters: { host: '={{ $json.host }}', hostsInParallel: 1 },
			}),
			{ credentials: fleetCredentials() },
		);
		expect(result.error).toBeUndefined();
		expect(output(result, 'Next', 1)).toEqual([]);
		expect(output(result, 'Next', 0).map(({ json }) => [json.host, json.vm, json.valid])).toEqual([
			[address(h1), web(h1), true],
			[address(h2), web(h2), true],
		]);
	});

	test('Discover on every host: each lists its own VMs only', async () => {
		const result = await n8n.run(workflow(fleet.hosts.map((host) => ({ host: address(host) })), 'libvirtDiscoverVms', { host: '={{ $json.host }}' }), { credentials: fleetCredentials() });
		expect(result.error).toBeUndefined();
		const found = output(result).map(({ item, json }) => [item, json.host, json.name, json.uuid]);
		const expected = fleet.hosts.flatMap((host, index) => [...host.vms].sort((a, b) => a.name.localeCompare(b.name)).map((vm) => [index, address(host), vm.name, vm.uuid]));
		expect(found).toEqual(expected);
	});
});
