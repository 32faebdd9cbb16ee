import { RetentionPolicyError, describeValue } from './errors';
import type { ZoneClock } from './zone-clock';

const HOUR_MS = 3_600_000;
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

function daysInMonth(year: number, monthIndex: number): number {
	return new Date(Date.UTC(year, monthIndex + 1, 0)).getUTCDate();
}

/**
 * now minus the duration, like restic's `AddDate(-y, -m, -d).Add(-h)`: years, months and days are
 * calendar steps on the zone's wall clock (so '7d' lands on the same local time across a DST
 * change), hours are elapsed time. Unlike Go, a month step clamps to the month's last day
 * (31 March - 1m = 28/29 February, not 3 March): the earlier cutoff keeps more, never less.
 */
export function cutoffBefore(nowMs: number, duration: CalendarDuration, clock: ZoneClock): number {
	const wall = new Date(clock.wallTime(nowMs));
	const totalMonths = wall.getUTCFullYear() * 12 + wall.getUTCMonth() - duration.years * 12 - duration.months;
	const year = Math.floor(totalMonths / 12);
	const monthIndex = totalMonths - year * 12;
	const day = Math.min(wall.getUTCDate(), daysInMonth(year, monthIndex));
	const cutoffWall = Date.UTC(
		year,
		monthIndex,
		day - duration.days,
		wall.getUTCHours(),
		wall.getUTCMinutes(),
		wall.getUTCSeconds(),
		wall.getUTCMilliseconds(),
	);
	return clock.instantAt(cutoffWall) - duration.hours * HOUR_MS;
}
