/**
 * Verify Checksum's verdicts, without a host: what is proven damage (invalid: may be removed), what
 * only could not be read (unverifiable: never acted on), and which backup a VM must keep.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { CHECK_SCRIPT, parseCheckOutput, type CatalogBackup, type ImageResult } from '../../../lib/catalog';
import { judgeDisk, leavesAGoodBackup, recordsFor, trustedRecord } from '../../../lib/catalog/verify';
import type { Manifest } from '../../../lib/store/manifest';
import { parseVerification, serializeVerification, type DiskVerification, type VerificationRecord, type VerificationStatus } from '../../../lib/store/verification';
import { manifest, runScript, tempDir } from './local';

const SHA = 'a'.repeat(64);
const OTHER = 'b'.repeat(64);
const disk = manifest('web01', '20261120T010000Z').disks[0];

describe('judgeDisk', () => {
	const image = (extra: Partial<ImageResult>): ImageResult => ({ state: 'read', sha256: SHA, qemuImgCheck: 'ok', detail: '', ...extra });
	const verdict = (extra: Partial<ImageResult>) => {
		const judged = judgeDisk(disk, image(extra), undefined);
		return [judged.status, judged.ok, judged.detail];
	};

	test('only proven damage is invalid: a hash that differs, corruption, an image that is gone or replaced', () => {
		expect(verdict({})).toEqual(['valid', true, '']);
		expect(verdict({ sha256: OTHER })).toEqual(['invalid', false, `sha256 mismatch: expected ${SHA}, got ${OTHER}`]);
		expect(verdict({ qemuImgCheck: 'errors', detail: 'qemu-img check failed (exit code 2): x' })).toEqual(['invalid', false, 'qemu-img check failed (exit code 2): x']);
		for (const state of ['missing', 'symlink', 'notfile'] as const) {
			expect(verdict({ state, sha256: null, qemuImgCheck: 'skipped', detail: state })).toEqual(['invalid', false, state]);
		}
	});

	test('a read that failed, a hash not read back, a check that could not finish: unverifiable', () => {
		expect(verdict({ state: 'unreadable', sha256: null, qemuImgCheck: 'skipped', detail: 'image cannot be read: Permission denied' })).toEqual([
			'unverifiable',
			false,
			'image cannot be read: Permission denied',
		]);
		expect(verdict({ state: 'unreadable', sha256: null, qemuImgCheck: 'skipped', detail: 'image was not checked' })[0]).toBe('unverifiable');
		expect(verdict({ sha256: null })).toEqual(['unverifiable', false, 'the sha256 of the image could not be read back']);
		expect(verdict({ qemuImgCheck: 'incomplete', detail: 'qemu-img check could not complete (exit code 1): Permission denied' })[0]).toBe('unverifiable');
	});

	test('proven damage wins over a doubt on the same image', () => {
		expect(verdict({ sha256: OTHER, qemuImgCheck: 'incomplete', detail: 'could not complete' })).toEqual([
			'invalid',
			false,
			`sha256 mismatch: expected ${SHA}, got ${OTHER}; could not complete`,
		]);
	});

	test('a backing file outside the parent backup is proven wrong', () => {
		const judged = judgeDisk({ ...disk, backingFile: '../20261119T010000Z/vda.qcow2' }, image({}), '20261118T010000Z');
		expect(judged).toMatchObject({ status: 'invalid', detail: 'backing file ../20261119T010000Z/vda.qcow2 is not in the parent backup 20261118T010000Z' });
	});
});

describe('leavesAGoodBackup', () => {
	const record = (id: string, status: VerificationStatus): VerificationRecord => ({
		format: 'n8n-nodes-libvirt-backup/verification',
		version: 1,
		backupId: id,
		verifiedAt: '2026-11-28T00:00:00.000Z',
		status,
		ok: status === 'valid',
		disks: [],
		parents: [],
		problems: [],
	});
	const backup = (id: string, status?: VerificationStatus, extra: Partial<Manifest> = {}): CatalogBackup => ({
		dest: '/b',
		vmDir: 'web01',
		vm: 'web01',
		id,
		path: `/b/web01/${id}`,
		manifest: manifest('web01', id, extra),
		...(status ? { verification: record(id, status) } : {}),
		protected: false,
		diskBytes: 1,
		missingFiles: [],
	});
	const inc = (id: string, parent: string, status?: VerificationStatus) => backup(id, status, { kind: 'incremental', parent });

	test('a VM with another backup not known to be invalid (verified, unverifiable or never verified) may lose a failed one', () => {
		expect(leavesAGoodBackup([backup('20261121T010000Z', 'invalid'), backup('20261120T010000Z', 'valid')], '20261121T010000Z')).toBe(true);
		expect(leavesAGoodBackup([backup('20261121T010000Z', 'invalid'), backup('20261120T010000Z', 'unverifiable')], '20261121T010000Z')).toBe(true);
		expect(leavesAGoodBackup([backup('20261121T010000Z', 'invalid'), backup('20261122T010000Z')], '20261121T010000Z')).toBe(true);
	});

	test('the last one is kept: no other backup, only invalid ones, or only incrementals built on it', () => {
		expect(leavesAGoodBackup([backup('20261120T010000Z', 'invalid')], '20261120T010000Z')).toBe(false);
		expect(leavesAGoodBackup([backup('20261121T010000Z', 'invalid'), backup('20261120T010000Z', 'invalid')], '20261121T010000Z')).toBe(false);
		const chain = [inc('20261122T010000Z', '20261121T010000Z'), inc('20261121T010000Z', '20261120T010000Z', 'valid'), backup('20261120T010000Z', 'invalid')];
		expect(leavesAGoodBackup(chain, '20261120T010000Z')).toBe(false);
		// An incremental on an invalid full: removing it leaves only the invalid full.
		expect(leavesAGoodBackup(chain, '20261122T010000Z')).toBe(false);
	});

	test('a chain with a gap or a loop is not a good backup', () => {
		expect(leavesAGoodBackup([backup('20261123T010000Z', 'invalid'), inc('20261122T010000Z', '20261121T010000Z')], '20261123T010000Z')).toBe(false);
		const loop = [backup('20261123T010000Z', 'invalid'), inc('20261122T010000Z', '20261121T010000Z'), inc('20261121T010000Z', '20261122T010000Z')];
		expect(leavesAGoodBackup(loop, '20261123T010000Z')).toBe(false);
	});
});

describe('the image check script and its output', () => {
	const M = '@@LVB-unit';

	test('a state or check result the host did not write is unverifiable, never corruption', () => {
		const batch = ['nostate', 'rc1', 'norc', 'odd'].map((name) => ({ path: `/b/${name}`, format: 'qcow2' }));
		const output = [
			`${M} image 0\nstate \nsha \ncheck `,
			`${M} image 1\nstate read\nsha ${SHA}\ncheck 1\nqemu-img: Could not open backing file: Permission denied`,
			`${M} image 2\nstate read\nsha ${SHA}\ncheck `,
			`${M} image 3\nstate constructor\nsha \ncheck `,
			`${M} end`,
		].join('\n');
		expect(parseCheckOutput(output, M, batch).map((r) => [r.state, r.qemuImgCheck, r.detail])).toEqual([
			['unreadable', 'skipped', 'image was not checked'],
			['read', 'incomplete', 'qemu-img check could not complete (exit code 1): qemu-img: Could not open backing file: Permission denied'],
			['read', 'incomplete', 'qemu-img check could not complete (exit code unknown): no output'],
			['unreadable', 'skipped', 'image was not checked'],
		]);
	});

	test('an image is missing only when the host says it does not exist; another failure to reach it is a read error', () => {
		const dir = tempDir('check');
		fs.writeFileSync(path.join(dir, 'file'), 'data');
		fs.mkdirSync(path.join(dir, 'folder'));
		const paths = [path.join(dir, 'gone.raw'), path.join(dir, 'file', 'below-a-file.raw'), path.join(dir, 'folder'), path.join(dir, 'file')];
		const batch = paths.map((p) => ({ path: p, format: 'raw' }));
		const { stdout } = runScript(CHECK_SCRIPT, 'lvb-check', [M, ...batch.flatMap((image) => [image.path, image.format])]);
		const results = parseCheckOutput(stdout, M, batch);
		expect(results.map((r) => r.state)).toEqual(['missing', 'unreadable', 'notfile', 'read']);
		expect(results[1].detail).toMatch(/^image cannot be read: .*Not a directory/);
		fs.rmSync(dir, { recursive: true, force: true });
	});
});

describe('verification records', () => {
	const record: VerificationRecord = {
		format: 'n8n-nodes-libvirt-backup/verification',
		version: 1,
		backupId: '20261128T144300Z',
		verifiedAt: '2026-11-28T15:00:00.000Z',
		status: 'unverifiable',
		ok: false,
		disks: [{ target: 'vda', file: 'vda.qcow2', expectedSha256: SHA, actualSha256: null, status: 'unverifiable', ok: false, qemuImgCheck: 'skipped', detail: 'image cannot be read: x' }],
		parents: [],
		problems: ['vda (vda.qcow2): image cannot be read: x'],
	};
	const id = record.backupId;

	test('a record round-trips with its status', () => {
		expect(parseVerification(serializeVerification(record), id)).toEqual(record);
	});

	test('a record written before status existed reads as valid or invalid from ok, its disks and parents too', () => {
		const old = JSON.parse(serializeVerification(record)) as Record<string, unknown>;
		delete old.status;
		old.disks = [{ ...record.disks[0], status: undefined }];
		old.parents = [{ id: '20261127T144300Z', path: '/b/web01/20261127T144300Z', exists: true, ok: true, detail: '' }];
		const parsed = parseVerification(JSON.stringify(old), id);
		expect(parsed).toMatchObject({ status: 'invalid', ok: false, disks: [{ status: 'invalid' }], parents: [{ status: 'valid' }] });
		expect(parseVerification(JSON.stringify({ ...old, ok: true }), id)?.status).toBe('valid');
	});

	test('a parent trusted on an earlier record round-trips with that record\'s date; one written before trust existed reads as hashed', () => {
		const withTrust: VerificationRecord = {
			...record,
			parents: [
				{ id: '20261127T144300Z', path: '/b/web01/20261127T144300Z', exists: true, status: 'valid', ok: true, detail: '', trusted: true, verifiedAt: '2026-11-27T15:00:00.000Z' },
				{ id: '20261126T144300Z', path: '/b/web01/20261126T144300Z', exists: true, status: 'valid', ok: true, detail: '', trusted: false },
			],
		};
		expect(parseVerification(serializeVerification(withTrust), id)).toEqual(withTrust);
		const old = { ...record, parents: [{ id: '20261127T144300Z', path: '/b/web01/20261127T144300Z', exists: true, status: 'valid', ok: true, detail: '' }] };
		expect(parseVerification(JSON.stringify(old), id)?.parents).toEqual(old.parents);
	});

	test('a trust claim of the wrong type, or without the date of the record it rests on, counts as never verified', () => {
		const parent = { id: '20261127T144300Z', path: '/b/web01/20261127T144300Z', exists: true, status: 'valid', ok: true, detail: '' };
		for (const claim of [{ trusted: 'yes' }, { trusted: true }, { trusted: true, verifiedAt: 'yesterday' }, { trusted: true, verifiedAt: 1 }, { trusted: false, verifiedAt: 'x' }]) {
			expect(parseVerification(JSON.stringify({ ...record, parents: [{ ...parent, ...claim }] }), id)).toBeUndefined();
		}
	});

	test('a status that contradicts ok, or an unknown one, counts as never verified', () => {
		expect(parseVerification(JSON.stringify({ ...record, status: 'valid' }), id)).toBeUndefined();
		expect(parseVerification(JSON.stringify({ ...record, ok: true }), id)).toBeUndefined();
		expect(parseVerification(JSON.stringify({ ...record, status: 'fine' }), id)).toBeUndefined();
		expect(parseVerification(JSON.stringify({ ...record, disks: 'none' }), id)).toBeUndefined();
	});
});

describe('which parent is trusted without being re-hashed', () => {
	const ID = '20261120T010000Z';
	const made = manifest('web01', ID);
	const finished = Date.parse(made.finishedAt);
	const now = new Date(finished + 86_400_000);
	const validDisk = (extra: Partial<DiskVerification> = {}): DiskVerification => ({
		target: 'vda',
		file: 'vda.qcow2',
		expectedSha256: SHA,
		actualSha256: SHA,
		status: 'valid',
		ok: true,
		qemuImgCheck: 'ok',
		detail: '',
		...extra,
	});
	const record = (extra: Partial<VerificationRecord> = {}): VerificationRecord => ({
		format: 'n8n-nodes-libvirt-backup/verification',
		version: 1,
		backupId: ID,
		verifiedAt: new Date(finished + 3_600_000).toISOString(),
		status: 'valid',
		ok: true,
		disks: [validDisk()],
		parents: [],
		problems: [],
		...extra,
	});
	const member = (verification: VerificationRecord | undefined, extra: Partial<CatalogBackup> = {}): CatalogBackup => ({
		dest: '/b',
		vmDir: 'web01',
		vm: 'web01',
		id: ID,
		path: `/b/web01/${ID}`,
		manifest: made,
		verification,
		protected: false,
		diskBytes: 1,
		missingFiles: [],
		...extra,
	});

	test('a valid record of this backup, written after its manifest, vouching for every image the manifest names', () => {
		expect(trustedRecord(member(record()), now)).toEqual(record());
	});

	test('never verified, or verified invalid or unverifiable: hashed', () => {
		expect(trustedRecord(member(undefined), now)).toBeUndefined();
		expect(trustedRecord(member(record({ status: 'invalid', ok: false, disks: [validDisk({ status: 'invalid', ok: false })] })), now)).toBeUndefined();
		expect(trustedRecord(member(record({ status: 'unverifiable', ok: false })), now)).toBeUndefined();
		expect(trustedRecord(member(record({ status: 'valid', ok: false })), now)).toBeUndefined();
	});

	test('a record for another backup, dated before the manifest was written or after now: hashed', () => {
		expect(trustedRecord(member(record({ backupId: '20261121T010000Z' })), now)).toBeUndefined();
		expect(trustedRecord(member(record({ verifiedAt: new Date(finished - 1000).toISOString() })), now)).toBeUndefined();
		expect(trustedRecord(member(record({ verifiedAt: new Date(now.getTime() + 1000).toISOString() })), now)).toBeUndefined();
		expect(trustedRecord(member(record({ verifiedAt: 'not a date' })), now)).toBeUndefined();
	});

	test('a record that does not vouch for exactly the images the manifest names (a rewritten manifest, a disk left out): hashed', () => {
		expect(trustedRecord(member(record({ disks: [validDisk({ expectedSha256: OTHER, actualSha256: OTHER })] })), now)).toBeUndefined();
		expect(trustedRecord(member(record({ disks: [validDisk({ actualSha256: OTHER })] })), now)).toBeUndefined();
		expect(trustedRecord(member(record({ disks: [validDisk({ file: 'vdb.qcow2' })] })), now)).toBeUndefined();
		expect(trustedRecord(member(record({ disks: [] })), now)).toBeUndefined();
		expect(trustedRecord(member(record({ disks: [validDisk({ qemuImgCheck: 'errors' })] })), now)).toBeUndefined();
		const twoDisks = { ...made, disks: [...made.disks, { ...made.disks[0], target: 'vdb', file: 'vdb.qcow2' }] };
		expect(trustedRecord(member(record(), { manifest: twoDisks }), now)).toBeUndefined();
	});

	test('an image the manifest names that is no longer a regular file: hashed, so it fails as before', () => {
		expect(trustedRecord(member(record(), { missingFiles: ['vda.qcow2'] }), now)).toBeUndefined();
	});
});

describe('the records of a chain with trusted parents', () => {
	const FULL = '20261120T010000Z';
	const INC1 = '20261121T010000Z';
	const INC2 = '20261122T010000Z';
	const at = '2026-11-28T00:00:00.000Z';
	const earlier = '2026-11-22T05:00:00.000Z';
	const of = (id: string, parent?: string): CatalogBackup => ({
		dest: '/b',
		vmDir: 'web01',
		vm: 'web01',
		id,
		path: `/b/web01/${id}`,
		manifest: manifest('web01', id, parent ? { kind: 'incremental', parent } : {}),
		protected: false,
		diskBytes: 1,
		missingFiles: [],
	});
	const members = [of(INC2, INC1), of(INC1, FULL), of(FULL)];
	const disk = (status: VerificationStatus): DiskVerification => ({
		target: 'vda',
		file: 'vda.qcow2',
		expectedSha256: SHA,
		actualSha256: status === 'invalid' ? OTHER : SHA,
		status,
		ok: status === 'valid',
		qemuImgCheck: 'ok',
		detail: status === 'valid' ? '' : 'bad',
	});
	const earlierRecord = { verifiedAt: earlier } as VerificationRecord;

	test('a trusted parent gets no new record and is named with the date of the record it rests on', () => {
		const records = recordsFor(members, undefined, (member) => (member.id === INC1 ? { trustedOn: earlierRecord } : { disks: [disk('valid')] }), at);
		expect(records.map((record) => record?.status)).toEqual(['valid', undefined, 'valid']);
		expect(records[0]?.parents).toEqual([
			{ id: INC1, path: `/b/web01/${INC1}`, exists: true, status: 'valid', ok: true, detail: '', trusted: true, verifiedAt: earlier },
			{ id: FULL, path: `/b/web01/${FULL}`, exists: true, status: 'valid', ok: true, detail: '', trusted: false },
		]);
	});

	test('damage below a trusted parent still fails every backup above it', () => {
		const records = recordsFor(members, undefined, (member) => (member.id === INC1 ? { trustedOn: earlierRecord } : { disks: [disk(member.id === FULL ? 'invalid' : 'valid')] }), at);
		expect(records[0]).toMatchObject({ status: 'invalid', problems: [`parent backup ${INC1} failed verification`] });
		expect(records[0]?.parents).toMatchObject([
			{ id: INC1, status: 'invalid', trusted: true, detail: `parent backup ${FULL} failed verification` },
			{ id: FULL, status: 'invalid', trusted: false, detail: 'vda: bad' },
		]);
		expect(records[2]).toMatchObject({ status: 'invalid' });
	});
});
