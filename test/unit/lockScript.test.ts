/**
 * The lock script, run with the local /bin/sh on a temp folder. A job that removes its VM folder
 * unlinks the lock file while holding it; another job that opened the old file just before takes
 * the lock on a file nobody else sees. That interleaving is forced here with a `flock` wrapper that
 * swaps the lock file just before locking (once), and `sleep` returns at once instead of holding.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { LOCK_SCRIPT } from '../../lib/store/lock';
import { tempDir } from './catalog/local';

function fakeBin(state: string): string {
	const bin = tempDir('lockbin');
	const flock = spawnSync('sh', ['-c', 'command -v flock'], { encoding: 'utf8' }).stdout.trim();
	fs.writeFileSync(
		path.join(bin, 'flock'),
		`#!/bin/sh\nif [ ! -e ${JSON.stringify(state)} ]; then : > ${JSON.stringify(state)}; rm -f .lvb.lock; : > .lvb.lock; fi\nexec ${flock} "$@"\n`,
		{ mode: 0o755 },
	);
	fs.writeFileSync(path.join(bin, 'sleep'), '#!/bin/sh\nexit 0\n', { mode: 0o755 });
	return bin;
}

test('a lock file swapped between open and flock is opened again: the lock held is the one the path names', () => {
	const root = tempDir('lock');
	const vmDir = path.join(root, 'web01');
	const env = { ...process.env, PATH: `${fakeBin(path.join(root, 'swapped'))}:${process.env.PATH ?? ''}` };

	const result = spawnSync('/bin/sh', ['-c', `${LOCK_SCRIPT.replace('exec sleep 2147483647', '[ .lvb.lock -ef /dev/fd/8 ] && echo "$m holds-named-file"; exec sleep 1')}`, 'lvb-lock', vmDir, 'job 1', 'MARK'], {
		encoding: 'utf8',
		env,
	});

	expect(fs.existsSync(path.join(root, 'swapped'))).toBe(true);
	expect(result.stdout).toBe('MARK acquired 1\nMARK holds-named-file\n');
	expect(fs.readFileSync(path.join(vmDir, '.lvb.lock'), 'utf8')).toBe('job 1\n');
});
