/**
 * Helpers for unit tests that run the catalog's remote scripts with the local /bin/sh on a temp
 * folder: the scripts receive exactly the argv they get on a host (`sh -c SCRIPT NAME args...`).
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { MANIFEST_FORMAT, MANIFEST_VERSION, serializeManifest, type Manifest } from '../../../lib/store/manifest';

export function runScript(script: string, name: string, args: string[]): { code: number | null; stdout: string; stderr: string } {
	const result = spawnSync('/bin/sh', ['-c', script, name, ...args], { encoding: 'utf8' });
	return { code: result.status, stdout: result.stdout, stderr: result.stderr };
}

export function tempDir(label: string): string {
	return fs.mkdtempSync(path.join(os.tmpdir(), `lvb-${label}-`));
}

export function manifest(vm: string, id: string, extra: Partial<Manifest> = {}): Manifest {
	const started = new Date(`${id.slice(0, 4)}-${id.slice(4, 6)}-${id.slice(6, 8)}T${id.slice(9, 11)}:${id.slice(11, 13)}:${id.slice(13, 15)}Z`);
	return {
		format: MANIFEST_FORMAT,
		version: MANIFEST_VERSION,
		vm: { name: vm, uuid: '6f1c7d0e-0000-4000-8000-000000000001' },
		host: 'test',
		id,
		startedAt: started.toISOString(),
		finishedAt: new Date(started.getTime() + 60_000).toISOString(),
		kind: 'full',
		method: 'offline-convert',
		consistency: 'offline',
		disks: [{ target: 'vda', source: '/images/vda.qcow2', file: 'vda.qcow2', format: 'qcow2', virtualBytes: 1 << 20, bytes: 4096, sha256: 'a'.repeat(64), compressed: false }],
		warnings: [],
		...extra,
	};
}

/** Writes `files` (relative path -> content) under root, making folders as needed. */
export function writeTree(root: string, files: Record<string, string>): void {
	for (const [relative, content] of Object.entries(files)) {
		const file = path.join(root, relative);
		fs.mkdirSync(path.dirname(file), { recursive: true });
		fs.writeFileSync(file, content);
	}
}

export function backupFiles(vmDir: string, m: Manifest): Record<string, string> {
	return { [`${vmDir}/${m.id}/manifest.json`]: serializeManifest(m), [`${vmDir}/${m.id}/vda.qcow2`]: 'x'.repeat(4096), [`${vmDir}/${m.id}/domain.xml`]: '<domain/>' };
}

/** Every path under root, relative, sorted. */
export function listTree(root: string): string[] {
	const out: string[] = [];
	const walk = (dir: string) => {
		for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
			const full = path.join(dir, entry.name);
			out.push(path.relative(root, full));
			if (entry.isDirectory() && !entry.isSymbolicLink()) walk(full);
		}
	};
	walk(root);
	return out.sort();
}
