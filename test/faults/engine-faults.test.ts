/**
 * Engine-level faults (issue 11), driven through lib/ against the lab, no n8n: the SSH connection
 * cut or silently lost mid-copy, the destination full, the VM destroyed and libvirtd restarted
 * mid-job, and cuts in a consolidating prune, an export, a restore and Make Permanent. After each:
 * the next run succeeds, nothing half-made is listed or left, the VM is clean, good backups still
 * verify and foreign files are still there (test/faults/support.ts measures it and records the
 * ledger entry).
 */
import { backupVm, type BackupRequest, type BackupResult, type Progress } from '../../lib/backup';
import { vmDirName } from '../../lib/store/layout';
import { connectTracked, cutConnection, hostWorkEnded } from '../support/connectionFaults';
import { loadLab } from '../support/lab';
import { labBackup } from '../support/labBackup';
import { createTestVm, testDestination, type TestVm } from '../support/testVm';
import { leftovers, plantForeign, settle, type ForeignFile } from './support';

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
const bigDisk = (pattern: number) => ({ target: 'vda', format: 'qcow2' as const, virtualMiB: 512, writes: [{ pattern, offsetMiB: 0, lengthMiB: 192 }] });

/**
 * A backup on a connection that `inject` breaks at the first copy progress; resolves with the
 * error the backup failed with (fails the test if it succeeded).
 */
async function backupBrokenMidCopy(vm: TestVm, dest: string, inject: (port: number) => void, overrides: Partial<BackupRequest> = {}): Promise<unknown> {
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
		expect(injected).toBe(true);
		expect(outcome.value).toBeUndefined();
		return outcome.error;
	} finally {
		ssh.close();
	}
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
