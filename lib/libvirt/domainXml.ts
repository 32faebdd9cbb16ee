/**
 * Domain XML (`virsh dumpxml`) parsed with a real XML parser into typed values. Never scrape the
 * human-readable, localized virsh tables.
 */
import { XMLParser } from 'fast-xml-parser';
import { LibvirtBackupError } from '../errors';

export type DiskDevice = 'disk' | 'cdrom' | 'floppy' | 'lun';
export type DiskType = 'file' | 'block' | 'network' | 'volume' | 'dir' | 'nvme' | 'vhostuser';

export interface DiskSource {
	/** Local file or block device path (type file/block), when there is one. */
	path?: string;
	/** Network disks: protocol (nbd, rbd, iscsi, gluster, ...), export name and hosts. */
	protocol?: string;
	name?: string;
	hosts?: string[];
	/** Volume disks: storage pool and volume. */
	pool?: string;
	volume?: string;
}

export interface DomainDisk {
	target: string;
	bus?: string;
	device: DiskDevice;
	type: DiskType;
	/** Driver format (qcow2, raw, ...) from `<driver type=...>`. */
	format?: string;
	source: DiskSource;
	readonly: boolean;
	shareable: boolean;
	/** Backing chain as libvirt reports it in the live XML (paths, outermost first). */
	backingStore: string[];
}

export interface DomainDefinition {
	name: string;
	uuid: string;
	/** Domain type: kvm, qemu, test, ... */
	hypervisor: string;
	disks: DomainDisk[];
}

const parser = new XMLParser({
	ignoreAttributes: false,
	attributeNamePrefix: '',
	parseAttributeValue: false,
	parseTagValue: false,
	// Names may start or end with spaces; keep text exactly as libvirt wrote it.
	trimValues: false,
	htmlEntities: true,
	isArray: (name) => ['disk', 'host'].includes(name),
});

type XmlNode = Record<string, unknown>;

function node(value: unknown): XmlNode | undefined {
	return value !== null && typeof value === 'object' && !Array.isArray(value) ? (value as XmlNode) : undefined;
}

function text(value: unknown): string | undefined {
	if (typeof value === 'string') return value;
	const element = node(value);
	return typeof element?.['#text'] === 'string' ? element['#text'] : undefined;
}

function attribute(element: XmlNode | undefined, name: string): string | undefined {
	const value = element?.[name];
	return typeof value === 'string' ? value : undefined;
}

function backingChain(disk: XmlNode): string[] {
	const chain: string[] = [];
	let store = node(disk.backingStore);
	while (store) {
		const source = node(store.source);
		const path = attribute(source, 'file') ?? attribute(source, 'dev');
		if (path) chain.push(path);
		store = node(store.backingStore);
	}
	return chain;
}

function parseDisk(disk: XmlNode): DomainDisk {
	const source = node(disk.source);
	const type = (attribute(disk, 'type') ?? 'file') as DiskType;
	const parsedSource: DiskSource = {};
	if (type === 'file') parsedSource.path = attribute(source, 'file');
	if (type === 'block') parsedSource.path = attribute(source, 'dev');
	if (type === 'dir') parsedSource.path = attribute(source, 'dir');
	if (type === 'network') {
		parsedSource.protocol = attribute(source, 'protocol');
		parsedSource.name = attribute(source, 'name');
		const hosts = Array.isArray(source?.host) ? (source.host as XmlNode[]) : [];
		parsedSource.hosts = hosts.map((host) => [attribute(host, 'name') ?? attribute(host, 'socket') ?? '', attribute(host, 'port')].filter(Boolean).join(':'));
	}
	if (type === 'volume') {
		parsedSource.pool = attribute(source, 'pool');
		parsedSource.volume = attribute(source, 'volume');
	}
	for (const key of Object.keys(parsedSource) as (keyof DiskSource)[]) {
		if (parsedSource[key] === undefined) delete parsedSource[key];
	}
	return {
		target: attribute(node(disk.target), 'dev') ?? '',
		bus: attribute(node(disk.target), 'bus'),
		device: (attribute(disk, 'device') ?? 'disk') as DiskDevice,
		type,
		format: attribute(node(disk.driver), 'type'),
		source: parsedSource,
		readonly: disk.readonly !== undefined,
		shareable: disk.shareable !== undefined,
		backingStore: backingChain(disk),
	};
}

export function parseDomainXml(xml: string): DomainDefinition {
	let root: XmlNode | undefined;
	try {
		// libvirt writes a CR inside a name or path raw, which any XML parser must read as LF;
		// libvirt's own lines end in LF only, so a raw CR here is always data: keep it exact.
		root = node(node(parser.parse(xml.replace(/\r/g, '&#13;')))?.domain);
	} catch (error) {
		throw new LibvirtBackupError('PARSE_ERROR', `virsh returned domain XML that does not parse: ${(error as Error).message}`);
	}
	const name = text(root?.name);
	const uuid = text(root?.uuid)?.trim();
	if (!root || name === undefined || !uuid) {
		throw new LibvirtBackupError('PARSE_ERROR', 'virsh returned domain XML without a <domain> name and uuid');
	}
	const devices = node(root.devices);
	const disks = Array.isArray(devices?.disk) ? (devices.disk as unknown[]).map((disk) => parseDisk(node(disk) ?? {})) : [];
	return { name, uuid, hypervisor: attribute(root, 'type') ?? '', disks };
}

/** Bytes changed per disk since a checkpoint (`virsh checkpoint-dumpxml --size`). */
export function parseCheckpointSizes(xml: string): Map<string, number> {
	const root = node(node(parser.parse(xml))?.domaincheckpoint);
	const disks = node(root?.disks)?.disk;
	const sizes = new Map<string, number>();
	for (const disk of Array.isArray(disks) ? disks : []) {
		const name = attribute(node(disk), 'name');
		const size = attribute(node(disk), 'size');
		if (name && size !== undefined) sizes.set(name, Number(size));
	}
	return sizes;
}

function escapeXml(value: string): string {
	return value.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/'/g, '&apos;').replace(/"/g, '&quot;').replace(/\r/g, '&#13;').replace(/\n/g, '&#10;');
}

export interface BackupDiskTarget {
	target: string;
	/** Absolute path of the image the job writes. */
	file: string;
	/** Checkpoint to read changes against; absent = a full copy of this disk. */
	incrementalFrom?: string;
}

/** `<domainbackup>` for a push-mode job: the listed disks into qcow2 files, every other disk skipped. */
export function backupXml(allTargets: string[], disks: BackupDiskTarget[]): string {
	const planned = new Map(disks.map((disk) => [disk.target, disk]));
	const entries = allTargets.map((target) => {
		const disk = planned.get(target);
		if (!disk) return `<disk name='${escapeXml(target)}' backup='no'/>`;
		const mode = disk.incrementalFrom ? ` backupmode='incremental' incremental='${escapeXml(disk.incrementalFrom)}'` : ` backupmode='full'`;
		return `<disk name='${escapeXml(target)}' backup='yes' type='file'${mode}><driver type='qcow2'/><target file='${escapeXml(disk.file)}'/></disk>`;
	});
	return `<domainbackup mode='push'><disks>${entries.join('')}</disks></domainbackup>`;
}

/** `<domaincheckpoint>` with a bitmap on the given disks and none on the others. */
export function checkpointXml(name: string, allTargets: string[], bitmapTargets: string[]): string {
	const entries = allTargets.map((target) => `<disk name='${escapeXml(target)}' checkpoint='${bitmapTargets.includes(target) ? 'bitmap' : 'no'}'/>`);
	return `<domaincheckpoint><name>${escapeXml(name)}</name><disks>${entries.join('')}</disks></domaincheckpoint>`;
}
