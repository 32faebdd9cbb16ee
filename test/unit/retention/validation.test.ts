import {
	type BackupRef,
	EMPTY_POLICY_MESSAGE,
	RetentionInputError,
	RetentionPolicyError,
	type RetentionPolicy,
	planRetention,
} from '../../../lib/retention';

const NOW = new Date('2026-12-01T12:00:00Z');
const GOOD: BackupRef = { id: 'b1', vm: 'web', time: new Date('2026-11-30T22:00:00Z'), kind: 'full' };

function plan(policy: RetentionPolicy, backups: BackupRef[] = [GOOD]) {
	return () => planRetention(backups, policy, NOW);
}

describe('an empty policy is refused instead of pruning everything', () => {
	test.each<[string, RetentionPolicy]>([
		['no rule at all', {}],
		['every count 0', { keepLast: 0, keepHourly: 0, keepDaily: 0, keepWeekly: 0, keepMonthly: 0, keepYearly: 0 }],
		['retention days 0', { retentionDays: 0 }],
		['a zero keep-within duration', { keepWithin: '0d' }],
		['a blank keep-within (an unfilled form field)', { keepWithin: '  ' }],
		['only undefined fields', { keepDaily: undefined, keepWithin: undefined }],
	])('%s throws RetentionPolicyError', (_label, policy) => {
		expect(plan(policy)).toThrow(RetentionPolicyError);
		expect(plan(policy)).toThrow(EMPTY_POLICY_MESSAGE);
	});

	test('the message says what to set and why', () => {
		expect(EMPTY_POLICY_MESSAGE).toBe(
			'Retention policy is empty: set at least one keep-* rule or retention days; refusing to prune everything',
		);
	});

	test('an empty policy is refused even when there are no backups', () => {
		expect(plan({}, [])).toThrow(RetentionPolicyError);
	});
});

describe('malformed policy fields are rejected with the field and value named', () => {
	test.each<[RetentionPolicy, string]>([
		[{ keepLast: -1 }, 'keepLast must be a non-negative whole number, got -1'],
		[{ keepDaily: 1.5 }, 'keepDaily must be a non-negative whole number, got 1.5'],
		[{ keepWeekly: Number.NaN }, 'keepWeekly must be a non-negative whole number, got NaN'],
		[{ keepMonthly: Number.POSITIVE_INFINITY }, 'keepMonthly must be a non-negative whole number, got Infinity'],
		[{ keepYearly: '3' as unknown as number }, 'keepYearly must be a non-negative whole number, got "3"'],
		[{ keepHourly: null as unknown as number }, 'keepHourly must be a non-negative whole number, got null'],
		[{ retentionDays: -7 }, 'retentionDays must be a non-negative whole number, got -7'],
		[{ keepDaily: 7, keepLast: -2 }, 'keepLast must be a non-negative whole number, got -2'],
	])('%j is rejected', (policy, message) => {
		expect(plan(policy)).toThrow(new RetentionPolicyError(message));
	});

	test.each(['7', 'd7', '7x', '1.5d', '7D', '7 d', '-1d', '1d-2h', 'week', 7 as unknown as string])(
		'keepWithin %j is not a duration',
		(keepWithin) => {
			expect(plan({ keepWithin })).toThrow(RetentionPolicyError);
			expect(plan({ keepWithin })).toThrow(`keepWithin must be a duration like "7d"`);
			expect(plan({ keepWithin })).toThrow(`got ${typeof keepWithin === 'string' ? JSON.stringify(keepWithin) : keepWithin}`);
		},
	);

	test('the error carries the offending field and value for the caller', () => {
		try {
			planRetention([GOOD], { keepDaily: -3 }, NOW);
			throw new Error('expected a RetentionPolicyError');
		} catch (error) {
			expect(error).toBeInstanceOf(RetentionPolicyError);
			expect(error).toMatchObject({ name: 'RetentionPolicyError', field: 'keepDaily', value: -3 });
		}
	});

	test('a misspelt rule is rejected rather than silently ignored', () => {
		const policy = { keepDaily: 7, keepDayly: 30 } as RetentionPolicy;

		expect(plan(policy)).toThrow(/Unknown retention policy field "keepDayly"; known fields: keepLast, /);
	});
});

describe('malformed input is rejected before anything is decided', () => {
	const at = new Date('2026-11-01T00:00:00Z');

	test.each<[string, unknown[], string]>([
		['an invalid Date', [{ ...GOOD, time: new Date('not a date') }], 'backups[0].time (backup b1) must be a valid Date, got Invalid Date'],
		['a time string instead of a Date', [{ ...GOOD, time: '2026-11-30' }], 'backups[0].time (backup b1) must be a valid Date, got "2026-11-30"'],
		['an empty id', [{ ...GOOD, id: '' }], 'backups[0].id must be a non-empty string, got ""'],
		['a missing vm', [{ ...GOOD, vm: undefined }], 'backups[0].vm must be a non-empty string, got undefined'],
		['an unknown kind', [{ ...GOOD, kind: 'differential' }], 'backups[0].kind (backup b1) must be one of full, incremental, copy, got "differential"'],
		['a non-string parent', [{ ...GOOD, parent: 42 }], 'backups[0].parent (backup b1) must be a backup id, got 42'],
		['a null entry', [GOOD, null], 'backups[1] must be an object'],
		['a duplicate id', [GOOD, { ...GOOD, time: at }], 'Duplicate backup id "b1" at backups[0] and backups[1]'],
	])('%s', (_label, backups, message) => {
		const run = () => planRetention(backups as BackupRef[], { keepDaily: 7 }, NOW);

		expect(run).toThrow(RetentionInputError);
		expect(run).toThrow(message);
	});

	test('an invalid now is rejected', () => {
		expect(() => planRetention([GOOD], { keepDaily: 7 }, new Date(Number.NaN))).toThrow(
			new RetentionInputError('now must be a valid Date, got Invalid Date'),
		);
	});

	test('an unknown time zone is rejected with a hint', () => {
		expect(() => planRetention([GOOD], { keepDaily: 7 }, NOW, 'Mars/Olympus_Mons')).toThrow(
			new RetentionInputError(
				'Unknown time zone "Mars/Olympus_Mons": expected an IANA name such as "Europe/Berlin" or "UTC"',
			),
		);
	});

	test('no backups give an empty plan', () => {
		expect(planRetention([], { keepDaily: 7 }, NOW)).toEqual({ decisions: [] });
	});
});
