import { diskSummary, formatBytes, formatDuration } from '../../lib/format';

describe('formatBytes', () => {
	test.each([
		[0, '0 B'],
		[1023, '1023 B'],
		[1024, '1.0 KiB'],
		[1536, '1.5 KiB'],
		[512 * 1024 * 1024, '512.0 MiB'],
		[2 * 1024 ** 3, '2.0 GiB'],
		[5 * 1024 ** 5, '5120.0 TiB'],
	])('%d bytes is %s', (bytes, text) => expect(formatBytes(bytes)).toBe(text));
});

describe('formatDuration', () => {
	test.each([
		[0, '0s'],
		[0.4, '0s'],
		[59.4, '59s'],
		[59.6, '1m 00s'],
		[185, '3m 05s'],
		[3600, '1h 00m'],
		[7625, '2h 07m'],
	])('%d seconds is %s', (seconds, text) => expect(formatDuration(seconds)).toBe(text));
});

describe('diskSummary', () => {
	test('one line: target, size, format, a note in parentheses', () => {
		expect(
			diskSummary([
				{ target: 'vda', bytes: 2 * 1024 ** 3, format: 'qcow2' },
				{ target: 'vdb', bytes: 512 * 1024 ** 2, format: 'raw' },
				{ target: 'sda', bytes: null, note: 'not backupable' },
			]),
		).toBe('vda 2.0 GiB qcow2, vdb 512.0 MiB raw, sda size unknown (not backupable)');
	});

	test('no disks is an empty line', () => expect(diskSummary([])).toBe(''));
});
