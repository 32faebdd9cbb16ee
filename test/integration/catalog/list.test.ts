/**
 * List Backups against the lab host: the catalog comes from manifests, in one SSH command, and
 * everything that is not one of our finished backups is kept apart or left out.
 */
import { vmDirName } from '../../../lib/store/layout';
import { VERIFICATION_FILE } from '../../../lib/store/manifest';
import { listCatalog, type CatalogResult } from '../../../lib/catalog';
import { serializeVerification } from '../../../lib/store';
import { isLibvirtBackupError } from '../../../lib/errors';
import { withSsh } from '../../../lib/ssh';
import { ageFiles, makeBackups, makeDest, makeUnfinished, onHost, removeDest, type MadeBackup } from '../../support/backupFixtures';
import { shq } from '../../support/lab';
import { labTarget } from '../../support/targets';

jest.setTimeout(120_000);

const HOSTILE_VM = `it's "web" $(touch pwned) ..`;

function list(dest: string, filter = {}): Promise<CatalogResult> {
	return withSsh(labTarget(), (ssh) => listCatalog(ssh, dest, filter));
}

describe('List Backups', () => {
	let dest: string;
	let made: MadeBackup[];

	beforeAll(() => {
		dest = makeDest(`backups 'nightly' $(x)`);
		made = makeBackups(dest, [
			{ vm: 'web01', id: '20261120T010000Z' },
			{ vm: 'web01', id: '20261121T010000Z', kind: 'incremental', parent: '20261120T010000Z', disks: [{ target: 'vda', pattern: 0x22 }] },
			{ vm: 'db01', id: '20261121T020000Z', protected: true, disks: [{ target: 'vda', pattern: 0x33 }, { target: 'vdb', pattern: 0x44 }] },
			{ vm: HOSTILE_VM, id: '20261122T030000Z' },
		]);
		makeUnfinished(dest, 'web01', '20261122T010000Z');
		onHost(
			[
				`cd -- ${shq(dest)}`,
				'echo hello > notes.txt',
				'head -c 4096 /dev/zero > old.qcow2',
				'mkdir -p other-tool/20240101T000000Z web01/not-a-backup',
				'echo x > other-tool/20240101T000000Z/data',
				`mv -- ${shq(`web01/20261120T010000Z`)} web01/20261119T010000Z.quarantined`,
				`cp -r web01/20261119T010000Z.quarantined web01/20261120T010000Z`,
			].join(' && '),
		);
		ageFiles(dest);
		onHost(
			`printf '%s' ${shq(
				serializeVerification({
					format: 'n8n-nodes-libvirt-backup/verification',
					version: 1,
					backupId: '20261121T020000Z',
					verifiedAt: '2026-11-22T00:00:00.000Z',
					status: 'valid',
					ok: true,
					disks: [],
					parents: [],
					problems: [],
				}),
			)} > ${shq(`${made[2].path}/${VERIFICATION_FILE}`)}`,
		);
	});

	afterAll(() => removeDest(dest));

	test('one item per finished backup, read from its manifest, in one SSH command', async () => {
		const catalog = await list(dest);

		expect(catalog.sshExecs).toBe(1);
		expect(catalog.backups.map((backup) => [backup.vm, backup.id, backup.manifest.kind])).toEqual([
			['db01', '20261121T020000Z', 'full'],
			[HOSTILE_VM, '20261122T030000Z', 'full'],
			['web01', '20261121T010000Z', 'incremental'],
			['web01', '20261120T010000Z', 'full'],
		]);
		const db = catalog.backups[0];
		expect(db.manifest).toEqual(made[2].manifest);
		expect(db).toMatchObject({ protected: true, path: made[2].path, verification: { ok: true, verifiedAt: '2026-11-22T00:00:00.000Z' } });
		expect(db.diskBytes).toBeGreaterThan(db.manifest.disks[0].bytes);
		expect(catalog.backups[2]).toMatchObject({ protected: false, verification: undefined });
		expect(catalog.backups[2].manifest.parent).toBe('20261120T010000Z');
	});

	test('a folder without a manifest is incomplete, a quarantined one is apart, foreign files are not listed', async () => {
		const catalog = await list(dest);

		expect(catalog.incomplete.map((folder) => [folder.vm, folder.id, folder.reason, folder.writerLeftovers])).toEqual([
			['other-tool', '20240101T000000Z', 'no manifest and no incomplete marker: not written by this package', false],
			['web01', '20261122T010000Z', 'no manifest: the backup was not finished', true],
		]);
		expect(catalog.quarantined.map((folder) => [folder.vm, folder.id, folder.path])).toEqual([['web01', '20261119T010000Z', `${dest}/web01/20261119T010000Z.quarantined`]]);
		const paths = [...catalog.backups, ...catalog.incomplete, ...catalog.quarantined].map((folder) => folder.path);
		expect(paths.some((path) => /notes\.txt|old\.qcow2|not-a-backup/.test(path))).toBe(false);
	});

	test('filters by VM name (hostile names included), kind and age', async () => {
		expect((await list(dest, { vmNames: [HOSTILE_VM] })).backups.map((backup) => backup.vmDir)).toEqual([vmDirName(HOSTILE_VM)]);
		expect((await list(dest, { vmNames: ['web01'], kinds: ['incremental'] })).backups.map((backup) => backup.id)).toEqual(['20261121T010000Z']);
		const aged = await list(dest, { newerThan: new Date('2026-11-21T00:00:00Z'), olderThan: new Date('2026-11-22T00:00:00Z') });
		expect(aged.backups.map((backup) => backup.id)).toEqual(['20261121T020000Z', '20261121T010000Z']);
		expect((await list(dest, { vmNames: ['nobody'] })).backups).toEqual([]);
	});

	test('a missing destination is an error a person can act on; ".." is refused before anything runs', async () => {
		const missing = await list(`${dest}/nope`).catch((error: unknown) => error);
		expect(isLibvirtBackupError(missing, 'INVALID_INPUT') && missing.message).toMatch(/does not exist on the host/);
		const dotdot = await list(`${dest}/../..`).catch((error: unknown) => error);
		expect(isLibvirtBackupError(dotdot, 'INVALID_INPUT') && dotdot.message).toMatch(/must not contain "\.\."/);
	});
});

describe('List Backups and files bigger than ours can be (a shared destination)', () => {
	let dest: string;
	let made: MadeBackup[];

	beforeAll(() => {
		dest = makeDest('list-big-texts');
		made = makeBackups(dest, [
			{ vm: 'web01', id: '20261120T010000Z' },
			{ vm: 'web01', id: '20261121T010000Z' },
		]);
		// Still valid JSON, still the right backup: only padded past anything this package writes. And a
		// verification record as big, on the other backup.
		onHost(
			[
				`cd -- ${shq(`${dest}/web01/20261121T010000Z`)}`,
				`{ cat manifest.json; head -c 3145728 /dev/zero | tr '\\0' ' '; } > m.tmp && mv m.tmp manifest.json`,
				`cd ../20261120T010000Z`,
				`{ printf '{"format":"n8n-nodes-libvirt-backup/verification"'; head -c 3145728 /dev/zero | tr '\\0' ' '; printf '}'; } > ${VERIFICATION_FILE}`,
			].join(' && '),
		);
	});

	afterAll(() => removeDest(dest));

	test('a manifest over 1 MiB is not read: the backup is incomplete, with its size as the reason; an oversized record is left unread', async () => {
		const catalog = await list(dest);
		expect(catalog.incomplete.map((folder) => [folder.id, folder.reason])).toEqual([
			['20261121T010000Z', expect.stringMatching(/^manifest\.json is 3\d{6} bytes, more than the 1048576 a manifest of this package can be: not read$/)],
		]);
		expect(catalog.backups.map((backup) => [backup.id, backup.verification])).toEqual([['20261120T010000Z', undefined]]);
		expect(made[0].manifest.id).toBe('20261120T010000Z');
	});
});
