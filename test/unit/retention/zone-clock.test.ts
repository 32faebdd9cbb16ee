import { createZoneClock } from '../../../lib/retention/zone-clock';

const MINUTE_MS = 60_000;

/** The zone's wall clock straight from Intl, uncached, encoded like ZoneClock.wallTime. */
function referenceClock(timeZone: string): (epochMs: number) => number {
	const format = new Intl.DateTimeFormat('en-US', {
		timeZone,
		hourCycle: 'h23',
		year: 'numeric',
		month: 'numeric',
		day: 'numeric',
		hour: 'numeric',
		minute: 'numeric',
		second: 'numeric',
	});
	return (epochMs) => {
		const parts = format.formatToParts(epochMs);
		const field = (type: string) => Number(parts.find((part) => part.type === type)?.value);
		const wholeSeconds = Date.UTC(field('year'), field('month') - 1, field('day'), field('hour'), field('minute'), field('second'));
		return wholeSeconds + (epochMs % 1000);
	};
}

describe('the cached zone clock agrees with Intl everywhere', () => {
	test.each(['Europe/Berlin', 'America/New_York', 'Australia/Lord_Howe', 'Asia/Kathmandu', 'America/St_Johns'])(
		'%s: every 47 minutes through 2026, half-hour DST and odd offsets included',
		(timeZone) => {
			const clock = createZoneClock(timeZone);
			const reference = referenceClock(timeZone);
			const mismatches: string[] = [];
			for (let t = Date.UTC(2026, 0, 1); t < Date.UTC(2027, 0, 1); t += 47 * MINUTE_MS + 1234) {
				if (clock.wallTime(t) !== reference(t)) mismatches.push(new Date(t).toISOString());
			}
			expect(mismatches).toEqual([]);
		},
	);

	test.each([
		['Europe/Berlin', '2026-03-29T01:00:00Z', '2026-03-29T01:59:59.999Z', '2026-03-29T03:00:00.000Z'],
		['Europe/Berlin', '2026-10-25T01:00:00Z', '2026-10-25T02:59:59.999Z', '2026-10-25T02:00:00.000Z'],
		['America/New_York', '2026-11-01T06:00:00Z', '2026-11-01T01:59:59.999Z', '2026-11-01T01:00:00.000Z'],
	])('%s switches exactly at %s', (timeZone, change, wallBefore, wallAt) => {
		const clock = createZoneClock(timeZone);
		const changeMs = Date.parse(change);

		expect(new Date(clock.wallTime(changeMs - 1)).toISOString()).toBe(wallBefore);
		expect(new Date(clock.wallTime(changeMs)).toISOString()).toBe(wallAt);
	});

	test('UTC and its aliases have no offset', () => {
		for (const zone of ['UTC', 'Etc/UTC']) {
			expect(createZoneClock(zone).wallTime(Date.UTC(2026, 6, 1, 12))).toBe(Date.UTC(2026, 6, 1, 12));
		}
	});
});

describe('instantAt maps a wall time back to an instant', () => {
	const berlin = createZoneClock('Europe/Berlin');

	test('an ordinary wall time maps to its one instant', () => {
		expect(new Date(berlin.instantAt(Date.UTC(2026, 6, 1, 14))).toISOString()).toBe('2026-07-01T12:00:00.000Z');
	});

	test('a repeated wall time maps to its first occurrence', () => {
		expect(new Date(berlin.instantAt(Date.UTC(2026, 9, 25, 2, 30))).toISOString()).toBe('2026-10-25T00:30:00.000Z');
	});

	test('a skipped wall time maps to the earlier of the two readings', () => {
		expect(new Date(berlin.instantAt(Date.UTC(2026, 2, 29, 2, 30))).toISOString()).toBe('2026-03-29T00:30:00.000Z');
	});
});
