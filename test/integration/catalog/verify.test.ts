/**
 * Verify Checksum against the lab host: real images re-hashed and checked with qemu-img, results
 * recorded next to the manifest, failed backups quarantined or deleted on request.
 */
import type { IExecuteFunctions, INodeExecutionData } from 'n8n-workflow';
import { acquireVmLock } from '../../../lib/store/lock';
import { VERIFICATION_FILE } from '../../../lib/store/manifest';
import { BackupVerifier, listCatalog, type BackupVerification, type VerifyOptions } from '../../../lib/catalog';
import { parseVerification } from '../../../lib/store';
import { isLibvirtBackupError } from '../../../lib/errors';
import { withSsh } from '../../../lib/ssh';
import { exists, flipByte, makeBackups, makeDest, makeUnfinished, onHost, readHostFile, removeDest, truncateFile, type MadeBackup } from '../../support/backupFixtures';
import { loadLab, shq } from '../../support/lab';
import { LibvirtVerifyChecksum } from '../../../nodes/LibvirtVerifyChecksum/LibvirtVerifyChecksum.node';
import { labTarget, type LabUser } from '../../support/targets';

jest.setTimeout(120_000);

const FULL = '20261120T010000Z';
const INC1 = '20261121T010000Z';
const INC2 = '20261122T010000Z';

const FULL2 = '20261123T010000Z';

function verify(path: string, options: VerifyOptions = {}, user: LabUser = 'root'): Promise<BackupVerification> {
	return withSsh(labTarget(user), (ssh) => new BackupVerifier(ssh).verify(path, options));
}

/**
 * Hands the destination to the lab's non-root user (lvbpass), so that a file of mode 000 is one
 * it cannot read (root reads everything) while it can still lock, record, quarantine and delete.
 */
function giveToNonRoot(dest: string): void {
	onHost(`chown -R lvbpass:lvbpass -- ${shq(dest.split('/').slice(0, -1).join('/'))}`);
}

/** Runs the Verify Checksum node as n8n runs it for an AI agent: its type name ends in "Tool". */
async function runAsTool(backupPath: string, onInvalid: string): Promise<INodeExecutionData[][]> {
	const lab = loadLab();
	const context = {
		getInputData: () => [{ json: {} }],
		getNodeParameter: (name: string) => ({ backupPath, onInvalid })[name],
		getCredentials: async () => ({ host: lab.host, port: lab.port, username: 'root', authMethod: 'privateKey', privateKey: lab.users.root.privateKey, hostKeys: lab.knownHostsLine, sudoMode: 'none' }),
		getExecutionCancelSignal: () => undefined,
		continueOnFail: () => false,
		getNode: () => ({ id: 'n1', name: 'Verify Checksum', type: 'n8n-nodes-libvirt-backup.libvirtVerifyChecksumTool', typeVersion: 1, position: [0, 0], parameters: {} }),
		getWorkflow: () => ({ id: 'wf1' }),
		getExecutionId: () => 'ex1',
	} as unknown as IExecuteFunctions;
	return await new LibvirtVerifyChecksum().execute.call(context);
}

function recordOf(made: MadeBackup) {
	return parseVerification(readHostFile(`${made.path}/${VERIFICATION_FILE}`), made.manifest.id);
}

/** A full backup with two disks and two incrementals on it. */
function chain(dest: string, vm = 'web01'): MadeBackup[] {
	return makeBackups(dest, [
		{ vm, id: FULL, disks: [{ target: 'vda', pattern: 0x11 }, { target: 'vdb', pattern: 0x12 }] },
		{ vm, id: INC1, kind: 'incremental', parent: FULL, disks: [{ target: 'vda', pattern: 0x21 }, { target: 'vdb', pattern: 0x22 }] },
		{ vm, id: INC2, kind: 'incremental', parent: INC1, disks: [{ target: 'vda', pattern: 0x31 }, { target: 'vdb', pattern: 0x32 }] },
	]);
}

describe('Verify Checksum', () => {
	let dest: string;
	beforeEach(() => {
		dest = makeDest(`dest with 'quotes'`);
	});
	afterEach(() => removeDest(dest));

	test('an intact incremental chain is valid: every image re-hashed and checked, parents verified, result recorded', async () => {
		const [full, inc1, inc2] = chain(dest);

		const result = await verify(inc2.path);

		expect(result).toMatchObject({ status: 'valid', valid: true, action: 'kept', path: inc2.path, vm: 'web01', id: INC2, problems: [] });
		expect(result.disks).toEqual(
			inc2.manifest.disks.map((disk) => ({
				target: disk.target,
				file: disk.file,
				expectedSha256: disk.sha256,
				actualSha256: disk.sha256,
				status: 'valid',
				ok: true,
				qemuImgCheck: 'ok',
				detail: '',
			})),
		);
		expect(result.parents.map((parent) => [parent.id, parent.exists, parent.ok])).toEqual([
			[INC1, true, true],
			[FULL, true, true],
		]);
		for (const made of [full, inc1, inc2]) {
			const record = parseVerification(readHostFile(`${made.path}/${VERIFICATION_FILE}`), made.manifest.id);
			expect(record).toMatchObject({ ok: true, verifiedAt: result.checkedAt });
		}
		const listed = await withSsh(labTarget(), (ssh) => listCatalog(ssh, dest));
		expect(listed.backups.map((backup) => backup.verification?.ok)).toEqual([true, true, true]);
	});

	test('one flipped byte makes a backup invalid, with the expected and the actual hash', async () => {
		const [full] = chain(dest);
		flipByte(`${full.path}/vdb.qcow2`, 200_000);

		const result = await verify(full.path);

		expect(result.valid).toBe(false);
		const vdb = result.disks.find((disk) => disk.target === 'vdb')!;
		expect(vdb).toMatchObject({ ok: false, expectedSha256: full.manifest.disks[1].sha256 });
		expect(vdb.actualSha256).toMatch(/^[0-9a-f]{64}$/);
		expect(vdb.actualSha256).not.toBe(vdb.expectedSha256);
		expect(vdb.detail).toBe(`sha256 mismatch: expected ${vdb.expectedSha256}, got ${vdb.actualSha256}`);
		expect(result.disks.find((disk) => disk.target === 'vda')!.ok).toBe(true);
		expect(result.problems).toEqual([`vdb (vdb.qcow2): ${vdb.detail}`]);
		expect(parseVerification(readHostFile(`${full.path}/${VERIFICATION_FILE}`), FULL)).toMatchObject({ ok: false });
	});

	test('a truncated qcow2 fails qemu-img check', async () => {
		const [full] = chain(dest);
		truncateFile(`${full.path}/vda.qcow2`, 200_000);

		const result = await verify(full.path);

		const vda = result.disks.find((disk) => disk.target === 'vda')!;
		expect(vda).toMatchObject({ ok: false, qemuImgCheck: 'errors' });
		expect(vda.detail).toMatch(/sha256 mismatch.*; qemu-img check failed \(exit code \d+\)/);
		expect(result.valid).toBe(false);
	});

	test('an incremental whose parent is corrupt or missing is invalid, and says which parent', async () => {
		const [full, , inc2] = chain(dest);
		makeBackups(dest, [{ vm: 'web01', id: FULL2 }]);
		flipByte(`${full.path}/vda.qcow2`, 200_000);

		const corrupt = await verify(inc2.path);
		expect(corrupt.valid).toBe(false);
		expect(corrupt.disks.every((disk) => disk.ok)).toBe(true);
		expect(corrupt.parents.map((parent) => [parent.id, parent.ok])).toEqual([
			[INC1, false],
			[FULL, false],
		]);
		expect(corrupt.problems).toEqual([`parent backup ${INC1} failed verification`]);

		await withSsh(labTarget(), (ssh) => new BackupVerifier(ssh).verify(full.path, { onInvalid: 'delete' }));
		const orphan = await verify(inc2.path);
		expect(orphan.valid).toBe(false);
		expect(orphan.parents.at(-1)).toMatchObject({ id: FULL, exists: false, ok: false, detail: `parent backup ${FULL} does not exist` });
		// qemu-img follows the backing chain, so the incremental's own images no longer open either:
		// that alone proves nothing about them; the missing parent does.
		expect(orphan.status).toBe('invalid');
		expect(orphan.disks[0]).toMatchObject({ ok: false, status: 'unverifiable', qemuImgCheck: 'incomplete', detail: expect.stringMatching(/Could not open backing file/) });
	});

	test('quarantine renames a failed backup: List no longer lists it and reports it apart', async () => {
		const [full, inc1] = chain(dest);
		flipByte(`${inc1.path}/vda.qcow2`, 200_000);

		const result = await verify(inc1.path, { onInvalid: 'quarantine' });

		expect(result).toMatchObject({ valid: false, action: 'quarantined', path: `${inc1.path}.quarantined` });
		expect(exists(inc1.path)).toBe(false);
		expect(exists(`${inc1.path}.quarantined/${VERIFICATION_FILE}`)).toBe(true);
		const listed = await withSsh(labTarget(), (ssh) => listCatalog(ssh, dest));
		expect(listed.backups.map((backup) => backup.id)).toEqual([INC2, FULL]);
		expect(listed.quarantined.map((folder) => folder.id)).toEqual([INC1]);
		const after = await verify(`${dest}/web01/${INC2}`);
		expect(after.parents[0]).toMatchObject({ id: INC1, exists: false, detail: `parent backup ${INC1} is quarantined` });
		expect(exists(full.path)).toBe(true);
	});

	test('a failed backup of a VM locked by a running job is kept, and the result says why', async () => {
		const [full] = chain(dest);
		makeBackups(dest, [{ vm: 'web01', id: FULL2 }]);
		flipByte(`${full.path}/vda.qcow2`, 200_000);

		const result = await withSsh(labTarget(), async (holderSsh) => {
			const lock = await acquireVmLock(holderSsh, `${dest}/web01`, 'backup job 7', 'web01');
			try {
				return await verify(full.path, { onInvalid: 'delete' });
			} finally {
				await lock.release();
			}
		});

		expect(result).toMatchObject({ valid: false, action: 'kept' });
		expect(result.problems.at(-1)).toMatch(/^could not delete the backup: VM "web01" is locked by backup job 7/);
		expect(exists(`${full.path}/vda.qcow2`)).toBe(true);
	});

	test('an image the verifying user cannot read is unverifiable, not invalid: Delete keeps the backup and every incremental on it', async () => {
		const [full, inc1, inc2] = chain(dest);
		giveToNonRoot(dest);
		onHost(`chmod 000 -- ${shq(`${full.path}/vdb.qcow2`)}`);

		const first = await verify(full.path, { onInvalid: 'delete' }, 'password');

		expect(first).toMatchObject({ valid: false, status: 'unverifiable', action: 'kept', path: full.path });
		const vdb = first.disks.find((disk) => disk.target === 'vdb')!;
		expect(vdb).toMatchObject({ ok: false, status: 'unverifiable', actualSha256: null });
		expect(vdb.detail).toMatch(/^image cannot be read: .*Permission denied/);
		expect(first.disks.find((disk) => disk.target === 'vda')).toMatchObject({ ok: true, status: 'valid' });
		expect(recordOf(full)).toMatchObject({ ok: false, status: 'unverifiable' });

		const child = await verify(inc2.path, { onInvalid: 'delete' }, 'password');

		expect(child).toMatchObject({ valid: false, status: 'unverifiable', action: 'kept' });
		expect(child.parents.map((parent) => [parent.id, parent.status])).toEqual([
			[INC1, 'unverifiable'],
			[FULL, 'unverifiable'],
		]);
		expect(child.problems).toEqual([
			// qemu-img check opens the whole backing chain, so it cannot complete either: not a corruption.
			...child.disks.filter((disk) => disk.target === 'vdb').map((disk) => `vdb (vdb.qcow2): ${disk.detail}`),
			`parent backup ${INC1} could not be verified`,
		]);
		expect(child.disks.find((disk) => disk.target === 'vdb')).toMatchObject({ status: 'unverifiable', qemuImgCheck: 'incomplete' });
		for (const made of [full, inc1, inc2]) expect(exists(`${made.path}/manifest.json`)).toBe(true);
		expect(recordOf(inc1)).toMatchObject({ ok: false, status: 'unverifiable' });
		const listed = await withSsh(labTarget(), (ssh) => listCatalog(ssh, dest));
		expect(listed.backups.map((backup) => backup.verification?.status)).toEqual(['unverifiable', 'unverifiable', 'unverifiable']);
	});

	test('a parent whose manifest cannot be read makes the incrementals on it unverifiable, not invalid', async () => {
		const [full, inc1, inc2] = chain(dest);
		makeBackups(dest, [{ vm: 'web01', id: FULL2 }]);
		giveToNonRoot(dest);
		onHost(`chmod 000 -- ${shq(`${full.path}/manifest.json`)}`);

		const result = await verify(inc2.path, { onInvalid: 'delete' }, 'password');

		expect(result).toMatchObject({ status: 'unverifiable', action: 'kept', problems: [`parent backup ${INC1} could not be verified`] });
		expect(result.parents.at(-1)).toMatchObject({ id: FULL, exists: false, status: 'unverifiable', detail: expect.stringMatching(`^parent backup ${FULL} is not a usable backup: `) });
		for (const made of [full, inc1, inc2]) expect(exists(made.path)).toBe(true);
	});

	test('a proven mismatch is still deleted or quarantined when the VM keeps a good backup', async () => {
		const [full, inc1] = chain(dest);
		const [full2] = makeBackups(dest, [{ vm: 'web01', id: FULL2 }]);
		flipByte(`${inc1.path}/vdb.qcow2`, 200_000);
		onHost(`rm -- ${shq(`${full2.path}/vda.qcow2`)}`);
		makeBackups(dest, [{ vm: 'web01', id: '20261124T010000Z' }]);

		const quarantined = await verify(inc1.path, { onInvalid: 'quarantine' });
		expect(quarantined).toMatchObject({ valid: false, status: 'invalid', action: 'quarantined' });

		// The manifest is written last, after every image is in place: an image it names that is gone
		// means this backup can never be restored.
		const gone = await verify(full2.path, { onInvalid: 'delete' });
		expect(gone).toMatchObject({ valid: false, status: 'invalid', action: 'deleted' });
		expect(gone.disks[0]).toMatchObject({ status: 'invalid', detail: 'image file is missing' });
		expect(exists(full2.path)).toBe(false);
		expect(exists(full.path)).toBe(true);
	});

	test('the last good backup of a VM is never deleted or quarantined: a corrupt chain with nothing else stays, marked invalid', async () => {
		const [full, inc1, inc2] = chain(dest);
		flipByte(`${full.path}/vda.qcow2`, 200_000);

		const base = await verify(full.path, { onInvalid: 'delete' });
		expect(base).toMatchObject({ valid: false, status: 'invalid', action: 'kept' });
		expect(base.problems.at(-1)).toBe('not deleted: VM "web01" would be left without a backup that is not known to be invalid');

		const child = await verify(inc2.path, { onInvalid: 'quarantine' });
		expect(child).toMatchObject({ valid: false, status: 'invalid', action: 'kept' });
		expect(child.problems.at(-1)).toBe('not quarantined: VM "web01" would be left without a backup that is not known to be invalid');
		for (const made of [full, inc1, inc2]) expect(exists(`${made.path}/manifest.json`)).toBe(true);
		expect(recordOf(full)).toMatchObject({ ok: false, status: 'invalid' });
	});

	test('as an AI agent tool, Verify Checksum only reports: a failed backup is kept whatever If Invalid says', async () => {
		const [full] = chain(dest);
		makeBackups(dest, [{ vm: 'web01', id: FULL2 }]);
		flipByte(`${full.path}/vda.qcow2`, 200_000);

		const [valid, invalid] = await runAsTool(full.path, 'delete');

		expect(valid).toEqual([]);
		expect(invalid.map((item) => item.json)).toMatchObject([{ status: 'invalid', valid: false, action: 'kept', path: full.path }]);
		expect(exists(`${full.path}/vda.qcow2`)).toBe(true);
		expect(new LibvirtVerifyChecksum().description.properties.find((property) => property.name === 'onInvalid')?.displayOptions).toEqual({ show: { '@tool': [false] } });
	});

	test('a valid backup is never quarantined or deleted, whatever the option', async () => {
		const [full] = chain(dest);
		expect(await verify(full.path, { onInvalid: 'delete' })).toMatchObject({ valid: true, action: 'kept' });
		expect(exists(`${full.path}/vda.qcow2`)).toBe(true);
	});

	test('a path that is not a backup is refused with the reason', async () => {
		chain(dest);
		const unfinished = makeUnfinished(dest, 'web01', '20261123T010000Z');
		const cases: Array<[string, RegExp]> = [
			[unfinished, /is not a backup: no manifest: the backup was not finished/],
			[`${dest}/web01/20261124T010000Z`, /No backup at .*: the folder does not exist/],
			[`${dest}/web01/../web01/${FULL}`, /must not contain "\.\."/],
			[`${dest}/web01`, /not a backup id/],
			['relative/web01/20261120T010000Z', /absolute path/],
		];
		for (const [path, message] of cases) {
			const error = await verify(path).catch((caught: unknown) => caught);
			expect(isLibvirtBackupError(error, 'INVALID_INPUT') && error.message).toMatch(message);
		}
	});
});
