/**
 * The pending-overlays file comes back from the destination, which others may write: only what a
 * snapshot backup of THIS VM writes is accepted (validatePendingOverlays), and the host-side merge
 * deletes nothing but regular files the domain no longer uses (its script, run here with a fake
 * virsh on PATH, since a real libvirt cannot be made to report these states on demand).
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { overlayPath, validatePendingOverlays } from '../../lib/backup/strategies';
import type { DiscoveredDisk, DiscoveredVm } from '../../lib/libvirt';
import { mergeArgv, overlayJobArgv } from '../../lib/libvirt/jobs';

const UUID = '6f1c7d0e-0000-4000-8000-00000000000a';
const VM_DIR = '/backups/web01';
const ID = '20261203T120000Z';

function disk(target: string, type: 'file' | 'block', source: string, backingStore: string[] = []): DiscoveredDisk {
	return {
		target,
		device: 'disk',
		type,
		format: 'qcow2',
		source: { path: source },
		readonly: false,
		shareable: false,
		backingStore,
		virtualBytes: 1 << 30,
		allocatedBytes: 1 << 20,
		backingChain: [],
		backupable: true,
	};
}

function vm(disks: DiscoveredDisk[]): DiscoveredVm {
	return {
		name: 'web01',
		uuid: UUID,
		state: 'running',
		persistent: true,
		autostart: false,
		hypervisor: 'kvm',
		disks,
		totalVirtualBytes: 0,
		totalAllocatedBytes: 0,
		backupable: true,
		reasons: [],
	};
}

const pending = (overlays: unknown, uuid: unknown = UUID) => JSON.stringify({ uuid, overlays });
const overlay = (dir: string, target = 'vda', id = ID, uuid = UUID) => `${dir}/.lvb-overlay-${uuid}-${id}-${target}.qcow2`;

describe('validatePendingOverlays accepts what a snapshot backup writes', () => {
	test('the VM still on overlays beside its disks (bases in the live XML backing store)', () => {
		const vda = overlay('/var/lib/libvirt/images');
		const vdb = overlay('/srv/disks', 'vdb');
		const running = vm([disk('vda', 'file', vda, ['/var/lib/libvirt/images/web01.qcow2']), disk('vdb', 'file', vdb, ['/srv/disks/data.raw'])]);
		const text = pending([{ target: 'vda', overlay: vda }, { target: 'vdb', overlay: vdb }]);
		expect(validatePendingOverlays(text, running, VM_DIR)).toEqual([{ target: 'vda', overlay: vda }, { target: 'vdb', overlay: vdb }]);
	});

	test('overlays already merged (the VM back on its disks), files maybe left', () => {
		const merged = vm([disk('vda', 'file', '/var/lib/libvirt/images/web01.qcow2')]);
		const entries = [{ target: 'vda', overlay: overlayPath(merged.disks[0], VM_DIR, UUID, ID, 'vda') }];
		expect(entries[0].overlay).toBe(overlay('/var/lib/libvirt/images'));
		expect(validatePendingOverlays(pending(entries), merged, VM_DIR)).toEqual(entries);
	});

	test('a block device: overlay in the VM backup folder, not in /dev', () => {
		const lvm = vm([disk('vda', 'block', '/dev/vg0/web01')]);
		expect(overlayPath(lvm.disks[0], VM_DIR, UUID, ID, 'vda')).toBe(overlay(VM_DIR));
		expect(validatePendingOverlays(pending([{ target: 'vda', overlay: overlay(VM_DIR) }]), lvm, VM_DIR)).toHaveLength(1);
	});

	test('a block device the VM still runs an overlay on (in the VM backup folder)', () => {
		const running = vm([disk('vda', 'file', overlay(VM_DIR, 'vda', '20261101T000000Z-1'), ['/dev/vg0/web01'])]);
		const entries = [{ target: 'vda', overlay: overlay(VM_DIR, 'vda', '20261101T000000Z-1') }];
		expect(validatePendingOverlays(pending(entries), running, VM_DIR)).toEqual(entries);
	});

	test('two VMs with disks in one folder get different overlay names', () => {
		const a = disk('vda', 'file', '/var/lib/libvirt/images/a.qcow2');
		const b = disk('vda', 'file', '/var/lib/libvirt/images/b.qcow2');
		expect(overlayPath(a, '/backups/a', UUID, ID, 'vda')).not.toBe(overlayPath(b, '/backups/b', '6f1c7d0e-0000-4000-8000-00000000000b', ID, 'vda'));
	});
});

describe('validatePendingOverlays refuses anything else, before anything is changed', () => {
	const base = '/var/lib/libvirt/images/web01.qcow2';
	const cdrom: DiscoveredDisk = { ...disk('hdc', 'file', ''), device: 'cdrom', source: {} };
	const onDisk = vm([disk('vda', 'file', base), disk('sdb', 'block', '/dev/sdb'), cdrom]);
	const good = overlay('/var/lib/libvirt/images');
	test.each([
		['not JSON', '{"uuid":', /not JSON/],
		['an array', '[]', /not a JSON object/],
		['null', 'null', /not a JSON object/],
		['another VM', pending([{ target: 'vda', overlay: good }], '00000000-0000-4000-8000-000000000000'), /is for VM 00000000-0000-4000-8000-000000000000, not 6f1c7d0e/],
		['no UUID', JSON.stringify({ overlays: [{ target: 'vda', overlay: good }] }), /is for no valid VM UUID/],
		['a UUID-like text that is not one', pending([{ target: 'vda', overlay: good }], 'root:$6$secret:19000:0:99999:7:::'), /is for no valid VM UUID, not/],
		['no overlays', pending([]), /no overlay list/],
		['an entry without a path', pending([{ target: 'vda' }]), /without target and path/],
		['a path as a number', pending([{ target: 'vda', overlay: 7 }]), /without target and path/],
		['a disk the VM does not have', pending([{ target: 'vdz', overlay: overlay('/var/lib/libvirt/images', 'vdz') }]), /has no disk "vdz"/],
		['one disk twice', pending([{ target: 'vda', overlay: good }, { target: 'vda', overlay: good }]), /listed twice/],
		['a canary file', pending([{ target: 'vda', overlay: '/etc/shadow' }]), /"\/etc\/shadow" is not an overlay name of ours for disk vda/],
		['the disk itself', pending([{ target: 'vda', overlay: base }]), /not an overlay name of ours/],
		['a folder (trailing slash: empty file name)', pending([{ target: 'vda', overlay: '/var/lib/libvirt/images/' }]), /not an overlay name of ours/],
		['an empty path', pending([{ target: 'vda', overlay: '' }]), /not an overlay name of ours/],
		['our name, another disk', pending([{ target: 'vda', overlay: overlay('/var/lib/libvirt/images', 'vdb') }]), /not an overlay name of ours for disk vda/],
		['our name without an id', pending([{ target: 'vda', overlay: `/var/lib/libvirt/images/.lvb-overlay-${UUID}--vda.qcow2` }]), /not an overlay name of ours/],
		['our name without the UUID (previous versions)', pending([{ target: 'vda', overlay: `/var/lib/libvirt/images/.lvb-overlay-${ID}-vda.qcow2` }]), /not an overlay name of ours/],
		['the overlay name of another VM', pending([{ target: 'vda', overlay: overlay('/var/lib/libvirt/images', 'vda', ID, '00000000-0000-4000-8000-000000000000') }]), /not an overlay name of ours/],
		['a disk without a source', pending([{ target: 'hdc', overlay: overlay('/var/lib/libvirt/images', 'hdc') }]), /disk hdc has no source file/],
		['our name, a folder elsewhere', pending([{ target: 'vda', overlay: overlay('/etc') }]), /is not where an overlay of disk vda is made \(\/var\/lib\/libvirt\/images\/\.lvb-overlay-6f1c7d0e-.*-vda\.qcow2\)/],
		['our name through ..', pending([{ target: 'vda', overlay: overlay('/var/lib/libvirt/images/../../../etc') }]), /is not where an overlay/],
		['our name through a sub-folder and ..', pending([{ target: 'vda', overlay: overlay('/var/lib/libvirt/images/x/..') }]), /is not where an overlay/],
		['our name with a doubled slash', pending([{ target: 'vda', overlay: overlay('/var/lib/libvirt/images/') }]), /is not where an overlay/],
		['our name beside a block device', pending([{ target: 'sdb', overlay: overlay('/dev', 'sdb') }]), /is not where an overlay of disk sdb is made \(\/backups\/web01\//],
	])('%s', (_label, text, reason) => {
		expect(() => validatePendingOverlays(text, onDisk, VM_DIR)).toThrow(reason);
		expect(() => validatePendingOverlays(text, onDisk, VM_DIR)).toThrow(/^\/backups\/web01\/\.lvb-pending\.json was not accepted \(.*\); nothing was changed\. /);
	});

	test('a VM running on an overlay does not make its name acceptable elsewhere', () => {
		const running = vm([disk('vda', 'file', overlay('/var/lib/libvirt/images'), [base])]);
		expect(() => validatePendingOverlays(pending([{ target: 'vda', overlay: overlay('/tmp') }]), running, VM_DIR)).toThrow(/is not where an overlay/);
	});
});

/** A fake virsh: logs its calls; `domblkinfo` says whether the VM runs on the path, `dumpxml` prints $LVB_FAKE_XML. */
const FAKE_VIRSH = `#!/bin/sh
printf '%s\\n' "$*" >>"$LVB_FAKE_LOG"
case " $* " in
  *" domblkinfo "*) case " $* " in *" $LVB_FAKE_ACTIVE "*) exit 0;; *) exit 1;; esac;;
  *" dumpxml "*) printf '%s\\n' "$LVB_FAKE_XML";;
  *" blockjob "*|*" blockcommit "*) exit 1;;
esac
exit 0
`;

describe('host side', () => {
	let root: string;
	let env: NodeJS.ProcessEnv;
	beforeEach(() => {
		root = fs.mkdtempSync(path.join(os.tmpdir(), 'lvb-pending-'));
		fs.mkdirSync(path.join(root, 'bin'));
		fs.writeFileSync(path.join(root, 'bin', 'virsh'), FAKE_VIRSH, { mode: 0o755 });
		env = { ...process.env, PATH: `${root}/bin:${process.env.PATH}`, LVB_FAKE_LOG: path.join(root, 'virsh.log'), LVB_FAKE_ACTIVE: 'none', LVB_FAKE_XML: '<domain/>' };
	});
	afterEach(() => fs.rmSync(root, { recursive: true, force: true }));

	const run = (argv: string[]) => spawnSync(argv[0], argv.slice(1), { encoding: 'utf8', env, timeout: 60_000 });

	test('merge: a symlink or FIFO at an overlay path is left alone (and its target untouched), a regular overlay is deleted', () => {
		const canary = path.join(root, 'canary');
		fs.writeFileSync(canary, 'keep me');
		const link = overlay(root, 'vda');
		fs.symlinkSync(canary, link);
		const fifo = overlay(root, 'vdb');
		expect(spawnSync('mkfifo', [fifo]).status).toBe(0);
		const regular = overlay(root, 'vdc');
		fs.writeFileSync(regular, 'overlay');
		const pendingFile = path.join(root, '.lvb-pending.json');
		fs.writeFileSync(pendingFile, '{}');
		const result = run(mergeArgv('qemu:///system', UUID, [link, fifo, regular], pendingFile));
		expect(result.status).toBe(1);
		expect(result.stderr).toContain(`${link} is not a regular file: left in place`);
		expect(result.stderr).toContain(`${fifo} is not a regular file: left in place`);
		expect(fs.lstatSync(link).isSymbolicLink()).toBe(true);
		expect(fs.readFileSync(canary, 'utf8')).toBe('keep me');
		expect(fs.lstatSync(fifo).isFIFO()).toBe(true);
		expect(fs.existsSync(regular)).toBe(false);
		expect(fs.existsSync(pendingFile)).toBe(true); // kept: the next run must see what is left
	});

	test('merge: an overlay the VM still runs on is never deleted when the merge fails', () => {
		const active = overlay(root, 'vda');
		fs.writeFileSync(active, 'overlay');
		env.LVB_FAKE_ACTIVE = active;
		env.LVB_FAKE_XML = `<domain><devices><disk><source file='${active}'/></disk></devices></domain>`;
		const pendingFile = path.join(root, '.lvb-pending.json');
		fs.writeFileSync(pendingFile, '{}');
		const result = run(mergeArgv('qemu:///system', UUID, [active], pendingFile));
		expect(result.status).toBe(1);
		expect(fs.existsSync(active)).toBe(true);
		expect(fs.readFileSync(path.join(root, 'virsh.log'), 'utf8')).toMatch(/blockcommit --domain \S+ --path \S+ --active --pivot --wait --delete/);
	});

	test('overlay job: the pending file is written without following a symlink planted at its temp name', () => {
		const canary = path.join(root, 'canary');
		fs.writeFileSync(canary, 'keep me');
		const pendingFile = path.join(root, '.lvb-pending.json');
		fs.symlinkSync(canary, `${pendingFile}.tmp`);
		const seen = path.join(root, 'seen');
		const argv = overlayJobArgv(
			{
				uri: 'qemu:///system',
				uuid: UUID,
				overlays: [{ target: 'vda', overlay: overlay(root) }],
				allTargets: ['vda'],
				quiesce: 'off',
				pendingFile,
				pendingContent: '{"uuid":"x"}',
				// The copy step: shows what the pending file held while the VM was on its overlays.
				command: ['sh', '-c', 'cat -- "$1" >"$2"', 'copy', pendingFile, seen],
			},
			'@@LVB-test',
		);
		const result = run(argv);
		expect(result.stderr).toBe('');
		expect(result.status).toBe(0);
		expect(fs.readFileSync(canary, 'utf8')).toBe('keep me');
		expect(fs.readFileSync(seen, 'utf8')).toBe('{"uuid":"x"}');
		expect(fs.existsSync(pendingFile)).toBe(false);
		expect(fs.existsSync(`${pendingFile}.tmp`)).toBe(false);
	});
});
