/**
 * One SSH connection to one host, opened once per node run and reused for every item. The host key
 * is checked against the pinned keys during key exchange, before any authentication data is sent.
 */
import type { Readable, Writable } from 'node:stream';
import { Client, type ClientChannel, type ConnectConfig, type SFTPWrapper } from 'ssh2';
import { LibvirtBackupError, tail } from '../errors';
import { commandLine, type SudoMode } from '../shell';
import { fingerprintOf, preferredHostKeyAlgorithms, type HostKeyPin } from './hostKeys';
import type { ExecRecording, ExecSpan } from './roundTrips';
import { startTimer } from './timer';

export type SshAuth =
	| { method: 'privateKey'; privateKey: string; passphrase?: string }
	| { method: 'password'; password: string };

export interface SshTarget {
	host: string;
	port: number;
	username: string;
	auth: SshAuth;
	/**
	 * Pinned keys, or the explicit insecure opt-out. An empty pin list refuses every host. `forHost`:
	 * the pins were chosen for this host out of a fleet credential's (lib/ssh/hostKeys pinsForHost).
	 */
	hostKeys: { pins: HostKeyPin[]; forHost?: boolean } | { skipVerification: true };
	sudo: { mode: SudoMode; password?: string };
	readyTimeoutMs?: number;
}

export interface RunOptions {
	/** Short name of what runs, for error messages (defaults to the program name). */
	label?: string;
	timeoutMs?: number;
	signal?: AbortSignal;
	onStdout?: (chunk: Buffer) => void;
	onStderr?: (chunk: Buffer) => void;
	/** Exit codes that are results, not failures (default: only 0). */
	okExitCodes?: readonly number[];
}

export interface RemoteProcess {
	done: Promise<RunResult>;
	stop(): void;
	/** The answer the caller waits for has come although the command goes on (a held lock): ends its round trip. */
	answered(): void;
}

/** A command whose stdin is the caller's data (see `spawnWithStdin`). */
export interface RemoteWriter extends RemoteProcess {
	/** The command's stdin, after the sudo password line when there is one. Honour write()'s backpressure. */
	stdin: Writable;
}

/** A remote command whose stdout is read as a stream (see spawnReadable). */
export interface RemoteReadable extends RemoteProcess {
	stdout: Readable;
}

export interface RunResult {
	exitCode: number;
	stdout: string;
	stderr: string;
}

/**
 * A link that silently drops packets ends this side after about (COUNT_MAX + 1) x INTERVAL = 20 s
 * without an answer: before the host's watchdog gives up on the heartbeat (WATCHDOG_SILENCE_SECONDS),
 * so the client reports the lost connection rather than a command killed on the host.
 */
const KEEPALIVE_INTERVAL_MS = 5_000;
const KEEPALIVE_COUNT_MAX = 3;
/** Each channel's stdin gets a byte this often; the host's watchdog ends the command when they stop. */
const HEARTBEAT_INTERVAL_MS = 5_000;
const STDERR_KEEP_BYTES = 64 * 1024;
/** What sudo writes (first-use lecture, then its answer) before the command can write anything. */
const SUDO_MESSAGE_BYTES = 4096;
const SUDO_REFUSED = /^Sorry, try again\.$/m;

export class SshConnection {
	private execs = 0;
	private lost: LibvirtBackupError | undefined;
	private readonly pending = new Set<(error: LibvirtBackupError) => void>();
	private sftpSession: Promise<SFTPWrapper> | undefined;
	private readonly recordings = new Set<ExecSpan[]>();

	private constructor(
		private readonly client: Client,
		readonly target: SshTarget,
		/** The host key the server presented, as a SHA256 fingerprint. */
		readonly hostKeyFingerprint: string,
	) {
		const onGone = (reason: string) => {
			this.lost ??= new LibvirtBackupError('SSH_CONNECTION_LOST', `SSH connection to ${describe(target)} was lost: ${reason}`);
			for (const reject of this.pending) reject(this.lost);
			this.pending.clear();
		};
		client.on('error', (error) => onGone(error.message));
		client.on('close', () => onGone('closed'));
	}

	/** Number of remote commands started on this connection (tests use it to prove batching). */
	get execCount(): number {
		return this.execs;
	}

	/** Records every command's span from now until stop() (tests and benches count round trips with it). */
	recordExecs(): ExecRecording {
		const spans: ExecSpan[] = [];
		this.recordings.add(spans);
		return { spans, stop: () => this.recordings.delete(spans) };
	}

	static async connect(target: SshTarget, signal?: AbortSignal): Promise<SshConnection> {
		const client = new Client();
		let presented: string | undefined;
		let rejectedKey = false;
		const pins = 'pins' in target.hostKeys ? target.hostKeys.pins : undefined;
		const config: ConnectConfig = {
			host: target.host,
			port: target.port,
			username: target.username,
			readyTimeout: target.readyTimeoutMs ?? 20_000,
			keepaliveInterval: KEEPALIVE_INTERVAL_MS,
			keepaliveCountMax: KEEPALIVE_COUNT_MAX,
			tryKeyboard: target.auth.method === 'password',
			hostVerifier: (key: Buffer) => {
				presented = fingerprintOf(key);
				rejectedKey = pins !== undefined && !pins.some((pin) => pin.fingerprint === presented);
				return !rejectedKey;
			},
		};
		const algorithms = pins ? preferredHostKeyAlgorithms(pins) : undefined;
		if (algorithms) config.algorithms = { serverHostKey: algorithms as never };
		if (target.auth.method === 'privateKey') {
			config.privateKey = target.auth.privateKey;
			if (target.auth.passphrase) config.passphrase = target.auth.passphrase;
		} else {
			const password = target.auth.password;
			config.password = password;
			client.on('keyboard-interactive', (_name, _instructions, _lang, prompts, finish) =>
				finish(prompts.map(() => password)),
			);
		}

		await new Promise<void>((resolve, reject) => {
			const fail = (error: LibvirtBackupError) => {
				signal?.removeEventListener('abort', onAbort);
				client.removeAllListeners('ready');
				client.end();
				reject(error);
			};
			const onAbort = () => fail(new LibvirtBackupError('ABORTED', 'Cancelled while connecting over SSH'));
			if (signal?.aborted) return onAbort();
			signal?.addEventListener('abort', onAbort, { once: true });
			client.once('ready', () => {
				signal?.removeEventListener('abort', onAbort);
				client.removeAllListeners('error');
				resolve();
			});
			client.on('error', (error) => fail(connectError(target, error, presented, rejectedKey, pins)));
			try {
				client.connect(config);
				// Small request packets (one per exec) must not wait for delayed ACKs (Nagle): ~85 ms each.
				client.setNoDelay(true);
			} catch (error) {
				fail(
					new LibvirtBackupError(
						'INVALID_INPUT',
						`The SSH private key could not be used: ${(error as Error).message}. Paste the whole key including its BEGIN/END lines, and its passphrase if it has one.`,
					),
				);
			}
		});
		return new SshConnection(client, target, presented ?? '');
	}

	/** Runs argv on the host (quoted by lib/shell, wrapped so it dies with its channel). */
	async run(argv: readonly string[], options: RunOptions = {}): Promise<RunResult> {
		return await (await this.spawn(argv, options)).done;
	}

	/**
	 * Starts argv on the host and returns once its channel is open. `stop()` closes the channel,
	 * which makes the remote watchdog kill the command; `done` then rejects with ABORTED. The channel's
	 * stdin carries the sudo password (sudo mode 'password') and then only heartbeat bytes.
	 */
	async spawn(argv: readonly string[], options: RunOptions = {}): Promise<RemoteProcess> {
		const { done, stop, answered } = await this.start(argv, options, { streamStdout: false, dataOnStdin: false });
		return { done, stop, answered };
	}

	/**
	 * Starts argv with its stdin free for data: no watchdog and no heartbeat, which both need stdin.
	 * The command itself must end when its stdin reaches EOF or stays silent (the client is gone),
	 * and must tell a complete input from a cut one (as lib/export/sink does with a trailer).
	 */
	async spawnWithStdin(argv: readonly string[], options: RunOptions = {}): Promise<RemoteWriter> {
		const { done, stop, answered, channel } = await this.start(argv, options, { streamStdout: false, dataOnStdin: true });
		return { done, stop, answered, stdin: channel };
	}

	/**
	 * Starts argv on the host with its stdout handed over as a Readable that keeps SSH flow control:
	 * while it is not read, the channel's window is not reopened and the remote command blocks on its
	 * write, so a slow consumer never makes data pile up in memory. The Readable ends when the
	 * command closes its stdout, also when it failed or was stopped: only `done` says it succeeded.
	 */
	async spawnReadable(argv: readonly string[], options: Omit<RunOptions, 'onStdout'> = {}): Promise<RemoteReadable> {
		const { done, stop, answered, channel } = await this.start(argv, options, { streamStdout: true, dataOnStdin: false });
		return { done, stop, answered, stdout: channel };
	}

	private async start(argv: readonly string[], options: RunOptions, { streamStdout, dataOnStdin }: { streamStdout: boolean; dataOnStdin: boolean }): Promise<RemoteProcess & { channel: ClientChannel }> {
		if (this.lost) throw this.lost;
		const label = options.label ?? argv[0];
		const line = commandLine(argv, { sudo: this.target.sudo.mode, watchdog: !dataOnStdin });
		this.execs += 1;
		const span: ExecSpan | undefined = this.recordings.size > 0 ? { label, startedMs: performance.now() } : undefined;
		for (const spans of this.recordings) spans.push(span as ExecSpan);
		const answered = () => {
			if (span && span.answeredMs === undefined) span.answeredMs = performance.now();
		};
		let exitCode: number | undefined;
		let exitSignal: string | undefined;
		const channel = await new Promise<ClientChannel>((resolve, reject) => {
			this.client.exec(line, (error, stream) => {
				if (error) return reject(new LibvirtBackupError('SSH_CONNECTION_LOST', `Cannot start ${label} over SSH: ${error.message}`));
				// Listen now, not after the await: a fast command's exit-status can arrive in the same
				// TCP read as the exec reply, and ssh2 emits 'exit' synchronously (it is not buffered).
				stream.on('exit', (code: number | null, signalName?: string) => {
					exitCode = code ?? undefined;
					exitSignal = signalName;
				});
				resolve(stream);
			});
		});
		if (this.target.sudo.mode === 'password') channel.write(`${this.target.sudo.password ?? ''}\n`);
		const heartbeat = dataOnStdin ? undefined : setInterval(() => channel.write('\n'), HEARTBEAT_INTERVAL_MS);

		let stop: () => void = () => undefined;
		const done = new Promise<RunResult>((resolve, reject) => {
			const stdout: Buffer[] = [];
			let stderr = Buffer.alloc(0);
			let cancelTimer: (() => void) | undefined;
			let settled = false;

			const finish = (error?: LibvirtBackupError, result?: RunResult) => {
				if (settled) return;
				settled = true;
				answered();
				cancelTimer?.();
				clearInterval(heartbeat);
				options.signal?.removeEventListener('abort', onAbort);
				this.pending.delete(onLost);
				if (error) {
					channel.close(); // closes the command's stdin: the remote watchdog kills it
					reject(error);
				} else {
					resolve(result as RunResult);
				}
			};
			const onAbort = () => finish(new LibvirtBackupError('ABORTED', `Cancelled: ${label} was stopped on the host`));
			const onLost = (error: LibvirtBackupError) => finish(error);
			stop = onAbort;
			this.pending.add(onLost);
			if (options.signal?.aborted) return onAbort();
			options.signal?.addEventListener('abort', onAbort, { once: true });
			const timeoutMs = options.timeoutMs;
			if (timeoutMs) {
				cancelTimer = startTimer(timeoutMs, () =>
					finish(new LibvirtBackupError('COMMAND_TIMEOUT', `${label} did not finish within ${Math.round(timeoutMs / 1000)} s and was stopped on the host`)),
				);
			}

			if (!streamStdout) {
				channel.on('data', (chunk: Buffer) => {
					if (options.onStdout) options.onStdout(chunk);
					else stdout.push(chunk);
				});
			}
			let stderrSeen = 0;
			channel.stderr.on('data', (chunk: Buffer) => {
				options.onStderr?.(chunk);
				stderr = Buffer.concat([stderr, chunk]);
				if (stderr.length > STDERR_KEEP_BYTES) stderr = stderr.subarray(stderr.length - STDERR_KEEP_BYTES);
				// A refused password makes `sudo -S` read the next stdin line as another try: the heartbeat
				// would feed it empty tries for a while. Its complaint comes first on stderr.
				if (this.target.sudo.mode === 'password' && stderrSeen < SUDO_MESSAGE_BYTES && SUDO_REFUSED.test(stderr.toString('utf8'))) {
					finish(sudoPasswordRefused(label, this.target));
				}
				stderrSeen += chunk.length;
			});
			channel.on('close', () => {
				const result = { exitCode: exitCode ?? -1, stdout: Buffer.concat(stdout).toString('utf8'), stderr: stderr.toString('utf8') };
				if (exitCode === undefined) {
					return finish(
						new LibvirtBackupError('COMMAND_FAILED', `${label} ended without an exit code${exitSignal ? ` (signal ${exitSignal})` : ''}: ${tail(result.stderr)}`),
					);
				}
				if (exitCode === 0 || options.okExitCodes?.includes(exitCode)) return finish(undefined, result);
				finish(commandError(label, this.target, result));
			});
		});
		return { done, stop: () => stop(), answered, channel };
	}

	/** One SFTP session per connection, opened on first use. */
	sftp(): Promise<SFTPWrapper> {
		this.sftpSession ??= new Promise((resolve, reject) =>
			this.client.sftp((error, sftp) =>
				error ? reject(new LibvirtBackupError('SSH_CONNECTION_LOST', `Cannot open SFTP on ${describe(this.target)}: ${error.message}`)) : resolve(sftp),
			),
		);
		return this.sftpSession;
	}

	close(): void {
		this.client.end();
	}
}

/** Opens a connection, hands it to `work`, and closes it whatever happens. */
export async function withSsh<T>(target: SshTarget, work: (ssh: SshConnection) => Promise<T>, signal?: AbortSignal): Promise<T> {
	const ssh = await SshConnection.connect(target, signal);
	try {
		return await work(ssh);
	} finally {
		ssh.close();
	}
}

export function describe(target: Pick<SshTarget, 'host' | 'port' | 'username'>): string {
	return `${target.username}@${target.host}:${target.port}`;
}

function sudoPasswordRefused(label: string, target: SshTarget): LibvirtBackupError {
	return new LibvirtBackupError(
		'SUDO_FAILED',
		`sudo on ${target.host} refused the sudo password of ${target.username}, so ${label} was not run. Check the sudo password in the credential: it is the password of ${target.username} on the host.`,
	);
}

function commandError(label: string, target: SshTarget, result: RunResult): LibvirtBackupError {
	const stderr = tail(result.stderr);
	if (target.sudo.mode !== 'none' && /^sudo: |^Sorry, try again/m.test(result.stderr)) {
		return new LibvirtBackupError(
			'SUDO_FAILED',
			`sudo refused to run ${label} as root on ${describe(target)}: ${stderr}. Check the credential's sudo mode and the sudo rule for ${target.username}.`,
			{ exitCode: result.exitCode, stderr },
		);
	}
	return new LibvirtBackupError('COMMAND_FAILED', `${label} failed on ${target.host} (exit code ${result.exitCode}): ${stderr || 'no error output'}`, {
		exitCode: result.exitCode,
		stderr,
	});
}

function connectError(
	target: SshTarget,
	error: Error & { level?: string; code?: string },
	presented: string | undefined,
	rejectedKey: boolean,
	pins: HostKeyPin[] | undefined,
): LibvirtBackupError {
	const where = `${target.host}:${target.port}`;
	const keyscan = `ssh-keyscan -p ${target.port} ${target.host} | ssh-keygen -lf -`;
	if (rejectedKey && pins && pins.length === 0 && 'forHost' in target.hostKeys && target.hostKeys.forHost) {
		return new LibvirtBackupError(
			'SSH_NO_HOST_KEY',
			`None of the credential's pinned host keys is for ${where} (its known_hosts lines name other hosts), so ${where} cannot be trusted. The server presented ${presented}; check it on the host (${keyscan}) and add its known_hosts line (ssh-keyscan -p ${target.port} ${target.host}) to "Pinned Host Keys".`,
			{ presentedFingerprint: presented },
		);
	}
	if (rejectedKey && pins && pins.length === 0) {
		return new LibvirtBackupError(
			'SSH_NO_HOST_KEY',
			`No host key is pinned in the credential, so ${where} cannot be trusted. The server presented ${presented}; check it on the host (${keyscan}) and paste it into "Pinned Host Keys".`,
			{ presentedFingerprint: presented },
		);
	}
	if (rejectedKey) {
		return new LibvirtBackupError(
			'SSH_HOST_KEY_MISMATCH',
			`Host key mismatch for ${where}: the server presented ${presented}, which is not a pinned key. If the host was reinstalled, verify the new key (${keyscan}) and update the credential; otherwise someone may be intercepting the connection.`,
			{ presentedFingerprint: presented },
		);
	}
	if (error.level === 'client-authentication') {
		const method = target.auth.method === 'privateKey' ? 'private key' : 'password';
		return new LibvirtBackupError(
			'SSH_AUTH_FAILED',
			`Authentication failed for ${describe(target)} with ${method}: the server rejected the credentials. Check the username and the ${method}${method === 'private key' ? ' (is its public key in ~/.ssh/authorized_keys?)' : ''}.`,
		);
	}
	if (error.level === 'client-timeout' || error.code === 'ETIMEDOUT') {
		return new LibvirtBackupError('SSH_TIMEOUT', `Timed out connecting to ${where}: no SSH handshake within ${Math.round((target.readyTimeoutMs ?? 20_000) / 1000)} s. Check the host, port and firewall.`);
	}
	const reasons: Record<string, string> = {
		ECONNREFUSED: 'connection refused (is sshd running on that port?)',
		ENOTFOUND: 'host name not found',
		EAI_AGAIN: 'host name could not be resolved',
		EHOSTUNREACH: 'host unreachable',
		ENETUNREACH: 'network unreachable',
		ECONNRESET: 'connection reset by the server',
	};
	return new LibvirtBackupError('SSH_UNREACHABLE', `Cannot reach ${where}: ${reasons[error.code ?? ''] ?? error.message}`);
}
