/**
 * The catalog: LIST_SCRIPT run with the local /bin/sh on a temp destination, and its output
 * parsed into backups, incomplete folders and quarantined backups.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { vmDirName } from '../../../lib/store/layout';
import { serializeManifest } from '../../../lib/store/manifest';
import { LIST_SCRIPT, filterCatalog, parseCatalogOutput, type Catalog } from '../../../lib/catalog';
import { serializeVerification } from '../../../lib/store';
import { isLibvirtBackupError } from '../../../lib/errors';
import { backupFiles, manifest, runScript, tempDir, writeTree } from './local';

const MARKER = '@@LVB-unit';

let root: string;
let dest: string;

beforeEach(() => {
	root = tempDir('list');
	dest = path.join(root, `dest 'q' $(touch pwned)`);
	fs.mkdirSync(dest);
});
afterEach(() => fs.rmSync(root, { recursive: true, force: true }));

function list(vmDirs: string[] = []): Catalog {
	const { stdout, code } = runScript(LIST_SCRIPT, 'lvb-list', [MARKER, dest, ...vmDirs]);
	expect(code).toBe(0);
	return parseCatalogOutput(stdout, MARKER, dest);
}

const summary = (catalog: Catalog) => ({
	backups: catalog.backups.map((b) => `${b.vm}/${b.id}`),
	incomplete: catalog.incomplete.map((f) => `${f.vmDir}/${f.id}: ${f.reason}${f.writerLeftovers ? ' (leftovers)' : ''}`),
	quarantined: catalog.quarantined.map((f) => `${f.vm}/${f.id}`),
});

describe('LIST_SCRIPT + parseCatalogOutput', () => {
	test('finished backups come from their manifests, newest first per VM, with hostile VM names intact', () => {
		const hostile = `it's "x" $(touch pwned) ..\n`;
		writeTree(dest, {
			...backupFiles('web01', manifest('web01', '20261120T010000Z')),
			...backupFiles('web01', manifest('web01', '20261121T010000Z', { kind: 'incremental', parent: '20261120T010000Z' })),
			...backupFiles(vmDirName(hostile), manifest(hostile, '20261122T010000Z')),
			'web01/20261121T010000Z/.lvb-protected': '',
			'web01/20261121T010000Z/verification.json': serializeVerification({
				format: 'n8n-nodes-libvirt-backup/verification',
				version: 1,
				backupId: '20261121T010000Z',
				verifiedAt: '2026-11-21T02:00:00.000Z',
				status: 'invalid',
				ok: false,
				disks: [],
				parents: [],
				problems: ['vda: sha256 mismatch'],
			}),
		});

		const catalog = list();

		expect(summary(catalog).backups).toEqual([`${hostile}/20261122T010000Z`, 'web01/20261121T010000Z', 'web01/20261120T010000Z']);
		expect(catalog.backups[1]).toMatchObject({ protected: true, verification: { ok: false }, path: `${dest}/web01/20261121T010000Z`, dest });
		expect(catalog.backups[2]).toMatchObject({ protected: false, verification: undefined });
		expect(catalog.backups[2].diskBytes).toBeGreaterThan(0);
		expect(fs.existsSync(path.join(root, 'pwned'))).toBe(false);
	});

	test('folders that are not finished backups are incomplete with a reason; foreign names are not reported', () => {
		writeTree(dest, {
			'web01/20261120T010000Z/.lvb-incomplete': '',
			'web01/20261120T010000Z/vda.qcow2.partial': 'x',
			'web01/20261121T010000Z/vda.qcow2': 'x',
			'web01/20261122T010000Z/manifest.json': '{"not": "ours"}',
			'web01/20261123T010000Z/manifest.json': '',
			...backupFiles('db01', manifest('web01', '20261124T010000Z')),
			'web01/20261125T010000Z/manifest.json': serializeManifest(manifest('web01', '20261126T010000Z')),
			'web01/20261127T010000Z.quarantined/manifest.json': serializeManifest(manifest('web01', '20261127T010000Z')),
			'notes.txt': 'x',
			'web01/old.qcow2': 'x',
			'web01/2026-11-20/x': 'x',
			'other tool/20261120T010000Z/manifest.json': serializeManifest(manifest('web01', '20261120T010000Z')),
			'.hidden/20261120T010000Z/manifest.json': serializeManifest(manifest('web01', '20261120T010000Z')),
		});
		fs.mkdirSync(path.join(dest, 'web01', '20261128T010000Z'));
		fs.symlinkSync('/etc', path.join(dest, 'web01', '20261129T010000Z'));
		fs.symlinkSync(path.join(dest, 'web01'), path.join(dest, 'linked'));

		expect(summary(list())).toEqual({
			backups: [],
			incomplete: [
				'db01/20261124T010000Z: the manifest is for VM "web01", whose folder is web01',
				'web01/20261129T010000Z: symbolic link: never followed',
				'web01/20261128T010000Z: no manifest and no incomplete marker: not written by this package',
				'web01/20261125T010000Z: the manifest is for backup 20261126T010000Z, not 20261125T010000Z',
				'web01/20261123T010000Z: manifest.json is empty',
				`web01/20261122T010000Z: ${dest}/web01/20261122T010000Z/manifest.json: not a valid backup manifest: format is undefined`,
				'web01/20261121T010000Z: no manifest and no incomplete marker: not written by this package',
				'web01/20261120T010000Z: no manifest: the backup was not finished (leftovers)',
			],
			quarantined: ['web01/20261127T010000Z'],
		});
	});

	test('a file name with a line break cannot pass for a partial file or a manifest', () => {
		writeTree(dest, {
			'web01/20261120T010000Z/.lvb-incomplete': '',
			'web01/20261120T010000Z/x.partial\nmanifest.json': 'x',
		});

		const [folder] = list().incomplete;

		expect(folder).toMatchObject({ id: '20261120T010000Z', reason: 'no manifest: the backup was not finished', writerLeftovers: false });
	});

	test('only the VM folders asked for are read', () => {
		writeTree(dest, { ...backupFiles('web01', manifest('web01', '20261120T010000Z')), ...backupFiles('db01', manifest('db01', '20261120T010000Z')) });

		expect(summary(list(['db01', 'nobody', '../web01'])).backups).toEqual(['db01/20261120T010000Z']);
	});

	test('an empty destination is an empty catalog; a missing one is an error; cut-off output is an error', () => {
		expect(list()).toEqual({ dest, backups: [], incomplete: [], quarantined: [] });
		const missing = runScript(LIST_SCRIPT, 'lvb-list', [MARKER, `${dest}/nope`]);
		expect(() => parseCatalogOutput(missing.stdout, MARKER, `${dest}/nope`)).toThrow(/does not exist on the host/);
		let error: unknown;
		try {
			parseCatalogOutput(`${MARKER} dirs\nweb01/20261120T010000Z\n`, MARKER, dest);
		} catch (caught) {
			error = caught;
		}
		expect(isLibvirtBackupError(error, 'PARSE_ERROR')).toBe(true);
	});

	test('filters by VM, kind and start time', () => {
		writeTree(dest, {
			...backupFiles('web01', manifest('web01', '20261120T010000Z')),
			...backupFiles('web01', manifest('web01', '20261121T010000Z-1', { kind: 'incremental', parent: '20261120T010000Z' })),
			...backupFiles('db01', manifest('db01', '20261122T010000Z')),
		});
		const catalog = list();

		expect(summary(filterCatalog(catalog, { kinds: ['incremental'] })).backups).toEqual(['web01/20261121T010000Z-1']);
		expect(summary(filterCatalog(catalog, { vmNames: ['db01'] })).backups).toEqual(['db01/20261122T010000Z']);
		expect(summary(filterCatalog(catalog, { newerThan: new Date('2026-11-21T01:00:00Z'), olderThan: new Date('2026-11-22T01:00:00Z') })).backups).toEqual([
			'web01/20261121T010000Z-1',
		]);
	});

	test('files bigger than ours can be are not read: an oversized manifest makes the backup incomplete, an oversized record is left unread; many short lines read in linear time', () => {
		const padded = serializeManifest(manifest('web01', '20261121T010000Z')) + ' '.repeat(2 * 1024 * 1024);
		// Under the limit, but 500 000 lines: quadratic joining in awk would not finish in the test's time.
		const manyLines = `{"format":"n8n-nodes-libvirt-backup/verification"${'\n'.repeat(500_000)}}`;
		writeTree(dest, {
			...backupFiles('web01', manifest('web01', '20261120T010000Z')),
			...backupFiles('web01', manifest('web01', '20261121T010000Z')),
			...backupFiles('db01', manifest('db01', '20261121T020000Z')),
			'web01/20261121T010000Z/manifest.json': padded,
			'web01/20261120T010000Z/verification.json': `{"format":"n8n-nodes-libvirt-backup/verification"${' '.repeat(1024 * 1024)}}`,
			'db01/20261121T020000Z/verification.json': manyLines,
		});
		const { stdout } = runScript(LIST_SCRIPT, 'lvb-list', [MARKER, dest]);
		// Nothing of the oversized files crosses: the whole listing stays small.
		expect(stdout.length).toBeLessThan(64 * 1024 + manyLines.length);
		const catalog = parseCatalogOutput(stdout, MARKER, dest);
		expect(summary(catalog).incomplete).toEqual([`web01/20261121T010000Z: manifest.json is ${Buffer.byteLength(padded)} bytes, more than the 1048576 a manifest of this package can be: not read`]);
		expect(summary(catalog).backups).toEqual(['db01/20261121T020000Z', 'web01/20261120T010000Z']);
		expect(catalog.backups.find((backup) => backup.vm === 'web01')?.verification).toBeUndefined();
	});
});
