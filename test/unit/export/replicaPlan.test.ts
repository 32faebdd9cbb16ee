import { planReplica, type ReplicaSource, type ReplicaTarget } from '../../../lib/export/replicaPlan';
import { MANIFEST_FORMAT, MANIFEST_VERSION, type Manifest } from '../../../lib/store/manifest';

const UUID = '11111111-2222-3333-4444-555555555555';
const F = '20261201T010000Z';
const I1 = '20261202T010000Z';
const I2 = '20261203T010000Z';

function manifest(id: string, parent?: string, sha = 'a', uuid = UUID): Manifest {
	return {
		format: MANIFEST_FORMAT,
		version: MANIFEST_VERSION,
		vm: { name: 'web', uuid },
		host: 'h',
		id,
		startedAt: '2026-12-01T01:00:00Z',
		finishedAt: '2026-12-01T01:01:00Z',
		kind: parent ? 'incremental' : 'full',
		...(parent ? { parent } : {}),
		method: 'push',
		consistency: 'crash',
		disks: [
			{
				target: 'vda',
				source: '/v/web.qcow2',
				file: 'vda.qcow2',
				format: 'qcow2',
				virtualBytes: 1,
				bytes: 1,
				sha256: sha.repeat(64).slice(0, 64),
				compressed: false,
				...(parent ? { backingFile: `../${parent}/vda.qcow2` } : {}),
			},
		],
		warnings: [],
	};
}

const src = (id: string, parent?: string, vmDir = 'web', sha = 'a'): ReplicaSource => ({ vmDir, id, manifest: manifest(id, parent, sha) });
const onReplica = (id: string, parent?: string, extra: Partial<ReplicaTarget['backups'][number]> = {}): ReplicaTarget['backups'][number] => ({
	vmDir: 'web',
	id,
	manifest: manifest(id, parent),
	missingFiles: [],
	...extra,
});
const empty: ReplicaTarget = { backups: [], incomplete: [] };

type Row = [string, ReplicaSource[], ReplicaTarget, [string, string, RegExp?, string?][]];

const rows: Row[] = [
	['full + 2 incrementals onto an empty replica: in chain order', [src(F), src(I1, F), src(I2, I1)], empty, [[F, 'copy'], [I1, 'copy', /copied first/, F], [I2, 'copy', /copied first/, I1]]],
	['given newest first: parents still go first', [src(I2, I1), src(I1, F), src(F)], empty, [[F, 'copy'], [I1, 'copy', undefined, F], [I2, 'copy', undefined, I1]]],
	['everything there already: all skipped', [src(F), src(I1, F)], { backups: [onReplica(F), onReplica(I1, F)], incomplete: [] }, [[F, 'skip', /already on the replica/], [I1, 'skip']]],
	['an incremental whose parent is on the replica', [src(I1, F)], { backups: [onReplica(F)], incomplete: [] }, [[I1, 'copy', /which is on the replica/]]],
	['an incremental whose parent is nowhere: refused', [src(I1, F)], empty, [[I1, 'refuse', /neither on the replica nor in this run/]]],
	['a refused parent refuses its children', [src(I1, F), src(I2, I1)], empty, [[I1, 'refuse', /neither/], [I2, 'refuse', /parent 20261202T010000Z is not replicated/]]],
	['parent skipped (on the replica), child copied', [src(F), src(I1, F)], { backups: [onReplica(F)], incomplete: [] }, [[F, 'skip'], [I1, 'copy', /on the replica/]]],
	['same id, other images on the replica: refused, and its child too', [src(F, undefined, 'web', 'b'), src(I1, F)], { backups: [onReplica(F)], incomplete: [] }, [[F, 'refuse', /a different backup/], [I1, 'refuse', /not replicated/]]],
	['same backup on the replica but found invalid there', [src(F)], { backups: [onReplica(F, undefined, { verification: { status: 'invalid' } })], incomplete: [] }, [[F, 'refuse', /invalid/]]],
	['same backup on the replica but an image missing', [src(F)], { backups: [onReplica(F, undefined, { missingFiles: ['vda.qcow2'] })], incomplete: [] }, [[F, 'refuse', /missing/]]],
	['parent on the replica found invalid: child refused', [src(I1, F)], { backups: [onReplica(F, undefined, { verification: { status: 'invalid' } })], incomplete: [] }, [[I1, 'refuse', /invalid/]]],
	['parent on the replica of another VM: refused', [src(I1, F)], { backups: [{ ...onReplica(F), manifest: manifest(F, undefined, 'a', 'other-uuid') }], incomplete: [] }, [[I1, 'refuse', /another VM/]]],
	['a stale unfinished folder of ours in the way: copied over it', [src(F)], { backups: [], incomplete: [{ vmDir: 'web', id: F, reason: 'no manifest', writerLeftovers: true }] }, [[F, 'copy']]],
	['a foreign folder in the way: refused, left alone', [src(F)], { backups: [], incomplete: [{ vmDir: 'web', id: F, reason: 'no manifest and no incomplete marker', writerLeftovers: false }] }, [[F, 'refuse', /left alone/]]],
	['listed twice: planned once', [src(F), src(F)], empty, [[F, 'copy'], [F, 'skip', /listed twice/]]],
	['two VMs: each its own chain, VMs in first-seen order', [src(I1, F, 'b'), src(F, undefined, 'a'), src(F, undefined, 'b')], empty, [[F, 'copy'], [I1, 'copy', undefined, F], [F, 'copy']]],
	['a parent loop (no valid chain has one): both refused', [src(I1, I2), src(I2, I1)], empty, [[I1, 'refuse', /neither/], [I2, 'refuse', /not replicated/]]],
];

describe('planReplica', () => {
	it.each(rows)('%s', (_name, sources, target, expected) => {
		const steps = planReplica(sources, target);
		expect(steps.map((step) => [step.id, step.action])).toEqual(expected.map(([id, action]) => [id, action]));
		expected.forEach(([, , reason, after], i) => {
			if (reason) expect(steps[i].reason).toMatch(reason);
			expect(steps[i].after).toBe(after);
		});
	});

	it('marks a copy over a stale folder of ours, and VM order follows the input', () => {
		const steps = planReplica([src(I1, F, 'b'), src(F, undefined, 'a'), src(F, undefined, 'b')], {
			backups: [],
			incomplete: [{ vmDir: 'a', id: F, reason: 'x', writerLeftovers: true }],
		});
		expect(steps.map((step) => `${step.vmDir}/${step.id}:${step.index}`)).toEqual([`b/${F}:2`, `b/${I1}:0`, `a/${F}:1`]);
		expect(steps[2].replacesStale).toBe(true);
	});
});
