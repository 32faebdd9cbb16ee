/**
 * Domain XML (`virsh dumpxml`) parsed with a real XML parser into typed values. Never scrape the
 * human-readable, localized virsh tables.
 */
import { XMLBuilder, XMLParser } from 'fast-xml-parser';
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

/** A restored (or overlay) image that a new domain's disk points at. */
export interface RestoredDisk {
	target: string;
	path: string;
	format: 'qcow2' | 'raw';
}

export interface NewVmXml {
	xml: string;
	/** Targets of the saved definition's disks that were not listed, so the new domain has none. */
	dropped: string[];
	/** What a person should know about the new definition (e.g. UEFI variables not carried over). */
	warnings: string[];
}

/** A tree in fast-xml-parser's preserveOrder form: each element is `{ tag: children, ':@': attributes }`. */
export type OrderedNode = Record<string, unknown>;

const orderedParser = new XMLParser({
	preserveOrder: true,
	ignoreAttributes: false,
	attributeNamePrefix: '',
	parseAttributeValue: false,
	parseTagValue: false,
	trimValues: false,
	htmlEntities: true,
});
// Values are escaped by escapeOrdered before building: the builder's own escaping keeps raw
// newlines in attributes, which an XML reader turns into spaces.
const orderedBuilder = new XMLBuilder({ preserveOrder: true, ignoreAttributes: false, attributeNamePrefix: '', suppressEmptyNode: true, processEntities: false });

function tagOf(entry: OrderedNode): string | undefined {
	return Object.keys(entry).find((key) => key !== ':@');
}

function childrenOf(entry: OrderedNode | undefined): OrderedNode[] {
	const tag = entry && tagOf(entry);
	const children = tag ? entry[tag] : undefined;
	return Array.isArray(children) ? (children as OrderedNode[]) : [];
}

function attributesOf(entry: OrderedNode): Record<string, string> {
	const attributes = node(entry[':@']);
	if (attributes) return attributes as Record<string, string>;
	const created: Record<string, string> = {};
	entry[':@'] = created;
	return created;
}

function child(entry: OrderedNode | undefined, tag: string): OrderedNode | undefined {
	return childrenOf(entry).find((item) => tagOf(item) === tag);
}

function removeChildren(entry: OrderedNode, tag: string): void {
	const children = childrenOf(entry);
	for (let i = children.length - 1; i >= 0; i--) {
		if (tagOf(children[i]) === tag) children.splice(i, 1);
	}
}

function escapeOrdered(entries: OrderedNode[]): OrderedNode[] {
	return entries.map((entry) => {
		const copy: OrderedNode = {};
		for (const [key, value] of Object.entries(entry)) {
			if (key === '#text') copy[key] = escapeXml(String(value)).replace(/&#10;/g, '\n');
			else if (key === ':@') copy[key] = Object.fromEntries(Object.entries(value as Record<string, string>).map(([name, text]) => [name, escapeXml(text)]));
			else copy[key] = escapeOrdered(value as OrderedNode[]);
		}
		return copy;
	});
}

/** A domain XML as fast-xml-parser's ordered tree (attributes and text kept exactly), and its <domain> element. */
export function parseOrderedDomain(xml: string): { tree: OrderedNode[]; domain: OrderedNode } {
	let tree: OrderedNode[];
	try {
		// A raw CR is data (see parseDomainXml).
		tree = orderedParser.parse(xml.replace(/\r/g, '&#13;')) as OrderedNode[];
	} catch (error) {
		throw new LibvirtBackupError('PARSE_ERROR', `Domain XML does not parse: ${(error as Error).message}`);
	}
	const domain = tree.find((entry) => tagOf(entry) === 'domain');
	if (!domain) throw new LibvirtBackupError('PARSE_ERROR', 'Domain XML has no <domain> element');
	return { tree, domain };
}

/** The XML of an ordered tree, every value escaped (a newline in an attribute stays one). */
export function buildOrdered(tree: OrderedNode[]): string {
	return String(orderedBuilder.build(escapeOrdered(tree)));
}

function setText(parent: OrderedNode, tag: string, value: string): void {
	const existing = child(parent, tag);
	if (existing) existing[tag] = [{ '#text': value }];
	else childrenOf(parent).unshift({ [tag]: [{ '#text': value }] });
}

/** Devices that hand the host's hardware or folders to a guest: a new VM must not take the original's. */
const HOST_DEVICES = new Set(['hostdev', 'filesystem', 'redirdev', 'smartcard']);
const CHARDEVS = new Set(['serial', 'parallel', 'console', 'channel']);
/** Character device types whose source is a host path: a planted definition could write any file. */
const HOST_FILE_CHARDEVS = new Set(['file', 'dev', 'pipe', 'unix']);

/** The first element outside libvirt's own schema (a namespaced one, e.g. qemu:commandline), if any. */
function foreignElement(entries: OrderedNode[]): string | undefined {
	for (const entry of entries) {
		const tag = tagOf(entry);
		if (!tag || tag === '#text') continue;
		if (tag.includes(':')) return tag;
		const nested = foreignElement(childrenOf(entry));
		if (nested) return nested;
	}
	return undefined;
}

/**
 * The saved definition of a backed-up domain turned into one for a NEW domain on the given disks:
 * the new name, no `<uuid>` and no interface `<mac>` (libvirt makes new ones, so the new domain
 * clashes with the original in neither), each listed disk's file and format set with its backing
 * chain description removed (the image's own header is the truth). Disks that are not listed are
 * dropped: a new domain must not open the original's other disks, CD images included. A listed
 * disk that is not a file disk in the saved definition is refused. UEFI variables (`<nvram>`) are
 * dropped too: libvirt makes a fresh store from its template rather than share the original's.
 *
 * The backup store may be a share others write to, so the saved definition is not trusted with the
 * host: raw hypervisor settings (any element outside libvirt's schema, e.g. `qemu:commandline`)
 * are refused; the emulator path (libvirt picks its default), interface scripts, host devices and
 * shared folders, and character devices on host files, devices or sockets are left out, a guest
 * agent channel's socket path too (libvirt makes one). Each is named in a warning.
 */
export function rewriteForNewVm(savedXml: string, opts: { name: string; disks: RestoredDisk[] }): NewVmXml {
	const { tree, domain } = parseOrderedDomain(savedXml);
	if (!child(domain, 'name')) throw new LibvirtBackupError('PARSE_ERROR', 'The saved domain XML has no <name>');
	delete attributesOf(domain).id;
	setText(domain, 'name', opts.name);
	removeChildren(domain, 'uuid');
	const warnings: string[] = [];
	const os = child(domain, 'os');
	if (os && child(os, 'nvram')) {
		removeChildren(os, 'nvram');
		warnings.push('The UEFI variable store (nvram) of the original VM is not carried over: the new VM starts with a fresh one from the firmware template (boot entries set inside the guest are gone).');
	}
	const foreign = foreignElement(childrenOf(domain).filter((entry) => tagOf(entry) !== 'metadata'));
	if (foreign) {
		throw new LibvirtBackupError('INVALID_INPUT', `The saved domain definition has <${foreign}> (raw hypervisor settings): a VM is not defined from a backup with it. Define it by hand if you trust it.`);
	}
	const wanted = new Map(opts.disks.map((disk) => [disk.target, disk]));
	if (wanted.size !== opts.disks.length) throw new LibvirtBackupError('INVALID_INPUT', 'A disk target is listed twice for the new VM');
	const devices = child(domain, 'devices');
	const found = new Set<string>();
	const dropped: string[] = [];
	const kept: OrderedNode[] = [];
	const hostDevices = new Set<string>();
	const chardevs: string[] = [];
	for (const entry of childrenOf(devices)) {
		const tag = tagOf(entry) ?? '';
		if (tag === 'interface') {
			removeChildren(entry, 'mac');
			removeChildren(entry, 'script');
			removeChildren(entry, 'downscript');
		}
		if (tag === 'emulator') {
			const path = text(entry.emulator) ?? childrenOf(entry).map((item) => String(item['#text'] ?? '')).join('');
			if (!/^\/usr\/(bin|libexec)\/(qemu-system-[a-z0-9_]+|qemu-kvm|kvm)$/.test(path)) warnings.push(`The saved emulator ${JSON.stringify(path)} is not used: libvirt chooses the default one for the new VM.`);
			continue;
		}
		if (HOST_DEVICES.has(tag)) {
			hostDevices.add(tag);
			continue;
		}
		if (CHARDEVS.has(tag)) {
			const type = attributesOf(entry).type ?? '';
			if (tag === 'channel' && type === 'unix') {
				for (const source of childrenOf(entry).filter((item) => tagOf(item) === 'source')) delete attributesOf(source).path;
			} else if (HOST_FILE_CHARDEVS.has(type)) {
				chardevs.push(`${tag} (${type})`);
				continue;
			}
		}
		if (tag !== 'disk') {
			kept.push(entry);
			continue;
		}
		const target = attributesOf(child(entry, 'target') ?? {}).dev ?? '';
		const restored = wanted.get(target);
		if (!restored) {
			dropped.push(target);
			continue;
		}
		const type = attributesOf(entry).type ?? 'file';
		if (type !== 'file') {
			throw new LibvirtBackupError('INVALID_INPUT', `Disk ${target} of the saved definition is a ${type} disk, not a file: a new VM can only be defined on restored files`);
		}
		found.add(target);
		removeChildren(entry, 'backingStore');
		const driver = child(entry, 'driver');
		if (driver) attributesOf(driver).type = restored.format;
		else childrenOf(entry).unshift({ driver: [], ':@': { name: 'qemu', type: restored.format } });
		const source = { source: [], ':@': { file: restored.path } };
		const children = childrenOf(entry);
		const at = children.findIndex((item) => tagOf(item) === 'source');
		if (at >= 0) children[at] = source;
		else children.splice(children.indexOf(driver ?? children[0]) + 1, 0, source);
		kept.push(entry);
	}
	const missing = opts.disks.filter((disk) => !found.has(disk.target)).map((disk) => disk.target);
	if (missing.length > 0) throw new LibvirtBackupError('INVALID_INPUT', `The saved domain definition has no disk ${missing.join(', ')}`);
	if (devices) devices.devices = kept;
	if (hostDevices.size > 0) warnings.push(`Host devices and shared host folders of the saved definition (${[...hostDevices].join(', ')}) are not given to the new VM: add them by hand if it should have them.`);
	if (chardevs.length > 0) warnings.push(`Character devices that use host files, devices or sockets (${chardevs.join(', ')}) are left out of the new VM.`);
	return { xml: buildOrdered(tree), dropped, warnings };
}

/** `rewriteForNewVm`'s XML; see there. */
export function domainXmlForNewVm(savedXml: string, opts: { name: string; disks: RestoredDisk[] }): string {
	return rewriteForNewVm(savedXml, opts).xml;
}

/** The definition with the given `<uuid>` (replacing any): callers that must know the new domain's UUID choose it. */
export function withUuid(xml: string, uuid: string): string {
	const { tree, domain } = parseOrderedDomain(xml);
	removeChildren(domain, 'uuid');
	const children = childrenOf(domain);
	const name = children.findIndex((entry) => tagOf(entry) === 'name');
	children.splice(name + 1, 0, { uuid: [{ '#text': uuid }] });
	return buildOrdered(tree);
}

/**
 * A name for a domain we define: libvirt refuses '/' in names, and a control character in one
 * would reach every log and line-based tool that shows it. Longer than 200 bytes is refused too
 * (the per-VM folder name and paths built from it must stay within NAME_MAX).
 */
export function checkNewDomainName(name: string): void {
	const bad = name.trim() === '' ? 'it is empty' : name.includes('/') ? "it contains '/'" : /[\u0000-\u001f\u007f]/.test(name) ? 'it contains a control character' : Buffer.byteLength(name) > 200 ? 'it is longer than 200 bytes' : undefined;
	if (bad) throw new LibvirtBackupError('INVALID_INPUT', `New VM name ${JSON.stringify(name)} cannot be used: ${bad}`);
}
