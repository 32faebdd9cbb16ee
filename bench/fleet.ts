/**
 * The shipped fleet workflow through REAL n8n (`n8n execute`), run by hand as root on the lab machine:
 *   bash scripts/lab/up.sh && npm run build && npx tsx bench/fleet.ts [--runs 2] [--rtt-ms 50]
 *
 * The fleet: the lab's 3 hosts (scripts/lab/fleet.sh; each its own network namespace, sshd, libvirt
 * and store), 2 VMs each (one running, backed up live with push mode + checkpoints; one shut off).
 * workflows/fleet-backup.json with its host list set to the 3 hosts, its destination to a bench
 * folder, its chat webhook and SMTP to receivers on loopback, and "Hosts in Parallel" set to 1 or 3 on
 * every libvirt node. Each host's link gets RTT/2 of delay per direction (scripts/lab/netem.sh; the
 * delaying relay on kernels without netem), so every SSH round trip costs what a far-away host costs.
 *
 * Timed: the execution's own start to stop (n8n's run data), not n8n's CLI start-up. One untimed
 * warm-up run first (the first backups are fulls); then, alternating 1 and 3 so that load drifts hit
 * both alike, `--runs` runs of each: auto mode backs up the running VMs incrementally and the shut-off
 * ones fully, as a night after the first does. Writes bench/results/fleet-latest.md.
 */
import { execFileSync } from 'node:child_process';
import { promises as fs, readFileSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { fleetLab, fleetSshExec, shq } from '../test/support/lab';
import { createUserFolder, nodeOutput, packPackage, REPO_ROOT, type N8nInstance, type RunJson } from '../test/support/n8n';
import { startHttpReceiver, startMailReceiver } from '../test/support/receivers';
import { SHIPPED_DEST, SHIPPED_HOOK } from '../test/support/shipped';
import { loadAverage, median } from './lib/host';

const argv = process.argv.slice(2);
const RUNS = Number(argv.includes('--runs') ? argv[argv.indexOf('--runs') + 1] : 2);
const RTT_MS = Number(argv.includes('--rtt-ms') ? argv[argv.indexOf('--rtt-ms') + 1] : 50);
if (!Number.isInteger(RUNS) || RUNS < 1) throw new Error('--runs must be a positive integer');
if (!Number.isInteger(RTT_MS) || RTT_MS < 0 || RTT_MS % 2 !== 0) throw new Error('--rtt-ms must be an even number of milliseconds (half of it each way)');
const PARALLEL = [1, 3];
const LIBVIRT_NODES = ['Discover VMs', 'Backup VM Disk', 'Verify Checksum', 'Prune Old Backups'];

function netem(delay: string): void {
	execFileSync('bash', [path.join(REPO_ROOT, 'scripts', 'lab', 'netem.sh'), 'all', delay], { stdio: 'inherit' });
}

function runSeconds(run: RunJson | undefined): number {
	const { startedAt, stoppedAt } = (run ?? {}) as { startedAt?: string; stoppedAt?: string };
	if (!startedAt || !stoppedAt) throw new Error('the run JSON has no startedAt/stoppedAt');
	return (Date.parse(stoppedAt) - Date.parse(startedAt)) / 1000;
}

async function main(): Promise<void> {
	const fleet = fleetLab();
	const sub = `bench-fleet-${process.pid}`;
	const dest = `${fleet.destinationFolder}/${sub}`;
	for (const host of fleet.hosts) if (fleetSshExec(host, `mkdir -p -- ${shq(dest)}`).code !== 0) throw new Error(`mkdir on ${host.name} failed`);
	const [chat, mail] = await Promise.all([startHttpReceiver(), startMailReceiver()]);
	let n8n: N8nInstance | undefined;
	const started = new Date();
	const load = loadAverage();
	try {
		const tgz = await packPackage();
		n8n = await createUserFolder(tgz);
		await fs.rm(path.dirname(tgz), { recursive: true, force: true });
		const [libvirt, smtp] = await n8n.importCredentials([
			{
				name: 'Libvirt fleet',
				type: 'libvirtSshApi',
				data: {
					host: fleet.hosts[0].address,
					port: fleet.hosts[0].port,
					username: fleet.user.username,
					authMethod: 'privateKey',
					privateKey: fleet.user.privateKey,
					hostKeys: fleet.hosts.map((host) => host.knownHostsLine).join('\n'),
					sudoMode: 'none',
					libvirtUri: fleet.uri,
				},
			},
			{ name: 'SMTP', type: 'smtp', data: { host: mail.host, port: mail.port, secure: false, disableStartTls: true, user: 'any', password: 'any' } },
		]);
		const ids: Record<number, string> = {};
		for (const parallel of PARALLEL) {
			const workflow = JSON.parse(readFileSync(path.join(REPO_ROOT, 'workflows', 'fleet-backup.json'), 'utf8'));
			workflow.name = `Fleet backup, Hosts in Parallel ${parallel}`;
			for (const node of workflow.nodes) {
				if (node.name === 'Fleet hosts') node.parameters.jsCode = `return ${JSON.stringify(fleet.hosts.map((host) => ({ json: { host: `${host.address}:${host.port}` } })))};`;
				if (LIBVIRT_NODES.includes(node.name)) node.parameters.hostsInParallel = parallel;
			}
			ids[parallel] = await n8n.importWorkflow(workflow, { REPLACE_CREDENTIAL_ID: libvirt.id, REPLACE_SMTP_CREDENTIAL_ID: smtp.id, [SHIPPED_DEST]: dest, [SHIPPED_HOOK]: `${chat.url}/hook` });
		}
		const vmCount = fleet.hosts.reduce((sum, host) => sum + host.vms.length, 0);
		const execute = async (parallel: number): Promise<{ seconds: number; kinds: string }> => {
			const result = await n8n!.execute(ids[parallel], 900_000);
			if (result.run?.status !== 'success') throw new Error(`run failed:\n${result.stdout.slice(-3000)}\n${result.stderr.slice(-2000)}`);
			const [report] = nodeOutput(result.run, 'Fleet report');
			if (report.ok !== vmCount || report.failed !== 0) throw new Error(`fleet report: ${String(report.text)}`);
			const kinds = nodeOutput(result.run, 'Backup VM Disk').map((backup) => backup.kind);
			return { seconds: runSeconds(result.run), kinds: `${kinds.filter((k) => k === 'full').length} full + ${kinds.filter((k) => k === 'incremental').length} incremental` };
		};

		netem(`${RTT_MS / 2}ms`);
		const warm = await execute(3);
		console.log(`warm-up (untimed): ${warm.seconds.toFixed(1)} s, ${warm.kinds}`);
		const times: Record<number, number[]> = { 1: [], 3: [] };
		let kinds = '';
		for (let run = 0; run < RUNS; run++) {
			for (const parallel of run % 2 === 0 ? PARALLEL : [...PARALLEL].reverse()) {
				const measured = await execute(parallel);
				times[parallel].push(measured.seconds);
				kinds = measured.kinds;
				console.log(`Hosts in Parallel ${parallel}: ${measured.seconds.toFixed(1)} s (${measured.kinds})`);
			}
		}
		const [one, three] = [median(times[1]), median(times[3])];
		const report = [
			'# Fleet backup through n8n: Hosts in Parallel 1 vs 3',
			'',
			`${started.toISOString()}. Command (as root on the lab machine): \`bash scripts/lab/up.sh && npm run build && npx tsx bench/fleet.ts --runs ${RUNS} --rtt-ms ${RTT_MS}\`.`,
			'',
			`- Fleet: ${fleet.hosts.length} lab hosts (own network namespace, sshd, libvirt and store each), ${vmCount} VMs (per host one running, one shut off, 64 MiB disks); ${RTT_MS} ms RTT on each host link (scripts/lab/netem.sh all ${RTT_MS / 2}ms).`,
			`- The shipped workflows/fleet-backup.json (Discover -> Backup (auto) -> Verify -> Prune -> fleet report -> chat + email to loopback receivers) via \`n8n execute\`; time = the execution's startedAt to stoppedAt. Each run: ${kinds}.`,
			`- Median of ${RUNS} run(s) each, after one untimed warm-up run; 1 and 3 alternate. Machine: 2 cores; load average ${load} at start, ${loadAverage()} at the end.`,
			'',
			'| Hosts in Parallel | runs (s) | median (s) | vs 1 |',
			'| ---: | --- | ---: | ---: |',
			`| 1 | ${times[1].map((s) => s.toFixed(1)).join(', ')} | **${one.toFixed(1)}** | 1.00x |`,
			`| 3 | ${times[3].map((s) => s.toFixed(1)).join(', ')} | **${three.toFixed(1)}** | **${(one / three).toFixed(2)}x faster** |`,
			'',
		].join('\n');
		console.log(report);
		writeFileSync(path.join(REPO_ROOT, 'bench', 'results', 'fleet-latest.md'), report);
		console.log('written to bench/results/fleet-latest.md');
	} finally {
		netem('off');
		await n8n?.cleanup();
		await chat.close();
		await mail.close();
		for (const host of fleet.hosts) fleetSshExec(host, `rm -rf -- ${shq(dest)}`);
	}
}

main().catch((error) => {
	console.error(error);
	process.exitCode = 1;
});
