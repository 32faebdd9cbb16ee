/**
 * `npm run demo`: the main job on the built-in lab host. Real n8n (installed and cached by
 * scripts/n8n/install.sh) loads this package as a community node, imports a credential for the
 * lab and the shipped nightly workflow (backups go to /var/lib/lvb-lab/demo-backups, the chat
 * notifications to a local webhook this script prints), runs it headless, and prints tables.
 *   npm run demo                     workflows/nightly-backup.json
 *   npm run demo -- workflows/X.json another shipped workflow
 */
import * as http from 'node:http';
import * as path from 'node:path';
import { promises as fs } from 'node:fs';
import { formatBytes } from '../lib/backup';
import { loadLab } from '../test/support/lab';
import { createUserFolder, ensureN8n, nodeOutput, packPackage, REPO_ROOT } from '../test/support/n8n';
import { labCredentialData } from '../test/support/targets';

const workflowFile = path.resolve(REPO_ROOT, process.argv[2] ?? 'workflows/nightly-backup.json');
/** Placeholders in the shipped workflows, replaced for the lab. */
const SHIPPED_DEST = '/mnt/storage/backups/vm_backups';
const SHIPPED_HOOK = 'https://chat.example.com/hooks/REPLACE_WITH_YOUR_WEBHOOK';

/** A local stand-in for the chat webhook: collects what the workflow posts. */
async function startWebhook(): Promise<{ url: string; received: string[]; close(): void }> {
	const received: string[] = [];
	const server = http.createServer((request, response) => {
		let body = '';
		request.on('data', (chunk: Buffer) => (body += chunk.toString()));
		request.on('end', () => {
			received.push(String(JSON.parse(body).text));
			response.end('ok');
		});
	});
	await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
	return { url: `http://127.0.0.1:${(server.address() as { port: number }).port}/hook`, received, close: () => server.close() };
}

function table(rows: string[][]): string {
	const widths = rows[0].map((_, column) => Math.max(...rows.map((row) => row[column].length)));
	const line = (row: string[]) => row.map((cell, column) => cell.padEnd(widths[column])).join('  ').trimEnd();
	return [line(rows[0]), widths.map((width) => '-'.repeat(width)).join('  '), ...rows.slice(1).map(line)].join('\n');
}

const printable = (text: string) => JSON.stringify(text).slice(1, -1);

async function main(): Promise<void> {
	const lab = loadLab();
	console.log(`n8n: ${(await ensureN8n()).n8nBin}`);
	const tgz = await packPackage();
	const n8n = await createUserFolder(tgz);
	const webhook = await startWebhook();
	const dest = `${lab.labDir}/demo-backups`;
	try {
		const credential = await n8n.importCredential({
			name: 'Libvirt lab host',
			type: 'libvirtSshApi',
			data: labCredentialData(),
		});
		const workflowId = await n8n.importWorkflow(workflowFile, { REPLACE_CREDENTIAL_ID: credential.id, [SHIPPED_DEST]: dest, [SHIPPED_HOOK]: webhook.url });
		console.log(`running ${path.relative(REPO_ROOT, workflowFile)} in n8n against ${lab.host}:${lab.port} ...\n`);
		const result = await n8n.execute(workflowId);
		if (result.run?.status !== 'success') {
			throw new Error(`the workflow failed (exit ${result.exitCode}):\n${result.stdout.slice(-3000)}\n${result.stderr.slice(-2000)}`);
		}
		const vms = nodeOutput(result.run, 'Discover VMs');
		if (vms.length > 0) {
			console.log(`Discover VMs: ${vms.length} VMs on ${lab.host}\n`);
			console.log(
				table([
					['VM', 'state', 'disks', 'virtual', 'on host', 'backupable'],
					...vms.map((vm) => [
						printable(String(vm.name)),
						String(vm.state),
						(vm.disks as { target: string; type: string; format?: string }[]).map((d) => `${d.target}:${d.type}/${d.format ?? '?'}`).join(' '),
						formatBytes(Number(vm.totalVirtualBytes)),
						formatBytes(Number(vm.totalAllocatedBytes)),
						vm.backupable ? 'yes' : `no: ${(vm.reasons as string[]).join('; ')}`,
					]),
				]),
			);
		}
		const backups = [...nodeOutput(result.run, 'Backup VM Disk', 0), ...nodeOutput(result.run, 'Backup VM Disk', 1)];
		if (backups.length > 0) {
			console.log(`\nBackup VM Disk: ${backups.length} backups\n`);
			console.log(
				table([
					['VM', 'kind', 'method', 'consistency', 'written', 'seconds', 'folder'],
					...backups.map((b) =>
						b.error
							? [String(b.vm ?? '?'), 'FAILED', '', '', '', '', String(b.error)]
							: [printable(String(b.vm)), String(b.kind), String(b.method), String(b.consistency), formatBytes(Number(b.totalBytes)), String(b.durationSeconds), String(b.path)],
					),
				]),
			);
		}
		const verified = nodeOutput(result.run, 'Verify Checksum', 0).length;
		const invalid = nodeOutput(result.run, 'Verify Checksum', 1);
		if (verified + invalid.length > 0) {
			console.log(`\nVerify Checksum: ${verified} valid, ${invalid.length} invalid${invalid.map((b) => `\n  INVALID ${String(b.path)}`).join('')}`);
		}
		const pruned = nodeOutput(result.run, 'Prune Old Backups');
		if (pruned.length > 0) {
			const removed = pruned.filter((p) => p.action === 'prune');
			console.log(`Prune Old Backups: ${pruned.length - removed.length} kept, ${removed.length} pruned (${formatBytes(removed.reduce((sum, p) => sum + Number(p.freedBytes ?? 0), 0))} freed)`);
		}
		for (const text of webhook.received) console.log(`\nposted to the chat webhook:\n${text}`);
		console.log(`\nbackups are in ${dest} on the lab host`);
	} finally {
		webhook.close();
		await n8n.cleanup();
		await fs.rm(path.dirname(tgz), { recursive: true, force: true });
	}
}

main().catch((error: unknown) => {
	console.error(error instanceof Error ? error.message : error);
	process.exit(1);
});
