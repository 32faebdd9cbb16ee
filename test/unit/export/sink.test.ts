import { isLibvirtBackupError } from '../../../lib/errors';
import { TRAILER_BYTES, interpret, tempPathFor, trailer } from '../../../lib/export/sink';

const M = '@@LVB-0123456789abcdef';

describe('trailer', () => {
	it('is the token and the zero-padded byte count, TRAILER_BYTES long', () => {
		const t = trailer('0123456789abcdef0123456789abcdef', 1234);
		expect(t.length).toBe(TRAILER_BYTES);
		expect(t.toString()).toBe(`0123456789abcdef0123456789abcdef${'0'.repeat(28)}1234`);
	});
	it.each([['short', 1], ['0123456789abcdef0123456789abcdeg', 1], ['0123456789abcdef0123456789abcdef', -1], ['0123456789abcdef0123456789abcdef', 1.5]])(
		'refuses a bad token or count (%s, %s)',
		(token, length) => expect(() => trailer(token, length)).toThrow(/trailer/),
	);
});

describe('tempPathFor', () => {
	it('is next to the final name, ends in .partial, and differs per call', () => {
		const a = tempPathFor('/b/x.tar');
		expect(a).toMatch(/^\/b\/x\.tar\.lvb-[0-9a-f]{12}\.partial$/);
		expect(tempPathFor('/b/x.tar')).not.toBe(a);
	});
});

describe('interpret', () => {
	it('reads a committed byte count', () => {
		expect(interpret(`noise\n${M} committed 42\n`, '', M, '/d/f', '/d/f.t')).toEqual({ bytes: 42 });
	});
	it.each([
		['final-exists', /exists already/],
		['final-link', /symbolic link/],
		['final-notfile', /not a regular file/],
		['tmp-exists', /temp name \/d\/f\.t exists/],
		['no-dir', /folder does not exist/],
	])('turns refused %s into an error a person can act on', (reason, message) => {
		const error = interpret(`${M} refused ${reason}\n`, '', M, '/d/f', '/d/f.t');
		expect(isLibvirtBackupError(error)).toBe(true);
		expect((error as Error).message).toMatch(message);
	});
	it('says NO_SPACE for a full disk, with dd\'s words', () => {
		const error = interpret(`${M} failed write\n`, 'dd: error writing \'/d/f.t\': No space left on device\n', M, '/d/f', '/d/f.t');
		expect(isLibvirtBackupError(error, 'NO_SPACE')).toBe(true);
		expect((error as Error).message).toMatch(/temp file was removed: dd: error writing/);
	});
	it('ignores a forged section without the marker', () => {
		const error = interpret('@@LVB-other committed 5\n', '', M, '/d/f', '/d/f.t');
		expect(error).toBeInstanceOf(Error);
	});
});
