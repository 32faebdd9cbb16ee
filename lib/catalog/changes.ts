/**
 * Every change List/Verify/Prune make on the host (remove, quarantine, record a verification)
 * goes through CHANGE_SCRIPT, which re-checks each folder on the host right before touching it:
 * exactly `<dest>/<vm dir>/<backup id>`, no symbolic link on the way below the destination, and
 * either one of our manifests inside or, for a stale incomplete folder, our marker and nothing but
 * our writer's leftovers, older than the safety age by its id. What it refuses, it reports.
 * The file it writes (a verification record) is created O_EXCL (`dd conv=excl`): a symbolic link
 * or FIFO planted under its name is refused, never written through.
 */
import { LibvirtBackupError } from '../errors';
import { backupId, checkDestination } from '../store/layout';
import { INCOMPLETE_MARKER, MANIFEST_FILE, MANIFEST_FORMAT, VERIFICATION_FILE, isBackupId } from '../store/manifest';
import { newMarker, splitSections } from '../batch';
import { scriptArgv } from '../shell';
import type { SshConnection } from '../ssh';
import { QUARANTINE_SUFFIX, STALE_FOLDER_FILES, isVmDirName } from '../store/paths';

const DIGITS = (n: number) => '[0-9]'.repeat(n);
const ID_GLOB = `${DIGITS(8)}T${DIGITS(6)}Z`;

/**
 * `sh -c CHANGE_SCRIPT lvb-change MARKER DEST CUTOFF VMDIR [OP ID DATA]...`; CUTOFF is the stale
 * safety limit as YYYYMMDDhhmmss (UTC). Each triple answers with `MARKER <status> <n>` + detail.
 */
export const CHANGE_SCRIPT = `export LC_ALL=C
m=$1 dest=$2 cutoff=$3 v=$4; shift 4
case $dest in /?*) ;; *) echo "destination must be an absolute path" >&2; exit 64;; esac
case "$dest/" in *//*|*/./*|*/../*) echo "destination must be a normalized path" >&2; exit 64;; esac
case $v in .*|*[!A-Za-z0-9_+.%-]*|'') echo "not a VM folder name" >&2; exit 64;; esac
case $cutoff in *[!0-9]*|'') echo "bad cutoff" >&2; exit 64;; esac
vd="$dest/$v"
n=0
say() { echo "$m $1 $n"; [ -z "$2" ] || printf '%s\\n' "$2"; }
valid_id() {
  case $1 in
    ${ID_GLOB}) return 0;;
    ${ID_GLOB}-[0-9]*) case \${1#*Z-} in *[!0-9]*) return 1;; esac; return 0;;
  esac
  return 1
}
ours() {
  [ -f "$1/${MANIFEST_FILE}" ] && [ ! -L "$1/${MANIFEST_FILE}" ] && grep -q -F -e '"${MANIFEST_FORMAT}"' "$1/${MANIFEST_FILE}"
}
leftovers_only() {
  [ -f "$1/${INCOMPLETE_MARKER}" ] && [ ! -L "$1/${INCOMPLETE_MARKER}" ] || return 1
  [ -e "$1/${MANIFEST_FILE}" ] || [ -L "$1/${MANIFEST_FILE}" ] && return 1
  for f in "$1"/* "$1"/.[!.]* "$1"/..?*; do
    [ -e "$f" ] || [ -L "$f" ] || continue
    [ -f "$f" ] && [ ! -L "$f" ] || return 1
    case \${f##*/} in *?.partial|${STALE_FOLDER_FILES.join('|')}) ;; *) return 1;; esac
  done
  return 0
}
if [ -L "$vd" ] || [ ! -d "$vd" ]; then vd_bad=1; else vd_bad=0; fi
while [ $# -ge 3 ]; do
  op=$1 id=$2 data=$3; shift 3
  n=$((n+1))
  d="$vd/$id"
  if [ "$vd_bad" = 1 ]; then say refused "the VM folder $v is missing or a symbolic link"; continue; fi
  if ! valid_id "$id"; then say refused "not a backup id"; continue; fi
  if [ -L "$d" ]; then say refused "the backup folder is a symbolic link"; continue; fi
  if [ ! -d "$d" ]; then say gone "the backup folder does not exist"; continue; fi
  case $op in
    remove|quarantine|record)
      if ! ours "$d"; then say refused "the folder holds no manifest of ours"; continue; fi;;
    stale)
      ts=\${id%%Z*}; ts=\${ts%T*}\${ts#*T}
      if [ "$ts" -ge "$cutoff" ]; then say refused "not older than the safety age"; continue; fi
      if ! leftovers_only "$d"; then say refused "the folder holds more than our unfinished-backup leftovers"; continue; fi;;
    *) say refused "unknown operation"; continue;;
  esac
  case $op in
    remove|stale)
      err=$(rm -rf -- "$d" 2>&1)
      if [ -e "$d" ] || [ -L "$d" ]; then say failed "$err"; else say removed; fi;;
    quarantine)
      q="$d${QUARANTINE_SUFFIX}"
      if [ -e "$q" ] || [ -L "$q" ]; then say refused "$id${QUARANTINE_SUFFIX} already exists"; continue; fi
      if err=$(mv -- "$d" "$q" 2>&1); then say quarantined; else say failed "$err"; fi;;
    record)
      t="$d/${VERIFICATION_FILE}.partial"
      if [ -L "$t" ] || { [ -e "$t" ] && [ ! -f "$t" ]; }; then say failed "${VERIFICATION_FILE}.partial is a symbolic link or not a regular file: not written through"; continue; fi
      rm -f -- "$t"
      if err=$( { printf '%s' "$data" | dd of="$t" conv=excl status=none && mv -fT -- "$t" "$d/${VERIFICATION_FILE}"; } 2>&1); then say recorded; else rm -f -- "$t"; say failed "$err"; fi;;
  esac
done
echo "$m end"
`;

export type FolderChange = { op: 'remove' | 'stale' | 'quarantine'; id: string } | { op: 'record'; id: string; data: string };

export type ChangeStatus = 'removed' | 'quarantined' | 'recorded' | 'refused' | 'gone' | 'failed';

export interface ChangeOutcome {
	id: string;
	op: FolderChange['op'];
	status: ChangeStatus;
	detail: string;
}

export interface ChangeOptions {
	/** Stale incomplete folders must have started before this time (default: nothing is stale). */
	staleBefore?: Date;
	signal?: AbortSignal;
}

/** Removing folders of big images on a slow share takes long, but a hung share must not hang the run. */
const CHANGE_TIMEOUT_MS = 30 * 60_000;
/** Stay well under OpenSSH's 256 KiB packet limit for one exec request. */
const MAX_ARGS_BYTES = 96 * 1024;
const STATUSES: ReadonlySet<string> = new Set(['removed', 'quarantined', 'recorded', 'refused', 'gone', 'failed']);

/** Applies changes to backup folders of one VM folder; the outcomes are in the order of `changes`. */
export async function changeFolders(ssh: SshConnection, dest: string, vmDir: string, changes: readonly FolderChange[], options: ChangeOptions = {}): Promise<ChangeOutcome[]> {
	const root = checkDestination(dest);
	if (!isVmDirName(vmDir)) throw new LibvirtBackupError('INVALID_INPUT', `"${vmDir}" is not a VM folder name`);
	for (const change of changes) {
		if (!isBackupId(change.id)) throw new LibvirtBackupError('INVALID_INPUT', `"${change.id}" is not a backup id`);
	}
	const cutoff = options.staleBefore ? backupId(options.staleBefore).replace(/[TZ]/g, '') : '0';
	const outcomes: ChangeOutcome[] = [];
	for (const batch of batches(changes)) {
		const marker = newMarker();
		const args = batch.flatMap((change) => [change.op, change.id, change.op === 'record' ? change.data : '']);
		const { stdout } = await ssh.run(scriptArgv(CHANGE_SCRIPT, 'lvb-change', [marker, root, cutoff, vmDir, ...args]), {
			label: `changing backups in ${root}/${vmDir}`,
			signal: options.signal,
			timeoutMs: CHANGE_TIMEOUT_MS,
		});
		outcomes.push(...parseChangeOutput(stdout, marker, batch));
	}
	return outcomes;
}

export function parseChangeOutput(stdout: string, marker: string, batch: readonly FolderChange[]): ChangeOutcome[] {
	const outcomes = new Map<number, ChangeOutcome>();
	let ended = false;
	for (const section of splitSections(stdout, marker)) {
		if (section.kind === 'end') ended = true;
		const change = batch[Number(section.arg) - 1];
		if (!STATUSES.has(section.kind) || !change) continue;
		outcomes.set(Number(section.arg), { id: change.id, op: change.op, status: section.kind as ChangeStatus, detail: section.body.trim() });
	}
	return batch.map(
		(change, index) =>
			outcomes.get(index + 1) ?? {
				id: change.id,
				op: change.op,
				status: 'failed',
				detail: ended ? 'the host gave no answer for this folder' : 'the host stopped before reaching this folder',
			},
	);
}

function batches(changes: readonly FolderChange[]): FolderChange[][] {
	const result: FolderChange[][] = [];
	let current: FolderChange[] = [];
	let bytes = 0;
	for (const change of changes) {
		const size = Buffer.byteLength(change.op === 'record' ? change.data : '') + change.id.length + 16;
		if (current.length > 0 && bytes + size > MAX_ARGS_BYTES) {
			result.push(current);
			current = [];
			bytes = 0;
		}
		current.push(change);
		bytes += size;
	}
	if (current.length > 0) result.push(current);
	return result;
}
