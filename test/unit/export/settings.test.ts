/** Export Archive's settings as the node reads them: every bad value a clear error, nothing silently replaced. */
import { archiveSettings } from '../../../lib/export';

describe('archiveSettings', () => {
	it.each([
		['none', undefined, undefined, { compression: { kind: 'none' }, compressOn: 'n8n' }],
		['gzip', 6, 'n8n', { compression: { kind: 'gzip', level: 6 }, compressOn: 'n8n' }],
		['zstd', 1, 'host', { compression: { kind: 'zstd', level: 1 }, compressOn: 'host' }],
		['zstd', '3', undefined, { compression: { kind: 'zstd', level: 3 }, compressOn: 'n8n' }],
		// A plain tar has nothing to compress: where is moot, and is not asked.
		['none', 5, 'host', { compression: { kind: 'none' }, compressOn: 'n8n' }],
	])('%s level %s on %s', (kind, level, compressOn, expected) => {
		expect(archiveSettings(kind, level, compressOn)).toEqual(expected);
	});

	it.each([
		['xz', 1, 'n8n', /Compression must be one of none, gzip, zstd; got "xz"/],
		['gzip', 0, 'n8n', /gzip level must be a whole number from 1 to 9, got 0/],
		['zstd', 2.5, 'n8n', /zstd level must be a whole number from 1 to 19, got 2.5/],
		['gzip', 'fast', 'n8n', /gzip level must be a whole number from 1 to 9, got fast/],
		['gzip', 1, 'Host', /Compress On must be n8n or host; got "Host"/],
		['zstd', 1, 'source', /Compress On must be n8n or host; got "source"/],
		// Checked even where it is moot, so an expression gone wrong is seen.
		['none', 1, 'banana', /Compress On must be n8n or host; got "banana"/],
	])('refuses %s level %s on %s', (kind, level, compressOn, message) => {
		expect(() => archiveSettings(kind, level, compressOn)).toThrow(message);
	});
});
