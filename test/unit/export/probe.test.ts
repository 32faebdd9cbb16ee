/** hostHasProgram: a PATH lookup, answered in milliseconds; a host that takes longer is hung, not busy. */
import { hostHasProgram } from '../../../lib/export/source';
import type { SshConnection } from '../../../lib/ssh';

describe('hostHasProgram', () => {
	it('asks with a short timeout (a minute at most, not the five minutes of a metadata walk) and reads the answer', async () => {
		const asked: { argv: readonly string[]; timeoutMs?: number }[] = [];
		const answer = (stdout: string) =>
			({
				run: async (argv: readonly string[], options: { timeoutMs?: number }) => {
					asked.push({ argv, timeoutMs: options.timeoutMs });
					return { exitCode: 0, stdout, stderr: '' };
				},
			}) as unknown as SshConnection;
		expect(await hostHasProgram(answer('yes\n'), 'zstd')).toBe(true);
		expect(await hostHasProgram(answer('no\n'), 'zstd')).toBe(false);
		for (const { argv, timeoutMs } of asked) {
			expect(argv[argv.length - 1]).toBe('zstd');
			expect(timeoutMs).toBeGreaterThan(0);
			expect(timeoutMs).toBeLessThanOrEqual(60_000);
		}
	});
});
