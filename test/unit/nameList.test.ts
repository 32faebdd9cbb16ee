import { parseNameList } from '../../nodes/shared/catalogParameters';

describe('VM name lists in node parameters', () => {
	test.each([
		['web01, db01', ['web01', 'db01']],
		['web01\ndb01\n', ['web01', 'db01']],
		['', []],
		['   ', []],
		[' lvb-lead-space', [' lvb-lead-space']],
		['lvb-trailing ', ['lvb-trailing ']],
		["lvb-evil '\"; $(touch pwned)", ["lvb-evil '\"; $(touch pwned)"]],
		[['a, b', ' c'], ['a, b', ' c']],
	])('%j -> %j', (value, expected) => {
		expect(parseNameList(value)).toEqual(expected);
	});
});
