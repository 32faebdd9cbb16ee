/**
 * Bench helper: records every remote command an SshConnection starts (label, start, duration) by
 * wrapping the instance's `spawn` (which `run` goes through), without touching lib/. Used to show
 * where a backup's wall time goes and what each SSH exec costs.
 */
import type { RemoteProcess, RunOptions, SshConnection } from '../../lib/ssh';

export interface ExecRecord {
	label: string;
	/** ms since the log's `mark()`. */
	startMs: number;
	/** Wall time from spawn() to the command's end (channel closed), ms. */
	ms: number;
	ok: boolean;
}

export class ExecLog {
	private records: ExecRecord[] = [];
	private origin = performance.now();

	constructor(ssh: SshConnection) {
		const original = ssh.spawn.bind(ssh);
		const wrapped = async (argv: readonly string[], options: RunOptions = {}): Promise<RemoteProcess> => {
			const started = performance.now();
			const label = options.label ?? argv[0];
			const process = await original(argv, options);
			const record = (ok: boolean) =>
				this.records.push({ label, startMs: started - this.origin, ms: performance.now() - started, ok });
			process.done.then(
				() => record(true),
				() => record(false),
			);
			return process;
		};
		(ssh as unknown as { spawn: typeof wrapped }).spawn = wrapped;
	}

	/** Starts a new window: forget what was recorded so far. */
	mark(): void {
		this.records = [];
		this.origin = performance.now();
	}

	/** Records of the current window, in start order. */
	take(): ExecRecord[] {
		return [...this.records].sort((a, b) => a.startMs - b.startMs);
	}
}
