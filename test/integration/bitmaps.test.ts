/**
 * Our stale bitmaps (issue 8): when libvirt loses a checkpoint's metadata (`checkpoint-delete
 * --metadata`, a redefined VM), its bitmap stays in the qcow2 and QEMU keeps updating it. A backup
 * that is not an incremental finds the bitmaps that are ours (named as our checkpoints are) and have
 * no checkpoint, removes them (QMP on a running VM, qemu-img on a shut-off one) and names them in a
 * warning. Every other bitmap (someone else's, another destination's checkpoint, a backing file's)
 * stays.
 */
import { quoteArg as q } from '../../lib/shell';
import { checkpoints, labBackup as backup } from '../support/labBackup';
import { createTestVm, host, testDestination, type TestVm } from '../support/testVm';

jest.setTimeout(240_000);

interface LiveBitmap {
	name: string;
	count: number;
}

/** The bitmaps QEMU holds on the qcow2 node of this image file (its active layer), as QMP shows them. */
function liveBitmaps(vm: TestVm, file: string): { node: string; bitmaps: LiveBitmap[] } {
	const query = JSON.stringify({ execute: 'query-named-block-nodes', arguments: { flat: true } });
	const nodes = (JSON.parse(host(`virsh -q qemu-monitor-command ${q(vm.name)} ${q(query)}`)) as { return: { 'node-name': string; drv: string; file: string; 'dirty-bitmaps'?: LiveBitmap[] }[] }).return;
	const node = nodes.find((candidate) => candidate.drv === 'qcow2' && candidate.file === file);
	if (!node) throw new Error(`no qcow2 node for ${file}`);
	return { node: node['node-name'], bitmaps: (node['dirty-bitmaps'] ?? []).map(({ name, count }) => ({ name, count })) };
}

function liveNames(vm: TestVm, file: string): string[] {
	return liveBitmaps(vm, file).bitmaps.map((bitmap) => bitmap.name).sort();
}

function qmp(vm: TestVm, execute: string, args: object): void {
	const out = host(`virsh -q qemu-monitor-command ${q(vm.name)} ${q(JSON.stringify({ execute, arguments: args }))}`);
	if (out.includes('"error"')) throw new Error(`${execute} failed: ${out}`);
}

/** The bitmaps stored in a qcow2 file (a shut-off VM's image). */
function imageBitmaps(file: string): string[] {
	const info = JSON.parse(host(`qemu-img info -U -f qcow2 --output=json ${q(file)}`)) as { 'format-specific'?: { data?: { bitmaps?: { name: string }[] } } };
	return (info['format-specific']?.data?.bitmaps ?? []).map((bitmap) => bitmap.name).sort();
}

describe('stale bitmaps of ours on a running VM', () => {
	let vm: TestVm;
	let destination: { dest: string; cleanup(): void };
	let other: { dest: string; cleanup(): void };
	beforeEach(() => {
		vm = createTestVm('bitmaps', [{ target: 'vda', format: 'qcow2', virtualMiB: 64, writes: [{ pattern: 0x11, offsetMiB: 0, lengthMiB: 2 }] }]);
		destination = testDestination('bitmaps');
		other = testDestination('bitmaps-b');
	});
	afterEach(() => {
		vm.destroy();
		destination.cleanup();
		other.cleanup();
	});

	test('a checkpoint whose metadata libvirt lost: its bitmap stays in QEMU; the next (full) backup removes it with a warning and leaves every other bitmap', async () => {
		const vda = vm.disks[0].path;
		// Another destination's chain: its checkpoint is listed by libvirt, so its bitmap is not stale.
		const otherFull = await backup(vm.name, other.dest);
		const full = await backup(vm.name, destination.dest);
		const { node } = liveBitmaps(vm, vda);
		qmp(vm, 'block-dirty-bitmap-add', { node, name: 'foreign-keep', persistent: true });
		// Named like ours but not in any shape our checkpoints have: not ours either.
		qmp(vm, 'block-dirty-bitmap-add', { node, name: 'lvb-by-hand', persistent: true });

		host(`virsh -q checkpoint-delete --domain ${q(vm.name)} --checkpointname ${q(full.checkpoint!)} --metadata`);
		expect(checkpoints(vm)).toEqual([otherFull.checkpoint]);
		expect(liveNames(vm, vda)).toEqual(['foreign-keep', full.checkpoint, 'lvb-by-hand', otherFull.checkpoint].sort());
		// QEMU keeps recording guest writes into the orphaned bitmap.
		vm.guestWrite('vda', 0x22, 8, 1);
		expect(liveBitmaps(vm, vda).bitmaps.find((bitmap) => bitmap.name === full.checkpoint)?.count).toBeGreaterThan(0);

		const next = await backup(vm.name, destination.dest);
		expect(next.kind).toBe('full');
		expect(next.warnings).toContain(`removed stale bitmap(s) of ours that libvirt had no checkpoint for: vda: ${full.checkpoint}`);
		expect(liveNames(vm, vda)).toEqual(['foreign-keep', 'lvb-by-hand', next.checkpoint, otherFull.checkpoint].sort());
		expect(checkpoints(vm)).toEqual([next.checkpoint, otherFull.checkpoint].sort());

		// Nothing stale is left: an incremental follows, with no warning.
		vm.guestWrite('vda', 0x33, 12, 1);
		const after = await backup(vm.name, destination.dest);
		expect(after).toMatchObject({ kind: 'incremental', parent: next.id, warnings: [] });
	});

	test('only a backup that is not an incremental asks QEMU directly, which taints the domain "custom-monitor"; an incremental does not', async () => {
		const tainted = () => /tainted: custom monitor control commands issued/.test(host(`virsh dominfo ${q(vm.name)}`));
		const full = await backup(vm.name, destination.dest);
		expect(tainted()).toBe(true);
		expect(host(`cat ${q(`/var/log/libvirt/qemu/${vm.name}.log`)}`)).toMatch(/Domain id=\d+ is tainted: custom-monitor/);
		// A taint lasts as long as the QEMU process: start a fresh one (the bitmap is kept in the qcow2).
		host(`virsh -q destroy ${q(vm.name)} >/dev/null && virsh -q start ${q(vm.name)} >/dev/null`);
		expect(tainted()).toBe(false);
		const incremental = await backup(vm.name, destination.dest);
		expect(incremental).toMatchObject({ kind: 'incremental', parent: full.id, warnings: [] });
		expect(tainted()).toBe(false);
	});
});

describe('stale bitmaps of ours on a shut-off VM', () => {
	let vm: TestVm;
	let destination: { dest: string; cleanup(): void };
	beforeEach(() => {
		vm = createTestVm('bitmaps-off', [{ target: 'vda', format: 'qcow2', virtualMiB: 64, writes: [{ pattern: 0x11, offsetMiB: 0, lengthMiB: 2 }] }], 'shutoff');
		destination = testDestination('bitmaps-off');
	});
	afterEach(() => {
		vm.destroy();
		destination.cleanup();
	});

	test('a qcow2 with bitmaps of ours and no checkpoint: the backup removes them with a warning; foreign ones, a checkpoint\'s, and the backing file\'s stay', async () => {
		const vda = vm.disks[0].path;
		const base = `${vm.dir}/base.qcow2`;
		const stale = ['lvb-0123abcd-20250101T000000Z', 'lvb-20240101T000000Z'];
		const kept = 'lvb-89abcdef-20250102T000000Z';
		// The disk's backing file (a base other VMs may share) holds one of our names too: never written.
		host(`qemu-img create -q -f qcow2 ${q(base)} 64M && qemu-img bitmap --add -f qcow2 ${q(base)} ${q(stale[0])} && qemu-img rebase -u -f qcow2 -b ${q(base)} -F qcow2 ${q(vda)}`);
		for (const name of [...stale, kept, 'foreign-keep', 'lvb-by-hand']) host(`qemu-img bitmap --add -f qcow2 ${q(vda)} ${q(name)}`);
		// A checkpoint libvirt still lists (as another destination's would be): its bitmap is not stale.
		const checkpointXml = `<domaincheckpoint><name>${kept}</name><creationTime>1735776000</creationTime><disks><disk name='vda' checkpoint='bitmap' bitmap='${kept}'/></disks></domaincheckpoint>`;
		host(`printf '%s' ${q(checkpointXml)} > ${q(`${vm.dir}/checkpoint.xml`)} && virsh -q checkpoint-create --domain ${q(vm.name)} --xmlfile ${q(`${vm.dir}/checkpoint.xml`)} --redefine`);
		expect(checkpoints(vm)).toEqual([kept]);

		const result = await backup(vm.name, destination.dest);
		expect(result).toMatchObject({ kind: 'full', consistency: 'offline' });
		expect(result.warnings).toContain(`removed stale bitmap(s) of ours that libvirt had no checkpoint for: ${stale.map((name) => `vda: ${name}`).join(', ')}`);
		expect(imageBitmaps(vda)).toEqual(['foreign-keep', kept, 'lvb-by-hand'].sort());
		expect(imageBitmaps(base)).toEqual([stale[0]]);

		const again = await backup(vm.name, destination.dest);
		expect(again.warnings).toEqual([]);
	});
});
