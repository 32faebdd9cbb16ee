// The readers of the VM picker: both the plain strings of workflows saved before it and the
// resource locator values it saves resolve to what the string fields gave.
import { selectVmNames } from '../../nodes/shared/catalogParameters';
import { diskTargets, printable, vmForBackup, vmNamesInput } from '../../nodes/shared/vmPicker';

const UUID = '4dea22b3-1d52-d8f3-2516-782e98ab3fa0';
const rl = (mode: string, value: unknown) => ({ __rl: true, mode, value });

describe('vmForBackup', () => {
	test.each<[string, unknown, string]>([
		['a plain name (older workflows)', ' web01 ', 'web01'],
		['a plain UUID (older workflows)', UUID, UUID],
		['from the list (the UUID)', rl('list', UUID), UUID],
		['by name', rl('name', 'web01'), 'web01'],
		['by name, given a UUID by the default expression', rl('name', UUID), UUID],
		['by UUID', rl('id', ` ${UUID.toUpperCase()} `), UUID.toUpperCase()],
		['a hostile name stays data', rl('name', `x'; $(touch p)\ny`), `x'; $(touch p)\ny`],
	])('%s', (_label, value, expected) => {
		expect(vmForBackup(value)).toBe(expected);
	});

	test('by UUID with a value that is not one (an expression gave it) is refused', () => {
		expect(() => vmForBackup(rl('id', 'web01'))).toThrow('VM "By UUID" is not a UUID: "web01"');
	});

	test('empty stays empty, for the engine to refuse as before', () => {
		expect(vmForBackup(rl('name', ''))).toBe('');
		expect(vmForBackup(undefined)).toBe('');
	});
});

describe('diskTargets', () => {
	test.each<[unknown, string[]]>([
		['vda, vdb', ['vda', 'vdb']],
		['', []],
		[['vda', ' vdb '], ['vda', 'vdb']],
		[[], []],
		[undefined, []],
	])('%j', (value, expected) => {
		expect(diskTargets(value)).toEqual(expected);
	});
});

describe('VM Names: vmNamesInput then selectVmNames', () => {
	const select = (raw: unknown, resolved: unknown) => {
		const input = vmNamesInput(raw, resolved);
		return selectVmNames(input.raw, input.names);
	};

	test.each<[string, unknown, unknown, string[] | undefined]>([
		['absent or empty: every VM', undefined, '', undefined],
		['empty locator: every VM', rl('name', ''), rl('name', ''), undefined],
		['empty list choice: every VM', rl('list', ''), rl('list', ''), undefined],
		['a plain list (older workflows)', 'web01, db01', 'web01, db01', ['web01', 'db01']],
		['names', rl('name', 'web01\ndb01'), rl('name', 'web01\ndb01'), ['web01', 'db01']],
		['an expression giving a list', rl('name', '={{ $json.vms }}'), rl('name', ['a', 'b']), ['a', 'b']],
		['one VM from the list, commas and spaces kept', rl('list', ' a, b'), rl('list', ' a, b'), [' a, b']],
	])('%s', (_label, raw, resolved, expected) => {
		expect(select(raw, resolved)).toEqual(expected);
	});

	test.each<[string, unknown, unknown, string]>([
		['a plain expression giving nothing', "={{ '' }}", '', '""'],
		['a locator expression giving nothing', rl('name', "={{ '' }}"), rl('name', ''), '""'],
		['a locator expression giving an empty list', rl('name', '={{ [] }}'), rl('name', []), '[]'],
		['only separators', rl('name', ','), rl('name', ','), '","'],
	])('%s is refused, not read as every VM', (_label, raw, resolved, shown) => {
		expect(() => select(raw, resolved)).toThrow(`VM Names is set but names no VM (it resolved to ${shown})`);
	});
});

describe('printable: a VM name on one display line', () => {
	test.each<[string, string]>([
		['web01', 'web01'],
		['lvb-new\nline', 'lvb-new\\nline'],
		['a\rb\tc', 'a\\rb\\tc'],
		['a\u0001b\u007fc', 'a\\u0001b\\u007fc'],
		['a\u2028b\u2029c', 'a\\u2028b\\u2029c'],
		["lvb-evil '\"; $(touch pwned) |&\\`$HOME* ünï-€", "lvb-evil '\"; $(touch pwned) |&\\`$HOME* ünï-€"],
	])('%j', (name, shown) => {
		expect(printable(name)).toBe(shown);
	});
});
