import { checkNewDomainName, domainXmlForNewVm, parseDomainXml, rewriteForNewVm, withUuid } from '../../lib/libvirt/domainXml';

const SAVED = `<domain type='kvm'>
  <name>web01</name>
  <uuid>0f8fad5b-d9cb-469f-a165-70867728950e</uuid>
  <metadata><app:x xmlns:app='http://example.org/app'>keep &amp; me</app:x></metadata>
  <memory unit='KiB'>98304</memory>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <loader readonly='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE.fd</loader>
    <nvram template='/usr/share/OVMF/OVMF_VARS.fd'>/var/lib/libvirt/qemu/nvram/web01_VARS.fd</nvram>
  </os>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2' cache='none'/>
      <source file='/var/lib/libvirt/images/web01.qcow2'/>
      <backingStore type='file'>
        <format type='qcow2'/>
        <source file='/var/lib/libvirt/images/base.qcow2'/>
      </backingStore>
      <target dev='vda' bus='virtio'/>
    </disk>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file='/var/lib/libvirt/images/web01-data.img'/>
      <target dev='vdb' bus='virtio'/>
    </disk>
    <disk type='block' device='disk'>
      <driver name='qemu' type='raw'/>
      <source dev='/dev/vg0/web01'/>
      <target dev='vdc' bus='virtio'/>
    </disk>
    <disk type='file' device='cdrom'>
      <driver name='qemu' type='raw'/>
      <source file='/iso/debian.iso'/>
      <target dev='sda' bus='sata'/>
      <readonly/>
    </disk>
    <interface type='network'>
      <mac address='52:54:00:12:34:56'/>
      <source network='default'/>
      <model type='virtio'/>
    </interface>
    <interface type='bridge'>
      <mac address='52:54:00:12:34:57'/>
      <source bridge='br0'/>
    </interface>
    <serial type='pty'/>
  </devices>
</domain>`;

describe('domain XML for a new VM from a saved definition', () => {
	const hostileName = `web '01" $(touch /tmp/pwned) & <x> ü`;
	const hostilePath = `/restore/it's "a" & <b> $(rm -rf x)\`y\`/vda.qcow2`;
	const result = rewriteForNewVm(SAVED, { name: hostileName, disks: [{ target: 'vda', path: hostilePath, format: 'raw' }] });
	const parsed = parseDomainXml(withUuid(result.xml, '11111111-2222-3333-4444-555555555555'));

	test('takes the new name exactly, hostile characters included, and has no uuid of its own', () => {
		expect(parsed.name).toBe(hostileName);
		expect(result.xml).not.toContain('0f8fad5b');
		expect(result.xml).not.toMatch(/<uuid>/);
	});

	test('removes every interface MAC, keeps the interfaces', () => {
		expect(result.xml).not.toMatch(/<mac\b/);
		expect(result.xml.match(/<interface\b/g)).toHaveLength(2);
		expect(result.xml).toContain('<source bridge="br0"/>');
	});

	test('points the listed disk at the restored file and format, without the saved backing chain', () => {
		expect(parsed.disks).toHaveLength(1);
		expect(parsed.disks[0]).toMatchObject({ target: 'vda', type: 'file', format: 'raw', source: { path: hostilePath }, backingStore: [] });
		expect(result.xml).toContain(`cache="none"`);
		expect(result.xml).not.toContain('base.qcow2');
	});

	test('drops the disks not listed and says which', () => {
		expect(result.dropped).toEqual(['vdb', 'vdc', 'sda']);
		expect(result.xml).not.toContain('debian.iso');
		expect(result.xml).not.toContain('/dev/vg0');
	});

	test('drops the UEFI variable store path (libvirt makes a fresh one) and warns', () => {
		expect(result.xml).not.toContain('web01_VARS.fd');
		expect(result.xml).toContain('OVMF_CODE.fd');
		expect(result.warnings.join(' ')).toMatch(/nvram/);
	});

	test('keeps everything else, metadata of other applications included', () => {
		expect(result.xml).toContain('keep &amp; me');
		expect(result.xml).toContain(`<memory unit="KiB">98304</memory>`);
		expect(result.xml).toContain('<serial type="pty"/>');
	});

	test('escapes newlines and carriage returns in names and paths so they survive a reparse', () => {
		const xml = domainXmlForNewVm(SAVED, { name: 'a\nb\rc', disks: [{ target: 'vdb', path: '/x/a\nb\rc.img', format: 'qcow2' }] });
		const reparsed = parseDomainXml(withUuid(xml, 'u'));
		expect(reparsed.name).toBe('a\nb\rc');
		expect(reparsed.disks[0].source.path).toBe('/x/a\nb\rc.img');
		expect(reparsed.disks[0].format).toBe('qcow2');
	});

	test('refuses a listed disk that is not a file disk, or one the definition lacks', () => {
		expect(() => domainXmlForNewVm(SAVED, { name: 'n', disks: [{ target: 'vdc', path: '/x', format: 'raw' }] })).toThrow(/vdc.*block disk, not a file/);
		expect(() => domainXmlForNewVm(SAVED, { name: 'n', disks: [{ target: 'vdz', path: '/x', format: 'raw' }] })).toThrow(/has no disk vdz/);
		expect(() => domainXmlForNewVm(SAVED, { name: 'n', disks: [{ target: 'vda', path: '/x', format: 'raw' }, { target: 'vda', path: '/y', format: 'raw' }] })).toThrow(/listed twice/);
	});

	test('refuses XML that is not a domain', () => {
		expect(() => domainXmlForNewVm('<network><name>x</name></network>', { name: 'n', disks: [] })).toThrow(/no <domain>/);
		expect(() => domainXmlForNewVm('<domain><uuid>u</uuid></domain>', { name: 'n', disks: [] })).toThrow(/no <name>/);
	});

	test('withUuid sets the uuid right after the name, replacing any', () => {
		const xml = withUuid(SAVED, 'aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee');
		expect(parseDomainXml(xml).uuid).toBe('aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee');
		expect(xml.match(/<uuid>/g)).toHaveLength(1);
	});
});

describe('names for new domains', () => {
	test.each([[''], ['  '], ['a/b'], ['a\nb'], ['a\u0000b'], ['x'.repeat(201)]])('refuses %j', (name) => {
		expect(() => checkNewDomainName(name)).toThrow(/cannot be used/);
	});
	test.each([[`web '01" $(touch x) & <y> ü`], ['-rf'], ['x'.repeat(200)]])('accepts %j', (name) => {
		expect(() => checkNewDomainName(name)).not.toThrow();
	});
});
