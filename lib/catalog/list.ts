/**
 * The catalog of a destination: every backup folder with its manifest, verification record,
 * protected marker and size, read in ONE SSH command whatever the number of backups. Folders that
 * look like ours but hold no valid manifest are reported as incomplete, never as backups; names
 * that cannot be ours are neither read nor reported.
 */
import { LibvirtBackupError } from '../errors';
import { backupId, checkDestination, vmDirName } from '../store/layout';
import { MANIFEST_FILE, PROTECTED_MARKER, VERIFICATION_FILE, INCOMPLETE_MARKER, isBackupId, parseManifest, type BackupKind, type Manifest } from '../store/manifest';
import { newMarker, splitSections, type RemoteStep } from '../batch';
import { scriptArgv } from '../shell';
import type { SshConnection } from '../ssh';
import { QUARANTINE_SUFFIX, backupLocation, isQuarantinedName, isStaleFolderEntry, isVmDirName, vmDirsFor, type BackupLocation } from '../store/paths';
import { parseVerification, type VerificationRecord } from '../store/verification';
import { CONSOLIDATION_JOURNAL, FULL_PARTIAL_SUFFIX } from '../store/consolidation';
import { INSTANT_MARKER_PREFIX, INSTANT_MARKER_SUFFIX, readInstantUse, type InstantUse } from '../store/instant';

/**
 * The most of a manifest, verification record, journal or instant-recovery marker that is read: this
 * package's are a few KiB; a bigger file in a shared destination is not ours, and is not read.
 */
export const MAX_TEXT_BYTES = 1024 * 1024;

/**
 * `sh -c LIST_SCRIPT lvb-list MARKER DEST [VMDIR...]`. Only `<vm dir>/<id-like name>` folders are
 * considered (names restricted to the characters vmDirName and backup ids use, so they can be
 * printed and word-split safely); symbolic links are reported and never followed. All folders'
 * files are stat'ed by one `stat` and all manifests and verification records printed by one
 * `awk`, so the cost is a handful of processes, not a few per backup. The awk reads each file with
 * getline, which goes on past a file it cannot open (mawk aborts on one given as an operand, and
 * every later manifest would then read as empty). A file over MAX_TEXT_BYTES is not given to awk at
 * all (its size from one `stat`: mawk took 11 s to read a 64 MiB file of one line), and awk prints
 * none of one that grew past it meanwhile (it stops reading there; lines are kept until then, so a
 * file of many short lines costs linear time, not quadratic).
 */
export const LIST_SCRIPT = `export LC_ALL=C
m=$1 dest=$2; shift 2
cd -- "$dest" 2>/dev/null || { echo "$m nodest"; exit 0; }
[ $# -gt 0 ] || set -- *
dirs=
for v in "$@"; do
  case $v in .*|*[!A-Za-z0-9_+.%-]*) continue;; esac
  if [ -L "$v" ]; then echo "$m link $v"; continue; fi
  [ -d "$v" ] || continue
  for d in "$v"/[0-9]*; do
    id=\${d#*/}
    case $id in [0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]T[0-9][0-9][0-9][0-9][0-9][0-9]Z*) ;; *) continue;; esac
    case $id in *[!0-9A-Za-z.-]*) continue;; esac
    if [ -L "$d" ]; then echo "$m link $d"; continue; fi
    [ -d "$d" ] && dirs="$dirs $d"
  done
done
echo "$m dirs"
set -f
for d in $dirs; do echo "$d"; done
globs= texts=
for d in $dirs; do
  globs="$globs $d/* $d/.[!.]* $d/..?*"
  for f in ${MANIFEST_FILE} ${VERIFICATION_FILE} ${CONSOLIDATION_JOURNAL}; do
    [ -f "$d/$f" ] && [ ! -L "$d/$f" ] && texts="$texts $d/$f"
  done
  set +f
  for f in "$d"/${INSTANT_MARKER_PREFIX}*${INSTANT_MARKER_SUFFIX}; do
    case \${f##*/} in *[!A-Za-z0-9.-]*) continue;; esac
    [ -f "$f" ] && [ ! -L "$f" ] && texts="$texts $f"
  done
  set -f
done
echo "$m files"
set +f
[ -z "$dirs" ] || printf '%s\\0' $globs | xargs -0 stat -c '%f %s %b %B %n' -- 2>/dev/null
set -f
[ -z "$texts" ] || printf '%s\\0' $texts | xargs -0 stat -c '%s %n' -- 2>/dev/null | while read -r s f; do [ "$s" -le ${MAX_TEXT_BYTES} ] && printf '%s\\0' "$f"; done | xargs -0 awk -v m="$m" -v max=${MAX_TEXT_BYTES} 'BEGIN { for (i = 1; i < ARGC; i++) { n = 0; k = 0; while ((getline line < ARGV[i]) > 0) { n += length(line) + 1; if (n > max) break; a[k++] = line } close(ARGV[i]); if (k == 0 || n > max) continue; print m " text " ARGV[i]; for (j = 0; j < k; j++) print a[j] } }'
echo "$m end"
`;

export interface FolderEntry {
	name: string;
	type: 'file' | 'dir' | 'symlink' | 'other';
	bytes: number;
	/** Bytes allocated on disk (sparse images use less than their size). */
	diskBytes: number;
}

export interface CatalogBackup extends BackupLocation {
	manifest: Manifest;
	verification?: VerificationRecord;
	protected: boolean;
	/**
	 * Instant-recovery VMs that run on this backup's images (its `.lvb-instant-*.json` markers):
	 * Prune keeps it and never consolidates its chain. Absent when there are none.
	 */
	inUse?: InstantUse[];
	/** Bytes the folder's files occupy on disk: what removing it frees. */
	diskBytes: number;
	/** Image files the manifest names that are not regular files in the folder. */
	missingFiles: string[];
	/**
	 * An interrupted consolidation: the journal's text (a regular file; null when it is not one),
	 * and the `*.lvb-full.partial` images present.
	 */
	consolidation?: { journal?: string | null; partials: string[] };
}

export interface IncompleteFolder extends BackupLocation {
	reason: string;
	/** The folder carries our `.lvb-incomplete` marker and holds nothing but what our writer leaves. */
	writerLeftovers: boolean;
	/** It has a manifest that cannot be used (damaged, a future format, another backup's): a backup no one can build on. */
	unreadableManifest: boolean;
	diskBytes: number;
}

export interface QuarantinedFolder extends BackupLocation {
	diskBytes: number;
}

export interface Catalog {
	dest: string;
	/** Sorted by VM folder, then newest first. */
	backups: CatalogBackup[];
	incomplete: IncompleteFolder[];
	quarantined: QuarantinedFolder[];
}

export interface CatalogFilter {
	vmNames?: string[];
	kinds?: BackupKind[];
	/** Only backups that started at or after this time. */
	newerThan?: Date;
	/** Only backups that started before this time. */
	olderThan?: Date;
}

export interface CatalogResult extends Catalog {
	/** SSH commands the listing ran (always 1). */
	sshExecs: number;
}

export async function listCatalog(ssh: SshConnection, dest: string, filter: CatalogFilter = {}, signal?: AbortSignal): Promise<CatalogResult> {
	const execsBefore = ssh.execCount;
	const catalog = await readCatalog(ssh, dest, filter.vmNames?.length ? vmDirsFor(filter.vmNames) : [], signal);
	return { ...filterCatalog(catalog, filter), sshExecs: ssh.execCount - execsBefore };
}

/** The whole catalog of `dest`, or of these VM folders only, in one SSH command. */
export async function readCatalog(ssh: SshConnection, dest: string, vmDirs: readonly string[], signal?: AbortSignal): Promise<Catalog> {
	const step = readCatalogStep(dest, vmDirs);
	const { stdout } = await ssh.run(step.argv, { label: step.label, signal });
	return step.parse(stdout, 0);
}

/** readCatalog as a step of a batched command (lib/batch). */
export function readCatalogStep(dest: string, vmDirs: readonly string[]): RemoteStep<Catalog> {
	const root = checkDestination(dest);
	const marker = newMarker();
	return {
		label: 'backup listing',
		argv: scriptArgv(LIST_SCRIPT, 'lvb-list', [marker, root, ...vmDirs]),
		parse: (stdout) => parseCatalogOutput(stdout, marker, root),
	};
}

interface RawFolder {
	vmDir: string;
	name: string;
	entries: Map<string, FolderEntry>;
	texts: Map<string, string>;
	link: boolean;
}

/** Turns LIST_SCRIPT output into a catalog. Pure: the same output always gives the same catalog. */
export function parseCatalogOutput(stdout: string, marker: string, dest: string): Catalog {
	const folders = new Map<string, RawFolder>();
	const folder = (relative: string): RawFolder | undefined => {
		let found = folders.get(relative);
		if (found) return found;
		const [vmDir, name, ...rest] = relative.split('/');
		if (rest.length > 0 || !name || !isVmDirName(vmDir)) return undefined;
		found = { vmDir, name, entries: new Map(), texts: new Map(), link: false };
		folders.set(relative, found);
		return found;
	};
	let ended = false;
	for (const section of splitSections(stdout, marker)) {
		switch (section.kind) {
			case 'nodest':
				throw new LibvirtBackupError('INVALID_INPUT', `Destination ${dest} does not exist on the host or is not a readable directory`);
			case 'link': {
				const link = section.arg.includes('/') ? folder(section.arg) : undefined;
				if (link) link.link = true;
				break;
			}
			case 'dirs':
				for (const line of section.body.split('\n')) if (line) folder(line);
				break;
			case 'files':
				parseStatLines(section.body, (relative, entry) => folder(relative)?.entries.set(entry.name, entry));
				break;
			case 'text': {
				const slash = section.arg.lastIndexOf('/');
				folder(section.arg.slice(0, slash))?.texts.set(section.arg.slice(slash + 1), section.body);
				break;
			}
			case 'end':
				ended = true;
				break;
		}
	}
	if (!ended) throw new LibvirtBackupError('PARSE_ERROR', `The backup listing of ${dest} ended early (no end marker): the output is incomplete`);

	const catalog: Catalog = { dest, backups: [], incomplete: [], quarantined: [] };
	// A VM's folders all carry the same name: encode each name once, not once per backup.
	const dirNames = new Map<string, string>();
	const dirNameOf = (vm: string) => dirNames.get(vm) ?? dirNames.set(vm, vmDirName(vm)).get(vm)!;
	for (const raw of folders.values()) classify(raw, dest, catalog, dirNameOf);
	const order = (a: BackupLocation, b: BackupLocation) => (a.vmDir !== b.vmDir ? (a.vmDir < b.vmDir ? -1 : 1) : a.id < b.id ? 1 : a.id > b.id ? -1 : 0);
	catalog.backups.sort(order);
	catalog.incomplete.sort(order);
	catalog.quarantined.sort(order);
	return catalog;
}

const STAT_LINE = /^([0-9a-f]+) (\d+) (\d+) (\d+) ([^/]+)\/([^/]+)\/(.+)$/;

/**
 * `stat -c '%f %s %b %B %n'` lines. A file name with a line break continues on lines that cannot
 * match (a name holds no '/'); its entry is marked 'other' so the folder never passes for ours.
 */
function parseStatLines(body: string, add: (relative: string, entry: FolderEntry) => void): void {
	let last: { relative: string; entry: FolderEntry } | undefined;
	for (const line of body.split('\n')) {
		const m = STAT_LINE.exec(line);
		if (!m) {
			if (line && last) last.entry.type = 'other';
			continue;
		}
		const mode = parseInt(m[1], 16) & 0xf000;
		const type = mode === 0x8000 ? 'file' : mode === 0x4000 ? 'dir' : mode === 0xa000 ? 'symlink' : 'other';
		last = { relative: `${m[5]}/${m[6]}`, entry: { name: m[7], type, bytes: Number(m[2]), diskBytes: Number(m[3]) * Number(m[4]) } };
		add(last.relative, last.entry);
	}
}

function classify(raw: RawFolder, dest: string, catalog: Catalog, dirNameOf: (vm: string) => string): void {
	const diskBytes = [...raw.entries.values()].reduce((total, entry) => total + entry.diskBytes, 0);
	if (isQuarantinedName(raw.name)) {
		const id = raw.name.slice(0, -QUARANTINE_SUFFIX.length);
		const vm = manifestVmName(raw.texts.get(MANIFEST_FILE));
		catalog.quarantined.push({ ...backupLocation(dest, raw.vmDir, id), ...(vm ? { vm } : {}), path: `${dest}/${raw.vmDir}/${raw.name}`, diskBytes });
		return;
	}
	if (!isBackupId(raw.name)) return;
	const location = backupLocation(dest, raw.vmDir, raw.name);
	const manifestEntry = raw.entries.get(MANIFEST_FILE);
	const incomplete = (reason: string) =>
		catalog.incomplete.push({ ...location, reason, writerLeftovers: isWriterLeftovers(raw), unreadableManifest: !raw.link && manifestEntry !== undefined, diskBytes });
	if (raw.link) return void incomplete('symbolic link: never followed');

	const text = raw.texts.get(MANIFEST_FILE);
	if (!manifestEntry) {
		return void incomplete(raw.entries.has(INCOMPLETE_MARKER) ? 'no manifest: the backup was not finished' : 'no manifest and no incomplete marker: not written by this package');
	}
	if (manifestEntry.type !== 'file') return void incomplete(`${MANIFEST_FILE} is not a regular file (${manifestEntry.type})`);
	if (manifestEntry.bytes > MAX_TEXT_BYTES) return void incomplete(`${MANIFEST_FILE} is ${manifestEntry.bytes} bytes, more than the ${MAX_TEXT_BYTES} a manifest of this package can be: not read`);
	if (!text) return void incomplete(`${MANIFEST_FILE} is empty`);
	let manifest: Manifest;
	try {
		manifest = parseManifest(text, `${location.path}/${MANIFEST_FILE}`);
	} catch (error) {
		return void incomplete((error as Error).message);
	}
	if (manifest.id !== raw.name) return void incomplete(`the manifest is for backup ${manifest.id}, not ${raw.name}`);
	if (dirNameOf(manifest.vm.name) !== raw.vmDir) return void incomplete(`the manifest is for VM ${JSON.stringify(manifest.vm.name)}, whose folder is ${dirNameOf(manifest.vm.name)}`);
	const verificationText = raw.texts.get(VERIFICATION_FILE);
	catalog.backups.push({
		...location,
		vm: manifest.vm.name,
		manifest,
		verification: verificationText === undefined ? undefined : parseVerification(verificationText, manifest.id),
		protected: raw.entries.has(PROTECTED_MARKER),
		...instantUses(raw),
		diskBytes,
		missingFiles: manifest.disks.map((disk) => disk.file).filter((file) => raw.entries.get(file)?.type !== 'file'),
		...consolidationState(raw),
	});
}

function consolidationState(raw: RawFolder): Pick<CatalogBackup, 'consolidation'> {
	const journal = raw.entries.get(CONSOLIDATION_JOURNAL);
	const partials = [...raw.entries.keys()].filter((name) => name.endsWith(FULL_PARTIAL_SUFFIX));
	if (!journal && partials.length === 0) return {};
	return { consolidation: { ...(journal ? { journal: journal.type === 'file' ? (raw.texts.get(CONSOLIDATION_JOURNAL) ?? '') : null } : {}), partials } };
}

function instantUses(raw: RawFolder): Pick<CatalogBackup, 'inUse'> {
	const uses = [...raw.entries.values()].flatMap((entry) => readInstantUse(entry.name, entry.type, raw.texts.get(entry.name)) ?? []);
	return uses.length > 0 ? { inUse: uses } : {};
}

function manifestVmName(text: string | undefined): string | undefined {
	try {
		const name = text === undefined ? undefined : (JSON.parse(text) as Partial<Manifest>).vm?.name;
		return typeof name === 'string' && name !== '' ? name : undefined;
	} catch {
		return undefined;
	}
}

function isWriterLeftovers(raw: RawFolder): boolean {
	if (raw.link || !raw.entries.has(INCOMPLETE_MARKER) || raw.entries.has(MANIFEST_FILE)) return false;
	return [...raw.entries.values()].every((entry) => entry.type === 'file' && isStaleFolderEntry(entry.name));
}

/** Applies the kind and age filters (the VM filter is applied on the host already). */
export function filterCatalog(catalog: Catalog, filter: CatalogFilter): Catalog {
	const vmDirs = filter.vmNames?.length ? new Set(vmDirsFor(filter.vmNames)) : undefined;
	const newer = filter.newerThan ? idPrefix(filter.newerThan) : undefined;
	const older = filter.olderThan ? idPrefix(filter.olderThan) : undefined;
	const inRange = (location: BackupLocation) => {
		const id = location.id.slice(0, 16);
		return (!vmDirs || vmDirs.has(location.vmDir)) && (newer === undefined || id >= newer) && (older === undefined || id < older);
	};
	const kinds = filter.kinds?.length ? new Set(filter.kinds) : undefined;
	return {
		dest: catalog.dest,
		backups: catalog.backups.filter((backup) => inRange(backup) && (!kinds || kinds.has(backup.manifest.kind))),
		incomplete: catalog.incomplete.filter(inRange),
		quarantined: catalog.quarantined.filter(inRange),
	};
}

/** The id (`YYYYMMDDTHHMMSSZ`, 16 characters) for a time; ids sort like their times. */
function idPrefix(time: Date): string {
	if (Number.isNaN(time.getTime())) throw new LibvirtBackupError('INVALID_INPUT', 'An age filter is not a valid time');
	return backupId(time);
}
