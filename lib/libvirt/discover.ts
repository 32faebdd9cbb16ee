/**
 * Discovery of every domain with its state and disks in a CONSTANT number of SSH round trips:
 * one batched virsh script for states and domain XML, then the images' sizes from their headers
 * (imageHeaders.ts) with qemu-img for the rest, then qemu-img for the backing files the headers
 * name (each batch split only when the argument list would exceed what one SSH request carries).
 * Domains are addressed by UUID, so no VM name ever reaches a command line.
 */
import { LibvirtBackupError } from '../errors';
import { nameMatcher } from '../nameRegex';
import type { SshConnection } from '../ssh';
import { scriptArgv } from '../shell';
import { parseDomainXml, type DomainDefinition, type DomainDisk } from './domainXml';
import { newMarker, splitSections, type RemoteStep } from '../batch';
import { runVirsh, virshFailure } from './virsh';
import { IMAGE_HEADERS_SCRIPT, parseImageHeaders, type ImageFile, type ImageHeader } from './imageHeaders';

export type DomainState = 'running' | 'paused' | 'shutoff' | 'other';

export interface ImageLayer {
	path: string;
	format?: string;
	virtualBytes: number;
	allocatedBytes: number;
}

export interface DiscoveredDisk extends DomainDisk {
	/** Set when the domain XML gives no format and the disk is read as raw, as libvirt does. */
	warning?: string;
	virtualBytes: number | null;
	/** Bytes the top image occupies on the host (`actual-size`). */
	allocatedBytes: number | null;
	/** Backing files under the top image, nearest first (from `qemu-img info --backing-chain`). */
	backingChain: ImageLayer[];
	backupable: boolean;
	reason?: string;
}

export interface DiscoveredVm {
	name: string;
	uuid: string;
	state: DomainState;
	persistent: boolean;
	autostart: boolean;
	hypervisor: string;
	disks: DiscoveredDisk[];
	totalVirtualBytes: number;
	/** Bytes on the host for all disks including their backing files. */
	totalAllocatedBytes: number;
	backupable: boolean;
	reasons: string[];
}

export interface DiscoveryFilter {
	names?: string[];
	/** JavaScript-style pattern, matched with RE2 (linear time, see lib/nameRegex). */
	nameRegex?: string;
	state?: DomainState | 'any';
	persistence?: 'any' | 'persistent' | 'transient';
	excludeDevices?: string[];
	/** Exactly these domains, by exact name or UUID (never a domain ID); a missing one is an error. */
	domains?: string[];
}

export interface DiscoveryResult {
	vms: DiscoveredVm[];
	/** SSH commands this discovery ran (tests and benchmarks prove the constant). */
	sshExecs: number;
}

/**
 * Args: uri, marker. Every domain's XML comes back, also when only some are asked for: virsh
 * resolves a number as a domain ID before a name, and a name may hold any character, so names and
 * UUIDs are matched exactly against the parsed XML here, never by virsh or by lines of output.
 */
const STATE_SCRIPT = `export LC_ALL=C
uri=$1 m=$2
command -v virsh >/dev/null 2>&1 || { echo "virsh: command not found" >&2; exit 127; }
all=$(virsh -q -c "$uri" list --all --uuid) || exit $?
lists="echo $m state running; list --all --uuid --state-running; echo $m state paused; list --all --uuid --state-paused; echo $m state shutoff; list --all --uuid --state-shutoff; echo $m set persistent; list --all --uuid --persistent; echo $m set autostart; list --all --uuid --autostart"
virsh -c "$uri" "$lists" || exit $?
cmds=
for u in $all; do
  case $u in *[!0-9a-fA-F-]*) echo "unexpected UUID from virsh: $u" >&2; exit 65;; esac
  cmds="$cmds echo $m xml $u; dumpxml $u;"
done
[ -z "$cmds" ] || virsh -c "$uri" "$cmds"
`;

/** qemu-img info costs ~10 ms of process start per image: run one per CPU at a time, print in order. */
const IMAGE_SCRIPT = `export LC_ALL=C
m=$1; shift
command -v qemu-img >/dev/null 2>&1 || { echo "$m noqemuimg"; exit 0; }
# Args come in pairs: format, path. The format is never probed: a guest that writes a qcow2 header
# into its raw disk would choose which files (backing, protocol) root opens.
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
trap 'rm -rf "$tmp"; exit 143' TERM
jobs=$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 2)
[ "$jobs" -gt 8 ] && jobs=8
i=0
while [ $# -ge 2 ]; do
  f=$1 p=$2; shift 2
  ( if qemu-img info --output=json -U --backing-chain -f "$f" -- "$p" >"$tmp/$i" 2>&1; then echo ok >"$tmp/$i.rc"; else echo err >"$tmp/$i.rc"; fi ) &
  i=$((i+1))
  [ $((i % jobs)) -eq 0 ] && wait
done
wait
j=0
while [ "$j" -lt "$i" ]; do
  echo "$m $(cat "$tmp/$j.rc") $j"
  cat "$tmp/$j"
  j=$((j+1))
done
`;

/** Stay well under OpenSSH's 256 KiB packet limit for one exec request. */
const MAX_ARGS_BYTES = 96 * 1024;

export interface HostDomain {
	name: string;
	uuid: string;
	state: DomainState;
}

/** Every domain's name, UUID and state in one SSH round trip, no disk image inspected (for pickers). */
export async function listDomains(ssh: SshConnection, uri: string, signal?: AbortSignal): Promise<HostDomain[]> {
	const { definitions, stateOf } = await readDomains(ssh, uri, signal);
	return definitions.map(({ name, uuid }) => ({ name, uuid, state: stateOf(uuid) })).sort(byName);
}

export interface HostDomains {
	definitions: DomainDefinition[];
	inSet(set: string, uuid: string): boolean;
	stateOf(uuid: string): DomainState;
}

async function readDomains(ssh: SshConnection, uri: string, signal?: AbortSignal): Promise<HostDomains> {
	const step = readDomainsStep(uri, ssh.target.username);
	const { stdout } = await runVirsh(ssh, step.argv, uri, step.label, signal);
	return step.parse(stdout, 0);
}

/** Every domain's definition and state sets, as a step of a batched command (lib/batch). */
export function readDomainsStep(uri: string, username: string): RemoteStep<HostDomains> {
	const marker = newMarker();
	return {
		label: 'virsh (discovery)',
		argv: scriptArgv(STATE_SCRIPT, 'lvb-discover', [uri, marker]),
		failure: (exitCode, stderr) => virshFailure({ exitCode, stderr }, uri, username),
		parse: (stdout) => {
			const sets = new Map<string, Set<string>>();
			const definitions: DomainDefinition[] = [];
			for (const section of splitSections(stdout, marker)) {
				if (section.kind === 'xml') {
					// A domain undefined between the list and its dumpxml has no XML: it is gone, skip it.
					if (section.body.includes('<domain')) definitions.push(parseDomainXml(section.body));
				} else {
					sets.set(section.arg, new Set(section.body.split('\n').map((line) => line.trim().toLowerCase()).filter(Boolean)));
				}
			}
			const inSet = (set: string, uuid: string) => sets.get(set)?.has(uuid.toLowerCase()) ?? false;
			const stateOf = (uuid: string): DomainState => (['running', 'paused', 'shutoff'] as const).find((state) => inSet(state, uuid)) ?? 'other';
			return { definitions, inSet, stateOf };
		},
	};
}

/** What libvirt reports for a running domain's disk (`domstats --block`): its top image. */
export interface BlockStat {
	path: string;
	capacity: number;
	physical: number;
}

/**
 * One VM from already read domains, its images described by libvirt's block stats (one virsh call,
 * no qemu-img): undefined when those do not cover every disk as qemu-img info would (a backing
 * chain, a block device, a disk libvirt has no numbers for), and the caller asks qemu-img.
 */
export function vmFromBlockStats(host: HostDomains, uri: string, domain: string, stats: ReadonlyMap<string, BlockStat>): DiscoveredVm | undefined {
	const [definition] = resolveDomains(host.definitions, [domain], uri);
	// A shut-off domain's XML names no backing chain, and libvirt reports none for it.
	if (!['running', 'paused'].includes(host.stateOf(definition.uuid))) return undefined;
	const images = new Map<string, ImageInfo>();
	for (const disk of definition.disks) {
		const local = localImage(disk);
		if (!local) continue;
		const stat = stats.get(disk.target);
		if (disk.type !== 'file' || disk.backingStore.length > 0 || !stat || stat.path !== local.path) return undefined;
		images.set(imageKey(local), { layers: [{ path: local.path, format: local.format, virtualBytes: stat.capacity, allocatedBytes: stat.physical }] });
	}
	return describeVm(host, definition, () => true, images);
}

export async function discoverVms(ssh: SshConnection, uri: string, filter: DiscoveryFilter = {}, signal?: AbortSignal): Promise<DiscoveryResult> {
	const nameSelected = checkFilter(filter);
	const execsBefore = ssh.execCount;
	const host = await readDomains(ssh, uri, signal);
	const { inSet, stateOf } = host;
	const definitions = filter.domains ? resolveDomains(host.definitions, filter.domains, uri) : host.definitions;

	const selected = definitions.filter((domain) => {
		if (!nameSelected(domain.name)) return false;
		if (filter.state && filter.state !== 'any' && stateOf(domain.uuid) !== filter.state) return false;
		const persistent = inSet('persistent', domain.uuid);
		if (filter.persistence === 'persistent' && !persistent) return false;
		if (filter.persistence === 'transient' && persistent) return false;
		return true;
	});

	const excluded = new Set(filter.excludeDevices ?? []);
	const disksOf = (domain: DomainDefinition) => domain.disks.filter((disk) => !excluded.has(disk.device));
	const images = await inspectImages(ssh, selected.flatMap((domain) => disksOf(domain).map(localImage).filter((image): image is LocalImage => !!image)), signal);

	const vms = selected.map((domain) => describeVm(host, domain, (disk) => !excluded.has(disk.device), images)).sort(byName);
	return { vms, sshExecs: ssh.execCount - execsBefore };
}

function describeVm(host: HostDomains, domain: DomainDefinition, included: (disk: DomainDisk) => boolean, images: Map<string, ImageInfo>): DiscoveredVm {
	const { inSet, stateOf } = host;
	const disks = domain.disks.filter(included).map((disk) => describeDisk(disk, images));
	const reasons = disks.filter((disk) => !disk.backupable).map((disk) => `${disk.target}: ${disk.reason}`);
	if (disks.length === 0) reasons.push('no disks');
	return {
		name: domain.name,
		uuid: domain.uuid,
		state: stateOf(domain.uuid),
		persistent: inSet('persistent', domain.uuid),
		autostart: inSet('autostart', domain.uuid),
		hypervisor: domain.hypervisor,
		disks,
		totalVirtualBytes: sum(disks.map((disk) => disk.virtualBytes ?? 0)),
		totalAllocatedBytes: sum(disks.map((disk) => (disk.allocatedBytes ?? 0) + sum(disk.backingChain.map((layer) => layer.allocatedBytes)))),
		backupable: reasons.length === 0,
		reasons,
	};
}

const byName = (a: { name: string }, b: { name: string }) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0);

const STATES = ['any', 'running', 'paused', 'shutoff', 'other'];
const PERSISTENCE = ['any', 'persistent', 'transient'];

/**
 * Filters come from workflows (expressions too): an unknown value or a bad regex is an error, not
 * zero VMs. Returns the test of a VM name against the name filters.
 */
export function checkFilter(filter: DiscoveryFilter): (name: string) => boolean {
	if (filter.state !== undefined && !STATES.includes(filter.state)) {
		throw new LibvirtBackupError('INVALID_INPUT', `state must be one of ${STATES.join(', ')}; got ${JSON.stringify(filter.state)}`);
	}
	if (filter.persistence !== undefined && !PERSISTENCE.includes(filter.persistence)) {
		throw new LibvirtBackupError('INVALID_INPUT', `persistence must be one of ${PERSISTENCE.join(', ')}; got ${JSON.stringify(filter.persistence)}`);
	}
	const names = filter.names?.length ? new Set(filter.names) : undefined;
	const matches = filter.nameRegex ? nameMatcher(filter.nameRegex) : undefined;
	return (name) => (!names || names.has(name)) && (!matches || matches(name));
}

/** Each requested name or UUID must be exactly one domain's name or UUID (UUIDs in any case). */
function resolveDomains(definitions: DomainDefinition[], requested: string[], uri: string): DomainDefinition[] {
	const wanted = new Set<DomainDefinition>();
	for (const domain of requested) {
		const found = definitions.filter((definition) => definition.name === domain || definition.uuid.toLowerCase() === domain.toLowerCase());
		if (found.length === 0) throw new LibvirtBackupError('VM_NOT_FOUND', `VM not found: ${domain} (on ${uri})`);
		if (found.length > 1) {
			throw new LibvirtBackupError('INVALID_INPUT', `"${domain}" is both the name of a VM and the UUID of another (on ${uri}): address the VM of that name by its own UUID, or rename it`);
		}
		wanted.add(found[0]);
	}
	return definitions.filter((definition) => wanted.has(definition));
}

type ImageInfo = { layers: ImageLayer[] } | { error: string };

interface LocalImage {
	path: string;
	format: string;
}

/** libvirt reads a disk without a format as raw (it does not probe): so do we. */
const UNSPECIFIED_FORMAT = 'raw';

function localImage(disk: DomainDisk): LocalImage | undefined {
	const path = disk.type === 'file' || disk.type === 'block' ? disk.source.path : undefined;
	return path ? { path, format: disk.format ?? UNSPECIFIED_FORMAT } : undefined;
}

const imageKey = (image: LocalImage) => `${image.format}\0${image.path}`;

/**
 * Sizes and backing chains of the images: qcow2 and raw files from their headers (lib/libvirt/
 * imageHeaders: a few processes for all of them) while qemu-img reads the others in the same
 * round trip; then qemu-img reads the backing files the headers named (each once, however many
 * images share it) and whatever the headers left unsure. A constant number of round trips.
 */
async function inspectImages(ssh: SshConnection, wanted: LocalImage[], signal?: AbortSignal): Promise<Map<string, ImageInfo>> {
	const unique = [...new Map(wanted.map((image) => [imageKey(image), image])).values()];
	const files = unique.filter((image): image is ImageFile => image.format === 'qcow2' || image.format === 'raw');
	const others = unique.filter((image) => image.format !== 'qcow2' && image.format !== 'raw');
	const [headers, otherInfo] = await Promise.all([readHeaders(ssh, files, signal), qemuImgInfo(ssh, others, signal)]);
	const backings = new Map<string, LocalImage>();
	const unsure: LocalImage[] = [];
	files.forEach((image, index) => {
		const header = headers[index];
		if (!header) unsure.push(image);
		else if (header.backing) backings.set(imageKey(header.backing), header.backing);
	});
	const later = await qemuImgInfo(ssh, [...unsure, ...backings.values()], signal);
	const images = new Map([...otherInfo, ...later]);
	files.forEach((image, index) => {
		const header = headers[index];
		if (!header) return;
		const backing = header.backing ? later.get(imageKey(header.backing)) : undefined;
		if (!header.backing) images.set(imageKey(image), { layers: [header.top] });
		else images.set(imageKey(image), !backing || 'error' in backing ? { error: backing && 'error' in backing ? backing.error : 'backing file not read' } : { layers: [header.top, ...backing.layers] });
	});
	return images;
}

async function readHeaders(ssh: SshConnection, files: ImageFile[], signal?: AbortSignal): Promise<(ImageHeader | undefined)[]> {
	const results: (ImageHeader | undefined)[] = [];
	for (const batch of batchesByBytes(files, MAX_ARGS_BYTES)) {
		const marker = newMarker();
		const { stdout } = await ssh.run(scriptArgv(IMAGE_HEADERS_SCRIPT, 'lvb-image-headers', [marker, ...batch.map((image) => image.path)]), { label: 'image headers', signal });
		results.push(...parseImageHeaders(batch, splitSections(stdout, marker)));
	}
	return results;
}

async function qemuImgInfo(ssh: SshConnection, unique: LocalImage[], signal?: AbortSignal): Promise<Map<string, ImageInfo>> {
	const images = new Map<string, ImageInfo>();
	for (const batch of batchesByBytes(unique, MAX_ARGS_BYTES)) {
		const marker = newMarker();
		const args = batch.flatMap((image) => [image.format, image.path]);
		const { stdout } = await ssh.run(scriptArgv(IMAGE_SCRIPT, 'lvb-image-info', [marker, ...args]), { label: 'qemu-img info', signal });
		for (const section of splitSections(stdout, marker)) {
			if (section.kind === 'noqemuimg') {
				for (const image of batch) images.set(imageKey(image), { error: 'qemu-img not found on host (install qemu-utils / qemu-img)' });
				break;
			}
			const image = batch[Number(section.arg)];
			if (image === undefined) throw new LibvirtBackupError('PARSE_ERROR', `qemu-img info output names an unknown disk index ${section.arg}`);
			images.set(
				imageKey(image),
				section.kind === 'ok' ? { layers: parseImageInfo(section.body, image.path) } : { error: section.body.trim().split('\n').pop() ?? 'qemu-img info failed' },
			);
		}
	}
	return images;
}

function parseImageInfo(json: string, path: string): ImageLayer[] {
	let parsed: unknown;
	try {
		parsed = JSON.parse(json);
	} catch {
		throw new LibvirtBackupError('PARSE_ERROR', `qemu-img info for ${path} returned output that is not JSON`);
	}
	const layers = Array.isArray(parsed) ? parsed : [parsed];
	return layers.map((layer: Record<string, unknown>) => ({
		path: String(layer.filename ?? ''),
		format: typeof layer.format === 'string' ? layer.format : undefined,
		virtualBytes: Number(layer['virtual-size'] ?? 0),
		allocatedBytes: Number(layer['actual-size'] ?? 0),
	}));
}

function describeDisk(disk: DomainDisk, images: Map<string, ImageInfo>): DiscoveredDisk {
	const unknown = { virtualBytes: null, allocatedBytes: null, backingChain: [] as ImageLayer[] };
	const reason = notBackupableReason(disk);
	const local = localImage(disk);
	const formatted = local && !disk.format ? { ...disk, format: local.format, warning: `no format in the domain XML: read as ${local.format}, as libvirt does (set <driver type=...> if the image is not ${local.format})` } : disk;
	const image = local ? images.get(imageKey(local)) : undefined;
	if (!image || 'error' in image) {
		const imageError = image && 'error' in image ? `cannot read the image: ${image.error}` : undefined;
		return { ...formatted, ...unknown, backupable: false, reason: reason ?? imageError ?? 'no local source to read' };
	}
	const [top, ...backing] = image.layers;
	return {
		...formatted,
		virtualBytes: top?.virtualBytes ?? null,
		allocatedBytes: top?.allocatedBytes ?? null,
		backingChain: backing,
		backupable: reason === undefined,
		...(reason ? { reason } : {}),
	};
}

function notBackupableReason(disk: DomainDisk): string | undefined {
	if (disk.device === 'cdrom' || disk.device === 'floppy') return `${disk.device}: removable media is not backed up`;
	if (disk.type === 'network') return `network disk (${disk.source.protocol ?? 'unknown protocol'}${disk.source.name ? ` ${disk.source.name}` : ''}): only local files and block devices can be backed up`;
	if (disk.type === 'volume') return `storage pool volume (${disk.source.pool ?? '?'}/${disk.source.volume ?? '?'}): not supported yet, define the disk by path`;
	if (disk.type !== 'file' && disk.type !== 'block') return `${disk.type} disk: only local files and block devices can be backed up`;
	if (!disk.source.path) return 'no source (empty drive)';
	if (disk.shareable) return 'shareable disk: another host may write it, no consistent copy is possible';
	return undefined;
}

function batchesByBytes<T extends LocalImage>(items: T[], maxBytes: number): T[][] {
	const batches: T[][] = [];
	let current: T[] = [];
	let bytes = 0;
	for (const item of items) {
		const size = Buffer.byteLength(item.path) + Buffer.byteLength(item.format) + 16;
		if (current.length > 0 && bytes + size > maxBytes) {
			batches.push(current);
			current = [];
			bytes = 0;
		}
		current.push(item);
		bytes += size;
	}
	if (current.length > 0) batches.push(current);
	return batches;
}

function sum(values: number[]): number {
	return values.reduce((total, value) => total + value, 0);
}
