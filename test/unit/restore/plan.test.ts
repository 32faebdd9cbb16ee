/** The restore plan: which chain each disk is rebuilt from, where it goes, and every refusal. */
import type { CatalogBackup } from '../../../lib/catalog';
import { planRestore, type RestoreFacts, type RestorePlan, type RestoreRequest } from '../../../lib/restore/plan';
import type { Manifest, ManifestDisk } from '../../../lib/store/manifest';
import type { VerificationRecord } from '../../../lib/store';
import { manifest } from '../catalog/local';

const DEST = '/backups';
const UUID = '6f1c7d0e-0000-4000-8000-000000000001';
const FULL = '20261120T010000Z';
const INC1 = '20261121T010000Z';
const INC2 = '20261122T010000Z';

function disk(target: string, extra: Partial<ManifestDisk> = {}): ManifestDisk {
	return { target, source: `/images/web01-${target}.qcow2`, sourceFormat: 'qcow2', file: `${target}.qcow2`, format: 'qcow2', virtualBytes: 1 << 30, bytes: 4096, sha256: target.charCodeAt(2).toString(16).repeat(32), compressed: false, ...extra };
}

function backup(id: string, extra: Partial<Manifest> = {}, more: Partial<CatalogBackup> = {}): CatalogBackup {
	return { dest: DEST, vmDir: 'web01', vm: 'web01', id, path: `${DEST}/web01/${id}`, manifest: manifest('web01', id, { disks: [disk('vda'), disk('vdb')], ...extra }), protected: false, diskBytes: 1000, missingFiles: [], ...more };
}

const incremental = (id: string, parent: string) =>
	backup(id, { kind: 'incremental', parent, disks: [disk('vda', { backingFile: `../${parent}/vda.qcow2` }), disk('vdb', { backingFile: `../${parent}/vdb.qcow2` })] });

const store = () => [incremental(INC2, INC1), incremental(INC1, FULL), backup(FULL)];

const shutOff: RestoreFacts = {
	vm: {
		uuid: UUID,
		name: 'web01',
		state: 'shutoff',
		persistent: true,
		disks: [
			{ target: 'vda', type: 'file', format: 'qcow2', path: '/images/web01-vda.qcow2' },
			{ target: 'vdb', type: 'file', format: 'qcow2', path: '/images/web01-vdb.qcow2' },
		],
	},
};
const running: RestoreFacts = { vm: { ...shutOff.vm!, state: 'running' } };

const invalidRecord = (id: string): VerificationRecord => ({ format: 'n8n-nodes-libvirt-backup/verification', version: 1, backupId: id, verifiedAt: '2026-11-23T02:00:00Z', status: 'invalid', ok: false, disks: [], parents: [], problems: ['vda.qcow2: sha256 differs'] });

function plan(id: string, request: RestoreRequest, facts: RestoreFacts = shutOff, backups: CatalogBackup[] = store()): RestorePlan {
	const chosen = backups.find((candidate) => candidate.id === id)!;
	return planRestore(chosen, { backups }, request, facts);
}

describe('restore plans', () => {
	test('original target, full + 2 incrementals: each disk over its current path from its whole chain, nearest first', () => {
		const result = plan(INC2, { target: 'original' });
		expect(result.chain.map((member) => member.id)).toEqual([INC2, INC1, FULL]);
		expect(result.disks.map((d) => [d.target, d.path, d.temp, d.format])).toEqual([
			['vda', '/images/web01-vda.qcow2', '/images/web01-vda.qcow2.lvb-restore.partial', 'qcow2'],
			['vdb', '/images/web01-vdb.qcow2', '/images/web01-vdb.qcow2.lvb-restore.partial', 'qcow2'],
		]);
		expect(result.disks[0].layers.map((layer) => layer.path)).toEqual([`${DEST}/web01/${INC2}/vda.qcow2`, `${DEST}/web01/${INC1}/vda.qcow2`, `${DEST}/web01/${FULL}/vda.qcow2`]);
		const spec = JSON.parse(result.disks[0].spec.replace(/^json:/, ''));
		expect(spec).toEqual({
			driver: 'qcow2',
			file: { driver: 'file', filename: `${DEST}/web01/${INC2}/vda.qcow2` },
			backing: { driver: 'qcow2', file: { driver: 'file', filename: `${DEST}/web01/${INC1}/vda.qcow2` }, backing: { driver: 'qcow2', file: { driver: 'file', filename: `${DEST}/web01/${FULL}/vda.qcow2` }, backing: null } },
		});
		expect(result.vmUuid).toBe(UUID);
		expect(result.stop).toBeUndefined();
	});

	test('only the disks asked for; raw source disks come back raw', () => {
		const backups = [backup(FULL, { disks: [disk('vda'), disk('vdb', { source: '/images/data.img', sourceFormat: 'raw' })] })];
		const facts: RestoreFacts = { vm: { ...shutOff.vm!, disks: [shutOff.vm!.disks[0], { target: 'vdb', type: 'file', format: 'raw', path: '/images/data.img' }] } };
		const result = plan(FULL, { target: 'original', disks: ['vdb'] }, facts, backups);
		expect(result.disks.map((d) => [d.target, d.path, d.format])).toEqual([['vdb', '/images/data.img', 'raw']]);
	});

	test('folder target: the source file names inside the folder, target names when they clash or are unusable; a new VM to define', () => {
		const backups = [backup(FULL, { disks: [disk('vda', { source: '/a/disk.qcow2' }), disk('vdb', { source: '/b/disk.qcow2' }), disk('vdc', { source: '/c/..' }), disk('vdd', { source: '/d/own.img', sourceFormat: 'raw' })] })];
		const result = plan(FULL, { target: 'folder', folder: '/restore/here/', newVmName: `web01 '$(x)"`, startNewVm: true }, {}, backups);
		expect(result.disks.map((d) => [d.path, d.format])).toEqual([
			['/restore/here/vda.qcow2', 'qcow2'],
			['/restore/here/vdb.qcow2', 'qcow2'],
			['/restore/here/vdc.qcow2', 'qcow2'],
			['/restore/here/own.img', 'raw'],
		]);
		expect(result.defineVm).toEqual({ name: `web01 '$(x)"`, start: true });
		expect(result.vmUuid).toBeUndefined();
	});

	test.each<[string, RestoreRequest['shutdownFirst']]>([['graceful', 'graceful'], ['force', 'force'], ['graceful then force', 'graceful-then-force']])('a running VM with shut down first (%s) is stopped first', (_name, mode) => {
		expect(plan(FULL, { target: 'original', shutdownFirst: mode }, running).stop).toEqual({ uuid: UUID, mode });
	});

	test('force restores an invalid backup, with a warning', () => {
		const backups = [incremental(INC1, FULL), backup(FULL, {}, { verification: invalidRecord(FULL) })];
		const result = plan(INC1, { target: 'original', force: true }, shutOff, backups);
		expect(result.force).toBe(true);
		expect(result.warnings).toEqual([expect.stringMatching(/Backup 20261120T010000Z, which backup 20261121T010000Z builds on, failed its latest verification/)]);
	});
});

describe('restore refusals', () => {
	const table: [string, () => RestorePlan, RegExp][] = [
		['a running VM without shut down first', () => plan(FULL, { target: 'original' }, running), /is running: its disks can only be restored while it is shut off.*Shut Down First/],
		['a paused VM', () => plan(FULL, { target: 'original', shutdownFirst: 'no' }, { vm: { ...shutOff.vm!, state: 'paused' } }), /is paused/],
		['a transient running VM (shutting it down removes it)', () => plan(FULL, { target: 'original', shutdownFirst: 'force' }, { vm: { ...running.vm!, persistent: false } }), /transient/],
		['the VM does not exist', () => plan(FULL, { target: 'original' }, {}), /is not defined on this host: restore to a folder/],
		['the VM disk moved since the backup', () => plan(FULL, { target: 'original' }, { vm: { ...shutOff.vm!, disks: [{ ...shutOff.vm!.disks[0], path: '/elsewhere/vda.qcow2' }, shutOff.vm!.disks[1]] } }), /vda of VM web01 is \/elsewhere\/vda.qcow2 now, the backup is of \/images\/web01-vda.qcow2/],
		['the VM disk is now a block device', () => plan(FULL, { target: 'original' }, { vm: { ...shutOff.vm!, disks: [{ target: 'vda', type: 'block', path: '/dev/vg/x' }, shutOff.vm!.disks[1]] } }), /block disk now/],
		['the VM disk has another format now', () => plan(FULL, { target: 'original' }, { vm: { ...shutOff.vm!, disks: [{ ...shutOff.vm!.disks[0], format: 'raw' }, shutOff.vm!.disks[1]] } }), /is a raw disk now, the backup is of a qcow2 disk/],
		['the VM lacks a disk of the backup', () => plan(FULL, { target: 'original' }, { vm: { ...shutOff.vm!, disks: [shutOff.vm!.disks[0]] } }), /has no disk vdb now/],
		['a disk the backup lacks', () => plan(FULL, { target: 'original', disks: ['vdz'] }), /has no disk vdz \(it has: vda, vdb\)/],
		['a disk listed twice', () => plan(FULL, { target: 'original', disks: ['vda', 'vda'] }), /listed twice/],
		['a folder outside with ..', () => plan(FULL, { target: 'folder', folder: '/restore/../etc' }), /Restore folder "\/restore\/..\/etc" must not contain ".."/],
		['a relative folder', () => plan(FULL, { target: 'folder', folder: 'restore' }), /Restore folder must be an absolute path/],
		['no folder', () => plan(FULL, { target: 'folder' }), /needs the folder/],
		['the root folder', () => plan(FULL, { target: 'folder', folder: '/' }), /root directory/],
		['a new VM over the original disks', () => plan(FULL, { target: 'original', newVmName: 'x' }), /only be defined on disks restored to a folder/],
		['a hostile new VM name', () => plan(FULL, { target: 'folder', folder: '/r', newVmName: '../../etc/x' }), /cannot be used: it contains '\/'/],
		['a new VM name with a line break', () => plan(FULL, { target: 'folder', folder: '/r', newVmName: 'a\nb' }), /control character/],
		['start without a new VM', () => plan(FULL, { target: 'folder', folder: '/r', startNewVm: true }), /needs a new VM name/],
		['an incomplete chain (parent gone)', () => plan(INC2, { target: 'original' }, shutOff, [incremental(INC2, INC1), backup(FULL)]), /chain is incomplete \(parent backup 20261121T010000Z is not in the store\)/],
		['a loop in the chain', () => plan(INC1, { target: 'original' }, shutOff, [incremental(INC1, INC2), incremental(INC2, INC1)]), /its own ancestor/],
		['a backing file that is not the parent', () => plan(INC1, { target: 'original' }, shutOff, [backup(INC1, { kind: 'incremental', parent: FULL, disks: [disk('vda', { backingFile: `../${INC2}/vda.qcow2` }), disk('vdb')] }), backup(FULL)]), /builds on ..\/20261122T010000Z\/vda.qcow2, not on its parent backup/],
		['a parent without the disk', () => plan(INC1, { target: 'original', disks: ['vdb'] }, shutOff, [incremental(INC1, FULL), backup(FULL, { disks: [disk('vda')] })]), /chain of disk vdb is not complete/],
		['an image missing from a chain member', () => plan(INC1, { target: 'original' }, shutOff, [incremental(INC1, FULL), backup(FULL, {}, { missingFiles: ['vda.qcow2'] })]), /Backup 20261120T010000Z cannot be restored from: image\(s\) vda.qcow2 are missing/],
		['an invalid backup without force', () => plan(FULL, { target: 'original' }, shutOff, [backup(FULL, {}, { verification: invalidRecord(FULL) })]), /failed its latest verification.*sha256 differs.*Set Force/],
		['an invalid parent without force', () => plan(INC1, { target: 'folder', folder: '/r' }, {}, [incremental(INC1, FULL), backup(FULL, {}, { verification: invalidRecord(FULL) })]), /which backup 20261121T010000Z builds on, failed its latest verification/],
		['a chain member mid-consolidation', () => plan(INC1, { target: 'original' }, shutOff, [incremental(INC1, FULL), backup(FULL, {}, { consolidation: { journal: '{}', partials: [] } })]), /middle of a consolidation/],
		['a source disk format that is not qcow2 or raw', () => plan(FULL, { target: 'folder', folder: '/r' }, {}, [backup(FULL, { disks: [disk('vda', { sourceFormat: 'vmdk' })] })]), /was a vmdk disk/],
	];
	test.each(table)('%s', (_name, run, message) => {
		expect(run).toThrow(message);
	});
});
