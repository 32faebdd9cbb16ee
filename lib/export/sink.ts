/**
 * Writes a stream to a file on a host: under a temp name next to the final one, flushed, and renamed
 * when complete, so a reader never sees a half-written file at the final name. Every export target
 * (an archive on a host, a replica's images) writes through here.
 *
 * The data goes, unframed, on the stdin of one remote receiver (`SshConnection.spawnWithStdin`)
 * into one `dd`, followed by a trailer: a random per-transfer token and the byte count. EOF after a
 * matching trailer is a complete file (the trailer is cut off again); EOF without it is a client
 * that went away; a temp file that stops growing for SILENCE_SECONDS is a link that dropped. In
 * every case but a complete file the receiver removes the temp file itself and exits. (Framing the
 * stream instead costs one process per frame on the host: 3x slower, bench/sink.ts.) The receiver
 * runs with the credential's sudo mode like every other command, so it can write where backups are
 * written; SFTP would write as the SSH user only.
 *
 * The destination may be a share others write to: the temp file is created O_EXCL (never follows a
 * symbolic link or opens a FIFO or device) and then only opened O_NOFOLLOW|O_NONBLOCK; the final
 * name is taken with rename(2), which never follows a link, and without overwrite by
 * renameat2(RENAME_NOREPLACE) (`mv -n`), so a file that appears meanwhile is not replaced.
 */
import { randomBytes } from 'node:crypto';
import { Writable } from 'node:stream';
import { LibvirtBackupError } from '../errors';
import { newMarker, splitSections } from '../batch';
import { scriptArgv } from '../shell';
import type { RemoteWriter, SshConnection } from '../ssh';

export interface HostFileWriter {
	/** Write the file's bytes here (respect backpressure, or pipe into it); `commit()` ends it. */
	stream: Writable;
	/** Ends the stream, waits until the host has the whole file flushed, and renames it to its final name. */
	commit(): Promise<{ bytes: number }>;
	/** Stops the transfer; the host removes the temp file. Never throws. */
	abort(): Promise<void>;
}

export interface HostFileWriterOptions {
	signal?: AbortSignal;
	/** Replace an existing regular file at the final name (never a link, folder or anything else). */
	overwrite?: boolean;
}

/** Bytes of the trailer: the token (32 hex digits) and the byte count (32 digits, zero-padded). */
export const TRAILER_BYTES = 64;
/** How long an abort waits for the receiver's answer before it closes the channel. */
const ABORT_WAIT_MS = 30_000;
/** A receiver whose temp file does not grow for this long removes it and exits (the link dropped). */
export const SILENCE_SECONDS = 60;

/** What follows the data: `token` (32 hex digits) and the data's length. */
export function trailer(token: string, length: number): Buffer {
	if (!/^[0-9a-f]{32}$/.test(token) || !Number.isSafeInteger(length) || length < 0) throw new LibvirtBackupError('INVALID_INPUT', 'Bad transfer trailer');
	return Buffer.from(`${token}${String(length).padStart(TRAILER_BYTES - 32, '0')}`, 'ascii');
}

/** The temp name next to `finalPath`: the final name plus a random tag, so writers never share one. */
export function tempPathFor(finalPath: string): string {
	const tag = randomBytes(6).toString('hex');
	return `${finalPath}.lvb-${tag}.partial`;
}

/**
 * `sh -c RECEIVE_SCRIPT lvb-receive TMP FINAL OVERWRITE SILENCE TOKEN MARKER`, stdin = data + trailer.
 * Outcomes on stdout as `MARKER <kind> <arg>`: refused (tmp-exists, final-exists, final-link,
 * final-notfile, no-dir), failed (a reason), committed <bytes>. A background job stops the `dd`
 * when the temp file has not grown for SILENCE seconds (asynchronous commands get /dev/null as
 * stdin unless told otherwise, hence `<&3`). `dd seek=N count=0` truncates the trailer off.
 */
export const RECEIVE_SCRIPT = `export LC_ALL=C
tmp=$1 final=$2 overwrite=$3 limit=$4 token=$5 m=$6
dir=\${final%/*}
say() { echo "$m $*"; }
[ -d "$dir" ] && [ ! -L "$dir" ] || { say refused no-dir; exit 3; }
final_ok() {
  if [ -L "$final" ]; then say refused final-link; return 1; fi
  [ -e "$final" ] || return 0
  [ -f "$final" ] || { say refused final-notfile; return 1; }
  [ "$overwrite" = 1 ] || { say refused final-exists; return 1; }
}
final_ok || exit 3
if [ -e "$tmp" ] || [ -L "$tmp" ]; then say refused tmp-exists; exit 3; fi
dd of="$tmp" conv=excl count=0 status=none </dev/null || { say failed create; exit 1; }
fail() { rm -f -- "$tmp"; say failed "$1"; exit 1; }
trap 'kill $writer $watch 2>/dev/null; fail signal' TERM HUP INT
writer= watch=
exec 3<&0
dd "of=$tmp" oflag=nofollow,nonblock,append conv=notrunc,nocreat bs=1M status=none <&3 &
writer=$!
exec 3<&-
(
  last=-1 still=0
  while sleep 5; do
    size=$(stat -c %s -- "$tmp" 2>/dev/null) || size=-2
    if [ "$size" = "$last" ]; then still=$((still + 5)); else still=0 last=$size; fi
    [ "$still" -ge "$limit" ] && { kill -TERM "$writer"; exit 0; }
  done
) >/dev/null 2>&1 &
watch=$!
wait "$writer"; rc=$?
kill "$watch" 2>/dev/null
case $rc in 0) ;; 143) fail silence;; *) fail write;; esac
[ -f "$tmp" ] && [ ! -L "$tmp" ] || fail replaced
size=$(stat -c %s -- "$tmp") || fail replaced
[ "$size" -ge ${TRAILER_BYTES} ] || fail cut
bytes=$((size - ${TRAILER_BYTES}))
end=$(dd "if=$tmp" iflag=nofollow,nonblock,skip_bytes skip="$bytes" bs=${TRAILER_BYTES} count=1 status=none) || fail replaced
[ "$end" = "$token$(printf '%0${TRAILER_BYTES - 32}d' "$bytes")" ] || fail cut
dd "of=$tmp" oflag=nofollow,nonblock conv=nocreat,fsync bs=1 seek="$bytes" count=0 status=none </dev/null || fail write
final_ok || { rm -f -- "$tmp"; exit 3; }
if [ "$overwrite" = 1 ]; then mv -fT -- "$tmp" "$final" || fail rename
else
  mv -nT -- "$tmp" "$final" || fail rename
  if [ -e "$tmp" ] || [ -L "$tmp" ]; then rm -f -- "$tmp"; say refused final-exists; exit 3; fi
fi
sync -- "$dir" || say warning dir-flush
say committed "$bytes"
`;

const REFUSED: Record<string, (final: string, tmp: string) => string> = {
	'no-dir': (final) => `Cannot write ${final}: its folder does not exist or is a symbolic link`,
	'final-link': (final) => `Refused to write ${final}: it is a symbolic link; nothing was followed or changed`,
	'final-notfile': (final) => `Refused to write ${final}: something that is not a regular file is there; nothing was changed`,
	'final-exists': (final) => `Refused to write ${final}: a file with that name exists already (overwrite is off); nothing was changed`,
	'tmp-exists': (final, tmp) => `Refused to write ${final}: the temp name ${tmp} exists already (it was not made by this transfer); nothing was followed or changed`,
};

const FAILED: Record<string, string> = {
	create: 'the temp file could not be created',
	write: 'writing the temp file failed (full disk, quota, I/O error?)',
	silence: `no data arrived for ${SILENCE_SECONDS} s (the connection or the source stalled)`,
	cut: 'the data stream was cut off before its end (the connection was lost or the transfer cancelled)',
	replaced: 'the temp file was replaced or removed while it was written',
	rename: 'the temp file could not be renamed to its final name',
	signal: 'the receiver was stopped',
};

/**
 * Opens a writer for `finalPath` on the host of `ssh`. Rejects early when the final name cannot be
 * written (symbolic link, not a file, exists without overwrite, no folder), so nothing is streamed
 * for nothing; the same checks run again at commit.
 */
export async function createHostFileWriter(ssh: SshConnection, finalPath: string, opts: HostFileWriterOptions = {}): Promise<HostFileWriter> {
	checkFinalPath(finalPath);
	if (opts.signal?.aborted) throw new LibvirtBackupError('ABORTED', `Cancelled before ${finalPath} was written`);
	const tmp = tempPathFor(finalPath);
	const token = randomBytes(16).toString('hex');
	const marker = newMarker();
	const remote: RemoteWriter = await ssh.spawnWithStdin(
		scriptArgv(RECEIVE_SCRIPT, 'lvb-receive', [tmp, finalPath, opts.overwrite ? '1' : '0', String(SILENCE_SECONDS), token, marker]),
		{ label: `write ${finalPath}` , okExitCodes: [1, 3] },
	);
	const channel = remote.stdin;
	// Write errors after the receiver ended surface through `outcome`.
	channel.on('error', () => undefined);
	let settled: { bytes: number } | Error | undefined;
	const outcome = remote.done.then(
		(result) => interpret(result.stdout, result.stderr, marker, finalPath, tmp),
		(error: unknown) => (error instanceof Error ? error : new LibvirtBackupError('COMMAND_FAILED', String(error))),
	);
	void outcome.then((value) => (settled = value));
	const ended = (): Error => (settled instanceof Error ? settled : new LibvirtBackupError('COMMAND_FAILED', `The receiver for ${finalPath} ended before the data did`));

	let sent = 0;
	let committing = false;
	const stream = new Writable({
		highWaterMark: 1024 * 1024,
		write(chunk: Buffer, _encoding, callback) {
			if (settled) return callback(ended());
			sent += chunk.length;
			if (channel.write(chunk)) return callback();
			const onDrain = () => {
				channel.removeListener('close', onClose);
				callback();
			};
			const onClose = () => {
				channel.removeListener('drain', onDrain);
				void outcome.then(() => callback(ended()));
			};
			channel.once('drain', onDrain);
			channel.once('close', onClose);
		},
	});

	let aborting: Promise<void> | undefined;
	const abort = (): Promise<void> => {
		aborting ??= (async () => {
			opts.signal?.removeEventListener('abort', onSignal);
			if (!stream.destroyed) stream.destroy();
			// EOF without the trailer: the receiver removes its temp file and exits. A host that does
			// not answer is cut off after a while; its receiver then cleans up on silence.
			channel.end();
			const timer = setTimeout(() => remote.stop(), ABORT_WAIT_MS);
			await outcome;
			clearTimeout(timer);
		})();
		return aborting;
	};
	const onSignal = () => void abort();
	opts.signal?.addEventListener('abort', onSignal, { once: true });
	// A receiver that ends early (a refusal, a full disk) fails the stream now, not at commit.
	void outcome.then(() => {
		if (!committing && !stream.destroyed) stream.destroy(ended());
	});

	return {
		stream,
		abort,
		commit: async () => {
			try {
				if (aborting) throw new LibvirtBackupError('ABORTED', `Cancelled: ${finalPath} was not written`);
				committing = true;
				if (!stream.writableFinished) {
					await new Promise<void>((resolve, reject) => {
						if (stream.destroyed) return reject(stream.errored ?? ended());
						stream.once('finish', resolve);
						stream.once('error', reject);
						if (!stream.writableEnded) stream.end();
					});
				}
				if (settled) throw ended();
				channel.end(trailer(token, sent));
				const value = await outcome;
				if (value instanceof Error) throw value;
				if (value.bytes !== sent) throw new LibvirtBackupError('COMMAND_FAILED', `${finalPath} holds ${value.bytes} bytes, ${sent} were sent`);
				return value;
			} catch (error) {
				await abort();
				throw opts.signal?.aborted ? new LibvirtBackupError('ABORTED', `Cancelled: ${finalPath} was not written`) : error;
			} finally {
				opts.signal?.removeEventListener('abort', onSignal);
			}
		},
	};
}

function checkFinalPath(finalPath: string): void {
	const name = finalPath.slice(finalPath.lastIndexOf('/') + 1);
	if (!finalPath.startsWith('/') || name === '' || name === '.' || name === '..' || /[\0\n\r]/.test(finalPath)) {
		throw new LibvirtBackupError('INVALID_INPUT', `"${finalPath}" is not an absolute path to a file`);
	}
}

/** The receiver's report, as a result or the error it stands for. */
export function interpret(stdout: string, stderr: string, marker: string, finalPath: string, tmp: string): { bytes: number } | LibvirtBackupError {
	const sections = splitSections(stdout, marker);
	const committed = sections.find((section) => section.kind === 'committed');
	if (committed) return { bytes: Number(committed.arg) };
	const refused = sections.find((section) => section.kind === 'refused');
	if (refused) {
		const message = REFUSED[refused.arg]?.(finalPath, tmp) ?? `Refused to write ${finalPath}: ${refused.arg}`;
		return new LibvirtBackupError(refused.arg === 'no-dir' ? 'INVALID_INPUT' : 'COMMAND_FAILED', message, { path: finalPath, reason: refused.arg });
	}
	const failed = sections.find((section) => section.kind === 'failed');
	const why = failed ? (FAILED[failed.arg] ?? failed.arg) : 'the receiver ended without a result';
	const detail = stderr.trim() ? `: ${stderr.trim().split('\n').slice(-3).join(' | ')}` : '';
	const code = failed?.arg === 'write' && /No space left/i.test(stderr) ? 'NO_SPACE' : 'COMMAND_FAILED';
	return new LibvirtBackupError(code, `Writing ${finalPath} failed: ${why}; the temp file was removed${detail}`, { path: finalPath, reason: failed?.arg });
}
