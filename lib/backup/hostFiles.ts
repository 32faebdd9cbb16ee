/**
 * File work on the backup host for one backup folder: free space, creating the folder, hashing,
 * finalizing (partials renamed, manifest written last via temp + rename), and removing our own
 * incomplete folders. Every path is data handed to constant scripts. The destination may be
 * writable by others: no read or write here follows a symbolic link or opens a FIFO or device
 * planted there, and every step has a time bound.
 */
import { LibvirtBackupError } from '../errors';
import { newMarker, splitSections, type RemoteStep } from '../batch';
import { scriptArgv } from '../shell';
import type { SshConnection } from '../ssh';
import { INCOMPLETE_MARKER, MANIFEST_FILE, type Manifest } from '../store/manifest';

/** `hash FILE` prints `<sha256> ...`: openssl is ~4x faster than coreutils' sha256sum, which is the fallback. */
export const HASH_FN = `if command -v openssl >/dev/null 2>&1; then hash() { openssl dgst -sha256 -r -- "$1"; }; else hash() { sha256sum -b -- "$1"; }; fi`;

/** Written before a snapshot-fallback backup puts overlays on a VM, removed after they are merged. */
export const PENDING_FILE = '.lvb-pending.json';

/**
 * Files of ours in a backup folder this run made: refused when the name exists already (planted), and
 * created O_EXCL (`dd conv=excl`), which never follows a symbolic link or opens a FIFO or device.
 */
const NEW_FILE_FN = `newfile() {
  if [ -e "$1" ] || [ -L "$1" ]; then echo "$PWD/$1 exists already, in a folder this backup made: not written" >&2; return 1; fi
  printf '%s' "$2" | dd of="$1" conv=excl status=none
}`;

/** Enters the backup folder this run is writing (marker present), so later steps cannot be redirected by renames above it. */
const ENTER_BACKUP_DIR = `[ -L "$dir" ] && { echo "$dir is a symbolic link" >&2; exit 1; }
cd -- "$dir" || exit 1
[ -f ${INCOMPLETE_MARKER} ] && [ ! -L ${INCOMPLETE_MARKER} ] || { echo "$dir is not a backup folder being written" >&2; exit 1; }`;

/**
 * `sh -c FINALIZE_SCRIPT lvb-finalize DIR MANIFEST_JSON DOMAIN_XML FILE...`. A flush that fails
 * fails the step before the manifest is in place (or takes it out again), so a write error at
 * writeback (NFS, quota, full disk) never ends as a good backup.
 */
export const FINALIZE_SCRIPT = `dir=$1 manifest=$2 xml=$3; shift 3
${ENTER_BACKUP_DIR}
${NEW_FILE_FN}
for f in "$@"; do mv -fT -- "$f.partial" "$f" || exit 1; done
newfile domain.xml "$xml" || exit 1
rm -f -- .lvb-backup.xml .lvb-checkpoint.xml
newfile ${MANIFEST_FILE}.tmp "$manifest" || exit 1
sync -- domain.xml ${MANIFEST_FILE}.tmp . || exit 1
if [ -e ${MANIFEST_FILE} ] || [ -L ${MANIFEST_FILE} ]; then echo "$dir/${MANIFEST_FILE} exists already, in a folder this backup made" >&2; exit 1; fi
mv -fT -- ${MANIFEST_FILE}.tmp ${MANIFEST_FILE} || exit 1
sync -- . || { rm -f -- ${MANIFEST_FILE}; exit 1; }
rm -f -- ${INCOMPLETE_MARKER}
`;

/** Small files and a few flushes: minutes mean a hung share. */
export const FINALIZE_TIMEOUT_MS = 5 * 60_000;
/** Removing partly written images on a slow share. */
const CLEAN_TIMEOUT_MS = 15 * 60_000;

/**
 * Makes a written folder a backup: renames `<file>.partial` to `<file>` (already flushed by
 * finishImages), writes domain.xml, then the manifest via temp + flush + rename, and only then drops
 * the incomplete marker.
 */
export async function finalizeBackupFolder(ssh: SshConnection, dir: string, files: string[], manifest: Manifest, domainXml: string): Promise<void> {
	const step = finalizeStep(dir, files, manifest, domainXml);
	await ssh.run(step.argv, { label: step.label, timeoutMs: FINALIZE_TIMEOUT_MS });
}

/** finalizeBackupFolder as a step of a batched command (lib/batch): the checkpoint clean-up can follow it. */
export function finalizeStep(dir: string, files: string[], manifest: Manifest, domainXml: string): RemoteStep<void> {
	return {
		label: 'finalize backup',
		argv: scriptArgv(FINALIZE_SCRIPT, 'lvb-finalize', [dir, JSON.stringify(manifest, null, 2) + '\n', domainXml, ...files]),
		parse: () => undefined,
	};
}

/**
 * Removes folders in `vmDir` that WE left incomplete (marker present, no manifest), e.g. after a
 * dropped connection. Only call this while holding the VM lock: then nothing is writing there.
 */
export async function removeIncompleteFolders(ssh: SshConnection, vmDir: string, only?: string): Promise<string[]> {
	const script = `vmdir=$1 only=$2 m=$3
[ -L "$vmdir" ] && exit 0
[ -d "$vmdir" ] || exit 0
for d in "$vmdir"/*/; do
  d=\${d%/}; name=\${d##*/}
  [ -n "$only" ] && [ "$name" != "$only" ] && continue
  [ -L "$d" ] && continue
  [ -f "$d/${INCOMPLETE_MARKER}" ] || continue
  [ -e "$d/${MANIFEST_FILE}" ] && continue
  case $name in [0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]T[0-9][0-9][0-9][0-9][0-9][0-9]Z|[0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]T[0-9][0-9][0-9][0-9][0-9][0-9]Z-[0-9]*) ;; *) continue;; esac
  rm -rf -- "$d" && echo "$m removed $name"
done`;
	const marker = newMarker();
	const { stdout } = await ssh.run(scriptArgv(script, 'lvb-clean', [vmDir, only ?? '', marker]), { label: 'remove incomplete backup', timeoutMs: CLEAN_TIMEOUT_MS });
	return splitSections(stdout, marker).map((section) => section.arg);
}

export interface VmFolder {
	free: { bytes: number; mount: string };
	/** Our incomplete folders (marker, no manifest): left by an interrupted run. */
	incomplete: string[];
	/** Entries whose names start with the planned backup id (to pick a free one). */
	taken: string[];
	/** Overlays an interrupted snapshot-fallback backup left on the VM (JSON), if any. */
	pending?: string;
	/** Per disk target asked about: bytes of data a flattening copy writes (`qemu-img map`), when known. */
	dataBytes: Map<string, number>;
}

/** A disk whose data to measure: what a full backup of it writes. */
export interface MeasuredDisk {
	target: string;
	format: string;
	path: string;
}

/** Reads a regular file in the destination: never through a symbolic link, never blocking on a FIFO. */
const READ_FILE_FN = `readf() { [ -f "$1" ] && [ ! -L "$1" ] && dd if="$1" iflag=nofollow,nonblock bs=64K count=256 status=none; }`;

/** Metadata walks only (df, ls, qemu-img map, small files): minutes mean a hung share. */
const INSPECT_TIMEOUT_MS = 5 * 60_000;

/**
 * What a backup needs to know about its VM folder, in one exec. Nothing in the folder is followed:
 * symbolic links and FIFOs where our files belong are skipped (backup folders, manifests) or
 * refused (the pending-overlays file, whose absence would be a guess about the VM's disks).
 * `disks` are measured with `qemu-img map` (allocated data at the virtual level, backing chain
 * included): a compressed qcow2 takes far less room than the copy that convert writes.
 */
const INSPECT_SCRIPT = `export LC_ALL=C
vmdir=$1 id=$2 m=$3; shift 3
${READ_FILE_FN}
p=$vmdir
while [ ! -e "$p" ] && [ ! -L "$p" ]; do p=$(dirname -- "$p"); done
echo "$m df"
df -P -B1 -- "$p" | tail -n 1
while [ $# -ge 3 ]; do
  t=$1 f=$2 src=$3; shift 3
  # A map cut short has no closing bracket: no number then, rather than a partial sum.
  b=$(qemu-img map -U -f "$f" --output=json -- "$src" 2>/dev/null | awk '/"data": true/ { if (match($0, /"length": [0-9]+/)) s += substr($0, RSTART + 10, RLENGTH - 10) } /\\]$/ { done = 1 } END { if (done) printf "%.0f", s }')
  [ -n "$b" ] && { echo "$m data $t"; echo "$b"; }
done
[ -L "$vmdir" ] && { echo "$m unsafe folder"; exit 0; }
[ -d "$vmdir" ] || exit 0
cd -- "$vmdir" || exit 1
if [ -L ${PENDING_FILE} ] || { [ -e ${PENDING_FILE} ] && [ ! -f ${PENDING_FILE} ]; }; then echo "$m unsafe pending"; exit 0; fi
if [ -f ${PENDING_FILE} ]; then echo "$m pending"; readf ${PENDING_FILE} || exit 1; echo; fi
ids=$(ls -1 | grep -E '^[0-9]{8}T[0-9]{6}Z(-[0-9]+)?$' | sort -r)
echo "$m taken"
ls -1 | grep -F -- "$id" || true
for d in $ids; do
  [ -L "$d" ] && continue
  [ -f "$d/${INCOMPLETE_MARKER}" ] && [ ! -e "$d/${MANIFEST_FILE}" ] && [ ! -L "$d/${MANIFEST_FILE}" ] && echo "$m incomplete $d"
done
exit 0`;

export async function inspectVmFolder(ssh: SshConnection, vmDir: string, id: string, disks: readonly MeasuredDisk[] = []): Promise<VmFolder> {
	const step = inspectVmFolderStep(vmDir, id, disks);
	const { stdout } = await ssh.run(step.argv, { label: step.label, timeoutMs: INSPECT_TIMEOUT_MS });
	return step.parse(stdout, 0);
}

/** inspectVmFolder as a step of a batched command (lib/batch). */
export function inspectVmFolderStep(vmDir: string, id: string, disks: readonly MeasuredDisk[] = []): RemoteStep<VmFolder> {
	const marker = newMarker();
	const args = disks.flatMap((disk) => [disk.target, disk.format, disk.path]);
	return {
		label: 'inspect backup folder',
		argv: scriptArgv(INSPECT_SCRIPT, 'lvb-inspect', [vmDir, id, marker, ...args]),
		parse: (stdout) => parseVmFolder(stdout, marker, vmDir),
	};
}

function parseVmFolder(stdout: string, marker: string, vmDir: string): VmFolder {
	const sections = splitSections(stdout, marker);
	const body = (kind: string) => sections.find((section) => section.kind === kind);
	const df = (body('df')?.body ?? '').trim().split(/\s+/);
	const free = { bytes: Number(df[3]), mount: df.slice(5).join(' ') };
	if (!Number.isFinite(free.bytes)) throw new LibvirtBackupError('PARSE_ERROR', `Cannot read free space for ${vmDir}: ${df.join(' ')}`);
	const unsafe = body('unsafe')?.arg;
	if (unsafe === 'folder') throw new LibvirtBackupError('BACKUP_FAILED', `Unsafe VM folder ${vmDir}: it is a symbolic link; nothing was followed`);
	if (unsafe === 'pending') {
		throw new LibvirtBackupError(
			'BACKUP_FAILED',
			`Unsafe ${vmDir}/${PENDING_FILE}: it is a symbolic link or not a regular file, so nothing was read. Check that the VM runs on its own disks (virsh domblklist), then remove it.`,
		);
	}
	const dataBytes = new Map<string, number>();
	for (const section of sections.filter((s) => s.kind === 'data')) {
		const [target, bytes] = [section.arg, Number(section.body.trim() || NaN)];
		if (Number.isSafeInteger(bytes) && bytes >= 0) dataBytes.set(target, bytes);
	}
	return {
		free,
		incomplete: sections.filter((section) => section.kind === 'incomplete').map((section) => section.arg),
		taken: (body('taken')?.body ?? '').split('\n').filter(Boolean),
		pending: body('pending')?.body.trim(),
		dataBytes,
	};
}

export interface ImageFinish {
	file: string;
	/** Incrementals: the backing file (relative) the image must name instead of the live disk. */
	backingFile?: string;
	/** Live full backups with compression: a second pass through `qemu-img convert -c`. */
	compress?: boolean;
}

export interface HashedFile {
	file: string;
	bytes: number;
	sha256: string;
}

/**
 * `sh -c FINISH_IMAGES_SCRIPT lvb-finish-images DIR MARKER [FILE BACKING COMPRESS]...`: per image
 * `MARKER file <bytes>` + sha256. Each image's flush runs in the background while it is hashed;
 * every flush's own exit status is waited for, so a write error at writeback fails the step.
 */
export const FINISH_IMAGES_SCRIPT = `export LC_ALL=C
dir=$1 m=$2; shift 2
${ENTER_BACKUP_DIR}
${HASH_FN}
flushes=
while [ $# -gt 0 ]; do
  f=$1 backing=$2 compress=$3; shift 3
  p="$f.partial"
  [ -f "$p" ] && [ ! -L "$p" ] || { echo "$dir/$p is not a regular file" >&2; exit 1; }
  if [ -n "$backing" ]; then
    qemu-img rebase -u -f qcow2 -b "$backing" -F qcow2 -- "$p" || exit 1
  elif [ "$compress" = 1 ]; then
    c="$f.compressed.partial"
    if [ -e "$c" ] || [ -L "$c" ]; then echo "$dir/$c exists already, in a folder this backup made" >&2; exit 1; fi
    qemu-img convert -c -f qcow2 -O qcow2 -- "$p" "$c" && mv -fT -- "$c" "$p" || exit 1
  fi
  sync -- "$p" &
  flushes="$flushes $!"
  h=$(hash "$p") || exit 1
  echo "$m file $(stat -c %s -- "$p")"
  echo "\${h%% *}"
done
for pid in $flushes; do
  wait "$pid" || { echo "flushing the images in $dir to disk failed" >&2; exit 1; }
done`;

/**
 * Last touches to the written `<file>.partial` images, then sha256 and size of each, read once
 * (openssl is ~4x faster than coreutils' sha256sum); each image's flush to disk runs in the
 * background while it is hashed from the page cache.
 */
export async function finishImages(ssh: SshConnection, dir: string, images: ImageFinish[], signal?: AbortSignal, timeoutMs?: number): Promise<HashedFile[]> {
	const step = finishImagesStep(dir, images);
	return step.parse((await ssh.run(step.argv, { label: step.label, signal, timeoutMs })).stdout, 0);
}

/** finishImages as a step of a batched command (lib/batch): it can follow the job that wrote the images. */
export function finishImagesStep(dir: string, images: ImageFinish[]): RemoteStep<HashedFile[]> {
	const marker = newMarker();
	const args = images.flatMap((image) => [image.file, image.backingFile ?? '', image.compress ? '1' : '0']);
	return {
		label: 'sha256',
		argv: scriptArgv(FINISH_IMAGES_SCRIPT, 'lvb-finish-images', [dir, marker, ...args]),
		parse: (stdout) => {
			const sections = splitSections(stdout, marker);
			if (sections.length !== images.length) throw new LibvirtBackupError('BACKUP_FAILED', `Hashing in ${dir} returned ${sections.length} results for ${images.length} images`);
			return sections.map((section, index) => {
				const sha256 = section.body.trim();
				if (!/^[0-9a-f]{64}$/.test(sha256)) throw new LibvirtBackupError('BACKUP_FAILED', `Could not hash ${dir}/${images[index].file}`);
				return { file: images[index].file, bytes: Number(section.arg), sha256 };
			});
		},
	};
}
