/**
 * Consolidation on the host: an incremental is rebuilt, in its own folder, into a standalone full
 * (see lib/store/consolidation.ts for the crash-safe order of steps). The chain is read through
 * an explicit `json:` description of every layer, so a backing file name planted in an image
 * header never chooses what the host opens; every image of the chain is hashed against its
 * manifest while the copy runs, and any mismatch discards the result.
 */
import { HASH_FN } from '../backup/hostFiles';
import { formatBytes } from '../format';
import { LibvirtBackupError } from '../errors';
import { newMarker, splitSections } from '../batch';
import { scriptArgv } from '../shell';
import type { SshConnection } from '../ssh';
import { CONSOLIDATION_FORMAT, CONSOLIDATION_JOURNAL, FULL_PARTIAL_SUFFIX, parseJournal, serializeJournal } from '../store/consolidation';
import { MANIFEST_FILE, VERIFICATION_FILE, serializeManifest, type Manifest, type ManifestDisk } from '../store/manifest';
import type { CatalogBackup } from './list';

/**
 * `check_chain BADFILE [IMAGE SHA256]...` (needs HASH_FN): one line in BADFILE for each chain image
 * that is missing, not a regular file, unreadable, or whose sha256 differs from its manifest. Run
 * in the background while the chain is rebuilt (consolidation, restore), so the reads overlap.
 */
export const CHECK_CHAIN_FN = `check_chain() {
  bad=$1; shift
  while [ $# -ge 2 ]; do
    p=$1 want=$2; shift 2
    if [ -L "$p" ] || [ ! -f "$p" ]; then echo "$p is missing or not a regular file" >> "$bad"; continue; fi
    got=$(hash "$p") || { echo "$p could not be read" >> "$bad"; continue; }
    [ "\${got%% *}" = "$want" ] || echo "$p: sha256 differs from its manifest" >> "$bad"
  done
}`;

/**
 * `sh -c CONSOLIDATE_SCRIPT lvb-consolidate MARKER DIR NDISKS [FILE SPEC]... [IMAGE SHA256]...`:
 * writes each `<FILE>.lvb-full.partial` from its chain SPEC (a qemu `json:` filename) while a
 * background loop hashes every chain IMAGE against its manifest. Answers `MARKER nospace <need>`
 * + free bytes, or per disk `MARKER file <bytes>` + sha256. On any failure the partials go.
 */
export const CONSOLIDATE_SCRIPT = `export LC_ALL=C
m=$1 dir=$2 nd=$3; shift 3
${HASH_FN}
${CHECK_CHAIN_FN}
[ -d "$dir" ] && [ ! -L "$dir" ] || { echo "$dir is missing or a symbolic link" >&2; exit 65; }
cd -- "$dir" || exit 1
if [ -e ${CONSOLIDATION_JOURNAL} ] || [ -L ${CONSOLIDATION_JOURNAL} ]; then echo "$dir holds an unfinished consolidation" >&2; exit 65; fi
tmp=$(mktemp -d) || exit 1
i=0
while [ $i -lt "$nd" ]; do
  i=$((i+1))
  printf '%s' "$1" > "$tmp/file$i"; printf '%s' "$2" > "$tmp/spec$i"
  rm -f -- "$1${FULL_PARTIAL_SUFFIX}"
  shift 2
done
ok=
cleanup() {
  [ -n "$checker" ] && kill "$checker" 2>/dev/null
  if [ -z "$ok" ]; then j=0; while [ $j -lt "$nd" ]; do j=$((j+1)); rm -f -- "$(cat "$tmp/file$j")${FULL_PARTIAL_SUFFIX}"; done; fi
  rm -rf -- "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP
checker=
check_chain "$tmp/bad" "$@" &
checker=$!
need=0
i=0
while [ $i -lt "$nd" ]; do
  i=$((i+1))
  r=$(qemu-img measure --output=json -O qcow2 "$(cat "$tmp/spec$i")" | awk -F'[:,]' '/"required"/ { gsub(/ /, "", $2); print $2 }') || exit 1
  case $r in ''|*[!0-9]*) echo "qemu-img measure gave no size for $(cat "$tmp/file$i")" >&2; exit 1;; esac
  need=$((need + r))
done
free=$(df -P -B1 -- . | awk 'NR == 2 { print $4 }')
if [ "$need" -gt "$free" ]; then echo "$m nospace $need"; echo "$free"; exit 0; fi
i=0
while [ $i -lt "$nd" ]; do
  i=$((i+1))
  f=$(cat "$tmp/file$i")
  qemu-img convert -O qcow2 "$(cat "$tmp/spec$i")" "$f${FULL_PARTIAL_SUFFIX}" || exit 1
  if qemu-img info -f qcow2 --output=json -- "$f${FULL_PARTIAL_SUFFIX}" | grep -q '"backing-filename"'; then echo "the rebuilt $f still has a backing file" >&2; exit 1; fi
done
wait "$checker"
checker=
if [ -s "$tmp/bad" ]; then cat "$tmp/bad" >&2; exit 66; fi
i=0
while [ $i -lt "$nd" ]; do
  i=$((i+1))
  f=$(cat "$tmp/file$i")
  # The flush runs while the image is hashed from the page cache (15% faster on the lab); both must succeed.
  sync -- "$f${FULL_PARTIAL_SUFFIX}" &
  flush=$!
  h=$(hash "$f${FULL_PARTIAL_SUFFIX}") || exit 1
  wait "$flush" || { echo "flushing $f to disk failed" >&2; exit 1; }
  echo "$m file $(stat -c %s -- "$f${FULL_PARTIAL_SUFFIX}")"
  echo "\${h%% *}"
done
ok=1`;

/**
 * `sh -c FINISH_SCRIPT lvb-consolidate-finish DIR JOURNAL MANIFEST FILE...`: the commit. The
 * journal goes first (unless it is there: a finish after a crash), then each partial is renamed
 * over its image; an image whose partial is gone must already be the standalone one (no backing
 * file), else nothing more is done. Then the manifest, and the journal goes last. The old
 * verification record described the old images and is removed with it.
 */
export const FINISH_SCRIPT = `export LC_ALL=C
dir=$1 journal=$2 manifest=$3; shift 3
[ -d "$dir" ] && [ ! -L "$dir" ] || { echo "$dir is missing or a symbolic link" >&2; exit 65; }
cd -- "$dir" || exit 1
j=${CONSOLIDATION_JOURNAL}
put() {
  rm -f -- "$1.tmp" && printf '%s' "$2" | dd of="$1.tmp" conv=excl,fsync status=none && mv -fT -- "$1.tmp" "$1"
}
if [ -L $j ] || { [ -e $j ] && [ ! -f $j ]; }; then echo "$dir/$j is a symbolic link or not a regular file" >&2; exit 65; fi
[ -f $j ] || put $j "$journal" || exit 1
for f in "$@"; do
  p="$f${FULL_PARTIAL_SUFFIX}"
  if [ -f "$p" ] && [ ! -L "$p" ]; then
    mv -fT -- "$p" "$f" || exit 1
  elif [ -e "$p" ] || [ -L "$p" ]; then
    echo "$dir/$p is not a regular file" >&2; exit 65
  else
    [ -f "$f" ] && [ ! -L "$f" ] || { echo "$dir/$f is missing or not a regular file" >&2; exit 65; }
    if qemu-img info -f qcow2 --output=json -- "$f" | grep -q '"backing-filename"'; then
      echo "$dir/$f still has a backing file and its rebuilt image is gone: the consolidation cannot be finished" >&2; exit 66
    fi
  fi
done
sync -- "$@" || exit 1
put ${MANIFEST_FILE} "$manifest" || exit 1
rm -f -- ${VERIFICATION_FILE} $j || exit 1
sync -- . 2>/dev/null
exit 0`;

/** `sh -c DISCARD_SCRIPT lvb-consolidate-discard DIR FILE...`: removes `<FILE>.lvb-full.partial` left by a build a crash cut short. */
export const DISCARD_SCRIPT = `dir=$1; shift
[ -d "$dir" ] && [ ! -L "$dir" ] || { echo "$dir is missing or a symbolic link" >&2; exit 65; }
cd -- "$dir" || exit 1
if [ -e ${CONSOLIDATION_JOURNAL} ] || [ -L ${CONSOLIDATION_JOURNAL} ]; then echo "$dir holds an unfinished consolidation" >&2; exit 65; fi
for f in "$@"; do rm -f -- "$f${FULL_PARTIAL_SUFFIX}" || exit 1; done`;

/** Consolidation reads and writes a whole full: hours on a big disk, never forever. */
const CONSOLIDATE_TIMEOUT_MS = 12 * 3_600_000;
const FINISH_TIMEOUT_MS = 10 * 60_000;

export interface ConsolidateOptions {
	now: Date;
	signal?: AbortSignal;
	timeoutMs?: number;
}

/** Rebuilds `backup` from `chain` (itself first, down to its full) and commits it: the synthetic full's manifest. */
export async function consolidateBackup(ssh: SshConnection, backup: CatalogBackup, chain: readonly CatalogBackup[], options: ConsolidateOptions): Promise<Manifest> {
	const manifest = await buildConsolidation(ssh, backup, chain, options);
	await finishConsolidation(ssh, backup, manifest, options.signal);
	return manifest;
}

/** Writes and hashes the partial images; nothing the folder's readers use has changed yet. */
export async function buildConsolidation(ssh: SshConnection, backup: CatalogBackup, chain: readonly CatalogBackup[], options: ConsolidateOptions): Promise<Manifest> {
	const specs = backup.manifest.disks.map((disk) => ({ disk, spec: layerSpec(backup, disk, chain) }));
	const hashes = chain.flatMap((member) => member.manifest.disks.map((disk) => [`${member.path}/${disk.file}`, disk.sha256]));
	const marker = newMarker();
	const { stdout } = await ssh.run(
		scriptArgv(CONSOLIDATE_SCRIPT, 'lvb-consolidate', [marker, backup.path, String(specs.length), ...specs.flatMap(({ disk, spec }) => [disk.file, spec]), ...hashes.flat()]),
		{ label: `consolidating ${backup.path}`, signal: options.signal, timeoutMs: options.timeoutMs ?? CONSOLIDATE_TIMEOUT_MS },
	);
	const sections = splitSections(stdout, marker);
	const noSpace = sections.find((section) => section.kind === 'nospace');
	if (noSpace) {
		const [need, free] = [Number(noSpace.arg), Number(noSpace.body.trim())];
		throw new LibvirtBackupError('NO_SPACE', `Not enough space to consolidate ${backup.path}: need ${formatBytes(need)}, ${formatBytes(free)} free`);
	}
	const files = sections.filter((section) => section.kind === 'file');
	if (files.length !== specs.length) throw new LibvirtBackupError('COMMAND_FAILED', `Consolidating ${backup.path} returned ${files.length} images for ${specs.length} disks`);
	const disks = backup.manifest.disks.map((disk, index): ManifestDisk => {
		const sha256 = files[index].body.trim();
		const bytes = Number(files[index].arg);
		if (!/^[0-9a-f]{64}$/.test(sha256) || !Number.isSafeInteger(bytes)) throw new LibvirtBackupError('COMMAND_FAILED', `Could not hash the rebuilt ${backup.path}/${disk.file}`);
		const rebuilt: ManifestDisk = { ...disk, format: 'qcow2', bytes, sha256, compressed: false };
		delete rebuilt.backingFile;
		return rebuilt;
	});
	const manifest: Manifest = { ...backup.manifest, kind: 'full', disks, consolidated: { at: options.now.toISOString(), from: chain.map((member) => member.id) } };
	delete manifest.parent;
	return manifest;
}

/**
 * Finishes a consolidation a crash interrupted, from its journal (validated against the folder's
 * manifest first). Returns the manifest the folder now has.
 */
export async function resumeConsolidation(ssh: SshConnection, backup: CatalogBackup, journalText: string, signal?: AbortSignal): Promise<Manifest> {
	const journal = parseJournal(journalText, `${backup.path}/${CONSOLIDATION_JOURNAL}`, backup.manifest);
	await finishConsolidation(ssh, backup, journal.manifest, signal);
	return journal.manifest;
}

/** Removes the partial images of a consolidation that never reached its journal: the old chain is intact. */
export async function discardConsolidation(ssh: SshConnection, backup: CatalogBackup, signal?: AbortSignal): Promise<void> {
	await ssh.run(scriptArgv(DISCARD_SCRIPT, 'lvb-consolidate-discard', [backup.path, ...backup.manifest.disks.map((disk) => disk.file)]), {
		label: `discarding an unfinished consolidation in ${backup.path}`,
		signal,
		timeoutMs: FINISH_TIMEOUT_MS,
	});
}

/** The commit: journal, renames, manifest, journal gone (see FINISH_SCRIPT). */
export async function finishConsolidation(ssh: SshConnection, backup: CatalogBackup, manifest: Manifest, signal?: AbortSignal): Promise<void> {
	const journal = serializeJournal({ format: CONSOLIDATION_FORMAT, version: 1, backupId: manifest.id, manifest });
	await ssh.run(scriptArgv(FINISH_SCRIPT, 'lvb-consolidate-finish', [backup.path, journal, serializeManifest(manifest), ...manifest.disks.map((disk) => disk.file)]), {
		label: `finishing the consolidation of ${backup.path}`,
		signal,
		timeoutMs: FINISH_TIMEOUT_MS,
	});
}

interface Layer {
	driver: string;
	file: { driver: 'file'; filename: string };
	backing?: Layer | null;
}

/**
 * The chain of one disk as qemu's `json:` filename: each layer's file and format from the
 * manifests, and `backing: null` under the full, so nothing in an image header is followed.
 */
export function layerSpec(backup: CatalogBackup, disk: ManifestDisk, chain: readonly CatalogBackup[]): string {
	return jsonSpec(chainLayers(backup, disk, chain));
}

/** One disk's images from the manifests alone, this backup's first, down to the full's. */
export function chainLayers(backup: CatalogBackup, disk: ManifestDisk, chain: readonly CatalogBackup[]): { path: string; format: 'qcow2' | 'raw' }[] {
	const byId = new Map(chain.map((member) => [member.id, member]));
	const layers: { path: string; format: 'qcow2' | 'raw' }[] = [];
	let member: CatalogBackup | undefined = backup;
	let current: ManifestDisk | undefined = disk;
	while (member && current) {
		const format = current.format;
		if (format !== 'qcow2' && format !== 'raw') throw new LibvirtBackupError('INVALID_INPUT', `${member.path}/${current.file}: image format ${JSON.stringify(format)} cannot be read as a chain`);
		layers.push({ path: `${member.path}/${current.file}`, format });
		if (current.backingFile === undefined) return layers;
		const [, parentId, file]: (string | undefined)[] = /^\.\.\/([^/]+)\/([^/]+)$/.exec(current.backingFile) ?? [];
		if (member.manifest.parent !== parentId) throw new LibvirtBackupError('INVALID_INPUT', `${member.path}: disk ${disk.target} builds on ${current.backingFile}, not on its parent backup ${member.manifest.parent}`);
		member = parentId === undefined ? undefined : byId.get(parentId);
		current = member?.manifest.disks.find((candidate) => candidate.target === disk.target && candidate.file === file);
	}
	throw new LibvirtBackupError('INVALID_INPUT', `${backup.path}: the chain of disk ${disk.target} is not complete in the store`);
}

/** Layers (top first) as a qemu `json:` filename that names every backing file itself. */
export function jsonSpec(layers: readonly { path: string; format: string }[]): string {
	return `json:${JSON.stringify(nest(layers))}`;
}

function nest(layers: readonly { path: string; format: string }[]): Layer {
	const [top, ...rest] = layers;
	const layer: Layer = { driver: top.format, file: { driver: 'file', filename: top.path } };
	// raw has no backing option; a qcow2 base gets an explicit none.
	if (rest.length > 0) layer.backing = nest(rest);
	else if (top.format === 'qcow2') layer.backing = null;
	return layer;
}
