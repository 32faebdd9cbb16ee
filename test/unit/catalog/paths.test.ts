/** Which paths and names can be ours, and how checker output and verification records are read. */
import { vmDirName } from '../../../lib/store/layout';
import { parseCheckOutput } from '../../../lib/catalog';
import { isStaleFolderEntry, isVmDirName, parseBackupPath, parseVerification, serializeVerification, type VerificationRecord } from '../../../lib/store';
import { isLibvirtBackupError } from '../../../lib/errors';

describe('parseBackupPath', () => {
	test('splits <dest>/<vm dir>/<id>, decoding the VM name', () => {
		expect(parseBackupPath(`/srv/my backups/${vmDirName(`it's $(x)`)}/20261128T144300Z-2/`)).toEqual({
			dest: '/srv/my backups',
			vmDir: 'it%27s%20%24%28x%29',
			vm: `it's $(x)`,
			id: '20261128T144300Z-2',
			path: '/srv/my backups/it%27s%20%24%28x%29/20261128T144300Z-2',
		});
	});

	test.each([
		['/srv/b/web01/../web01/20261128T144300Z', /must not contain "\.\."/],
		['/srv/b/../web01/20261128T144300Z', /must not contain "\.\."/],
		['/srv//b/web01/20261128T144300Z', /must not contain/],
		['srv/b/web01/20261128T144300Z', /absolute path/],
		['/web01/20261128T144300Z', /cannot be the root directory/],
		['/srv/b/web01', /not a backup id/],
		['/srv/b/web01/20261128T144300Z/vda.qcow2', /not a backup id/],
		['/srv/b/web01/20261128T144300Z-x', /not a backup id/],
		['/srv/b/../20261128T144300Z', /is not a VM folder name/],
		['/srv/b/.hidden/20261128T144300Z', /is not a VM folder name/],
		['/srv/b/web 01/20261128T144300Z', /is not a VM folder name/],
		['/srv/b/web01/20261128T144300Z.quarantined', /quarantined backup; rename it back to 20261128T144300Z/],
		['', /not a backup id/],
	])('refuses %j', (path, message) => {
		let error: unknown;
		try {
			parseBackupPath(path);
		} catch (caught) {
			error = caught;
		}
		expect(isLibvirtBackupError(error, 'INVALID_INPUT') && error.message).toMatch(message);
	});
});

describe('names', () => {
	test('every name vmDirName produces is a VM folder name, and nothing that leaves the folder is', () => {
		for (const name of ['web01', '..', '.', `it's`, 'a/b', '$(touch pwned)', '-rf', 'ünï', 'x\ny', ' ']) expect(isVmDirName(vmDirName(name))).toBe(true);
		for (const name of ['..', '.', '.hidden', 'a/b', 'a b', '', `it's`, 'x\ny', '*']) expect(isVmDirName(name)).toBe(false);
	});

	test('only our writer leftovers count as stale folder entries', () => {
		const ours = ['vda.qcow2.partial', 'domain.xml', '.lvb-incomplete', 'manifest.json.tmp', '.lvb-backup.xml', '.lvb-checkpoint.xml'];
		expect(ours.map(isStaleFolderEntry)).toEqual(ours.map(() => true));
		expect(['.partial', 'manifest.json', 'notes.txt', 'vda.qcow2', 'domain.xml.bak'].map(isStaleFolderEntry)).toEqual([false, false, false, false, false]);
	});
});

describe('parseCheckOutput', () => {
	const M = '@@LVB-unit';
	const sha = 'b'.repeat(64);
	const batch = ['ok', 'leaks', 'corrupt', 'raw', 'missing', 'link', 'old'].map((name) => ({ path: `/b/${name}`, format: name === 'raw' ? 'raw' : 'qcow2' }));
	const output = [
		`${M} image 0\nstate read\nsha ${sha}\ncheck 0\nNo errors were found on the image.`,
		`${M} image 1\nstate read\nsha ${sha}\ncheck 3\n2 leaked clusters were found on the image.`,
		`${M} image 2\nstate read\nsha ${sha}\ncheck 2\nERROR cluster 4 refcount=0\n1 errors were found on the image.\nData may be corrupted.`,
		`${M} image 3\nstate read\nsha ${sha}\ncheck format`,
		`${M} image 4\nstate missing\nsha \ncheck `,
		`${M} image 5\nstate symlink\nsha \ncheck `,
		`${M} image 6\nstate read\nsha ${sha}\ncheck noqemuimg`,
		`${M} end`,
	].join('\n');

	test('reads hash, qemu-img verdict and its words for each image, in order', () => {
		expect(parseCheckOutput(output, M, batch).map((r) => [r.state, r.sha256 === sha, r.qemuImgCheck, r.detail])).toEqual([
			['read', true, 'ok', ''],
			['read', true, 'ok', 'qemu-img check: leaked clusters only, no data affected (2 leaked clusters were found on the image.)'],
			['read', true, 'errors', 'qemu-img check failed (exit code 2): ERROR cluster 4 refcount=0 | 1 errors were found on the image. | Data may be corrupted.'],
			['read', true, 'skipped', ''],
			['missing', false, 'skipped', 'image file is missing'],
			['symlink', false, 'skipped', 'image is a symbolic link (never followed)'],
			['read', true, 'skipped', 'qemu-img not found on the host (install qemu-utils / qemu-img): structure not checked'],
		]);
	});

	test('a host without sha256sum, or output cut short, is an error', () => {
		expect(() => parseCheckOutput(`${M} nosha\n`, M, batch)).toThrow(/sha256sum not found/);
		expect(() => parseCheckOutput(output.replace(`${M} end`, ''), M, batch)).toThrow(/ended early/);
		expect(() => parseCheckOutput(`${M} end`, M, batch)).toThrow(/printed nothing for \/b\/ok/);
	});
});

describe('parseVerification', () => {
	const record: VerificationRecord = {
		format: 'n8n-nodes-libvirt-backup/verification',
		version: 1,
		backupId: '20261128T144300Z',
		verifiedAt: '2026-11-28T15:00:00.000Z',
		status: 'valid',
		ok: true,
		disks: [],
		parents: [],
		problems: [],
	};

	test('round-trips a record; a broken one, or one for another backup, counts as never verified', () => {
		expect(parseVerification(serializeVerification(record), '20261128T144300Z')).toEqual(record);
		expect(parseVerification(serializeVerification(record), '20261128T144301Z')).toBeUndefined();
		expect(parseVerification('{"ok": true', '20261128T144300Z')).toBeUndefined();
		expect(parseVerification(JSON.stringify({ ...record, ok: 'yes' }), '20261128T144300Z')).toBeUndefined();
		expect(parseVerification(JSON.stringify({ ...record, format: 'x' }), '20261128T144300Z')).toBeUndefined();
	});
});
