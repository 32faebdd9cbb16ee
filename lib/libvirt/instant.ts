/**
 * The libvirt side of instant recovery: a domain whose disks are qcow2 overlays on a backup's
 * read-only image chain, and the calls that make it permanent or take it away.
 *
 * The chain under each overlay is written into the domain XML explicitly (`<backingStore>` down
 * to an empty terminator, each layer with its format). libvirt >= 5.10 with -blockdev then opens
 * exactly those files and never probes an image header: the backup folder is on a share others
 * can write, so no backing-file name planted in a qcow2 header may choose what qemu opens.
 */
import { LibvirtBackupError } from '../errors';
import { newMarker, splitSections } from '../batch';
import { scriptArgv } from '../shell';
import type { SshConnection } from '../ssh';
import { runVirsh } from './virsh';
import { buildOrdered, parseOrderedDomain, type OrderedNode } from './domainXml';

export interface ChainLayer {
	path: string;
	format: 'qcow2' | 'raw';
}

export interface InstantDisk {
	target: string;
	/** The qcow2 overlay the VM writes to. */
	overlay: string;
	/** The backup images under it, nearest first, down to the full. */
	chain: ChainLayer[];
}

/** What the domain remembers of its instant recovery (in its `<metadata>`): ours, read back from libvirt. */
export interface InstantMetadata {
	/** The backup folder it was recovered from. */
	backup: string;
	/** Every backup folder of the chain (top first): the ones holding our in-use marker. */
	chain: string[];
	overlays: { target: string; path: string }[];
	createdAt: string;
}

export const INSTANT_METADATA_NS = 'https://github.com/n8n-nodes-libvirt-backup/instant-recovery/1';
const PREFIX = 'lvb';
const ROOT = `${PREFIX}:instant`;


function tagOf(node: OrderedNode): string | undefined {
	return Object.keys(node).find((key) => key !== ':@' && key !== '#text');
}

function children(node: OrderedNode): OrderedNode[] {
	const tag = tagOf(node);
	const value = tag === undefined ? undefined : node[tag];
	return Array.isArray(value) ? (value as OrderedNode[]) : [];
}

function attrs(node: OrderedNode): Record<string, string> {
	return (node[':@'] as Record<string, string> | undefined) ?? {};
}

function element(tag: string, attributes: Record<string, string> = {}, content: OrderedNode[] = []): OrderedNode {
	return Object.keys(attributes).length > 0 ? { [tag]: content, ':@': attributes } : { [tag]: content };
}

function textNode(value: string): OrderedNode {
	return { '#text': value };
}


function child(node: OrderedNode, tag: string): OrderedNode | undefined {
	return children(node).find((candidate) => tagOf(candidate) === tag);
}

function chainXml(layers: readonly ChainLayer[]): OrderedNode {
	const [top, ...rest] = layers;
	// An empty <backingStore/> ends the chain: libvirt then probes nothing below it.
	if (!top) return element('backingStore');
	return element('backingStore', { type: 'file' }, [element('format', { type: top.format }), element('source', { file: top.path }), chainXml(rest)]);
}

/**
 * Points each listed disk of `xml` at its overlay with the backup chain under it written out, and
 * records `metadata` in the domain's `<metadata>`. Every disk must be found by its target.
 */
export function instantDomainXml(xml: string, disks: readonly InstantDisk[], metadata: InstantMetadata): string {
	const { tree, domain } = parseOrderedDomain(xml);
	// The saved definition lies on the backup share: raw hypervisor arguments in it would run as qemu does.
	const foreign = children(domain).map(tagOf).filter((tag): tag is string => tag !== undefined && tag.includes(':'));
	if (foreign.length > 0) {
		throw new LibvirtBackupError('INVALID_INPUT', `The saved domain XML holds hypervisor-specific elements (${foreign.map((tag) => `<${tag}>`).join(', ')}) that an instant-recovery VM does not take over: remove them from domain.xml if you trust it, or restore instead`);
	}
	const byTarget = new Map(disks.map((disk) => [disk.target, disk]));
	rewriteDisks(domain, (target) => {
		const disk = byTarget.get(target);
		if (!disk) return undefined;
		byTarget.delete(target);
		return { path: disk.overlay, format: 'qcow2', chain: disk.chain };
	});
	if (byTarget.size > 0) throw new LibvirtBackupError('INVALID_INPUT', `The saved domain XML has no disk ${[...byTarget.keys()].join(', ')}`);
	setMetadata(domain, metadata);
	return buildOrdered(tree);
}

/**
 * The domain with each listed disk on a standalone image (`<backingStore/>`: nothing under it)
 * and our instant-recovery metadata removed: what a made-permanent VM is defined as.
 */
export function standaloneDomainXml(xml: string, disks: readonly { target: string; path: string; format: 'qcow2' | 'raw' }[]): string {
	const { tree, domain } = parseOrderedDomain(xml);
	const byTarget = new Map(disks.map((disk) => [disk.target, disk]));
	rewriteDisks(domain, (target) => {
		const disk = byTarget.get(target);
		return disk ? { path: disk.path, format: disk.format, chain: [] } : undefined;
	});
	setMetadata(domain, undefined);
	return buildOrdered(tree);
}

function rewriteDisks(domain: OrderedNode, replacement: (target: string) => { path: string; format: string; chain: readonly ChainLayer[] } | undefined): void {
	const devices = child(domain, 'devices');
	for (const disk of devices ? children(devices) : []) {
		if (tagOf(disk) !== 'disk') continue;
		const target = child(disk, 'target');
		const wanted = target ? replacement(attrs(target).dev ?? '') : undefined;
		if (!wanted) continue;
		disk[':@'] = { ...attrs(disk), type: 'file' };
		const content = children(disk).filter((node) => !['source', 'backingStore', 'driver'].includes(tagOf(node) ?? ''));
		const driver = child(disk, 'driver');
		const driverAttrs = { name: 'qemu', ...(driver ? attrs(driver) : {}), type: wanted.format };
		content.unshift(element('driver', driverAttrs, driver ? children(driver) : []), element('source', { file: wanted.path }), chainXml(wanted.chain));
		disk.disk = content;
	}
}

function setMetadata(domain: OrderedNode, metadata: InstantMetadata | undefined): void {
	const content = children(domain);
	let holder = child(domain, 'metadata');
	if (!holder) {
		if (!metadata) return;
		holder = element('metadata');
		content.push(holder);
	}
	const kept = children(holder).filter((node) => localName(tagOf(node)) !== 'instant' || attrs(node)[`xmlns:${(tagOf(node) ?? '').split(':')[0]}`] !== INSTANT_METADATA_NS);
	if (metadata) {
		kept.push(
			element(ROOT, { [`xmlns:${PREFIX}`]: INSTANT_METADATA_NS }, [
				element(`${PREFIX}:backup`, {}, [textNode(metadata.backup)]),
				...metadata.chain.map((path) => element(`${PREFIX}:member`, {}, [textNode(path)])),
				...metadata.overlays.map((overlay) => element(`${PREFIX}:overlay`, { target: overlay.target }, [textNode(overlay.path)])),
				element(`${PREFIX}:created`, {}, [textNode(metadata.createdAt)]),
			]),
		);
	}
	holder.metadata = kept;
}

function localName(tag: string | undefined): string | undefined {
	return tag?.includes(':') ? tag.slice(tag.indexOf(':') + 1) : tag;
}

function textOf(node: OrderedNode): string {
	return children(node)
		.map((part) => (typeof part['#text'] === 'string' ? part['#text'] : ''))
		.join('');
}

/** Our instant-recovery metadata in a domain's XML, or undefined when it has none (not an instant-recovery VM). */
export function parseInstantMetadata(xml: string): InstantMetadata | undefined {
	const domain = parseOrderedDomain(xml).domain;
	const holder = child(domain, 'metadata');
	const ours = holder ? children(holder).find((node) => localName(tagOf(node)) === 'instant' && Object.entries(attrs(node)).some(([key, value]) => key.startsWith('xmlns') && value === INSTANT_METADATA_NS)) : undefined;
	if (!ours) return undefined;
	const parts = children(ours).filter((node) => tagOf(node) !== undefined);
	const all = (name: string) => parts.filter((node) => localName(tagOf(node)) === name);
	const backup = all('backup')[0];
	const created = all('created')[0];
	if (!backup || !created) throw new LibvirtBackupError('PARSE_ERROR', 'The instant-recovery metadata of the domain is incomplete');
	return {
		backup: textOf(backup),
		chain: all('member').map(textOf),
		overlays: all('overlay').map((node) => ({ target: attrs(node).target ?? '', path: textOf(node) })),
		createdAt: textOf(created),
	};
}

export type DomainRunState = 'running' | 'paused' | 'shut off' | 'other';

export interface DomainInfo {
	uuid: string;
	state: DomainRunState;
	/** The live definition (the inactive one when the domain is shut off). */
	xml: string;
	/** The persistent definition. */
	inactiveXml: string;
}

/**
 * `sh -c READ_DOMAIN_SCRIPT lvb-domain MARKER URI REF`: REF is a name or UUID;
 * every later call uses the UUID. A domain that does not exist answers `none`.
 */
export const READ_DOMAIN_SCRIPT = `export LC_ALL=C
m=$1 uri=$2 ref=$3
u=
# domuuid looks a domain up by name or id only: a UUID is checked with domname.
case $ref in
  ????????-????-????-????-????????????) virsh -q -c "$uri" domname --domain "$ref" >/dev/null 2>&1 && u=$ref;;
esac
if [ -z "$u" ] && ! u=$(virsh -q -c "$uri" domuuid --domain "$ref" 2>&1); then
  case $u in *'failed to get domain'*|*'Domain not found'*) echo "$m none"; exit 0;; esac
  printf '%s\\n' "$u" >&2; exit 1
fi
echo "$m uuid $u"
echo "$m state"; virsh -q -c "$uri" domstate --domain "$u" || exit 1
echo "$m xml"; virsh -q -c "$uri" dumpxml --domain "$u" || exit 1
echo "$m inactive"; virsh -q -c "$uri" dumpxml --inactive --domain "$u" || exit 1
echo "$m end"`;

export async function readDomain(ssh: SshConnection, uri: string, ref: string, signal?: AbortSignal): Promise<DomainInfo | undefined> {
	const marker = newMarker();
	const { stdout } = await runVirsh(ssh, scriptArgv(READ_DOMAIN_SCRIPT, 'lvb-domain', [marker, uri, ref]), uri, 'virsh domuuid/domstate/dumpxml', signal);
	const sections = splitSections(stdout, marker);
	if (sections.some((section) => section.kind === 'none')) return undefined;
	const body = (kind: string) => sections.find((section) => section.kind === kind)?.body;
	const uuid = sections.find((section) => section.kind === 'uuid')?.arg.trim().toLowerCase() ?? '';
	const xml = body('xml');
	const inactiveXml = body('inactive');
	if (!/^[0-9a-f-]{36}$/.test(uuid) || xml === undefined || inactiveXml === undefined || !sections.some((section) => section.kind === 'end')) {
		throw new LibvirtBackupError('PARSE_ERROR', `virsh gave an incomplete answer for domain ${JSON.stringify(ref)}`);
	}
	const stateText = (body('state') ?? '').trim();
	const state: DomainRunState = stateText === 'running' || stateText === 'paused' || stateText === 'shut off' ? stateText : 'other';
	return { uuid, state, xml, inactiveXml };
}

/** `drop`: removes $dest unless the VM's disk $t runs on it (needs uri, u, t, dest). */
const DROP_COPY_FN = `drop() {
  on=$(virsh -q -c "$uri" domblklist --domain "$u" 2>/dev/null | awk -v t="$t" '$1 == t { sub(/^ *[^ ]+ +/, ""); print }')
  [ "$on" = "$dest" ] || rm -f -- "$dest"
}`;

/**
 * `sh -c BLOCKCOPY_SCRIPT lvb-blockcopy URI UUID TARGET DEST`: copies the disk's whole chain into
 * DEST (a new standalone qcow2) while the VM runs, and pivots the VM onto it. libvirt 9.0 refuses
 * a copy job on a persistent domain unless it is transient (`--transient-job`: the job is not
 * resumed after a restart); after the pivot libvirt points the persistent definition at DEST too.
 * A copy stopped half-way (cancel, lost connection) is aborted, so the VM stays on its overlay, and
 * a copy that did not end in the pivot removes DEST (the caller made sure it did not exist, so it is
 * this copy's; kept if the VM runs on it after all): a half-written disk would block the next run.
 */
export const BLOCKCOPY_SCRIPT = `export LC_ALL=C
uri=$1 u=$2 t=$3 dest=$4
${DROP_COPY_FN}
abort() { virsh -q -c "$uri" blockjob --domain "$u" --path "$t" --abort >/dev/null 2>&1; drop; exit 130; }
trap abort INT TERM HUP
virsh -q -c "$uri" blockcopy --domain "$u" --path "$t" --dest "$dest" --format qcow2 --transient-job --wait --pivot &
wait $! && exit 0
rc=$?
drop
exit $rc`;

/**
 * `sh -c ABORT_COPY_SCRIPT lvb-abort-copy URI UUID TARGET DEST`: ends a copy job to DEST that a run
 * killed before its own cleanup left on the VM (seen as the disk's <mirror>), and removes DEST.
 */
export const ABORT_COPY_SCRIPT = `export LC_ALL=C
uri=$1 u=$2 t=$3 dest=$4
${DROP_COPY_FN}
virsh -q -c "$uri" blockjob --domain "$u" --path "$t" --abort >/dev/null || exit 1
drop`;

/** A copy reads the whole chain: hours on a big disk, never forever. */
const BLOCKCOPY_TIMEOUT_MS = 12 * 3_600_000;

export async function abortLeftCopy(ssh: SshConnection, uri: string, uuid: string, target: string, dest: string, signal?: AbortSignal): Promise<void> {
	await runVirsh(ssh, scriptArgv(ABORT_COPY_SCRIPT, 'lvb-abort-copy', [uri, uuid, target, dest]), uri, `virsh blockjob --abort ${target}`, signal);
}

export async function blockCopyPivot(ssh: SshConnection, uri: string, uuid: string, target: string, dest: string, signal?: AbortSignal): Promise<void> {
	await runVirsh(ssh, scriptArgv(BLOCKCOPY_SCRIPT, 'lvb-blockcopy', [uri, uuid, target, dest]), uri, `virsh blockcopy ${target}`, signal, { timeoutMs: BLOCKCOPY_TIMEOUT_MS });
}

/** `virsh define` of an XML given on stdin-less argv: through a private temp file the script removes. */
export const REDEFINE_SCRIPT = `uri=$1 xml=$2
f=$(mktemp) || exit 1
trap 'rm -f -- "$f"' EXIT
printf '%s' "$xml" > "$f" || exit 1
virsh -q -c "$uri" define --file "$f" >/dev/null`;

/** Replaces a domain's persistent definition (same name and UUID). */
export async function redefineDomain(ssh: SshConnection, uri: string, xml: string, signal?: AbortSignal): Promise<void> {
	await runVirsh(ssh, scriptArgv(REDEFINE_SCRIPT, 'lvb-redefine', [uri, xml]), uri, 'virsh define', signal);
}

/** UUIDs of every domain defined (or running) on the host: to tell a marker whose VM is gone. */
export async function definedDomainUuids(ssh: SshConnection, uri: string, signal?: AbortSignal): Promise<Set<string>> {
	const { stdout } = await runVirsh(ssh, ['virsh', '-q', '-c', uri, 'list', '--all', '--uuid'], uri, 'virsh list', signal);
	return new Set(stdout.split('\n').map((line) => line.trim().toLowerCase()).filter(Boolean));
}

export interface DefinedDisk {
	target: string;
	path: string;
	format: string;
	/** The `<backingStore>` chain written in the definition, nearest first. */
	chain: ChainLayer[];
	/** Live definitions: the file a copy job on this disk writes to (its `<mirror>`). */
	mirror?: string;
}

/** File disks of a definition with the backing chain it spells out (format included). */
export function definedDisks(xml: string): DefinedDisk[] {
	const devices = child(parseOrderedDomain(xml).domain, 'devices');
	const disks: DefinedDisk[] = [];
	for (const disk of devices ? children(devices) : []) {
		if (tagOf(disk) !== 'disk' || (attrs(disk).type ?? 'file') !== 'file') continue;
		const target = child(disk, 'target');
		const source = child(disk, 'source');
		const driver = child(disk, 'driver');
		if (!target || !source) continue;
		const chain: ChainLayer[] = [];
		for (let store = child(disk, 'backingStore'); store && child(store, 'source'); store = child(store, 'backingStore')) {
			const format = attrs(child(store, 'format') ?? {}).type;
			const path = attrs(child(store, 'source') ?? {}).file;
			if ((format !== 'qcow2' && format !== 'raw') || !path) throw new LibvirtBackupError('PARSE_ERROR', `Disk ${attrs(target).dev}: a backing layer without a file or a qcow2/raw format`);
			chain.push({ path, format });
		}
		const mirror = child(disk, 'mirror');
		disks.push({ target: attrs(target).dev ?? '', path: attrs(source).file ?? '', format: driver ? (attrs(driver).type ?? '') : '', chain, ...(mirror && attrs(mirror).file ? { mirror: attrs(mirror).file } : {}) });
	}
	return disks;
}
