/** planInstant: which chain an instant-recovery VM runs on, what is verified first, what is refused. */
import type { CatalogBackup } from '../../../lib/catalog';
import { planInstant, type InstantPlanRequest } from '../../../lib/restore/instantPlan';
import type { Manifest } from '../../../lib/store/manifest';
import type { VerificationRecord } from '../../../lib/store/verification';
import { manifest } from '../catalog/local';

const NOW = new Date('2026-11-28T12:00:00Z');
const DEST = '/backups';
const day = (n: number) => `202611${String(n).padStart(2, '0')}T010000Z`;
const SHA = 'a'.repeat(64);

function backup(n: number, extra: Partial<Manifest> = {}, more: Partial<CatalogBackup> = {}): CatalogBackup {
	const id = day(n);
	return { dest: DEST, vmDir: 'web01', vm: 'web01', id, path: `${DEST}/web01/${id}`, manifest: manifest('web01', id, extra), protected: false, diskBytes: 1000, missingFiles: [], ...more };
}

function incremental(n: number, more: Partial<CatalogBackup> = {}): CatalogBackup {
	const parent = day(n - 1);
	const base = manifest('web01', day(n)).disks[0];
	return backup(n, { kind: 'incremental', parent, disks: [{ ...base, backingFile: `../${parent}/vda.qcow2` }] }, more);
}

function record(b: CatalogBackup, status: VerificationRecord['status'] = 'valid', verifiedAt = '2026-11-27T05:00:00Z'): VerificationRecord {
	return {
		format: 'n8n-nodes-libvirt-backup/verification',
		version: 1,
		backupId: b.id,
		verifiedAt,
		status,
		ok: status === 'valid',
		disks: b.manifest.disks.map((disk) => ({ target: disk.target, file: disk.file, expectedSha256: SHA, actualSha256: SHA, status, ok: status === 'valid', qemuImgCheck: 'ok', detail: '' })),
		parents: [],
		problems: status === 'invalid' ? ['vda: sha256 mismatch'] : [],
	};
}

const verified = (b: CatalogBackup, status?: VerificationRecord['status'], at?: string): CatalogBackup => ({ ...b, verification: record(b, status, at) });

function request(backups: CatalogBackup[], backupId: string, more: Partial<InstantPlanRequest> = {}): InstantPlanRequest {
	return { backupId, backups, dest: DEST, overlayDir: '/var/lib/libvirt/images/instant', name: 'web01-recovered', verifyFirst: true, now: NOW, ...more };
}

describe('planInstant', () => {
	const chain3 = () => [incremental(22), incremental(21), backup(20)];
	const table: { name: string; backups: () => CatalogBackup[]; id: number; more?: Partial<InstantPlanRequest>; expected: { verification: string; toHash: number[]; chain: number[]; warnings?: number } }[] = [
		{ name: 'a full, verified valid earlier: trusted, nothing read', backups: () => [verified(backup(20))], id: 20, expected: { verification: 'trusted', toHash: [], chain: [20] } },
		{ name: 'a full never verified: hashed first', backups: () => [backup(20)], id: 20, expected: { verification: 'hash', toHash: [20], chain: [20] } },
		{ name: 'a full never verified, Verify First off: booted with a warning', backups: () => [backup(20)], id: 20, more: { verifyFirst: false }, expected: { verification: 'unverified', toHash: [], chain: [20], warnings: 1 } },
		{ name: 'an incremental whose whole chain is vouched for: trusted', backups: () => chain3().map((b) => verified(b)), id: 22, expected: { verification: 'trusted', toHash: [], chain: [22, 21, 20] } },
		{
			name: 'an incremental with one parent unverified: the backup (Verify always reads it) and that parent are hashed',
			backups: () => chain3().map((b) => (b.id === day(21) ? b : verified(b))),
			id: 22,
			expected: { verification: 'hash', toHash: [22, 21], chain: [22, 21, 20] },
		},
		{
			name: 'a record older than the manifest does not vouch',
			backups: () => [verified(backup(20), 'valid', '2026-11-19T00:00:00Z')],
			id: 20,
			expected: { verification: 'hash', toHash: [20], chain: [20] },
		},
		{ name: 'an unverifiable record does not vouch', backups: () => [verified(backup(20), 'unverifiable')], id: 20, expected: { verification: 'hash', toHash: [20], chain: [20] } },
	];
	test.each(table)('$name', ({ backups, id, more, expected }) => {
		const plan = planInstant(request(backups(), day(id), more));
		expect(plan.verification).toBe(expected.verification);
		expect(plan.toHash).toEqual(expected.toHash.map(day));
		expect(plan.chain.map((member) => member.id)).toEqual(expected.chain.map(day));
		expect(plan.warnings).toHaveLength(expected.warnings ?? 0);
	});

	test('each disk gets an overlay named from the encoded VM name, over the chain from the manifests', () => {
		const plan = planInstant(request(chain3(), day(22), { name: "evil '$(x)/..\n" }));
		expect(plan.disks).toEqual([
			{
				target: 'vda',
				overlay: '/var/lib/libvirt/images/instant/evil%20%27%24%28x%29%2F..%0A.vda.qcow2',
				virtualBytes: 1 << 20,
				chain: [22, 21, 20].map((n) => ({ path: `${DEST}/web01/${day(n)}/vda.qcow2`, format: 'qcow2' })),
			},
		]);
	});

	const refusals: { name: string; backups: () => CatalogBackup[]; id: number; more?: Partial<InstantPlanRequest>; message: RegExp }[] = [
		{ name: 'latest verification invalid', backups: () => [verified(backup(20), 'invalid')], id: 20, message: /latest verification of backup 20261120T010000Z found it invalid \(vda: sha256 mismatch\)/ },
		{ name: 'an ancestor invalid', backups: () => chain3().map((b) => (b.id === day(20) ? verified(b, 'invalid') : b)), id: 22, message: /backup 20261120T010000Z found it invalid/ },
		{ name: 'invalid even with Verify First off', backups: () => [verified(backup(20), 'invalid')], id: 20, more: { verifyFirst: false }, message: /found it invalid/ },
		{ name: 'a parent missing', backups: () => [incremental(22), backup(20)], id: 22, message: /parent backup 20261121T010000Z is missing/ },
		{ name: 'an image missing', backups: () => [backup(20, {}, { missingFiles: ['vda.qcow2'] })], id: 20, message: /missing vda.qcow2/ },
		{ name: 'mid-consolidation', backups: () => [backup(20, {}, { consolidation: { partials: ['vda.qcow2.lvb-full.partial'] } })], id: 20, message: /middle of a consolidation/ },
		{ name: 'overlays inside the destination', backups: () => [backup(20)], id: 20, more: { overlayDir: '/backups/instant' }, message: /inside the backup destination/ },
		{ name: 'overlays in the destination itself', backups: () => [backup(20)], id: 20, more: { overlayDir: '/backups' }, message: /inside the backup destination/ },
		{ name: 'a relative overlay folder', backups: () => [backup(20)], id: 20, more: { overlayDir: 'instant' }, message: /absolute/ },
		{ name: 'an overlay folder with ..', backups: () => [backup(20)], id: 20, more: { overlayDir: '/srv/../backups/x' }, message: /\.\./ },
		{ name: 'no name', backups: () => [backup(20)], id: 20, more: { name: ' ' }, message: /needs a name/ },
		{ name: 'not in the catalog', backups: () => [backup(20)], id: 21, message: /No backup 20261121T010000Z/ },
		{
			name: 'a disk whose backing file is not in its parent',
			backups: () => [backup(21, { kind: 'incremental', parent: day(20), disks: [{ ...manifest('web01', day(21)).disks[0], backingFile: `../${day(19)}/vda.qcow2` }] }), backup(20)],
			id: 21,
			message: /builds on \.\.\/20261119T010000Z\/vda\.qcow2, not on its parent/,
		},
	];
	test.each(refusals)('refused: $name', ({ backups, id, more, message }) => {
		expect(() => planInstant(request(backups(), day(id), more))).toThrow(message);
	});
});
