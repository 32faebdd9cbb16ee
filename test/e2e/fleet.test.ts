// e2e: the shipped fleet workflow in REAL n8n against the lab's three fleet hosts (each its own
// network namespace, sshd, host key, libvirt and backup store; scripts/lab/fleet.sh) plus one host
// that is down: one credential backs up every VM of every host, each backup lands in its own host's
// store, and one fleet report per host reaches the chat webhook and the mailbox.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fleetLab, fleetSshExec, shq, type LabFleet } from '../support/lab';
import { createUserFolder, nodeOutput, packPackage, REPO_ROOT, type ExecuteResult, type N8nInstance } from '../support/n8n';
import { startHttpReceiver, startMailReceiver, type HttpReceiver, type MailReceiver } from '../support/receivers';
import { SHIPPED_DEST, SHIPPED_HOOK } from '../support/shipped';

jest.setTimeout(600_000);

const WORKFLOW = path.join(REPO_ROOT, 'workflows', 'fleet-backup.json');
/** Nothing listens there: the host that is down. */
const DOWN = '127.0.0.1:1';

let fleet: LabFleet;
let n8n: N8nInstance | undefined;
let chat: HttpReceiver;
let mail: MailReceiver;
let run: ExecuteResult;
/** This test's folder under the fleet's destination, the same path on every host. */
let dest: string;
const sub = `e2e-fleet-${process.pid}`;

function succeeded(result: ExecuteResult): NonNullable<ExecuteResult['run']> {
	if (result.run?.status !== 'success') throw new Error(`run failed (${result.exitCode}):\n${result.stdout.slice(-4000)}\n${result.stderr.slice(-2000)}`);
	return result.run;
}

beforeAll(async () => {
	fleet = fleetLab();
	dest = `${fleet.destinationFolder}/${sub}`;
	for (const host of fleet.hosts) {
		const made = fleetSshExec(host, `mkdir -p -- ${shq(dest)}`);
		if (made.code !== 0) throw new Error(`mkdir on ${host.name}: ${made.stderr}`);
	}
	[chat, mail] = await Promise.all([startHttpReceiver(), startMailReceiver()]);
	const tgz = await packPackage();
	n8n = await createUserFolder(tgz);
	await fs.promises.rm(path.dirname(tgz), { recursive: true, force: true });
	const [libvirt, smtp] = await n8n.importCredentials([
		{
			name: 'Libvirt fleet',
			type: 'libvirtSshApi',
			data: {
				// The credential's own host is one of the fleet; every host's key is pinned on its own line.
				host: fleet.hosts[0].address,
				port: fleet.hosts[0].port,
				username: fleet.user.username,
				authMethod: 'privateKey',
				privateKey: fleet.user.privateKey,
				hostKeys: fleet.hosts.map((host) => host.knownHostsLine).join('\n'),
				skipHostKeyVerification: false,
				sudoMode: 'none',
				libvirtUri: fleet.uri,
			},
		},
		{ name: 'SMTP', type: 'smtp', data: { host: mail.host, port: mail.port, secure: false, disableStartTls: true, user: 'any', password: 'any' } },
	]);
	const workflow = JSON.parse(fs.readFileSync(WORKFLOW, 'utf8'));
	const hosts = workflow.nodes.find((node: { name: string }) => node.name === 'Fleet hosts');
	const list = [...fleet.hosts.map((host) => `${host.address}:${host.port}`), DOWN];
	hosts.parameters.jsCode = `return ${JSON.stringify(list.map((host) => ({ json: { host } })))};`;
	const id = await n8n.importWorkflow(workflow, { REPLACE_CREDENTIAL_ID: libvirt.id, REPLACE_SMTP_CREDENTIAL_ID: smtp.id, [SHIPPED_DEST]: dest, [SHIPPED_HOOK]: `${chat.url}/hook` });
	run = await n8n.execute(id, 540_000);
}, 15 * 60_000);

afterAll(async () => {
	await n8n?.cleanup();
	await chat?.close();
	await mail?.close();
	for (const host of fleet?.hosts ?? []) fleetSshExec(host, `rm -rf -- ${shq(dest)}`);
});

test('every VM of every reachable host is backed up and valid, in its own host store', () => {
	const result = succeeded(run);
	const backups = nodeOutput(result, 'Backup VM Disk');
	const expected = fleet.hosts.flatMap((host) => host.vms.map((vm) => `${host.address}:${host.port} ${vm.name}`)).sort();
	expect(backups.map((backup) => `${backup.host} ${backup.vm}`).sort()).toEqual(expected);
	expect(nodeOutput(result, 'Backup VM Disk', 1)).toEqual([]);
	expect(nodeOutput(result, 'Verify Checksum', 0).map((item) => item.valid)).toEqual(backups.map(() => true));
	expect(nodeOutput(result, 'Verify Checksum', 1)).toEqual([]);
	for (const host of fleet.hosts) {
		// The VM all hosts have (`app`) is backed up on each into that host's own store: no collision.
		const mine = backups.filter((backup) => backup.host === `${host.address}:${host.port}`);
		for (const backup of mine) {
			const local = path.join(host.backupStore, sub, path.relative(dest, String(backup.path)));
			const manifest = JSON.parse(fs.readFileSync(path.join(local, 'manifest.json'), 'utf8'));
			expect(manifest).toMatchObject({ vm: { name: backup.vm, uuid: host.vms.find((vm) => vm.name === backup.vm)!.uuid } });
		}
		const others = fleet.hosts.filter((other) => other !== host);
		for (const other of others) {
			const theirs = new Set(other.vms.map((vm) => vm.name).filter((name) => !host.vms.some((vm) => vm.name === name)));
			const folders = fs.readdirSync(path.join(host.backupStore, sub));
			expect(folders.filter((folder) => theirs.has(folder))).toEqual([]);
		}
	}
});

test('the host that is down goes to Discover VMs error output, and the other hosts go on', () => {
	const errors = nodeOutput(run.run, 'Discover VMs', 1);
	expect(errors).toEqual([expect.objectContaining({ host: DOWN, error: expect.stringMatching(/Cannot reach 127\.0\.0\.1:1: connection refused/) })]);
});

test('one fleet report: a line per host with VMs, OK, failed, bytes and duration, to the chat and by email', async () => {
	const [report] = nodeOutput(run.run, 'Fleet report');
	const vmCount = fleet.hosts.reduce((sum, host) => sum + host.vms.length, 0);
	expect(report).toMatchObject({ vms: vmCount, ok: vmCount, failed: 0, unreachable: 1 });
	const perHost = report.hosts as Array<Record<string, unknown>>;
	expect(perHost.map((line) => line.host)).toEqual([...fleet.hosts.map((host) => `${host.address}:${host.port}`), DOWN]);
	for (const [index, host] of fleet.hosts.entries()) {
		expect(perHost[index]).toMatchObject({ reachable: true, vms: host.vms.length, ok: host.vms.length, failed: 0 });
		expect(perHost[index].bytes).toBeGreaterThan(0);
		expect(perHost[index].seconds).toBeGreaterThan(0);
	}
	expect(perHost[fleet.hosts.length]).toMatchObject({ host: DOWN, reachable: false, vms: 0, ok: 0 });
	expect(run.run?.data?.resultData?.runData?.['Fleet report']).toHaveLength(1);

	const texts = chat.posts.map((post) => String((post.body as { text?: unknown }).text));
	expect(texts).toHaveLength(1);
	const lines = texts[0].split('\n');
	expect(lines[0]).toMatch(new RegExp(`^Fleet backup: ${fleet.hosts.length + 1} hosts \\(1 unreachable\\), ${vmCount} OK, 0 failed, \\d+(\\.\\d)? (B|KiB|MiB|GiB)$`));
	for (const host of fleet.hosts) {
		expect(lines).toContainEqual(expect.stringMatching(new RegExp(`^${host.address.replace(/\./g, '\\.')}:${host.port}: ${host.vms.length} VMs, ${host.vms.length} OK, 0 failed, \\d+(\\.\\d)? (KiB|MiB|GiB) in \\d+\\.\\d s$`)));
	}
	expect(lines).toContainEqual(expect.stringMatching(/^127\.0\.0\.1:1: UNREACHABLE: Cannot reach 127\.0\.0\.1:1/));
	const email = await mail.waitFor((message) => message.subject.startsWith('Fleet backup:'));
	expect(email.subject).toBe(`Fleet backup: ${fleet.hosts.length + 1} hosts (1 unreachable), ${vmCount} OK, 0 failed`);
	expect(email.text).toContain(lines[1]);
});
