/**
 * A timer for any delay. Node's setTimeout holds at most 2^31-1 ms (~24.8 days) and fires after
 * 1 ms for anything larger, so a long delay is chained in slices.
 */
const MAX_SLICE_MS = 2 ** 31 - 1;

/** Calls `onTimeout` once, `ms` from now; returns the function that cancels it. */
export function startTimer(ms: number, onTimeout: () => void): () => void {
	const due = Date.now() + ms;
	let timer: NodeJS.Timeout | undefined;
	const arm = () => {
		const left = Math.max(due - Date.now(), 0);
		timer = setTimeout(left > MAX_SLICE_MS ? arm : onTimeout, Math.min(left, MAX_SLICE_MS));
	};
	arm();
	return () => clearTimeout(timer);
}
