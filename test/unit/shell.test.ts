import { spawn } from 'node:child_process';
import { commandLine, quoteArg, scriptArgv } from '../../lib/shell';
import { isLibvirtBackupError } from '../../lib/errors';

/** Runs a command line through the local /bin/sh, keeping stdin open as the SSH client does. */
function runLocal(line: string): Promise<{ code: number | null; stdout: Buffer }> {
	return new Promise((resolve, reject) => {
		const child = spawn('/bin/sh', ['-c', line], { stdio: ['pipe', 'pipe', 'inherit'] });
		const chunks: Buffer[] = [];
		child.stdout.on('data', (chunk: Buffer) => chunks.push(chunk));
		child.on('error', reject);
		child.on('close', (code) => resolve({ code, stdout: Buffer.concat(chunks) }));
	});
}

/** What the remote command received as argv, NUL-separated by printf. */
async function echoedArgs(args: string[], watchdog: boolean): Promise<string[]> {
	const { code, stdout } = await runLocal(commandLine(['printf', '%s\\0', ...args], { watchdog }));
	expect(code).toBe(0);
	return stdout.toString('utf8').split('\0').slice(0, -1);
}

const HOSTILE = [
	`it's`,
	`"double"`,
	'$(touch /tmp/lvb-pwned-shell-test)',
	'`touch /tmp/lvb-pwned-shell-test`',
	'a; touch /tmp/lvb-pwned-shell-test',
	'a | cat',
	'a && b || c',
	'line1\nline2',
	'-rf',
	'--',
	'=x',
	'',
	' ',
	'\t',
	'ünïcödé €',
	'日本語',
	'$HOME',
	'*',
	'~root',
	'!event',
	'\\',
	"'",
	"''",
	'a\'b"c$d`e\\f',
	'\r\n',
	'{a,b}',
	'>out',
	'#comment',
];

describe('quoteArg / commandLine', () => {
	test.each(HOSTILE.map((s) => [JSON.stringify(s), s]))('passes %s through a real sh unchanged', async (_label, value) => {
		expect(await echoedArgs([value], false)).toEqual([value]);
	});

	test('passes every hostile string at once, in order, through the watchdog wrapper', async () => {
		expect(await echoedArgs(HOSTILE, true)).toEqual(HOSTILE);
	});

	test('random strings from a hostile alphabet survive the round trip (property test)', async () => {
		const alphabet = `ab '"\\$\`;|&(){}<>*?~!#\n\t-=éü€`;
		let seed = 42;
		const random = () => ((seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648);
		const samples = Array.from({ length: 200 }, () =>
			Array.from({ length: Math.floor(random() * 12) }, () => alphabet[Math.floor(random() * alphabet.length)]).join(''),
		);
		expect(await echoedArgs(samples, true)).toEqual(samples);
	});

	test('no hostile string ever executes code', async () => {
		const fs = await import('node:fs');
		fs.rmSync('/tmp/lvb-pwned-shell-test', { force: true });
		await echoedArgs(HOSTILE, true);
		expect(fs.existsSync('/tmp/lvb-pwned-shell-test')).toBe(false);
	});

	test('plain words stay readable; assignments and metacharacters are quoted', () => {
		expect(quoteArg('virsh')).toBe('virsh');
		expect(quoteArg('/var/lib/libvirt/images/a.qcow2')).toBe('/var/lib/libvirt/images/a.qcow2');
		expect(quoteArg('-x')).toBe('-x');
		expect(quoteArg('A=b')).toBe(`'A=b'`);
		expect(quoteArg('')).toBe(`''`);
		expect(quoteArg(`it's`)).toBe(`'it'\\''s'`);
	});

	test('a NUL byte is refused with a clear error', () => {
		expect(() => quoteArg('a\0b')).toThrow(/NUL byte/);
		try {
			commandLine(['echo', 'a\0b']);
		} catch (error) {
			expect(isLibvirtBackupError(error, 'INVALID_INPUT')).toBe(true);
		}
	});

	test('an empty argv is refused', () => {
		expect(() => commandLine([])).toThrow(/empty command/);
	});

	test('sudo modes prefix the whole wrapped command', () => {
		expect(commandLine(['virsh', 'version'], { sudo: 'nopasswd', watchdog: false })).toBe('sudo -n -- virsh version');
		expect(commandLine(['virsh', 'version'], { sudo: 'password', watchdog: false })).toBe(`sudo -S -p '' -- virsh version`);
		expect(commandLine(['virsh'], { sudo: 'nopasswd' })).toMatch(/^sudo -n -- sh -c '/);
	});

	test('scriptArgv hands data to a constant script as positional parameters', async () => {
		const argv = scriptArgv('printf "%s\\0" "$@"', 'lvb-test', ['$(id)', 'a b']);
		const { stdout } = await runLocal(commandLine(argv));
		expect(stdout.toString().split('\0').slice(0, -1)).toEqual(['$(id)', 'a b']);
	});

	test('the watchdog reports the command exit code', async () => {
		const { code } = await runLocal(commandLine(['sh', '-c', 'exit 7']));
		expect(code).toBe(7);
	});

	test('the watchdog kills the whole command tree when stdin reaches EOF', async () => {
		const marker = `/tmp/lvb-watchdog-${process.pid}`;
		const fs = await import('node:fs');
		fs.rmSync(marker, { force: true });
		const child = spawn('/bin/sh', ['-c', commandLine(['sh', '-c', `sleep 30; touch ${marker}`])], {
			stdio: ['pipe', 'ignore', 'ignore'],
		});
		await new Promise((r) => setTimeout(r, 300));
		const closed = new Promise<number | null>((resolve) => child.on('close', resolve));
		child.stdin.end();
		expect(await closed).toBe(143);
		const ps = spawn('pgrep', ['-f', 'sleep 30; touch']);
		const found = await new Promise<number | null>((resolve) => ps.on('close', resolve));
		expect(found).toBe(1); // pgrep: no process matched
		expect(fs.existsSync(marker)).toBe(false);
	});

	test('a heartbeat on stdin keeps the command running past the silence limit', async () => {
		const child = spawn('/bin/sh', ['-c', commandLine(['sh', '-c', 'sleep 4; exit 5'], { silenceLimitSeconds: 2 })], { stdio: ['pipe', 'ignore', 'ignore'] });
		const beat = setInterval(() => child.stdin.write('\n'), 300);
		const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
		clearInterval(beat);
		expect(code).toBe(5);
	});

	test('the watchdog kills the command tree when stdin stays open but silent (network gone)', async () => {
		const marker = `/tmp/lvb-silence-${process.pid}`;
		const fs = await import('node:fs');
		fs.rmSync(marker, { force: true });
		const child = spawn('/bin/sh', ['-c', commandLine(['sh', '-c', `sleep 30; touch ${marker}`], { silenceLimitSeconds: 1 })], {
			stdio: ['pipe', 'ignore', 'ignore'],
		});
		const closed = new Promise<number | null>((resolve) => child.on('close', resolve));
		expect(await closed).toBe(143); // stdin is still open: only the silence ended it
		child.stdin.end();
		const ps = spawn('pgrep', ['-f', `sleep 30; touch ${marker}`]);
		expect(await new Promise<number | null>((resolve) => ps.on('close', resolve))).toBe(1);
		expect(fs.existsSync(marker)).toBe(false);
	});

	test('the silence limit (30 s by default) reaches the watchdog as data, also under sudo', () => {
		const line = commandLine(['true'], { sudo: 'password' });
		expect(line).toMatch(/^sudo -S -p '' -- sh -c '/);
		expect(line).toMatch(/ lvb-watchdog 30 true$/);
	});
});

