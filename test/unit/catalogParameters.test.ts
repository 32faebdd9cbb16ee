/** The parameter readers List Backups and Prune Old Backups share: VM selection, numbers, switches. */
import { checkBoolean, checkNumber, selectVmNames } from '../../nodes/shared/catalogParameters';

describe('VM selection: only a really empty field means every VM', () => {
	test.each<[unknown, unknown, string[] | undefined]>([
		[undefined, '', undefined],
		['', '', undefined],
		['web01, db01', 'web01, db01', ['web01', 'db01']],
		['={{ $json.vm }}', ' lvb-lead-space', [' lvb-lead-space']],
		['={{ $json.vms }}', ['a', 'b'], ['a', 'b']],
		// A context that resolves a value without a raw parameter (tests, sub-workflows) still selects.
		[undefined, 'web01', ['web01']],
	])('raw %j resolved to %j -> %j', (raw, resolved, expected) => {
		expect(selectVmNames(raw, resolved)).toEqual(expected);
	});

	test.each<[unknown, unknown]>([
		[',', ','],
		[' , ', ' , '],
		['\n\n', '\n\n'],
		['   ', '   '],
		['={{ $json.vms }}', ''],
		['={{ $json.vms }}', []],
		['={{ $json.vms }}', [''] as unknown],
		['={{ $json.vms }}', null],
	])('raw %j resolved to %j is refused', (raw, resolved) => {
		expect(() => selectVmNames(raw, resolved)).toThrow(
			expect.objectContaining({ code: 'INVALID_INPUT', message: expect.stringMatching(/^VM Names is set but names no VM \(it resolved to .*\)\. Leave the field empty to select every VM\.$/) }),
		);
	});
});

describe('numbers: NaN, text and out-of-range values are errors that name the parameter', () => {
	const count = { min: 0, max: 1_000_000, integer: true };
	test.each<[unknown, number]>([
		[0, 0],
		[7, 7],
		[1_000_000, 1_000_000],
		['7', 7],
		[' 12 ', 12],
	])('%j -> %j', (value, expected) => {
		expect(checkNumber('Keep Last', value, count)).toBe(expected);
	});

	test.each<[unknown, string]>([
		[Number.NaN, 'NaN'],
		[Number.POSITIVE_INFINITY, 'Infinity'],
		[1e308, '1e+308'],
		[-1, '-1'],
		[1.5, '1.5'],
		['abc', '"abc"'],
		['', '""'],
		['0x10', '"0x10"'],
		[null, 'null'],
		[true, 'true'],
	])('%j is refused', (value, shown) => {
		expect(() => checkNumber('Keep Last', value, count)).toThrow(
			expect.objectContaining({ code: 'INVALID_INPUT', message: `Keep Last must be a whole number from 0 to 1000000, got ${shown}` }),
		);
	});

	test('fractions are allowed where the parameter allows them; the range still holds', () => {
		const hours = { min: 1, max: 8_765_820 };
		expect(checkNumber('Stale Unfinished Backups After (Hours)', 1.5, hours)).toBe(1.5);
		for (const value of [0, -2, 0.5, Number.NaN, 9e6]) {
			expect(() => checkNumber('Stale Unfinished Backups After (Hours)', value, hours)).toThrow(
				`Stale Unfinished Backups After (Hours) must be a number from 1 to 8765820, got ${value === 9e6 ? '9000000' : value}`,
			);
		}
	});
});

describe('switches: only true or false', () => {
	test.each([
		[true, true],
		[false, false],
	])('%j', (value, expected) => {
		expect(checkBoolean('Dry Run', value)).toBe(expected);
	});

	test.each(['', 'false', 0, null, undefined])('%j is refused (an empty expression must not turn Dry Run off)', (value) => {
		expect(() => checkBoolean('Dry Run', value)).toThrow(expect.objectContaining({ code: 'INVALID_INPUT', message: expect.stringMatching(/^Dry Run must be true or false, got /) }));
	});
});
