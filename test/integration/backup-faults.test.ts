/**
 * Faults of the snapshot (overlay + blockcommit) method against real libvirtd and real VMs: the
 * host merges the overlays back by itself when the channel dies, and a pending-overlays file in the
 * destination (which others may write) is acted on only when it is exactly what we would write.
 */
import { backupVm, type BackupRequest, type BackupResult } from '../../lib/backup';
import { quoteArg as q } from '../../lib/shell';
import { SshConnection, withSsh } from '../../lib/ssh';
import { hostWorkEnded } from '../support/connectionFaults';
import { loadLab } from '../support/lab';
import { labTarget } from '../support/targets';
import { createTestVm, host, testDestination, type TestVm } from '../support/testVm';

jest.setTimeout(300_000);

const lab = loadLab();
const PENDING = '.lvb-pending.json';

function request(vm: string, dest: string, overrides: Partial<BackupRequest> = {}): BackupRequest {
	return { uri: lab.systemUri, vm, dest, mode: 'auto', compression: 'none', quiesce: 'auto', holder: `jest ${process.pid}`, host: 'lab', ...overrides };
}

function backup(vm: string, dest: string, overrides: Partial<BackupRequest> = {}): Promise<BackupResult> {
	return withSsh(labTarget(), (ssh) => backupVm(ssh, request(vm, dest, overrides)));
}

function overlaysLeft(vm: TestVm, dest: string): string {
	return host(`find ${q(vm.dir)} ${q(dest)} -name '.lvb-overlay-*' -print`).trim();
}

describe('snapshot method', () => {
	let vm: TestVm;
	let destination: { dest: string; cleanup(): void };
	beforeAll(() => {
		// Enough data that the copy is still running when the connection drops.
		vm = createTestVm('faults', [
			{ target: 'vda', format: 'qcow2', virtualMiB: 1024, writes: [{ pattern: 0x5a, offsetMiB: 0, lengthMiB: 512 }] },
			{ target: 'vdb', format: 'raw', virtualMiB: 32, writes: [{ pattern: 0x5b, offsetMiB: 1, lengthMiB: 1 }] },
		]);
		destination = testDestination('faults');
	});
	afterAll(() => {
		vm.destroy();
		destination.cleanup();
	});

	const sources = () => host(`virsh -q domblklist ${q(vm.name)}`);
	const vmDir = () => `${destination.dest}/${vm.name}`;

	test('a connection dropped mid-copy: the host merges the overlays back by itself, no later run needed', async () => {
		const before = sources();
		const ssh = await SshConnection.connect(labTarget());
		const running = backupVm(ssh, request(vm.name, destination.dest, { method: 'snapshot' }), {
			onProgress: (progress) => {
				if (progress.phase === 'copy') ssh.close();
			},
		});
		await expect(running).rejects.toMatchObject({ code: 'SSH_CONNECTION_LOST' });
		await hostWorkEnded(destination.dest);
		expect(sources()).toBe(before);
		expect(overlaysLeft(vm, destination.dest)).toBe('');
		expect(host(`ls -A ${q(vmDir())}`).split('\n')).not.toContain(PENDING);
	});

	test('push method: a cancel mid-job leaves no backup job running and no half-written folder', async () => {
		const controller = new AbortController();
		const running = withSsh(labTarget(), (ssh) =>
			backupVm(ssh, request(vm.name, destination.dest, { method: 'push', mode: 'full' }), {
				signal: controller.signal,
				onProgress: (progress) => {
					if (progress.phase === 'copy') controller.abort();
				},
			}),
		);
		await expect(running).rejects.toMatchObject({ code: 'ABORTED' });
		await hostWorkEnded(destination.dest);
		expect(host(`LC_ALL=C virsh -q domjobinfo ${q(vm.name)} --rawstats | head -1`).trim()).toBe('Job type: 0');
		expect(host(`find ${q(destination.dest)} \\( -name '*.partial' -o -name '.lvb-incomplete' \\) -print`).trim()).toBe('');
	});

	test('overlays live beside the disk, not in the destination', async () => {
		const ssh = await SshConnection.connect(labTarget());
		let seen = '';
		const running = backupVm(ssh, request(vm.name, destination.dest, { method: 'snapshot' }), {
			onProgress: (progress) => {
				if (progress.phase === 'copy' && !seen) {
					seen = sources();
					ssh.close();
				}
			},
		});
		await expect(running).rejects.toMatchObject({ code: 'SSH_CONNECTION_LOST' });
		await hostWorkEnded(destination.dest);
		const uuid = host(`virsh domuuid ${q(vm.name)}`).trim();
		expect(seen).toMatch(new RegExp(`vda +${vm.dir}/\\.lvb-overlay-${uuid}-\\d{8}T\\d{6}Z(-\\d+)?-vda\\.qcow2`));
		expect(seen).toMatch(new RegExp(`vdb +${vm.dir}/\\.lvb-overlay-${uuid}-\\d{8}T\\d{6}Z(-\\d+)?-vdb\\.qcow2`));
	});

	test('a run that died on the overlays (host killed too) is merged back by the next run', async () => {
		const before = sources();
		// What a SIGKILLed run leaves: the VM on overlays beside its disks, and the pending file.
		const id = '20260101T000000Z';
		const uuid = host(`virsh domuuid ${q(vm.name)}`).trim();
		const overlays = vm.disks.map((disk) => ({ target: disk.target, overlay: `${vm.dir}/.lvb-overlay-${uuid}-${id}-${disk.target}.qcow2` }));
		const specs = overlays.map((o) => `--diskspec ${q(`${o.target},snapshot=external,file=${o.overlay}`)}`).join(' ');
		host(`mkdir -p ${q(vmDir())} && virsh -q snapshot-create-as ${q(vm.name)} --disk-only --atomic --no-metadata ${specs} >/dev/null`);
		host(`printf '%s' ${q(JSON.stringify({ uuid, overlays }))} > ${q(`${vmDir()}/${PENDING}`)}`);
		expect(sources()).toContain('.lvb-overlay-');
		const next = await backup(vm.name, destination.dest, { method: 'snapshot' });
		expect(next.warnings).toContain('merged back the disk overlays an interrupted snapshot backup had left on the VM');
		expect(sources()).toBe(before);
		expect(overlaysLeft(vm, destination.dest)).toBe('');
		expect(host(`ls -A ${q(vmDir())}`).split('\n')).not.toContain(PENDING);
		expect(host(`qemu-img compare -U ${q(`${next.path}/vda.qcow2`)} ${q(vm.disks[0].path)} 2>&1 || true`).trim()).toBe('Images are identical.');
	});

	test('a symlink planted at the pending temp name is not followed', async () => {
		const canary = `${vm.dir}/canary-tmp`;
		host(`printf 'keep me' > ${q(canary)} && mkdir -p ${q(vmDir())} && ln -sfn ${q(canary)} ${q(`${vmDir()}/${PENDING}.tmp`)}`);
		try {
			const result = await backup(vm.name, destination.dest, { method: 'snapshot' });
			expect(result.method).toBe('snapshot-commit');
			expect(host(`cat ${q(canary)}`)).toBe('keep me');
			expect(host(`ls -A ${q(vmDir())}`).split('\n')).not.toContain(`${PENDING}.tmp`);
		} finally {
			host(`rm -f ${q(canary)} ${q(`${vmDir()}/${PENDING}.tmp`)}`);
		}
	});

	test.each([
		['a canary file', (canary: string) => canary],
		['a folder (trailing slash: empty file name)', (canary: string) => `${canary.slice(0, canary.lastIndexOf('/'))}/`],
	])('a planted pending file naming %s: the next backup changes nothing and says why', async (_label, overlayOf) => {
		const canary = `${vm.dir}/canary.qcow2`;
		host(`qemu-img create -q -f qcow2 ${q(canary)} 1M`);
		const before = sources();
		const uuid = host(`virsh domuuid ${q(vm.name)}`).trim();
		const planted = JSON.stringify({ uuid, overlays: [{ target: 'vda', overlay: overlayOf(canary) }] });
		host(`mkdir -p ${q(vmDir())} && printf '%s' ${q(planted)} > ${q(`${vmDir()}/${PENDING}`)}`);
		try {
			await expect(backup(vm.name, destination.dest)).rejects.toThrow(/\.lvb-pending\.json was not accepted \(.*\); nothing was changed/);
			expect(host(`test -f ${q(canary)} && echo kept`).trim()).toBe('kept');
			expect(sources()).toBe(before);
			expect(host(`cat ${q(`${vmDir()}/${PENDING}`)}`)).toBe(planted);
		} finally {
			host(`rm -f ${q(`${vmDir()}/${PENDING}`)} ${q(canary)}`);
		}
	});
});
