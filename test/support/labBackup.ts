/** Backup VM Disk's engine against a lab test VM, with the request every chain test starts from. */
import { backupVm, type BackupRequest, type BackupResult } from '../../lib/backup';
import { quoteArg } from '../../lib/shell';
import { withSsh } from '../../lib/ssh';
import { loadLab } from './lab';
import { labTarget } from './targets';
import { host, type TestVm } from './testVm';

/** Auto mode, no compression, no freeze (the test VMs have no guest agent), so warnings are only the chain's. */
export function labBackup(vm: string, dest: string, overrides: Partial<BackupRequest> = {}): Promise<BackupResult> {
	const request: BackupRequest = { uri: loadLab().systemUri, vm, dest, mode: 'auto', compression: 'none', quiesce: 'off', holder: `jest ${process.pid}`, host: 'lab', ...overrides };
	return withSsh(labTarget(), (ssh) => backupVm(ssh, request));
}

/** The VM's libvirt checkpoints, sorted. */
export function checkpoints(vm: TestVm): string[] {
	return host(`virsh -q checkpoint-list --domain ${quoteArg(vm.name)} --name`)
		.split('\n')
		.map((line) => line.trim())
		.filter(Boolean)
		.sort();
}
