/**
 * CHANGE_SCRIPT, run with the local /bin/sh: it removes, quarantines and records only in folders
 * it has re-checked itself, whatever the caller asked for.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { vmDirName } from '../../../lib/store/layout';
import { CHANGE_SCRIPT, parseChangeOutput, type FolderChange } from '../../../lib/catalog';
import { backupFiles, listTree, manifest, runScript, tempDir, writeTree } from './local';

const MARKER = '@@LVB-unit';
const CUTOFF = '20261127000000'; // stale = started before 27 Nov 2026 00:00 UTC

let root: string;
let dest: string;

beforeEach(() => {
	root = tempDir('changes');
	dest = path.join(root, `dest 'with' "quotes" $(touch pwned) and spaces`);
	fs.mkdirSync(dest);
});
afterEach(() => fs.rmSync(root, { recursive: true, force: true }));

function change(vmDir: string, changes: FolderChange[], destination = dest) {
	const args = changes.flatMap((c) => [c.op, c.id, c.op === 'record' ? c.data : '']);
	const result = runScript(CHANGE_SCRIPT, 'lvb-change', [MARKER, destination, CUTOFF, vmDir, ...args]);
	return { ...result, outcomes: parseChangeOutput(result.stdout, MARKER, changes) };
}

describe('CHANGE_SCRIPT', () => {
	test('removes a backup folder holding our manifest, and nothing next to it', () => {
		writeTree(dest, { ...backupFiles('web01', manifest('web01', '20261120T010000Z')), ...backupFiles('web01', manifest('web01', '20261121T010000Z')), 'web01/notes.txt': 'x' });

		const { outcomes } = change('web01', [{ op: 'remove', id: '20261120T010000Z' }]);

		expect(outcomes).toEqual([{ id: '20261120T010000Z', op: 'remove', status: 'removed', detail: '' }]);
		expect(listTree(dest)).toEqual(['web01', 'web01/20261121T010000Z', 'web01/20261121T010000Z/domain.xml', 'web01/20261121T010000Z/manifest.json', 'web01/20261121T010000Z/vda.qcow2', 'web01/notes.txt']);
	});

	test('refuses folders without our manifest, foreign manifests, symlinks and non-ids', () => {
		writeTree(dest, {
			'web01/20261120T010000Z/vda.qcow2': 'x',
			'web01/20261121T010000Z/manifest.json': '{"format":"someone-else"}',
			'outside/20261122T010000Z/manifest.json': JSON.stringify(manifest('web01', '20261122T010000Z')),
		});
		fs.symlinkSync(path.join(dest, 'outside', '20261122T010000Z'), path.join(dest, 'web01', '20261122T010000Z'));
		fs.mkdirSync(path.join(dest, 'web01', '20261123T010000Z'));
		fs.symlinkSync(path.join(dest, 'outside', '20261122T010000Z', 'manifest.json'), path.join(dest, 'web01', '20261123T010000Z', 'manifest.json'));
		const before = listTree(dest);

		const ids = ['20261120T010000Z', '20261121T010000Z', '20261122T010000Z', '20261123T010000Z', '..', '20261124T010000Z/../..', '20261125T010000Z-x', '-rf'];
		const { outcomes } = change('web01', ids.map((id) => ({ op: 'remove', id })));

		expect(outcomes.map((o) => [o.id, o.status, o.detail])).toEqual([
			['20261120T010000Z', 'refused', 'the folder holds no manifest of ours'],
			['20261121T010000Z', 'refused', 'the folder holds no manifest of ours'],
			['20261122T010000Z', 'refused', 'the backup folder is a symbolic link'],
			['20261123T010000Z', 'refused', 'the folder holds no manifest of ours'],
			['..', 'refused', 'not a backup id'],
			['20261124T010000Z/../..', 'refused', 'not a backup id'],
			['20261125T010000Z-x', 'refused', 'not a backup id'],
			['-rf', 'refused', 'not a backup id'],
		]);
		expect(listTree(dest)).toEqual(before);
	});

	test('refuses a VM folder that is a symlink, or a bad VM folder name or destination, before anything', () => {
		writeTree(root, backupFiles('elsewhere', manifest('web01', '20261120T010000Z')));
		fs.symlinkSync(path.join(root, 'elsewhere'), path.join(dest, 'web01'));

		expect(change('web01', [{ op: 'remove', id: '20261120T010000Z' }]).outcomes[0]).toMatchObject({ status: 'refused', detail: 'the VM folder web01 is missing or a symbolic link' });
		for (const [vmDir, destination] of [['..', dest], ['.hidden', dest], ['a/b', dest], ['', dest], ['web01', `${dest}/../x`], ['web01', 'relative'], ['web01', `${dest}//x`]]) {
			const result = change(vmDir, [{ op: 'remove', id: '20261120T010000Z' }], destination);
			expect(result.code).toBe(64);
			expect(result.outcomes[0].status).toBe('failed');
		}
		expect(fs.existsSync(path.join(root, 'elsewhere', '20261120T010000Z', 'vda.qcow2'))).toBe(true);
	});

	test('removes a stale unfinished folder only when old enough by id and holding only our leftovers', () => {
		const leftovers = (id: string, extra: Record<string, string> = {}) => ({
			[`web01/${id}/.lvb-incomplete`]: '',
			[`web01/${id}/vda.qcow2.partial`]: 'x',
			[`web01/${id}/domain.xml`]: '<domain/>',
			[`web01/${id}/.lvb-backup.xml`]: '<domainbackup/>',
			[`web01/${id}/manifest.json.tmp`]: '{',
			...Object.fromEntries(Object.entries(extra).map(([name, content]) => [`web01/${id}/${name}`, content])),
		});
		writeTree(dest, {
			...leftovers('20261120T010000Z'),
			...leftovers('20261127T010000Z'),
			...leftovers('20261121T010000Z', { 'notes.txt': 'mine' }),
			...leftovers('20261122T010000Z', { 'manifest.json': JSON.stringify(manifest('web01', '20261122T010000Z')) }),
			'web01/20261123T010000Z/vda.qcow2.partial': 'x',
			...leftovers('20261124T010000Z', { 'sub/vda.qcow2.partial': 'x' }),
		});
		writeTree(dest, leftovers('20261119T010000Z'));
		fs.symlinkSync('/etc/passwd', path.join(dest, 'web01', '20261119T010000Z', 'link.partial'));

		const ids = ['20261120T010000Z', '20261127T010000Z', '20261121T010000Z', '20261122T010000Z', '20261123T010000Z', '20261124T010000Z', '20261119T010000Z'];
		const { outcomes } = change('web01', ids.map((id) => ({ op: 'stale', id })));

		const leftoversOnly = 'the folder holds more than our unfinished-backup leftovers';
		expect(outcomes.map((o) => [o.id, o.status, o.detail])).toEqual([
			['20261120T010000Z', 'removed', ''],
			['20261127T010000Z', 'refused', 'not older than the safety age'],
			['20261121T010000Z', 'refused', leftoversOnly],
			['20261122T010000Z', 'refused', leftoversOnly],
			['20261123T010000Z', 'refused', leftoversOnly],
			['20261124T010000Z', 'refused', leftoversOnly],
			['20261119T010000Z', 'refused', leftoversOnly],
		]);
		expect(fs.existsSync('/etc/passwd')).toBe(true);
	});

	test('quarantines by renaming, never over an existing name', () => {
		writeTree(dest, { ...backupFiles('web01', manifest('web01', '20261120T010000Z')), ...backupFiles('web01', manifest('web01', '20261121T010000Z')), 'web01/20261121T010000Z.quarantined/x': '' });

		const { outcomes } = change('web01', [
			{ op: 'quarantine', id: '20261120T010000Z' },
			{ op: 'quarantine', id: '20261121T010000Z' },
		]);

		expect(outcomes.map((o) => o.status)).toEqual(['quarantined', 'refused']);
		expect(fs.existsSync(path.join(dest, 'web01', '20261120T010000Z.quarantined', 'manifest.json'))).toBe(true);
		expect(fs.existsSync(path.join(dest, 'web01', '20261121T010000Z', 'manifest.json'))).toBe(true);
	});

	test('records a verification result verbatim, whatever it contains', () => {
		const vm = `it's $(touch pwned)`;
		writeTree(dest, backupFiles(vmDirName(vm), manifest(vm, '20261120T010000Z')));
		const data = `{"x": "it's \\"quoted\\" $(touch pwned) \`id\`\\n"}\n`;

		const { outcomes } = change(vmDirName(vm), [{ op: 'record', id: '20261120T010000Z', data }]);

		expect(outcomes[0].status).toBe('recorded');
		expect(fs.readFileSync(path.join(dest, vmDirName(vm), '20261120T010000Z', 'verification.json'), 'utf8')).toBe(data);
		expect(listTree(root).filter((p) => p.endsWith('pwned'))).toEqual([]);
		expect(fs.existsSync('pwned')).toBe(false);
	});

	test('record never writes through a planted verification.json.partial: a link or a FIFO is refused, a stale regular one replaced', () => {
		const id = '20261120T010000Z';
		writeTree(dest, backupFiles('web01', manifest('web01', id)));
		const folder = path.join(dest, 'web01', id);
		const partial = path.join(folder, 'verification.json.partial');
		const outside = path.join(root, 'canary');
		fs.writeFileSync(outside, 'canary');

		fs.symlinkSync(outside, partial);
		expect(change('web01', [{ op: 'record', id, data: '{"ok": true}' }]).outcomes[0]).toMatchObject({ status: 'failed', detail: expect.stringContaining('verification.json.partial') });
		expect(fs.readFileSync(outside, 'utf8')).toBe('canary');
		expect(fs.readlinkSync(partial)).toBe(outside);
		expect(fs.existsSync(path.join(folder, 'verification.json'))).toBe(false);

		fs.unlinkSync(partial);
		fs.symlinkSync(path.join(root, 'missing'), partial);
		expect(change('web01', [{ op: 'record', id, data: '{"ok": true}' }]).outcomes[0].status).toBe('failed');
		expect(fs.existsSync(path.join(root, 'missing'))).toBe(false);

		fs.unlinkSync(partial);
		spawnSync('mkfifo', [partial]);
		const args = ['record', id, '{"ok": true}'];
		const fifo = spawnSync('/bin/sh', ['-c', CHANGE_SCRIPT, 'lvb-change', MARKER, dest, CUTOFF, 'web01', ...args], { encoding: 'utf8', timeout: 10_000 });
		expect(fifo.error).toBeUndefined();
		expect(parseChangeOutput(fifo.stdout, MARKER, [{ op: 'record', id, data: '' }])[0].status).toBe('failed');

		fs.unlinkSync(partial);
		fs.writeFileSync(partial, 'left by a run that died');
		expect(change('web01', [{ op: 'record', id, data: '{"ok": true}' }]).outcomes[0].status).toBe('recorded');
		expect(fs.readFileSync(path.join(folder, 'verification.json'), 'utf8')).toBe('{"ok": true}');
		expect(fs.existsSync(partial)).toBe(false);
	});

	test('a planted verification.json symlink is replaced by the record, its target untouched', () => {
		const id = '20261120T010000Z';
		writeTree(dest, backupFiles('web01', manifest('web01', id)));
		const outside = path.join(root, 'canary');
		fs.writeFileSync(outside, 'canary');
		fs.symlinkSync(outside, path.join(dest, 'web01', id, 'verification.json'));

		expect(change('web01', [{ op: 'record', id, data: '{"ok": true}' }]).outcomes[0].status).toBe('recorded');
		expect(fs.readFileSync(outside, 'utf8')).toBe('canary');
		expect(fs.lstatSync(path.join(dest, 'web01', id, 'verification.json')).isFile()).toBe(true);
	});

	test('a folder already gone is reported as gone; a missing answer counts as failed', () => {
		expect(change('web01', [{ op: 'remove', id: '20261120T010000Z' }]).outcomes[0].status).toBe('refused');
		fs.mkdirSync(path.join(dest, 'web01'));
		expect(change('web01', [{ op: 'remove', id: '20261120T010000Z' }]).outcomes[0]).toMatchObject({ status: 'gone' });
		expect(parseChangeOutput(`${MARKER} removed 1\n`, MARKER, [{ op: 'remove', id: 'a' }, { op: 'remove', id: 'b' }]).map((o) => [o.status, o.detail])).toEqual([
			['removed', ''],
			['failed', 'the host stopped before reaching this folder'],
		]);
	});
});
