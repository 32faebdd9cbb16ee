/**
 * The chain rules of Backup VM Disk on the host (issue 8): what an auto backup builds on after a
 * copy, a broken bitmap, a failed verification, an unreadable manifest, a second destination, and
 * when New Full Backup After starts a new chain. The choices themselves are table-tested in
 * test/unit/backup/plan.test.ts; these show they hold against real libvirtd.
 */
import { pruneBackups } from '../../lib/catalog';
import { quoteArg as q } from '../../lib/shell';
import { withSsh } from '../../lib/ssh';
import { labTarget } from '../support/targets';
import { checkpoints, labBackup as backup } from '../support/labBackup';
import { createTestVm, host, testDestination, type TestVm } from '../support/testVm';

jest.setTimeout(240_000);

describe('chain rules on a running VM', () => {
	let vm: TestVm;
	let destination: { dest: string; cleanup(): void };
	beforeEach(() => {
		vm = createTestVm('chain', [{ target: 'vda', format: 'qcow2', virtualMiB: 64, writes: [{ pattern: 0x11, offsetMiB: 0, lengthMiB: 2 }] }]);
		destination = testDestination('chain');
	});
	afterEach(() => {
		vm.destroy();
		destination.cleanup();
	});

	test('a copy leaves the chain alone: the next auto backup is an incremental on the full before it', async () => {
		const full = await backup(vm.name, destination.dest);
		const copy = await backup(vm.name, destination.dest, { mode: 'copy' });
		expect(copy).toMatchObject({ kind: 'copy', checkpoint: undefined });
		vm.guestWrite('vda', 0x22, 8, 1);
		const next = await backup(vm.name, destination.dest);
		expect(next).toMatchObject({ kind: 'incremental', parent: full.id, warnings: [] });
	});

	test('a checkpoint whose bitmap is gone: auto falls back to a full saying why, and the broken checkpoint is removed', async () => {
		const full = await backup(vm.name, destination.dest);
		// As after some crashes and guest-side tools: libvirt keeps the checkpoint, QEMU lost the bitmap.
		const remove = JSON.stringify({ execute: 'block-dirty-bitmap-remove', arguments: { node: 'libvirt-1-format', name: full.checkpoint } });
		host(`virsh -q qemu-monitor-command ${q(vm.name)} ${q(remove)}`);
		const next = await backup(vm.name, destination.dest);
		expect(next.kind).toBe('full');
		expect(next.warnings.join('\n')).toMatch(new RegExp(`full backup: checkpoint ${full.checkpoint} is unusable: missing or broken bitmap for vda`));
		expect(next.warnings.join('\n')).not.toMatch(/could not be removed/);
		expect(checkpoints(vm)).toEqual([next.checkpoint]);
		const after = await backup(vm.name, destination.dest);
		expect(after).toMatchObject({ kind: 'incremental', parent: next.id, warnings: [] });
	});

	test('a chain with a backup that failed verification starts a new full, with a warning', async () => {
		const full = await backup(vm.name, destination.dest);
		const record = {
			format: 'n8n-nodes-libvirt-backup/verification',
			version: 1,
			backupId: full.id,
			verifiedAt: new Date().toISOString(),
			status: 'invalid',
			ok: false,
			disks: [],
			parents: [],
			problems: ['vda.qcow2: sha256 differs'],
		};
		host(`printf '%s' ${q(JSON.stringify(record))} > ${q(`${full.path}/verification.json`)}`);
		const next = await backup(vm.name, destination.dest);
		expect(next.kind).toBe('full');
		expect(next.warnings).toContain(`full backup: backup ${full.id} of the chain failed verification`);
	});

	test('an unreadable newer manifest is skipped with a warning, not a failure of every later backup', async () => {
		const full = await backup(vm.name, destination.dest);
		const bogus = `${destination.dest}/${vm.name}/29990101T000000Z`;
		host(`mkdir -p ${q(bogus)} && printf '{"format": "something else"' > ${q(`${bogus}/manifest.json`)}`);
		const next = await backup(vm.name, destination.dest);
		expect(next).toMatchObject({ kind: 'incremental', parent: full.id });
		expect(next.warnings.join('\n')).toMatch(/backup 29990101T000000Z was skipped: /);
		expect(host(`ls ${q(bogus)}`).trim()).toBe('manifest.json');
	});

	test('one VM backed up to two destinations keeps an incremental chain in each', async () => {
		const other = testDestination('chain-b');
		try {
			const fullA = await backup(vm.name, destination.dest);
			const fullB = await backup(vm.name, other.dest);
			expect(fullB.kind).toBe('full');
			vm.guestWrite('vda', 0x33, 4, 1);
			const nextA = await backup(vm.name, destination.dest);
			expect(nextA).toMatchObject({ kind: 'incremental', parent: fullA.id, warnings: [] });
			const nextB = await backup(vm.name, other.dest);
			expect(nextB).toMatchObject({ kind: 'incremental', parent: fullB.id, warnings: [] });
			// One checkpoint per destination: the newest of each chain.
			expect(checkpoints(vm)).toEqual([nextA.checkpoint, nextB.checkpoint].sort());
		} finally {
			other.cleanup();
		}
	});

	test('New Full Backup After 2 incrementals: full, incremental, incremental, then a new full', async () => {
		const policy = { newFullAfter: { incrementals: 2 } };
		const kinds = [];
		for (let night = 0; night < 4; night++) {
			vm.guestWrite('vda', 0x40 + night, night, 1);
			kinds.push((await backup(vm.name, destination.dest, policy)).kind);
		}
		expect(kinds).toEqual(['full', 'incremental', 'incremental', 'full']);
	});
});

describe('what already held, and must keep holding', () => {
	let vm: TestVm;
	let destination: { dest: string; cleanup(): void };
	beforeEach(() => {
		vm = createTestVm('held', [{ target: 'vda', format: 'qcow2', virtualMiB: 64, writes: [{ pattern: 0x11, offsetMiB: 0, lengthMiB: 2 }] }]);
		destination = testDestination('held');
	});
	afterEach(() => {
		vm.destroy();
		destination.cleanup();
	});

	const identical = (image: string, disk: string) => expect(host(`qemu-img compare -U ${q(image)} ${q(disk)}`)).toContain('Images are identical');

	test('a disk added mid-chain gives a full with a warning, then incrementals of both disks', async () => {
		const full = await backup(vm.name, destination.dest);
		const vdb = `${vm.dir}/vdb.qcow2`;
		host(`qemu-img create -q -f qcow2 ${q(vdb)} 32M && virsh -q attach-disk ${q(vm.name)} ${q(vdb)} vdb --driver qemu --subdriver qcow2 --targetbus virtio --config >/dev/null`);
		// The lab's machine type has no PCI hotplug: the new disk arrives with a restart, checkpoints kept.
		host(`virsh -q destroy ${q(vm.name)} >/dev/null && virsh -q start ${q(vm.name)} >/dev/null`);
		const next = await backup(vm.name, destination.dest);
		expect(next).toMatchObject({ kind: 'full', warnings: [`full backup: the previous backup ${full.id} has no vdb`] });
		vm.guestWrite('vda', 0x22, 8, 1);
		const inc = await backup(vm.name, destination.dest);
		expect(inc).toMatchObject({ kind: 'incremental', parent: next.id, warnings: [] });
		expect(inc.disks.map((disk) => [disk.target, disk.backingFile])).toEqual([
			['vda', `../${next.id}/vda.qcow2`],
			['vdb', `../${next.id}/vdb.qcow2`],
		]);
		identical(`${inc.path}/vda.qcow2`, vm.disks[0].path);
		identical(`${inc.path}/vdb.qcow2`, vdb);
	});

	test('a VM redefined (its checkpoints gone from libvirt) gives a full', async () => {
		const full = await backup(vm.name, destination.dest);
		const xml = q(`${vm.dir}/redefine.xml`);
		host(`virsh -q destroy ${q(vm.name)} >/dev/null && virsh -q dumpxml --inactive ${q(vm.name)} > ${xml} && virsh -q undefine ${q(vm.name)} --checkpoints-metadata >/dev/null && virsh -q define ${xml} >/dev/null && virsh -q start ${q(vm.name)} >/dev/null`);
		const next = await backup(vm.name, destination.dest);
		// Its bitmap stayed in the qcow2, which the full removes.
		expect(next).toMatchObject({
			kind: 'full',
			warnings: [`full backup: checkpoint ${full.checkpoint} no longer exists in libvirt`, `removed stale bitmap(s) of ours that libvirt had no checkpoint for: vda: ${full.checkpoint}`],
		});
	});

	test('a disk resized mid-chain gives a correct incremental of the new size', async () => {
		const full = await backup(vm.name, destination.dest);
		host(`virsh -q blockresize ${q(vm.name)} vda 96M >/dev/null`);
		vm.guestWrite('vda', 0x33, 80, 2);
		const inc = await backup(vm.name, destination.dest);
		expect(inc).toMatchObject({ kind: 'incremental', parent: full.id });
		expect(JSON.parse(host(`qemu-img info -U --output=json ${q(`${inc.path}/vda.qcow2`)}`))['virtual-size']).toBe(96 * 1024 * 1024);
		identical(`${inc.path}/vda.qcow2`, vm.disks[0].path);
	});

	test('a shut-off backup between two live ones restarts the chain, and prune keeps what the newest needs', async () => {
		await backup(vm.name, destination.dest);
		host(`virsh -q destroy ${q(vm.name)} >/dev/null`);
		const offline = await backup(vm.name, destination.dest);
		expect(offline).toMatchObject({ kind: 'full', consistency: 'offline' });
		host(`virsh -q start ${q(vm.name)} >/dev/null`);
		const restart = await backup(vm.name, destination.dest);
		expect(restart).toMatchObject({ kind: 'full', warnings: [`full backup: the previous backup ${offline.id} has no checkpoint`] });
		vm.guestWrite('vda', 0x44, 4, 1);
		const inc = await backup(vm.name, destination.dest);
		expect(inc).toMatchObject({ kind: 'incremental', parent: restart.id });
		const pruned = await withSsh(labTarget(), (ssh) => pruneBackups(ssh, { dest: destination.dest, policy: { keepLast: 1 }, dryRun: false, consolidate: false }));
		expect(pruned.items.map((item) => [item.id, item.action])).toEqual([
			[inc.id, 'keep'],
			[restart.id, 'keep'],
			[offline.id, 'prune'],
			[expect.any(String), 'prune'],
		]);
		identical(`${inc.path}/vda.qcow2`, vm.disks[0].path);
	});
});
