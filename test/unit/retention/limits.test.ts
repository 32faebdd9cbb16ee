/**
 * Numbers too large to mean anything are refused with the field named, instead of overflowing the
 * calendar arithmetic (Date.UTC returns NaN past ±273 790 years): a window longer than
 * MAX_WINDOW_YEARS, a count above MAX_KEEP_COUNT.
 */
import {
	type BackupRef,
	MAX_KEEP_COUNT,
	MAX_WINDOW_YEARS,
	RetentionInputError,
	RetentionPolicyError,
	type RetentionPolicy,
	planRetention,
} from '../../../lib/retention';

const NOW = new Date('2026-12-01T12:00:00Z');
const OLD: BackupRef = { id: 'old', vm: 'web', time: new Date('1500-06-01T00:00:00Z'), kind: 'full' };
const NEW: BackupRef = { id: 'new', vm: 'web', time: new Date('2026-11-30T22:00:00Z'), kind: 'full' };

function refusal(policy: RetentionPolicy, timeZone = 'UTC'): unknown {
	try {
		planRetention([OLD, NEW], policy, NOW, timeZone);
	} catch (error) {
		return error;
	}
	return undefined;
}

describe('limits', () => {
	test('are 1000 years and a million', () => {
		expect([MAX_WINDOW_YEARS, MAX_KEEP_COUNT]).toEqual([1000, 1_000_000]);
	});
});

describe('a window longer than the limit is refused, naming the field', () => {
	test.each<[RetentionPolicy, string, string]>([
		[{ keepWithin: '999999999d' }, 'keepWithin', 'keepWithin "999999999d" is longer than 1000 years'],
		[{ keepWithin: '99999999y' }, 'keepWithin', 'keepWithin "99999999y" is longer than 1000 years'],
		[{ keepWithin: '1001y' }, 'keepWithin', 'keepWithin "1001y" is longer than 1000 years'],
		[{ keepWithin: '1000y1d' }, 'keepWithin', 'keepWithin "1000y1d" is longer than 1000 years'],
		[{ keepWithin: '12013m' }, 'keepWithin', 'keepWithin "12013m" is longer than 1000 years'],
		[{ keepWithin: '52200w' }, 'keepWithin', 'keepWithin "52200w" is longer than 1000 years'],
		[{ keepWithin: '8766000h' }, 'keepWithin', 'keepWithin "8766000h" is longer than 1000 years'],
		[{ retentionDays: 999_999_999 }, 'retentionDays', 'retentionDays 999999999 is longer than 1000 years'],
		[{ retentionDays: 365_243 }, 'retentionDays', 'retentionDays 365243 is longer than 1000 years'],
	])('%j', (policy, field, message) => {
		for (const timeZone of ['UTC', 'Europe/Berlin']) {
			const error = refusal(policy, timeZone);
			expect(error).toBeInstanceOf(RetentionPolicyError);
			expect(error).toMatchObject({ field, message: expect.stringContaining(message) });
		}
	});

	test('a number of days too long for a double (Infinity) is refused too', () => {
		expect(refusal({ keepWithin: `${'9'.repeat(400)}d` })).toMatchObject({ field: 'keepWithin', message: expect.stringContaining('is longer than 1000 years') });
	});

	test.each<RetentionPolicy>([{ keepWithin: '1000y' }, { keepWithin: '12000m' }, { keepWithin: '365242d' }, { keepWithin: '999y11m' }, { retentionDays: 365_242 }])(
		'%j is accepted and keeps a backup from the year 1500 in every zone',
		(policy) => {
			for (const timeZone of ['UTC', 'Europe/Berlin', 'America/New_York']) {
				const { decisions } = planRetention([OLD, NEW], policy, NOW, timeZone);
				expect(decisions.map((d) => [d.id, d.action])).toEqual([
					['old', 'keep'],
					['new', 'keep'],
				]);
			}
		},
	);
});

describe('a count above the limit is refused, naming the field', () => {
	test.each<[RetentionPolicy, string, string]>([
		[{ keepLast: 1e308 }, 'keepLast', 'keepLast must be a whole number from 0 to 1000000, got 1e+308'],
		[{ keepDaily: 1_000_001 }, 'keepDaily', 'keepDaily must be a whole number from 0 to 1000000, got 1000001'],
		[{ keepYearly: Number.MAX_SAFE_INTEGER + 1 }, 'keepYearly', 'keepYearly must be a whole number from 0 to 1000000, got 9007199254740992'],
	])('%j', (policy, field, message) => {
		expect(refusal(policy)).toEqual(new RetentionPolicyError(message));
		expect(refusal(policy)).toMatchObject({ field });
	});

	test('the largest count is accepted', () => {
		expect(planRetention([OLD, NEW], { keepLast: MAX_KEEP_COUNT }, NOW).decisions.map((d) => d.action)).toEqual(['keep', 'keep']);
	});
});

describe('calendar arithmetic stays exact at the edges', () => {
	test('a cutoff in the years 0-99 is not read as 1900-1999 (Date.UTC two-digit years)', () => {
		const now = new Date('0099-06-08T12:00:00Z');
		const backups: BackupRef[] = [
			{ id: 'inside', vm: 'web', time: new Date('0099-06-02T00:00:00Z'), kind: 'full' },
			{ id: 'outside', vm: 'web', time: new Date('0099-05-31T00:00:00Z'), kind: 'full' },
			{ id: 'newest', vm: 'web', time: new Date('0099-06-08T00:00:00Z'), kind: 'full' },
		];
		const { decisions } = planRetention(backups, { keepWithin: '7d' }, now);
		expect(decisions.map((d) => [d.id, d.action])).toEqual([
			['inside', 'keep'],
			['outside', 'prune'],
			['newest', 'keep'],
		]);
	});

	test('a window that reaches before the first representable date is an error, not NaN', () => {
		const earliest = new Date(-8.64e15);
		expect(() => planRetention([], { keepWithin: '1d' }, earliest)).toThrow(RetentionInputError);
		expect(() => planRetention([], { keepWithin: '1d' }, earliest)).toThrow('keep-within 1d reaches before the earliest date JavaScript can represent');
	});
});
