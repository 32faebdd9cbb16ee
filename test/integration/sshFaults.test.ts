/**
 * lib/ssh when the way to the host fails: a link that silently drops every packet in the middle of
 * a job (no FIN, no RST: sshd keeps the session for as long as TCP does, hours), made with an
 * iptables DROP rule on this one TCP connection (the lab host is this machine); and sudo that asks
 * for a password (lab user lvbsudopw, no libvirt access of its own), right and wrong.
 */
import { backupVm, type BackupRequest } from '../../lib/backup';
import { BackupVerifier, listCatalog, pruneBackups } from '../../lib/catalog';
import { isLibvirtBackupError } from '../../lib/errors';
import { discoverVms } from '../../lib/libvirt';
import { quoteArg } from '../../lib/shell';
import { SshConnection, withSsh } from '../../lib/ssh';
import { acquireVmLock } from '../../lib/store/lock';
import { clientPorts, dropConnection, within } from '../support/connectionFaults';
import { loadLab, sshExec } from '../support/lab';
import { labTarget } from '../support/targets';
import { createTestVm, host, testDestination } from '../support/testVm';

/** Far above the watchdog's 30 s of silence and the client's ~20 s keepalive limit. */
const GENEROUS_MS = 120_000;

function remoteProcesses(marker: string): string {
	return sshExec('root', `pgrep -af -- ${marker} | grep -v pgrep || true`).stdout.trim();
}

describe('silent network loss in the middle of a job', () => {
	test(
		'the remote job and the VM lock end on the host, and the client reports the connection lost',
		async () => {
			const marker = `lvb-netloss-${process.pid}`;
			const { dest, cleanup } = testDestination('netloss');
			const before = clientPorts();
			const ssh = await SshConnection.connect(labTarget());
			const port = [...clientPorts()].find((p) => !before.has(p));
			expect(port).toBeDefined();
			let drop: { undo(): void } | undefined;
			try {
				await acquireVmLock(ssh, `${dest}/vm`, 'netloss test', 'vm');
				const outcome = ssh.run(['sh', '-c', `sleep 600; echo ${marker}`]).then(
					() => 'finished',
					(error: unknown) => error,
				);
				expect(await within(10_000, () => remoteProcesses(marker) || undefined)).toContain(marker);

				drop = dropConnection(port as number);
				const error = await outcome;
				expect(error).toMatchObject({ code: 'SSH_CONNECTION_LOST', message: expect.stringMatching(/SSH connection to root@127\.0\.0\.1:\d+ was lost/) });
				expect(await within(GENEROUS_MS, () => (remoteProcesses(marker) === '' ? 'gone' : undefined))).toBe('gone');

				// The lock's holder died with the job: another connection takes the lock.
				const taken = await within(GENEROUS_MS, async () => {
					const other = await SshConnection.connect(labTarget());
					try {
						await (await acquireVmLock(other, `${dest}/vm`, 'second job', 'vm')).release();
						return 'taken';
					} catch (lockError) {
						if (isLibvirtBackupError(lockError, 'LOCKED')) return undefined;
						throw lockError;
					} finally {
						other.close();
					}
				});
				expect(taken).toBe('taken');
			} finally {
				drop?.undo();
				ssh.close();
				cleanup();
			}
		},
		4 * GENEROUS_MS,
	);
});

describe('sudo that asks for a password', () => {
	const lab = loadLab();

	test('a wrong sudo password fails fast with a clear error, without the password in it', async () => {
		const wrong = `${lab.users.sudoPassword.password}-wrong`;
		await withSsh(labTarget('sudoPassword', { sudo: { mode: 'password', password: wrong } }), async (ssh) => {
			const error: unknown = await ssh.run(['true'], { timeoutMs: GENEROUS_MS }).catch((e: unknown) => e);
			expect(error).toMatchObject({
				code: 'SUDO_FAILED',
				message: expect.stringMatching(/^sudo on 127\.0\.0\.1 refused the sudo password of lvbsudopw\b.*Check the sudo password in the credential/),
			});
			expect((error as Error).message).not.toContain(wrong);
		});
	}, 2 * GENEROUS_MS);

	test('every engine call works as lvbsudopw with sudo mode "password": discover, backup, list, verify, prune', async () => {
		const vm = createTestVm('sudopw', [{ target: 'vda', format: 'qcow2', virtualMiB: 64, writes: [{ pattern: 0x5a, offsetMiB: 1, lengthMiB: 4 }] }]);
		const { dest, cleanup } = testDestination('sudopw');
		const request: BackupRequest = { uri: lab.systemUri, vm: vm.name, dest, mode: 'full', compression: 'none', quiesce: 'auto', holder: `jest ${process.pid}`, host: 'lab' };
		try {
			await withSsh(labTarget('sudoPassword'), async (ssh) => {
				expect((await ssh.run(['id', '-u'])).stdout.trim()).toBe('0');

				const [found] = (await discoverVms(ssh, lab.systemUri, { domains: [vm.name] })).vms;
				expect(found).toMatchObject({ name: vm.name, state: 'running', disks: [expect.objectContaining({ target: 'vda', format: 'qcow2' })] });

				const first = await backupVm(ssh, request);
				const second = await backupVm(ssh, request);
				expect([first.kind, second.kind]).toEqual(['full', 'full']);
				expect(host(`stat -c %U ${quoteArg(`${second.path}/manifest.json`)}`).trim()).toBe('root');

				const listed = await listCatalog(ssh, dest);
				expect(listed.backups.map((backup) => backup.id).sort()).toEqual([first.id, second.id].sort());

				expect(await new BackupVerifier(ssh).verify(second.path)).toMatchObject({ valid: true, problems: [] });

				const pruned = await pruneBackups(ssh, { dest, policy: { keepLast: 1 }, dryRun: false });
				expect(pruned.items.filter((item) => item.removed).map((item) => item.id)).toEqual([first.id]);
			});
		} finally {
			vm.destroy();
			cleanup();
		}
	}, 4 * GENEROUS_MS);
});
