/**
 * virsh calls for live backups: guest-agent freeze/thaw, push-mode backup jobs and their
 * progress, checkpoints. Domains are addressed by UUID.
 */
import { LibvirtBackupError, tail } from '../errors';
import { scriptArgv } from '../shell';
import type { SshConnection } from '../ssh';
import { parseCheckpointSizes } from './domainXml';
import { newMarker, runVirsh, splitSections } from './virsh';

export interface JobProgress {
	processedBytes: number;
	totalBytes: number;
}

export type Quiesce = 'auto' | 'require' | 'off';

export interface JobStart {
	/** Whether the guest filesystems were frozen (through the guest agent) when the job started. */
	frozen: boolean;
	/** Why they were not, when freezing was attempted. */
	noFreezeReason?: string;
}

/**
 * Freeze (when asked and possible), `backup-begin`, thaw: in ONE remote script, so the thaw runs on
 * the host even if the SSH connection drops in between (the watchdog's TERM triggers the trap).
 * The job's point in time is fixed when backup-begin returns, so the guest is frozen only briefly.
 */
export async function startBackupJob(
	ssh: SshConnection,
	uri: string,
	uuid: string,
	dir: string,
	backupXml: string,
	checkpointXml: string | undefined,
	quiesce: Quiesce,
): Promise<JobStart> {
	const script = `uri=$1 dom=$2 dir=$3 backup=$4 checkpoint=$5 quiesce=$6 m=$7
printf '%s' "$backup" >"$dir/.lvb-backup.xml" || exit 1
set -- --backupxml "$dir/.lvb-backup.xml"
if [ -n "$checkpoint" ]; then
  printf '%s' "$checkpoint" >"$dir/.lvb-checkpoint.xml" || exit 1
  set -- "$@" --checkpointxml "$dir/.lvb-checkpoint.xml"
fi
frozen=0
thaw() { if [ $frozen = 1 ]; then virsh -q -c "$uri" domfsthaw --domain "$dom" >/dev/null; frozen=0; fi; }
trap 'thaw; exit 143' TERM INT HUP
if [ "$quiesce" != off ]; then
  if out=$(virsh -q -c "$uri" domfsfreeze --domain "$dom" 2>&1); then
    frozen=1; echo "$m frozen"
  else
    echo "$m nofreeze"; printf '%s\n' "$out"
    [ "$quiesce" = require ] && exit 0
  fi
fi
virsh -q -c "$uri" backup-begin --domain "$dom" "$@"; rc=$?
thaw
[ $rc = 0 ] && echo "$m started"
exit $rc
`;
	const marker = newMarker();
	const { stdout } = await runVirsh(ssh, scriptArgv(script, 'lvb-backup-begin', [uri, uuid, dir, backupXml, checkpointXml ?? '', quiesce, marker]), uri, 'virsh backup-begin');
	const sections = splitSections(stdout, marker);
	const noFreeze = sections.find((section) => section.kind === 'nofreeze');
	const noFreezeReason = noFreeze ? describeAgentFailure(noFreeze.body) : undefined;
	if (!sections.some((section) => section.kind === 'started')) {
		throw new LibvirtBackupError('BACKUP_FAILED', `Quiesce is required but the guest filesystems cannot be frozen: ${noFreezeReason}. Install and start qemu-guest-agent in the VM, or set Quiesce to Auto.`);
	}
	return { frozen: sections.some((section) => section.kind === 'frozen'), noFreezeReason };
}

function describeAgentFailure(text: string): string {
	if (/QEMU guest agent is not configured/.test(text)) return 'no guest agent configured';
	if (/not connected|not responding|not available/i.test(text)) return 'guest agent not responding';
	return tail(text, 1) || 'filesystems could not be frozen';
}

const WAIT_SCRIPT = `export LC_ALL=C
uri=$1 dom=$2 m=$3
while :; do
  out=$(virsh -c "$uri" domjobinfo --domain "$dom" --rawstats) || exit $?
  case $out in *"Job type: 1"*|*"Job type: 2"*) ;; *) break;; esac
  echo "$m progress"
  printf '%s\\n' "$out"
  sleep 0.2
done
echo "$m completed"
virsh -c "$uri" domjobinfo --domain "$dom" --completed --anystats --rawstats
`;

function rawStats(text: string): Map<string, string> {
	const stats = new Map<string, string>();
	for (const line of text.split('\n')) {
		const colon = line.indexOf(':');
		if (colon > 0) stats.set(line.slice(0, colon).trim(), line.slice(colon + 1).trim());
	}
	return stats;
}

/** Waits in ONE SSH exec for the domain's job to end, streaming progress; throws if it failed. */
export async function waitForBackupJob(
	ssh: SshConnection,
	uri: string,
	uuid: string,
	onProgress: (progress: JobProgress) => void,
	signal?: AbortSignal,
	timeoutMs?: number,
): Promise<void> {
	const marker = newMarker();
	let output = '';
	let reported = 0;
	await ssh.run(scriptArgv(WAIT_SCRIPT, 'lvb-wait-job', [uri, uuid, marker]), {
		label: 'virsh domjobinfo',
		signal,
		timeoutMs,
		onStdout: (chunk) => {
			output += chunk.toString('utf8');
			const progress = splitSections(output, marker).filter((section) => section.kind === 'progress');
			// The newest section may still be arriving; the one before it is complete.
			if (progress.length - 1 > reported) {
				reported = progress.length - 1;
				const stats = rawStats(progress[reported - 1].body);
				onProgress({ processedBytes: Number(stats.get('disk_processed') ?? 0), totalBytes: Number(stats.get('disk_total') ?? 0) });
			}
		},
	});
	const completed = splitSections(output, marker).find((section) => section.kind === 'completed');
	const stats = rawStats(completed?.body ?? '');
	const type = stats.get('Job type');
	if (type === '3' || stats.get('success') === '1') return;
	const why = stats.get('errmsg') ?? (type === '5' ? 'the job was cancelled' : type === '4' ? 'the job failed' : 'libvirt reported no result for the job');
	throw new LibvirtBackupError('BACKUP_FAILED', `Backup job of domain ${uuid} did not complete: ${why}`);
}

export async function abortJob(ssh: SshConnection, uri: string, uuid: string): Promise<void> {
	await ssh.run(['virsh', '-q', '-c', uri, 'domjobabort', '--domain', uuid], { label: 'virsh domjobabort', okExitCodes: [1] });
}

export async function listCheckpoints(ssh: SshConnection, uri: string, uuid: string): Promise<string[]> {
	const { stdout } = await runVirsh(ssh, ['virsh', '-q', '-c', uri, 'checkpoint-list', '--domain', uuid, '--name'], uri, 'virsh checkpoint-list');
	return stdout.split('\n').map((line) => line.trim()).filter(Boolean);
}

export async function deleteCheckpoints(ssh: SshConnection, uri: string, uuid: string, names: string[]): Promise<void> {
	if (names.length === 0) return;
	const script = `uri=$1 dom=$2; shift 2
rc=0
for c in "$@"; do virsh -q -c "$uri" checkpoint-delete --domain "$dom" --checkpointname "$c" || rc=1; done
exit $rc`;
	await runVirsh(ssh, scriptArgv(script, 'lvb-checkpoint-delete', [uri, uuid, ...names]), uri, 'virsh checkpoint-delete');
}

/** Bytes changed per disk since a checkpoint: what an incremental from it will write. */
export async function checkpointDirtyBytes(ssh: SshConnection, uri: string, uuid: string, checkpoint: string): Promise<Map<string, number>> {
	const { stdout } = await runVirsh(
		ssh,
		['virsh', '-q', '-c', uri, 'checkpoint-dumpxml', '--domain', uuid, '--checkpointname', checkpoint, '--size'],
		uri,
		'virsh checkpoint-dumpxml',
	);
	return parseCheckpointSizes(stdout);
}
