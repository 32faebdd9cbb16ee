/**
 * Restore VM Disk's engine on the lab: real backups of real VMs (full and incremental chains, a
 * qcow2 and a raw disk) restored over the VM's own disks and into a folder as a new VM, and every
 * refusal: a running VM, a corrupted backup, a hostile folder or name, a restore cancelled
 * mid-write. The lab VMs have no OS: ACPI shutdown is never answered, so a graceful stop times out.
 */
import type { BackupResult } from '../../lib/backup';
import { stopDomain, undefineDomain } from '../../lib/libvirt';
import { restoreBackup, type RestoreOptions, type RestoreRequest, type RestoreResult } from '../../lib/restore';
import { quoteArg as q } from '../../lib/shell';
import { withSsh } from '../../lib/ssh';
import { flipByte } from '../support/backupFixtures';
import { loadLab } from '../support/lab';
import { checkpoints, labBackup as backup } from '../support/labBackup';
import { labTarget } from '../support/targets';
import { createTestVm, host, testDestination, type TestVm } from '../support/testVm';

jest.setTimeout(300_000);

function restore(path: string, request: RestoreRequest, extra: Partial<RestoreOptions> = {}): Promise<RestoreResult> {
	return withSsh(labTarget(), (ssh) => restoreBackup(ssh, { uri: loadLab().systemUri, backupPath: path, request, holder: `jest ${process.pid}`, ...extra }));
}

const sha256 = (file: string) => host(`sha256sum ${q(file)}`).split(' ')[0];
const state = (vm: TestVm) => host(`virsh -q domstate ${q(vm.name)}`).trim();
const identical = (a: string, b: string) => expect(host(`qemu-img compare -U ${q(a)} ${q(b)}`)).toContain('Images are identical');
const temps = (dir: string) => host(`find ${q(dir)} -name '*.lvb-restore.partial'`).trim();

describe('restore over the original disks', () => {
	let vm: TestVm;
	let destination: { dest: string; cleanup(): void };
	let chain: BackupResult[];
	let flat: string;
	const vda = () => vm.disks[0].path;
	const vdb = () => vm.disks[1].path;

	beforeAll(async () => {
		vm = createTestVm('restore', [
			{ target: 'vda', format: 'qcow2', virtualMiB: 64, writes: [{ pattern: 0x11, offsetMiB: 0, lengthMiB: 4 }] },
			{ target: 'vdb', format: 'raw', virtualMiB: 16, writes: [{ pattern: 0x55, offsetMiB: 1, lengthMiB: 2 }] },
		]);
		host(`chmod 640 ${q(vda())}`);
		destination = testDestination('restore');
		chain = [await backup(vm.name, destination.dest)];
		for (const [pattern, offset] of [[0x22, 8], [0x33, 16]]) {
			vm.guestWrite('vda', pattern, offset, 2);
			vm.guestWrite('vdb', pattern, offset / 2, 1);
			chain.push(await backup(vm.name, destination.dest));
		}
		expect(chain.map((b) => b.kind)).toEqual(['full', 'incremental', 'incremental']);
		// What each backup holds, flattened by qemu itself (through the images' own backing files).
		flat = host('mktemp -d /var/tmp/lvb-restore.XXXXXX').trim();
		for (const b of chain) host(`qemu-img convert -O raw ${q(`${b.path}/vda.qcow2`)} ${q(`${flat}/${b.id}-vda.raw`)} && qemu-img convert -O raw ${q(`${b.path}/vdb.qcow2`)} ${q(`${flat}/${b.id}-vdb.raw`)}`);
	});
	afterAll(() => {
		vm.destroy();
		destination.cleanup();
		host(`rm -rf -- ${q(flat)}`);
	});

	/** The guest changes both disks after the backups: the restore must undo that. */
	function changeDisks(): void {
		if (state(vm) !== 'running') host(`virsh -q start ${q(vm.name)} >/dev/null`);
		vm.guestWrite('vda', 0x99, 0, 6);
		vm.guestWrite('vdb', 0x99, 0, 4);
	}

	test('a running VM is refused without Shut Down First, and a graceful shutdown the guest ignores times out; nothing changes', async () => {
		changeDisks();
		await expect(restore(chain[2].path, { target: 'original' })).rejects.toThrow(/is running: its disks can only be restored while it is shut off/);
		await expect(restore(chain[2].path, { target: 'original', shutdownFirst: 'graceful' }, { shutdownTimeoutMs: 1000 })).rejects.toMatchObject({ code: 'COMMAND_TIMEOUT' });
		expect(state(vm)).toBe('running');
		host(`virsh -q destroy ${q(vm.name)} >/dev/null`);
		// The guest's last writes are still there (a running VM's image changes on its own: its hash proves nothing).
		host(`qemu-io -r -f qcow2 -c ${q('read -P 0x99 0 6M')} ${q(vda())} && qemu-io -r -f raw -c ${q('read -P 0x99 0 4M')} ${q(vdb())}`);
	});

	test('full + 2 incrementals: graceful-then-force stops the VM, both disks equal the last incremental, our stale checkpoints go and the next backup is a full', async () => {
		changeDisks();
		expect(checkpoints(vm).length).toBeGreaterThan(0);
		const mode = host(`stat -c %a ${q(vda())}`).trim();
		const result = await restore(chain[2].path, { target: 'original', shutdownFirst: 'graceful-then-force' }, { shutdownTimeoutMs: 1000 });
		expect(state(vm)).toBe('shut off');
		expect(result).toMatchObject({ target: 'original', stopped: true, backupId: chain[2].id });
		expect(result.disks.map((d) => [d.target, d.path, d.format])).toEqual([['vda', vda(), 'qcow2'], ['vdb', vdb(), 'raw']]);
		identical(`${flat}/${chain[2].id}-vda.raw`, vda());
		identical(`${flat}/${chain[2].id}-vdb.raw`, vdb());
		expect(result.disks.map((d) => d.sha256)).toEqual([sha256(vda()), sha256(vdb())]);
		expect(host(`qemu-img info --output=json ${q(vda())}`)).not.toContain('backing-filename');
		expect(host(`stat -c %a ${q(vda())}`).trim()).toBe(mode);
		expect(temps(vm.dir)).toBe('');
		expect(result.checkpointsRemoved.length).toBeGreaterThan(0);
		expect(checkpoints(vm)).toEqual([]);

		host(`virsh -q start ${q(vm.name)} >/dev/null`);
		const next = await backup(vm.name, destination.dest);
		expect(next.kind).toBe('full');
		identical(`${flat}/${chain[2].id}-vda.raw`, `${next.path}/vda.qcow2`);
		host(`virsh -q destroy ${q(vm.name)} >/dev/null`);
	});

	test('a full onto a shut-off VM: the disk equals the backup', async () => {
		changeDisks();
		host(`virsh -q destroy ${q(vm.name)} >/dev/null`);
		const result = await restore(chain[0].path, { target: 'original', disks: ['vda'] });
		expect(result.stopped).toBe(false);
		expect(result.disks.map((d) => d.target)).toEqual(['vda']);
		identical(`${flat}/${chain[0].id}-vda.raw`, vda());
	});

	test('a corrupted image in the chain: refused, the original disks unchanged, no temp left', async () => {
		const before = [sha256(vda()), sha256(vdb())];
		const image = `${chain[1].path}/vda.qcow2`;
		// Inside the data the incremental holds (its 2 MiB at 8 MiB sit after the header and tables).
		const offset = Number(host(`stat -c %s ${q(image)}`).trim()) - 4096;
		flipByte(image, offset);
		try {
			await expect(restore(chain[2].path, { target: 'original' })).rejects.toMatchObject({ code: 'BACKUP_FAILED', message: expect.stringMatching(/is damaged, nothing was restored.*vda.qcow2: sha256 differs/s) });
			expect([sha256(vda()), sha256(vdb())]).toEqual(before);
			expect(temps(vm.dir)).toBe('');
			// Force restores it anyway, and says so.
			const forced = await restore(chain[2].path, { target: 'original', force: true });
			expect(forced.warnings.join(' ')).toMatch(/does not match its manifest/);
		} finally {
			flipByte(image, offset);
		}
	});

	test('a restore cancelled mid-write leaves the original disk intact and no temp file', async () => {
		const big = createTestVm('restore-big', [{ target: 'vda', format: 'qcow2', virtualMiB: 1536, writes: [{ pattern: 0x77, offsetMiB: 0, lengthMiB: 1024 }] }], 'shutoff');
		const dest = testDestination('restore-big');
		try {
			const full = await backup(big.name, dest.dest);
			big.host(`qemu-io -f qcow2 -c ${q('write -P 0x88 0 1M')} ${q(big.disks[0].path)} >/dev/null`);
			const before = sha256(big.disks[0].path);
			const temp = `${big.disks[0].path}.lvb-restore.partial`;
			const controller = new AbortController();
			const running = restore(full.path, { target: 'original' }, { signal: controller.signal });
			// One remote loop returns as soon as the temp exists: the convert is under way. (Asynchronous:
			// a blocking spawnSync would stop this process's own restore from making progress.)
			const seen = await withSsh(labTarget(), (ssh) =>
				ssh.run(['sh', '-c', 'i=0; while [ ! -e "$1" ] && [ $i -lt 12000 ]; do sleep 0.01; i=$((i+1)); done; test -e "$1"', 'wait-temp', temp], { okExitCodes: [0, 1] }),
			);
			controller.abort();
			expect(seen.exitCode).toBe(0);
			await expect(running).rejects.toMatchObject({ code: 'ABORTED' });
			host(`i=0; while [ -e ${q(temp)} ] && [ $i -lt 3000 ]; do sleep 0.01; i=$((i+1)); done`);
			expect(temps(big.dir)).toBe('');
			expect(sha256(big.disks[0].path)).toBe(before);
		} finally {
			big.destroy();
			dest.cleanup();
		}
	});
});

describe('restore into a folder', () => {
	let vm: TestVm;
	let destination: { dest: string; cleanup(): void };
	let folder: { dest: string; cleanup(): void };
	let full: BackupResult;

	beforeAll(async () => {
		vm = createTestVm('restore-new', [{ target: 'vda', format: 'qcow2', virtualMiB: 32, writes: [{ pattern: 0x42, offsetMiB: 2, lengthMiB: 2 }] }], 'shutoff');
		// A NIC (user-mode networking needs nothing on the host) whose MAC the new VM must not share.
		host(`printf '%s' ${q("<interface type='user'><mac address='52:54:00:aa:bb:cc'/><model type='virtio'/></interface>")} > ${q(`${vm.dir}/nic.xml`)} && virsh -q attach-device ${q(vm.name)} ${q(`${vm.dir}/nic.xml`)} --config >/dev/null`);
		destination = testDestination('restore-new');
		folder = testDestination('restore-folder');
		full = await backup(vm.name, destination.dest);
	});
	afterAll(() => {
		vm.destroy();
		destination.cleanup();
		folder.cleanup();
	});

	test('as a new VM under a hostile name: defined on the restored disk, started, new UUID and MAC, then removed', async () => {
		const name = `lvb-t-new '$(touch lvb-pwned-${process.pid})" & <x> ${process.pid}`;
		const target = `${folder.dest}/new vm's "disks"`;
		const result = await restore(full.path, { target: 'folder', folder: target, newVmName: name, startNewVm: true });
		const uuid = result.domain!.uuid;
		try {
			expect(result.domain).toMatchObject({ name, defined: true, started: true });
			expect(result.disks).toEqual([{ target: 'vda', path: `${target}/vda.qcow2`, format: 'qcow2', bytes: expect.any(Number), sha256: sha256(`${target}/vda.qcow2`) }]);
			identical(`${full.path}/vda.qcow2`, `${target}/vda.qcow2`);
			expect(host(`virsh -q domstate --domain ${uuid}`).trim()).toBe('running');
			expect(uuid).not.toBe(host(`virsh -q domuuid ${q(vm.name)}`).trim());
			const xml = host(`virsh -q dumpxml --domain ${uuid}`);
			expect(xml).toContain(`${target}/vda.qcow2`.replace(/'/g, '&apos;').replace(/"/g, '&quot;'));
			const mac = /<mac address='([^']+)'/.exec(xml)?.[1];
			expect(mac).toMatch(/^52:54:00:/);
			expect(mac).not.toBe('52:54:00:aa:bb:cc');
			expect(host(`test -e ~/lvb-pwned-${process.pid} && echo yes || echo no`).trim()).toBe('no');
		} finally {
			await withSsh(labTarget(), async (ssh) => {
				await stopDomain(ssh, loadLab().systemUri, uuid, { graceful: false, timeoutMs: 1000 });
				await undefineDomain(ssh, loadLab().systemUri, uuid);
			});
		}
		expect(host('virsh -q list --all --uuid')).not.toContain(uuid);
	});

	test('a saved domain.xml that cannot be used (a link; over 1 MiB) refuses a restore as a new VM before any disk is written', async () => {
		const xml = `${full.path}/domain.xml`;
		const kept = `${xml}.kept`;
		const target = `${folder.dest}/bad-saved-xml`;
		const absent = () => host(`test -e ${q(target)} && echo yes || echo no`).trim();
		host(`mv -- ${q(xml)} ${q(kept)} && ln -s /etc/passwd ${q(xml)}`);
		try {
			await expect(restore(full.path, { target: 'folder', folder: target, newVmName: `lvb-t-badxml-${process.pid}` })).rejects.toThrow(/has no usable saved domain definition: .*symbolic link/);
			expect(absent()).toBe('no');
			host(`rm -f -- ${q(xml)} && { cat -- ${q(kept)}; head -c 2097152 /dev/zero | tr '\\0' ' '; } > ${q(xml)}`);
			await expect(restore(full.path, { target: 'folder', folder: target, newVmName: `lvb-t-badxml-${process.pid}` })).rejects.toThrow(/domain\.xml is larger than 1048576 bytes: not a domain definition of ours/);
			expect(absent()).toBe('no');
		} finally {
			host(`rm -f -- ${q(xml)} && mv -- ${q(kept)} ${q(xml)}`);
		}
	});

	test('refusals before anything is written: a file that exists, a folder with .., a hostile or taken VM name', async () => {
		const target = `${folder.dest}/again`;
		host(`mkdir -p ${q(target)} && echo keep > ${q(`${target}/vda.qcow2`)}`);
		await expect(restore(full.path, { target: 'folder', folder: target })).rejects.toThrow(/vda.qcow2 exists already: a restore to a folder never replaces a file/);
		expect(host(`cat ${q(`${target}/vda.qcow2`)}`).trim()).toBe('keep');
		await expect(restore(full.path, { target: 'folder', folder: `${folder.dest}/../escape` })).rejects.toThrow(/must not contain ".."/);
		await expect(restore(full.path, { target: 'folder', folder: `${folder.dest}/x`, newVmName: '../../etc/passwd' })).rejects.toThrow(/cannot be used: it contains '\/'/);
		await expect(restore(full.path, { target: 'folder', folder: `${folder.dest}/y`, newVmName: vm.name })).rejects.toThrow(/already exists on the host/);
		expect(host(`ls -A ${q(folder.dest)}`).split('\n')).not.toEqual(expect.arrayContaining(['x', 'y']));
	});
});
