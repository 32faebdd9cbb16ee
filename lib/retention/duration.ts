import { RetentionInputError, RetentionPolicyError, describeValue } from './errors';
import type { ZoneClock } from './zone-clock';

const HOUR_MS = 3_600_000;
const DAY_MS = 86_400_000;
/** Dates exist from -8.64e15 ms to 8.64e15 ms (ECMAScript TimeClip); beyond that Date.UTC is NaN. */
const MAX_DATE_MS = 8.64e15;
/** 400 Gregorian years are exactly 146 097 days, so shifting a date by them keeps every calendar field. */
const GREGORIAN_CYCLE_MS = 146_097 * DAY_MS;
const DAYS_PER_YEAR = 365.2425;

/**
 * The longest keep-within / retention-days window. Longer ones are refused, not clamped: no backup
 * is that old, so such a number is a typo or a broken expression, and the calendar arithmetic
 * overflows past ±273 790 years (Date.UTC returns NaN, which would keep nothing).
 */
export const MAX_WINDOW_YEARS = 1000;
const DURATION_PATTERN = /^(?:\d+[ymwdh])+$/;
const DURATION_PART = /(\d+)([ymwdh])/g;

/** restic's duration units: y years, m months, w weeks, d days, h hours; weeks are folded into days. */
export interface CalendarDuration {
	years: number;
	months: number;
	days: number;
	hours: number;
}

export function isZeroDuration(duration: CalendarDuration): boolean {
	return duration.years + duration.months + duration.days + duration.hours === 0;
}

/** Parses '7d', '36h', '2w', '1m', '1y', '1d12h'; `field` names the policy field in errors. */
export function parseDuration(field: string, text: unknown): CalendarDuration {
	if (typeof text !== 'string' || !DURATION_PATTERN.test(text)) {
		throw new RetentionPolicyError(
			`${field} must be a duration like "7d", "36h", "2w", "1m", "1y" or "1d12h" (units y, m, w, d, h), got ${describeValue(text)}`,
			field,
			text,
		);
	}
	const duration: CalendarDuration = { years: 0, months: 0, days: 0, hours: 0 };
	for (const [, amountText, unit] of text.matchAll(DURATION_PART)) {
		const amount = Number(amountText);
		if (unit === 'y') duration.years += amount;
		else if (unit === 'm') duration.months += amount;
		else if (unit === 'w') duration.days += amount * 7;
		else if (unit === 'd') duration.days += amount;
		else duration.hours += amount;
	}
	return duration;
}

/** Refuses a window longer than MAX_WINDOW_YEARS (months and days counted at their Gregorian average). */
export function checkWindowLength(field: string, value: unknown, duration: CalendarDuration): void {
	const years = duration.years + duration.months / 12 + (duration.days + duration.hours / 24) / DAYS_PER_YEAR;
	if (!(years <= MAX_WINDOW_YEARS)) {
		throw new RetentionPolicyError(`${field} ${describeValue(value)} is longer than ${MAX_WINDOW_YEARS} years, the longest window accepted`, field, value);
	}
}

/** Date.UTC without its legacy rule that years 0-99 mean 1900-1999. */
function utc(year: number, monthIndex: number, day: number, hours = 0, minutes = 0, seconds = 0, ms = 0): number {
	if (year >= 0 && year < 100) return Date.UTC(year + 400, monthIndex, day, hours, minutes, seconds, ms) - GREGORIAN_CYCLE_MS;
	return Date.UTC(year, monthIndex, day, hours, minutes, seconds, ms);
}

function daysInMonth(year: number, monthIndex: number): number {
	return new Date(utc(year, monthIndex + 1, 0)).getUTCDate();
}

/**
 * now minus the duration, like restic's `AddDate(-y, -m, -d).Add(-h)`: years, months and days are
 * calendar steps on the zone's wall clock (so '7d' lands on the same local time across a DST
 * change), hours are elapsed time. Unlike Go, a month step clamps to the month's last day
 * (31 March - 1m = 28/29 February, not 3 March): the earlier cutoff keeps more, never less.
 */
export function cutoffBefore(nowMs: number, duration: CalendarDuration, clock: ZoneClock, rule: string): number {
	const wall = new Date(clock.wallTime(nowMs));
	const totalMonths = wall.getUTCFullYear() * 12 + wall.getUTCMonth() - duration.years * 12 - duration.months;
	const year = Math.floor(totalMonths / 12);
	const monthIndex = totalMonths - year * 12;
	const day = Math.min(wall.getUTCDate(), daysInMonth(year, monthIndex));
	const cutoffWall = utc(
		year,
		monthIndex,
		day - duration.days,
		wall.getUTCHours(),
		wall.getUTCMinutes(),
		wall.getUTCSeconds(),
		wall.getUTCMilliseconds(),
	);
	const cutoffMs = cutoffWall - duration.hours * HOUR_MS;
	// instantAt looks a day either side of the wall time for the zone's offsets.
	if (!(Math.abs(cutoffMs) <= MAX_DATE_MS - 2 * DAY_MS)) {
		throw new RetentionInputError(`${rule} reaches before the earliest date JavaScript can represent (now is ${new Date(nowMs).toISOString()})`);
	}
	return clock.instantAt(cutoffWall) - duration.hours * HOUR_MS;
}
