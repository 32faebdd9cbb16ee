/**
 * Consolidation in the prune planner (issue 8): when the policy drops the full of a chain whose
 * later backup it keeps, the oldest kept incremental is rebuilt into a standalone full and the
 * chain below it goes; when that is not safe, the chain stays whole.
 */
import type { Manifest } from '../../../lib/store/manifest';
import { planPrune, type Catalog, type CatalogBackup, type PrunePlanEntry } from '../../../lib/catalog';
import type { RetentionPolicy } from '../../../lib/retention';
import type { VerificationRecord } from '../../../lib/store';
import { manifest } from './local';

const NOW = new Date('2026-11-28T12:00:00Z');
const DEST = '/backups';

function day(n: number): string {
	return `202611${String(n).padStart(2, '0')}T010000Z`;
}

/** `full` on day `from`, then one incremental a day up to day `to`. */
function chain(from: number, to: number, vmDir = 'web01'): CatalogBackup[] {
	const backups: CatalogBackup[] = [];
	for (let n = from; n <= to; n++) backups.unshift(backup(vmDir, day(n), n === from ? {} : { kind: 'incremental', parent: day(n - 1) }));
	return backups;
}

function backup(vmDir: string, id: string, extra: Partial<Manifest> = {}, more: Partial<CatalogBackup> = {}): CatalogBackup {
	return { dest: DEST, vmDir, vm: vmDir, id, path: `${DEST}/${vmDir}/${id}`, manifest: manifest(vmDir, id, extra), protected: false, diskBytes: 1000, missingFiles: [], ...more };
}

function plan(backups: CatalogBackup[], policy: RetentionPolicy, consolidate = true): PrunePlanEntry[] {
	const catalog: Catalog = { dest: DEST, backups: [...backups].sort((a, b) => (a.vmDir !== b.vmDir ? (a.vmDir < b.vmDir ? -1 : 1) : a.id < b.id ? 1 : -1)), incomplete: [], quarantined: [] };
	return planPrune(catalog, policy, { now: NOW, consolidate });
}

/** `id action` per entry, days only: '27 keep'. */
const actions = (entries: PrunePlanEntry[]) => entries.map((entry) => `${entry.vmDir === 'web01' ? '' : `${entry.vmDir}/`}${Number(entry.id.slice(6, 8))} ${entry.action}`);

const invalid: VerificationRecord = { format: 'n8n-nodes-libvirt-backup/verification', version: 1, backupId: '', verifiedAt: '2026-11-27T02:00:00Z', status: 'invalid', ok: false, disks: [], parents: [], problems: [] };

describe('consolidation plans', () => {
	const table: { name: string; backups: () => CatalogBackup[]; policy: RetentionPolicy; expected: string[] }[] = [
		{
			name: 'the policy keeps the two newest of full+3: the older kept incremental is rebuilt and the full and first incremental go',
			backups: () => chain(20, 23),
			policy: { keepLast: 2 },
			expected: ['23 keep', '22 consolidate', '21 prune', '20 prune'],
		},
		{
			name: 'the policy keeps the full too: nothing to consolidate',
			backups: () => chain(20, 23),
			policy: { keepLast: 4 },
			expected: ['23 keep', '22 keep', '21 keep', '20 keep'],
		},
		{
			name: 'a protected full keeps the chain as it is',
			backups: () => chain(20, 23).map((b) => (b.id === day(20) ? { ...b, protected: true } : b)),
			policy: { keepLast: 2 },
			expected: ['23 keep', '22 keep', '21 keep', '20 keep'],
		},
		{
			name: 'only the oldest kept incremental of a chain is rebuilt; a newer kept one builds on it',
			backups: () => chain(20, 25),
			policy: { keepLast: 3 },
			expected: ['25 keep', '24 keep', '23 consolidate', '22 prune', '21 prune', '20 prune'],
		},
		{
			name: 'a chain with a member that failed verification is left whole',
			backups: () => chain(20, 23).map((b) => (b.id === day(21) ? { ...b, verification: { ...invalid, backupId: b.id } } : b)),
			policy: { keepLast: 2 },
			expected: ['23 keep', '22 keep', '21 keep', '20 keep'],
		},
		{
			name: 'a chain with a member missing an image is left whole',
			backups: () => chain(20, 23).map((b) => (b.id === day(20) ? { ...b, missingFiles: ['vda.qcow2'] } : b)),
			policy: { keepLast: 2 },
			expected: ['23 keep', '22 keep', '21 keep', '20 keep'],
		},
		{
			name: 'a chain with a gap (parent not in the store) is left to the rules',
			backups: () => chain(20, 23).filter((b) => b.id !== day(21)),
			policy: { keepLast: 2 },
			expected: ['23 keep', '22 keep', '20 prune'],
		},
		{
			name: 'a chain with an interrupted consolidation (journal written) is not consolidated again until it is finished',
			backups: () => chain(20, 23).map((b) => (b.id === day(22) ? { ...b, consolidation: { journal: '{}', partials: [] } } : b)),
			policy: { keepLast: 2 },
			expected: ['23 keep', '22 keep', '21 keep', '20 keep'],
		},
		{
			name: 'partials left before the journal (a crash during the copy) do not stop a new consolidation',
			backups: () => chain(20, 23).map((b) => (b.id === day(22) ? { ...b, consolidation: { partials: ['vda.qcow2.lvb-full.partial'] } } : b)),
			policy: { keepLast: 2 },
			expected: ['23 keep', '22 consolidate', '21 prune', '20 prune'],
		},
		{
			name: 'each VM consolidates its own chain',
			backups: () => [...chain(20, 22), ...chain(20, 22, 'db01')],
			policy: { keepLast: 1 },
			expected: ['db01/22 consolidate', 'db01/21 prune', 'db01/20 prune', '22 consolidate', '21 prune', '20 prune'],
		},
		{
			name: 'the older of two chains goes whole while the newer is consolidated',
			backups: () => [...chain(10, 12), ...chain(20, 23)],
			policy: { keepLast: 2 },
			expected: ['23 keep', '22 consolidate', '21 prune', '20 prune', '12 prune', '11 prune', '10 prune'],
		},
	];

	test.each(table)('$name', ({ backups, policy, expected }) => {
		expect(actions(plan(backups(), policy))).toEqual(expected);
	});

	test('without consolidation the chain below a kept incremental is kept whole', () => {
		expect(actions(plan(chain(20, 23), { keepLast: 2 }, false))).toEqual(['23 keep', '22 keep', '21 keep', '20 keep']);
	});

	test('a consolidate entry says what it is made from and why, and its children stay', () => {
		const entries = plan(chain(20, 23), { keepLast: 2 });
		expect(entries[1]).toMatchObject({
			id: day(22),
			action: 'consolidate',
			consolidateFrom: [day(22), day(21), day(20)],
			reasons: ['keep-last 2/2', `parent of kept incremental ${day(23)}`, `consolidate: rebuilt as a standalone full so ${day(21)}, ${day(20)} below it can go`],
		});
		expect(entries[0]).toMatchObject({ id: day(23), action: 'keep', reasons: ['keep-last 1/2', 'newest valid backup'] });
		expect(entries[2]).toMatchObject({ id: day(21), action: 'prune', removal: 'remove' });
	});
});
