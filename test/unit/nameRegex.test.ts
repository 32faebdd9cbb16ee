import { checkFilter } from '../../lib/libvirt';
import { nameMatcher } from '../../lib/nameRegex';

describe('user name regexes run in linear time', () => {
	test('a catastrophic pattern over a list of names gives the right answer', () => {
		// With a backtracking engine, (a+)+$ against 32 a's and a "!" blocks the process for minutes.
		const names = ['a'.repeat(32) + '!', 'aaa', 'b', 'a'.repeat(5000) + '!', `x\n${'a'.repeat(40)}`];
		const matches = nameMatcher('(a+)+$');
		expect(names.filter(matches)).toEqual(['aaa', `x\n${'a'.repeat(40)}`]);
	});

	test.each([
		['^lvb-(two|off)', ['lvb-two-disks', 'lvb-off-chain']],
		['^(lvb-running|lvb\\.paused)$', ['lvb-running']],
		['\\d{2}$', ['web10']],
		['(?i)^WEB', ['web10', 'Web2']],
		['^(?<prefix>lvb)-', ['lvb-two-disks', 'lvb-off-chain', 'lvb-running', 'lvb-paused']],
		['a/b', ['a/b']],
		['', ['lvb-two-disks', 'lvb-off-chain', 'lvb-running', 'lvb-paused', 'web10', 'Web2', 'a/b']],
	])('JavaScript-style pattern %p selects %p', (pattern, expected) => {
		const names = ['lvb-two-disks', 'lvb-off-chain', 'lvb-running', 'lvb-paused', 'web10', 'Web2', 'a/b'];
		expect(names.filter(nameMatcher(pattern))).toEqual(expected);
	});

	test.each([
		['([unclosed', /^Invalid name regex "\(\[unclosed": missing closing \]/],
		['(a)\\1', /^Invalid name regex "\(a\)\\1": .*backreferences and lookaround are not supported/],
		['^(?!test-)', /^Invalid name regex "\^\(\?!test-\)": .*backreferences and lookaround are not supported/],
	])('%p is refused with an error naming the parameter', (pattern, message) => {
		expect(() => nameMatcher(pattern)).toThrow(expect.objectContaining({ code: 'INVALID_INPUT', message: expect.stringMatching(message) }));
	});

	test('discovery checks the regex before anything runs on the host', () => {
		expect(() => checkFilter({ nameRegex: '(' })).toThrow(/^Invalid name regex "\(": /);
		expect(() => checkFilter({ nameRegex: '(a+)+$' })).not.toThrow();
	});
});
