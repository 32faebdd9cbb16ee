/**
 * Time bounds given in minutes by a workflow: Node's timers hold at most 2^31-1 ms (~24.8 days)
 * and fire after 1 ms for anything larger, so a large "Timeout (Minutes)" stopped a backup at once.
 */
import { checkBackupRequest, MAX_TIMEOUT_MINUTES, type BackupRequest } from '../../lib/backup';
import { startTimer } from '../../lib/ssh';

const good: BackupRequest = { uri: 'qemu:///system', vm: 'web01', dest: '/backups', mode: 'auto', compression: 'none', quiesce: 'auto', holder: 'test', host: 'kvm01' };

describe('the backup timeout has a documented maximum', () => {
	test('the maximum itself is accepted', () => {
		expect(MAX_TIMEOUT_MINUTES).toBe(7 * 24 * 60);
		expect(() => checkBackupRequest({ ...good, timeoutMs: MAX_TIMEOUT_MINUTES * 60_000 })).not.toThrow();
	});

	test.each([35_792, 36_000, 1e12, Infinity])('%p minutes is refused with an error naming the parameter', (minutes) => {
		expect(() => checkBackupRequest({ ...good, timeoutMs: minutes * 60_000 })).toThrow(
			`timeout (minutes) must be at most ${MAX_TIMEOUT_MINUTES} (7 days); got ${minutes}`,
		);
	});

	test('NaN is refused, not treated as "no timeout"', () => {
		expect(() => checkBackupRequest({ ...good, timeoutMs: NaN })).toThrow(/timeout must be a positive number of minutes; got NaN/);
	});
});

describe('startTimer fires once, after the whole delay, whatever its length', () => {
	beforeEach(() => jest.useFakeTimers());
	afterEach(() => jest.useRealTimers());

	test.each([1_000, 2 ** 31 - 1, 2 ** 31, 36_000 * 60_000, 3 * 2 ** 31 + 5])('%p ms', (ms) => {
		const fired = jest.fn();
		startTimer(ms, fired);
		jest.advanceTimersByTime(ms - 1);
		expect(fired).not.toHaveBeenCalled();
		jest.advanceTimersByTime(1);
		expect(fired).toHaveBeenCalledTimes(1);
		jest.advanceTimersByTime(10 * 2 ** 31);
		expect(fired).toHaveBeenCalledTimes(1);
	});

	test('cancelling stops it, also after a first slice of a long delay', () => {
		const fired = jest.fn();
		const cancel = startTimer(2 ** 32, fired);
		jest.advanceTimersByTime(2 ** 31);
		cancel();
		jest.advanceTimersByTime(2 ** 33);
		expect(fired).not.toHaveBeenCalled();
		expect(jest.getTimerCount()).toBe(0);
	});
});
