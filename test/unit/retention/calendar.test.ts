import { type BackupRef, type RetentionPolicy, planRetention } from '../../../lib/retention';

function at(id: string, iso: string): BackupRef {
	return { id, vm: 'web', time: new Date(iso), kind: 'full' };
}

function reasonsById(backups: BackupRef[], policy: RetentionPolicy, now: string, timeZone?: string) {
	const plan = planRetention(backups, policy, new Date(now), timeZone);
	return Object.fromEntries(plan.decisions.map((d) => [d.id, d.action === 'keep' ? d.reasons : []]));
}

function keptIds(backups: BackupRef[], policy: RetentionPolicy, now: string, timeZone?: string): string[] {
	return planRetention(backups, policy, new Date(now), timeZone)
		.decisions.filter((d) => d.action === 'keep')
		.map((d) => d.id);
}

describe('Europe/Berlin fall-back night (2026-10-25, 03:00 CEST -> 02:00 CET)', () => {
	const backups = [
		at('03:30 CET', '2026-10-25T02:30:00Z'),
		at('second 02:30 CET', '2026-10-25T01:30:00Z'),
		at('first 02:30 CEST', '2026-10-25T00:30:00Z'),
		at('01:30 CEST', '2026-10-24T23:30:00Z'),
		at('00:30 CEST', '2026-10-24T22:30:00Z'),
		at('Oct 24 23:30 CEST', '2026-10-24T21:30:00Z'),
	];
	const now = '2026-10-26T12:00:00Z';

	test('keep-hourly treats the repeated 02:xx hour as one local hour, keeping its later backup', () => {
		const reasons = reasonsById(backups, { keepHourly: 10 }, now, 'Europe/Berlin');

		expect(reasons['second 02:30 CET']).toEqual(['keep-hourly (2026-10-25 02:00)']);
		expect(reasons['first 02:30 CEST']).toEqual([]);
		expect(reasons['00:30 CEST']).toEqual(['keep-hourly (2026-10-25 00:00)']);
		expect(reasons['Oct 24 23:30 CEST']).toEqual(['keep-hourly (2026-10-24 23:00)']);
	});

	test('in UTC the same instants fall into six different hours', () => {
		expect(keptIds(backups, { keepHourly: 10 }, now, 'UTC')).toHaveLength(6);
	});

	test('keep-daily counts the 25-hour local day as one day', () => {
		expect(keptIds(backups, { keepDaily: 2 }, now, 'Europe/Berlin')).toEqual(['03:30 CET', 'Oct 24 23:30 CEST']);
		expect(keptIds(backups, { keepDaily: 2 }, now, 'UTC')).toEqual(['03:30 CET', '01:30 CEST']);
	});
});

describe('Europe/Berlin spring-forward night (2026-03-29, 02:00 CET -> 03:00 CEST)', () => {
	const backups = [
		at('03:30 CEST', '2026-03-29T01:30:00Z'),
		at('01:30 CET', '2026-03-29T00:30:00Z'),
		at('00:30 CET', '2026-03-28T23:30:00Z'),
		at('Mar 28 23:30 CET', '2026-03-28T22:30:00Z'),
	];
	const now = '2026-03-30T12:00:00Z';

	test('keep-hourly sees 01:xx and 03:xx as separate hours with no 02:xx between them', () => {
		expect(reasonsById(backups, { keepHourly: 10 }, now, 'Europe/Berlin')).toEqual({
			'03:30 CEST': ['keep-hourly (2026-03-29 03:00)', 'newest valid backup'],
			'01:30 CET': ['keep-hourly (2026-03-29 01:00)'],
			'00:30 CET': ['keep-hourly (2026-03-29 00:00)'],
			'Mar 28 23:30 CET': ['keep-hourly (2026-03-28 23:00)'],
		});
	});

	test('keep-daily uses the local calendar day, not the UTC one', () => {
		expect(keptIds(backups, { keepDaily: 2 }, now, 'Europe/Berlin')).toEqual(['03:30 CEST', 'Mar 28 23:30 CET']);
		expect(keptIds(backups, { keepDaily: 2 }, now, 'UTC')).toEqual(['03:30 CEST', '00:30 CET']);
	});
});

describe('America/New_York DST changes', () => {
	const fallBack = [
		at('Mon 00:30 EST', '2026-11-02T05:30:00Z'),
		at('Sun 23:30 EST', '2026-11-02T04:30:00Z'),
		at('second 01:30 EST', '2026-11-01T06:30:00Z'),
		at('first 01:30 EDT', '2026-11-01T05:30:00Z'),
		at('Sun 00:30 EDT', '2026-11-01T04:30:00Z'),
		at('Sat 23:30 EDT', '2026-11-01T03:30:00Z'),
	];
	const now = '2026-11-03T12:00:00Z';

	test('on fall-back (2026-11-01) the repeated 01:xx hour is one hourly bucket', () => {
		const reasons = reasonsById(fallBack, { keepHourly: 10 }, now, 'America/New_York');

		expect(reasons['second 01:30 EST']).toEqual(['keep-hourly (2026-11-01 01:00)']);
		expect(reasons['first 01:30 EDT']).toEqual([]);
		expect(keptIds(fallBack, { keepHourly: 10 }, now, 'America/New_York')).toHaveLength(5);
	});

	test('keep-daily and keep-weekly follow the local Sunday/Monday boundary', () => {
		expect(keptIds(fallBack, { keepDaily: 10 }, now, 'America/New_York')).toEqual([
			'Mon 00:30 EST',
			'Sun 23:30 EST',
			'Sat 23:30 EDT',
		]);
		expect(reasonsById(fallBack, { keepWeekly: 10 }, now, 'America/New_York')).toMatchObject({
			'Mon 00:30 EST': ['keep-weekly (2026-W45)', 'newest valid backup'],
			'Sun 23:30 EST': ['keep-weekly (2026-W44)'],
		});
		expect(keptIds(fallBack, { keepWeekly: 10 }, now, 'UTC')).toEqual(['Mon 00:30 EST', 'second 01:30 EST']);
	});

	test('on spring-forward (2026-03-08) 01:30 EST and 03:30 EDT are consecutive local hours', () => {
		const backups = [at('03:30 EDT', '2026-03-08T07:30:00Z'), at('01:30 EST', '2026-03-08T06:30:00Z')];

		expect(reasonsById(backups, { keepHourly: 2 }, '2026-03-09T00:00:00Z', 'America/New_York')).toEqual({
			'03:30 EDT': ['keep-hourly (2026-03-08 03:00)', 'newest valid backup'],
			'01:30 EST': ['keep-hourly (2026-03-08 01:00)'],
		});
	});
});

describe('ISO weeks and years at the year boundary', () => {
	const backups = [
		at('2027-01-04 Mon', '2027-01-04T12:00:00Z'),
		at('2027-01-03 Sun', '2027-01-03T12:00:00Z'),
		at('2027-01-01 Fri', '2027-01-01T12:00:00Z'),
		at('2026-12-31 Thu', '2026-12-31T12:00:00Z'),
		at('2026-12-28 Mon', '2026-12-28T12:00:00Z'),
		at('2026-12-27 Sun', '2026-12-27T12:00:00Z'),
	];
	const now = '2027-01-05T00:00:00Z';

	test('2026-12-28 to 2027-01-03 is one ISO week, 2026-W53', () => {
		expect(reasonsById(backups, { keepWeekly: 10 }, now)).toEqual({
			'2027-01-04 Mon': ['keep-weekly (2027-W01)', 'newest valid backup'],
			'2027-01-03 Sun': ['keep-weekly (2026-W53)'],
			'2027-01-01 Fri': [],
			'2026-12-31 Thu': [],
			'2026-12-28 Mon': [],
			'2026-12-27 Sun': ['keep-weekly (2026-W52)'],
		});
	});

	test('keep-yearly and keep-monthly use calendar years, not ISO week years', () => {
		expect(reasonsById(backups, { keepYearly: 10 }, now)['2026-12-31 Thu']).toEqual(['keep-yearly (2026)']);
		expect(reasonsById(backups, { keepMonthly: 10 }, now)['2026-12-31 Thu']).toEqual(['keep-monthly (2026-12)']);
	});

	test('2021-01-03 belongs to 2020-W53', () => {
		const old = [at('2021-01-04', '2021-01-04T12:00:00Z'), at('2021-01-03', '2021-01-03T12:00:00Z')];

		expect(reasonsById(old, { keepWeekly: 2 }, now)['2021-01-03']).toEqual(['keep-weekly (2020-W53)']);
	});

	test('New Year comes an hour earlier in Europe/Berlin than in UTC', () => {
		const eve = [at('late', '2026-12-31T23:30:00Z'), at('evening', '2026-12-31T20:00:00Z')];

		expect(reasonsById(eve, { keepYearly: 2 }, now, 'Europe/Berlin').late).toEqual([
			'keep-yearly (2027)',
			'newest valid backup',
		]);
		expect(keptIds(eve, { keepYearly: 2 }, now, 'UTC')).toEqual(['late']);
	});
});

describe('identical timestamps', () => {
	const time = '2026-11-30T02:00:00Z';
	const now = '2026-12-01T00:00:00Z';

	test.each([
		['a, b, c', ['a', 'b', 'c']],
		['c, a, b', ['c', 'a', 'b']],
		['b, c, a', ['b', 'c', 'a']],
	])('input order %s: the greatest id counts as the newest', (_order, ids) => {
		const backups = ids.map((id) => at(id, time));

		expect(keptIds(backups, { keepLast: 1 }, now)).toEqual(['c']);
		expect(keptIds(backups, { keepDaily: 1 }, now)).toEqual(['c']);
		expect(new Set(keptIds(backups, { keepLast: 2 }, now))).toEqual(new Set(['c', 'b']));
	});

	test('with the tie-winner invalid, the next id is the newest valid backup', () => {
		const backups = [at('a', time), at('b', time), { ...at('c', time), valid: false }];

		expect(reasonsById(backups, { keepLast: 1 }, now)).toEqual({
			a: [],
			b: ['newest valid backup'],
			c: ['keep-last 1/1'],
		});
	});
});

describe('keep-within', () => {
	test('includes future-dated backups (clock skew on the host)', () => {
		const backups = [at('future', '2026-12-05T00:00:00Z'), at('recent', '2026-11-30T20:00:00Z'), at('old', '2026-11-01T00:00:00Z')];

		expect(reasonsById(backups, { keepWithin: '1d' }, '2026-12-01T12:00:00Z')).toEqual({
			future: ['keep-within 1d', 'newest valid backup'],
			recent: ['keep-within 1d'],
			old: [],
		});
	});

	test('1d means one calendar day in the zone: 25 hours across the fall-back change', () => {
		const backups = [at('today', '2026-10-25T11:00:00Z'), at('yesterday 13:30 CEST', '2026-10-24T11:30:00Z')];
		const now = '2026-10-25T12:00:00Z';

		expect(keptIds(backups, { keepWithin: '1d' }, now, 'Europe/Berlin')).toEqual(['today', 'yesterday 13:30 CEST']);
		expect(keptIds(backups, { keepWithin: '24h' }, now, 'Europe/Berlin')).toEqual(['today']);
		expect(keptIds(backups, { keepWithin: '1d' }, now, 'UTC')).toEqual(['today']);
	});

	test('1d is 23 hours across the spring-forward change', () => {
		const backups = [at('today', '2026-03-29T11:00:00Z'), at('yesterday 13:30 CET', '2026-03-28T12:30:00Z')];
		const now = '2026-03-29T12:00:00Z';

		expect(keptIds(backups, { keepWithin: '1d' }, now, 'Europe/Berlin')).toEqual(['today']);
		expect(keptIds(backups, { keepWithin: '24h' }, now, 'Europe/Berlin')).toEqual(['today', 'yesterday 13:30 CET']);
	});

	test('a cutoff inside the skipped hour resolves to the earlier instant, keeping more', () => {
		const backups = [at('now', '2026-03-30T00:00:00Z'), at('01:45 CET', '2026-03-29T00:45:00Z'), at('01:15 CET', '2026-03-29T00:15:00Z')];

		expect(keptIds(backups, { keepWithin: '1d' }, '2026-03-30T00:30:00Z', 'Europe/Berlin')).toEqual(['now', '01:45 CET']);
	});

	test('a cutoff inside the repeated hour resolves to its first occurrence, keeping more', () => {
		const backups = [at('now', '2026-10-26T01:00:00Z'), at('02:45 CEST', '2026-10-25T00:45:00Z'), at('02:15 CEST', '2026-10-25T00:15:00Z')];

		expect(keptIds(backups, { keepWithin: '1d' }, '2026-10-26T01:30:00Z', 'Europe/Berlin')).toEqual(['now', '02:45 CEST']);
	});

	test('1m from 31 March clamps to the last day of February', () => {
		const backups = [at('now', '2026-03-31T00:00:00Z'), at('after', '2026-02-28T13:00:00Z'), at('before', '2026-02-28T11:00:00Z')];

		expect(keptIds(backups, { keepWithin: '1m' }, '2026-03-31T12:00:00Z')).toEqual(['now', 'after']);
	});
});

describe('PBS semantics details', () => {
	test('a backup superseded by keep-weekly is not reconsidered by keep-monthly', () => {
		// 2026-01-26 to 2026-02-01 is ISO week 2026-W05; 2026-01-25 is in W04.
		const backups = [
			at('Feb 1', '2026-02-01T12:00:00Z'),
			at('Jan 31', '2026-01-31T12:00:00Z'),
			at('Jan 27', '2026-01-27T12:00:00Z'),
			at('Jan 25', '2026-01-25T12:00:00Z'),
		];

		expect(reasonsById(backups, { keepWeekly: 1, keepMonthly: 2 }, '2026-02-02T00:00:00Z')).toEqual({
			'Feb 1': ['keep-weekly (2026-W05)', 'newest valid backup'],
			'Jan 31': [],
			'Jan 27': [],
			'Jan 25': ['keep-monthly (2026-01)'],
		});
	});

	test('backups in a bucket an earlier rule covered stay unkept even though later rules have counts left', () => {
		const backups = [at('22:00', '2026-11-30T22:00:00Z'), at('08:00', '2026-11-30T08:00:00Z'), at('yesterday', '2026-11-29T08:00:00Z')];

		expect(keptIds(backups, { keepLast: 1, keepDaily: 5 }, '2026-12-01T00:00:00Z')).toEqual(['22:00', 'yesterday']);
	});
});
