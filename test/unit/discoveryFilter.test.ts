import { checkFilter } from '../../lib/libvirt';

describe('discovery filters are checked before anything runs on the host', () => {
	test('known values pass', () => {
		expect(() => checkFilter({ state: 'shutoff', persistence: 'transient' })).not.toThrow();
		expect(() => checkFilter({})).not.toThrow();
	});

	test.each([
		[{ state: 'stopped' }, 'state must be one of any, running, paused, shutoff, other; got "stopped"'],
		[{ persistence: 'defined' }, 'persistence must be one of any, persistent, transient; got "defined"'],
	])('%p is refused', (filter, message) => {
		expect(() => checkFilter(filter as never)).toThrow(message);
	});
});
