/**
 * `npm run demo`: the main job on the built-in lab host. Real n8n (installed and cached by
 * scripts/n8n/install.sh) loads this package as a community node, imports a credential for the
 * lab and the shipped workflow, runs it headless, and prints what happened as tables.
 *   npm run demo                     workflows/discover-vms.json
 *   npm run demo -- workflows/X.json another shipped workflow
 */
import * as path from 'node:path';
import { promises as fs } from 'node:fs';
import { formatBytes } from '../lib/backup';
import { loadLab } from '../test/support/lab';
import { createUserFolder, ensureN8n, nodeOutput, packPackage, REPO_ROOT } from '../test/support/n8n';

const workflowFile = path.resolve(REPO_ROOT, process.argv[2] ?? 'workflows/discover-vms.json');

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
	try {
		const credential = await n8n.importCredential({
			name: 'Libvirt lab host',
			type: 'libvirtSshApi',
			data: {
				host: lab.host,
				port: lab.port,
				username: lab.users.root.username,
				authMethod: 'privateKey',
				privateKey: lab.users.root.privateKey,
				hostKeys: lab.knownHostsLine,
				skipHostKeyVerification: false,
				sudoMode: 'none',
				libvirtUri: lab.systemUri,
			},
		});
		const workflowId = await n8n.importWorkflow(workflowFile, { REPLACE_CREDENTIAL_ID: credential.id });
		console.log(`running ${path.relative(REPO_ROOT, workflowFile)} in n8n against ${lab.host}:${lab.port} ...\n`);
		const result = await n8n.execute(workflowId);
		if (result.exitCode !== 0 || result.run?.status !== 'success') {
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
		const backups = nodeOutput(result.run, 'Backup VM Disk');
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
	} finally {
		await n8n.cleanup();
		await fs.rm(path.dirname(tgz), { recursive: true, force: true });
	}
}

main().catch((error: unknown) => {
	console.error(error instanceof Error ? error.message : error);
	process.exit(1);
});
