/**
 * The destination is not trusted: someone who can write `<dest>` (a share, a storage admin) plants
 * symbolic links, FIFOs and odd files where our writer and readers look. Nothing of ours may follow
 * them, hang on them, or show what they point at; the canary files outside the destination stay
 * byte for byte as they were. Also: the space check counts what `qemu-img convert` will write, and a
 * failed backup leaves no VM folder it created.
 */
import { backupVm, type BackupRequest, type BackupResult } from '../../lib/backup';
import { pruneBackups } from '../../lib/catalog';
import { BackupVerifier } from '../../lib/catalog';
import { isLibvirtBackupError } from '../../lib/errors';
import { quoteArg as q } from '../../lib/shell';
import { withSsh } from '../../lib/ssh';
import { exists, makeBackups, makeDest, onHost, removeDest } from '../support/backupFixtures';
import { loadLab } from '../support/lab';
import { labTarget } from '../support/targets';
import { createTestVm, type TestVm } from '../support/testVm';

jest.setTimeout(60_000);

const lab = loadLab();
const CANARY = 'canary: root-only secret 5f3a9c\n';

function request(vm: string, dest: string, overrides: Partial<BackupRequest> = {}): BackupRequest {
	return { uri: lab.systemUri, vm, dest, mode: 'auto', compression: 'none', quiesce: 'auto', holder: `jest ${process.pid}`, host: 'lab', ...overrides };
}

function backup(vm: string, dest: string, overrides: Partial<BackupRequest> = {}): Promise<BackupResult> {
	return withSsh(labTarget(), (ssh) => backupVm(ssh, request(vm, dest, overrides)));
}

/** A file beside the destination (outside it), the target of the planted links. */
function canary(dest: string): string {
	const file = `${dest.slice(0, dest.lastIndexOf('/'))}/canary`;
	onHost(`printf '%s' ${q(CANARY)} > ${q(file)}`);
	return file;
}

function content(file: string): string {
	return onHost(`cat -- ${q(file)}`);
}

function errorOf(promise: Promise<unknown>): Promise<Error> {
	return promise.then(
		() => {
			throw new Error('expected a failure');
		},
		(error: Error) => error,
	);
}

describe('planted links and FIFOs in the destination', () => {
	let vm: TestVm;
	let dest: string;
	beforeAll(() => {
		vm = createTestVm('hostile', [{ target: 'vda', format: 'qcow2', virtualMiB: 16, writes: [{ pattern: 0x5a, offsetMiB: 0, lengthMiB: 1 }] }], 'shutoff');
	});
	afterAll(() => vm.destroy());
	beforeEach(() => {
		dest = makeDest();
	});
	afterEach(() => removeDest(dest));

	test('Prune: a .lvb.lock symlink to a file outside is a clear error naming it; the file is untouched', async () => {
		makeBackups(dest, [1, 2, 3].map((day) => ({ vm: 'web01', id: `2026112${day}T010000Z` })));
		const target = canary(dest);
		onHost(`ln -s ${q(target)} ${q(`${dest}/web01/.lvb.lock`)}`);

		const error = await errorOf(withSsh(labTarget(), (ssh) => pruneBackups(ssh, { dest, policy: { keepLast: 1 }, dryRun: false, now: new Date('2026-11-28T12:00:00Z') })));

		expect(error.message).toContain(`${dest}/web01/.lvb.lock`);
		expect(error.message).toMatch(/symbolic link/);
		expect(content(target)).toBe(CANARY);
		expect(onHost(`readlink -- ${q(`${dest}/web01/.lvb.lock`)}`).trim()).toBe(target);
		expect(exists(`${dest}/web01/20261121T010000Z/manifest.json`)).toBe(true);
	});

	test('Backup: a .lvb.lock symlink is a clear error naming it; the file is untouched', async () => {
		const target = canary(dest);
		onHost(`mkdir -p ${q(`${dest}/${vm.name}`)} && ln -s ${q(target)} ${q(`${dest}/${vm.name}/.lvb.lock`)}`);

		const error = await errorOf(backup(vm.name, dest));

		expect(error.message).toContain(`${dest}/${vm.name}/.lvb.lock`);
		expect(error.message).toMatch(/symbolic link/);
		expect(content(target)).toBe(CANARY);
	});

	test('Backup: a .lvb.lock hard-linked to a file elsewhere is refused, and that file is untouched', async () => {
		const target = canary(dest);
		onHost(`mkdir -p ${q(`${dest}/${vm.name}`)} && ln -- ${q(target)} ${q(`${dest}/${vm.name}/.lvb.lock`)}`);

		const error = await errorOf(backup(vm.name, dest));

		expect(error.message).toContain(`${dest}/${vm.name}/.lvb.lock`);
		expect(error.message).toMatch(/hard links/);
		expect(content(target)).toBe(CANARY);
	});

	test('Backup: a FIFO as .lvb.lock is a clear error, not a hang', async () => {
		onHost(`mkdir -p ${q(`${dest}/${vm.name}`)} && mkfifo ${q(`${dest}/${vm.name}/.lvb.lock`)}`);

		const error = await errorOf(backup(vm.name, dest));

		expect(error.message).toContain(`${dest}/${vm.name}/.lvb.lock`);
		expect(error.message).toMatch(/not a regular file/);
	});

	test('Verify: a verification.json.partial symlink is not written through; the result says it was not recorded', async () => {
		const [made] = makeBackups(dest, [{ vm: 'web01', id: '20261120T010000Z' }]);
		const target = canary(dest);
		onHost(`ln -s ${q(target)} ${q(`${made.path}/verification.json.partial`)}`);

		const result = await withSsh(labTarget(), (ssh) => new BackupVerifier(ssh).verify(made.path));

		expect(content(target)).toBe(CANARY);
		expect(result.problems.join('\n')).toMatch(/could not be recorded/);
		expect(exists(`${made.path}/verification.json`)).toBe(false);
	});

	test('Backup: a newest manifest.json that is a symlink is ignored, and what it points at shows up nowhere', async () => {
		const target = canary(dest);
		const planted = `${dest}/${vm.name}/29991231T000000Z`;
		onHost(`mkdir -p ${q(planted)} && ln -s ${q(target)} ${q(`${planted}/manifest.json`)}`);

		const result = await backup(vm.name, dest);

		expect(result).toMatchObject({ kind: 'full', method: 'offline-convert' });
		expect(JSON.stringify(result)).not.toContain('5f3a9c');
		expect(content(target)).toBe(CANARY);
	});

	test('Backup: a FIFO as the newest manifest.json does not hang the inspect step; the folder is ignored', async () => {
		const planted = `${dest}/${vm.name}/29991231T000000Z`;
		onHost(`mkdir -p ${q(planted)} && mkfifo ${q(`${planted}/manifest.json`)}`);

		const result = await backup(vm.name, dest);

		expect(result).toMatchObject({ kind: 'full' });
	});

	test('Backup: a .lvb-pending.json symlink is refused by name, not read', async () => {
		const target = canary(dest);
		onHost(`mkdir -p ${q(`${dest}/${vm.name}`)} && ln -s ${q(target)} ${q(`${dest}/${vm.name}/.lvb-pending.json`)}`);

		const error = await errorOf(backup(vm.name, dest));

		expect(error.message).toContain(`${dest}/${vm.name}/.lvb-pending.json`);
		expect(error.message).not.toContain('5f3a9c');
		expect(content(target)).toBe(CANARY);
	});

	test('a failed backup removes the VM folder it created, lock file included', async () => {
		const error = await errorOf(backup(vm.name, dest, { disks: ['vdz'] }));

		expect(isLibvirtBackupError(error, 'INVALID_INPUT')).toBe(true);
		expect(onHost(`ls -A -- ${q(dest)}`).trim()).toBe('');
	});

	test('a failed backup keeps a VM folder that existed before, and whatever is in it', async () => {
		onHost(`mkdir -p ${q(`${dest}/${vm.name}`)} && echo notes > ${q(`${dest}/${vm.name}/notes.txt`)}`);

		await errorOf(backup(vm.name, dest, { disks: ['vdz'] }));

		expect(onHost(`cat -- ${q(`${dest}/${vm.name}/notes.txt`)}`)).toBe('notes\n');
	});
});

describe('space check for a compressed qcow2 source', () => {
	let vm: TestVm;
	let dest: string;
	beforeAll(() => {
		// 60 MiB of one byte value: a few hundred KiB once compressed, 60 MiB again when converted.
		vm = createTestVm('compressed', [{ target: 'vda', format: 'qcow2', virtualMiB: 100, writes: [{ pattern: 0x11, offsetMiB: 0, lengthMiB: 60 }] }], 'shutoff');
		const disk = vm.disks[0].path;
		vm.host(`qemu-img convert -c -O qcow2 ${q(disk)} ${q(`${disk}.c`)} && mv -- ${q(`${disk}.c`)} ${q(disk)}`);
		dest = makeDest();
		onHost(`mount -t tmpfs -o size=40M lvb-small ${q(dest)}`);
	});
	afterAll(() => {
		onHost(`umount ${q(dest)}`);
		removeDest(dest);
		vm.destroy();
	});

	test('refuses before writing: the estimate is what convert writes, not the compressed file size', async () => {
		expect(Number(onHost(`stat -c %s -- ${q(vm.disks[0].path)}`))).toBeLessThan(4 << 20);

		const error = await errorOf(backup(vm.name, dest));

		expect(error.message).toMatch(new RegExp(`^Not enough space on ${dest}: need (6\\d|7\\d)\\.\\d MiB, \\d+\\.\\d MiB free$`));
		expect(isLibvirtBackupError(error, 'NO_SPACE')).toBe(true);
		expect(onHost(`ls -A -- ${q(dest)}`).trim()).toBe('');
	});
});
