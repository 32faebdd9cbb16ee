import type { ZoneClock } from './zone-clock';

const HOUR_MS = 3_600_000;
const DAY_MS = 86_400_000;

export type CalendarUnit = 'hour' | 'day' | 'week' | 'month' | 'year';

/**
 * The calendar buckets one backup falls into, as integers (cheap to hash in a Set):
 * hour YYYYMMDDHH, day YYYYMMDD, week GGGGVV (ISO week-numbering year and week), month YYYYMM,
 * year YYYY. They are computed once per backup and shared by every rule.
 */
export type CalendarBuckets = Readonly<Record<CalendarUnit, number>>;

/**
 * Buckets use the local wall clock like PBS (strftime_local "%Y/%m/%d/%H", "%G/%V", ...) and restic
 * (Go time in the local location). Consequence on a fall-back night: the repeated hour (02:xx in
 * Europe/Berlin, 01:xx in America/New_York) is one hourly bucket although it spans two real hours.
 *
 * All buckets depend only on the local hour, so backups in the same local hour share one object;
 * with many VMs on the same schedule that turns 100 000 calendar computations into a few thousand.
 */
export function createBucketer(clock: ZoneClock): (epochMs: number) => CalendarBuckets {
	const byLocalHour = new Map<number, CalendarBuckets>();
	return (epochMs) => {
		const localHour = Math.floor(clock.wallTime(epochMs) / HOUR_MS);
		let buckets = byLocalHour.get(localHour);
		if (buckets === undefined) {
			buckets = bucketsOfLocalHour(localHour);
			byLocalHour.set(localHour, buckets);
		}
		return buckets;
	};
}

function bucketsOfLocalHour(localHour: number): CalendarBuckets {
	const fields = new Date(localHour * HOUR_MS);
	const year = fields.getUTCFullYear();
	const month = fields.getUTCMonth() + 1;
	const day = year * 10_000 + month * 100 + fields.getUTCDate();
	return {
		hour: day * 100 + fields.getUTCHours(),
		day,
		week: isoWeekKey(Math.floor(localHour / 24)),
		month: year * 100 + month,
		year,
	};
}

/**
 * ISO 8601: weeks start on Monday and belong to the year that holds their Thursday, so
 * 2027-01-01 (a Friday) is in 2026-W53.
 */
function isoWeekKey(daysSinceEpoch: number): number {
	// 1970-01-01 was a Thursday (ISO weekday 4).
	const weekday = ((((daysSinceEpoch + 3) % 7) + 7) % 7) + 1;
	const thursday = daysSinceEpoch + 4 - weekday;
	const isoYear = new Date(thursday * DAY_MS).getUTCFullYear();
	const week = Math.floor((thursday - Date.UTC(isoYear, 0, 1) / DAY_MS) / 7) + 1;
	return isoYear * 100 + week;
}

function pad(value: number, width = 2): string {
	return String(value).padStart(width, '0');
}

/** Human-readable bucket names for decision reasons: 2026-11-27 14:00, 2026-11-27, 2026-W48, 2026-11, 2026. */
export function bucketLabel(unit: CalendarUnit, key: number): string {
	switch (unit) {
		case 'hour':
			return `${bucketLabel('day', Math.floor(key / 100))} ${pad(key % 100)}:00`;
		case 'day':
			return `${bucketLabel('month', Math.floor(key / 100))}-${pad(key % 100)}`;
		case 'week':
			return `${pad(Math.floor(key / 100), 4)}-W${pad(key % 100)}`;
		case 'month':
			return `${pad(Math.floor(key / 100), 4)}-${pad(key % 100)}`;
		case 'year':
			return pad(key, 4);
	}
}
