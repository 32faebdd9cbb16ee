// The items Discover VMs, Backup VM Disk and Verify Checksum put out: key order is the column order
// of n8n's Table view, and every engine field keeps its raw value.
import type { BackupResult } from '../../lib/backup';
import type { BackupVerification } from '../../lib/catalog';
import type { DiscoveredVm } from '../../lib/libvirt';
import { forErrorOutput } from '../../nodes/shared/executeRouted';
import { backupItem, discoveredVmItem, verifiedItem } from '../../nodes/shared/items';

const MiB = 1024 * 1024;

const vm: DiscoveredVm = {
	name: 'web01',
	uuid: '07861361-a469-5f32-af39-9a71251e5ecf',
	state: 'running',
	persistent: true,
	autostart: false,
	hypervisor: 'kvm',
	disks: [
		{
			target: 'vda', device: 'disk', type: 'file', format: 'qcow2', source: { path: '/img/vda.qcow2' }, readonly: false, shareable: false, backingStore: [],
			virtualBytes: 2048 * MiB, allocatedBytes: 300 * MiB, backingChain: [], backupable: true,
		},
		{
			target: 'vdb', device: 'disk', type: 'network', format: 'raw', source: { protocol: 'rbd' }, readonly: false, shareable: false, backingStore: [],
			virtualBytes: null, allocatedBytes: null, backingChain: [], backupable: false, reason: 'network disk',
		},
	],
	totalVirtualBytes: 2048 * MiB,
	totalAllocatedBytes: 300 * MiB,
	backupable: false,
	reasons: ['vdb: network disk'],
};

test('Discover VMs: name, state, backupable, readable sizes and a disk line first; details and raw values after', () => {
	const item = discoveredVmItem(vm, 'hv1');
	expect(Object.keys(item)).toEqual([
		'name', 'state', 'backupable', 'virtualSize', 'allocatedSize', 'diskSummary', 'reasons',
		'persistent', 'autostart', 'hypervisor', 'uuid', 'host', 'totalVirtualBytes', 'totalAllocatedBytes', 'disks',
	]);
	expect(item).toEqual({
		...vm,
		host: 'hv1',
		virtualSize: '2.0 GiB',
		allocatedSize: '300.0 MiB',
		diskSummary: 'vda 2.0 GiB qcow2, vdb size unknown raw (not backupable)',
	});
});

const backup: BackupResult = {
	vm: 'web01',
	uuid: vm.uuid,
	host: 'hv1',
	id: '20261128T144300Z',
	path: '/backups/web01/20261128T144300Z',
	kind: 'incremental',
	parent: '20261127T144300Z',
	method: 'push',
	consistency: 'crash',
	checkpoint: 'lvb-20261128T144300Z',
	disks: [
		{ target: 'vda', source: '/img/vda.qcow2', sourceFormat: 'qcow2', file: 'vda.qcow2', format: 'qcow2', virtualBytes: 2048 * MiB, bytes: 12 * MiB, sha256: 'a'.repeat(64), compressed: false, seconds: 1.5, mbPerSecond: 8 },
		{ target: 'vdb', source: '/img/vdb.raw', sourceFormat: 'raw', file: 'vdb.qcow2', format: 'qcow2', virtualBytes: 512 * MiB, bytes: 1024, sha256: 'b'.repeat(64), compressed: false, seconds: 0.1, mbPerSecond: 0 },
	],
	totalBytes: 12 * MiB + 1024,
	startedAt: '2026-11-28T14:43:00.000Z',
	finishedAt: '2026-11-28T14:46:05.000Z',
	durationSeconds: 185,
	warnings: [],
};

test('Backup VM Disk: what was made first (VM, ID, kind, consistency, size, duration, disks); raw values and details after', () => {
	const item = backupItem(backup);
	expect(Object.keys(item)).toEqual([
		'vm', 'id', 'kind', 'consistency', 'size', 'duration', 'diskSummary', 'warnings', 'method', 'path', 'parent', 'startedAt', 'finishedAt',
		'uuid', 'host', 'checkpoint', 'totalBytes', 'durationSeconds', 'disks',
	]);
	expect(item).toEqual({ ...backup, size: '12.0 MiB', duration: '3m 05s', diskSummary: 'vda 12.0 MiB qcow2, vdb 1.0 KiB qcow2' });
});

const { disks: backupDisks, ...backupRest } = backup;
const verification: BackupVerification = {
	dest: '/backups',
	vmDir: 'web01',
	vm: 'web01',
	id: backup.id,
	path: backup.path,
	manifest: {} as BackupVerification['manifest'],
	status: 'invalid',
	valid: false,
	checkedAt: '2026-11-29T01:00:00.000Z',
	disks: [
		{ target: 'vda', file: 'vda.qcow2', expectedSha256: 'a'.repeat(64), actualSha256: 'a'.repeat(64), status: 'valid', ok: true, qemuImgCheck: 'ok', detail: '' },
		{ target: 'vdb', file: 'vdb.qcow2', expectedSha256: 'b'.repeat(64), actualSha256: 'c'.repeat(64), status: 'invalid', ok: false, qemuImgCheck: 'ok', detail: 'sha256 differs' },
	],
	parents: [{ id: backup.parent!, path: '/backups/web01/20261127T144300Z', exists: true, status: 'valid', ok: true, detail: '' }],
	problems: ['vdb (vdb.qcow2): sha256 differs'],
	action: 'kept',
};

describe('Verify Checksum', () => {
	const input = { ...backupItem(backup), hostKeyWarning: 'w' };
	const item = verifiedItem(input, verification);

	test('the verdict first, then the input item in its own order, then what Verify adds', () => {
		const verdict = ['vm', 'id', 'valid', 'status', 'action', 'checkSummary', 'problems'];
		expect(Object.keys(item)).toEqual([...verdict, ...Object.keys(input).filter((key) => !verdict.includes(key)), 'checkedAt', 'parents']);
		expect(item).toMatchObject({ ...backupRest, valid: false, status: 'invalid', action: 'kept', checkSummary: 'vda valid, vdb invalid', problems: verification.problems, hostKeyWarning: 'w' });
		expect(item.parents).toEqual(verification.parents);
	});

	test('disks keep the shape they came in, in their order, each with its checks added', () => {
		expect(item.disks).toEqual(backupDisks.map((disk, index) => ({ ...disk, ...verification.disks[index] })));
		const reversed = verifiedItem({ disks: [...backupDisks].reverse() }, verification).disks as { target: string; ok: boolean; bytes: number }[];
		expect(reversed.map(({ target, ok, bytes }) => [target, ok, bytes])).toEqual([['vdb', false, 1024], ['vda', true, 12 * MiB]]);
	});

	test('an input without disks (a path typed in) gets the checks as disks; a checked disk the input lacks is added', () => {
		expect(verifiedItem({}, verification).disks).toEqual(verification.disks);
		expect(verifiedItem({ disks: [backupDisks[0]] }, verification).disks).toEqual([{ ...backupDisks[0], ...verification.disks[0] }, verification.disks[1]]);
	});

	test('a quarantined backup: path is where it is now', () => {
		const moved = verifiedItem(input, { ...verification, action: 'quarantined', path: `${backup.path}.quarantined` });
		expect(moved).toMatchObject({ action: 'quarantined', path: `${backup.path}.quarantined` });
	});
});

describe('error items for n8n\'s error output (forErrorOutput)', () => {
	test('only error and details: what the input already says is left to n8n\'s merge', () => {
		const input = { name: 'web01', uuid: 'u-1' };
		expect(forErrorOutput({ vm: 'web01', uuid: 'u-1', error: 'boom', hostKeyWarning: 'w' }, input)).toEqual({ error: 'boom', details: { vm: 'web01', hostKeyWarning: 'w' } });
		expect(forErrorOutput({ ...input, error: 'boom' }, input)).toEqual({ error: 'boom' });
		expect(forErrorOutput({ error: 'boom' }, {})).toEqual({ error: 'boom' });
	});
});
