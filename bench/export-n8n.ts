/**
 * Export through a REAL running n8n, run by hand as root on the lab machine:
 *   bash scripts/lab/up.sh && npm run build && npx tsx bench/export-n8n.ts [--runs 2] [--keep]
 *
 * Setup (untimed): two OS-less bench VMs (`lvb-bench-export-1/2`, under
 * /var/lib/lvb-lab/bench-export/), each a 4 GiB qcow2 holding 1331 MiB of random data, shut off; one
 * full backup of each (backupVm), so the set is 2 backups of about 1.3 GiB of images each (printed).
 * n8n 2.41 (`n8n start`, filesystem binary data mode, its default) with the shipped
 * workflows/export-download.json, its VM filter set to both bench VMs and its Export Archive node set
 * to the compression under test.
 *
 * Timed, all in one run, wall clock: `curl` of the webhook to /dev/null (List Backups -> Export Archive
 * streams the archive as the webhook's response; with `--binary`, into n8n's binary data store, then
 * Respond to Webhook streams it out), against the
 * same files by hand over one system `ssh` exec: `ssh host tar cf - ... | cat`, `| gzip -1`,
 * `| zstd -1` (compressed on the n8n side, as ours is). Throughput = archive input bytes / time.
 *
 * Memory: the n8n main process's RSS from /proc/<pid>/status: VmRSS when idle (after start, 10 s
 * quiet), then `echo 5 > /proc/<pid>/clear_refs` (resets the peak, VmHWM, to the current RSS), the
 * export, and VmHWM after it: the peak growth over idle (or over the RSS just before the export, when
 * that is lower: n8n's heap shrinks after its first exports); the largest over every export, the
 * untimed check download (the first export of each form, to a file, listed by tar) included.
 * Writes bench/results/export-n8n-latest.md.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { promises as fs, readFileSync, statSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { backupVm } from '../lib/backup';
import { SshConnection } from '../lib/ssh';
import { vmDirName } from '../lib/store/layout';
import { loadLab } from '../test/support/lab';
import { createUserFolder, packPackage, REPO_ROOT, type N8nServer } from '../test/support/n8n';
import { labCredentialData, labTarget } from '../test/support/targets';
import { createBenchVms, engineState, loadAverage, median, removeBenchVms, sh } from './lib/host';

const argv = process.argv.slice(2);
const RUNS = Number(argv.includes('--runs') ? argv[argv.indexOf('--runs') + 1] : 2);
const KEEP = argv.includes('--keep');
/** `--only tar|gzip|zstd`: one form; `--log`: n8n at debug level, its node start/finish lines printed after each export. */
const ONLY = argv.includes('--only') ? argv[argv.indexOf('--only') + 1] : undefined;
const LOG = argv.includes('--log');
/** `--binary`: Export Archive's destination "N8n Binary Data" answered by Respond to Webhook (the queue-mode way) instead of the shipped streamed response. */
const BINARY = argv.includes('--binary');
/** `--profile DIR`: n8n (and its children) write V8 CPU profiles into DIR when they exit. */
const PROFILE = argv.includes('--profile') ? argv[argv.indexOf('--profile') + 1] : undefined;
/** `--node-args "..."`: Node flags for the n8n process (e.g. --trace-gc); its log is then written to /tmp/lvb-bench-n8n.log. */
const NODE_FLAGS = argv.includes('--node-args') ? argv[argv.indexOf('--node-args') + 1] : undefined;
if (!Number.isInteger(RUNS) || RUNS < 1) throw new Error('--runs must be a positive integer');

const lab = loadLab();
const URI = lab.systemUri;
const BENCH = `${lab.labDir}/bench-export`;
const DEST = `${BENCH}/dest`;
const VMS = [1, 2].map((n) => ({ name: `lvb-bench-export-${n}`, disk: `${BENCH}/images/lvb-bench-export-${n}.qcow2` }));
const TOKEN = 'bench-token';
const MB = 1e6;

type Compression = 'none' | 'gzip' | 'zstd';

/** The shipped download workflow answered the queue-mode way: the archive stored as n8n binary data, then sent by Respond to Webhook. */
function viaBinaryData(workflow: { nodes: Record<string, unknown>[]; connections: Record<string, unknown> }): void {
	const exporter = workflow.nodes.find((node) => node.name === 'Export Archive') as { parameters: Record<string, unknown> };
	exporter.parameters.target = 'binary';
	workflow.nodes.push({ id: 'bench-send', name: 'Send the archive', type: 'n8n-nodes-base.respondToWebhook', typeVersion: 1.1, position: [880, -100], parameters: { respondWith: 'binary', options: {} } });
	workflow.connections['Export Archive'] = { main: [[{ node: 'Send the archive', type: 'main', index: 0 }], [{ node: 'Answer the error', type: 'main', index: 0 }]] };
}
const COMPRESSIONS: Compression[] = (['none', 'gzip', 'zstd'] as Compression[]).filter((c) => !ONLY || ONLY === c || (ONLY === 'tar' && c === 'none'));
/** Export Archive's parameters for each compression (level 1, as the baselines use). */
const EXPORT_PARAMETERS: Record<Compression, Record<string, unknown>> = {
	none: { compression: 'none' },
	gzip: { compression: 'gzip', compressionLevel: 1 },
	zstd: { compression: 'zstd', compressionLevel: 1 },
};
const BASELINE_FILTER: Record<Compression, string> = { none: 'cat', gzip: 'gzip -1', zstd: 'zstd -1 -T1' };

function status(pid: number): Record<string, number> {
	const out: Record<string, number> = {};
	for (const line of readFileSync(`/proc/${pid}/status`, 'utf8').split('\n')) {
		const m = /^(Vm\w+):\s+(\d+) kB/.exec(line);
		if (m) out[m[1]] = Number(m[2]) * 1024;
	}
	return out;
}

/** One download of the export webhook with curl into `out`: [HTTP code, seconds to the first byte]. */
function download(url: string, compression: Compression, out: string): string[] {
	return execFileSync('curl', ['-sS', '-o', out, '-w', '%{http_code} %{time_starttransfer}', '-H', `X-Backup-Token: ${TOKEN}`, `${url}/webhook/bench-export-${compression}?last=2`], {
		encoding: 'utf8',
		timeout: 1_800_000,
	})
		.trim()
		.split(' ');
}

function seconds(start: bigint): number {
	return Number(process.hrtime.bigint() - start) / 1e9;
}

async function main(): Promise<void> {
	const started = new Date();
	const loadStart = loadAverage();
	const ssh = await SshConnection.connect(labTarget());
	removeBenchVms(URI, VMS.map((vm) => vm.name), BENCH);
	const diskLine = await createBenchVms(ssh, { uri: URI, domainType: lab.domainType, dir: `${BENCH}/images`, vms: VMS, description: 'lvb export bench' });
	const files: string[] = [];
	let inputBytes = 0;
	for (const vm of VMS) {
		const result = await backupVm(ssh, { uri: URI, vm: vm.name, dest: DEST, mode: 'full', compression: 'none', quiesce: 'off', holder: 'bench', host: 'lab' });
		const relative = `${vmDirName(vm.name)}/${result.id}`;
		const names = (await sh(ssh, 'cd -- "$1" && ls -1A', [`${DEST}/${relative}`])).split('\n').filter(Boolean);
		for (const name of names) {
			files.push(`${relative}/${name}`);
			inputBytes += Number((await sh(ssh, 'stat -c %s -- "$1"', [`${DEST}/${relative}/${name}`])).trim());
		}
	}
	await sh(ssh, 'sync');
	ssh.close();
	console.log(`backup set: ${files.length} files, ${(inputBytes / 2 ** 30).toFixed(2)} GiB`);

	const tgz = await packPackage();
	const n8n = await createUserFolder(tgz);
	await fs.rm(path.dirname(tgz), { recursive: true, force: true });
	const [libvirt, headerAuth] = await n8n.importCredentials([
		{ name: 'Libvirt lab host', type: 'libvirtSshApi', data: labCredentialData() },
		{ name: 'Backup webhook token', type: 'httpHeaderAuth', data: { name: 'X-Backup-Token', value: TOKEN } },
	]);
	const shipped = JSON.parse(readFileSync(path.join(REPO_ROOT, 'workflows', 'export-download.json'), 'utf8')) as { name: string; nodes: { name: string; type: string; parameters: Record<string, unknown> }[] };
	const ids: Record<Compression, string> = { none: '', gzip: '', zstd: '' };
	for (const compression of COMPRESSIONS) {
		const workflow = JSON.parse(JSON.stringify(shipped)) as typeof shipped;
		workflow.name = `${shipped.name} (${compression})`;
		for (const node of workflow.nodes) {
			if (node.type === 'n8n-nodes-base.webhook') node.parameters.path = `bench-export-${compression}`;
			if (node.name === 'List Backups') node.parameters.vmNames = VMS.map((vm) => vm.name).join(', ');
			if (node.name === 'Export Archive') Object.assign(node.parameters, EXPORT_PARAMETERS[compression]);
		}
		if (BINARY) viaBinaryData(workflow as unknown as Parameters<typeof viaBinaryData>[0]);
		ids[compression] = await n8n.importWorkflow(workflow, { REPLACE_CREDENTIAL_ID: libvirt.id, REPLACE_HEADER_AUTH_ID: headerAuth.id, '/mnt/storage/backups/vm_backups': DEST });
		await n8n.publishWorkflow(ids[compression]);
	}
	let server: N8nServer | undefined;
	const rows: string[] = [];
	const checks: string[] = [];
	try {
		server = await n8n.startServer({ waitForWebhooks: COMPRESSIONS.map((c) => `bench-export-${c}`), env: { ...(LOG ? { N8N_LOG_LEVEL: 'debug' } : {}), ...(PROFILE ? { NODE_OPTIONS: `--cpu-prof --cpu-prof-dir=${PROFILE}` } : {}) }, nodeArgs: NODE_FLAGS?.split(' ').filter(Boolean) });
		await new Promise((resolve) => setTimeout(resolve, 10_000));
		const idle = status(server.pid).VmRSS;
		console.log(`n8n main process ${server.pid}: idle RSS ${(idle / 2 ** 20).toFixed(0)} MiB`);
		for (const compression of COMPRESSIONS) {
			const ours: number[] = [];
			const theirs: number[] = [];
			const peaks: number[] = [];
			/** Seconds to the response's first byte: the workflow (export into n8n's store) has finished by then. */
			const firstBytes: number[] = [];
			// The check (untimed): one download to a file, listed by tar. The timed runs write to
			// /dev/null, as the baseline does: a 2.6 GiB file write costs curl and the kernel's
			// writeback seconds of CPU the baseline never pays.
			const out = path.join(os.tmpdir(), `lvb-bench-export-${process.pid}`);
			// Its peak counts too: a first export grows n8n's memory the most.
			writeFileSync(`/proc/${server.pid}/clear_refs`, '5');
			const beforeCheck = status(server.pid).VmRSS;
			const [checkCode] = download(server.url, compression, out);
			peaks.push(status(server.pid).VmHWM - Math.min(beforeCheck, idle));
			const listed = spawnSync('sh', ['-c', `tar ${compression === 'gzip' ? '-z' : compression === 'zstd' ? '--zstd' : ''} -tf "$1" | wc -l`, 'list', out], { encoding: 'utf8' }).stdout.trim();
			checks.push(`${compression}: HTTP ${checkCode}, ${(statSync(out).size / 2 ** 20).toFixed(0)} MiB downloaded, tar lists ${listed} entries (the set has ${files.length} files)`);
			await fs.rm(out, { force: true });
			if (checkCode !== '200') throw new Error(`export (${compression}) answered HTTP ${checkCode}:\n${server.log().slice(-3000)}`);
			for (let run = 0; run < RUNS; run++) {
				writeFileSync(`/proc/${server.pid}/clear_refs`, '5');
				const before = status(server.pid).VmRSS;
				const t0 = process.hrtime.bigint();
				const [code, firstByte] = download(server.url, compression, '/dev/null');
				firstBytes.push(Number(firstByte));
				ours.push(seconds(t0));
				if (LOG) console.log(server.log().split('\n').filter((line) => /Running node|Workflow execution|Received webhook|finished/i.test(line)).slice(-12).join('\n'));
				peaks.push(status(server.pid).VmHWM - Math.min(before, idle));
				if (code !== '200') throw new Error(`export (${compression}) answered HTTP ${code}:\n${server.log().slice(-3000)}`);

				const t1 = process.hrtime.bigint();
				const baseline = spawnSync(
					'sh',
					['-c', `ssh -p "$1" -i "$2" -o UserKnownHostsFile=/dev/null -o StrictHostKeyChecking=no -o LogLevel=error root@"$3" tar cf - -C "$4" ${files.map((f) => `'${f}'`).join(' ')} | ${BASELINE_FILTER[compression]} > /dev/null`, 'baseline', String(lab.port), lab.users.root.privateKeyPath, lab.host, DEST],
					{ encoding: 'utf8' },
				);
				theirs.push(seconds(t1));
				if (baseline.status !== 0) throw new Error(`baseline failed: ${baseline.stderr}`);
			}
			const [o, b] = [median(ours), median(theirs)];
			rows.push(
				`| ${compression === 'none' ? 'tar' : `tar.${compression === 'gzip' ? 'gz' : 'zst'} (level 1)`} | ${ours.map((s) => s.toFixed(2)).join(', ')} | **${o.toFixed(2)}** (${(inputBytes / MB / o).toFixed(0)} MB/s) | ${b.toFixed(2)} (${(inputBytes / MB / b).toFixed(0)} MB/s) | **${((b / o) * 100).toFixed(0)} %** | ${(Math.max(...peaks) / 2 ** 20).toFixed(1)} MiB | ${median(firstBytes).toFixed(2)} s |`,
			);
			console.log(rows[rows.length - 1]);
		}
		const report = [
			'# Export through n8n: results',
			'',
			`${started.toISOString()}. Command (as root on the lab machine): \`bash scripts/lab/up.sh && npm run build && npx tsx bench/export-n8n.ts --runs ${RUNS}${BINARY ? " --binary" : ""}${ONLY ? ` --only ${ONLY}` : ""}\`.`,
			'',
			`- Engine measured: ${engineState().text}. n8n 2.41.1 (\`n8n start\`, binary data mode filesystem), Node ${spawnSync(n8n.paths.nodeBin, ['-v'], { encoding: 'utf8' }).stdout.trim()}.`,
			`- ${diskLine}`,
			`- Backup set: 2 full backups (one per bench VM), ${files.length} files, ${(inputBytes / 2 ** 30).toFixed(2)} GiB; exported by the shipped workflows/export-download.json (List Backups -> Newest N -> Export Archive ${BINARY ? '-> n8n binary data -> Respond to Webhook (--binary)' : 'streaming the archive as the response'}), downloaded with curl to /dev/null (one more, untimed download to a file for the checks below).`,
			`- Baseline, same run, same files: one system \`ssh\` exec \`tar cf - ...\` piped into \`cat\` / \`gzip -1\` / \`zstd -1 -T1\` on this side, to /dev/null.`,
			`- Memory: n8n main process (pid ${server.pid}), idle VmRSS ${(idle / 2 ** 20).toFixed(0)} MiB; peak growth = VmHWM after the export (reset by \`echo 5 > /proc/PID/clear_refs\` just before) minus the idle VmRSS (or the VmRSS just before the export, when lower); the largest over every export, the untimed check download included.`,
			`- Median of ${RUNS} run(s); MB/s = backup bytes / time (1 MB = 10^6 bytes). Machine: ${os.cpus().length} cores; load average ${loadStart} at start, ${loadAverage()} at the end.`,
			'',
			'| archive | ours, runs (s) | ours median | ssh + tar baseline | ours / baseline throughput | n8n peak RSS growth | first byte after |',
			'| --- | --- | ---: | ---: | ---: | ---: | ---: |',
			...rows,
			'',
			'Targets: throughput at least 70 % of the baseline for each form; peak RSS growth under 100 MiB.',
			'',
			'## Checks',
			'',
			...checks.map((line) => `- ${line}`),
			'',
		].join('\n');
		await fs.mkdir(path.join(REPO_ROOT, 'bench', 'results'), { recursive: true });
		writeFileSync(path.join(REPO_ROOT, 'bench', 'results', 'export-n8n-latest.md'), report);
		console.log(`\n${report}\nwritten to bench/results/export-n8n-latest.md`);
	} finally {
		if (server && NODE_FLAGS) writeFileSync('/tmp/lvb-bench-n8n.log', server.log());
		await server?.stop();
		await n8n.cleanup();
		if (!KEEP) removeBenchVms(URI, VMS.map((vm) => vm.name), BENCH);
	}
}

main().catch((error: unknown) => {
	console.error(error);
	process.exit(1);
});
