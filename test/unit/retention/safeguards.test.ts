import { type BackupRef, type RetentionPlan, type RetentionPolicy, planRetention } from '../../../lib/retention';

const NOW = new Date('2026-12-01T12:00:00Z');

/** A daily backup of `vm` taken `daysAgo` days before NOW, at 02:00 UTC. */
function daily(id: string, daysAgo: number, extra: Partial<BackupRef> = {}): BackupRef {
	const time = new Date(Date.UTC(2026, 11, 1 - daysAgo, 2));
	return { id, vm: 'web', time, kind: 'full', ...extra };
}

function reasonsById(plan: RetentionPlan): Record<string, string[]> {
	return Object.fromEntries(plan.decisions.map((d) => [d.id, d.action === 'keep' ? d.reasons : []]));
}

function keptIds(backups: BackupRef[], policy: RetentionPolicy): string[] {
	return planRetention(backups, policy, NOW)
		.decisions.filter((d) => d.action === 'keep')
		.map((d) => d.id);
}

describe('protected backups', () => {
	test('a protected backup no rule matches is kept with reason "protected"', () => {
		const backups = [daily('new', 0), daily('old', 400, { protected: true }), daily('older', 500)];

		expect(reasonsById(planRetention(backups, { keepLast: 1 }, NOW))).toEqual({
			new: ['keep-last 1/1', 'newest valid backup'],
			old: ['protected'],
			older: [],
		});
	});

	test('a protected backup a rule also keeps lists both reasons', () => {
		const backups = [daily('new', 0, { protected: true }), daily('old', 1)];

		expect(reasonsById(planRetention(backups, { keepDaily: 1 }, NOW)).new).toEqual([
			'keep-daily (2026-12-01)',
			'protected',
			'newest valid backup',
		]);
	});

	test('protected: false and an absent flag both leave the backup to the rules', () => {
		const backups = [daily('new', 0), daily('a', 5, { protected: false }), daily('b', 6)];

		expect(keptIds(backups, { keepLast: 1 })).toEqual(['new']);
	});
});

describe('the newest valid backup of each VM is always kept', () => {
	test('the newest backup is kept even when the policy matches nothing', () => {
		const backups = [daily('new', 30), daily('old', 40)];

		expect(reasonsById(planRetention(backups, { retentionDays: 7 }, NOW))).toEqual({
			new: ['newest valid backup'],
			old: [],
		});
	});

	test('when the newest backup failed verification, the newest valid one is kept as well', () => {
		const backups = [daily('broken', 0, { valid: false }), daily('good', 1, { valid: true }), daily('older', 2)];

		expect(reasonsById(planRetention(backups, { keepLast: 1 }, NOW))).toEqual({
			broken: ['keep-last 1/1'],
			good: ['newest valid backup'],
			older: [],
		});
	});

	test('a failed newest backup that no rule keeps is pruned while the newest valid one stays', () => {
		const backups = [daily('broken', 20, { valid: false }), daily('good', 21), daily('older', 22)];

		expect(keptIds(backups, { retentionDays: 7 })).toEqual(['good']);
	});

	test('an unverified backup (valid undefined) counts as valid', () => {
		const backups = [daily('broken', 20, { valid: false }), daily('unverified', 21), daily('verified', 22, { valid: true })];

		expect(keptIds(backups, { retentionDays: 7 })).toEqual(['unverified']);
	});

	test('when every backup failed verification, only the rules decide', () => {
		const backups = [daily('a', 20, { valid: false }), daily('b', 21, { valid: false })];

		expect(keptIds(backups, { keepLast: 1 })).toEqual(['a']);
		expect(keptIds(backups, { retentionDays: 7 })).toEqual([]);
	});
});

describe('the newest valid backup is one that can be restored: it and every ancestor not known invalid', () => {
	// Issue 8: an incremental on a full that failed verification is no restorable backup.
	test('an incremental whose full failed verification is not the newest valid backup; the older valid chain is', () => {
		const backups = [
			daily('inc', 0, { kind: 'incremental', parent: 'full', valid: true }),
			daily('full', 1, { valid: false }),
			daily('oldFull', 5, { valid: true }),
		];

		expect(reasonsById(planRetention(backups, { keepLast: 1 }, NOW))).toEqual({
			inc: ['keep-last 1/1'],
			full: ['parent of kept inc'],
			oldFull: ['newest valid backup'],
		});
	});

	test('an invalid grandparent also disqualifies the chain', () => {
		const backups = [
			daily('inc2', 0, { kind: 'incremental', parent: 'inc1' }),
			daily('inc1', 1, { kind: 'incremental', parent: 'full' }),
			daily('full', 2, { valid: false }),
			daily('other', 3),
		];

		expect(reasonsById(planRetention(backups, { keepLast: 1 }, NOW)).other).toEqual(['newest valid backup']);
	});

	test('an incremental whose parent is not in the store is not restorable', () => {
		const backups = [daily('orphan', 0, { kind: 'incremental', parent: 'gone' }), daily('full', 1)];

		expect(reasonsById(planRetention(backups, { keepLast: 1 }, NOW))).toEqual({ orphan: ['keep-last 1/1'], full: ['newest valid backup'] });
	});
});

describe('backup chains: ancestors of a kept backup are kept', () => {
	// full <- inc1 <- inc2 <- inc3, one a day, plus an older chain oldFull <- oldInc.
	const chain = [
		daily('inc3', 0, { kind: 'incremental', parent: 'inc2' }),
		daily('inc2', 1, { kind: 'incremental', parent: 'inc1' }),
		daily('inc1', 2, { kind: 'incremental', parent: 'full' }),
		daily('full', 3),
		daily('oldInc', 10, { kind: 'incremental', parent: 'oldFull' }),
		daily('oldFull', 11),
	];

	test('a kept incremental keeps its whole chain back to the full, each naming its kept child', () => {
		expect(reasonsById(planRetention(chain, { keepLast: 1 }, NOW))).toEqual({
			inc3: ['keep-last 1/1', 'newest valid backup'],
			inc2: ['parent of kept inc3'],
			inc1: ['parent of kept inc2'],
			full: ['parent of kept inc1'],
			oldInc: [],
			oldFull: [],
		});
	});

	test('a pruned incremental does not keep its full', () => {
		expect(keptIds(chain, { keepLast: 2 })).toEqual(['inc3', 'inc2', 'inc1', 'full']);
	});

	test('a parent kept by a rule also records that a kept child depends on it', () => {
		const reasons = reasonsById(planRetention(chain, { keepLast: 1, keepDaily: 2 }, NOW));

		expect(reasons.inc2).toEqual(['keep-daily (2026-11-30)', 'parent of kept inc3']);
		expect(reasons.oldInc).toEqual([]);
	});

	test('a protected incremental keeps the chain it depends on', () => {
		const backups = chain.map((b) => (b.id === 'oldInc' ? { ...b, protected: true } : b));

		expect(reasonsById(planRetention(backups, { keepLast: 1 }, NOW)).oldFull).toEqual(['parent of kept oldInc']);
	});

	test('the newest valid backup keeps its chain when the newer backup failed verification', () => {
		const backups = [daily('bad', 0, { kind: 'incremental', parent: 'base', valid: false }), daily('base', 1)];

		expect(reasonsById(planRetention(backups, { retentionDays: 7 }, NOW)).base).toEqual([
			'retention-days 7',
			'newest valid backup',
			'parent of kept bad',
		]);
	});

	test('a full with several kept incrementals names each of them', () => {
		const backups = [
			daily('b', 0, { kind: 'incremental', parent: 'base' }),
			daily('a', 1, { kind: 'incremental', parent: 'base' }),
			daily('base', 2),
		];

		expect(reasonsById(planRetention(backups, { keepLast: 2 }, NOW)).base).toEqual([
			'parent of kept b',
			'parent of kept a',
		]);
	});

	test('an incremental whose parent is missing from the list is decided by the rules alone', () => {
		const backups = [daily('new', 0), daily('orphan', 5, { kind: 'incremental', parent: 'gone' }), daily('old', 6)];

		expect(keptIds(backups, { keepLast: 2 })).toEqual(['new', 'orphan']);
		expect(keptIds(backups, { keepLast: 1 })).toEqual(['new']);
	});

	test('a parent cycle in corrupt manifests terminates and keeps both members (neither is restorable, so neither is the newest valid backup)', () => {
		const backups = [
			daily('x', 0, { kind: 'incremental', parent: 'y' }),
			daily('y', 1, { kind: 'incremental', parent: 'x' }),
			daily('self', 2, { kind: 'incremental', parent: 'self' }),
		];

		expect(reasonsById(planRetention(backups, { keepLast: 1 }, NOW))).toEqual({
			x: ['keep-last 1/1', 'parent of kept y'],
			y: ['parent of kept x'],
			self: [],
		});
	});

	test('copies are ordinary backups to the rules', () => {
		const backups = [daily('copy', 0, { kind: 'copy' }), daily('full', 1)];

		expect(keptIds(backups, { keepLast: 1 })).toEqual(['copy']);
	});
});

describe('VMs are planned independently', () => {
	const backups = [
		daily('web-0', 0),
		{ ...daily('db-0', 0), vm: 'db' },
		daily('web-1', 1),
		{ ...daily('db-1', 1), vm: 'db', protected: true },
		daily('web-2', 2),
		{ ...daily('db-2', 2), vm: 'db' },
		{ ...daily('db-3', 3), vm: 'db', valid: false },
		{ ...daily('mail-9', 9), vm: 'mail' },
	];

	test('counts apply per VM, not across all backups', () => {
		expect(keptIds(backups, { keepLast: 2 })).toEqual(['web-0', 'db-0', 'web-1', 'db-1', 'mail-9']);
	});

	test('each VM keeps its own newest valid backup', () => {
		const reasons = reasonsById(planRetention(backups, { retentionDays: 1 }, NOW));

		expect(reasons['web-0']).toEqual(['retention-days 1', 'newest valid backup']);
		expect(reasons['db-0']).toEqual(['retention-days 1', 'newest valid backup']);
		expect(reasons['mail-9']).toEqual(['newest valid backup']);
		expect(reasons['db-1']).toEqual(['protected']);
	});

	test('a parent on another VM is still kept (ids are unique across VMs)', () => {
		const shared = [daily('web-inc', 0, { kind: 'incremental', parent: 'db-full' }), { ...daily('db-full', 5), vm: 'db' }, { ...daily('db-new', 1), vm: 'db' }];

		expect(reasonsById(planRetention(shared, { keepLast: 1 }, NOW))['db-full']).toEqual(['parent of kept web-inc']);
	});
});
