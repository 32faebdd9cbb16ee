/**
 * Consolidation in Prune on the lab (issue 8): a real chain (full + 3 incrementals of a running
 * VM) is closed by rebuilding the oldest kept incremental into a standalone full; the data of
 * every kept backup is unchanged; a crash at each step leaves the old chain or the new full; a
 * chain image that does not match its manifest is never consolidated.
 */
import type { BackupResult } from '../../../lib/backup';
import { BackupVerifier, buildConsolidation, pruneBackups, readCatalog, type CatalogBackup, type PruneResult } from '../../../lib/catalog';
import { quoteArg as q } from '../../../lib/shell';
import { withSsh } from '../../../lib/ssh';
import { CONSOLIDATION_JOURNAL, CONSOLIDATION_FORMAT, serializeJournal, vmDirName } from '../../../lib/store';
import { labTarget } from '../../support/targets';
import { labBackup as backup } from '../../support/labBackup';
import { createTestVm, host, testDestination, type TestVm } from '../../support/testVm';

jest.setTimeout(300_000);

function prune(dest: string, dryRun: boolean): Promise<PruneResult> {
	return withSsh(labTarget(), (ssh) => pruneBackups(ssh, { dest, policy: { keepLast: 2 }, dryRun, consolidate: true }));
}

async function catalogOf(dest: string, vm: TestVm): Promise<CatalogBackup[]> {
	return (await withSsh(labTarget(), (ssh) => readCatalog(ssh, dest, [vmDirName(vm.name)]))).backups;
}

const ls = (dir: string) => host(`ls -A ${q(dir)}`).split('\n').filter(Boolean).sort();
const sha256 = (file: string) => host(`sha256sum ${q(file)}`).split(' ')[0];
const backing = (file: string) => /"backing-filename"/.test(host(`qemu-img info -U -f qcow2 --output=json ${q(file)}`));

describe('consolidation of a chain whose full the policy drops', () => {
	let vm: TestVm;
	let destination: { dest: string; cleanup(): void };
	let chain: BackupResult[];
	/** Flat copies of what each backup restores to, taken before anything was consolidated. */
	let flat: string;

	beforeEach(async () => {
		vm = createTestVm('consol', [{ target: 'vda', format: 'qcow2', virtualMiB: 64, writes: [{ pattern: 0x11, offsetMiB: 0, lengthMiB: 4 }] }]);
		destination = testDestination('consol');
		chain = [await backup(vm.name, destination.dest)];
		for (const [pattern, offset] of [[0x22, 8], [0x33, 16], [0x44, 0]]) {
			vm.guestWrite('vda', pattern, offset, 2);
			chain.push(await backup(vm.name, destination.dest));
		}
		expect(chain.map((b) => b.kind)).toEqual(['full', 'incremental', 'incremental', 'incremental']);
		flat = host(`mktemp -d /var/tmp/lvb-consol.XXXXXX`).trim();
		for (const b of chain.slice(2)) host(`qemu-img convert -O raw ${q(`${b.path}/vda.qcow2`)} ${q(`${flat}/${b.id}.raw`)}`);
	});
	afterEach(() => {
		vm.destroy();
		destination.cleanup();
		host(`rm -rf -- ${q(flat)}`);
	});

	const [full, inc1, inc2, inc3] = [0, 1, 2, 3];
	const sameData = (b: BackupResult) => expect(host(`qemu-img compare -f raw ${q(`${flat}/${b.id}.raw`)} ${q(`${b.path}/vda.qcow2`)}`)).toContain('Images are identical');

	test('a dry run shows consolidate and changes nothing; the real run rebuilds, prunes the chain below, and the data is the same', async () => {
		const vmDir = `${destination.dest}/${vmDirName(vm.name)}`;
		const before = host(`cd ${q(vmDir)} && find . -type f -exec sha256sum {} + | sort`);
		const dry = await prune(destination.dest, true);
		expect(dry.items.map((item) => [item.id, item.action])).toEqual([
			[chain[inc3].id, 'keep'],
			[chain[inc2].id, 'consolidate'],
			[chain[inc1].id, 'prune'],
			[chain[full].id, 'prune'],
		]);
		expect(dry.consolidated).toBe(1);
		expect(host(`cd ${q(vmDir)} && find . -type f -exec sha256sum {} + | sort`)).toBe(before);

		const result = await prune(destination.dest, false);
		expect(result.items.map((item) => [item.id, item.action, item.error])).toEqual([
			[chain[inc3].id, 'keep', undefined],
			[chain[inc2].id, 'consolidate', undefined],
			[chain[inc1].id, 'prune', undefined],
			[chain[full].id, 'prune', undefined],
		]);
		expect(result.items[1]).toMatchObject({ consolidated: true });
		expect(ls(vmDir)).toEqual(['.lvb.lock', chain[inc2].id, chain[inc3].id].sort());
		const [newest, rebuilt] = await catalogOf(destination.dest, vm);
		expect(rebuilt.manifest).toMatchObject({ kind: 'full', id: chain[inc2].id, consolidated: { from: [chain[inc2].id, chain[inc1].id, chain[full].id] } });
		expect(rebuilt.manifest.parent).toBeUndefined();
		expect(rebuilt.manifest.disks[0].backingFile).toBeUndefined();
		expect(sha256(`${chain[inc2].path}/vda.qcow2`)).toBe(rebuilt.manifest.disks[0].sha256);
		expect(backing(`${chain[inc2].path}/vda.qcow2`)).toBe(false);
		expect(ls(chain[inc2].path)).toEqual(['domain.xml', 'manifest.json', 'vda.qcow2']);
		expect(newest.manifest).toMatchObject({ kind: 'incremental', parent: chain[inc2].id });
		sameData(chain[inc2]);
		sameData(chain[inc3]);

		// The chain goes on from the newest backup, whose checkpoint is untouched.
		vm.guestWrite('vda', 0x55, 30, 1);
		expect(await backup(vm.name, destination.dest)).toMatchObject({ kind: 'incremental', parent: chain[inc3].id });
	});

	test('a crash during the copy (partials, no journal): the old chain is intact and the next Prune starts over', async () => {
		const backups = await catalogOf(destination.dest, vm);
		await withSsh(labTarget(), (ssh) => buildConsolidation(ssh, backups[1], backups.slice(1), { now: new Date() }));
		expect(ls(chain[inc2].path)).toContain('vda.qcow2.lvb-full.partial');
		sameData(chain[inc3]);
		expect((await catalogOf(destination.dest, vm))[1].manifest.kind).toBe('incremental');

		const result = await prune(destination.dest, false);
		expect(result.items.map((item) => [item.action, item.error])).toEqual([
			['keep', undefined],
			['consolidate', undefined],
			['prune', undefined],
			['prune', undefined],
		]);
		expect(ls(chain[inc2].path)).toEqual(['domain.xml', 'manifest.json', 'vda.qcow2']);
		sameData(chain[inc2]);
		sameData(chain[inc3]);
	});

	test('a crash after the journal and the rename (old manifest still there): the next Prune finishes it, then prunes', async () => {
		const backups = await catalogOf(destination.dest, vm);
		const manifest = await withSsh(labTarget(), (ssh) => buildConsolidation(ssh, backups[1], backups.slice(1), { now: new Date() }));
		const journal = serializeJournal({ format: CONSOLIDATION_FORMAT, version: 1, backupId: manifest.id, manifest });
		host(`cd ${q(chain[inc2].path)} && printf '%s' ${q(journal)} > ${CONSOLIDATION_JOURNAL} && mv vda.qcow2.lvb-full.partial vda.qcow2`);
		// The old chain's data is still what every backup restores to.
		sameData(chain[inc2]);
		sameData(chain[inc3]);
		// Verify, even told to delete what fails, neither judges nor touches a folder mid-consolidation
		// (its image is already the new one, its manifest still the old one).
		for (const b of [chain[inc2], chain[inc3]]) {
			const verification = await withSsh(labTarget(), (ssh) => new BackupVerifier(ssh).verify(b.path, { onInvalid: 'delete' }));
			expect(verification).toMatchObject({ status: 'unverifiable', action: 'kept' });
			expect(verification.problems.join('\n')).toContain(`backup ${chain[inc2].id} is in the middle of a consolidation`);
		}
		expect(ls(chain[inc2].path)).toContain(CONSOLIDATION_JOURNAL);

		const result = await prune(destination.dest, false);
		expect(result.items.map((item) => [item.id, item.action, item.error])).toEqual([
			[chain[inc3].id, 'keep', undefined],
			[chain[inc2].id, 'keep', undefined],
			[chain[inc1].id, 'prune', undefined],
			[chain[full].id, 'prune', undefined],
		]);
		expect(ls(chain[inc2].path)).toEqual(['domain.xml', 'manifest.json', 'vda.qcow2']);
		const [, rebuilt] = await catalogOf(destination.dest, vm);
		expect(rebuilt.manifest).toMatchObject({ kind: 'full', consolidated: { from: [chain[inc2].id, chain[inc1].id, chain[full].id] } });
		expect(sha256(`${chain[inc2].path}/vda.qcow2`)).toBe(rebuilt.manifest.disks[0].sha256);
		sameData(chain[inc3]);
	});

	test('a chain image that does not match its manifest is never consolidated: the chain stays whole and nothing is left behind', async () => {
		host(`printf 'X' | dd of=${q(`${chain[full].path}/vda.qcow2`)} bs=1 seek=$((4 * 1024 * 1024)) conv=notrunc status=none`);
		const result = await prune(destination.dest, false);
		expect(result.items.map((item) => item.action)).toEqual(['keep', 'keep', 'keep', 'keep']);
		expect(result.items[1].error).toMatch(new RegExp(`consolidation failed, the chain below it is kept: .*${chain[full].id}/vda.qcow2: sha256 differs from its manifest`));
		expect(ls(chain[inc2].path)).toEqual(['domain.xml', 'manifest.json', 'vda.qcow2']);
		expect((await catalogOf(destination.dest, vm)).map((b) => b.manifest.kind)).toEqual(['incremental', 'incremental', 'incremental', 'full']);
	});

	test('a journal planted as a symbolic link is refused and changes nothing', async () => {
		host(`ln -s /etc/passwd ${q(`${chain[inc2].path}/${CONSOLIDATION_JOURNAL}`)}`);
		const result = await prune(destination.dest, false);
		expect(result.items[1].error).toMatch(/is not a regular file: the interrupted consolidation was left alone/);
		expect(result.items.map((item) => item.action)).toEqual(['keep', 'keep', 'keep', 'keep']);
		expect(host('head -c 5 /etc/passwd')).toBe('root:');
	});
});
