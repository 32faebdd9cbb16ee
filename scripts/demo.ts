/**
 * `npm run demo`: real n8n (installed and cached by scripts/n8n/install.sh) with this package, the
 * credentials and every shipped workflow (test/support/demoN8n.ts), SMTP and chat receivers on
 * loopback. Runs nightly-backup once, prints per VM its backup and verify result and the
 * notifications that arrived, then serves the editor on http://127.0.0.1:5678 until Ctrl-C.
 *   npm run demo              keep serving
 *   npm run demo -- --once    exit after the run (CI): 0 when every lab VM has a backup and a verify result
 */
import { formatBytes } from '../lib/backup';
import { loadLab } from '../test/support/lab';
import { ensureN8n, nodeOutput, type RunJson } from '../test/support/n8n';
import { assertPortFree, createDemoN8n, DEMO_OWNER, DEMO_PORT, type DemoN8n } from '../test/support/demoN8n';

const once = process.argv.slice(2).includes('--once');
const unknown = process.argv.slice(2).filter((arg) => arg !== '--once');
if (unknown.length > 0) {
	console.error(`unknown argument(s): ${unknown.join(' ')} (usage: npm run demo [-- --once])`);
	process.exit(2);
}

/** Cells are cut at 60 characters: the full reasons are in the execution, in the editor. */
function table(rows: string[][]): string {
	rows = rows.map((row) => row.map((cell) => (cell.length > 60 ? `${cell.slice(0, 59)}…` : cell)));
	const widths = rows[0].map((_, column) => Math.max(...rows.map((row) => row[column].length)));
	const line = (row: string[]) => row.map((cell, column) => cell.padEnd(widths[column])).join('  ').trimEnd();
	return [line(rows[0]), widths.map((width) => '-'.repeat(width)).join('  '), ...rows.slice(1).map(line)].join('\n');
}

/** VM names may hold quotes, tabs and worse (the lab has such VMs): print them escaped. */
const printable = (text: unknown) => JSON.stringify(String(text)).slice(1, -1);
const seconds = (ms: number) => `${(ms / 1000).toFixed(1)} s`;

/** Prints the run per VM; returns the problems that make `--once` fail. */
function report(run: RunJson | undefined, labVms: string[]): string[] {
	const vms = nodeOutput(run, 'Discover VMs');
	const backups = nodeOutput(run, 'Backup VM Disk', 0);
	const failed = nodeOutput(run, 'Backup VM Disk', 1);
	const verified = [...nodeOutput(run, 'Verify Checksum', 0), ...nodeOutput(run, 'Verify Checksum', 1)];
	const rows = vms.map((vm) => {
		const backup = backups.find((b) => b.vm === vm.name);
		const failure = failed.find((b) => (b.vm ?? b.name) === vm.name);
		const verify = backup && verified.find((v) => v.path === backup.path);
		return [
			printable(vm.name),
			String(vm.state),
			vm.backupable ? 'yes' : `no: ${((vm.reasons as string[] | undefined) ?? []).join('; ')}`,
			backup
				? `${String(backup.kind)} ${String(backup.method)} ${String(backup.consistency)} ${formatBytes(Number(backup.totalBytes))}`
				: failure
					? `FAILED: ${printable(failure.error)}`
					: '-',
			verify ? (verify.valid ? 'valid' : `INVALID${verify.error ? `: ${printable(verify.error)}` : ''}`) : '-',
		];
	});
	// Failure items that do not name their VM still get a row.
	for (const failure of failed.filter((f) => !vms.some((vm) => vm.name === (f.vm ?? f.name)))) rows.push(['?', '', '', `FAILED: ${printable(failure.error)}`, '-']);
	console.log(`${vms.length} VMs on the lab host\n`);
	console.log(table([['VM', 'state', 'backupable', 'backup', 'verify'], ...rows]));
	if (backups[0]) console.log(`\nbackup folders: ${String(backups[0].path).replace(/\/[^/]+\/[^/]+$/, '')}/<vm>/<id>`);
	const pruned = nodeOutput(run, 'Prune Old Backups');
	if (pruned.length > 0) {
		const removed = pruned.filter((p) => p.action === 'prune');
		console.log(`Prune Old Backups: ${pruned.length - removed.length} kept, ${removed.length} pruned (${formatBytes(removed.reduce((sum, p) => sum + Number(p.freedBytes ?? 0), 0))} freed)`);
	}
	const problems: string[] = [];
	if (run?.status !== 'success') problems.push(`the run ended with status ${run?.status ?? '(none: n8n printed no run)'}`);
	for (const name of labVms) {
		const vm = vms.find((v) => v.name === name);
		if (!vm) problems.push(`lab VM ${printable(name)} was not discovered`);
		else if (!vm.backupable) continue;
		else if (!backups.some((b) => b.vm === name)) problems.push(`lab VM ${printable(name)} has no backup`);
		else if (!verified.some((v) => v.vm === name)) problems.push(`lab VM ${printable(name)} has no verify result`);
	}
	return problems;
}

function printNotifications(demo: DemoN8n): void {
	console.log(`\nemail received by the SMTP receiver (127.0.0.1:${demo.mail.port}): ${demo.mail.mails.length}`);
	for (const mail of demo.mail.mails) console.log(`  to ${mail.to.join(', ')}: ${printable(mail.subject)}`);
	console.log(`chat messages received (${demo.chat.url}/hooks/chat): ${demo.chat.posts.length}`);
	for (const post of demo.chat.posts) {
		const body = post.body as { text?: unknown } | string;
		const text = typeof body === 'object' && body !== null && 'text' in body ? String(body.text) : post.raw;
		console.log(`  ${text.split('\n').join('\n  ')}`);
	}
}

function printServing(demo: DemoN8n): void {
	const url = demo.server!.url;
	console.log(`\nn8n editor: ${url}   login ${DEMO_OWNER.email} / ${DEMO_OWNER.password}`);
	for (const workflow of demo.workflows) {
		console.log(`  ${workflow.name.padEnd(18)} ${url}/workflow/${workflow.id}${workflow.published ? '  (published)' : ''}`);
	}
	const hooks = demo.workflows.flatMap((workflow) => workflow.webhooks.map((hook) => `${hook.method.padEnd(4)} ${url}/webhook/${hook.path}`));
	if (hooks.length > 0) {
		console.log(`webhooks (header ${demo.webhookToken.name}: ${demo.webhookToken.value}):`);
		for (const hook of hooks) console.log(`  ${hook}`);
	}
	console.log(`email and chat notifications go to the receivers above; backups to ${demo.backupsDir}, off-site copies to ${demo.offsiteDir}`);
}

async function main(): Promise<number> {
	const started = Date.now();
	// Before minutes of setup: the editor's port must be free.
	await assertPortFree(DEMO_PORT);
	const lab = loadLab();
	console.log(`n8n: ${(await ensureN8n()).n8nBin}`);
	const demo = await createDemoN8n();
	try {
		console.log(`imported ${demo.workflows.length} workflows: ${demo.workflows.map((w) => w.name).join(', ')}`);
		console.log(`\nrunning ${demo.nightly.name} in n8n against ${lab.host}:${lab.port} ...\n`);
		const result = await demo.n8n.execute(demo.nightly.id, 900_000);
		console.log(`n8n execute took ${seconds(result.ms)}\n`);
		const problems = report(
			result.run,
			lab.vms.map((vm) => vm.name),
		);
		printNotifications(demo);
		if (problems.length > 0) {
			console.error(`\nPROBLEMS:\n  ${problems.join('\n  ')}`);
			if (result.run?.status !== 'success') console.error(`\n${result.stdout.slice(-3000)}\n${result.stderr.slice(-2000)}`);
		}
		await demo.serve(DEMO_PORT);
		printServing(demo);
		console.log(`\nready after ${seconds(Date.now() - started)}`);
		if (once) return problems.length > 0 ? 1 : 0;
		console.log('serving until Ctrl-C');
		await new Promise<void>((resolve) => {
			process.once('SIGINT', resolve);
			process.once('SIGTERM', resolve);
		});
		console.log('\nstopping n8n ...');
		return 0;
	} finally {
		await demo.close();
	}
}

main().then(
	(code) => process.exit(code),
	(error: unknown) => {
		console.error(error instanceof Error ? error.message : error);
		process.exit(1);
	},
);
