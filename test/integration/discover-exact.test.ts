/**
 * Discovery resolves exactly what it was asked for and reads disks as the domain declares them:
 * a VM named like a domain ID is found by its name (never the ID), and a raw disk whose guest data
 * looks like a qcow2 header is read as raw (root must not open the backing file a guest names).
 */
import { randomUUID } from 'node:crypto';
import { backupVm } from '../../lib/backup';
import { discoverVms, type DiscoveryFilter } from '../../lib/libvirt';
import { quoteArg as q } from '../../lib/shell';
import { withSsh } from '../../lib/ssh';
import { loadLab } from '../support/lab';
import { labTarget } from '../support/targets';
import { createTestVm, host, testDestination, type TestVm } from '../support/testVm';

jest.setTimeout(180_000);

const lab = loadLab();

function discover(uri: string, filter: DiscoveryFilter) {
	return withSsh(labTarget(), (ssh) => discoverVms(ssh, uri, { excludeDevices: [], ...filter }));
}

describe('a VM whose name is a number is found by name, never as a domain ID', () => {
	let running: TestVm;
	let id: string;
	let namedUuid: string;
	let destination: { dest: string; cleanup(): void };
	const numberedDir = `${lab.labDir}/test-vms/lvb-t-numbered-${process.pid}`;
	// By UUID: virsh would take the number for the running VM's ID (the very defect under test).
	const undefineNumbered = () => host(`virsh -q undefine ${q(namedUuid)} >/dev/null 2>&1; rm -rf ${q(numberedDir)}`);

	beforeAll(() => {
		running = createTestVm('byid', [{ target: 'vda', format: 'qcow2', virtualMiB: 16 }], 'running');
		id = host(`virsh -q domid ${q(running.name)}`).trim();
		expect(id).toMatch(/^[0-9]+$/);
		namedUuid = randomUUID();
		const disk = `${numberedDir}/vda.raw`;
		const xml = `<domain type='${lab.domainType}'><name>${id}</name><uuid>${namedUuid}</uuid><memory unit='MiB'>96</memory><vcpu>1</vcpu><os><type arch='x86_64' machine='pc'>hvm</type></os><devices><disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='${disk}'/><target dev='vda' bus='virtio'/></disk><memballoon model='none'/></devices></domain>`;
		host(`rm -rf ${q(numberedDir)} && mkdir -p ${q(numberedDir)} && qemu-img create -q -f raw ${q(disk)} 4M && printf '%s' ${q(xml)} > ${q(`${numberedDir}/domain.xml`)} && virsh -q define ${q(`${numberedDir}/domain.xml`)} >/dev/null`);
		destination = testDestination('numbered');
	});
	afterAll(() => {
		undefineNumbered();
		running?.destroy();
		destination?.cleanup();
	});

	test('the number finds the shut-off VM of that name, not the running VM of that ID', async () => {
		const { vms } = await discover(lab.systemUri, { domains: [id] });
		expect(vms.map((vm) => [vm.name, vm.uuid, vm.state])).toEqual([[id, namedUuid, 'shutoff']]);
	});

	test('a bare domain ID that is no VM name is not found', async () => {
		const labId = host(`virsh -q domid ${q('lvb-running')}`).trim();
		await expect(discover(lab.systemUri, { domains: [labId] })).rejects.toMatchObject({
			code: 'VM_NOT_FOUND',
			message: `VM not found: ${labId} (on ${lab.systemUri})`,
		});
	});

	test('names and UUIDs still resolve exactly, a UUID in upper case too', async () => {
		const runningUuid = host(`virsh -q domuuid ${q(running.name)}`).trim();
		const { vms } = await discover(lab.systemUri, { domains: [running.name, namedUuid.toUpperCase()] });
		expect(vms.map((vm) => vm.uuid).sort()).toEqual([runningUuid, namedUuid].sort());
	});

	test('Backup VM Disk with that number backs up the VM of that name', async () => {
		const result = await withSsh(labTarget(), (ssh) =>
			backupVm(ssh, { uri: lab.systemUri, vm: id, dest: destination.dest, mode: 'auto', compression: 'none', quiesce: 'auto', holder: `jest ${process.pid}`, host: 'lab' }),
		);
		expect([result.vm, result.uuid, result.consistency]).toEqual([id, namedUuid, 'offline']);
		expect(result.path).toBe(`${destination.dest}/${id}/${result.id}`);
	});
});

describe('a string that is one VM\'s name and another\'s UUID (libvirt test driver)', () => {
	const dir = `${lab.labDir}/test-vms/lvb-t-uuidname-${process.pid}`;
	const [a, b] = [randomUUID(), randomUUID()];
	const domain = (name: string, uuid: string) => `<domain type='test'><name>${name}</name><uuid>${uuid}</uuid><memory unit='MiB'>64</memory><os><type arch='x86_64'>hvm</type></os></domain>`;
	beforeAll(() => host(`rm -rf ${q(dir)} && mkdir -p ${q(dir)} && printf '%s' ${q(`<node>${domain(b, a)}${domain('plain', b)}</node>`)} > ${q(`${dir}/node.xml`)}`));
	afterAll(() => host(`rm -rf ${q(dir)}`));

	test('is refused as ambiguous; the VM of that name is found by its own UUID; a VM asked twice comes once', async () => {
		const uri = `test://${dir}/node.xml`;
		await expect(discover(uri, { domains: [b] })).rejects.toMatchObject({ code: 'INVALID_INPUT', message: expect.stringMatching(/is both the name of a VM and the UUID of another/) });
		expect((await discover(uri, { domains: [a] })).vms.map((vm) => vm.name)).toEqual([b]);
		expect((await discover(uri, { domains: ['plain', b.toUpperCase()] })).vms.map((vm) => vm.uuid)).toEqual([b]);
	});
});

describe('disk images are read in the format the domain declares', () => {
	/** A raw disk whose guest-written content is a qcow2 header naming a backing file (1 MiB: whole sectors). */
	const qcow2Header = (path: string) => `qemu-img create -q -f qcow2 -b /etc/hostname -F raw ${q(path)} >/dev/null && truncate -s 1M ${q(path)}`;
	const fileSize = (path: string) => Number(host(`stat -c %s ${q(path)}`).trim());

	test('a raw disk holding a qcow2 header is raw, its size is the file size, no backing file is opened', async () => {
		const vm = createTestVm('rawhdr', [{ target: 'vda', format: 'raw', virtualMiB: 1 }], 'shutoff');
		try {
			const path = vm.disks[0].path;
			host(`rm -f ${q(path)} && ${qcow2Header(path)}`);
			const [found] = (await discover(lab.systemUri, { domains: [vm.name] })).vms;
			expect(found.disks[0]).toMatchObject({ format: 'raw', virtualBytes: fileSize(path), backingChain: [], backupable: true });
			expect(found.disks[0].warning).toBeUndefined();
		} finally {
			vm.destroy();
		}
	});

	test('a disk without a format in the XML is read as raw, and the output says so', async () => {
		const dir = `${lab.labDir}/test-vms/lvb-t-noformat-${process.pid}`;
		const image = `${dir}/vda.img`;
		const node = `<node><domain type='test'><name>noformat</name><uuid>0d3c6f6e-8a8f-4a53-9a41-5b7f0c0e2a11</uuid><memory unit='MiB'>64</memory><os><type arch='x86_64'>hvm</type></os><devices><disk type='file' device='disk'><source file='${image}'/><target dev='vda' bus='virtio'/></disk></devices></domain></node>`;
		host(`rm -rf ${q(dir)} && mkdir -p ${q(dir)} && ${qcow2Header(image)} && printf '%s' ${q(node)} > ${q(`${dir}/node.xml`)}`);
		try {
			const [found] = (await discover(`test://${dir}/node.xml`, {})).vms;
			expect(found.disks[0]).toMatchObject({ format: 'raw', virtualBytes: fileSize(image), backingChain: [] });
			expect(found.disks[0].warning).toMatch(/^no format in the domain XML: read as raw/);
		} finally {
			host(`rm -rf ${q(dir)}`);
		}
	});
});
