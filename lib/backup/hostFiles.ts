/**
 * File work on the backup host for one backup folder: free space, creating the folder, hashing,
 * finalizing (partials renamed, manifest written last via temp + rename), and removing our own
 * incomplete folders. Every path is data handed to constant scripts.
 */
import { LibvirtBackupError } from '../errors';
import { newMarker, splitSections } from '../batch';
import { scriptArgv } from '../shell';
import type { SshConnection } from '../ssh';
import { INCOMPLETE_MARKER, MANIFEST_FILE, isBackupId, parseManifest, type Manifest } from '../store/manifest';

/** Written before a snapshot-fallback backup puts overlays on a VM, removed after they are merged. */
export const PENDING_FILE = '.lvb-pending.json';

export function formatBytes(bytes: number): string {
	const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
	let value = bytes;
	let unit = 0;
	while (value >= 1024 && unit < units.length - 1) {
		value /= 1024;
		unit += 1;
	}
	return `${value.toFixed(unit === 0 ? 0 : 1)} ${units[unit]}`;
}

/** `sh -c FINALIZE_SCRIPT lvb-finalize DIR MANIFEST_JSON DOMAIN_XML FILE...` */
export const FINALIZE_SCRIPT = `dir=$1 manifest=$2 xml=$3; shift 3
for f in "$@"; do mv -f -- "$dir/$f.partial" "$dir/$f" || exit 1; done
printf '%s' "$xml" >"$dir/domain.xml" || exit 1
rm -f -- "$dir/.lvb-backup.xml" "$dir/.lvb-checkpoint.xml"
printf '%s' "$manifest" >"$dir/${MANIFEST_FILE}.tmp" || exit 1
sync -- "$dir/domain.xml" "$dir/${MANIFEST_FILE}.tmp" 2>/dev/null || sync
mv -f -- "$dir/${MANIFEST_FILE}.tmp" "$dir/${MANIFEST_FILE}" || exit 1
rm -f -- "$dir/${INCOMPLETE_MARKER}"
sync -- "$dir" 2>/dev/null || true`;

/**
 * Makes a written folder a backup: renames `<file>.partial` to `<file>` (already flushed by
 * finishImages), writes domain.xml, then the manifest via temp + flush + rename, and only then drops
 * the incomplete marker.
 */
export async function finalizeBackupFolder(ssh: SshConnection, dir: string, files: string[], manifest: Manifest, domainXml: string): Promise<void> {
	await ssh.run(scriptArgv(FINALIZE_SCRIPT, 'lvb-finalize', [dir, JSON.stringify(manifest, null, 2) + '\n', domainXml, ...files]), { label: 'finalize backup' });
}

/**
 * Removes folders in `vmDir` that WE left incomplete (marker present, no manifest), e.g. after a
 * dropped connection. Only call this while holding the VM lock: then nothing is writing there.
 */
export async function removeIncompleteFolders(ssh: SshConnection, vmDir: string, only?: string): Promise<string[]> {
	const script = `vmdir=$1 only=$2 m=$3
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
	const { stdout } = await ssh.run(scriptArgv(script, 'lvb-clean', [vmDir, only ?? '', marker]), { label: 'remove incomplete backup' });
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
	/** The newest complete backup, with the image files its manifest names that are missing. */
	latest?: { manifest: Manifest; missingFiles: string[] };
}

/** What a backup needs to know about its VM folder, in one exec. */
export async function inspectVmFolder(ssh: SshConnection, vmDir: string, id: string): Promise<VmFolder> {
	const script = `export LC_ALL=C
vmdir=$1 id=$2 m=$3
p=$vmdir
while [ ! -e "$p" ]; do p=$(dirname -- "$p"); done
echo "$m df"
df -P -B1 -- "$p" | tail -n 1
[ -d "$vmdir" ] || exit 0
if [ -f "$vmdir/${PENDING_FILE}" ]; then echo "$m pending"; cat -- "$vmdir/${PENDING_FILE}"; echo; fi
ids=$(ls -1 -- "$vmdir" | grep -E '^[0-9]{8}T[0-9]{6}Z(-[0-9]+)?$' | sort -r)
echo "$m taken"
ls -1 -- "$vmdir" | grep -F -- "$id" || true
for d in $ids; do
  [ -L "$vmdir/$d" ] && continue
  [ -f "$vmdir/$d/${INCOMPLETE_MARKER}" ] && [ ! -e "$vmdir/$d/${MANIFEST_FILE}" ] && echo "$m incomplete $d"
done
for d in $ids; do
  [ -L "$vmdir/$d" ] && continue
  [ -f "$vmdir/$d/${MANIFEST_FILE}" ] || continue
  echo "$m manifest $d"
  cat -- "$vmdir/$d/${MANIFEST_FILE}"
  echo "$m files $d"
  ls -1 -- "$vmdir/$d"
  exit 0
done`;
	const marker = newMarker();
	const { stdout } = await ssh.run(scriptArgv(script, 'lvb-inspect', [vmDir, id, marker]), { label: 'inspect backup folder' });
	const sections = splitSections(stdout, marker);
	const body = (kind: string) => sections.find((section) => section.kind === kind);
	const df = (body('df')?.body ?? '').trim().split(/\s+/);
	const free = { bytes: Number(df[3]), mount: df.slice(5).join(' ') };
	if (!Number.isFinite(free.bytes)) throw new LibvirtBackupError('PARSE_ERROR', `Cannot read free space for ${vmDir}: ${df.join(' ')}`);
	const manifestSection = body('manifest');
	let latest: VmFolder['latest'];
	if (manifestSection && isBackupId(manifestSection.arg)) {
		const manifest = parseManifest(manifestSection.body, `${vmDir}/${manifestSection.arg}/${MANIFEST_FILE}`);
		const present = new Set((body('files')?.body ?? '').split('\n'));
		latest = { manifest, missingFiles: manifest.disks.map((disk) => disk.file).filter((file) => !present.has(file)) };
	}
	return {
		free,
		incomplete: sections.filter((section) => section.kind === 'incomplete').map((section) => section.arg),
		taken: (body('taken')?.body ?? '').split('\n').filter(Boolean),
		pending: body('pending')?.body.trim(),
		latest,
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

/** `sh -c FINISH_IMAGES_SCRIPT lvb-finish-images DIR MARKER [FILE BACKING COMPRESS]...`: per image `MARKER file <bytes>` + sha256. */
export const FINISH_IMAGES_SCRIPT = `export LC_ALL=C
dir=$1 m=$2; shift 2
if command -v openssl >/dev/null 2>&1; then hash() { openssl dgst -sha256 -r -- "$1"; }; else hash() { sha256sum -b -- "$1"; }; fi
while [ $# -gt 0 ]; do
  f=$1 backing=$2 compress=$3; shift 3
  p="$dir/$f.partial"
  if [ -n "$backing" ]; then
    qemu-img rebase -u -f qcow2 -b "$backing" -F qcow2 -- "$p" || exit 1
  elif [ "$compress" = 1 ]; then
    qemu-img convert -c -f qcow2 -O qcow2 -- "$p" "$dir/$f.compressed.partial" && mv -f -- "$dir/$f.compressed.partial" "$p" || exit 1
  fi
  sync -- "$p" &
  h=$(hash "$p") || exit 1
  echo "$m file $(stat -c %s -- "$p")"
  echo "\${h%% *}"
done
wait`;

/**
 * Last touches to the written `<file>.partial` images, then sha256 and size of each, read once
 * (openssl is ~4x faster than coreutils' sha256sum); each image's flush to disk runs in the
 * background while it is hashed from the page cache.
 */
export async function finishImages(ssh: SshConnection, dir: string, images: ImageFinish[], signal?: AbortSignal): Promise<HashedFile[]> {
	const marker = newMarker();
	const args = images.flatMap((image) => [image.file, image.backingFile ?? '', image.compress ? '1' : '0']);
	const { stdout } = await ssh.run(scriptArgv(FINISH_IMAGES_SCRIPT, 'lvb-finish-images', [dir, marker, ...args]), { label: 'sha256', signal });
	const sections = splitSections(stdout, marker);
	if (sections.length !== images.length) throw new LibvirtBackupError('BACKUP_FAILED', `Hashing in ${dir} returned ${sections.length} results for ${images.length} images`);
	return sections.map((section, index) => {
		const sha256 = section.body.trim();
		if (!/^[0-9a-f]{64}$/.test(sha256)) throw new LibvirtBackupError('BACKUP_FAILED', `Could not hash ${dir}/${images[index].file}`);
		return { file: images[index].file, bytes: Number(section.arg), sha256 };
	});
}
