/**
 * Backup VM Disk against real libvirtd and real (OS-less) VMs through the lab's sshd.
 * Each test uses its own throwaway VM and destination.
 */
import { backupVm, type BackupRequest, type BackupResult } from '../../lib/backup';
import { parseManifest } from '../../lib/store';
import { isLibvirtBackupError } from '../../lib/errors';
import { quoteArg as q } from '../../lib/shell';
import { SshConnection, withSsh } from '../../lib/ssh';
import { loadLab } from '../support/lab';
import { labTarget } from '../support/targets';
import { createTestVm, host, testDestination, type TestVm } from '../support/testVm';

jest.setTimeout(180_000);

const lab = loadLab();

function request(vm: string, dest: string, overrides: Partial<BackupRequest> = {}): BackupRequest {
	return { uri: lab.systemUri, vm, dest, mode: 'auto', compression: 'none', quiesce: 'auto', holder: `jest ${process.pid}`, host: 'lab', ...overrides };
}

function backup(vm: string, dest: string, overrides: Partial<BackupRequest> = {}): Promise<BackupResult> {
	return withSsh(labTarget(), (ssh) => backupVm(ssh, request(vm, dest, overrides)));
}

function compare(a: string, b: string): string {
	return host(`qemu-img compare -U ${q(a)} ${q(b)} 2>&1 || true`).trim();
}

/** What's left on the host that must not be: partials, incomplete folders, backup jobs. */
function leftovers(vm: TestVm, dest: string): { files: string; job: string } {
	return {
		files: host(`find ${q(dest)} \\( -name '*.partial' -o -name '.lvb-incomplete' -o -name '*.tmp' \\) -print`).trim(),
		job: host(`LC_ALL=C virsh -q domjobinfo ${q(vm.name)} --rawstats | head -1`).trim(),
	};
}

describe('shut-off VM', () => {
	let vm: TestVm;
	let destination: { dest: string; cleanup(): void };
	beforeAll(() => {
		vm = createTestVm('offline', [
			{ target: 'vda', format: 'qcow2', virtualMiB: 128, writes: [{ pattern: 0x11, offsetMiB: 0, lengthMiB: 4 }] },
			{ target: 'vdb', format: 'raw', virtualMiB: 64, writes: [{ pattern: 0x22, offsetMiB: 10, lengthMiB: 3 }] },
		], 'shutoff');
		// Make vda an overlay on a backing chain: base (0x11 data) <- top (0x33 data).
		const vda = vm.disks[0].path;
		host(`mv ${q(vda)} ${q(`${vm.dir}/base.qcow2`)} && qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 ${q(vda)} && qemu-io -f qcow2 -c 'write -P 0x33 64M 2M' ${q(vda)} >/dev/null`);
		destination = testDestination('offline');
	});
	afterAll(() => {
		vm.destroy();
		destination.cleanup();
	});

	test('images equal the sources (backing chain flattened) and manifest checksums match sha256sum', async () => {
		const result = await backup(vm.name, destination.dest);
		expect(result).toMatchObject({ kind: 'full', method: 'offline-convert', consistency: 'offline', warnings: [] });
		expect(result.path).toBe(`${destination.dest}/${vm.name}/${result.id}`);
		for (const disk of vm.disks) {
			const image = `${result.path}/${disk.target}.qcow2`;
			expect(compare(image, disk.path)).toBe('Images are identical.');
			expect(host(`qemu-img info --output=json ${q(image)}`)).not.toContain('backing-filename');
		}
		const manifest = parseManifest(host(`cat ${q(`${result.path}/manifest.json`)}`), 'test');
		const sums = host(`cd ${q(result.path)} && sha256sum vda.qcow2 vdb.qcow2`);
		for (const disk of manifest.disks) expect(sums).toContain(`${disk.sha256}  ${disk.file}`);
		expect(manifest.disks.map((disk) => [disk.target, disk.bytes])).toEqual(result.disks.map((disk) => [disk.target, disk.bytes]));
		expect(host(`ls -A ${q(result.path)}`).split('\n').filter(Boolean).sort()).toEqual(['domain.xml', 'manifest.json', 'vda.qcow2', 'vdb.qcow2']);
		expect(host(`cat ${q(`${result.path}/domain.xml`)}`)).toContain(`<name>${vm.name}</name>`);
		expect(leftovers(vm, destination.dest).files).toBe('');
	});

	test('a destination too small for the disks fails before writing, leaves nothing, VM untouched', async () => {
		const mount = `${vm.dir}/tiny`;
		host(`mkdir -p ${q(mount)} && mount -t tmpfs -o size=4m lvb-tiny ${q(mount)}`);
		try {
			const error = await backup(vm.name, mount).catch((e: unknown) => e);
			expect(isLibvirtBackupError(error, 'NO_SPACE')).toBe(true);
			expect((error as Error).message).toMatch(new RegExp(`^Not enough space on ${mount}: need \\d+\\.\\d MiB, \\d+\\.\\d MiB free$`));
			// Only the VM folder and its lock file (kept: deleting a lock file others may wait on breaks flock).
			expect(host(`find ${q(mount)} -mindepth 2 ! -name .lvb.lock -print`).trim()).toBe('');
			expect(host(`virsh -q domstate ${q(vm.name)}`).trim()).toBe('shut off');
		} finally {
			host(`umount ${q(mount)}`);
		}
	});
});

describe('running VM', () => {
	let vm: TestVm;
	let destination: { dest: string; cleanup(): void };
	beforeAll(() => {
		vm = createTestVm('live', [
			{ target: 'vda', format: 'qcow2', virtualMiB: 2048, writes: [{ pattern: 0x44, offsetMiB: 0, lengthMiB: 1536 }] },
			{ target: 'vdb', format: 'raw', virtualMiB: 64, writes: [{ pattern: 0x55, offsetMiB: 1, lengthMiB: 2 }] },
		]);
		destination = testDestination('live');
	});
	afterAll(() => {
		vm.destroy();
		destination.cleanup();
	});

	test('the backup is the disk as it was when the job started, although the guest writes during the job', async () => {
		// Without a guest OS the disk only changes when we write: this copy is the state at job start.
		const reference = `${vm.dir}/reference.qcow2`;
		// On a fast or busy machine the job can end before the write is issued; such an attempt proves
		// nothing, so it is made again (with another byte pattern, so that the write always changes the disk).
		let jobStateAtWrite = '';
		let result: Awaited<ReturnType<typeof backupVm>> | undefined;
		for (let attempt = 0; attempt < 3 && jobStateAtWrite !== 'Job type: 2'; attempt++) {
			host(`rm -f ${q(reference)} && qemu-img convert -U -O qcow2 ${q(vm.disks[0].path)} ${q(reference)}`);
			jobStateAtWrite = '';
			result = await withSsh(labTarget(), (ssh) =>
				backupVm(ssh, request(vm.name, destination.dest, { mode: 'full' }), {
					onProgress: (progress) => {
						if (progress.phase === 'copy' && jobStateAtWrite === '') {
							// One host command: the job's state, then at once the guest write.
							const job = `LC_ALL=C virsh -q domjobinfo ${q(vm.name)} --rawstats | head -1`;
							jobStateAtWrite = host(`${job}; ${vm.guestWriteCommand('vda', 0xee - attempt, 100, 64)} >/dev/null`).trim();
						}
					},
				}),
			);
		}
		if (!result) throw new Error('no backup was made');
		expect(jobStateAtWrite).toBe('Job type: 2'); // the job was running when the write was issued
		expect(result).toMatchObject({ kind: 'full', method: 'push', consistency: 'crash' });
		expect(result.warnings).toContain('no guest agent configured: crash-consistent');
		expect(compare(`${result.path}/vda.qcow2`, reference)).toBe('Images are identical.');
		expect(compare(vm.disks[0].path, reference)).toMatch(/Content mismatch at offset 104857600/);
		expect(compare(`${result.path}/vdb.qcow2`, vm.disks[1].path)).toBe('Images are identical.');
		expect(leftovers(vm, destination.dest)).toEqual({ files: '', job: 'Job type: 0' });
	});

	test('an incremental holds about the changed bytes and the chain rebuilds the disk at that time', async () => {
		const full = await backup(vm.name, destination.dest, { mode: 'full' });
		vm.guestWrite('vda', 0x77, 300, 16);
		const state = `${vm.dir}/state-at-incremental.qcow2`;
		host(`qemu-img convert -U -O qcow2 ${q(vm.disks[0].path)} ${q(state)}`);
		const incremental = await backup(vm.name, destination.dest, { mode: 'auto' });
		expect(incremental).toMatchObject({ kind: 'incremental', parent: full.id, method: 'push' });
		const vda = incremental.disks.find((disk) => disk.target === 'vda')!;
		expect(vda.backingFile).toBe(`../${full.id}/vda.qcow2`);
		expect(vda.bytes).toBeGreaterThan(16 * 1024 * 1024);
		expect(vda.bytes).toBeLessThan(20 * 1024 * 1024);
		// The raw disk has no bitmap: it is copied in full each time.
		expect(incremental.disks.find((disk) => disk.target === 'vdb')!.backingFile).toBeUndefined();
		const rebuilt = `${vm.dir}/rebuilt.qcow2`;
		host(`qemu-img convert -O qcow2 ${q(`${incremental.path}/vda.qcow2`)} ${q(rebuilt)}`);
		expect(compare(rebuilt, state)).toBe('Images are identical.');
		expect(host(`virsh -q checkpoint-list ${q(vm.name)} --name`).trim()).toBe(incremental.checkpoint);
	});

	test('a deleted checkpoint makes the next backup a full one, with a warning', async () => {
		const before = await backup(vm.name, destination.dest);
		host(`virsh -q checkpoint-delete ${q(vm.name)} ${q(before.checkpoint!)}`);
		const after = await backup(vm.name, destination.dest, { mode: 'incremental' });
		expect(after.kind).toBe('full');
		expect(after.warnings).toContain(`incremental not possible (checkpoint ${before.checkpoint} no longer exists in libvirt): full backup instead`);
		expect(compare(`${after.path}/vda.qcow2`, vm.disks[0].path)).toBe('Images are identical.');
	});

	test('two concurrent backups of one VM: one succeeds, the other fails fast with the lock error', async () => {
		const results = await Promise.allSettled([backup(vm.name, destination.dest, { mode: 'copy' }), backup(vm.name, destination.dest, { mode: 'copy' })]);
		const done = results.filter((r): r is PromiseFulfilledResult<BackupResult> => r.status === 'fulfilled');
		const failed = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
		expect(done).toHaveLength(1);
		expect(failed).toHaveLength(1);
		expect(failed[0].reason).toMatchObject({ code: 'LOCKED', message: expect.stringMatching(new RegExp(`^VM "${vm.name}" is locked by jest ${process.pid}`)) });
		expect(compare(`${done[0].value.path}/vda.qcow2`, vm.disks[0].path)).toBe('Images are identical.');
	});

	test('an SSH connection killed mid-backup leaves no job, lock or partial data the next run trips on', async () => {
		const ssh = await SshConnection.connect(labTarget());
		const running = backupVm(ssh, request(vm.name, destination.dest, { mode: 'copy' }), {
			onProgress: (progress) => {
				if (progress.phase === 'copy') ssh.close();
			},
		});
		await expect(running).rejects.toMatchObject({ code: 'SSH_CONNECTION_LOST' });
		const next = await backup(vm.name, destination.dest, { mode: 'copy' });
		expect(compare(`${next.path}/vda.qcow2`, vm.disks[0].path)).toBe('Images are identical.');
		expect(leftovers(vm, destination.dest)).toEqual({ files: '', job: 'Job type: 0' });
		const folders = host(`ls -1 ${q(`${destination.dest}/${vm.name}`)}`).split('\n').filter(Boolean);
		for (const folder of folders) expect(host(`test -f ${q(`${destination.dest}/${vm.name}/${folder}/manifest.json`)} && echo ok`).trim()).toBe('ok');
	});
});

describe('bad input changes nothing', () => {
	test.each([
		['a relative destination', { dest: 'backups' }, /^Destination must be an absolute path/],
		['a destination with ..', { dest: '/var/lib/lvb-lab/test-dest/../../etc' }, /must not contain "\.\."/],
		['an unknown VM', { vm: 'lvb-no-such-vm' }, /^VM not found: lvb-no-such-vm/],
		['an unknown disk', { vm: 'lvb-running', disks: ['vdz'] }, /has no disk "vdz"/],
		['a disk that cannot be backed up', { vm: 'lvb-odd-disks', disks: ['vdc'] }, /Disk vdc .* cannot be backed up: network disk/],
	])('%s', async (_label, overrides, message) => {
		const { dest, cleanup } = testDestination('bad');
		try {
			const { vm = 'lvb-running', ...rest } = overrides as Partial<BackupRequest>;
			await expect(backup(vm, rest.dest ?? dest, rest)).rejects.toThrow(message);
			expect(host(`find ${q(dest)} -name '*.qcow2*' -print`).trim()).toBe('');
		} finally {
			cleanup();
		}
	});
});

describe('snapshot + blockcommit fallback (for hosts without backup-begin)', () => {
	let vm: TestVm;
	let destination: { dest: string; cleanup(): void };
	beforeAll(() => {
		vm = createTestVm('snap', [
			{ target: 'vda', format: 'qcow2', virtualMiB: 256, writes: [{ pattern: 0x61, offsetMiB: 0, lengthMiB: 64 }] },
			{ target: 'vdb', format: 'raw', virtualMiB: 32, writes: [{ pattern: 0x62, offsetMiB: 2, lengthMiB: 2 }] },
		]);
		destination = testDestination('snap');
	});
	afterAll(() => {
		vm.destroy();
		destination.cleanup();
	});

	const sources = () => host(`virsh -q domblklist ${q(vm.name)}`);

	test('copies every disk at one point in time and puts the VM back on its own disks', async () => {
		const before = sources();
		const result = await backup(vm.name, destination.dest, { method: 'snapshot', mode: 'incremental' });
		expect(result).toMatchObject({ kind: 'full', method: 'snapshot-commit', consistency: 'crash' });
		expect(result.warnings).toContain('incremental not possible (snapshot backups are always full; incrementals need push-mode backup-begin, libvirt >= 7.2): full backup instead');
		for (const disk of vm.disks) expect(compare(`${result.path}/${disk.target}.qcow2`, disk.path)).toBe('Images are identical.');
		expect(sources()).toBe(before);
		expect(host(`ls -A ${q(`${destination.dest}/${vm.name}`)}`).split('\n').filter(Boolean).sort()).toEqual(['.lvb.lock', result.id].sort());
	});
});
