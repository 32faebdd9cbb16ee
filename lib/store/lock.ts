/**
 * The per-VM lock: `flock` on `<dest>/<vm dir>/.lvb.lock`, held by a remote process that lives as
 * long as its SSH channel. Releasing closes the channel; a dropped connection closes it too, so the
 * lock never outlives the job that took it. Backup and Prune both take it.
 */
import { LibvirtBackupError, isLibvirtBackupError } from '../errors';
import { scriptArgv } from '../shell';
import type { RemoteProcess, SshConnection } from '../ssh';
import { newMarker } from '../batch';

export const LOCK_FILE = '.lvb.lock';

const LOCK_SCRIPT = `dir=$1 holder=$2 m=$3
mkdir -p -- "$dir" || exit 1
lock="$dir/${LOCK_FILE}"
exec 8>>"$lock" || exit 1
if ! flock -n 8; then
  echo "$m locked"
  cat -- "$lock"
  exit 75
fi
printf '%s\\n' "$holder" >"$lock"
echo "$m acquired"
exec sleep 2147483647
`;

export interface VmLock {
	path: string;
	release(): Promise<void>;
}

export async function acquireVmLock(ssh: SshConnection, vmDir: string, holder: string, vmName: string): Promise<VmLock> {
	const marker = newMarker();
	let output = '';
	let acquired: () => void = () => undefined;
	const ready = new Promise<void>((resolve) => (acquired = resolve));
	const process: RemoteProcess = await ssh.spawn(scriptArgv(LOCK_SCRIPT, 'lvb-lock', [vmDir, holder, marker]), {
		label: 'lock',
		okExitCodes: [75],
		onStdout: (chunk) => {
			output += chunk.toString('utf8');
			if (output.includes(`${marker} acquired`)) acquired();
		},
	});
	const outcome = await Promise.race([ready.then(() => 'acquired' as const), process.done.then(() => 'ended' as const)]).catch((error: unknown) => {
		throw isLibvirtBackupError(error) ? new LibvirtBackupError(error.code, `Cannot take the backup lock in ${vmDir}: ${error.message}`) : error;
	});
	if (outcome === 'ended') {
		const holderText = output.split(`${marker} locked\n`)[1]?.trim();
		throw new LibvirtBackupError('LOCKED', `VM "${vmName}" is locked by ${holderText || 'another job'} (${vmDir}/${LOCK_FILE}); try again when that job has finished`, {
			holder: holderText,
		});
	}
	let released = false;
	return {
		path: `${vmDir}/${LOCK_FILE}`,
		release: async () => {
			if (released) return;
			released = true;
			process.stop();
			await process.done.catch(() => undefined);
		},
	};
}
