/**
 * Prune Old Backups against the lab host: it removes exactly what the policy says, reads manifest
 * times (never mtimes), leaves foreign files and folders alone whatever their age, never leaves
 * `<dest>/<vm>/` even for hostile names, and never races a job holding the VM's lock.
 */
import { vmDirName } from '../../../lib/store/layout';
import { acquireVmLock } from '../../../lib/store/lock';
import { pruneBackups, type PruneRequest, type PruneResult } from '../../../lib/catalog';
import { isLibvirtBackupError } from '../../../lib/errors';
import { withSsh } from '../../../lib/ssh';
import { ageFiles, exists, makeBackups, makeDest, makeUnfinished, onHost, removeDest, tree, type FixtureBackup } from '../../support/backupFixtures';
import { labDir, shq } from '../../support/lab';
import { labTarget } from '../../support/targets';

jest.setTimeout(180_000);

const NOW = new Date('2026-11-28T12:00:00Z');

function prune(request: Omit<PruneRequest, 'now'> & { now?: Date }): Promise<PruneResult> {
	return withSsh(labTarget(), (ssh) => pruneBackups(ssh, { now: NOW, ...request }));
}

/** Daily full backups of `vm` at 01:00 UTC, `days` days before NOW (1 = yesterday). */
function dailies(vm: string, ...days: number[]): FixtureBackup[] {
	return days.map((day) => ({ vm, id: new Date(Date.UTC(2026, 10, 28 - day, 1)).toISOString().replace(/[-:]/g, '').replace('.000', '') }));
}

function decisions(result: PruneResult): Array<[string, string, string]> {
	return result.items.map((item) => [item.vm, item.id, item.action]);
}

describe('Prune Old Backups', () => {
	let dest: string;
	afterEach(() => removeDest(dest));

	test('removes exactly what the policy says; foreign files, old mtimes and other tools survive', async () => {
		dest = makeDest();
		makeBackups(dest, [...dailies('web01', 1, 2, 3, 4, 5), ...dailies('db01', 1, 30, 60)]);
		onHost(
			[
				`cd -- ${shq(dest)}`,
				'echo keep me > notes.txt',
				'head -c 65536 /dev/zero > old.qcow2',
				'mkdir -p other-tool/20200101T000000Z web01/manual-copy',
				'echo x > other-tool/20200101T000000Z/data.qcow2',
				'echo x > web01/manual-copy/vda.qcow2',
				'echo x > web01/old.qcow2',
			].join(' && '),
		);
		// Every file and folder carries a months-old mtime: only manifests may decide.
		ageFiles(dest, '2026-03-01 00:00:00');
		const before = tree(dest);

		const result = await prune({ dest, policy: { keepLast: 2, keepWithin: '3d' }, dryRun: false });

		// keep-last 2 keeps the two newest of each VM; keep-within 3d adds nothing older than 25 Nov 12:00.
		const gone = ['db01/20260929T010000Z', 'web01/20261125T010000Z', 'web01/20261124T010000Z', 'web01/20261123T010000Z'];
		expect(decisions(result).filter(([, , action]) => action === 'prune').map(([vm, id]) => `${vm}/${id}`)).toEqual(gone);
		expect(result.items.filter((item) => item.action === 'prune').every((item) => item.removed && item.freedBytes > 0)).toBe(true);
		expect(result.freedBytes).toBe(result.items.reduce((total, item) => total + item.freedBytes, 0));
		const expected = before.filter((path) => !gone.some((folder) => path === `./${folder}` || path.startsWith(`./${folder}/`)));
		// Only VMs that had something to prune were locked; the lock file is the one thing added.
		expect(tree(dest)).toEqual([...expected, './db01/.lvb.lock', './web01/.lvb.lock'].sort());
		expect(result.items.find((item) => item.id === '20261127T010000Z' && item.vm === 'web01')!.reasons).toEqual([
			'keep-last 1/2',
			'keep-within 3d',
			'newest valid backup',
		]);
		expect(result.items.find((item) => item.vm === 'other-tool')).toMatchObject({
			kind: 'incomplete',
			action: 'keep',
			reasons: ['not a backup (no manifest and no incomplete marker: not written by this package): left alone'],
		});
	});

	test('a dry run plans the same and changes nothing', async () => {
		dest = makeDest();
		makeBackups(dest, dailies('web01', 1, 2, 3, 4));
		const before = tree(dest);

		const result = await prune({ dest, policy: { keepLast: 1 }, dryRun: true });

		expect(decisions(result).map(([, , action]) => action)).toEqual(['keep', 'prune', 'prune', 'prune']);
		expect(result.items.every((item) => item.dryRun && !item.removed)).toBe(true);
		expect(result.freedBytes).toBeGreaterThan(0);
		expect(result.sshExecs).toBe(1);
		expect(tree(dest)).toEqual(before);
	});

	test('fresh backups whose disk files have ancient mtimes are kept by retention days (manifest time, not mtime)', async () => {
		dest = makeDest();
		makeBackups(dest, dailies('web01', 1, 2, 10));
		ageFiles(dest, '2001-01-01 00:00:00');

		const result = await prune({ dest, policy: { retentionDays: 7 }, dryRun: false });

		expect(decisions(result)).toEqual([
			['web01', '20261127T010000Z', 'keep'],
			['web01', '20261126T010000Z', 'keep'],
			['web01', '20261118T010000Z', 'prune'],
		]);
		expect(result.items[1].reasons).toEqual(['retention-days 7']);
	});

	test('keeps the full a kept incremental needs, protected backups and the newest valid one, saying why', async () => {
		dest = makeDest();
		makeBackups(dest, [
			{ vm: 'web01', id: '20261101T010000Z', protected: true },
			{ vm: 'web01', id: '20261110T010000Z' },
			{ vm: 'web01', id: '20261120T010000Z' },
			{ vm: 'web01', id: '20261121T010000Z', kind: 'incremental', parent: '20261120T010000Z' },
			{ vm: 'db01', id: '20261001T010000Z' },
		]);

		const result = await prune({ dest, policy: { keepLast: 1 }, dryRun: false });

		const reasons = Object.fromEntries(result.items.map((item) => [`${item.vm}/${item.id}`, item.action === 'keep' ? item.reasons : item.action]));
		expect(reasons).toEqual({
			'web01/20261121T010000Z': ['keep-last 1/1', 'newest valid backup'],
			'web01/20261120T010000Z': ['parent of kept incremental 20261121T010000Z'],
			'web01/20261110T010000Z': 'prune',
			'web01/20261101T010000Z': ['protected'],
			'db01/20261001T010000Z': ['keep-last 1/1', 'newest valid backup'],
		});
		expect(exists(`${dest}/web01/20261110T010000Z`)).toBe(false);
		expect(exists(`${dest}/web01/20261120T010000Z/vda.qcow2`)).toBe(true);
	});

	test('removes our stale unfinished folders only: old enough by id, marker present, nothing foreign inside', async () => {
		dest = makeDest();
		makeBackups(dest, dailies('web01', 1));
		const stale = makeUnfinished(dest, 'web01', '20261120T010000Z');
		const recent = makeUnfinished(dest, 'web01', '20261128T110000Z');
		const mixed = makeUnfinished(dest, 'web01', '20261119T010000Z', ['notes.txt']);
		// mtimes say the opposite of the ids: the ids decide.
		ageFiles(recent, '2001-01-01 00:00:00');
		onHost(`touch -- ${shq(stale)}/*`);

		const result = await prune({ dest, policy: { keepLast: 5 }, dryRun: false, staleAfterMs: 6 * 3_600_000 });

		const byId = Object.fromEntries(result.items.map((item) => [item.id, item]));
		expect(byId['20261120T010000Z']).toMatchObject({ kind: 'incomplete', action: 'prune', removed: true });
		expect(byId['20261128T110000Z']).toMatchObject({ action: 'keep', reasons: ['unfinished backup younger than 6 h: it may still be being written'] });
		expect(byId['20261119T010000Z']).toMatchObject({ action: 'keep', removed: false });
		expect([exists(stale), exists(recent), exists(`${mixed}/notes.txt`)]).toEqual([false, true, true]);
	});

	test('hostile VM names and destination paths never make prune touch anything outside <dest>/<vm>/', async () => {
		const vms = [`it's`, 'with space', '..', '$(touch pwned)', '`touch pwned`', 'a"b', '-rf'];
		dest = makeDest(`dest 'with' "quotes" $(touch pwned) and spaces`);
		const parent = dest.slice(0, dest.lastIndexOf('/'));
		makeBackups(dest, vms.flatMap((vm) => dailies(vm, 1, 2, 3)));
		onHost(`cd -- ${shq(parent)} && mkdir -p sibling/web01/20261101T010000Z && echo x > sibling/web01/20261101T010000Z/manifest.json && echo x > outside.txt`);
		const beforeParent = tree(parent).filter((path) => !path.startsWith(`./${dest.slice(parent.length + 1)}`));

		const result = await prune({ dest, policy: { keepLast: 1 }, dryRun: false });

		expect(result.pruned).toBe(vms.length * 2);
		expect(result.items.every((item) => item.action === 'keep' || item.removed)).toBe(true);
		for (const vm of vms) {
			expect(result.items.filter((item) => item.vm === vm).map((item) => [item.id, item.action])).toEqual([
				['20261127T010000Z', 'keep'],
				['20261126T010000Z', 'prune'],
				['20261125T010000Z', 'prune'],
			]);
			expect(exists(`${dest}/${vmDirName(vm)}/20261127T010000Z/manifest.json`)).toBe(true);
			expect(exists(`${dest}/${vmDirName(vm)}/20261126T010000Z`)).toBe(false);
		}
		expect(tree(parent).filter((path) => !path.startsWith(`./${dest.slice(parent.length + 1)}`))).toEqual(beforeParent);
		expect(onHost(`find ${shq(labDir())} / "$HOME" -maxdepth 1 -name pwned 2>/dev/null; find ${shq(parent)} -name pwned`)).toBe('');
	});

	test('a destination with ".." is refused before anything runs', async () => {
		dest = makeDest();
		const error = await prune({ dest: `${dest}/../${dest.split('/').pop()}`, policy: { keepLast: 1 }, dryRun: false }).catch((caught: unknown) => caught);
		expect(isLibvirtBackupError(error, 'INVALID_INPUT') && error.message).toMatch(/must not contain "\.\."/);
	});

	test('an empty policy is refused with a clear error and nothing is touched', async () => {
		dest = makeDest();
		makeBackups(dest, dailies('web01', 1, 2));
		const before = tree(dest);
		for (const policy of [{}, { keepLast: 0, keepWithin: '' }]) {
			const error = await prune({ dest, policy, dryRun: false }).catch((caught: unknown) => caught);
			expect(isLibvirtBackupError(error, 'INVALID_INPUT') && error.message).toMatch(/Retention policy is empty/);
		}
		expect(tree(dest)).toEqual(before);
	});

	test('a VM locked by a running job: prune fails with LOCKED, or leaves that VM alone when asked to skip', async () => {
		dest = makeDest();
		makeBackups(dest, [...dailies('web01', 1, 2, 3), ...dailies('db01', 1, 2)]);
		await withSsh(labTarget(), async (holderSsh) => {
			const lock = await acquireVmLock(holderSsh, `${dest}/web01`, 'backup job 42', 'web01');
			const before = tree(dest);
			try {
				const error = await prune({ dest, policy: { keepLast: 1 }, dryRun: false, vmNames: ['web01'] }).catch((caught: unknown) => caught);
				expect(isLibvirtBackupError(error, 'LOCKED') && error.message).toMatch(/VM "web01" is locked by backup job 42/);
				expect(tree(dest)).toEqual(before);

				const skipped = await prune({ dest, policy: { keepLast: 1 }, dryRun: false, ifLocked: 'skip' });
				expect(skipped.lockedVms).toEqual(['web01']);
				expect(skipped.items.filter((item) => item.vm === 'web01').every((item) => item.action === 'keep' && item.reasons[0] === 'VM is locked by backup job 42: left alone this time')).toBe(true);
				expect(decisions(skipped).filter(([vm]) => vm === 'db01')).toEqual([
					['db01', '20261127T010000Z', 'keep'],
					['db01', '20261126T010000Z', 'prune'],
				]);
			} finally {
				await lock.release();
			}
		});
		expect(exists(`${dest}/web01/20261125T010000Z`)).toBe(true);
		expect(exists(`${dest}/db01/20261126T010000Z`)).toBe(false);
	});
});
