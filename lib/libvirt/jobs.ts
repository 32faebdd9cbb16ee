/**
 * virsh calls for live backups: guest-agent freeze/thaw, push-mode backup jobs and their
 * progress, checkpoints. Domains are addressed by UUID.
 */
import { LibvirtBackupError, tail } from '../errors';
import { scriptArgv } from '../shell';
import type { SshConnection } from '../ssh';
import { parseCheckpointSizes } from './domainXml';
import type { BlockStat } from './discover';
import { newMarker, runSteps, splitSections, type RemoteStep } from '../batch';
import { runVirsh, virshFailure } from './virsh';

export interface JobProgress {
	processedBytes: number;
	totalBytes: number;
}

export type Quiesce = 'auto' | 'require' | 'off';

export interface PushJob {
	uri: string;
	uuid: string;
	/** Backup folder to create; the job's XML files go there too. */
	dir: string;
	/** Marker file created with the folder (lib/backup's incomplete marker). */
	markerFile: string;
	backupXml: string;
	/** The checkpoint the job creates (its name, and the XML backup-begin takes). */
	checkpoint?: { name: string; xml: string };
	quiesce: Quiesce;
}

export interface PushJobResult {
	/** Whether the guest filesystems were frozen (through the guest agent) when the job started. */
	frozen: boolean;
	/** Why they were not, when freezing was attempted. */
	noFreezeReason?: string;
}

/**
 * A whole push-mode backup job in ONE remote script: create the folder, freeze (when asked and
 * possible), `backup-begin`, thaw at once (the job's point in time is fixed when it returns), then
 * poll the job, printing progress, until it ends. If the channel closes (cancel, timeout, dropped
 * connection), the watchdog's TERM runs the trap on the host: thaw, abort the job, and delete the
 * checkpoint the job created (no backup will own it; the client that would delete it may be gone
 * with its connection, e.g. a killed n8n), waiting out a libvirtd restart for each.
 */
const PUSH_SCRIPT = `export LC_ALL=C
uri=$1 dom=$2 dir=$3 marker=$4 backup=$5 checkpoint=$6 quiesce=$7 m=$8 cpname=$9
frozen=0 started=0
# libvirtd may be restarting (it answers again within seconds): a call that cannot reach it is
# retried for ~30 s; any other failure is final.
unreachable() { case $1 in *"connect"*|*"End of file"*|*"socket is closed"*) return 0;; esac; return 1; }
virshretry() {
  n=0
  until vout=$(virsh -q -c "$uri" "$@" 2>&1); do
    unreachable "$vout" || return 1
    n=$((n+1)); [ $n -ge 30 ] && return 1
    sleep 1
  done
}
thaw() { if [ $frozen = 1 ]; then virshretry domfsthaw --domain "$dom"; frozen=0; fi; }
# A checkpoint cannot be deleted while its job is still ending: wait for that (at most ~30 s).
dropcheckpoint() {
  [ -n "$cpname" ] || return 0
  n=0
  until vout=$(virsh -c "$uri" domjobinfo --domain "$dom" --rawstats 2>&1) && case $vout in *"Job type: 1"*|*"Job type: 2"*) false;; esac; do
    [ $n -ge 100 ] && return 1
    case $vout in *"Job type: "*) ;; *) unreachable "$vout" || return 1;; esac
    sleep 0.3; n=$((n+1))
  done
  virshretry checkpoint-delete --domain "$dom" --checkpointname "$cpname"
}
# The channel is gone (PIPE: a write to it failed): clean up without writing to it, and without
# being cut short by the next signal (the watchdog's TERM follows a closed stdout).
trap 'trap "" TERM INT HUP PIPE; exec >/dev/null 2>&1; thaw; [ $started = 1 ] && { virshretry domjobabort --domain "$dom"; dropcheckpoint; }; exit 143' TERM INT HUP PIPE
mkdir -- "$dir" && : >"$dir/$marker" || exit 1
printf '%s' "$backup" >"$dir/.lvb-backup.xml" || exit 1
set -- --backupxml "$dir/.lvb-backup.xml"
if [ -n "$checkpoint" ]; then
  printf '%s' "$checkpoint" >"$dir/.lvb-checkpoint.xml" || exit 1
  set -- "$@" --checkpointxml "$dir/.lvb-checkpoint.xml"
fi
# Each flag is set BEFORE its call: the TERM that ends a call midway must still thaw or abort
# (both are harmless when the call had not taken effect).
if [ "$quiesce" != off ]; then
  frozen=1
  if out=$(virsh -q -c "$uri" domfsfreeze --domain "$dom" 2>&1); then
    echo "$m frozen"
  else
    frozen=0
    echo "$m nofreeze"; printf '%s\n' "$out"
    [ "$quiesce" = require ] && exit 0
  fi
fi
started=1
virsh -q -c "$uri" backup-begin --domain "$dom" "$@" >/dev/null; rc=$?
# A refused job may be refused because another one runs: that one is not ours to abort.
[ $rc = 0 ] || started=0
thaw
[ $rc = 0 ] || exit $rc
echo "$m started"
# domjobinfo can fail once as a job ends ("backup job data missing"): retry before giving up.
jobinfo() {
  n=0
  until out=$(virsh -c "$uri" domjobinfo --domain "$dom" --rawstats "$@" 2>&1); do
    n=$((n+1)); [ $n -ge 5 ] && { printf '%s\n' "$out" >&2; return 1; }
    sleep 0.1
  done
}
# Poll fast first (small incrementals end in a fraction of a second), then every 0.2 s.
i=0
while :; do
  jobinfo || exit 1
  case $out in *"Job type: 1"*|*"Job type: 2"*) ;; *) break;; esac
  echo "$m progress"
  printf '%s\n' "$out"
  case $i in 0) sleep 0.02;; 1) sleep 0.05;; 2) sleep 0.1;; *) sleep 0.2;; esac
  i=$((i+1))
done
started=0
echo "$m completed"
jobinfo --completed --anystats || exit 1
printf '%s\n' "$out"
`;

function rawStats(text: string): Map<string, string> {
	const stats = new Map<string, string>();
	for (const line of text.split('\n')) {
		const colon = line.indexOf(':');
		if (colon > 0) stats.set(line.slice(0, colon).trim(), line.slice(colon + 1).trim());
	}
	return stats;
}

function describeAgentFailure(text: string): string {
	if (/QEMU guest agent is not configured/.test(text)) return 'no guest agent configured';
	if (/not connected|not responding|not available/i.test(text)) return 'guest agent not responding';
	return tail(text, 1) || 'filesystems could not be frozen';
}

/** The remote command of a push job; its sections are introduced by `marker`. */
export function pushJobArgv(job: PushJob, marker: string): string[] {
	return scriptArgv(PUSH_SCRIPT, 'lvb-push-backup', [job.uri, job.uuid, job.dir, job.markerFile, job.backupXml, job.checkpoint?.xml ?? '', job.quiesce, marker, job.checkpoint?.name ?? '']);
}

/**
 * A push job as one step of a batched remote command (lib/batch): the hashing and the domain XML
 * can follow it in the same exec. `onProgress` gets the job's progress as it is polled; `onEnd`
 * is called once the job has ended on the host.
 */
export function pushJobStep(
	job: PushJob,
	username: string,
	onProgress: (progress: JobProgress) => void,
	onEnd: () => void = () => undefined,
): RemoteStep<PushJobResult> {
	const marker = newMarker();
	let reported = 0;
	let ended = false;
	return {
		label: 'virsh backup-begin',
		argv: pushJobArgv(job, marker),
		onOutput: (output) => {
			const sections = splitSections(output, marker);
			const progress = sections.filter((section) => section.kind === 'progress');
			// The newest section may still be arriving; the one before it is complete.
			if (progress.length - 1 > reported) {
				reported = progress.length - 1;
				const stats = rawStats(progress[reported - 1].body);
				onProgress({ processedBytes: Number(stats.get('disk_processed') ?? 0), totalBytes: Number(stats.get('disk_total') ?? 0) });
			}
			if (!ended && sections.some((section) => section.kind === 'completed')) {
				ended = true;
				onEnd();
			}
		},
		parse: (output) => {
			if (!ended) onEnd();
			return pushJobResult(job, splitSections(output, marker));
		},
		failure: (exitCode, stderr) => virshFailure({ exitCode, stderr }, job.uri, username),
	};
}

function pushJobResult(job: PushJob, sections: ReturnType<typeof splitSections>): PushJobResult {
	const noFreeze = sections.find((section) => section.kind === 'nofreeze');
	const noFreezeReason = noFreeze ? describeAgentFailure(noFreeze.body) : undefined;
	if (!sections.some((section) => section.kind === 'started')) {
		throw new LibvirtBackupError('BACKUP_FAILED', `Quiesce is required but the guest filesystems cannot be frozen: ${noFreezeReason}. Install and start qemu-guest-agent in the VM, or set Quiesce to Auto.`);
	}
	const stats = rawStats(sections.find((section) => section.kind === 'completed')?.body ?? '');
	const type = stats.get('Job type');
	if (type !== '3' && stats.get('success') !== '1') {
		const why = stats.get('errmsg') ?? (type === '5' ? 'the job was cancelled' : type === '4' ? 'the job failed' : 'libvirt reported no result for the job');
		throw new LibvirtBackupError('BACKUP_FAILED', `Backup job of domain ${job.uuid} did not complete: ${why}`);
	}
	return { frozen: sections.some((section) => section.kind === 'frozen'), noFreezeReason };
}

export interface BackupState {
	/** A backup job (ours or anyone's) is running on the domain. */
	backupJobActive: boolean;
	/** Whether the daemon has push-mode `backup-begin` (libvirt >= 7.2). */
	pushBackupSupported: boolean;
	/** Checkpoints of the domain, and for those with our prefix, bytes changed per disk since. */
	checkpoints: string[];
	dirtyBytes: Map<string, Map<string, number>>;
}

/** Everything libvirt knows that a backup decision needs, in one exec. */
export async function backupState(ssh: SshConnection, uri: string, uuid: string, prefix: string): Promise<BackupState> {
	const script = `export LC_ALL=C
uri=$1 dom=$2 prefix=$3 m=$4
echo "$m version"
virsh -c "$uri" version --daemon || exit $?
echo "$m job"
virsh -c "$uri" domjobinfo --domain "$dom" --rawstats || exit $?
echo "$m checkpoints"
list=$(virsh -q -c "$uri" checkpoint-list --domain "$dom" --name) || exit $?
printf '%s\\n' "$list"
for c in $list; do
  case $c in "$prefix"*) echo "$m size $c"; virsh -q -c "$uri" checkpoint-dumpxml --domain "$dom" --checkpointname "$c" --size || true;; esac
done`;
	const marker = newMarker();
	const { stdout } = await runVirsh(ssh, scriptArgv(script, 'lvb-backup-state', [uri, uuid, prefix, marker]), uri, 'virsh (backup state)');
	return parseBackupState(splitSections(stdout, marker));
}

function parseBackupState(sections: ReturnType<typeof splitSections>): BackupState {
	const job = rawStats(sections.find((section) => section.kind === 'job')?.body ?? '');
	const dirtyBytes = new Map<string, Map<string, number>>();
	for (const section of sections.filter((s) => s.kind === 'size' && s.body.includes('<domaincheckpoint'))) {
		dirtyBytes.set(section.arg, parseCheckpointSizes(section.body));
	}
	const daemon = /Running against daemon: (\d+)\.(\d+)/.exec(sections.find((section) => section.kind === 'version')?.body ?? '');
	return {
		backupJobActive: ['1', '2'].includes(job.get('Job type') ?? '') && job.get('operation') === '9',
		pushBackupSupported: daemon ? Number(daemon[1]) * 1000 + Number(daemon[2]) >= 7002 : true,
		checkpoints: (sections.find((section) => section.kind === 'checkpoints')?.body ?? '').split('\n').map((line) => line.trim()).filter(Boolean),
		dirtyBytes,
	};
}

/**
 * backupState for a domain named by the request (a name or UUID), with its disks' block stats,
 * in two virsh processes (one connection each) as a step of the pre-flight batch. `virsh domuuid`
 * resolves the request as virsh does (an ID before a name), so the caller takes the result only
 * for the domain its own exact match found. Checkpoint names reach virsh's command string only
 * when made of the characters ours use.
 */
const PREFLIGHT_STATE_SCRIPT = `export LC_ALL=C
uri=$1 ref=$2 prefix=$3 m=$4
# domuuid finds names (and IDs); a UUID is taken as it is (checked below and by the caller).
dom=$(virsh -q -c "$uri" domuuid --domain "$ref" 2>/dev/null) || dom=$ref
case $dom in ''|*[!0-9a-fA-F-]*) echo "$m nodomain"; exit 0;; esac
echo "$m uuid $dom"
out=$(virsh -c "$uri" "echo $m version; version --daemon; echo $m job; domjobinfo --domain $dom --rawstats; echo $m checkpoints; checkpoint-list --domain $dom --name; echo $m blockstats; domstats --block --backing $dom") || exit $?
printf '%s\\n' "$out"
cmds=
for c in $(printf '%s\\n' "$out" | awk -v a="$m checkpoints" -v b="$m blockstats" '$0 == b { f = 0 } f { print } $0 == a { f = 1 }'); do
  case $c in *[!A-Za-z0-9._-]*) continue;; "$prefix"*) cmds="$cmds echo $m size $c; checkpoint-dumpxml --domain $dom --checkpointname $c --size;";; esac
done
[ -z "$cmds" ] || virsh -c "$uri" "$cmds"
exit 0`;

export interface PreflightState {
	/** The domain virsh resolved the request to; undefined when it found none. */
	uuid?: string;
	state: BackupState;
	/** Block stats per disk target (running domains: the top image's numbers). */
	blockStats: Map<string, BlockStat>;
}

export function preflightStateStep(uri: string, ref: string, prefix: string, username: string): RemoteStep<PreflightState> {
	const marker = newMarker();
	return {
		label: 'virsh (backup state)',
		argv: scriptArgv(PREFLIGHT_STATE_SCRIPT, 'lvb-preflight-state', [uri, ref, prefix, marker]),
		failure: (exitCode, stderr) => virshFailure({ exitCode, stderr }, uri, username),
		parse: (stdout) => {
			const sections = splitSections(stdout, marker);
			const uuid = sections.find((section) => section.kind === 'uuid')?.arg;
			return { uuid, state: parseBackupState(sections), blockStats: parseBlockStats(sections.find((section) => section.kind === 'blockstats')?.body ?? '') };
		},
	};
}

/** `block.<i>.<field>=<value>` lines of `virsh domstats --block`, keyed by disk target. */
function parseBlockStats(text: string): Map<string, BlockStat> {
	const byIndex = new Map<string, Map<string, string>>();
	for (const line of text.split('\n')) {
		const match = /^ {2}block\.(\d+)\.([a-z.]+)=(.*)$/.exec(line);
		if (!match) continue;
		const fields = byIndex.get(match[1]) ?? byIndex.set(match[1], new Map()).get(match[1])!;
		fields.set(match[2], match[3]);
	}
	const stats = new Map<string, BlockStat>();
	for (const fields of byIndex.values()) {
		const [name, path, capacity, physical] = ['name', 'path', 'capacity', 'physical'].map((key) => fields.get(key));
		// Backing layers repeat their disk's name with a backingIndex > top's: only the first (top) entry counts.
		if (name === undefined || path === undefined || capacity === undefined || physical === undefined || stats.has(name)) continue;
		stats.set(name, { path, capacity: Number(capacity), physical: Number(physical) });
	}
	return stats;
}

export async function abortJob(ssh: SshConnection, uri: string, uuid: string): Promise<void> {
	await ssh.run(['virsh', '-q', '-c', uri, 'domjobabort', '--domain', uuid], { label: 'virsh domjobabort', okExitCodes: [1] });
}

export async function listCheckpoints(ssh: SshConnection, uri: string, uuid: string): Promise<string[]> {
	const { stdout } = await runVirsh(ssh, ['virsh', '-q', '-c', uri, 'checkpoint-list', '--domain', uuid, '--name'], uri, 'virsh checkpoint-list');
	return stdout.split('\n').map((line) => line.trim()).filter(Boolean);
}

const CHECKPOINT_DELETE_SCRIPT = `export LC_ALL=C
uri=$1 dom=$2 m=$3; shift 3
rc=0
for c in "$@"; do
  err=$(virsh -q -c "$uri" checkpoint-delete --domain "$dom" --checkpointname "$c" 2>&1 >/dev/null) && continue
  case $err in
    *"not found in backing chain"*)
      virsh -q -c "$uri" checkpoint-delete --domain "$dom" --checkpointname "$c" --metadata >/dev/null && { echo "$m metadata $c"; continue; };;
    *) printf '%s\\n' "$err" >&2;;
  esac
  rc=1
done
exit $rc`;

export interface CheckpointDeletion {
	/** Checkpoints whose bitmap QEMU no longer had: only their metadata was removed. */
	metadataOnly: string[];
	/** Why some could not be deleted (the step is optional: it never fails its batch). */
	error?: string;
}

/**
 * Deletes checkpoints (libvirt merges each one's bitmap into its parent's, which keeps older
 * checkpoints usable). A checkpoint whose bitmap QEMU no longer has cannot be deleted that way:
 * only its metadata is removed then, and its name is returned. An optional step: a failure is
 * reported in its result, and the steps after it run.
 */
export function deleteCheckpointsStep(uri: string, uuid: string, names: readonly string[]): RemoteStep<CheckpointDeletion> {
	const marker = newMarker();
	return {
		label: 'virsh checkpoint-delete',
		optional: true,
		argv: scriptArgv(CHECKPOINT_DELETE_SCRIPT, 'lvb-checkpoint-delete', [uri, uuid, marker, ...names]),
		parse: (stdout, exitCode) => {
			const sections = splitSections(stdout, marker);
			const metadataOnly = sections.filter((section) => section.kind === 'metadata').map((section) => section.arg);
			const text = stdout.split(`${marker} `)[0].trim();
			return exitCode === 0 ? { metadataOnly } : { metadataOnly, error: `virsh checkpoint-delete failed (exit code ${exitCode}): ${tail(text) || 'no error output'}` };
		},
	};
}

/** deleteCheckpointsStep on its own; throws when some could not be deleted. */
export async function deleteCheckpoints(ssh: SshConnection, uri: string, uuid: string, names: readonly string[]): Promise<string[]> {
	if (names.length === 0) return [];
	const [deletion] = await runSteps<[CheckpointDeletion]>(ssh, [deleteCheckpointsStep(uri, uuid, names)], { label: 'virsh checkpoint-delete' });
	if (deletion.error) throw new LibvirtBackupError('COMMAND_FAILED', deletion.error);
	return deletion.metadataOnly;
}

export interface DiskOverlay {
	target: string;
	/** The overlay file the snapshot puts on top of the disk while its base is copied. */
	overlay: string;
}

/**
 * `merge COUNT OVERLAY...`: for each overlay the VM runs on (libvirt matches the exact path to a
 * disk's active image, so no other disk can be committed), merge it into its base and pivot the VM
 * back (a commit left waiting for its pivot by a killed virsh is pivoted), then delete the file: a
 * regular file only, and only when the domain no longer names it. Signals are ignored meanwhile,
 * and inherited as ignored by virsh: a TERM midway would leave the VM in a half-done block job.
 */
const MERGE_FUNCTION = `merge() {
  trap '' TERM INT HUP PIPE
  rc=0 n=$1; shift
  while [ $n -gt 0 ]; do
    overlay=$1; shift; n=$((n-1))
    if virsh -q -c "$uri" domblkinfo --domain "$dom" --device "$overlay" >/dev/null 2>&1; then
      virsh -q -c "$uri" blockjob --domain "$dom" --path "$overlay" --pivot >/dev/null 2>&1 ||
      virsh -q -c "$uri" blockcommit --domain "$dom" --path "$overlay" --active --pivot --wait --delete >/dev/null || { rc=1; continue; }
    fi
    xml=$(virsh -q -c "$uri" dumpxml --domain "$dom") || { rc=1; continue; }
    case $xml in *"\${overlay##*/}"*) echo "the VM still uses $overlay: left in place" >&2; rc=1; continue;; esac
    if [ -L "$overlay" ] || { [ -e "$overlay" ] && [ ! -f "$overlay" ]; }; then
      echo "$overlay is not a regular file: left in place" >&2; rc=1; continue
    fi
    rm -f -- "$overlay" || rc=1
  done
  return $rc
}`;

/**
 * The snapshot method in ONE remote script, so that the host itself merges the overlays back
 * whatever happens to the client: write the pending file (for a run killed outright, which only the
 * next run can finish), one atomic disk-only snapshot (quiesced when asked and possible), the copy
 * command while the VM writes to the overlays, then merge. The merge is the EXIT trap, and TERM
 * (the watchdog's, when the channel closes) exits through it.
 */
const OVERLAY_SCRIPT = `export LC_ALL=C
uri=$1 dom=$2 quiesce=$3 m=$4 pending=$5 content=$6 np=$7 ns=$8; shift 8
# "$@" is: np overlay paths, ns snapshot-create-as words (--diskspec ...), the copy command.
${MERGE_FUNCTION}
snapshot() {
  shift "$np"
  # Keep only the ns words: rotate them to the end, drop what is before them.
  i=0; while [ $i -lt "$ns" ]; do set -- "$@" "$1"; shift; i=$((i+1)); done
  shift $(($# - ns))
  virsh -q -c "$uri" snapshot-create-as --domain "$dom" --name "lvb-overlay-$$" --disk-only --atomic --no-metadata $flag "$@" >/dev/null
}
copy() { shift $((np + ns)); "$@"; }
# Exclusive create: no symlink, FIFO or device planted at the temp name is opened.
rm -f -- "$pending.tmp"
printf '%s' "$content" | dd of="$pending.tmp" conv=excl,fsync oflag=nofollow status=none && mv -fT -- "$pending.tmp" "$pending" || exit 1
# The channel is gone (PIPE: a write to it failed, TERM: the watchdog saw it close): merge
# without writing to it, and without being cut short by the next signal.
trap 'trap "" TERM INT HUP PIPE; exec >/dev/null 2>&1; exit 143' TERM INT HUP PIPE
trap 'rc=$?; trap - EXIT; trap "" TERM INT HUP PIPE; if merge "$np" "$@"; then rm -f -- "$pending"; elif [ $rc = 0 ]; then rc=1; fi; exit $rc' EXIT
flag=
[ "$quiesce" != off ] && flag=--quiesce
if out=$(snapshot "$@" 2>&1); then
  if [ -n "$flag" ]; then echo "$m frozen"; else echo "$m created"; fi
elif [ -n "$flag" ]; then
  echo "$m nofreeze"; printf '%s\\n' "$out"
  [ "$quiesce" = require ] && exit 0
  flag=
  snapshot "$@" || exit 1
  echo "$m created"
else
  printf '%s\\n' "$out" >&2; exit 1
fi
echo "$m copy"
copy "$@"`;

export interface OverlayJob {
	uri: string;
	uuid: string;
	/** The selected disks; every other disk of the domain gets no overlay. */
	overlays: DiskOverlay[];
	allTargets: string[];
	quiesce: Quiesce;
	/** Where the overlays are recorded until they are merged, and what it holds. */
	pendingFile: string;
	pendingContent: string;
	/** Copies the bases while the VM writes to the overlays. */
	command: string[];
}

/** The remote command of an overlay job; its sections are introduced by `marker`. */
export function overlayJobArgv(job: OverlayJob, marker: string): string[] {
	const selected = new Map(job.overlays.map((disk) => [disk.target, disk.overlay]));
	// virsh splits --diskspec on commas; a literal comma in a path is written twice.
	const specs = job.allTargets.flatMap((target) => ['--diskspec', selected.has(target) ? `${target},snapshot=external,file=${selected.get(target)!.replace(/,/g, ',,')}` : `${target},snapshot=no`]);
	const overlays = job.overlays.map((disk) => disk.overlay);
	return scriptArgv(OVERLAY_SCRIPT, 'lvb-overlay-backup', [job.uri, job.uuid, job.quiesce, marker, job.pendingFile, job.pendingContent, String(overlays.length), String(specs.length), ...overlays, ...specs, ...job.command]);
}

/**
 * Fallback for hosts without `backup-begin` (libvirt < 7.2): overlays on the selected disks so that
 * their bases stop changing, `job.command` copies them, the overlays are merged back. The copy
 * command's output goes to `onCopyOutput`. A VM is never left on the overlays by a cancel, a
 * timeout or a dropped connection: the host merges them.
 */
export async function runOnOverlays(
	ssh: SshConnection,
	job: OverlayJob,
	onCopyOutput: (chunk: Buffer) => void,
	signal?: AbortSignal,
	timeoutMs?: number,
): Promise<PushJobResult> {
	const marker = newMarker();
	const copyStart = Buffer.from(`${marker} copy\n`);
	let head = Buffer.alloc(0);
	let copying = false;
	await ssh.run(
		overlayJobArgv(job, marker),
		{
			label: 'snapshot backup',
			signal,
			timeoutMs,
			onStdout: (chunk) => {
				if (copying) return onCopyOutput(chunk);
				head = Buffer.concat([head, chunk]);
				const at = head.indexOf(copyStart);
				if (at < 0) return;
				copying = true;
				const rest = head.subarray(at + copyStart.length);
				head = head.subarray(0, at);
				if (rest.length > 0) onCopyOutput(rest);
			},
		},
	);
	const sections = splitSections(head.toString('utf8'), marker);
	const noFreeze = sections.find((section) => section.kind === 'nofreeze');
	const noFreezeReason = noFreeze ? describeAgentFailure(noFreeze.body) : undefined;
	const frozen = sections.some((section) => section.kind === 'frozen');
	if (!frozen && !sections.some((section) => section.kind === 'created')) {
		throw new LibvirtBackupError('BACKUP_FAILED', `Quiesce is required but the guest filesystems cannot be frozen: ${noFreezeReason}. Install and start qemu-guest-agent in the VM, or set Quiesce to Auto.`);
	}
	return { frozen, noFreezeReason };
}

/**
 * Finishes what a snapshot backup killed outright (host script included) left: merges the overlays
 * the VM still runs on, deletes them, then the pending file. The overlay paths must already be
 * checked against what this code writes (lib/backup validates the pending file).
 */
export async function mergeOverlays(ssh: SshConnection, uri: string, uuid: string, overlays: string[], pendingFile: string): Promise<void> {
	await runVirsh(ssh, mergeArgv(uri, uuid, overlays, pendingFile), uri, 'virsh blockcommit');
}

const MERGE_SCRIPT = `export LC_ALL=C
uri=$1 dom=$2 pending=$3; shift 3
${MERGE_FUNCTION}
merge $# "$@" && rm -f -- "$pending"`;

export function mergeArgv(uri: string, uuid: string, overlays: string[], pendingFile: string): string[] {
	return scriptArgv(MERGE_SCRIPT, 'lvb-merge', [uri, uuid, pendingFile, ...overlays]);
}
