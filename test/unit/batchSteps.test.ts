import { spawnSync } from 'node:child_process';
import { readSteps, stepsArgv, type RemoteStep } from '../../lib/batch';
import { scriptArgv } from '../../lib/shell';

const hostile = `it's "x" $(touch pwned) ; \`id\` \\ *\nline`;

function run(steps: RemoteStep<unknown>[]) {
	const argv = stepsArgv(steps, '@@M');
	const result = spawnSync(argv[0], argv.slice(1), { encoding: 'utf8', cwd: '/tmp' });
	return { code: result.status, read: () => readSteps(steps, '@@M', result.stdout, result.stderr) };
}

const echo = (label: string, ...args: string[]): RemoteStep<string> => ({
	label,
	argv: scriptArgv('for a in "$@"; do printf "[%s]" "$a"; done', 'lvb-echo', args),
	parse: (stdout) => stdout.trim(),
});

describe('batched steps: several commands in one exec', () => {
	test('each step gets exactly its own arguments, hostile ones as data, and its own output', () => {
		const { code, read } = run([echo('a', hostile, ''), echo('b'), echo('c', '-n', '3')]);
		expect(code).toBe(0);
		expect(read()).toEqual([`[${hostile}][]`, '', '[-n][3]']);
	});

	test('a required step that fails stops the run and throws its own error with its own stderr', () => {
		const failing: RemoteStep<string> = { label: 'bad', argv: ['sh', '-c', 'echo first >&2; echo why it failed >&2; exit 3'], parse: () => 'never' };
		const after: RemoteStep<string> = { ...echo('after', 'x'), parse: () => { throw new Error('must not run'); } };
		const { read } = run([echo('a', 'x'), failing, after]);
		expect(read).toThrow(/bad failed \(exit code 3\): first\nwhy it failed/);
	});

	test('an optional step that fails is reported to its parser, with its stderr, and the next steps run', () => {
		const optional: RemoteStep<string> = { label: 'opt', optional: true, argv: ['sh', '-c', 'echo oops >&2; exit 4'], parse: (stdout, exitCode) => `${exitCode}:${stdout.trim()}` };
		expect(run([optional, echo('b', 'y')]).read()).toEqual(['4:oops', '[y]']);
	});
});
