/**
 * Verify of an incremental hashes its own images and trusts a parent verified valid earlier (issue
 * 8): proven on a real running VM by damaging the full AFTER its verification, which only a
 * re-hash of the whole chain (Re-Hash Whole Chain) can see. A parent that is gone, or whose record
 * cannot vouch for its images, is still checked as before.
 */
import { backupVm, type BackupRequest, type BackupResult } from '../../../lib/backup';
import type { IExecuteFunctions, INodeExecutionData } from 'n8n-workflow';
import { BackupVerifier, type BackupVerification, type VerifyOptions } from '../../../lib/catalog';
import { VERIFICATION_FILE } from '../../../lib/store/manifest';
import { parseVerification } from '../../../lib/store/verification';
import { quoteArg as q } from '../../../lib/shell';
import { withSsh } from '../../../lib/ssh';
import { flipByte, makeBackups, makeDest, onHost, readHostFile, removeDest } from '../../support/backupFixtures';
import { loadLab } from '../../support/lab';
import { LibvirtVerifyChecksum } from '../../../nodes/LibvirtVerifyChecksum/LibvirtVerifyChecksum.node';
import { labTarget } from '../../support/targets';
import { createTestVm, host, testDestination, type TestVm } from '../../support/testVm';

jest.setTimeout(240_000);

const lab = loadLab();

function backup(vm: string, dest: string): Promise<BackupResult> {
	const request: BackupRequest = { uri: lab.systemUri, vm, dest, mode: 'auto', compression: 'none', quiesce: 'off', holder: `jest ${process.pid}`, host: 'lab' };
	return withSsh(labTarget(), (ssh) => backupVm(ssh, request));
}

/** Each call is its own node run (a fresh verifier): nothing hashed by an earlier call is reused. */
function verify(path: string, options: VerifyOptions = {}): Promise<BackupVerification> {
	return withSsh(labTarget(), (ssh) => new BackupVerifier(ssh).verify(path, options));
}

/** Runs the Verify Checksum node on one backup with these parameters (If Invalid: keep). */
async function runNode(backupPath: string, parameters: Record<string, unknown>): Promise<INodeExecutionData[][]> {
	const context = {
		getInputData: () => [{ json: {} }],
		getNodeParameter: (name: string, _itemIndex: number, fallback?: unknown) => ({ backupPath, onInvalid: 'keep', ...parameters })[name] ?? fallback,
		getCredentials: async () => ({ host: lab.host, port: lab.port, username: 'root', authMethod: 'privateKey', privateKey: lab.users.root.privateKey, hostKeys: lab.knownHostsLine, sudoMode: 'none' }),
		getExecutionCancelSignal: () => undefined,
		continueOnFail: () => false,
		getNode: () => ({ id: 'n1', name: 'Verify Checksum', type: 'n8n-nodes-libvirt-backup.libvirtVerifyChecksum', typeVersion: 1, position: [0, 0], parameters: {} }),
		getWorkflow: () => ({ id: 'wf1' }),
		getExecutionId: () => 'ex1',
	} as unknown as IExecuteFunctions;
	return await new LibvirtVerifyChecksum().execute.call(context);
}

/** The host offset of the first data cluster of a qcow2: a byte there is guest data, not metadata qemu-img check would notice. */
function firstDataOffset(image: string): number {
	const map = JSON.parse(host(`qemu-img map -U --output=json ${q(image)}`)) as { data: boolean; offset?: number }[];
	const data = map.find((extent) => extent.data && extent.offset !== undefined);
	if (!data?.offset) throw new Error(`no data in ${image}`);
	return data.offset;
}

describe('Verify trusts a parent verified valid earlier (running VM)', () => {
	let vm: TestVm;
	let destination: { dest: string; cleanup(): void };
	beforeAll(() => {
		vm = createTestVm('vtrust', [{ target: 'vda', format: 'qcow2', virtualMiB: 64, writes: [{ pattern: 0x11, offsetMiB: 0, lengthMiB: 4 }] }]);
		destination = testDestination('vtrust');
	});
	afterAll(() => {
		vm.destroy();
		destination.cleanup();
	});

	test('the full is not re-read when its incremental is verified; Re-Hash Whole Chain reads it and finds the damage', async () => {
		const full = await backup(vm.name, destination.dest);
		vm.guestWrite('vda', 0x22, 8, 2);
		const inc = await backup(vm.name, destination.dest);
		expect([full.kind, inc.kind, inc.parent]).toEqual(['full', 'incremental', full.id]);

		const first = await verify(full.path);
		expect(first).toMatchObject({ status: 'valid', parents: [] });
		const fullImage = `${full.path}/${full.disks[0].file}`;
		// Damage after the verification: only a re-read of the full can see it.
		flipByte(fullImage, firstDataOffset(fullImage) + 4096);
		const fullRecord = readHostFile(`${full.path}/${VERIFICATION_FILE}`);

		const trusted = await verify(inc.path);

		expect(trusted).toMatchObject({ status: 'valid', valid: true, problems: [] });
		expect(trusted.disks).toMatchObject([{ target: 'vda', status: 'valid', actualSha256: inc.disks[0].sha256 }]);
		expect(trusted.parents).toEqual([{ id: full.id, path: full.path, exists: true, status: 'valid', ok: true, detail: '', trusted: true, verifiedAt: first.checkedAt }]);
		// The trusted parent's own record is left as it was: no check happened that a new date could claim.
		expect(readHostFile(`${full.path}/${VERIFICATION_FILE}`)).toBe(fullRecord);
		expect(parseVerification(readHostFile(`${inc.path}/${VERIFICATION_FILE}`), inc.id)).toMatchObject({
			status: 'valid',
			verifiedAt: trusted.checkedAt,
			parents: [{ id: full.id, trusted: true, verifiedAt: first.checkedAt }],
		});

		const rehashed = await verify(inc.path, { rehashChain: true });

		expect(rehashed).toMatchObject({ status: 'invalid', valid: false, problems: [`parent backup ${full.id} failed verification`] });
		expect(rehashed.parents).toMatchObject([{ id: full.id, status: 'invalid', trusted: false, detail: expect.stringMatching(/^vda: sha256 mismatch/) }]);
		expect(parseVerification(readHostFile(`${full.path}/${VERIFICATION_FILE}`), full.id)).toMatchObject({ status: 'invalid', verifiedAt: rehashed.checkedAt });

		// Its record now says invalid: the next plain Verify hashes it again rather than trusting it.
		expect(await verify(inc.path)).toMatchObject({ status: 'invalid', parents: [{ id: full.id, status: 'invalid', trusted: false }] });
	});
});

describe('what a trusted parent still needs', () => {
	const FULL = '20261120T010000Z';
	const INC1 = '20261121T010000Z';
	const INC2 = '20261122T010000Z';
	let dest: string;
	beforeEach(() => {
		dest = makeDest();
	});
	afterEach(() => removeDest(dest));

	function chain() {
		return makeBackups(dest, [
			{ vm: 'web01', id: FULL },
			{ vm: 'web01', id: INC1, kind: 'incremental', parent: FULL },
			{ vm: 'web01', id: INC2, kind: 'incremental', parent: INC1 },
		]);
	}

	test('a trusted parent whose image is gone fails as before', async () => {
		const [full, , inc2] = chain();
		expect(await verify(inc2.path)).toMatchObject({ status: 'valid' });
		onHost(`rm -- ${q(`${full.path}/vda.qcow2`)}`);

		const result = await verify(inc2.path);

		expect(result.status).toBe('invalid');
		expect(result.parents).toMatchObject([
			{ id: INC1, status: 'invalid', trusted: true },
			{ id: FULL, status: 'invalid', trusted: false, detail: 'vda: image file is missing' },
		]);
	});

	test('a record that does not vouch for the images the manifest names is not trusted: dated before the manifest, or for other images', async () => {
		const [full, inc1, inc2] = chain();
		expect(await verify(inc2.path)).toMatchObject({ status: 'valid' });
		flipByte(`${full.path}/vda.qcow2`, 200_000);
		const record = JSON.parse(readHostFile(`${full.path}/${VERIFICATION_FILE}`)) as { verifiedAt: string; disks: { expectedSha256: string; actualSha256: string }[] };
		const early = { ...record, verifiedAt: new Date(Date.parse(full.manifest.finishedAt) - 1000).toISOString() };
		onHost(`printf '%s' ${q(JSON.stringify(early))} > ${q(`${full.path}/${VERIFICATION_FILE}`)}`);

		const dated = await verify(inc1.path);
		expect(dated).toMatchObject({ status: 'invalid', parents: [{ id: FULL, status: 'invalid', trusted: false }] });

		const other = { ...record, disks: record.disks.map((disk) => ({ ...disk, expectedSha256: 'c'.repeat(64), actualSha256: 'c'.repeat(64) })) };
		onHost(`printf '%s' ${q(JSON.stringify(other))} > ${q(`${full.path}/${VERIFICATION_FILE}`)}`);
		expect(await verify(inc1.path)).toMatchObject({ status: 'invalid', parents: [{ id: FULL, status: 'invalid', trusted: false }] });
	});

	test('the node trusts by default; Re-Hash Whole Chain re-reads the parents', async () => {
		const [full, , inc2] = chain();
		expect(await verify(inc2.path)).toMatchObject({ status: 'valid' });
		flipByte(`${full.path}/vda.qcow2`, 200_000);

		const [trusting] = await runNode(inc2.path, {});
		expect(trusting.map((item) => item.json)).toMatchObject([{ status: 'valid', parents: [{ id: INC1, trusted: true }, { id: FULL, trusted: true }] }]);

		const [valid, invalid] = await runNode(inc2.path, { rehashChain: true });
		expect(valid).toEqual([]);
		expect(invalid.map((item) => item.json)).toMatchObject([{ status: 'invalid', parents: [{ id: INC1, trusted: false }, { id: FULL, status: 'invalid', trusted: false }] }]);
	});
});
