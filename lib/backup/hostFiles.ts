/**
 * File work on the backup host for one backup folder: free space, creating the folder, hashing,
 * finalizing (partials renamed, manifest written last via temp + rename), and removing our own
 * incomplete folders. Every path is data handed to constant scripts.
 */
import { LibvirtBackupError } from '../errors';
import { newMarker, splitSections } from '../libvirt/virsh';
import { scriptArgv } from '../shell';
import type { SshConnection } from '../ssh';
import { INCOMPLETE_MARKER, MANIFEST_FILE, isBackupId, parseManifest, type Manifest } from './manifest';

/** Free bytes on the filesystem that holds `path` (or its nearest existing parent). */
export async function freeBytes(ssh: SshConnection, path: string): Promise<{ bytes: number; mount: string }> {
	const script = `export LC_ALL=C
p=$1
while [ ! -e "$p" ]; do p=$(dirname -- "$p"); done
df -P -B1 -- "$p" | tail -n 1`;
	const { stdout } = await ssh.run(scriptArgv(script, 'lvb-df', [path]), { label: 'df' });
	const fields = stdout.trim().split(/\s+/);
	const bytes = Number(fields[3]);
	if (!Number.isFinite(bytes)) throw new LibvirtBackupError('PARSE_ERROR', `Cannot read free space for ${path}: ${stdout.trim()}`);
	return { bytes, mount: fields.slice(5).join(' ') };
}

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

/**
 * Creates `<vmDir>/<id>` (never reusing an existing folder: `-1`, `-2`... suffixes) with the
 * incomplete marker in it. Returns the folder's final id.
 */
export async function createBackupFolder(ssh: SshConnection, vmDir: string, id: string): Promise<string> {
	const script = `vmdir=$1 id=$2 m=$3
mkdir -p -- "$vmdir" || exit 1
n=0 name=$id
while ! mkdir -- "$vmdir/$name" 2>/dev/null; do
  [ -e "$vmdir/$name" ] || { mkdir -- "$vmdir/$name"; exit 1; }
  n=$((n+1)); name="$id-$n"
  [ $n -lt 100 ] || exit 1
done
: >"$vmdir/$name/${INCOMPLETE_MARKER}" || exit 1
echo "$m $name"`;
	const marker = newMarker();
	const { stdout } = await ssh.run(scriptArgv(script, 'lvb-mkdir', [vmDir, id, marker]), { label: 'mkdir' });
	const created = stdout.split(`${marker} `)[1]?.trim();
	if (!created || !isBackupId(created)) throw new LibvirtBackupError('BACKUP_FAILED', `Could not create a backup folder in ${vmDir}`);
	return created;
}

export interface HashedFile {
	file: string;
	bytes: number;
	sha256: string;
}

/** sha256 and size of files in one folder, read once each; openssl is ~4x faster than coreutils. */
export async function hashFiles(ssh: SshConnection, dir: string, files: string[], signal?: AbortSignal): Promise<HashedFile[]> {
	const script = `export LC_ALL=C
dir=$1 m=$2; shift 2
if command -v openssl >/dev/null 2>&1; then hash() { openssl dgst -sha256 -r -- "$1"; }; else hash() { sha256sum -b -- "$1"; }; fi
for f in "$@"; do
  h=$(hash "$dir/$f") || exit 1
  echo "$m file $(stat -c %s -- "$dir/$f")"
  echo "\${h%% *}"
done`;
	const marker = newMarker();
	const { stdout } = await ssh.run(scriptArgv(script, 'lvb-hash', [dir, marker, ...files]), { label: 'sha256', signal });
	const sections = splitSections(stdout, marker);
	if (sections.length !== files.length) throw new LibvirtBackupError('BACKUP_FAILED', `Hashing in ${dir} returned ${sections.length} results for ${files.length} files`);
	return sections.map((section, index) => {
		const sha256 = section.body.trim();
		const bytes = Number(section.arg);
		if (!/^[0-9a-f]{64}$/.test(sha256)) throw new LibvirtBackupError('BACKUP_FAILED', `Could not hash ${dir}/${files[index]}`);
		return { file: files[index], bytes, sha256 };
	});
}

/**
 * Makes a written folder a backup: renames `<file>.partial` to `<file>`, writes domain.xml (the
 * inactive definition), flushes, then writes the manifest via temp + rename, and only then drops the
 * incomplete marker.
 */
export async function finalizeBackupFolder(ssh: SshConnection, dir: string, files: string[], manifest: Manifest, domainXml: string): Promise<void> {
	const script = `dir=$1 manifest=$2 xml=$3; shift 3
for f in "$@"; do mv -f -- "$dir/$f.partial" "$dir/$f" || exit 1; done
printf '%s' "$xml" >"$dir/domain.xml" || exit 1
rm -f -- "$dir/.lvb-backup.xml" "$dir/.lvb-checkpoint.xml"
sync -- "$dir"/* 2>/dev/null || sync
printf '%s' "$manifest" >"$dir/${MANIFEST_FILE}.tmp" || exit 1
sync -- "$dir/${MANIFEST_FILE}.tmp" 2>/dev/null || sync
mv -f -- "$dir/${MANIFEST_FILE}.tmp" "$dir/${MANIFEST_FILE}" || exit 1
rm -f -- "$dir/${INCOMPLETE_MARKER}"
sync -- "$dir" 2>/dev/null || true`;
	await ssh.run(scriptArgv(script, 'lvb-finalize', [dir, JSON.stringify(manifest, null, 2) + '\n', domainXml, ...files]), { label: 'finalize backup' });
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

/** The newest complete backup of a VM folder (by id), with its image files' existence checked. */
export async function latestBackup(ssh: SshConnection, vmDir: string): Promise<{ manifest: Manifest; missingFiles: string[] } | undefined> {
	const script = `vmdir=$1 m=$2
[ -d "$vmdir" ] || exit 0
for d in $(ls -1 -- "$vmdir" | grep -E '^[0-9]{8}T[0-9]{6}Z(-[0-9]+)?$' | sort -r); do
  [ -f "$vmdir/$d/${MANIFEST_FILE}" ] || continue
  [ -L "$vmdir/$d" ] && continue
  echo "$m manifest $d"
  cat -- "$vmdir/$d/${MANIFEST_FILE}"
  echo "$m files $d"
  ls -1 -- "$vmdir/$d"
  exit 0
done`;
	const marker = newMarker();
	const { stdout } = await ssh.run(scriptArgv(script, 'lvb-latest', [vmDir, marker]), { label: 'read latest backup' });
	const sections = splitSections(stdout, marker);
	const manifestSection = sections.find((section) => section.kind === 'manifest');
	if (!manifestSection || !isBackupId(manifestSection.arg)) return undefined;
	const manifest = parseManifest(manifestSection.body, `${vmDir}/${manifestSection.arg}/${MANIFEST_FILE}`);
	const present = new Set((sections.find((section) => section.kind === 'files')?.body ?? '').split('\n'));
	return { manifest, missingFiles: manifest.disks.map((disk) => disk.file).filter((file) => !present.has(file)) };
}
