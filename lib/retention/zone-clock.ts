import { RetentionInputError, describeValue } from './errors';

const SECOND_MS = 1000;
const DAY_MS = 86_400_000;

/**
 * A zone's UTC offset through one UTC day: `before` until `changeMs`, `after` from then on.
 * Offset changes in the tz database are weeks or months apart, so a day that starts and ends with
 * the same offset is taken to keep it throughout (changeMs = Infinity); a day whose ends differ
 * holds exactly one change, found to the second by bisection. That costs a few dozen formatToParts
 * calls per zone and year instead of one per backup.
 */
interface DayOffsets {
	before: number;
	changeMs: number;
	after: number;
}

/**
 * Converts between instants and the wall clock of one IANA time zone. "Wall time" is encoded as the
 * epoch milliseconds at which a UTC clock would show the same fields, so Date's UTC getters and
 * Date.UTC do calendar arithmetic on it without any date library.
 */
export interface ZoneClock {
	wallTime(epochMs: number): number;
	/** The instant the zone's clocks show `wallMs`; for a skipped or repeated hour, the earliest fit. */
	instantAt(wallMs: number): number;
}

/** formatToParts costs microseconds, so one formatter per zone is shared by every plan. */
const formatters = new Map<string, Intl.DateTimeFormat | null>();

function formatterFor(timeZone: string): Intl.DateTimeFormat | null {
	let formatter = formatters.get(timeZone);
	if (formatter === undefined) {
		try {
			formatter = new Intl.DateTimeFormat('en-US', {
				timeZone,
				hourCycle: 'h23',
				year: 'numeric',
				month: 'numeric',
				day: 'numeric',
				hour: 'numeric',
				minute: 'numeric',
				second: 'numeric',
			});
		} catch {
			throw new RetentionInputError(
				`Unknown time zone ${JSON.stringify(timeZone)}: expected an IANA name such as "Europe/Berlin" or "UTC"`,
			);
		}
		// UTC needs no formatter at all: the Date UTC getters already are its wall clock.
		if (formatter.resolvedOptions().timeZone === 'UTC') formatter = null;
		formatters.set(timeZone, formatter);
	}
	return formatter;
}

function exactOffset(formatter: Intl.DateTimeFormat, epochMs: number): number {
	const wholeSecond = Math.floor(epochMs / SECOND_MS) * SECOND_MS;
	const fields: Record<string, number> = {};
	for (const part of formatter.formatToParts(wholeSecond)) {
		if (part.type !== 'literal') fields[part.type] = Number(part.value);
	}
	const wall = Date.UTC(fields.year, fields.month - 1, fields.day, fields.hour, fields.minute, fields.second);
	return wall - wholeSecond;
}

/**
 * A clock for one planning run. Its offset cache lives only as long as the plan, so a long-running
 * n8n process does not accumulate one entry per day it has ever seen.
 */
export function createZoneClock(timeZone: string): ZoneClock {
	if (typeof timeZone !== 'string' || timeZone.trim() === '') {
		throw new RetentionInputError(`timeZone must be an IANA time zone name, got ${describeValue(timeZone)}`);
	}
	const formatter = formatterFor(timeZone);
	const midnightOffsets = new Map<number, number>();
	const days = new Map<number, DayOffsets>();

	function offsetAtMidnight(fmt: Intl.DateTimeFormat, day: number): number {
		let offset = midnightOffsets.get(day);
		if (offset === undefined) {
			offset = exactOffset(fmt, day * DAY_MS);
			midnightOffsets.set(day, offset);
		}
		return offset;
	}

	function offsetsOfDay(fmt: Intl.DateTimeFormat, day: number): DayOffsets {
		const before = offsetAtMidnight(fmt, day);
		const after = offsetAtMidnight(fmt, day + 1);
		if (before === after) return { before, changeMs: Number.POSITIVE_INFINITY, after };
		// Invariant: the offset is `before` at second `low` and `after` at second `high`.
		let low = (day * DAY_MS) / SECOND_MS;
		let high = low + DAY_MS / SECOND_MS;
		while (high - low > 1) {
			const middle = Math.floor((low + high) / 2);
			if (exactOffset(fmt, middle * SECOND_MS) === before) low = middle;
			else high = middle;
		}
		return { before, changeMs: high * SECOND_MS, after };
	}

	function offsetAt(epochMs: number): number {
		if (formatter === null) return 0;
		const day = Math.floor(epochMs / DAY_MS);
		let offsets = days.get(day);
		if (offsets === undefined) {
			offsets = offsetsOfDay(formatter, day);
			days.set(day, offsets);
		}
		return epochMs < offsets.changeMs ? offsets.before : offsets.after;
	}

	function wallTime(epochMs: number): number {
		return epochMs + offsetAt(epochMs);
	}

	function instantAt(wallMs: number): number {
		// The offsets a day either side bracket any transition near wallMs; each gives one candidate.
		const candidates = [wallMs - offsetAt(wallMs - DAY_MS), wallMs - offsetAt(wallMs + DAY_MS)];
		const exact = candidates.filter((instant) => wallTime(instant) === wallMs);
		// Inside a spring-forward gap no instant fits; the earlier candidate keeps more backups.
		return Math.min(...(exact.length > 0 ? exact : candidates));
	}

	return { wallTime, instantAt };
}
