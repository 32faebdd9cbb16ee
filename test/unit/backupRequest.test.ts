import { checkBackupRequest, type BackupRequest } from '../../lib/backup';

const good: BackupRequest = { uri: 'qemu:///system', vm: 'web01', dest: '/backups', mode: 'auto', compression: 'none', quiesce: 'auto', holder: 'test', host: 'kvm01' };

describe('backup parameters are checked before anything touches the host', () => {
	test('a complete request passes', () => {
		expect(() => checkBackupRequest(good)).not.toThrow();
		expect(() => checkBackupRequest({ ...good, method: 'snapshot', disks: ['vda', 'sdb'], timeoutMs: 60_000 })).not.toThrow();
		expect(() => checkBackupRequest({ ...good, newFullAfter: { incrementals: 0, days: 3650 } })).not.toThrow();
	});

	test.each([
		[{ vm: '  ' }, 'VM name or UUID is empty'],
		[{ dest: 'relative/path' }, /^Destination must be an absolute path/],
		[{ dest: '/backups/../etc' }, /must not contain "\.\."/],
		[{ mode: 'weekly' }, 'mode must be one of auto, full, incremental, copy; got "weekly"'],
		[{ compression: 'zstd' }, 'compression must be one of none, qcow2-compressed; got "zstd"'],
		[{ quiesce: 'yes' }, 'quiesce must be one of auto, require, off; got "yes"'],
		[{ method: 'rsync' }, 'method must be one of auto, push, snapshot; got "rsync"'],
		[{ disks: ['vda', '$(id)'] }, '"$(id)" is not a disk target name (like vda or sdb)'],
		[{ timeoutMs: 0 }, 'timeout must be a positive number of minutes; got 0'],
		[{ newFullAfter: { incrementals: -1 } }, 'New Full Backup After: incrementals must be a whole number from 0 (no limit) to 10000; got -1'],
		[{ newFullAfter: { incrementals: 2.5 } }, 'New Full Backup After: incrementals must be a whole number from 0 (no limit) to 10000; got 2.5'],
		[{ newFullAfter: { days: 3651 } }, 'New Full Backup After: days must be a whole number from 0 (no limit) to 3650; got 3651'],
		[{ newFullAfter: { days: Number.NaN } }, 'New Full Backup After: days must be a whole number from 0 (no limit) to 3650; got null'],
	])('%p is refused: %s', (override, message) => {
		expect(() => checkBackupRequest({ ...good, ...(override as Partial<BackupRequest>) })).toThrow(message);
	});
});
