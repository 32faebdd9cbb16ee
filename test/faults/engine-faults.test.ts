/**
 * Engine-level faults (issue 11), driven through lib/ against the lab, no n8n: the SSH connection
 * cut or silently lost mid-copy, the destination full, the VM destroyed and libvirtd restarted
 * mid-job, and cuts in a consolidating prune, an export, a restore and Make Permanent. After each:
 * the next run succeeds, nothing half-made is listed or left, the VM is clean, good backups still
 * verify and foreign files are still there (test/faults/support.ts measures it and records the
 * ledger entry).
 */
import { backupVm, type BackupRequest, type BackupResult, type Progress } from '../../lib/backup';
import { quoteArg as q } from '../../lib/shell';
import { vmDirName } from '../../lib/store/layout';
import { connectTracked, cutConnection, dropConnection, hostWorkEnded } from '../support/connectionFaults';
import { loadLab } from '../support/lab';
import { labBackup } from '../support/labBackup';
import { createTestVm, host, testDestination, type TestVm } from '../support/testVm';
import { leftovers, loopFilesystem, plantForeign, restartLibvirtd, settle, type ForeignFile } from './support';

jest.setTimeout(240_000);

const lab = loadLab();

function request(vm: string, dest: string, overrides: Partial<BackupRequest> = {}): BackupRequest {
	return { uri: lab.systemUri, vm, dest, mode: 'auto', compression: 'none', quiesce: 'off', holder: `jest ${process.pid}`, host: 'lab', ...overrides };
}

/** The outcome of a run that may fail, so a failed next run is still measured and recorded. */
async function attempt<T>(run: () => Promise<T>): Promise<{ value?: T; error?: unknown }> {
	try {
		return { value: await run() };
	} catch (error) {
		return { error };
	}
}

/** A disk big enough that a copy of it is still running when the fault is injected. */
const bigDisk = (pattern: number) => ({ target: 'vda', format: 'qcow2' as const, virtualMiB: 1024, writes: [{ pattern, offsetMiB: 0, lengthMiB: 320 }] });

/** A backup on a connection that `inject` breaks at the first copy progress (fails the test if it never came). */
async function backupFaultedMidCopy(vm: TestVm, dest: string, inject: (port: number) => void, overrides: Partial<BackupRequest> = {}): Promise<{ value?: BackupResult; error?: unknown }> {
	const { ssh, port } = await connectTracked();
	let injected = false;
	try {
		const onProgress = (progress: Progress) => {
			if (progress.phase === 'copy' && !injected) {
				injected = true;
				inject(port);
			}
		};
		const outcome = await attempt(() => backupVm(ssh, request(vm.name, dest, overrides), { onProgress }));
		expect([injected, outcome.error]).toEqual([true, outcome.error]);
		return outcome;
	} finally {
		ssh.close();
	}
}

/** The error of a backup that `inject` breaks mid-copy (fails the test if the backup succeeded). */
async function backupBrokenMidCopy(vm: TestVm, dest: string, inject: (port: number) => void, overrides: Partial<BackupRequest> = {}): Promise<unknown> {
	const outcome = await backupFaultedMidCopy(vm, dest, inject, overrides);
	expect(outcome.value).toBeUndefined();
	return outcome.error;
}

interface Setup {
	vm: TestVm;
	dest: string;
	foreign: ForeignFile[];
	good: BackupResult[];
	cleanup(): void;
}

/** A VM, a destination with one good backup of it, and a foreign file in the destination and in the VM's folder. */
async function setUp(purpose: string, disks: Parameters<typeof createTestVm>[1], state: 'running' | 'shutoff' = 'running'): Promise<Setup> {
	const vm = createTestVm(purpose, disks, state);
	const destination = testDestination(purpose);
	try {
		const first = await labBackup(vm.name, destination.dest);
		const foreign = [plantForeign(destination.dest), plantForeign(`${destination.dest}/${vmDirName(vm.name)}`)];
		return { vm, dest: destination.dest, foreign, good: [first], cleanup: () => (vm.destroy(), destination.cleanup()) };
	} catch (error) {
		vm.destroy();
		destination.cleanup();
		throw error;
	}
}

describe.each([
	['running', 'running' as const],
	['shut-off', 'shutoff' as const],
])('backup (%s VM): SSH connection cut mid-copy', (label, state) => {
	let setup: Setup | undefined;
	afterAll(() => setup?.cleanup());

	test('the backup fails with the connection lost; the next backup succeeds; nothing half-made is listed or left', async () => {
		setup = await setUp(`cut-${state}`, [bigDisk(0x5a)], state);
		const { vm, dest } = setup;
		const error = await backupBrokenMidCopy(vm, dest, (port) => cutConnection(port), { mode: 'full' });
		expect(error).toMatchObject({ code: 'SSH_CONNECTION_LOST', message: expect.stringMatching(/^SSH connection to root@127\.0\.0\.1:\d+ was lost/) });
		await hostWorkEnded(dest);

		const next = await attempt(() => labBackup(vm.name, dest));
		if (next.value) setup.good.push(next.value);
		expect(next.error).toBeUndefined();
		await settle({ name: `backup (${label} VM): SSH connection cut mid-copy`, dest, vms: [vm], good: setup.good.map((b) => b.path), foreign: setup.foreign, nextRunSucceeded: next.error === undefined });
		expect(leftovers(dest)).toEqual([]);
	});
});

describe('backup: silent network loss mid-copy (packets dropped both ways, nothing closed)', () => {
	let setup: Setup | undefined;
	let drop: { undo(): void } | undefined;
	afterAll(() => {
		drop?.undo();
		setup?.cleanup();
	});

	test('the error arrives in bounded time (client keepalive, host watchdog); after the link is back the next backup succeeds', async () => {
		setup = await setUp('netloss', [bigDisk(0x6a)]);
		const { vm, dest } = setup;
		let timer: NodeJS.Timeout | undefined;
		const bounded = new Promise((resolve) => (timer = setTimeout(() => resolve('no error within 150 s'), 150_000)));
		const error = await Promise.race([backupBrokenMidCopy(vm, dest, (port) => (drop = dropConnection(port)), { mode: 'full' }), bounded]).finally(() => clearTimeout(timer));
		expect(error).toMatchObject({ code: 'SSH_CONNECTION_LOST', message: expect.stringMatching(/^SSH connection to root@127\.0\.0\.1:\d+ was lost/) });
		// The host side ends on its own (watchdog: no heartbeat for 30 s), before the link is back.
		await hostWorkEnded(dest, 150_000);
		drop?.undo();
		drop = undefined;

		const next = await attempt(() => labBackup(vm.name, dest));
		if (next.value) setup.good.push(next.value);
		expect(next.error).toBeUndefined();
		await settle({ name: 'backup: silent network loss mid-copy', dest, vms: [vm], good: setup.good.map((b) => b.path), foreign: setup.foreign, nextRunSucceeded: next.error === undefined });
		expect(leftovers(dest)).toEqual([]);
	});
});

describe('backup: the destination fills up mid-write', () => {
	let vm: TestVm | undefined;
	let mount: { dir: string; remove(): void } | undefined;
	afterAll(() => {
		vm?.destroy();
		mount?.remove();
	});

	test('"No space left on device", nothing listed; after space is freed the next backup succeeds and the earlier backup is intact', async () => {
		// A small filesystem of its own: the VM's new data fits the free space the backup checks first, then a ballast takes it.
		mount = loopFilesystem('full', 256);
		const dest = `${mount.dir}/dest`;
		host(`mkdir -p ${q(dest)}`);
		vm = createTestVm('full', [{ target: 'vda', format: 'qcow2', virtualMiB: 512, writes: [{ pattern: 0x7a, offsetMiB: 0, lengthMiB: 4 }] }]);
		const good = [await labBackup(vm.name, dest)];
		const foreign = [plantForeign(dest), plantForeign(`${dest}/${vmDirName(vm.name)}`)];
		host(vm.guestWriteCommand('vda', 0x7b, 8, 160));
		const ballast = `${mount.dir}/ballast`;
		const error = await backupBrokenMidCopy(vm, dest, () => host(`fallocate -l $(( $(df -B1 --output=avail ${q(mount!.dir)} | tail -1) - 65536 )) ${q(ballast)}`), { mode: 'incremental' });
		expect(String((error as Error).message)).toMatch(/No space left on device/);
		await hostWorkEnded(dest);
		host(`rm -f ${q(ballast)}`);

		const next = await attempt(() => labBackup(vm!.name, dest));
		if (next.value) good.push(next.value);
		expect(next.error).toBeUndefined();
		await settle({ name: 'backup: destination full mid-write', dest, vms: [vm], good: good.map((b) => b.path), foreign, nextRunSucceeded: next.error === undefined });
		expect(leftovers(dest)).toEqual([]);
	});
});

describe('backup (running VM): the VM destroyed mid-job', () => {
	let setup: Setup | undefined;
	afterAll(() => setup?.cleanup());

	test('the backup fails saying the VM is not running; started again, the next backup succeeds', async () => {
		setup = await setUp('destroyed', [bigDisk(0x8a)]);
		const { vm, dest } = setup;
		const error = await backupBrokenMidCopy(vm, dest, () => host(`virsh -q destroy ${q(vm.name)} >/dev/null`), { mode: 'full' });
		expect(String((error as Error).message)).toMatch(/not running|shut ?off|terminated|exited/i);
		await hostWorkEnded(dest);
		host(`virsh -q start ${q(vm.name)} >/dev/null`);

		const next = await attempt(() => labBackup(vm.name, dest));
		if (next.value) setup.good.push(next.value);
		expect(next.error).toBeUndefined();
		await settle({ name: 'backup (running VM): VM destroyed mid-job', dest, vms: [vm], good: setup.good.map((b) => b.path), foreign: setup.foreign, nextRunSucceeded: next.error === undefined });
		expect(leftovers(dest)).toEqual([]);
	});
});

describe('backup (running VM): libvirtd restarted mid-job', () => {
	let setup: Setup | undefined;
	afterAll(() => setup?.cleanup());

	test('the backup either rides it out (libvirtd reconnects to QEMU) or fails; the VM is not left in a backup job; the next backup succeeds', async () => {
		setup = await setUp('libvirtd', [bigDisk(0x9a)]);
		const { vm, dest } = setup;
		const faulted = await backupFaultedMidCopy(vm, dest, restartLibvirtd, { mode: 'full' });
		// Either is right; what is measured below is that nothing is half-made, left or lost.
		if (faulted.value) setup.good.push(faulted.value);
		else expect(faulted.error).toBeInstanceOf(Error);
		await hostWorkEnded(dest);

		const next = await attempt(() => labBackup(vm.name, dest));
		if (next.value) setup.good.push(next.value);
		expect(next.error).toBeUndefined();
		await settle({ name: 'backup (running VM): libvirtd restarted mid-job', dest, vms: [vm], good: setup.good.map((b) => b.path), foreign: setup.foreign, nextRunSucceeded: next.error === undefined });
		expect(leftovers(dest)).toEqual([]);
	});
});
