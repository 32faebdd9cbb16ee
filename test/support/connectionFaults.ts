/**
 * Ways to break the SSH connection a job runs on, for fault tests (the lab host is this machine,
 * the tests run as root): cut it (SIGKILL the sshd processes serving it: the client sees the TCP
 * connection close, the remote commands lose their channel) or lose it silently (an iptables DROP
 * rule on both directions of this one TCP connection: no FIN, no RST).
 */
import { spawnSync } from 'node:child_process';
import { quoteArg } from '../../lib/shell';
import { SshConnection, type SshTarget } from '../../lib/ssh';
import { loadLab } from './lab';
import { labTarget } from './targets';
import { host } from './testVm';

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Polls `probe` every 500 ms until it returns a value or `limitMs` passed (then undefined). */
export async function within<T>(limitMs: number, probe: () => Promise<T | undefined> | T | undefined): Promise<T | undefined> {
	const until = Date.now() + limitMs;
	for (;;) {
		const value = await probe();
		if (value !== undefined || Date.now() > until) return value;
		await sleep(500);
	}
}

/** Local ports of this process's established connections to sshd on `sshdPort` (default: the lab's). */
export function clientPorts(sshdPort = loadLab().port): Set<number> {
	const out = spawnSync('ss', ['-tnpH', 'state', 'established', `( dport = :${sshdPort} )`], { encoding: 'utf8' });
	if (out.status !== 0) throw new Error(`ss failed: ${out.stderr}`);
	const ports = out.stdout
		.split('\n')
		.filter((line) => line.includes(`pid=${process.pid},`))
		.map((line) => Number(/:(\d+)\s+\S+:\d+\s/.exec(line)?.[1]));
	return new Set(ports);
}

/** An engine connection and the local port it uses (to cut or drop exactly this connection). */
export async function connectTracked(target: SshTarget = labTarget()): Promise<{ ssh: SshConnection; port: number }> {
	const before = clientPorts(target.port);
	const ssh = await SshConnection.connect(target);
	const port = [...clientPorts(target.port)].find((candidate) => !before.has(candidate));
	if (port === undefined) {
		ssh.close();
		throw new Error('could not find the local port of the new SSH connection');
	}
	return { ssh, port };
}

function iptables(args: string[]): number | null {
	return spawnSync('iptables', ['-w', ...args], { encoding: 'utf8' }).status;
}

/** DROPs both directions of the connection from `port` to sshd; `undo` deletes exactly those rules. */
export function dropConnection(port: number, sshdPort = loadLab().port): { undo(): void } {
	const sshd = String(sshdPort);
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

/**
 * SIGKILLs the sshd processes that hold the server end of the connection from local `port` (the
 * session and its privileged monitor): what a crashed sshd or a reset link does to a job. Returns
 * the pids killed (throws when none was found).
 */
export function cutConnection(port: number, sshdPort = loadLab().port): number[] {
	const out = spawnSync('ss', ['-tnpH', 'state', 'established', `( sport = :${sshdPort} and dport = :${port} )`], { encoding: 'utf8' });
	if (out.status !== 0) throw new Error(`ss failed: ${out.stderr}`);
	const pids = [...new Set([...out.stdout.matchAll(/\("sshd",pid=(\d+),/g)].map((match) => Number(match[1])))];
	if (pids.length === 0) throw new Error(`no sshd holds the connection from port ${port}:\n${out.stdout}`);
	for (const pid of pids) process.kill(pid, 'SIGKILL');
	return pids;
}

/** Waits until no process on the host has `path` in its command line (our remote scripts all name the destination). */
export async function hostWorkEnded(path: string, limitMs = 120_000): Promise<void> {
	// "[/]" keeps the pattern from matching the shell that runs pgrep.
	const pattern = `[/]${path.slice(1)}`;
	const ended = await within(limitMs, () => (host(`pgrep -f -- ${quoteArg(pattern)} || true`).trim() === '' ? true : undefined));
	if (!ended) throw new Error(`host processes still name ${path} after ${limitMs} ms:\n${host(`pgrep -af -- ${quoteArg(pattern)} || true`)}`);
}
