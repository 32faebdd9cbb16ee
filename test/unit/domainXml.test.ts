import { backupXml, checkpointXml, parseDomainXml } from '../../lib/libvirt';
import { splitSections } from '../../lib/batch';
import { virshFailure } from '../../lib/libvirt/virsh';

const LIVE_XML = `<domain type='kvm' id='3'>
  <name>web &apos;01&quot; $(touch pwned) &amp; ü&#10;x</name>
  <uuid>0f8fad5b-d9cb-469f-a165-70867728950e</uuid>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='/var/lib/libvirt/images/top.qcow2' index='3'/>
      <backingStore type='file' index='2'>
        <format type='qcow2'/>
        <source file='/var/lib/libvirt/images/mid.qcow2'/>
        <backingStore type='file' index='1'>
          <format type='qcow2'/>
          <source file='/var/lib/libvirt/images/base.qcow2'/>
          <backingStore/>
        </backingStore>
      </backingStore>
      <target dev='vda' bus='virtio'/>
    </disk>
    <disk type='block' device='disk'>
      <driver name='qemu' type='raw'/>
      <source dev='/dev/vg0/data'/>
      <target dev='vdb' bus='virtio'/>
      <shareable/>
    </disk>
    <disk type='network' device='disk'>
      <driver name='qemu' type='raw'/>
      <source protocol='nbd' name='export1'>
        <host name='10.0.0.9' port='10809'/>
      </source>
      <target dev='vdc' bus='virtio'/>
    </disk>
    <disk type='volume' device='disk'>
      <source pool='default' volume='vol1.qcow2'/>
      <target dev='vdd' bus='virtio'/>
    </disk>
    <disk type='file' device='cdrom'>
      <driver name='qemu' type='raw'/>
      <target dev='sda' bus='sata'/>
      <readonly/>
    </disk>
  </devices>
</domain>`;

describe('domain XML parsing', () => {
	const domain = parseDomainXml(LIVE_XML);

	test('decodes names with quotes, entities, shell syntax and newlines exactly', () => {
		expect(domain.name).toBe(`web '01" $(touch pwned) & ü\nx`);
		expect(domain.uuid).toBe('0f8fad5b-d9cb-469f-a165-70867728950e');
		expect(domain.hypervisor).toBe('kvm');
	});

	test('reads every disk type with its source, format and flags', () => {
		expect(domain.disks.map((disk) => [disk.target, disk.type, disk.device])).toEqual([
			['vda', 'file', 'disk'],
			['vdb', 'block', 'disk'],
			['vdc', 'network', 'disk'],
			['vdd', 'volume', 'disk'],
			['sda', 'file', 'cdrom'],
		]);
		expect(domain.disks[0]).toMatchObject({ format: 'qcow2', source: { path: '/var/lib/libvirt/images/top.qcow2' } });
		expect(domain.disks[1]).toMatchObject({ source: { path: '/dev/vg0/data' }, shareable: true });
		expect(domain.disks[2].source).toEqual({ protocol: 'nbd', name: 'export1', hosts: ['10.0.0.9:10809'] });
		expect(domain.disks[3].source).toEqual({ pool: 'default', volume: 'vol1.qcow2' });
		expect(domain.disks[4]).toMatchObject({ readonly: true, source: {} });
	});

	test('follows the live backing chain, nearest first', () => {
		expect(domain.disks[0].backingStore).toEqual(['/var/lib/libvirt/images/mid.qcow2', '/var/lib/libvirt/images/base.qcow2']);
	});

	test('keeps a raw carriage return in a name exactly (libvirt writes it unescaped)', () => {
		expect(parseDomainXml("<domain><name>lvb-cr\rreturn</name><uuid>u</uuid></domain>").name).toBe('lvb-cr\rreturn');
	});

	test('refuses XML that is not a domain', () => {
		expect(() => parseDomainXml('<network><name>x</name></network>')).toThrow(/without a <domain> name and uuid/);
	});
});

describe('batched output', () => {
	test('splits sections by the run marker only; a forged marker with another nonce is body text', () => {
		const out = '@@LVB-aa state running\nuuid1\n@@LVB-aa xml uuid1\n<domain>@@LVB-bb xml evil</domain>\n';
		expect(splitSections(out, '@@LVB-aa')).toEqual([
			{ kind: 'state', arg: 'running', body: 'uuid1\n' },
			{ kind: 'xml', arg: 'uuid1', body: '<domain>@@LVB-bb xml evil</domain>\n' },
		]);
	});
});

describe('virsh failures become actionable errors', () => {
	test.each([
		[{ exitCode: 127, stderr: 'sh: 1: virsh: not found' }, 'VIRSH_MISSING', /install libvirt-clients/],
		[
			{ exitCode: 1, stderr: "error: failed to connect to the hypervisor\nerror: Failed to connect socket to '/var/run/libvirt/libvirt-sock': Permission denied" },
			'LIBVIRT_PERMISSION_DENIED',
			/Permission denied on the libvirt socket for qemu:\/\/\/system as user "backup".*libvirt" group/s,
		],
		[
			{ exitCode: 1, stderr: "error: failed to connect to the hypervisor\nerror: Cannot read test XML '/nope.xml'" },
			'LIBVIRT_UNREACHABLE',
			/Cannot connect to libvirt at qemu:\/\/\/system/,
		],
		[{ exitCode: 1, stderr: 'error: something else' }, 'COMMAND_FAILED', /exit code 1.*something else/],
	])('%j -> %s', (result, code, message) => {
		const error = virshFailure(result, 'qemu:///system', 'backup');
		expect(error.code).toBe(code);
		expect(error.message).toMatch(message);
	});
});

describe('backup and checkpoint XML', () => {
	test('lists every disk, backs up the chosen ones into their files, escapes hostile paths', () => {
		const xml = backupXml(['vda', 'vdb', 'sda'], [
			{ target: 'vda', file: `/b/it's "x" & <y>\n.partial`, incrementalFrom: 'lvb-1' },
			{ target: 'vdb', file: '/b/vdb.qcow2.partial' },
		]);
		expect(xml).toBe(
			"<domainbackup mode='push'><disks>" +
				"<disk name='vda' backup='yes' type='file' backupmode='incremental' incremental='lvb-1'><driver type='qcow2'/><target file='/b/it&apos;s &quot;x&quot; &amp; &lt;y&gt;&#10;.partial'/></disk>" +
				"<disk name='vdb' backup='yes' type='file' backupmode='full'><driver type='qcow2'/><target file='/b/vdb.qcow2.partial'/></disk>" +
				"<disk name='sda' backup='no'/>" +
				'</disks></domainbackup>',
		);
	});

	test('puts bitmaps only on the given disks', () => {
		expect(checkpointXml('lvb-2', ['vda', 'vdb'], ['vda'])).toBe(
			"<domaincheckpoint><name>lvb-2</name><disks><disk name='vda' checkpoint='bitmap'/><disk name='vdb' checkpoint='no'/></disks></domaincheckpoint>",
		);
	});
});
