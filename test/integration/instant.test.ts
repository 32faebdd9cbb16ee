/**
 * Instant recovery against the lab's libvirtd: boot from a full and from an incremental, Prune
 * keeping what a VM runs on (and saying why), make permanent while running (and offline), discard,
 * a backup image whose header was tampered with after it was verified, a hostile new VM name.
 * Each backup is checked with Verify (whole chain re-hashed) after the VM is made permanent or
 * discarded: instant recovery never writes to a backup.
 */
import { BackupVerifier, pruneBackups } from '../../lib/catalog';
import { discardInstant, instantRecover, makePermanent, type InstantRecoverResult } from '../../lib/restore/instant';
import { instantMarkerName } from '../../lib/store/instant';
import { quoteArg as q } from '../../lib/shell';
import { withSsh } from '../../lib/ssh';
import { loadLab } from '../support/lab';
import { labBackup } from '../support/labBackup';
import { labTarget } from '../support/targets';
import { createTestVm, host, testDestination, type TestVm } from '../support/testVm';
import type { BackupResult } from '../../lib/backup';

jest.setTimeout(300_000);

const uri = () => loadLab().systemUri;
const ssh = <T>(work: Parameters<typeof withSsh<T>>[1]) => withSsh(labTarget(), work);

function state(uuid: string): string {
	return host(`virsh -q domstate --domain ${q(uuid)}`).trim();
}

function exists(uuid: string): boolean {
	return host('virsh -q list --all --uuid').split('\n').map((line) => line.trim()).includes(uuid);
}

function fileExists(path: string): boolean {
	return host(`[ -e ${q(path)} ] && echo yes || echo no`).trim() === 'yes';
}

function backingOf(path: string): string | undefined {
	const info = JSON.parse(host(`qemu-img info -U --output=json ${q(path)}`)) as { 'backing-filename'?: string };
	return info['backing-filename'];
}

/** Reads `lengthMiB` at `offsetMiB` of an image and checks every byte is `pattern`. */
function holds(path: string, pattern: number, offsetMiB: number, lengthMiB: number): boolean {
	const out = host(`qemu-io -r -U -f qcow2 -c ${q(`read -P ${pattern} ${offsetMiB}M ${lengthMiB}M`)} ${q(path)} 2>&1 || true`);
	return !/Pattern verification failed|error/i.test(out) && /read \d+\/\d+ bytes/.test(out);
}

async function verifyWhole(path: string) {
	return ssh((connection) => new BackupVerifier(connection).verify(path, { rehashChain: true }));
}

describe('instant recovery', () => {
	let vm: TestVm;
	let destination: { dest: string; cleanup(): void };
	let overlayDir: string;
	let full: BackupResult;
	let incremental: BackupResult;
	let laterFull: BackupResult;
	const domains: string[] = [];
	const name = (purpose: string) => `lvb-t-inst-${purpose}-${process.pid}`;

	beforeAll(async () => {
		vm = createTestVm('instant', [{ target: 'vda', format: 'qcow2', virtualMiB: 64, writes: [{ pattern: 0x11, offsetMiB: 0, lengthMiB: 2 }] }]);
		destination = testDestination('instant');
		overlayDir = `${loadLab().labDir}/test-instant/${process.pid}-${Date.now()}`;
		full = await labBackup(vm.name, destination.dest);
		vm.guestWrite('vda', 0x22, 8, 1);
		incremental = await labBackup(vm.name, destination.dest);
		vm.guestWrite('vda', 0x33, 16, 1);
		laterFull = await labBackup(vm.name, destination.dest, { mode: 'full' });
		expect([full.kind, incremental.kind, laterFull.kind]).toEqual(['full', 'incremental', 'full']);
	});
	afterAll(() => {
		for (const uuid of domains) host(`virsh -q destroy --domain ${uuid} >/dev/null 2>&1; virsh -q undefine --domain ${uuid} >/dev/null 2>&1; true`);
		host(`rm -rf ${q(overlayDir)} ${q(`${overlayDir}-permanent`)}`);
		vm.destroy();
		destination.cleanup();
	});

	const recover = async (backupPath: string, purpose: string, more: Partial<Parameters<typeof instantRecover>[1]> = {}): Promise<InstantRecoverResult> => {
		const result = await ssh((connection) => instantRecover(connection, { uri: uri(), backupPath, overlayDir, name: name(purpose), ...more }));
		domains.push(result.uuid);
		return result;
	};

	test('from a full: running, one small overlay backed by the backup image, the backup marked; discard removes it all and the backup stays valid', async () => {
		const result = await recover(full.path, 'full');
		expect(result).toMatchObject({ started: true, verification: 'hashed', chain: [full.path], backupPath: full.path });
		expect(state(result.uuid)).toBe('running');
		const [overlay] = result.overlays;
		expect(overlay.path.startsWith(`${overlayDir}/`)).toBe(true);
		expect(backingOf(overlay.path)).toBe(`${full.path}/${full.disks[0].file}`);
		expect(result.bytesWritten).toBeLessThan(16 * 1024 * 1024);
		const marker = `${full.path}/${instantMarkerName(result.uuid)}`;
		expect(fileExists(marker)).toBe(true);

		const discarded = await ssh((connection) => discardInstant(connection, { uri: uri(), domain: result.uuid }));
		expect(discarded).toMatchObject({ domainRemoved: true, overlaysRemoved: [overlay.path], markersRemoved: [marker] });
		expect(exists(result.uuid)).toBe(false);
		expect(fileExists(overlay.path)).toBe(false);
		expect(fileExists(marker)).toBe(false);
		expect((await verifyWhole(full.path)).status).toBe('valid');
	});

	test('from an incremental: a prune whose policy drops the chain keeps it and says why; make permanent while running; the backup stays valid', async () => {
		const result = await recover(incremental.path, 'incr');
		expect(result.chain).toEqual([incremental.path, full.path]);
		expect(state(result.uuid)).toBe('running');
		// What the VM sees is the incremental's point in time: the full's data, the incremental's write, not the later one.
		const before = await ssh((connection) => pruneBackups(connection, { dest: destination.dest, policy: { keepLast: 1 }, dryRun: false }));
		const entry = (id: string) => before.items.find((item) => item.id === id);
		const why = `in use by instant-recovery VM ${JSON.stringify(name('incr'))} (domain ${result.uuid} on `;
		expect(entry(incremental.id)).toMatchObject({ action: 'keep', removed: false });
		expect(entry(incremental.id)?.reasons.join('\n')).toContain(why);
		expect(entry(full.id)).toMatchObject({ action: 'keep', removed: false });
		expect(entry(full.id)?.reasons.join('\n')).toContain(why);
		expect(fileExists(incremental.path) && fileExists(full.path)).toBe(true);

		const targetDir = `${overlayDir}-permanent`;
		const permanent = await ssh((connection) => makePermanent(connection, { uri: uri(), domain: name('incr'), targetDir }));
		expect(permanent).toMatchObject({ mode: 'live', uuid: result.uuid, backupPath: incremental.path, overlaysRemoved: [result.overlays[0].path] });
		const [disk] = permanent.disks;
		expect(backingOf(disk.path)).toBeUndefined();
		expect(state(result.uuid)).toBe('running');
		expect(holds(disk.path, 0x11, 0, 2) && holds(disk.path, 0x22, 8, 1) && holds(disk.path, 0, 16, 1)).toBe(true);
		const inactive = host(`virsh -q dumpxml --inactive --domain ${result.uuid}`);
		expect(inactive).toContain(`<source file='${disk.path}'/>`);
		expect(inactive).not.toContain('instant-recovery');
		expect(fileExists(result.overlays[0].path)).toBe(false);
		expect(fileExists(`${incremental.path}/${instantMarkerName(result.uuid)}`) || fileExists(`${full.path}/${instantMarkerName(result.uuid)}`)).toBe(false);
		expect((await verifyWhole(incremental.path)).status).toBe('valid');

		// No longer in use: the same policy now lets the chain go.
		const after = await ssh((connection) => pruneBackups(connection, { dest: destination.dest, policy: { keepLast: 1 }, dryRun: true }));
		expect(after.items.filter((item) => item.action === 'prune').map((item) => item.id).sort()).toEqual([full.id, incremental.id].sort());
	});

	test('started later: make permanent merges offline and redefines the VM on the new disk', async () => {
		const result = await recover(laterFull.path, 'offline', { start: false });
		expect(result.started).toBe(false);
		expect(state(result.uuid)).toBe('shut off');
		const permanent = await ssh((connection) => makePermanent(connection, { uri: uri(), domain: result.uuid, targetDir: `${overlayDir}-permanent` }));
		expect(permanent.mode).toBe('offline');
		expect(backingOf(permanent.disks[0].path)).toBeUndefined();
		expect(holds(permanent.disks[0].path, 0x33, 16, 1)).toBe(true);
		expect(host(`virsh -q dumpxml --inactive --domain ${result.uuid}`)).toContain(`<source file='${permanent.disks[0].path}'/>`);
		expect((await verifyWhole(laterFull.path)).status).toBe('valid');
	});

	test('a VM undefined by hand leaves its markers: they keep the backup, and Discard with its UUID and the backup clears them', async () => {
		const result = await recover(laterFull.path, 'gone', { verifyFirst: false });
		host(`virsh -q destroy --domain ${result.uuid} >/dev/null; virsh -q undefine --domain ${result.uuid} >/dev/null`);
		const again = await recover(laterFull.path, 'gone2');
		expect(again.staleMarkers.map((marker) => marker.uuid)).toEqual([result.uuid]);
		await expect(ssh((connection) => discardInstant(connection, { uri: uri(), domain: name('gone') }))).rejects.toThrow(/give its domain UUID .* and the backup path/);
		const cleared = await ssh((connection) => discardInstant(connection, { uri: uri(), domain: result.uuid, backupPath: laterFull.path }));
		expect(cleared).toMatchObject({ domainRemoved: false, markersRemoved: [`${laterFull.path}/${instantMarkerName(result.uuid)}`] });
		expect(fileExists(`${laterFull.path}/${instantMarkerName(again.uuid)}`)).toBe(true);
		await ssh((connection) => discardInstant(connection, { uri: uri(), domain: again.uuid }));
		host(`rm -f ${q(result.overlays[0].path)}`);
	});

	test('a hostile new VM name is data: defined as given, the overlay name encoded, nothing run', async () => {
		const hostile = `lvb-t-inst '$(touch lvb-pwned-${process.pid})" & <x> \`id\` ${process.pid}`;
		const result = await ssh((connection) => instantRecover(connection, { uri: uri(), backupPath: laterFull.path, overlayDir, name: hostile }));
		domains.push(result.uuid);
		expect(result.name).toBe(hostile);
		expect(host(`virsh -q domname --domain ${result.uuid}`).trim()).toBe(hostile);
		expect(result.overlays[0].path.slice(overlayDir.length + 1)).toMatch(/^[A-Za-z0-9_+.%-]+$/);
		const pwned = `lvb-pwned-${process.pid}`;
		expect(host(`for d in ~ / /tmp /var/lib/libvirt ${q(overlayDir)}; do [ -e "$d/${pwned}" ] && echo "$d"; done; true`).trim()).toBe('');
		await ssh((connection) => discardInstant(connection, { uri: uri(), domain: result.uuid }));
		expect(exists(result.uuid)).toBe(false);
	});

	test('refusals before anything is made: overlays inside the destination, a backup whose verification is invalid', async () => {
		await expect(recover(full.path, 'refused', { overlayDir: `${destination.dest}/overlays` })).rejects.toThrow(/inside the backup destination/);
		const record = { format: 'n8n-nodes-libvirt-backup/verification', version: 1, backupId: full.id, verifiedAt: new Date().toISOString(), status: 'invalid', ok: false, disks: [], parents: [], problems: ['vda: sha256 mismatch'] };
		const file = `${full.path}/verification.json`;
		const saved = host(`cat ${q(file)} 2>/dev/null || true`);
		host(`printf '%s' ${q(JSON.stringify(record))} > ${q(file)}`);
		try {
			await expect(recover(incremental.path, 'refused', { verifyFirst: false })).rejects.toThrow(/latest verification of backup .* found it invalid/);
		} finally {
			host(saved ? `printf '%s' ${q(saved)} > ${q(file)}` : `rm -f ${q(file)}`);
		}
		expect(host(`virsh -q list --all --name | grep -c ${q(name('refused'))} || true`).trim()).toBe('0');
	});

	test('a failure after the overlays were made (the name is taken) leaves no overlay, domain or marker behind', async () => {
		await expect(ssh((connection) => instantRecover(connection, { uri: uri(), backupPath: laterFull.path, overlayDir, name: vm.name }))).rejects.toThrow(/already exists/);
		expect(host(`ls -A ${q(overlayDir)} | grep -c ${q(vm.name)} || true`).trim()).toBe('0');
		expect(host(`ls -A ${q(laterFull.path)} | grep -c lvb-instant || true`).trim()).toBe('0');
	});
});

describe('instant recovery of a two-disk VM', () => {
	let vm: TestVm;
	let destination: { dest: string; cleanup(): void };
	let overlayDir: string;
	let uuid: string | undefined;
	beforeAll(() => {
		vm = createTestVm('instant-two', [
			{ target: 'vda', format: 'qcow2', virtualMiB: 32, writes: [{ pattern: 0x11, offsetMiB: 0, lengthMiB: 1 }] },
			{ target: 'vdb', format: 'qcow2', virtualMiB: 32, writes: [{ pattern: 0x44, offsetMiB: 4, lengthMiB: 1 }] },
		]);
		destination = testDestination('instant-two');
		overlayDir = `${loadLab().labDir}/test-instant/${process.pid}-two-${Date.now()}`;
	});
	afterAll(() => {
		if (uuid) host(`virsh -q destroy --domain ${uuid} >/dev/null 2>&1; virsh -q undefine --domain ${uuid} >/dev/null 2>&1; true`);
		host(`rm -rf ${q(overlayDir)} ${q(`${overlayDir}-permanent`)}`);
		vm.destroy();
		destination.cleanup();
	});

	test('make permanent cut short after one disk was pivoted is finished by the next run', async () => {
		const backup = await labBackup(vm.name, destination.dest);
		const result = await ssh((connection) => instantRecover(connection, { uri: uri(), backupPath: backup.path, overlayDir, name: `lvb-t-inst-two-${process.pid}` }));
		uuid = result.uuid;
		const targetDir = `${overlayDir}-permanent`;
		// What the first run did before it was stopped: vdb copied and pivoted.
		const vdb = `${targetDir}/lvb-t-inst-two-${process.pid}.vdb.qcow2`;
		host(`mkdir -p ${q(targetDir)} && virsh -q blockcopy --domain ${result.uuid} --path vdb --dest ${q(vdb)} --format qcow2 --transient-job --wait --pivot >/dev/null`);
		const permanent = await ssh((connection) => makePermanent(connection, { uri: uri(), domain: result.uuid, targetDir }));
		expect(permanent.disks.map((disk) => disk.path)).toEqual([`${targetDir}/lvb-t-inst-two-${process.pid}.vda.qcow2`, vdb]);
		expect(permanent.disks.every((disk) => backingOf(disk.path) === undefined)).toBe(true);
		expect(holds(vdb, 0x44, 4, 1) && holds(permanent.disks[0].path, 0x11, 0, 1)).toBe(true);
		expect(state(result.uuid)).toBe('running');
		expect((await verifyWhole(backup.path)).status).toBe('valid');
	});
});

describe('instant recovery and a tampered backup image header', () => {
	let vm: TestVm;
	let destination: { dest: string; cleanup(): void };
	let overlayDir: string;
	let evil: string;
	let uuid: string | undefined;
	beforeAll(() => {
		vm = createTestVm('instant-tamper', [{ target: 'vda', format: 'qcow2', virtualMiB: 64, writes: [{ pattern: 0x11, offsetMiB: 0, lengthMiB: 2 }] }]);
		destination = testDestination('instant-tamper');
		overlayDir = `${loadLab().labDir}/test-instant/${process.pid}-tamper-${Date.now()}`;
		evil = `${destination.dest}/evil.qcow2`;
	});
	afterAll(() => {
		if (uuid) host(`virsh -q destroy --domain ${uuid} >/dev/null 2>&1; virsh -q undefine --domain ${uuid} >/dev/null 2>&1; true`);
		host(`rm -rf ${q(overlayDir)} ${q(`${overlayDir}-permanent`)}`);
		vm.destroy();
		destination.cleanup();
	});

	test("a backing file planted in a verified incremental's header is never opened: the VM runs on the chain the manifests name", async () => {
		const full = await labBackup(vm.name, destination.dest);
		vm.guestWrite('vda', 0x22, 8, 1);
		const incremental = await labBackup(vm.name, destination.dest);
		expect((await verifyWhole(incremental.path)).status).toBe('valid');
		// Someone with write access to the share points the incremental at an image of theirs.
		host(`qemu-img create -q -f qcow2 ${q(evil)} 64M && qemu-io -f qcow2 -c 'write -P 0xee 0 2M' ${q(evil)} >/dev/null`);
		const image = `${incremental.path}/${incremental.disks[0].file}`;
		host(`qemu-img rebase -u -f qcow2 -F qcow2 -b ${q(evil)} ${q(image)}`);
		expect(backingOf(image)).toBe(evil);

		// The earlier valid record vouches for the images, so nothing is re-hashed: the header is all that is left to trust.
		const result = await withSsh(labTarget(), (connection) => instantRecover(connection, { uri: uri(), backupPath: incremental.path, overlayDir, name: `lvb-t-inst-tamper-${process.pid}` }));
		uuid = result.uuid;
		expect(result.verification).toBe('trusted');
		expect(state(result.uuid)).toBe('running');
		const pid = host(`cat /run/libvirt/qemu/${q(`lvb-t-inst-tamper-${process.pid}`)}.pid`).trim();
		const open = host(`ls -l /proc/${pid}/fd`);
		expect(open).toContain(`${full.path}/${full.disks[0].file}`);
		expect(open).not.toContain(evil);

		// Verify now proves the damage, but the folder a VM runs on is neither deleted nor quarantined.
		const verdict = await withSsh(labTarget(), (connection) => new BackupVerifier(connection).verify(incremental.path, { onInvalid: 'delete' }));
		expect(verdict).toMatchObject({ status: 'invalid', action: 'kept' });
		expect(verdict.problems.join('\n')).toContain(`in use by instant-recovery VM "lvb-t-inst-tamper-${process.pid}"`);
		expect(fileExists(image)).toBe(true);

		const permanent = await withSsh(labTarget(), (connection) => makePermanent(connection, { uri: uri(), domain: result.uuid, targetDir: `${overlayDir}-permanent` }));
		const disk = permanent.disks[0].path;
		expect(holds(disk, 0x11, 0, 2) && holds(disk, 0x22, 8, 1)).toBe(true);
		expect(holds(disk, 0xee, 0, 2)).toBe(false);
	});
});

describe('make permanent after a run killed mid-copy', () => {
	let vm: TestVm;
	let destination: { dest: string; cleanup(): void };
	let overlayDir: string;
	let uuid: string | undefined;
	beforeAll(() => {
		vm = createTestVm('instant-killed', [{ target: 'vda', format: 'qcow2', virtualMiB: 32, writes: [{ pattern: 0x11, offsetMiB: 0, lengthMiB: 1 }] }]);
		destination = testDestination('instant-killed');
		overlayDir = `${loadLab().labDir}/test-instant/${process.pid}-killed-${Date.now()}`;
	});
	afterAll(() => {
		if (uuid) host(`virsh -q destroy --domain ${uuid} >/dev/null 2>&1; virsh -q undefine --domain ${uuid} >/dev/null 2>&1; true`);
		host(`rm -rf ${q(overlayDir)} ${q(`${overlayDir}-permanent`)}`);
		vm.destroy();
		destination.cleanup();
	});

	test('the copy job and its file the killed run left are ended and removed, and the copy is made again', async () => {
		const backup = await labBackup(vm.name, destination.dest);
		const name = `lvb-t-inst-killed-${process.pid}`;
		const result = await ssh((connection) => instantRecover(connection, { uri: uri(), backupPath: backup.path, overlayDir, name }));
		uuid = result.uuid;
		const targetDir = `${overlayDir}-permanent`;
		const dest = `${targetDir}/${name}.vda.qcow2`;
		// What a run SIGKILLed mid-copy leaves: the copy job (no --wait: nobody pivots or aborts it) and its file.
		host(`mkdir -p ${q(targetDir)} && virsh -q blockcopy --domain ${result.uuid} --path vda --dest ${q(dest)} --format qcow2 --transient-job >/dev/null`);
		expect(host(`virsh -q dumpxml --domain ${result.uuid}`)).toContain(`<mirror type='file' file='${dest}'`);
		const permanent = await ssh((connection) => makePermanent(connection, { uri: uri(), domain: result.uuid, targetDir }));
		expect(permanent.disks.map((disk) => disk.path)).toEqual([dest]);
		expect(backingOf(dest)).toBeUndefined();
		expect(holds(dest, 0x11, 0, 1)).toBe(true);
		expect(host(`LC_ALL=C virsh blockjob --domain ${result.uuid} --path vda --info`)).toMatch(/No current block job/);
		expect((await verifyWhole(backup.path)).status).toBe('valid');
	});
});
