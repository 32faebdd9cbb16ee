/**
 * Fleet link benchmark, run by hand as root on the lab machine:
 *   bash scripts/lab/up.sh && npx tsx bench/fleet-link.ts [--delays 0,25] [--runs 9]
 *
 * For each delay (per direction, set on every fleet host with scripts/lab/netem.sh; RTT = 2 x delay)
 * and each fleet host, medians of --runs:
 *   rtt:        one application round trip on an open TCP connection to the host's sshd: our
 *               version line out, the server's first key-exchange bytes back (there is no `ping` in
 *               the lab's packages; this also works through the userspace relay netem.sh uses when
 *               the kernel has no netem);
 *   ssh true:   `ssh -F /dev/null ... lvbfleet@host true` wall time (system client, fresh connection);
 *   connect:    the engine's SshConnection.connect (handshake, auth, pinned key);
 *   exec:       one `true` run on that open connection (per-command cost of the engine).
 * Delays are removed at the end (also on failure). Writes bench/results/fleet-link-latest.md.
 */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as net from 'net';
import * as os from 'os';
import * as path from 'path';
import { SshConnection } from '../lib/ssh';
import { fleetLab, type LabFleetHost } from '../test/support/lab';
import { fleetTarget } from '../test/support/targets';

const arg = (name: string, dflt: string) => {
	const i = process.argv.indexOf(`--${name}`);
	return i > 0 ? process.argv[i + 1] : dflt;
};
const delays = arg('delays', '0,25').split(',').map(Number);
const runs = Number(arg('runs', '9'));
const netem = path.join(__dirname, '..', 'scripts', 'lab', 'netem.sh');

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const ms = (t0: bigint) => Number(process.hrtime.bigint() - t0) / 1e6;

function setDelay(delay: number): string {
	const r = spawnSync('bash', [netem, 'all', delay ? `${delay}ms` : 'off'], { encoding: 'utf8' });
	if (r.status !== 0) throw new Error(`netem.sh failed: ${r.stderr}`);
	return r.stderr.trim();
}

/** Version line out, first bytes of the server's KEXINIT back: one round trip inside an open connection. */
function rtt(host: LabFleetHost): Promise<number> {
	return new Promise((resolve, reject) => {
		const socket = net.connect(host.port, host.address);
		let phase: 'banner' | 'kex' = 'banner';
		let sent = 0n;
		socket.on('data', (chunk) => {
			if (phase === 'banner' && chunk.toString('latin1').includes('\n')) {
				phase = 'kex';
				sent = process.hrtime.bigint();
				socket.write('SSH-2.0-lvb-fleet-rtt\r\n');
			} else if (phase === 'kex') {
				const result = ms(sent);
				socket.destroy();
				resolve(result);
			}
		});
		socket.on('error', reject);
	});
}

function sshTrue(host: LabFleetHost, knownHosts: string): number {
	const user = fleetLab().user;
	const t0 = process.hrtime.bigint();
	const r = spawnSync('ssh', ['-F', '/dev/null', '-i', user.privateKeyPath, '-o', 'IdentitiesOnly=yes', '-o', 'BatchMode=yes', '-o', `UserKnownHostsFile=${knownHosts}`, '-o', 'StrictHostKeyChecking=yes', `${user.username}@${host.address}`, 'true']);
	const t = ms(t0);
	if (r.status !== 0) throw new Error(`ssh ${host.name} true: ${r.stderr}`);
	return t;
}

async function main(): Promise<void> {
	const fleet = fleetLab();
	const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'lvb-fleet-link-'));
	const rows: string[] = [];
	const modes: string[] = [];
	try {
		for (const delay of delays) {
			modes.push(`${delay} ms: ${setDelay(delay).split('\n').pop() ?? ''}`);
			for (const host of fleet.hosts) {
				const knownHosts = path.join(tmp, host.name);
				fs.writeFileSync(knownHosts, `${host.knownHostsLine}\n`);
				const r: number[] = [];
				const s: number[] = [];
				const c: number[] = [];
				const e: number[] = [];
				for (let i = 0; i < runs; i++) {
					r.push(await rtt(host));
					s.push(sshTrue(host, knownHosts));
					let t0 = process.hrtime.bigint();
					const ssh = await SshConnection.connect(fleetTarget(host));
					c.push(ms(t0));
					try {
						t0 = process.hrtime.bigint();
						await ssh.run(['true']);
						e.push(ms(t0));
					} finally {
						ssh.close();
					}
				}
				const row = `| ${delay} | ${host.name} | ${median(r).toFixed(1)} | ${median(s).toFixed(0)} | ${median(c).toFixed(0)} | ${median(e).toFixed(1)} |`;
				rows.push(row);
				console.log(row);
			}
		}
	} finally {
		setDelay(0);
		fs.rmSync(tmp, { recursive: true, force: true });
	}
	const out = [
		'# Fleet link: delay per direction vs round trip, ssh and engine costs',
		'',
		`${new Date().toISOString()}, load average ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}, ${os.cpus().length} CPUs, medians of ${runs}.`,
		`Command: \`npx tsx bench/fleet-link.ts --delays ${delays.join(',')} --runs ${runs}\``,
		'',
		...modes.map((m) => `- ${m}`),
		'',
		'| delay ms (each way) | host | rtt ms | `ssh true` ms | engine connect ms | engine exec `true` ms |',
		'|---|---|---|---|---|---|',
		...rows,
		'',
	].join('\n');
	fs.mkdirSync(path.join(__dirname, 'results'), { recursive: true });
	fs.writeFileSync(path.join(__dirname, 'results', 'fleet-link-latest.md'), out);
	console.log(out);
}

main().catch((e: unknown) => {
	console.error(e);
	process.exit(1);
});
