// e2e: the shipped offsite-copy workflow in REAL n8n (`n8n execute`) against the lab: List Backups ->
// newest verified backup per VM with its chain -> Export Archive's replica target onto the lab's second
// sshd -> Verify Checksum there -> a report posted to a real HTTP receiver on loopback. A second VM's
// backup is damaged after its verification: its copy fails, is posted to chat and never verified there.
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { BackupVerifier } from '../../lib/catalog';
import { quoteArg as q } from '../../lib/shell';
import { withSsh } from '../../lib/ssh';
import { vmDirName } from '../../lib/store/layout';
import { loadLab } from '../support/lab';
import { labBackup } from '../support/labBackup';
import { createUserFolder, nodeOutput, packPackage, REPO_ROOT, type ExecuteResult, type N8nInstance } from '../support/n8n';
import { startHttpReceiver, type HttpReceiver } from '../support/receivers';
import { labCredentialData, labTarget } from '../support/targets';
import { createTestVm, host, testDestination, type TestVm } from '../support/testVm';
import { SHIPPED_DEST, SHIPPED_HOOK, SHIPPED_OFFSITE } from '../support/shipped';

jest.setTimeout(600_000);

const WORKFLOW = path.join(REPO_ROOT, 'workflows', 'offsite-copy.json');

let n8n: N8nInstance | undefined;
let chat: HttpReceiver | undefined;
let vm: TestVm;
let damaged: TestVm;
let damagedId: string;
let source: { dest: string; cleanup(): void };
let offsite: { dest: string; cleanup(): void };
/** full, incremental (both verified), then an incremental nobody verified yet. */
const ids: string[] = [];
let first: ExecuteResult;
let second: ExecuteResult;

function text(post: { body: unknown }): string {
	return String((post.body as { text?: unknown }).text ?? '');
}

function assertSuccess(result: ExecuteResult): void {
	if (result.run?.status !== 'success') throw new Error(`run failed (${result.exitCode}):\n${result.stdout.slice(-4000)}\n${result.stderr.slice(-2000)}`);
}

beforeAll(async () => {
	source = testDestination('offsite-src');
	offsite = testDestination('offsite-dst');
	vm = createTestVm('offsite', [{ target: 'vda', format: 'qcow2', virtualMiB: 32, writes: [{ pattern: 0x3c, offsetMiB: 0, lengthMiB: 4 }] }]);
	for (let index = 0; index < 3; index++) {
		if (index > 0) vm.guestWrite('vda', 0x40 + index, 8 + index, 1);
		const backup = await labBackup(vm.name, source.dest);
		ids.push(backup.id);
		if (index < 2) {
			const verified = await withSsh(labTarget(), (ssh) => new BackupVerifier(ssh).verify(backup.path));
			expect(verified.valid).toBe(true);
		}
	}

	damaged = createTestVm('offsite-bad', [{ target: 'vda', format: 'qcow2', virtualMiB: 16, writes: [{ pattern: 0x5d, offsetMiB: 0, lengthMiB: 2 }] }], 'shutoff');
	const bad = await labBackup(damaged.name, source.dest);
	damagedId = bad.id;
	expect((await withSsh(labTarget(), (ssh) => new BackupVerifier(ssh).verify(bad.path))).valid).toBe(true);
	// Damage after the verification (bit rot, a bad disk): List Backups still says verified ok, the copy's hashing finds it.
	const manifest = JSON.parse(host(`cat ${q(`${bad.path}/manifest.json`)}`)) as { disks: { file: string }[] };
	host(`printf 'rot' | dd of=${q(`${bad.path}/${manifest.disks[0].file}`)} bs=1 seek=1200000 conv=notrunc status=none`);

	chat = await startHttpReceiver();
	const tgz = await packPackage();
	n8n = await createUserFolder(tgz);
	await fs.rm(path.dirname(tgz), { recursive: true, force: true });
	const replicaHost = loadLab().replicaHost;
	if (!replicaHost) throw new Error('lab.json has no replicaHost: run bash scripts/lab/up.sh');
	const onReplica = labCredentialData({ host: replicaHost.host, port: replicaHost.port, hostKeys: replicaHost.knownHostsLine });
	const [libvirt, target, offsiteLibvirt] = await n8n.importCredentials([
		{ name: 'Libvirt host', type: 'libvirtSshApi', data: labCredentialData() },
		{ name: 'Off-site host', type: 'libvirtSshTargetApi', data: onReplica },
		{ name: 'Off-site host (Libvirt SSH)', type: 'libvirtSshApi', data: onReplica },
	]);
	const id = await n8n.importWorkflow(WORKFLOW, {
		REPLACE_CREDENTIAL_ID: libvirt.id,
		REPLACE_TARGET_CREDENTIAL_ID: target.id,
		REPLACE_OFFSITE_CREDENTIAL_ID: offsiteLibvirt.id,
		[SHIPPED_DEST]: source.dest,
		[SHIPPED_OFFSITE]: offsite.dest,
		[SHIPPED_HOOK]: `${chat.url}/hook`,
	});
	first = await n8n.execute(id, 300_000);
	second = await n8n.execute(id, 300_000);
}, 15 * 60_000);

afterAll(async () => {
	await n8n?.cleanup();
	await chat?.close();
	vm?.destroy();
	damaged?.destroy();
	source?.cleanup();
	offsite?.cleanup();
});

test('the newest verified backup and the full it builds on are copied to the off-site host and verify there', () => {
	assertSuccess(first);
	const copied = nodeOutput(first.run, 'Copied?', 0);
	expect(copied.map((item) => [item.id, item.status])).toEqual([
		[ids[0], 'replicated'],
		[ids[1], 'replicated'],
	]);
	expect(copied.every((item) => item.host === loadLab().replicaHost!.host)).toBe(true);
	expect(nodeOutput(first.run, 'Copied?', 1)).toEqual([expect.objectContaining({ vm: damaged.name, id: damagedId, error: expect.stringContaining('sha256') })]);
	const verified = nodeOutput(first.run, 'Verify on off-site host');
	expect(verified.map((item) => [item.id, item.valid, String(item.path).startsWith(`${offsite.dest}/`)])).toEqual([
		[ids[0], true, true],
		[ids[1], true, true],
	]);
	expect(nodeOutput(first.run, 'Verify on off-site host', 1)).toEqual([]);
	const vmDir = `${offsite.dest}/${vmDirName(vm.name)}`;
	// The replica is a store of its own: manifests, images and Verify's records there; the unverified newest stays home.
	expect(host(`cd ${q(vmDir)} && ls -d */ | sort`).split('\n').filter(Boolean)).toEqual([`${ids[0]}/`, `${ids[1]}/`]);
	expect(host(`test -e ${q(`${offsite.dest}/${vmDirName(damaged.name)}/${damagedId}`)} || echo absent`).trim()).toBe('absent');
	for (const backupId of ids.slice(0, 2)) {
		const record = JSON.parse(host(`cat ${q(`${vmDir}/${backupId}/verification.json`)}`)) as { ok: boolean };
		expect(record.ok).toBe(true);
	}
});

test('the report posted to chat names the VMs and the counts; the failed copy is posted on its own', async () => {
	const post = await chat!.waitFor((candidate) => text(candidate).startsWith('Off-site copy to '));
	expect(text(post)).toMatch(/^Off-site copy to \S+: 2 VMs, 2 backups copied, 0 already there, 1 failed; 2 verified there, 0 invalid; /);
	expect(text(post)).toContain(`\n${vm.name}: ${ids[0]} full copied (`);
	expect(text(post)).toContain(`, ${ids[1]} incremental copied (`);
	expect(text(post)).toContain(`\n${damaged.name}: ${damagedId} FAILED: `);
	expect(nodeOutput(first.run, 'Report')[0]).toMatchObject({ vms: 2, replicated: 2, skipped: 0, failed: 1, verified: 2, invalid: 0 });
	const failure = await chat!.waitFor((candidate) => text(candidate).startsWith('Off-site copy of '));
	expect(text(failure)).toMatch(new RegExp(`^Off-site copy of ${damaged.name} ${damagedId} failed: .*sha256`));
	expect(chat!.posts.map(text).filter((posted) => !/^Off-site copy (to|of) /.test(posted))).toEqual([]);
});

test('a second run skips what is already there and says so', async () => {
	assertSuccess(second);
	expect(nodeOutput(second.run, 'Copied?', 0).map((item) => [item.id, item.status])).toEqual([
		[ids[0], 'skipped'],
		[ids[1], 'skipped'],
	]);
	expect(nodeOutput(second.run, 'Report')[0]).toMatchObject({ replicated: 0, skipped: 2, failed: 1, verified: 2, invalid: 0 });
	const reports = chat!.posts.map(text).filter((posted) => posted.startsWith('Off-site copy to '));
	expect(reports).toHaveLength(2);
	expect(reports[1]).toMatch(/: 2 VMs, 0 backups copied, 2 already there, 1 failed; 2 verified there, 0 invalid; /);
	expect(reports[1]).toContain(`\n${vm.name}: ${ids[0]} already there, ${ids[1]} already there`);
});
