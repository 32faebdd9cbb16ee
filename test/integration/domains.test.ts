/**
 * lib/libvirt/domains.ts against the lab's libvirtd: define (refusing names and UUIDs that exist),
 * start, stop (graceful with its timeout, forced), undefine. The lab VMs have no OS, so an ACPI
 * shutdown request is never answered: the graceful path can only end in its timeout here.
 */
import { defineDomain, startDomain, stopDomain, undefineDomain } from '../../lib/libvirt/domains';
import { quoteArg as q } from '../../lib/shell';
import { withSsh } from '../../lib/ssh';
import { loadLab } from '../support/lab';
import { labTarget } from '../support/targets';
import { createTestVm, host, type TestVm } from '../support/testVm';

jest.setTimeout(120_000);

const uri = () => loadLab().systemUri;

function state(uuid: string): string {
	return host(`virsh -q domstate --domain ${q(uuid)}`).trim();
}

function exists(uuid: string): boolean {
	return host('virsh -q list --all --uuid').split('\n').map((line) => line.trim()).includes(uuid);
}

describe('domains', () => {
	let vm: TestVm;
	const defined: string[] = [];
	beforeAll(() => {
		vm = createTestVm('domains', [{ target: 'vda', format: 'qcow2', virtualMiB: 16 }], 'shutoff');
	});
	afterAll(() => {
		for (const uuid of defined) host(`virsh -q destroy --domain ${uuid} >/dev/null 2>&1; virsh -q undefine --domain ${uuid} >/dev/null 2>&1; true`);
		vm.destroy();
	});

	const xmlNamed = (name: string, uuid?: string) =>
		`<domain type='${loadLab().domainType}'><name>${name.replace(/&/g, '&amp;').replace(/</g, '&lt;')}</name>${uuid ? `<uuid>${uuid}</uuid>` : ''}<memory unit='MiB'>96</memory><vcpu>1</vcpu><os><type arch='x86_64' machine='pc'>hvm</type></os><devices><disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='${vm.disks[0].path}'/><target dev='vda' bus='virtio'/></disk><serial type='pty'/><memballoon model='none'/></devices></domain>`;

	test('defines a domain under a hostile name with a fresh UUID, starts, force-stops and undefines it', async () => {
		const name = `lvb-t-def '$(touch lvb-pwned-${process.pid})" & <x> ${process.pid}`;
		await withSsh(labTarget(), async (ssh) => {
			const result = await defineDomain(ssh, uri(), xmlNamed(name));
			defined.push(result.uuid);
			expect(result.name).toBe(name);
			expect(state(result.uuid)).toBe('shut off');
			await startDomain(ssh, uri(), result.uuid);
			expect(state(result.uuid)).toBe('running');
			await stopDomain(ssh, uri(), result.uuid, { graceful: false, timeoutMs: 1000 });
			expect(state(result.uuid)).toBe('shut off');
			await undefineDomain(ssh, uri(), result.uuid);
			expect(exists(result.uuid)).toBe(false);
		});
		expect(host(`test -e ~/lvb-pwned-${process.pid} && echo yes || echo no`).trim()).toBe('no');
	});

	test('refuses a name that exists, and replaces a UUID in the XML by a fresh one (never redefines another domain)', async () => {
		const existingUuid = host(`virsh -q domuuid ${q(vm.name)}`).trim();
		await withSsh(labTarget(), async (ssh) => {
			await expect(defineDomain(ssh, uri(), xmlNamed(vm.name))).rejects.toThrow(/a VM of that name already exists/);
			await expect(defineDomain(ssh, uri(), xmlNamed('a/b'))).rejects.toThrow(/cannot be used: it contains '\/'/);
			const result = await defineDomain(ssh, uri(), xmlNamed(`lvb-t-def2-${process.pid}`, existingUuid));
			defined.push(result.uuid);
			expect(result.uuid).not.toBe(existingUuid);
			expect(host(`virsh -q domname ${existingUuid}`).trim()).toBe(vm.name);
			await undefineDomain(ssh, uri(), result.uuid);
		});
	});

	test('a graceful stop of a guest that ignores ACPI ends in the timeout error, or in a forced stop when asked', async () => {
		const uuid = host(`virsh -q domuuid ${q(vm.name)}`).trim();
		host(`virsh -q start --domain ${uuid} >/dev/null`);
		await withSsh(labTarget(), async (ssh) => {
			await expect(stopDomain(ssh, uri(), uuid, { graceful: true, timeoutMs: 1000 })).rejects.toMatchObject({ code: 'COMMAND_TIMEOUT', message: expect.stringMatching(/did not shut down within 1 s.*force it off/) });
			expect(state(uuid)).toBe('running');
			await expect(undefineDomain(ssh, uri(), uuid)).rejects.toThrow(/running: stop it first/);
			await stopDomain(ssh, uri(), uuid, { graceful: true, timeoutMs: 1000, forceAfterTimeout: true });
			expect(state(uuid)).toBe('shut off');
			// Already off: nothing to do.
			await stopDomain(ssh, uri(), uuid, { graceful: true, timeoutMs: 1000 });
		});
	});
});
