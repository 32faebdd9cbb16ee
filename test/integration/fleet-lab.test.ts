/**
 * The fleet of lab hosts (scripts/lab/fleet.sh) keeps its promises: three hosts, each reached with
 * its own pinned host key and the fleet's one credential; the same URI shows each host's own VMs
 * only (the same VM name on two hosts does not collide); the same Destination Folder is a separate
 * store per host, proven by real push-mode backups through the engine; a second up.sh leaves a
 * working fleet as it was.
 */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { backupVm, CHECKPOINT_PREFIX, type BackupResult } from '../../lib/backup';
import { isLibvirtBackupError } from '../../lib/errors';
import { listDomains } from '../../lib/libvirt';
import { withSsh } from '../../lib/ssh';
import { fleetLab, fleetSshExec, loadLab, shq, type LabFleetHost } from '../support/lab';
import { fleetTarget } from '../support/targets';

jest.setTimeout(180_000);

const fleet = fleetLab();
const [h1, h2, h3] = fleet.hosts;

/** Runs a command on a fleet host as the fleet user; throws on failure. */
function on(host: LabFleetHost, command: string): string {
	const r = fleetSshExec(host, command);
	if (r.code !== 0) throw new Error(`${host.name}: ${command} exited ${r.code}: ${r.stderr}`);
	return r.stdout;
}

function local(cmd: string, args: string[]): { code: number | null; stdout: string; stderr: string } {
	const r = spawnSync(cmd, args, { encoding: 'utf8' });
	if (r.error) throw r.error;
	return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

test('three hosts, each its own address and its own host key', () => {
	expect(fleet.hosts.map((h) => h.name)).toEqual(['lvb-h1', 'lvb-h2', 'lvb-h3']);
	const fingerprints = [...fleet.hosts.map((h) => h.hostKeyFingerprint), loadLab().hostKeyFingerprint];
	expect(new Set(fingerprints).size).toBe(4);
	expect(new Set(fleet.hosts.map((h) => h.address)).size).toBe(3);
	for (const host of fleet.hosts) expect(on(host, 'hostname').trim()).toBe(host.name);
});

test.each(fleet.hosts.map((h) => [h.name, h] as const))('%s refuses the other hosts’ keys pinned for its address', (_name, host) => {
	for (const other of fleet.hosts.filter((h) => h !== host)) {
		const r = fleetSshExec(host, 'true', { knownHostsLine: `${host.address} ${other.hostPublicKey}` });
		expect(r.code).toBe(255);
		expect(r.stderr).toContain('Host key verification failed');
	}
});

test('one credential and one URI: every host lists only its own VMs (engine discovery and plain virsh)', async () => {
	for (const host of fleet.hosts) {
		const seen = await withSsh(fleetTarget(host), (ssh) => listDomains(ssh, fleet.uri));
		const want = host.vms.map((vm) => ({ name: vm.name, uuid: vm.uuid, state: vm.state === 'shut off' ? 'shutoff' : vm.state }));
		// Other suites may add throwaway VMs (lvb-t-...) to a host: its own VMs must be there, no other host's.
		expect(seen).toEqual(expect.arrayContaining(want));
		const others = fleet.hosts.filter((h) => h !== host).flatMap((h) => h.vms);
		expect(seen.filter((vm) => others.some((o) => o.uuid === vm.uuid || (o.name !== 'app' && o.name === vm.name)))).toEqual([]);
		// The URI the host's sessions get by default is the same one.
		const names = on(host, 'virsh -q list --all --name').split('\n').filter(Boolean);
		expect(names).toEqual(expect.arrayContaining(host.vms.map((vm) => vm.name)));
		expect(names.filter((name) => others.some((o) => o.name !== 'app' && o.name === name))).toEqual([]);
	}
	// `app` exists on every host, as three different VMs with their own disks.
	const apps = fleet.hosts.map((h) => h.vms.find((vm) => vm.name === 'app'));
	expect(apps.every((vm) => vm?.state === 'running')).toBe(true);
	expect(new Set(apps.map((vm) => vm?.uuid)).size).toBe(3);
	expect(new Set(apps.map((vm) => vm?.disks[0].path)).size).toBe(3);
	for (const host of fleet.hosts) {
		const source = on(host, 'virsh -q domblklist app').trim().split(/\s+/)[1];
		expect(source).toBe(host.vms.find((vm) => vm.name === 'app')?.disks[0].path);
	}
});

describe('the same Destination Folder on two hosts', () => {
	const folder = `${fleet.destinationFolder}/jest-fleet-${process.pid}`;
	const results = new Map<LabFleetHost, BackupResult>();
	const checkpoints = (host: LabFleetHost) => on(host, 'virsh -q checkpoint-list app --name').split('\n').filter(Boolean);

	beforeAll(async () => {
		for (const host of [h1, h2]) {
			const request = { uri: fleet.uri, vm: 'app', dest: folder, mode: 'full', compression: 'none', quiesce: 'off', holder: `jest ${process.pid}`, host: host.name } as const;
			// Other suites back up the fleet's VMs too: wait for a job of theirs on this VM to end.
			for (let attempt = 1; ; attempt++) {
				try {
					results.set(host, await withSsh(fleetTarget(host), (ssh) => backupVm(ssh, request)));
					break;
				} catch (e) {
					if (!isLibvirtBackupError(e, 'LOCKED') || attempt === 40) throw e;
					await new Promise((resolve) => setTimeout(resolve, 3000));
				}
			}
		}
	});
	afterAll(() => {
		for (const host of fleet.hosts) fs.rmSync(path.join(host.backupStore, path.basename(folder)), { recursive: true, force: true });
		// This test's checkpoints go with its backups (only these: other suites use the fleet too).
		for (const [host, result] of results) {
			if (result.checkpoint && checkpoints(host).includes(result.checkpoint)) on(host, `virsh -q checkpoint-delete app ${shq(result.checkpoint)}`);
		}
	});

	test('both are push-mode live backups with a checkpoint, at the same path string', () => {
		for (const host of [h1, h2]) {
			const result = results.get(host);
			expect(result).toMatchObject({ vm: 'app', kind: 'full', method: 'push', consistency: 'crash', host: host.name });
			expect(result?.uuid).toBe(host.vms.find((vm) => vm.name === 'app')?.uuid);
			expect(result?.path.startsWith(`${folder}/app/`)).toBe(true);
			expect(checkpoints(host)).toContain(result?.checkpoint);
			expect(result?.checkpoint?.startsWith(CHECKPOINT_PREFIX)).toBe(true);
		}
	});

	test('each lands in its own host’s store, holding that host’s disk; the third host and this machine see none', () => {
		for (const [n, host] of [[1, h1], [2, h2]] as const) {
			const result = results.get(host) as BackupResult;
			const image = path.join(host.backupStore, path.relative(fleet.destinationFolder, result.path), 'vda.qcow2');
			// Per-host data pattern 0xaN: this image is host N's app disk, not another host's.
			const read = local('qemu-io', ['-r', '-U', '-f', 'qcow2', '-c', `read -P 0x${(0xa0 + n).toString(16)} 0 1M`, '-c', `read -P 0x${(0xa0 + n).toString(16)} 16M 2M`, image]);
			expect(read.stderr).toBe('');
			expect(read.stdout).not.toContain('Pattern verification failed');
			// Over SSH, the folder on this host holds exactly this host's backup.
			expect(on(host, `ls ${shq(`${folder}/app`)}`).split('\n').filter(Boolean)).toEqual([result.id]);
		}
		expect(fs.existsSync(path.join(h3.backupStore, path.basename(folder)))).toBe(false);
		expect(on(h3, `ls -A ${shq(fleet.destinationFolder)}`)).not.toContain(path.basename(folder));
		expect(fs.readdirSync(fleet.destinationFolder)).toEqual([]);
	});
});

test('a second up.sh leaves the running fleet as it was: same daemons, same running VMs, still reachable', () => {
	const snapshot = () =>
		fleet.hosts.map((host) => ({
			sshd: fs.readFileSync(`${loadLab().labDir}/run/fleet-${host.name.replace(/^lvb-/, '')}-sshd.pid`, 'utf8').trim(),
			libvirtd: fs.readFileSync(`${host.xdg.runtimeDir}/libvirt/libvirtd.pid`, 'utf8').trim(),
			app: on(host, 'virsh -q domid app').trim(),
		}));
	const before = snapshot();
	const up = local('bash', [path.join(__dirname, '..', '..', 'scripts', 'lab', 'up.sh')]);
	expect(up.code).toBe(0);
	expect(snapshot()).toEqual(before);
	for (const host of fleet.hosts) expect(on(host, 'virsh -q domstate app').trim()).toBe('running');
});

test('netem.sh delays a host’s link and `off` restores the direct path; the host stays reachable with its pinned key', () => {
	const netem = path.join(__dirname, '..', '..', 'scripts', 'lab', 'netem.sh');
	const relayPid = `${loadLab().labDir}/run/fleet-${h3.name.replace(/^lvb-/, '')}-relay.pid`;
	const client = () => on(h3, 'echo "$SSH_CONNECTION"').trim().split(' ')[0];
	try {
		expect(local('bash', [netem, h3.name, '5ms']).code).toBe(0);
		const qdisc = local('tc', ['qdisc', 'show', 'dev', h3.veth]).stdout;
		// Kernels with netem: qdiscs on the veth; without (this lab's machines): the relay in the namespace.
		if (fs.existsSync(relayPid)) expect(client()).toBe(h3.address);
		else expect({ qdisc, client: client() }).toEqual({ qdisc: expect.stringContaining('netem') as unknown as string, client: h3.rootAddress });
	} finally {
		expect(local('bash', [netem, h3.name, 'off']).code).toBe(0);
	}
	expect(fs.existsSync(relayPid)).toBe(false);
	expect(local('tc', ['qdisc', 'show', 'dev', h3.veth]).stdout).not.toContain('netem');
	expect(client()).toBe(h3.rootAddress);
	// The relay's rules are gone, unless another suite's connection still drains through it.
	const draining = fs.readdirSync(path.dirname(relayPid)).some((f) => f.startsWith('fleet-h3-relay-draining-'));
	const rules = local('iptables', ['-w', '-t', 'nat', '-S', 'OUTPUT']).stdout;
	if (!draining) expect(rules).not.toContain('lvb-fleet-netem-h3');
});
