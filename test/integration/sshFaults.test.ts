/**
 * lib/ssh when the way to the host fails: a link that silently drops every packet in the middle of
 * a job (no FIN, no RST: sshd keeps the session for as long as TCP does, hours), made with an
 * iptables DROP rule on this one TCP connection (the lab host is this machine).
 */
import { spawnSync } from 'node:child_process';
import { isLibvirtBackupError } from '../../lib/errors';
import { SshConnection } from '../../lib/ssh';
import { acquireVmLock } from '../../lib/store/lock';
import { loadLab, sshExec } from '../support/lab';
import { labTarget } from '../support/targets';
import { testDestination } from '../support/testVm';

/** Far above the watchdog's 30 s of silence and the client's ~20 s keepalive limit. */
const GENEROUS_MS = 120_000;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Local ports of this process's established connections to the lab's sshd. */
function clientPorts(): Set<number> {
	const out = spawnSync('ss', ['-tnpH', 'state', 'established', `( dport = :${loadLab().port} )`], { encoding: 'utf8' });
	if (out.status !== 0) throw new Error(`ss failed: ${out.stderr}`);
	const ports = out.stdout
		.split('\n')
		.filter((line) => line.includes(`pid=${process.pid},`))
		.map((line) => Number(/:(\d+)\s+\S+:\d+\s/.exec(line)?.[1]));
	return new Set(ports);
}

function iptables(args: string[]): number | null {
	return spawnSync('iptables', ['-w', ...args], { encoding: 'utf8' }).status;
}

/** DROPs both directions of the connection from `port` to sshd; `undo` deletes exactly those rules. */
function dropConnection(port: number): { undo(): void } {
	const sshd = String(loadLab().port);
	const comment = ['-m', 'comment', '--comment', `lvb-test-netloss-${process.pid}`];
	const rules = [
		['INPUT', '-i', 'lo', '-p', 'tcp', '--sport', String(port), '--dport', sshd, ...comment, '-j', 'DROP'],
		['INPUT', '-i', 'lo', '-p', 'tcp', '--sport', sshd, '--dport', String(port), ...comment, '-j', 'DROP'],
	];
	const undo = () => {
		for (const rule of rules) while (iptables(['-D', ...rule]) === 0);
	};
	// A rule left behind would black-hole a later connection that reuses the port.
	process.once('exit', undo);
	for (const rule of rules) {
		if (iptables(['-I', ...rule]) !== 0) {
			undo();
			throw new Error('iptables could not add the DROP rule (is the iptables package installed?)');
		}
	}
	return { undo };
}

function remoteProcesses(marker: string): string {
	return sshExec('root', `pgrep -af -- ${marker} | grep -v pgrep || true`).stdout.trim();
}

async function within<T>(limitMs: number, probe: () => Promise<T | undefined> | T | undefined): Promise<T | undefined> {
	const until = Date.now() + limitMs;
	for (;;) {
		const value = await probe();
		if (value !== undefined || Date.now() > until) return value;
		await sleep(500);
	}
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
