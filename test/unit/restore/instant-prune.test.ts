/**
 * Prune and instant recovery: a backup an instant-recovery VM runs on (an `.lvb-instant-*.json`
 * marker in its folder) and its whole chain are kept, never consolidated, and the plan says why.
 * A marker is untrusted: whatever it holds, it can only keep.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { LIST_SCRIPT, parseCatalogOutput, planPrune, type Catalog, type CatalogBackup, type PrunePlanEntry } from '../../../lib/catalog';
import type { RetentionPolicy } from '../../../lib/retention';
import { instantMarkerName, readInstantUse, serializeInstantMarker, type InstantUse } from '../../../lib/store/instant';
import type { Manifest } from '../../../lib/store/manifest';
import { backupFiles, manifest, runScript, tempDir, writeTree } from '../catalog/local';

const NOW = new Date('2026-11-28T12:00:00Z');
const DEST = '/backups';
const UUID = '0a1b2c3d-0000-4000-8000-00000000beef';

const day = (n: number) => `202611${String(n).padStart(2, '0')}T010000Z`;

function backup(id: string, extra: Partial<Manifest> = {}, more: Partial<CatalogBackup> = {}): CatalogBackup {
	return { dest: DEST, vmDir: 'web01', vm: 'web01', id, path: `${DEST}/web01/${id}`, manifest: manifest('web01', id, extra), protected: false, diskBytes: 1000, missingFiles: [], ...more };
}

/** Full on day `from`, one incremental a day up to `to`, newest first. */
function chain(from: number, to: number): CatalogBackup[] {
	const backups: CatalogBackup[] = [];
	for (let n = from; n <= to; n++) backups.unshift(backup(day(n), n === from ? {} : { kind: 'incremental', parent: day(n - 1) }));
	return backups;
}

const use = (name = 'web01-recovered'): InstantUse => ({ file: instantMarkerName(UUID), uuid: UUID, name, host: 'hv1' });
const unreadable: InstantUse = { file: instantMarkerName(UUID), uuid: UUID, problem: `${instantMarkerName(UUID)} is not valid JSON` };

/** Marks the given days (an instant VM on day `top` marks top and every ancestor). */
function inUse(backups: CatalogBackup[], days: number[], how: InstantUse = use()): CatalogBackup[] {
	return backups.map((b) => (days.includes(Number(b.id.slice(6, 8))) ? { ...b, inUse: [how] } : b));
}

function plan(backups: CatalogBackup[], policy: RetentionPolicy, consolidate = false): PrunePlanEntry[] {
	const catalog: Catalog = { dest: DEST, backups, incomplete: [], quarantined: [] };
	return planPrune(catalog, policy, { now: NOW, consolidate });
}

const actions = (entries: PrunePlanEntry[]) => entries.map((entry) => `${Number(entry.id.slice(6, 8))} ${entry.action}`);
const IN_USE = `in use by instant-recovery VM "web01-recovered" (domain ${UUID} on hv1)`;

describe('prune plan with instant-recovery VMs', () => {
	const table: { name: string; backups: () => CatalogBackup[]; policy: RetentionPolicy; consolidate?: boolean; expected: string[]; reasons?: Record<number, string[]> }[] = [
		{
			name: 'an old full a VM runs on is kept though the policy drops it',
			backups: () => inUse([backup(day(27)), backup(day(20))], [20]),
			policy: { keepLast: 1 },
			expected: ['27 keep', '20 keep'],
			reasons: { 20: [IN_USE] },
		},
		{
			name: 'without the marker the same full goes (the control)',
			backups: () => [backup(day(27)), backup(day(20))],
			policy: { keepLast: 1 },
			expected: ['27 keep', '20 prune'],
		},
		{
			name: 'an incremental in use keeps its whole chain, each member saying why',
			backups: () => inUse([backup(day(27)), ...chain(20, 23)], [20, 21, 22]),
			policy: { keepLast: 1 },
			expected: ['27 keep', '23 prune', '22 keep', '21 keep', '20 keep'],
			reasons: { 22: [IN_USE], 21: [IN_USE, `parent of kept incremental ${day(22)}`], 20: [IN_USE, `parent of kept incremental ${day(21)}`] },
		},
		{
			name: 'a marker only on the top still keeps the chain below it as parents',
			backups: () => inUse([backup(day(27)), ...chain(20, 22)], [22]),
			policy: { keepLast: 1 },
			expected: ['27 keep', '22 keep', '21 keep', '20 keep'],
			reasons: { 21: [`parent of kept incremental ${day(22)}`] },
		},
		{
			name: 'consolidation never rebuilds a backup a VM runs on',
			backups: () => inUse(chain(20, 23), [20, 21, 22]),
			policy: { keepLast: 2 },
			consolidate: true,
			expected: ['23 keep', '22 keep', '21 keep', '20 keep'],
		},
		{
			name: 'consolidation never rebuilds a chain through a backup a VM runs on (only its full is marked)',
			backups: () => inUse(chain(20, 23), [20]),
			policy: { keepLast: 2 },
			consolidate: true,
			expected: ['23 keep', '22 keep', '21 keep', '20 keep'],
		},
		{
			name: 'consolidation of the same chain without a marker (the control)',
			backups: () => chain(20, 23),
			policy: { keepLast: 2 },
			consolidate: true,
			expected: ['23 keep', '22 consolidate', '21 prune', '20 prune'],
		},
		{
			name: 'a marker that cannot be read keeps the backup and says so',
			backups: () => inUse([backup(day(27)), backup(day(20))], [20], unreadable),
			policy: { keepLast: 1 },
			expected: ['27 keep', '20 keep'],
			reasons: { 20: [`in use by instant-recovery VM an unknown VM (domain ${UUID}; ${instantMarkerName(UUID)} is not valid JSON)`] },
		},
		{
			name: 'two VMs on one backup: both named',
			backups: () => [backup(day(27)), { ...backup(day(20)), inUse: [use('a'), use('b')] }],
			policy: { keepLast: 1 },
			expected: ['27 keep', '20 keep'],
			reasons: { 20: [`in use by instant-recovery VM "a" (domain ${UUID} on hv1)`, `in use by instant-recovery VM "b" (domain ${UUID} on hv1)`] },
		},
	];

	test.each(table)('$name', ({ backups, policy, consolidate, expected, reasons }) => {
		const entries = plan(backups(), policy, consolidate);
		expect(actions(entries)).toEqual(expected);
		for (const [dayNumber, expectedReasons] of Object.entries(reasons ?? {})) {
			expect(entries.find((entry) => entry.id === day(Number(dayNumber)))?.reasons).toEqual(expectedReasons);
		}
	});
});

describe('reading markers', () => {
	const name = instantMarkerName(UUID);
	const good = serializeInstantMarker({ format: 'n8n-nodes-libvirt-backup/instant-recovery', version: 1, domain: { name: 'web01-recovered', uuid: UUID }, host: 'hv1', backup: '/b/web01/x', createdAt: NOW.toISOString() });
	const table: { name: string; file: string; type: string; text: string | undefined; expected: Partial<InstantUse> | undefined }[] = [
		{ name: 'our marker', file: name, type: 'file', text: good, expected: { uuid: UUID, name: 'web01-recovered', host: 'hv1' } },
		{ name: 'not a marker name', file: '.lvb-instant-x.json', type: 'file', text: good, expected: undefined },
		{ name: 'a symbolic link under the name still keeps', file: name, type: 'symlink', text: undefined, expected: { uuid: UUID, problem: `${name} is not a regular file (symlink)` } },
		{ name: 'garbage still keeps', file: name, type: 'file', text: '{{', expected: { uuid: UUID, problem: `${name} is not valid JSON` } },
		{ name: 'another domain in the text: not believed', file: name, type: 'file', text: good.replace(UUID, '0a1b2c3d-0000-4000-8000-000000000000'), expected: { uuid: UUID, problem: `${name} names another domain than its file name` } },
		{ name: 'a huge planted name is cut', file: name, type: 'file', text: good.replace('web01-recovered', 'x'.repeat(10_000)), expected: { name: 'x'.repeat(200) } },
	];
	test.each(table)('$name', ({ file, type, text, expected }) => {
		const result = readInstantUse(file, type, text);
		if (expected === undefined) expect(result).toBeUndefined();
		else expect(result).toMatchObject(expected);
	});

	test('the catalog reads markers from the listing: a regular marker with its text, a planted symlink by name only', () => {
		const m = '@@LVB-test';
		const id = day(20);
		const man = JSON.stringify(manifest('web01', id));
		const output = [
			`${m} dirs`,
			`web01/${id}`,
			`${m} files`,
			`81a4 10 8 512 web01/${id}/manifest.json`,
			`81a4 10 8 512 web01/${id}/vda.qcow2`,
			`81a4 10 8 512 web01/${id}/${name}`,
			`a1ff 10 0 512 web01/${id}/.lvb-instant-0a1b2c3d-0000-4000-8000-000000000001.json`,
			`${m} text web01/${id}/manifest.json`,
			man,
			`${m} text web01/${id}/${name}`,
			good.trimEnd(),
			`${m} end`,
			'',
		].join('\n');
		const catalog = parseCatalogOutput(output, m, DEST);
		expect(catalog.backups[0].inUse).toEqual([
			{ file: name, uuid: UUID, name: 'web01-recovered', host: 'hv1' },
			{ file: '.lvb-instant-0a1b2c3d-0000-4000-8000-000000000001.json', uuid: '0a1b2c3d-0000-4000-8000-000000000001', problem: '.lvb-instant-0a1b2c3d-0000-4000-8000-000000000001.json is not a regular file (symlink)' },
		]);
	});
});

describe('the listing script and markers (local /bin/sh)', () => {
	test('reads a regular marker; a planted link, FIFO or odd name under a marker-like name is never opened, and a link still keeps', () => {
		const root = tempDir('instant-list');
		try {
			const id = day(20);
			const good = serializeInstantMarker({ format: 'n8n-nodes-libvirt-backup/instant-recovery', version: 1, domain: { name: 'web01-recovered', uuid: UUID }, host: 'hv1', backup: `${root}/web01/${id}`, createdAt: NOW.toISOString() });
			writeTree(root, { ...backupFiles('web01', manifest('web01', id)), [`web01/${id}/${instantMarkerName(UUID)}`]: good, 'secret.json': '{"format":"n8n-nodes-libvirt-backup/instant-recovery"}' });
			const other = '0a1b2c3d-0000-4000-8000-000000000001';
			fs.symlinkSync(path.join(root, 'secret.json'), path.join(root, `web01/${id}/${instantMarkerName(other)}`));
			fs.writeFileSync(path.join(root, `web01/${id}/.lvb-instant-x y.json`), 'not read');
			const marker = '@@LVB-test';
			const { stdout, code } = runScript(LIST_SCRIPT, 'lvb-list', [marker, root]);
			expect(code).toBe(0);
			expect(stdout).not.toContain('not read');
			expect(stdout).not.toContain('secret');
			const [backup] = parseCatalogOutput(stdout, marker, root).backups;
			expect(backup.inUse).toEqual([
				{ file: instantMarkerName(other), uuid: other, problem: `${instantMarkerName(other)} is not a regular file (symlink)` },
				{ file: instantMarkerName(UUID), uuid: UUID, name: 'web01-recovered', host: 'hv1' },
			]);
		} finally {
			fs.rmSync(root, { recursive: true, force: true });
		}
	});
});
