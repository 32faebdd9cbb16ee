/** planPrune: from a catalog to keep/prune decisions, with the reasons a person reads. */
import type { Manifest } from '../../../lib/store/manifest';
import { checkPolicy, planPrune, pruneBackups, type Catalog, type CatalogBackup, type IncompleteFolder, type PrunePlanEntry } from '../../../lib/catalog';
import type { VerificationRecord } from '../../../lib/store';
import { isLibvirtBackupError } from '../../../lib/errors';
import type { SshConnection } from '../../../lib/ssh';
import { manifest } from './local';

const NOW = new Date('2026-11-28T12:00:00Z');
const DEST = '/backups';

function backup(vmDir: string, id: string, extra: Partial<Manifest> = {}, more: Partial<CatalogBackup> = {}): CatalogBackup {
	return { dest: DEST, vmDir, vm: vmDir, id, path: `${DEST}/${vmDir}/${id}`, manifest: manifest(vmDir, id, extra), protected: false, diskBytes: 1000, missingFiles: [], ...more };
}

function incomplete(vmDir: string, id: string, writerLeftovers = true, reason = 'no manifest: the backup was not finished'): IncompleteFolder {
	return { dest: DEST, vmDir, vm: vmDir, id, path: `${DEST}/${vmDir}/${id}`, reason, writerLeftovers, unreadableManifest: false, diskBytes: 50 };
}

function catalog(backups: CatalogBackup[], folders: IncompleteFolder[] = []): Catalog {
	return { dest: DEST, backups, incomplete: folders, quarantined: [] };
}

const brief = (entries: PrunePlanEntry[]) => entries.map((e) => [`${e.vmDir}/${e.id}`, e.action, ...(e.action === 'keep' ? e.reasons : [])]);

describe('planPrune', () => {
	test('VMs with the same backup ids are planned independently', () => {
		const plan = planPrune(catalog([backup('web01', '20261127T010000Z'), backup('web01', '20261126T010000Z'), backup('db01', '20261127T010000Z'), backup('db01', '20261126T010000Z')]), { keepLast: 1 }, { now: NOW });

		expect(brief(plan)).toEqual([
			['web01/20261127T010000Z', 'keep', 'keep-last 1/1', 'newest valid backup'],
			['web01/20261126T010000Z', 'prune'],
			['db01/20261127T010000Z', 'keep', 'keep-last 1/1', 'newest valid backup'],
			['db01/20261126T010000Z', 'prune'],
		]);
		expect(plan[1]).toMatchObject({ removal: 'remove', bytes: 1000, kind: 'full', path: '/backups/web01/20261126T010000Z', timestamp: '2026-11-26T01:00:00.000Z' });
	});

	test('two VMs of the same name in one folder (two hosts, or a re-created VM) keep their own backups: groups are keyed by UUID', () => {
		const other = { vm: { name: 'web01', uuid: '6f1c7d0e-0000-4000-8000-0000000000ff' } };
		const plan = planPrune(
			catalog([
				backup('web01', '20261127T020000Z', other),
				backup('web01', '20261127T010000Z'),
				backup('web01', '20261126T020000Z', other),
				backup('web01', '20261126T010000Z'),
			]),
			{ keepLast: 1 },
			{ now: NOW },
		);

		expect(brief(plan)).toEqual([
			['web01/20261127T020000Z', 'keep', 'keep-last 1/1', 'newest valid backup'],
			['web01/20261127T010000Z', 'keep', 'keep-last 1/1', 'newest valid backup'],
			['web01/20261126T020000Z', 'prune'],
			['web01/20261126T010000Z', 'prune'],
		]);
	});

	test('a full a kept incremental depends on is kept, and the reason names the incremental', () => {
		const plan = planPrune(
			catalog([
				backup('web01', '20261127T010000Z', { kind: 'incremental', parent: '20261126T010000Z' }),
				backup('web01', '20261126T010000Z', { kind: 'incremental', parent: '20261120T010000Z' }),
				backup('web01', '20261120T010000Z'),
				backup('web01', '20261110T010000Z'),
			]),
			{ keepLast: 1 },
			{ now: NOW },
		);

		expect(brief(plan)).toEqual([
			['web01/20261127T010000Z', 'keep', 'keep-last 1/1', 'newest valid backup'],
			['web01/20261126T010000Z', 'keep', 'parent of kept incremental 20261127T010000Z'],
			['web01/20261120T010000Z', 'keep', 'parent of kept incremental 20261126T010000Z'],
			['web01/20261110T010000Z', 'prune'],
		]);
	});

	test('protected backups stay; when the newest failed verification the newest valid one stays too', () => {
		const failed: VerificationRecord = { format: 'n8n-nodes-libvirt-backup/verification', version: 1, backupId: '20261127T010000Z', verifiedAt: '2026-11-27T02:00:00Z', status: 'invalid', ok: false, disks: [], parents: [], problems: [] };
		const plan = planPrune(
			catalog([
				backup('web01', '20261127T010000Z', {}, { verification: failed }),
				backup('web01', '20261126T010000Z'),
				backup('web01', '20261125T010000Z'),
				backup('web01', '20261101T010000Z', {}, { protected: true }),
			]),
			{ keepLast: 1 },
			{ now: NOW },
		);

		expect(brief(plan)).toEqual([
			['web01/20261127T010000Z', 'keep', 'keep-last 1/1'],
			['web01/20261126T010000Z', 'keep', 'newest valid backup'],
			['web01/20261125T010000Z', 'prune'],
			['web01/20261101T010000Z', 'keep', 'protected'],
		]);
	});

	test('an unverifiable backup is not a failed one: it still counts as the newest valid backup', () => {
		const doubt: VerificationRecord = { format: 'n8n-nodes-libvirt-backup/verification', version: 1, backupId: '20261127T010000Z', verifiedAt: '2026-11-27T02:00:00Z', status: 'unverifiable', ok: false, disks: [], parents: [], problems: [] };
		const plan = planPrune(catalog([backup('web01', '20261127T010000Z', {}, { verification: doubt }), backup('web01', '20261126T010000Z')]), { keepWithin: '1h' }, { now: NOW });

		expect(brief(plan)).toEqual([
			['web01/20261127T010000Z', 'keep', 'newest valid backup'],
			['web01/20261126T010000Z', 'prune'],
		]);
	});

	test('retention time comes from the manifest, not from the folder or its files', () => {
		const plan = planPrune(catalog([backup('web01', '20261127T010000Z'), backup('web01', '20261120T010000Z', { finishedAt: '2026-11-27T00:00:00.000Z' }), backup('web01', '20261119T010000Z')]), { keepWithin: '7d' }, { now: NOW });

		expect(brief(plan).map(([id, action]) => [id, action])).toEqual([
			['web01/20261127T010000Z', 'keep'],
			['web01/20261120T010000Z', 'keep'],
			['web01/20261119T010000Z', 'prune'],
		]);
	});

	test('only our own unfinished folders older than the safety age go; the rest is left alone and says why', () => {
		const plan = planPrune(
			catalog([backup('web01', '20261127T010000Z')], [
				incomplete('web01', '20261128T080000Z'),
				incomplete('web01', '20261120T010000Z'),
				incomplete('web01', '20261119T010000Z', false, 'no manifest and no incomplete marker: not written by this package'),
			]),
			{ keepLast: 5 },
			{ now: NOW, staleAfterMs: 6 * 3_600_000 },
		);

		expect(plan.slice(1).map((e) => [e.id, e.kind, e.action, e.removal, e.reasons[0]])).toEqual([
			['20261128T080000Z', 'incomplete', 'keep', undefined, 'unfinished backup younger than 6 h: it may still be being written'],
			['20261120T010000Z', 'incomplete', 'prune', 'stale', 'stale unfinished backup: started more than 6 h ago and holds only what an interrupted backup leaves'],
			['20261119T010000Z', 'incomplete', 'keep', undefined, 'not a backup (no manifest and no incomplete marker: not written by this package): left alone'],
		]);
	});

	test.each([
		[{}, /Retention policy is empty/],
		[{ keepLast: 0, keepWithin: '' }, /Retention policy is empty/],
		[{ keepLast: -1 }, /keepLast must be a non-negative whole number/],
		[{ keepWithin: '7 days' }, /keepWithin must be a duration like/],
		[{ keepLasst: 3 }, /Unknown retention policy field "keepLasst"/],
	])('policy %j is refused as INVALID_INPUT', (policy, message) => {
		let error: unknown;
		try {
			planPrune(catalog([backup('web01', '20261127T010000Z')]), policy as never, { now: NOW });
		} catch (caught) {
			error = caught;
		}
		expect(isLibvirtBackupError(error, 'INVALID_INPUT') && error.message).toMatch(message);
	});

	test('an unknown time zone is refused as INVALID_INPUT', () => {
		expect(() => planPrune(catalog([]), { keepLast: 1 }, { now: NOW, timeZone: 'Mars/Olympus' })).toThrow(expect.objectContaining({ code: 'INVALID_INPUT' }));
	});
});

describe('bad numbers are refused before anything is planned or removed', () => {
	function refusal(run: () => unknown): unknown {
		try {
			run();
		} catch (error) {
			return error;
		}
		return undefined;
	}
	const withStale = catalog([backup('web01', '20261127T010000Z')], [incomplete('web01', '20261128T115900Z')]);

	test.each([0, -1, -3_600_000, 60_000, 3_599_999, Number.NaN, Number.POSITIVE_INFINITY, 1e308, '6' as unknown as number])('staleAfterMs %p is INVALID_INPUT naming it', (staleAfterMs) => {
		const plan = refusal(() => planPrune(withStale, { keepLast: 5 }, { now: NOW, staleAfterMs }));
		expect(isLibvirtBackupError(plan, 'INVALID_INPUT') && plan.message).toMatch(/^staleAfterMs must be a number of milliseconds from 3600000 \(1 h\) to 31556952000000 \(1000 years\), got /);
		expect(isLibvirtBackupError(refusal(() => checkPolicy({ keepLast: 5 }, { now: NOW, staleAfterMs }))) ).toBe(true);
	});

	test('one hour is the shortest stale age: a folder started 1 minute ago stays', () => {
		const plan = planPrune(withStale, { keepLast: 5 }, { now: NOW, staleAfterMs: 3_600_000 });
		expect(plan[1]).toMatchObject({ id: '20261128T115900Z', action: 'keep' });
	});

	test.each([
		[{ keepLast: 1e308 }, 'keepLast must be a whole number from 0 to 1000000, got 1e+308'],
		[{ keepWithin: '999999999d' }, 'keepWithin "999999999d" is longer than 1000 years'],
		[{ retentionDays: 99_999_999 }, 'retentionDays 99999999 is longer than 1000 years'],
	])('policy %j is INVALID_INPUT with the field', (policy, message) => {
		const error = refusal(() => planPrune(withStale, policy, { now: NOW, timeZone: 'Europe/Berlin' }));
		expect(isLibvirtBackupError(error, 'INVALID_INPUT') && [error.message, error.details]).toEqual([expect.stringContaining(message), { field: Object.keys(policy)[0] }]);
	});
});

describe('pruneBackups refuses an empty VM selection before touching the host', () => {
	const untouchable = new Proxy({}, {
		get() {
			throw new Error('the host was used');
		},
	}) as SshConnection;

	test('vmNames [] is INVALID_INPUT, not "every VM"', async () => {
		await expect(pruneBackups(untouchable, { dest: DEST, vmNames: [], policy: { keepLast: 1 }, dryRun: false })).rejects.toMatchObject({
			code: 'INVALID_INPUT',
			message: 'No VM selected: the VM list is empty. Leave VM Names unset to prune every VM under the destination.',
		});
	});

	test('a bad stale age is refused before the host is used', async () => {
		await expect(pruneBackups(untouchable, { dest: DEST, policy: { keepLast: 1 }, dryRun: false, staleAfterMs: 0 })).rejects.toMatchObject({ code: 'INVALID_INPUT' });
	});
});
