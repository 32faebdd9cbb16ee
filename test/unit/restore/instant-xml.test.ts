/** The instant-recovery domain XML: the explicit backing chain, our metadata, and the made-permanent definition. */
import { definedDisks, instantDomainXml, parseInstantMetadata, standaloneDomainXml, type InstantMetadata } from '../../../lib/libvirt/instant';
import { parseDomainXml } from '../../../lib/libvirt/domainXml';

const SAVED = `<domain type='kvm'>
  <name>web01 &amp; "co" &lt;x&gt;</name>
  <memory unit='KiB'>98304</memory>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2' cache='none'/>
      <source file='/overlays/web01.vda.qcow2'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <interface type='network'><source network='default'/></interface>
  </devices>
</domain>
`;

const META: InstantMetadata = {
	backup: '/backups/web01/20261122T010000Z',
	chain: ['/backups/web01/20261122T010000Z', '/backups/web01/20261120T010000Z'],
	overlays: [{ target: 'vda', path: '/overlays/web01.vda.qcow2' }],
	createdAt: '2026-11-28T12:00:00.000Z',
};

const CHAIN = [
	{ path: '/backups/web01/20261122T010000Z/vda.qcow2', format: 'qcow2' as const },
	{ path: "/backups/web01/20261120T010000Z/vda\n'odd'.qcow2", format: 'qcow2' as const },
];

describe('instantDomainXml', () => {
	const xml = instantDomainXml(SAVED, [{ target: 'vda', overlay: '/overlays/web01.vda.qcow2', chain: CHAIN }], META);

	test('the disk runs on the overlay over exactly the chain given, ended by an empty backingStore', () => {
		expect(definedDisks(xml)).toEqual([{ target: 'vda', path: '/overlays/web01.vda.qcow2', format: 'qcow2', chain: CHAIN }]);
		expect(xml).toMatch(/<backingStore\/><\/backingStore><\/backingStore>/);
		expect(xml).toContain('cache="none"');
	});

	test('the name and everything else survive, a newline in a path stays a newline', () => {
		expect(parseDomainXml(xml.replace('<devices>', '<uuid>0a1b2c3d-0000-4000-8000-00000000beef</uuid><devices>')).name).toBe('web01 & "co" <x>');
		expect(xml).toContain('&#10;');
		expect(xml).toContain('<interface type="network">');
	});

	test('our metadata reads back as written', () => {
		expect(parseInstantMetadata(xml)).toEqual(META);
		expect(parseInstantMetadata(SAVED)).toBeUndefined();
	});

	test('raw hypervisor arguments in a saved definition are refused', () => {
		const hostile = SAVED.replace('</devices>', "</devices><qemu:commandline xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'><qemu:arg value='-x'/></qemu:commandline>");
		expect(() => instantDomainXml(hostile, [{ target: 'vda', overlay: '/o', chain: CHAIN }], META)).toThrow(/<qemu:commandline>/);
	});

	test('a disk the definition lacks is refused', () => {
		expect(() => instantDomainXml(SAVED, [{ target: 'vdb', overlay: '/o', chain: CHAIN }], META)).toThrow(/no disk vdb/);
	});
});

describe('standaloneDomainXml', () => {
	test('the disk on its standalone image with nothing under it, our metadata gone, other metadata kept', () => {
		const instant = instantDomainXml(SAVED.replace('</devices>', "</devices><metadata><app:x xmlns:app='urn:app'>keep</app:x></metadata>"), [{ target: 'vda', overlay: '/overlays/web01.vda.qcow2', chain: CHAIN }], META);
		const permanent = standaloneDomainXml(instant, [{ target: 'vda', path: '/images/web01.vda.qcow2', format: 'qcow2' }]);
		expect(definedDisks(permanent)).toEqual([{ target: 'vda', path: '/images/web01.vda.qcow2', format: 'qcow2', chain: [] }]);
		expect(parseInstantMetadata(permanent)).toBeUndefined();
		expect(permanent).toContain('<app:x xmlns:app="urn:app">keep</app:x>');
	});
});
