/**
 * Discovery through the lab's real sshd against real libvirtd (qemu:///system) and the libvirt
 * test driver (a fleet of 500 domains, hostile names).
 */
import { discoverVms, type DiscoveredVm } from '../../lib/libvirt';
import { quoteArg } from '../../lib/shell';
import { withSsh, type SshConnection } from '../../lib/ssh';
import { libvirtSshConnectionTest } from '../../nodes/shared/connectionTest';
import { loadLab, sshExec, type LabVmState } from '../support/lab';
import { labCredentialData, labTarget, type LabUser } from '../support/targets';

jest.setTimeout(120_000);

const STATE: Record<LabVmState, string> = { running: 'running', paused: 'paused', 'shut off': 'shutoff' };

/** What qemu-img on the host says about a file, read independently of our code. */
function qemuImgInfo(path: string): { 'virtual-size': number; 'actual-size': number }[] {
	return JSON.parse(sshExec('root', `qemu-img info --output=json -U --backing-chain -- ${quoteArg(path)}`).stdout);
}

function discover(uri: string, filter = {}, user: LabUser = 'root') {
	return withSsh(labTarget(user), (ssh: SshConnection) => discoverVms(ssh, uri, { excludeDevices: ['cdrom', 'floppy'], ...filter }));
}

function byName(vms: DiscoveredVm[]): Map<string, DiscoveredVm> {
	return new Map(vms.map((vm) => [vm.name, vm]));
}

describe('Discover VMs on real libvirtd', () => {
	const lab = loadLab();
	let vms: Map<string, DiscoveredVm>;
	let execs: number;

	beforeAll(async () => {
		const result = await discover(lab.systemUri);
		vms = byName(result.vms);
		execs = result.sshExecs;
	});

	// Domains; qcow2/raw headers of every image; qemu-img for the block device and the backing files.
	test('reports every lab VM with its state, identity and disks in three SSH execs', () => {
		expect(execs).toBe(3);
		for (const expected of lab.vms) {
			const vm = vms.get(expected.name);
			expect(vm).toBeDefined();
			expect(vm).toMatchObject({ uuid: expected.uuid, state: STATE[expected.state], persistent: true });
			const disks = expected.disks.filter((disk) => disk.device === 'disk');
			expect(vm!.disks.map((disk) => [disk.target, disk.type, disk.format])).toEqual(disks.map((disk) => [disk.target, disk.type, disk.format]));
		}
	});

	test('disk sizes and backing chains equal what qemu-img info says on the host', () => {
		for (const expected of lab.vms) {
			for (const disk of expected.disks.filter((d) => d.type === 'file' && d.device === 'disk' && d.path)) {
				const found = vms.get(expected.name)!.disks.find((d) => d.target === disk.target)!;
				const [top, ...chain] = qemuImgInfo(disk.path!);
				expect([found.virtualBytes, found.allocatedBytes]).toEqual([top['virtual-size'], top['actual-size']]);
				expect(found.backingChain.map((layer) => layer.path)).toEqual(disk.backingChain);
				expect(found.backingChain.map((layer) => layer.allocatedBytes)).toEqual(chain.map((layer) => layer['actual-size']));
			}
		}
	});

	test('totals add up the disks and their backing files', () => {
		const vm = vms.get('lvb-off-chain')!;
		const expected = vm.disks.reduce((sum, disk) => sum + disk.allocatedBytes! + disk.backingChain.reduce((s, l) => s + l.allocatedBytes, 0), 0);
		expect(vm.totalAllocatedBytes).toBe(expected);
		expect(vm.totalVirtualBytes).toBe(vm.disks.reduce((sum, disk) => sum + disk.virtualBytes!, 0));
		expect(vm.disks[0].backingChain).toHaveLength(2);
	});

	test('a network disk is reported with a reason, not dropped; block devices are backupable', () => {
		const vm = vms.get('lvb-odd-disks')!;
		const network = vm.disks.find((disk) => disk.type === 'network')!;
		expect(network).toMatchObject({ backupable: false, reason: expect.stringMatching(/^network disk \(nbd/) });
		expect(vm.backupable).toBe(false);
		expect(vm.reasons).toEqual([`${network.target}: ${network.reason}`]);
		const block = vm.disks.find((disk) => disk.type === 'block')!;
		expect(block).toMatchObject({ backupable: true, format: 'raw' });
		expect(block.virtualBytes).toBeGreaterThan(0);
	});

	test('the cdrom is left out by default and reported with a reason when asked for', async () => {
		expect(vms.get('lvb-odd-disks')!.disks.some((disk) => disk.device === 'cdrom')).toBe(false);
		const [vm] = (await discover(lab.systemUri, { names: ['lvb-odd-disks'], excludeDevices: [] })).vms;
		expect(vm.disks.find((disk) => disk.device === 'cdrom')).toMatchObject({ backupable: false, reason: 'cdrom: removable media is not backed up' });
	});

	test('hostile VM names are discovered exactly', () => {
		for (const name of lab.hostileVms) expect(vms.has(name)).toBe(true);
	});

	test.each([
		[{ names: ['lvb-running', 'lvb-paused'] }, ['lvb-paused', 'lvb-running']],
		[{ nameRegex: '^lvb-(two|off)' }, ['lvb-off-chain', 'lvb-two-disks']],
		[{ state: 'paused' }, ['lvb-paused']],
		[{ state: 'running', nameRegex: '^lvb-' }, ['lvb-running', 'lvb-two-disks']],
		[{ persistence: 'transient' }, []],
	])('filter %p selects %p', async (filter, expected) => {
		// Other test files' throwaway VMs (lvb-t-<purpose>-<pid>) may be defined on the same daemon meanwhile.
		const names = (await discover(lab.systemUri, filter)).vms.map((vm) => vm.name).filter((name) => !name.startsWith('lvb-t-'));
		expect(names).toEqual(expected);
	});

	test('exact lookup finds VMs by name or UUID and reports a missing one', async () => {
		const running = vms.get('lvb-running')!;
		const found = await discover(lab.systemUri, { domains: [running.uuid, 'lvb-paused', lab.hostileVms[0]] });
		expect(found.vms.map((vm) => vm.name).sort()).toEqual(['lvb-paused', 'lvb-running', lab.hostileVms[0]].sort());
		await expect(discover(lab.systemUri, { domains: ['lvb-running', 'no-such-vm'] })).rejects.toMatchObject({
			code: 'VM_NOT_FOUND',
			message: 'VM not found: no-such-vm (on qemu:///system)',
		});
	});

	test('sudo mode discovers the same VMs for a user without libvirt access of its own', async () => {
		const viaSudo = await discover(lab.systemUri, {}, 'sudo');
		expect(viaSudo.vms.map((vm) => vm.name)).toEqual([...vms.keys()]);
	});
});

describe('Discover VMs errors', () => {
	const lab = loadLab();

	test.each([
		['novirsh', lab.systemUri, 'VIRSH_MISSING', /^virsh not found on host: install libvirt-clients/],
		['noperm', lab.systemUri, 'LIBVIRT_PERMISSION_DENIED', /^Permission denied on the libvirt socket for qemu:\/\/\/system as user "lvbnoperm"/],
		['root', 'test:///nonexistent/node.xml', 'LIBVIRT_UNREACHABLE', /^Cannot connect to libvirt at test:\/\/\/nonexistent\/node\.xml: .*nonexistent/s],
		['root', 'qemu+ssh://nobody@127.0.0.1:1/system', 'LIBVIRT_UNREACHABLE', /^Cannot connect to libvirt at qemu\+ssh/],
	] as const)('user %s with %s gets %s', async (user, uri, code, message) => {
		await expect(discover(uri, {}, user)).rejects.toMatchObject({ code, message: expect.stringMatching(message) });
	});
});

describe('Discover VMs at scale and with hostile names (libvirt test driver)', () => {
	const lab = loadLab();

	test('500 domains with 2 disks each in a constant number of SSH execs', async () => {
		const started = Date.now();
		const { vms, sshExecs } = await discover(lab.fleetUri);
		const seconds = (Date.now() - started) / 1000;
		console.log(`fleet discovery: ${vms.length} domains, ${vms.length * 2} disks, ${sshExecs} SSH execs, ${seconds.toFixed(2)} s`);
		expect(vms).toHaveLength(lab.fleetCount);
		// Domains; the headers of all 1000 images; qemu-img for the one backing file 50 of them share.
		expect(sshExecs).toBe(3);
		expect(vms.every((vm) => vm.disks.length === lab.fleetDisksPerVm && vm.backupable)).toBe(true);
		const counts = vms.reduce<Record<string, number>>((acc, vm) => ({ ...acc, [vm.state]: (acc[vm.state] ?? 0) + 1 }), {});
		expect(counts).toEqual({ running: lab.fleetStates.running, paused: lab.fleetStates.paused, shutoff: lab.fleetStates['shut off'] });
	});

	test('hostile names come back exactly and no command in them runs', async () => {
		sshExec('root', 'find / -xdev \\( -name pwned -o -name "pwned-*" \\) -delete 2>/dev/null; true');
		const { vms } = await discover(lab.hostileUri);
		expect(vms.map((vm) => vm.name).sort()).toEqual([...lab.hostileNames].sort());
		for (const domain of lab.hostileDomains) {
			const vm = vms.find((v) => v.name === domain.name)!;
			expect(vm.disks.map((disk) => disk.source.path)).toEqual(domain.disks.map((disk) => disk.path));
			expect(vm.disks.every((disk) => disk.virtualBytes! > 0)).toBe(true);
		}
		// Hostile names also went through the real daemon in the other suite; nothing anywhere ran.
		await discover(lab.systemUri);
		const found = sshExec('root', 'find / -xdev \\( -name pwned -o -name "pwned-*" \\) -print 2>/dev/null; true').stdout.trim();
		expect(found).toBe('');
	});
});

describe('credential test', () => {
	const lab = loadLab();
	const credentialData = (overrides: Record<string, string | number | boolean> = {}) => ({
		id: 'x',
		name: 'lab',
		type: 'libvirtSshApi',
		data: labCredentialData(overrides),
	});
	const test_ = (overrides?: Record<string, string | number | boolean>) => libvirtSshConnectionTest.call({} as never, credentialData(overrides));

	test('answers with the libvirt and QEMU versions', async () => {
		const installed = sshExec('root', 'virsh -c qemu:///system version').stdout;
		const libvirt = /Using library: libvirt (\S+)/.exec(installed)![1];
		expect(await test_()).toEqual({ status: 'OK', message: expect.stringMatching(new RegExp(`^Connected to qemu:///system: libvirt ${libvirt.replace(/\./g, '\\.')}, QEMU \\d+\\.\\d+`)) });
	});

	test.each([
		[{ hostKeys: lab.wrongHostKeyLine }, /^Host key mismatch .* presented SHA256:/],
		[{ privateKey: lab.users.unauthorized.privateKey }, /^Authentication failed/],
		[{ username: 'lvbnovirsh', privateKey: lab.users.novirsh.privateKey }, /^virsh not found on host/],
		[{ username: 'lvbnoperm', privateKey: lab.users.noperm.privateKey }, /^Permission denied on the libvirt socket/],
		[{ libvirtUri: 'test:///nonexistent.xml' }, /^Cannot connect to libvirt at test:\/\/\/nonexistent\.xml/],
		[{ port: 1 }, /^Cannot reach 127\.0\.0\.1:1: connection refused/],
		[{ hostKeys: 'garbage' }, /neither a known_hosts line nor a SHA256 fingerprint/],
	])('%p fails with a precise message', async (overrides, message) => {
		expect(await test_(overrides)).toEqual({ status: 'Error', message: expect.stringMatching(message) });
	});
});
