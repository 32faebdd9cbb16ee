/**
 * The backup writer's host scripts run with the local /bin/sh on a temp folder, exactly as on a
 * host (`sh -c SCRIPT NAME args...`). A flush error (NFS, quota, full disk at writeback) cannot be
 * provoked on demand, so a `sync` that fails stands in for it, put first on PATH.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { FINALIZE_SCRIPT, FINISH_IMAGES_SCRIPT } from '../../lib/backup/hostFiles';
import { listTree, tempDir } from './catalog/local';

function run(script: string, name: string, args: string[], failingSync: boolean): { code: number | null; stdout: string; stderr: string } {
	const env = { ...process.env };
	if (failingSync) {
		const bin = tempDir('bin');
		fs.writeFileSync(path.join(bin, 'sync'), '#!/bin/sh\necho "sync: error syncing: Input/output error" >&2\nexit 1\n', { mode: 0o755 });
		env.PATH = `${bin}:${env.PATH ?? ''}`;
	}
	const result = spawnSync('/bin/sh', ['-c', script, name, ...args], { encoding: 'utf8', env });
	return { code: result.status, stdout: result.stdout, stderr: result.stderr };
}

/** A backup folder as a strategy leaves it: marker + one written image. */
function writtenFolder(): string {
	const dir = path.join(tempDir('finish'), '20261120T010000Z');
	fs.mkdirSync(dir);
	fs.writeFileSync(path.join(dir, '.lvb-incomplete'), '');
	fs.writeFileSync(path.join(dir, 'vda.qcow2.partial'), 'image data');
	return dir;
}

describe('finish images', () => {
	test('hashes each image when its flush succeeds', () => {
		const dir = writtenFolder();
		const result = run(FINISH_IMAGES_SCRIPT, 'lvb-finish-images', [dir, 'MARK', 'vda.qcow2', '', '0'], false);
		expect(result).toMatchObject({ code: 0 });
		expect(result.stdout).toContain('MARK file 10\n');
	});

	test('a failed flush of an image fails the step', () => {
		const dir = writtenFolder();
		const result = run(FINISH_IMAGES_SCRIPT, 'lvb-finish-images', [dir, 'MARK', 'vda.qcow2', '', '0'], true);
		expect(result.code).not.toBe(0);
	});
});

describe('finalize', () => {
	const args = (dir: string) => [dir, '{"manifest": true}\n', '<domain/>', 'vda.qcow2'];

	test('writes domain.xml and the manifest, then drops the marker', () => {
		const dir = writtenFolder();
		expect(run(FINALIZE_SCRIPT, 'lvb-finalize', args(dir), false)).toMatchObject({ code: 0 });
		expect(listTree(dir)).toEqual(['domain.xml', 'manifest.json', 'vda.qcow2']);
		expect(fs.readFileSync(path.join(dir, 'manifest.json'), 'utf8')).toBe('{"manifest": true}\n');
	});

	test('a failed flush leaves no manifest, and the marker stays (the folder is not a backup)', () => {
		const dir = writtenFolder();
		const result = run(FINALIZE_SCRIPT, 'lvb-finalize', args(dir), true);
		expect(result.code).not.toBe(0);
		expect(fs.existsSync(path.join(dir, 'manifest.json'))).toBe(false);
		expect(fs.existsSync(path.join(dir, '.lvb-incomplete'))).toBe(true);
	});

	test('planted links and FIFOs where finalize writes are refused, not followed', () => {
		for (const name of ['manifest.json.tmp', 'domain.xml', 'manifest.json']) {
			const dir = writtenFolder();
			const outside = path.join(path.dirname(dir), 'canary');
			fs.writeFileSync(outside, 'canary');
			fs.symlinkSync(outside, path.join(dir, name));
			const result = run(FINALIZE_SCRIPT, 'lvb-finalize', args(dir), false);
			expect(fs.readFileSync(outside, 'utf8')).toBe('canary');
			if (name !== 'manifest.json') expect(result.code).not.toBe(0);
		}
		const dir = writtenFolder();
		spawnSync('mkfifo', [path.join(dir, 'manifest.json.tmp')]);
		const result = spawnSync('/bin/sh', ['-c', FINALIZE_SCRIPT, 'lvb-finalize', ...args(dir)], { encoding: 'utf8', timeout: 10_000 });
		expect(result.error).toBeUndefined();
		expect(result.status).not.toBe(0);
	});
});
