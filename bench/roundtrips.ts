/**
 * Round-trip benchmark (issue 12), run by hand on the lab:
 *   npm run lab:up && npx tsx bench/roundtrips.ts [--runs 5] [--rtt-ms 0,50] [--discovery-runs 3] [--root DIR]
 *
 * An idle running VM's incremental (a throwaway `lvb-t-roundtrips-bench-<pid>` with one 64 MiB
 * qcow2 disk and a valid chain, nothing written since the last backup), wall time and SSH commands,
 * median of --runs, at each RTT; then discovery of the lab's 500-VM test-driver fleet (lab.json
 * `fleetUri`), median of --discovery-runs, at the first RTT.
 *
 * RTT: the SSH connection goes through a TCP relay in this process that holds every chunk for
 * half the RTT in each direction (the lab host is on loopback), so every sequential round trip
 * costs the RTT as it would to a far host. 0 = no relay. The relay delays the link only; the host's
 * own work is the same at every RTT, so the difference between two RTTs shows the round trips.
 *
 * Round trips are the critical path of the run's commands (lib/ssh/roundTrips): commands that each
 * started only after the one before was answered. `--root DIR` runs the engine of another checkout
 * (e.g. the commit before this change, `git worktree add /tmp/old <commit>`) with this bench; a
 * checkout without SshConnection.recordExecs is measured by wrapping its spawn, the lock's answer
 * being its first output (that engine's lock answered with its first line).
 */
import * as fs from 'fs';
import * as net from 'net';
import * as path from 'path';
import type { BackupRequest, BackupResult } from '../lib/backup';
import type { DiscoveryResult } from '../lib/libvirt';
import { criticalPath, type ExecSpan, type RemoteProcess, type RunOptions, type SshConnection, type SshTarget } from '../lib/ssh';
import { loadLab } from '../test/support/lab';
import { labTarget } from '../test/support/targets';
import { createTestVm, testDestination } from '../test/support/testVm';
import { median } from './lib/host';

const argv = process.argv.slice(2);
const option = (name: string, fallback: string) => (argv.includes(name) ? argv[argv.indexOf(name) + 1] : fallback);
const RUNS = Number(option('--runs', '5'));
const DISCOVERY_RUNS = Number(option('--discovery-runs', '3'));
const RTTS = option('--rtt-ms', '0,50').split(',').map(Number);
const ROOT = path.resolve(option('--root', path.join(__dirname, '..')));
if (!Number.isInteger(RUNS) || RUNS < 1 || RTTS.some((rtt) => !(rtt >= 0))) throw new Error('--runs must be a positive integer, --rtt-ms a list of milliseconds');

/* eslint-disable @typescript-eslint/no-require-imports */
const engine = {
	backupVm: require(path.join(ROOT, 'lib/backup')).backupVm as (ssh: SshConnection, request: BackupRequest) => Promise<BackupResult>,
	discoverVms: require(path.join(ROOT, 'lib/libvirt')).discoverVms as (ssh: SshConnection, uri: string) => Promise<DiscoveryResult>,
	SshConnection: require(path.join(ROOT, 'lib/ssh')).SshConnection as { connect(target: SshTarget): Promise<SshConnection> },
};
/* eslint-enable @typescript-eslint/no-require-imports */

const lab = loadLab();

/** A TCP relay to the lab's sshd holding each chunk rttMs/2 in each direction; resolves its port. */
function delayRelay(rttMs: number): Promise<{ port: number; close(): void }> {
	const sockets = new Set<net.Socket>();
	const server = net.createServer((client) => {
		const upstream = net.connect(lab.port, lab.host);
		for (const socket of [client, upstream]) {
			sockets.add(socket);
			socket.setNoDelay(true);
			socket.on('error', () => undefined);
			socket.on('close', () => {
				client.destroy();
				upstream.destroy();
			});
		}
		const forward = (from: net.Socket, to: net.Socket) => from.on('data', (chunk) => setTimeout(() => to.destroyed || to.write(chunk), rttMs / 2));
		forward(client, upstream);
		forward(upstream, client);
	});
	return new Promise((resolve) =>
		server.listen(0, '127.0.0.1', () =>
			resolve({
				port: (server.address() as net.AddressInfo).port,
				close: () => {
					for (const socket of sockets) socket.destroy();
					server.close();
				},
			}),
		),
	);
}

/** Command spans of a run: the engine's own recording, or (an older engine) its spawns wrapped. */
function recorder(ssh: SshConnection): () => { stop(): ExecSpan[] } {
	if (typeof ssh.recordExecs === 'function') {
		return () => {
			const recording = ssh.recordExecs();
			return { stop: () => (recording.stop(), [...recording.spans]) };
		};
	}
	let spans: ExecSpan[] | undefined;
	const original = ssh.spawn.bind(ssh);
	(ssh as unknown as { spawn: unknown }).spawn = async (command: readonly string[], options: RunOptions = {}): Promise<RemoteProcess> => {
		const span: ExecSpan = { label: options.label ?? command[0], startedMs: performance.now() };
		spans?.push(span);
		const answer = () => (span.answeredMs ??= performance.now());
		// Only the lock is waited for before it ends (its first line); every other stdout is left as it was.
		const onStdout = options.onStdout;
		const lockOptions = span.label === 'lock' && onStdout ? { ...options, onStdout: (chunk: Buffer) => (answer(), onStdout(chunk)) } : options;
		const process = await original(command, lockOptions);
		process.done.then(answer, answer);
		return process;
	};
	return () => {
		spans = [];
		return { stop: () => spans ?? [] };
	};
}

interface Measured {
	seconds: number;
	execs: number;
	roundTrips: number;
	labels: string;
}

async function connect(rttMs: number): Promise<{ ssh: SshConnection; close(): void }> {
	const relay = rttMs > 0 ? await delayRelay(rttMs) : undefined;
	const ssh = await engine.SshConnection.connect(labTarget('root', relay ? { port: relay.port, readyTimeoutMs: 30_000 } : {}));
	return {
		ssh,
		close: () => {
			ssh.close();
			relay?.close();
		},
	};
}

async function timed(record: () => { stop(): ExecSpan[] }, work: () => Promise<unknown>): Promise<Measured> {
	const recording = record();
	const started = performance.now();
	await work();
	const seconds = (performance.now() - started) / 1000;
	const spans = recording.stop();
	const ms = (span: ExecSpan) => (span.answeredMs === undefined ? '?' : Math.round(span.answeredMs - span.startedMs));
	return { seconds, execs: spans.length, roundTrips: criticalPath(spans), labels: spans.map((span) => `${span.label} (${ms(span)} ms)`).join(', ') };
}

function summary(runs: Measured[]): Measured {
	return { seconds: median(runs.map((run) => run.seconds)), execs: median(runs.map((run) => run.execs)), roundTrips: median(runs.map((run) => run.roundTrips)), labels: runs[0].labels };
}

async function main(): Promise<void> {
	const vm = createTestVm('roundtrips-bench', [{ target: 'vda', format: 'qcow2', virtualMiB: 64, writes: [{ pattern: 0x11, offsetMiB: 0, lengthMiB: 2 }] }]);
	const lines: string[] = [];
	const rows: string[][] = [];
	try {
		for (const rtt of RTTS) {
			const destination = testDestination('roundtrips-bench');
			const { ssh, close } = await connect(rtt);
			try {
				const request: BackupRequest = { uri: lab.systemUri, vm: vm.name, dest: destination.dest, mode: 'auto', compression: 'none', quiesce: 'off', holder: 'bench/roundtrips.ts', host: 'lab' };
				await engine.backupVm(ssh, request); // full
				await engine.backupVm(ssh, request); // the chain has a checkpoint to replace from now on
				const record = recorder(ssh);
				const runs: Measured[] = [];
				for (let run = 0; run < RUNS; run++) {
					let result: BackupResult | undefined;
					runs.push(await timed(record, async () => (result = await engine.backupVm(ssh, request))));
					if (result?.kind !== 'incremental') throw new Error(`expected an incremental, got ${result?.kind}`);
				}
				const idle = summary(runs);
				rows.push([`idle incremental, RTT ${rtt} ms`, String(idle.execs), String(idle.roundTrips), idle.seconds.toFixed(3)]);
				lines.push(`idle incremental at RTT ${rtt} ms: ${idle.labels}`);
				if (rtt === RTTS[0] && DISCOVERY_RUNS > 0) {
					const discoveries: Measured[] = [];
					let vms = 0;
					for (let run = 0; run < DISCOVERY_RUNS; run++) {
						discoveries.push(await timed(record, async () => (vms = (await engine.discoverVms(ssh, lab.fleetUri)).vms.length)));
					}
					const discovery = summary(discoveries);
					rows.push([`discovery, ${vms} VMs x ${lab.fleetDisksPerVm} disks (test driver), RTT ${rtt} ms`, String(discovery.execs), String(discovery.roundTrips), discovery.seconds.toFixed(2)]);
					lines.push(`discovery at RTT ${rtt} ms: ${discovery.labels}`);
				}
			} finally {
				close();
				destination.cleanup();
			}
		}
	} finally {
		vm.destroy();
	}
	const table = ['| run | SSH execs | sequential round trips | seconds (median) |', '|---|---:|---:|---:|', ...rows.map((row) => `| ${row.join(' | ')} |`)].join('\n');
	const report = `# Round trips (bench/roundtrips.ts)\n\nEngine: ${ROOT}\nRuns: ${RUNS} (discovery ${DISCOVERY_RUNS}), ${new Date().toISOString()}\n\n${table}\n\nCommands of the first run, in start order (each until its answer):\n${lines.map((line) => `- ${line}`).join('\n')}\n`;
	console.log(report);
	fs.mkdirSync(path.join(__dirname, 'results'), { recursive: true });
	fs.writeFileSync(path.join(__dirname, 'results', ROOT === path.resolve(__dirname, '..') ? 'roundtrips-latest.md' : 'roundtrips-other-engine.md'), report);
}

main().catch((error: unknown) => {
	console.error(error);
	process.exit(1);
});
