/**
 * Stale dirty bitmaps: a checkpoint whose metadata libvirt lost (the VM was redefined, `virsh
 * checkpoint-delete --metadata`) leaves its bitmap in the qcow2, where QEMU keeps recording every
 * guest write into it and nothing ever removes it. Found and removed here: through QMP on a running
 * or paused VM (libvirt has no call that lists a disk's bitmaps), with qemu-img on a shut-off one.
 * Only the disk's active layer is looked at: a backing file may be a base other VMs share, and QEMU
 * never writes it.
 */
import { LibvirtBackupError, tail } from '../errors';
import { newMarker, splitSections } from '../batch';
import { scriptArgv } from '../shell';
import type { SshConnection } from '../ssh';
import type { DiscoveredVm } from './discover';
import { runVirsh } from './virsh';

/** Each round trip lists or removes a few bitmaps: a minute is far more than it takes. */
const BITMAP_TIMEOUT_MS = 60_000;

export interface DiskBitmap {
	target: string;
	name: string;
}

export interface BitmapCleanup {
	removed: DiskBitmap[];
	failed: (DiskBitmap & { error: string })[];
}

/** A disk whose active layer we may change bitmaps in: a local qcow2 that this VM alone writes. */
interface BitmapDisk {
	target: string;
	path: string;
}

export function bitmapDisks(vm: Pick<DiscoveredVm, 'disks'>): BitmapDisk[] {
	return vm.disks.flatMap((disk) =>
		disk.format === 'qcow2' && (disk.type === 'file' || disk.type === 'block') && disk.source.path && !disk.readonly && !disk.shareable
			? [{ target: disk.target, path: disk.source.path }]
			: [],
	);
}

/** Bitmaps found on one disk; `node` is QEMU's node name of its active layer (running VM only). */
export interface FoundBitmaps {
	target: string;
	node?: string;
	names: string[];
}

function parseJson(text: string, what: string): unknown {
	try {
		return JSON.parse(text);
	} catch {
		throw new LibvirtBackupError('PARSE_ERROR', `${what} is not JSON: ${tail(text, 3)}`);
	}
}

function record(value: unknown): Record<string, unknown> | undefined {
	return value !== null && typeof value === 'object' && !Array.isArray(value) ? (value as Record<string, unknown>) : undefined;
}

function names(list: unknown): string[] {
	return (Array.isArray(list) ? list : []).flatMap((entry) => {
		const name = record(entry)?.name;
		return typeof name === 'string' ? [name] : [];
	});
}

/**
 * `query-named-block-nodes` (flat) as virsh qemu-monitor-command prints it: the bitmaps of each
 * disk's qcow2 node whose file is the disk's source (its active layer). Other nodes are not ours
 * to judge.
 */
export function parseNodeBitmaps(output: string, disks: readonly BitmapDisk[]): FoundBitmaps[] {
	const reply = record(parseJson(output, 'QEMU block node list'));
	const error = record(reply?.error);
	if (error) throw new LibvirtBackupError('COMMAND_FAILED', `QEMU refused to list block nodes: ${String(error.desc ?? error.class)}`);
	if (!Array.isArray(reply?.return)) throw new LibvirtBackupError('PARSE_ERROR', 'QEMU block node list has no "return" list');
	return reply.return.flatMap((entry) => {
		const node = record(entry);
		const disk = disks.find((candidate) => node?.drv === 'qcow2' && node.file === candidate.path);
		const nodeName = node?.['node-name'];
		if (!disk || typeof nodeName !== 'string') return [];
		return [{ target: disk.target, node: nodeName, names: names(node?.['dirty-bitmaps']) }];
	});
}

/** `qemu-img info --output=json` of one qcow2 image: the bitmaps stored in it. */
export function parseImageBitmaps(output: string): string[] {
	const info = record(parseJson(output, 'qemu-img info output'));
	return names(record(record(info?.['format-specific'])?.data)?.bitmaps);
}

/** Bitmaps that are ours (by name) and that libvirt has no checkpoint for, sorted per disk. */
export function staleBitmaps(found: readonly FoundBitmaps[], checkpoints: readonly string[], isOurs: (name: string) => boolean): (DiskBitmap & { node?: string })[] {
	const known = new Set(checkpoints);
	return found.flatMap((disk) =>
		disk.names
			.filter((name) => isOurs(name) && !known.has(name))
			.sort()
			.map((name) => ({ target: disk.target, name, ...(disk.node ? { node: disk.node } : {}) })),
	);
}

/**
 * Args: uri, dom, marker, live (1|0), then the disks' image paths (shut-off VM). Bitmaps are read
 * BEFORE the checkpoints, and a running VM is skipped while it has a job: a bitmap whose checkpoint
 * is being created (by a backup to another destination) then either shows its checkpoint, or the
 * job that creates it is still running.
 */
const LOOK_SCRIPT = `export LC_ALL=C
uri=$1 dom=$2 m=$3 live=$4; shift 4
if [ "$live" = 1 ]; then
  echo "$m nodes"
  virsh -q -c "$uri" qemu-monitor-command --domain "$dom" --cmd '{"execute":"query-named-block-nodes","arguments":{"flat":true}}' || exit $?
  job=$(virsh -c "$uri" domjobinfo --domain "$dom" --rawstats) || exit $?
  case $job in *"Job type: 1"*|*"Job type: 2"*) echo "$m busy"; exit 0;; esac
else
  [ "$(virsh -q -c "$uri" domstate --domain "$dom")" = "shut off" ] || { echo "$m busy"; exit 0; }
  i=0
  for image in "$@"; do
    echo "$m image $i"
    qemu-img info -U -f qcow2 --output=json -- "$image" || exit $?
    i=$((i+1))
  done
fi
echo "$m checkpoints"
virsh -q -c "$uri" checkpoint-list --domain "$dom" --name`;

/**
 * Args: uri, dom, marker, live (1|0), then triples: bitmap name, node (running) or image path
 * (shut off), QMP command (running). A bitmap whose checkpoint appeared since the look is left. A
 * shut-off VM's image is written only while the VM is still shut off (and qemu-img takes QEMU's
 * image lock, so a VM started meanwhile is never written under).
 */
const REMOVE_SCRIPT = `export LC_ALL=C
uri=$1 dom=$2 m=$3 live=$4; shift 4
nl='
'
if [ "$live" != 1 ]; then
  [ "$(virsh -q -c "$uri" domstate --domain "$dom")" = "shut off" ] || exit 0
fi
list=$(virsh -q -c "$uri" checkpoint-list --domain "$dom" --name) || exit $?
i=0
while [ $# -ge 3 ]; do
  name=$1 where=$2 cmd=$3; shift 3
  case "$nl$list$nl" in
    *"$nl$name$nl"*) ;;
    *)
      if [ "$live" = 1 ]; then
        out=$(virsh -q -c "$uri" qemu-monitor-command --domain "$dom" --cmd "$cmd" 2>&1)
      else
        out=$(qemu-img bitmap --remove -f qcow2 -- "$where" "$name" 2>&1) && out='{"return":{}}'
      fi
      echo "$m result $i"
      printf '%s\\n' "$out";;
  esac
  i=$((i+1))
done`;

/** QEMU's answer (QMP and qemu-img alike) when the bitmap is already gone. */
const GONE = /Dirty bitmap '[^']*' not found/;

/** What one removal printed: QMP's reply (qemu-img's success is written as one), else an error text. */
function removalError(output: string): string | undefined {
	let reply: Record<string, unknown> | undefined;
	try {
		reply = record(JSON.parse(output));
	} catch {
		return tail(output, 3) || 'no output';
	}
	if (reply && 'return' in reply) return undefined;
	return String(record(reply?.error)?.desc ?? tail(output, 3));
}

/**
 * Removes the bitmaps in the VM's disks that `isOurs` claims and that libvirt has no checkpoint
 * for. Disks that are not local, writable qcow2 images are not looked at (and a VM without any is
 * not asked at all). A running VM that has a job, or a shut-off one that started, is left for
 * another time. Bitmaps that something else removed meanwhile are not reported.
 */
export async function removeStaleBitmaps(
	ssh: SshConnection,
	uri: string,
	vm: Pick<DiscoveredVm, 'uuid' | 'state' | 'disks'>,
	isOurs: (name: string) => boolean,
	signal?: AbortSignal,
): Promise<BitmapCleanup> {
	const disks = bitmapDisks(vm);
	const none: BitmapCleanup = { removed: [], failed: [] };
	if (disks.length === 0) return none;
	const live = vm.state === 'running' || vm.state === 'paused';
	const marker = newMarker();
	const look = await runVirsh(
		ssh,
		scriptArgv(LOOK_SCRIPT, 'lvb-bitmaps', [uri, vm.uuid, marker, live ? '1' : '0', ...(live ? [] : disks.map((disk) => disk.path))]),
		uri,
		'list disk bitmaps',
		signal,
		{ timeoutMs: BITMAP_TIMEOUT_MS },
	);
	const sections = splitSections(look.stdout, marker);
	if (sections.some((section) => section.kind === 'busy')) return none;
	const found = live
		? parseNodeBitmaps(sections.find((section) => section.kind === 'nodes')?.body ?? '', disks)
		: sections.filter((section) => section.kind === 'image').map((section) => ({ target: disks[Number(section.arg)].target, names: parseImageBitmaps(section.body) }));
	const checkpoints = (sections.find((section) => section.kind === 'checkpoints')?.body ?? '').split('\n').filter(Boolean);
	const stale = staleBitmaps(found, checkpoints, isOurs);
	if (stale.length === 0) return none;

	const args = stale.flatMap((bitmap) =>
		live
			? [bitmap.name, bitmap.node as string, JSON.stringify({ execute: 'block-dirty-bitmap-remove', arguments: { node: bitmap.node, name: bitmap.name } })]
			: [bitmap.name, disks.find((disk) => disk.target === bitmap.target)?.path as string, ''],
	);
	const removal = await runVirsh(ssh, scriptArgv(REMOVE_SCRIPT, 'lvb-bitmaps-remove', [uri, vm.uuid, marker, live ? '1' : '0', ...args]), uri, 'remove disk bitmaps', signal, {
		timeoutMs: BITMAP_TIMEOUT_MS,
	});
	const result: BitmapCleanup = { removed: [], failed: [] };
	for (const section of splitSections(removal.stdout, marker).filter((s) => s.kind === 'result')) {
		const { target, name } = stale[Number(section.arg)];
		const error = removalError(section.body.trim());
		if (error === undefined) result.removed.push({ target, name });
		else if (!GONE.test(error)) result.failed.push({ target, name, error });
	}
	return result;
}
