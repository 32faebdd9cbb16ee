/**
 * The per-VM lock: `flock` on `<dest>/<vm dir>/.lvb.lock`, held by a remote process that lives as
 * long as its SSH channel. Releasing closes the channel; a dropped connection closes it too, so the
 * lock never outlives the job that took it. Backup and Prune both take it.
 *
 * The destination may be writable by others, so the lock file is never followed or truncated: a
 * symbolic link, FIFO, device or hard-linked file there is refused by name. It is opened read-write
 * (`<>`: no truncation, and a FIFO opens without blocking), checked again through the open
 * descriptor, and the holder's name is written through that descriptor only.
 */
import { LibvirtBackupError, isLibvirtBackupError } from '../errors';
import { scriptArgv } from '../shell';
import type { RemoteProcess, SshConnection } from '../ssh';
import { newMarker, readSteps, splitSections, stepsArgv, stepsProgress, type RemoteStep } from '../batch';

export const LOCK_FILE = '.lvb.lock';

/** Taking the lock is a few file operations: a host that does not answer in this time is stuck (a hung share). */
const ACQUIRE_TIMEOUT_MS = 60_000;
const REMOVE_TIMEOUT_MS = 30_000;

/**
 * A job that removes its VM folder (a failed first backup) unlinks the lock file while holding it.
 * Whoever opened the old file before that and locks it afterwards holds a lock nobody else sees:
 * so after `flock` the path must still name the locked file, else open it again.
 * `sh -c LOCK_SCRIPT lvb-lock VMDIR HOLDER MARKER [COMMAND...]`: COMMAND, when given, runs once the
 * lock is held (the reads a job makes under it), then `MARKER ready`: one round trip for both.
 */
export const LOCK_SCRIPT = `dir=$1 holder=$2 m=$3
lock=${LOCK_FILE}
unsafe() { exec 8<&-; echo "$m unsafe $1"; exit 76; }
attempt=0 created=0
while :; do
  attempt=$((attempt+1))
  if [ ! -e "$dir" ] && [ ! -L "$dir" ]; then
    mkdir -p -- "\${dir%/*}" || exit 1
    mkdir -- "$dir" 2>/dev/null && created=1
  fi
  [ -L "$dir" ] && unsafe dirlink
  [ -d "$dir" ] || unsafe notdir
  cd -- "$dir" || exit 1
  [ -L "$lock" ] && unsafe link
  [ -e "$lock" ] && [ ! -f "$lock" ] && unsafe notfile
  exec 8<>"$lock" || exit 1
  [ -L "$lock" ] && unsafe link
  [ -f /dev/fd/8 ] || unsafe notfile
  [ "$(stat -L -c %h /dev/fd/8)" = 1 ] || unsafe hardlink
  if ! flock -n 8; then
    echo "$m locked"
    head -c 512 <&8 | head -n 1
    exit 75
  fi
  [ "$lock" -ef /dev/fd/8 ] && break
  exec 8<&-
  cd /
  if [ "$attempt" -ge 5 ]; then echo "$m locked"; exit 75; fi
done
printf '%s\\n' "$holder" >&8
echo "$m acquired $created"
if [ $# -gt 3 ]; then
  shift 3
  (cd / && exec "$@" 8<&-)
  echo "$m ready"
fi
exec sleep 2147483647
`;

/** Run while holding the lock: the folder goes only if the lock file is all it holds. */
const REMOVE_FOLDER_SCRIPT = `dir=$1
[ -L "$dir" ] && exit 0
cd -- "$dir" 2>/dev/null || exit 0
for f in * .[!.]* ..?*; do
  [ -e "$f" ] || [ -L "$f" ] || continue
  [ "$f" = ${LOCK_FILE} ] || exit 0
done
[ -f ${LOCK_FILE} ] && [ ! -L ${LOCK_FILE} ] || exit 0
rm -f -- ${LOCK_FILE}
cd / && rmdir -- "$dir" 2>/dev/null
exit 0
`;

const UNSAFE: Record<string, string> = {
	dirlink: 'the VM folder is a symbolic link',
	notdir: 'the VM folder is not a folder',
	link: 'the lock file is a symbolic link',
	notfile: 'the lock file is not a regular file',
	hardlink: 'the lock file has other hard links',
};

export interface VmLock {
	path: string;
	/** Whether this job created the VM folder when it took the lock. */
	createdFolder: boolean;
	/**
	 * Releases the lock. With `removeCreatedFolder`, a VM folder this job created is removed first
	 * (while still locked) if the lock file is all it holds.
	 */
	release(options?: { removeCreatedFolder?: boolean }): Promise<void>;
}

export async function acquireVmLock(ssh: SshConnection, vmDir: string, holder: string, vmName: string): Promise<VmLock> {
	return (await lockAndRun<[]>(ssh, vmDir, holder, vmName, [] as []))!.lock;
}

/**
 * A VM folder found on the host by the same exec that locks it: the lock's argv names it `token`,
 * and `locate` wraps that argv in a command that prints `MARKER dir NAME` and runs it with
 * `dest/NAME` in place of the token, or prints `MARKER nodomain` and exits 77.
 */
export interface LocatedFolder {
	dest: string;
	token: string;
	locate(marker: string, lockArgv: string[]): string[];
}

/** Reads made under the lock, in the same exec as taking it: the job waits for one answer. */
const READ_UNDER_LOCK_TIMEOUT_MS = 5 * 60_000;

/**
 * Takes the lock and, once it is held, runs `steps` (lib/batch) in the same remote process: one
 * round trip for the lock and the reads that need it. A step that fails releases the lock.
 */
export async function lockAndRun<T extends unknown[]>(
	ssh: SshConnection,
	folder: string | LocatedFolder,
	holder: string,
	vmName: string,
	steps: { [K in keyof T]: RemoteStep<T[K]> },
): Promise<{ lock: VmLock; results: T; vmDir: string } | undefined> {
	const marker = newMarker();
	const stepsMarker = newMarker();
	const answer = steps.length > 0 ? [`${marker} ready\n`] : [`${marker} acquired 0\n`, `${marker} acquired 1\n`];
	const lockArgv = scriptArgv(LOCK_SCRIPT, 'lvb-lock', [typeof folder === 'string' ? folder : folder.token, holder.replace(/[\r\n]+/g, ' '), marker, ...(steps.length > 0 ? stepsArgv(steps, stepsMarker) : [])]);
	const located = () => {
		const dir = splitSections(output, marker).find((section) => section.kind === 'dir')?.arg;
		return typeof folder === 'string' ? folder : dir ? `${folder.dest}/${dir}` : undefined;
	};
	let vmDir = typeof folder === 'string' ? folder : `${folder.dest}/(folder of VM ${vmName})`;
	let lockPath = `${vmDir}/${LOCK_FILE}`;
	let output = '';
	let stderr = '';
	let acquired: () => void = () => undefined;
	const ready = new Promise<void>((resolve) => (acquired = resolve));
	const progress = stepsProgress(steps, stepsMarker);
	const process: RemoteProcess = await ssh.spawn(
		typeof folder === 'string' ? lockArgv : folder.locate(marker, lockArgv),
		{
			label: 'lock',
			okExitCodes: [75, 76, 77],
			onStdout: (chunk) => {
				output += chunk.toString('utf8');
				if (steps.length > 0) progress(output);
				if (answer.some((line) => output.includes(line))) acquired();
			},
			onStderr: (chunk) => {
				if (stderr.length < 64 * 1024) stderr += chunk.toString('utf8');
			},
		},
	);
	const acquireTimeoutMs = steps.length > 0 ? READ_UNDER_LOCK_TIMEOUT_MS : ACQUIRE_TIMEOUT_MS;
	let timer: NodeJS.Timeout | undefined;
	const timedOut = new Promise<'timeout'>((resolve) => (timer = setTimeout(() => resolve('timeout'), acquireTimeoutMs)));
	const outcome = await Promise.race([ready.then(() => 'acquired' as const), process.done.then(() => 'ended' as const), timedOut])
		.catch((error: unknown) => {
			throw isLibvirtBackupError(error) ? new LibvirtBackupError(error.code, `Cannot take the backup lock in ${vmDir}: ${error.message}`) : error;
		})
		.finally(() => clearTimeout(timer));
	// The run waits for this answer only: the process holds the lock on.
	if (outcome === 'acquired') process.answered();
	if (outcome === 'timeout') {
		process.stop();
		await process.done.catch(() => undefined);
		throw new LibvirtBackupError('COMMAND_TIMEOUT', `Cannot take the backup lock ${lockPath}: the host gave no answer within ${acquireTimeoutMs / 1000} s`);
	}
	const sections = splitSections(output, marker);
	if (sections.some((section) => section.kind === 'nodomain')) return undefined;
	vmDir = located() ?? vmDir;
	lockPath = `${vmDir}/${LOCK_FILE}`;
	if (outcome === 'ended') {
		const unsafe = sections.find((section) => section.kind === 'unsafe');
		if (unsafe) {
			const why = UNSAFE[unsafe.arg] ?? 'it is not a plain file of ours';
			throw new LibvirtBackupError('COMMAND_FAILED', `Unsafe backup lock ${lockPath}: ${why}; nothing was followed or changed. Remove it if you did not put it there.`, {
				path: lockPath,
			});
		}
		const holderText = sections.find((section) => section.kind === 'locked')?.body.trim();
		throw new LibvirtBackupError('LOCKED', `VM "${vmName}" is locked by ${holderText || 'another job'} (${lockPath}); try again when that job has finished`, {
			holder: holderText,
		});
	}
	const createdFolder = sections.find((section) => section.kind === 'acquired')?.arg === '1';
	let released = false;
	const lock: VmLock = {
		path: lockPath,
		createdFolder,
		release: async (options = {}) => {
			if (released) return;
			released = true;
			if (options.removeCreatedFolder && createdFolder) {
				await ssh.run(scriptArgv(REMOVE_FOLDER_SCRIPT, 'lvb-unlock-remove', [vmDir]), { label: 'remove the empty VM folder', timeoutMs: REMOVE_TIMEOUT_MS }).catch(() => undefined);
			}
			process.stop();
			await process.done.catch(() => undefined);
		},
	};
	try {
		return { lock, results: readSteps<T>(steps, stepsMarker, output, stderr), vmDir };
	} catch (error) {
		await lock.release({ removeCreatedFolder: true });
		throw error;
	}
}
