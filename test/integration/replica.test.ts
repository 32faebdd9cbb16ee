/**
 * replicateBackups against the lab: backups on a source destination copied to a second destination
 * through a SECOND SSH connection to the lab's replica host (its second sshd, own host key; another
 * account, with sudo), which shares the machine's files, so the test can look at both sides,
 * verified there, listed and verified by the catalog code on the replica, chains intact; a rerun
 * skips; refusals and failures leave nothing on the replica.
 */
import { BackupVerifier, listCatalog } from '../../lib/catalog';
import { replicateBackups, type ReplicaProgress } from '../../lib/export/replica';
import { resolveBackups } from '../../lib/export/source';
import { SshConnection } from '../../lib/ssh';
import { vmDirName } from '../../lib/store/layout';
import { acquireVmLock } from '../../lib/store/lock';
import { flipByte, makeBackups, makeDest, makeUnfinished, onHost, removeDest, tree, type MadeBackup } from '../support/backupFixtures';
import { loadLab, shq } from '../support/lab';
import { labTarget, replicaTarget } from '../support/targets';

jest.setTimeout(180_000);

const VM = `web 'r' $(x)`;
const F = '20261120T010000Z';
const I1 = '20261121T010000Z';
const I2 = '20261122T010000Z';

async function eventually(check: () => boolean, what: string): Promise<void> {
	for (let attempt = 0; attempt < 100; attempt++) {
		if (check()) return;
		await new Promise((resolve) => setTimeout(resolve, 200));
	}
	throw new Error(`never happened: ${what}`);
}

describe('replicateBackups', () => {
	let source: SshConnection;
	let replica: SshConnection;
	let src: string;
	let dst: string;
	let made: MadeBackup[];

	beforeAll(async () => {
		source = await SshConnection.connect(labTarget());
		replica = await SshConnection.connect(replicaTarget('sudo'));
	});
	afterAll(() => {
		source.close();
		replica.close();
	});
	beforeEach(() => {
		src = makeDest('source');
		dst = makeDest('replica');
		made = makeBackups(src, [
			{ vm: VM, id: F, disks: [{ target: 'vda', pattern: 0x11, virtualMiB: 16, dataKiB: 1024 }, { target: 'vdb', pattern: 0x12 }] },
			{ vm: VM, id: I1, kind: 'incremental', parent: F, disks: [{ target: 'vda', pattern: 0x21, virtualMiB: 16, dataKiB: 512 }, { target: 'vdb', pattern: 0x22 }] },
			{ vm: VM, id: I2, kind: 'incremental', parent: I1, disks: [{ target: 'vda', pattern: 0x31, virtualMiB: 16, dataKiB: 256 }, { target: 'vdb', pattern: 0x32 }] },
		]);
	});
	afterEach(() => {
		removeDest(src);
		removeDest(dst);
	});

	const replicaPath = (id: string) => `${dst}/${vmDirName(VM)}/${id}`;

	it('talks to the replica host, not the source host', () => {
		const lab = loadLab();
		expect(replica.hostKeyFingerprint).toBe(lab.replicaHost?.hostKeyFingerprint ?? lab.hostKeyFingerprint);
	});

	it('copies a full and two incrementals (given newest first); the replica lists, verifies and reads the chain like the source; a rerun skips all', async () => {
		const items = await resolveBackups(source, [made[2].path, made[1].path, made[0].path]);
		const progress: ReplicaProgress[] = [];
		const results = await replicateBackups(source, replica, items, { dest: dst, onProgress: (p) => progress.push(p) });
		expect(results.map((r) => [r.id, r.status])).toEqual([
			[I2, 'replicated'],
			[I1, 'replicated'],
			[F, 'replicated'],
		]);
		expect(results.every((r) => r.bytes > 0 && r.path === replicaPath(r.id))).toBe(true);
		expect(progress.some((p) => p.file === 'vda.qcow2' && p.bytes === p.totalBytes)).toBe(true);

		const catalog = await listCatalog(replica, dst);
		expect(catalog.backups.map((b) => b.id)).toEqual([I2, I1, F]);
		expect(catalog.incomplete).toEqual([]);
		expect(catalog.backups.map((b) => b.manifest)).toEqual([made[2].manifest, made[1].manifest, made[0].manifest]);
		const verifier = new BackupVerifier(replica);
		for (const id of [F, I1, I2]) {
			const verdict = await verifier.verify(replicaPath(id));
			expect([id, verdict.status, verdict.problems]).toEqual([id, 'valid', []]);
		}
		// The relative backing files resolve on the replica: the top of the chain reads as on the source.
		for (const disk of ['vda', 'vdb']) {
			onHost(`qemu-img compare -U ${shq(`${made[2].path}/${disk}.qcow2`)} ${shq(`${replicaPath(I2)}/${disk}.qcow2`)}`);
			expect(onHost(`qemu-img info -U --output=json ${shq(`${replicaPath(I2)}/${disk}.qcow2`)}`)).toContain(`"backing-filename": "../${I1}/${disk}.qcow2"`);
		}
		expect(tree(`${dst}/${vmDirName(VM)}`).filter((p) => /partial|lvb-incomplete/.test(p))).toEqual([]);

		const again = await replicateBackups(source, replica, await resolveBackups(source, [made[0].path, made[1].path, made[2].path]), { dest: dst });
		expect(again.map((r) => [r.id, r.status, r.bytes])).toEqual([
			[F, 'skipped', 0],
			[I1, 'skipped', 0],
			[I2, 'skipped', 0],
		]);
		expect(again[0].reason).toMatch(/already on the replica/);
	});

	it('refuses an incremental whose parent is neither on the replica nor in the run; takes it once the parent is there', async () => {
		const lone = await replicateBackups(source, replica, await resolveBackups(source, [made[1].path]), { dest: dst });
		expect(lone.map((r) => r.status)).toEqual(['refused']);
		expect(lone[0].reason).toMatch(/parent 20261120T010000Z is neither on the replica nor in this run/);
		expect(onHost(`ls -A ${shq(dst)}`).trim()).toBe('');

		await replicateBackups(source, replica, await resolveBackups(source, [made[0].path]), { dest: dst });
		const next = await replicateBackups(source, replica, await resolveBackups(source, [made[1].path]), { dest: dst });
		expect(next.map((r) => r.status)).toEqual(['replicated']);
		expect(next[0].reason).toMatch(/which is on the replica/);
	});

	it('a corrupted source image fails that backup and its children; nothing of theirs is left on the replica', async () => {
		const items = await resolveBackups(source, made.map((m) => m.path));
		flipByte(`${made[1].path}/vda.qcow2`, 600_000);
		const results = await replicateBackups(source, replica, items, { dest: dst });
		expect(results.map((r) => r.status)).toEqual(['replicated', 'failed', 'refused']);
		expect(results[1].reason).toMatch(/sha256/);
		expect(results[2].reason).toMatch(/parent 20261121T010000Z could not be replicated/);
		expect(tree(`${dst}/${vmDirName(VM)}`).filter((p) => !p.startsWith(`./${F}`))).toEqual(['./.lvb.lock']);
		const catalog = await listCatalog(replica, dst);
		expect([catalog.backups.map((b) => b.id), catalog.incomplete]).toEqual([[F], []]);
	});

	it('a symbolic link planted at a backup folder or the VM folder on the replica is refused and never followed', async () => {
		const elsewhere = makeDest('elsewhere');
		try {
			const vmDir = `${dst}/${vmDirName(VM)}`;
			onHost(`mkdir -p ${shq(vmDir)} && ln -s ${shq(elsewhere)} ${shq(`${vmDir}/${F}`)}`);
			const results = await replicateBackups(source, replica, await resolveBackups(source, [made[0].path, made[1].path]), { dest: dst });
			expect(results.map((r) => r.status)).toEqual(['refused', 'refused']);
			expect(results[0].reason).toMatch(/symbolic link/);
			expect(onHost(`ls -A ${shq(elsewhere)}`).trim()).toBe('');

			onHost(`rm -rf ${shq(vmDir)} && ln -s ${shq(elsewhere)} ${shq(vmDir)}`);
			const linked = await replicateBackups(source, replica, await resolveBackups(source, [made[0].path]), { dest: dst });
			expect(linked.map((r) => r.status)).toEqual(['failed']);
			expect(linked[0].reason).toMatch(/symbolic link/);
			expect(onHost(`ls -A ${shq(elsewhere)}`).trim()).toBe('');
		} finally {
			removeDest(elsewhere);
		}
	});

	it('writes only under the replica VM folder\'s lock: a VM locked there (a backup or another replica running) fails, nothing written', async () => {
		const holder = await SshConnection.connect(replicaTarget('root'));
		try {
			const lock = await acquireVmLock(holder, `${dst}/${vmDirName(VM)}`, 'jest: another job', VM);
			const results = await replicateBackups(source, replica, await resolveBackups(source, [made[0].path]), { dest: dst });
			expect(results.map((r) => r.status)).toEqual(['failed']);
			expect(results[0].reason).toMatch(/is locked by jest: another job/);
			expect(tree(dst)).toEqual([`./${vmDirName(VM)}`, `./${vmDirName(VM)}/.lvb.lock`]);
			await lock.release();
		} finally {
			holder.close();
		}
	});

	it('an unfinished folder a cut run left is replaced by the next run; a foreign folder at the id is left alone', async () => {
		makeUnfinished(dst, VM, F);
		const results = await replicateBackups(source, replica, await resolveBackups(source, [made[0].path]), { dest: dst });
		expect(results.map((r) => r.status)).toEqual(['replicated']);
		expect((await new BackupVerifier(replica).verify(replicaPath(F))).valid).toBe(true);

		onHost(`mkdir -p ${shq(replicaPath(I1))} && echo mine > ${shq(`${replicaPath(I1)}/notes.txt`)}`);
		const foreign = await replicateBackups(source, replica, await resolveBackups(source, [made[1].path]), { dest: dst });
		expect(foreign.map((r) => r.status)).toEqual(['refused']);
		expect(onHost(`cat ${shq(`${replicaPath(I1)}/notes.txt`)}`)).toBe('mine\n');
	});

	it('the replica connection cut mid-write: its receiver removes the temp file; the next run removes the folder and completes', async () => {
		const big = makeBackups(src, [{ vm: 'big', id: F, disks: [{ target: 'vda', pattern: 0x44, virtualMiB: 512, dataKiB: 400 * 1024 }] }])[0];
		const items = await resolveBackups(source, [big.path]);
		const cut = await SshConnection.connect(replicaTarget('sudo'));
		const folder = `${dst}/big/${F}`;
		const run = replicateBackups(source, cut, items, {
			dest: dst,
			onProgress: (p) => {
				if (p.bytes >= 32 * 1024 * 1024) cut.close();
			},
		}).then(
			(results) => results,
			(error: Error) => error,
		);
		const outcome = await run;
		expect(outcome instanceof Error ? outcome.message : outcome.map((r) => `${r.status}: ${r.reason}`).join()).toMatch(/lost|closed|failed/i);
		await eventually(() => !onHost(`ls -A ${shq(folder)}`).includes('.partial'), 'the temp file is removed on the replica');
		expect(onHost(`ls -A ${shq(folder)}`).split('\n').filter(Boolean)).toEqual(['.lvb-incomplete']);
		// Never listed as a backup; List and Prune see our unfinished folder (Prune removes it once stale).
		const listed = await listCatalog(replica, dst);
		expect([listed.backups, listed.incomplete.map((folder) => [folder.id, folder.writerLeftovers])]).toEqual([[], [[F, true]]]);

		const retry = await replicateBackups(source, replica, items, { dest: dst });
		expect(retry.map((r) => r.status)).toEqual(['replicated']);
		expect((await new BackupVerifier(replica).verify(folder)).valid).toBe(true);
	});
});
