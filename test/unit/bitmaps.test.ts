/**
 * Stale bitmaps (issue 8): what is ours, what QEMU and qemu-img report, and the host scripts'
 * guards run with the local /bin/sh against a fake `virsh` and `qemu-img` on PATH: a lab cannot
 * create a checkpoint or start a VM exactly between the look and the removal.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { isOurBitmap } from '../../lib/backup/backup';
import { LibvirtBackupError } from '../../lib/errors';
import { bitmapDisks, parseImageBitmaps, parseNodeBitmaps, removeStaleBitmaps, staleBitmaps, type DiscoveredDisk, type DiscoveredVm } from '../../lib/libvirt';
import type { RunOptions, RunResult, SshConnection } from '../../lib/ssh';

const VDA = '/var/lib/libvirt/images/web01.qcow2';
const BASE = '/var/lib/libvirt/images/base.qcow2';

function disk(target: string, extra: Partial<DiscoveredDisk> = {}): DiscoveredDisk {
	return {
		target,
		device: 'disk',
		type: 'file',
		format: 'qcow2',
		source: { path: `/var/lib/libvirt/images/${target}.qcow2` },
		readonly: false,
		shareable: false,
		backingStore: [],
		virtualBytes: 1 << 30,
		allocatedBytes: 1 << 20,
		backingChain: [],
		backupable: true,
		...extra,
	};
}

/** As `virsh qemu-monitor-command DOM '{"execute":"query-named-block-nodes","arguments":{"flat":true}}'` prints it (QEMU 7.2), trimmed. */
function nodes(bitmaps: { vda?: string[]; base?: string[] }): string {
	const bitmap = (name: string) => ({ name, recording: true, persistent: true, busy: false, granularity: 65536, count: 0 });
	const node = (name: string, drv: string, file: string, names?: string[]) => ({ 'node-name': name, drv, file, ro: false, ...(names ? { 'dirty-bitmaps': names.map(bitmap) } : {}) });
	return `${JSON.stringify({
		return: [
			node('libvirt-1-format', 'raw', '/var/lib/libvirt/images/vdc.raw'),
			node('libvirt-3-format', 'qcow2', VDA, bitmaps.vda),
			node('libvirt-3-storage', 'file', VDA),
			node('libvirt-4-format', 'qcow2', BASE, bitmaps.base),
			node('libvirt-4-storage', 'file', BASE),
		],
		id: 'libvirt-418',
	})}\n`;
}

describe('which bitmaps are ours: named as our checkpoints are', () => {
	test.each([
		['lvb-0123abcd-20261204T093125Z', true],
		['lvb-0123abcd-20261204T093125Z-2', true],
		['lvb-20261204T093125Z', true],
		['lvb-20261204T093125Z-1', true],
		['lvb-by-hand', false],
		['lvb-0123abcd-by-hand', false],
		['lvb-0123ABCD-20261204T093125Z', false],
		['lvb-overlay-1234', false],
		['backup-vda', false],
		['20261204T093125Z', false],
		['lvb-20261204T093125Z\nx', false],
	])('%j: %p', (name, ours) => {
		expect(isOurBitmap(name)).toBe(ours);
	});
});

describe('parsing', () => {
	test('QMP: the bitmaps of each disk\'s active qcow2 node; backing, storage and raw nodes are not looked at', () => {
		const found = parseNodeBitmaps(nodes({ vda: ['lvb-20261204T093125Z', 'foreign'], base: ['lvb-20250101T000000Z'] }), [{ target: 'vda', path: VDA }]);
		expect(found).toEqual([{ target: 'vda', node: 'libvirt-3-format', names: ['lvb-20261204T093125Z', 'foreign'] }]);
	});

	test('QMP: a node without bitmaps has an empty list', () => {
		expect(parseNodeBitmaps(nodes({}), [{ target: 'vda', path: VDA }])).toEqual([{ target: 'vda', node: 'libvirt-3-format', names: [] }]);
	});

	test('QMP: an error reply (virsh exits 0 for it) is an error, not "no bitmaps"', () => {
		const reply = '{"id":"libvirt-419","error":{"class":"CommandNotFound","desc":"The command query-named-block-nodes has not been found"}}\n';
		expect(() => parseNodeBitmaps(reply, [{ target: 'vda', path: VDA }])).toThrow('QEMU refused to list block nodes: The command query-named-block-nodes has not been found');
		expect(() => parseNodeBitmaps('error: something', [])).toThrow(LibvirtBackupError);
	});

	test('qemu-img info: bitmaps under format-specific data; none without them', () => {
		const info = (bitmaps?: object[]) =>
			JSON.stringify({ 'virtual-size': 67108864, format: 'qcow2', 'format-specific': { type: 'qcow2', data: { compat: '1.1', ...(bitmaps ? { bitmaps } : {}), corrupt: false } } });
		expect(parseImageBitmaps(info([{ flags: ['auto'], name: 'lvb-20261204T093125Z', granularity: 65536 }, { flags: ['in-use', 'auto'], name: 'x', granularity: 65536 }]))).toEqual([
			'lvb-20261204T093125Z',
			'x',
		]);
		expect(parseImageBitmaps(info())).toEqual([]);
	});

	test('stale: ours and without a checkpoint, sorted per disk', () => {
		const found = [
			{ target: 'vda', node: 'n1', names: ['lvb-20261204T093125Z', 'lvb-0123abcd-20261203T000000Z', 'foreign', 'lvb-by-hand'] },
			{ target: 'vdb', node: 'n2', names: ['lvb-20261204T093125Z'] },
		];
		expect(staleBitmaps(found, ['lvb-20261204T093125Z'], isOurBitmap)).toEqual([{ target: 'vda', node: 'n1', name: 'lvb-0123abcd-20261203T000000Z' }]);
	});

	test('only local qcow2 disks this VM alone writes are looked at', () => {
		const vm = {
			disks: [
				disk('vda'),
				disk('vdb', { format: 'raw' }),
				disk('vdc', { readonly: true }),
				disk('vdd', { shareable: true }),
				disk('vde', { type: 'network', source: { protocol: 'nbd', name: 'x' } }),
				disk('vdf', { type: 'block', source: { path: '/dev/vg/vdf' } }),
			],
		};
		expect(bitmapDisks(vm)).toEqual([
			{ target: 'vda', path: '/var/lib/libvirt/images/vda.qcow2' },
			{ target: 'vdf', path: '/dev/vg/vdf' },
		]);
	});
});

// Fake host tools: each call is logged; answers come from files in $FAKE, and `<file>.next`
// replaces `<file>` after its first use (the host as it is by the time of the second script).
const FAKE_VIRSH = `#!/bin/sh
printf 'virsh %s\\n' "$*" >>"$FAKE/log"
answer() { cat "$FAKE/$1"; if [ -f "$FAKE/$1.next" ]; then mv "$FAKE/$1.next" "$FAKE/$1"; fi; }
for a; do last=$a; done
case " $* " in
  *" qemu-monitor-command "*)
    case $last in *query-named-block-nodes*) cat "$FAKE/nodes";; *) answer qmp;; esac;;
  *" domjobinfo "*) answer job;;
  *" checkpoint-list "*) answer checkpoints;;
  *" domstate "*) answer state;;
esac
`;
const FAKE_QEMU_IMG = `#!/bin/sh
printf 'qemu-img %s\\n' "$*" >>"$FAKE/log"
case $1 in
  info) cat "$FAKE/info";;
  bitmap) if [ -f "$FAKE/bitmap-error" ]; then cat "$FAKE/bitmap-error" >&2; exit 1; fi;;
esac
`;

let fake: string;
beforeEach(() => {
	fake = fs.mkdtempSync(path.join(os.tmpdir(), 'lvb-bitmaps-'));
	fs.mkdirSync(path.join(fake, 'bin'));
	fs.writeFileSync(path.join(fake, 'bin', 'virsh'), FAKE_VIRSH, { mode: 0o755 });
	fs.writeFileSync(path.join(fake, 'bin', 'qemu-img'), FAKE_QEMU_IMG, { mode: 0o755 });
	write({ job: 'Job type: 0\n', checkpoints: '', qmp: '{"return":{},"id":"libvirt-420"}\n', state: 'running\n' });
});
afterEach(() => fs.rmSync(fake, { recursive: true, force: true }));

function write(files: Record<string, string>): void {
	for (const [name, content] of Object.entries(files)) fs.writeFileSync(path.join(fake, name), content);
}

function calls(): string[] {
	const file = path.join(fake, 'log');
	return fs.existsSync(file) ? fs.readFileSync(file, 'utf8').split('\n').filter(Boolean) : [];
}

/** Runs each argv locally (`sh -c SCRIPT NAME args...`, as on a host) with the fakes first on PATH. */
const ssh = {
	target: { username: 'test' },
	async run(argv: string[], options: RunOptions = {}): Promise<RunResult> {
		const result = spawnSync(argv[0], argv.slice(1), { encoding: 'utf8', env: { ...process.env, FAKE: fake, PATH: `${fake}/bin:${process.env.PATH}` } });
		const run = { exitCode: result.status ?? -1, stdout: result.stdout, stderr: result.stderr };
		if (run.exitCode !== 0) throw new LibvirtBackupError('COMMAND_FAILED', `${options.label} failed`, { exitCode: run.exitCode, stderr: run.stderr });
		return run;
	},
} as unknown as SshConnection;

function vmIn(state: DiscoveredVm['state'], disks: DiscoveredDisk[] = [disk('vda', { source: { path: VDA }, backingStore: [BASE] })]): Pick<DiscoveredVm, 'uuid' | 'state' | 'disks'> {
	return { uuid: '6f1c7d0e-0000-4000-8000-000000000001', state, disks };
}

const removeCalls = () => calls().filter((call) => call.includes('block-dirty-bitmap-remove') || call.startsWith('qemu-img bitmap'));

describe('removeStaleBitmaps on a running VM (QMP)', () => {
	test('removes ours without a checkpoint, by node name; leaves the rest and the backing file\'s', async () => {
		write({ nodes: nodes({ vda: ['lvb-0123abcd-20261203T000000Z', 'lvb-0123abcd-20261204T000000Z', 'foreign', 'lvb-by-hand'], base: ['lvb-20250101T000000Z'] }), checkpoints: 'lvb-0123abcd-20261204T000000Z\n' });
		const result = await removeStaleBitmaps(ssh, 'qemu:///system', vmIn('running'), isOurBitmap);
		expect(result).toEqual({ removed: [{ target: 'vda', name: 'lvb-0123abcd-20261203T000000Z' }], failed: [] });
		expect(removeCalls()).toEqual([
			`virsh -q -c qemu:///system qemu-monitor-command --domain 6f1c7d0e-0000-4000-8000-000000000001 --cmd {"execute":"block-dirty-bitmap-remove","arguments":{"node":"libvirt-3-format","name":"lvb-0123abcd-20261203T000000Z"}}`,
		]);
	});

	test('a VM with a job (a backup to another destination may be creating a checkpoint): nothing is removed', async () => {
		write({ nodes: nodes({ vda: ['lvb-0123abcd-20261203T000000Z'] }), job: 'Job type: 2\noperation: 9\n' });
		expect(await removeStaleBitmaps(ssh, 'qemu:///system', vmIn('running'), isOurBitmap)).toEqual({ removed: [], failed: [] });
		expect(removeCalls()).toEqual([]);
	});

	test('a checkpoint that appeared since the look keeps its bitmap', async () => {
		write({ nodes: nodes({ vda: ['lvb-0123abcd-20261203T000000Z', 'lvb-20261201T000000Z'] }), 'checkpoints.next': 'lvb-0123abcd-20261203T000000Z\n' });
		const result = await removeStaleBitmaps(ssh, 'qemu:///system', vmIn('paused'), isOurBitmap);
		expect(result.removed).toEqual([{ target: 'vda', name: 'lvb-20261201T000000Z' }]);
		expect(removeCalls()).toHaveLength(1);
	});

	test('a bitmap already gone is not reported; any other refusal is, with QEMU\'s words', async () => {
		write({ nodes: nodes({ vda: ['lvb-20261201T000000Z'] }), qmp: `{"id":"libvirt-9","error":{"class":"GenericError","desc":"Dirty bitmap 'lvb-20261201T000000Z' not found"}}\n` });
		expect(await removeStaleBitmaps(ssh, 'qemu:///system', vmIn('running'), isOurBitmap)).toEqual({ removed: [], failed: [] });
		write({ qmp: `{"id":"libvirt-9","error":{"class":"GenericError","desc":"Bitmap 'lvb-20261201T000000Z' is currently in use by another operation and cannot be used"}}\n` });
		expect(await removeStaleBitmaps(ssh, 'qemu:///system', vmIn('running'), isOurBitmap)).toEqual({
			removed: [],
			failed: [{ target: 'vda', name: 'lvb-20261201T000000Z', error: "Bitmap 'lvb-20261201T000000Z' is currently in use by another operation and cannot be used" }],
		});
	});

	test('a VM without a qcow2 disk is not asked at all (QMP taints the domain)', async () => {
		expect(await removeStaleBitmaps(ssh, 'qemu:///system', vmIn('running', [disk('vda', { format: 'raw' })]), isOurBitmap)).toEqual({ removed: [], failed: [] });
		expect(calls()).toEqual([]);
	});
});

describe('removeStaleBitmaps on a shut-off VM (qemu-img)', () => {
	const info = JSON.stringify({ format: 'qcow2', 'format-specific': { type: 'qcow2', data: { bitmaps: [{ name: 'lvb-20261201T000000Z' }, { name: 'foreign' }] } } });

	test('removes ours without a checkpoint from the active layer only', async () => {
		write({ state: 'shut off\n', info });
		const result = await removeStaleBitmaps(ssh, 'qemu:///system', vmIn('shutoff'), isOurBitmap);
		expect(result).toEqual({ removed: [{ target: 'vda', name: 'lvb-20261201T000000Z' }], failed: [] });
		expect(calls().filter((call) => call.startsWith('qemu-img'))).toEqual([`qemu-img info -U -f qcow2 --output=json -- ${VDA}`, `qemu-img bitmap --remove -f qcow2 -- ${VDA} lvb-20261201T000000Z`]);
	});

	test('a VM started since the look: its image is not written', async () => {
		write({ state: 'shut off\n', 'state.next': 'running\n', info });
		expect(await removeStaleBitmaps(ssh, 'qemu:///system', vmIn('shutoff'), isOurBitmap)).toEqual({ removed: [], failed: [] });
		expect(removeCalls()).toEqual([]);
	});

	test('a VM that is not shut off by the time of the look: nothing is read or written', async () => {
		write({ state: 'running\n', info });
		expect(await removeStaleBitmaps(ssh, 'qemu:///system', vmIn('shutoff'), isOurBitmap)).toEqual({ removed: [], failed: [] });
		expect(calls().filter((call) => call.startsWith('qemu-img'))).toEqual([]);
	});

	test('a refused removal (the image locked by a VM that started) is reported with qemu-img\'s words', async () => {
		write({ state: 'shut off\n', info, 'bitmap-error': `qemu-img: Could not open '${VDA}': Failed to get "write" lock\nIs another process using the image [${VDA}]?\n` });
		const result = await removeStaleBitmaps(ssh, 'qemu:///system', vmIn('shutoff'), isOurBitmap);
		expect(result.removed).toEqual([]);
		expect(result.failed).toEqual([{ target: 'vda', name: 'lvb-20261201T000000Z', error: expect.stringContaining('Failed to get "write" lock') }]);
	});
});
