/**
 * Sequential round trips: what a far-away host costs a run. Every remote command costs at least one
 * network round trip before its answer is back; commands started together cost one between them.
 * A recording holds each command's span (started, answered: its channel closed, or earlier when its
 * caller said the answer it waits for has come, as the lock's "ready"); the critical path is the
 * longest chain of commands each started only after the one before it was answered.
 */
export interface ExecSpan {
	label: string;
	/** performance.now() when the command was started. */
	startedMs: number;
	/** When its answer was in (undefined: still running, no answer waited for yet). */
	answeredMs?: number;
}

export interface ExecRecording {
	readonly spans: readonly ExecSpan[];
	stop(): void;
}

/** Longest chain of spans where each started at or after the previous one's answer. */
export function criticalPath(spans: readonly ExecSpan[]): number {
	const sorted = [...spans].sort((a, b) => a.startedMs - b.startedMs);
	const chain: number[] = [];
	for (let i = 0; i < sorted.length; i++) {
		let longest = 0;
		for (let j = 0; j < i; j++) {
			const answered = sorted[j].answeredMs;
			if (answered !== undefined && answered <= sorted[i].startedMs) longest = Math.max(longest, chain[j]);
		}
		chain.push(longest + 1);
	}
	return Math.max(0, ...chain);
}
