// e2e: the shipped export-download workflow in a REAL running n8n (`n8n start`), called with curl:
// Webhook (header auth) -> List Backups -> Newest N -> Export Archive streaming the archive as the
// webhook's response. The download must be a tar.gz that `tar -tzf` lists and whose images hash to
// their manifests; a backup that turns out corrupt mid-stream must cut the download (curl fails),
// never end it as a short archive. The same through n8n binary data + Respond to Webhook. And a
// replica round trip by `n8n execute`: List Backups -> Export Archive (replica on the lab's second
// sshd) -> List Backups and Verify Checksum on the replica host, through its own credentials.
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { promises as fs, readFileSync, statSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { vmDirName } from '../../lib/store/layout';
import { flipByte } from '../support/backupFixtures';
import { loadLab } from '../support/lab';
import { labBackup } from '../support/labBackup';
import { createUserFolder, nodeOutput, packPackage, REPO_ROOT, type ExecuteResult, type N8nInstance, type N8nServer } from '../support/n8n';
import { labCredentialData } from '../support/targets';
import { createTestVm, testDestination, type TestVm } from '../support/testVm';
import { SHIPPED_DEST, TOKEN_HEADER } from '../support/shipped';

jest.setTimeout(600_000);

const WORKFLOW = path.join(REPO_ROOT, 'workflows', 'export-download.json');
const token = randomBytes(18).toString('hex');

let n8n: N8nInstance | undefined;
let server: N8nServer | undefined;
let vm: TestVm;
let destination: { dest: string; cleanup(): void };
let work: string;
const ids: string[] = [];
let replicaDest: { dest: string; cleanup(): void };
let corrupt: { dest: string; cleanup(): void };
let corruptId: string;
let replicaRun: ExecuteResult;
let replicaAgain: ExecuteResult;

/** Manual Trigger -> List Backups (lab host) -> Export Archive (replica) -> List Backups + Verify Checksum on the replica host. */
function replicaWorkflow(source: string, replica: string, replicaTarget: string, dest: string, vmName: string, replicaDestination: string): Record<string, unknown> {
	const node = (name: string, type: string, x: number, parameters: Record<string, unknown>, credentials?: Record<string, { id: string; name: string }>, extra: Record<string, unknown> = {}) => ({
		id: `00000000-0000-4000-8000-00000000000${x}`,
		name,
		type,
		typeVersion: 1,
		position: [x * 220, 0],
		parameters,
		...(credentials ? { credentials } : {}),
		...extra,
	});
	const lab = { libvirtSshApi: { id: source, name: 'Libvirt lab host' } };
	const onReplica = { libvirtSshApi: { id: replica, name: 'Libvirt replica host' } };
	const chain = ['Run', 'List Backups', 'Replicate', 'List on replica', 'Verify on replica'];
	return {
		name: 'Replicate backups (e2e)',
		nodes: [
			node('Run', 'n8n-nodes-base.manualTrigger', 1, {}),
			node('List Backups', 'n8n-nodes-libvirt-backup.libvirtListBackups', 2, { destination: dest, vmNames: vmName, kinds: [], options: {} }, lab),
			node('Replicate', 'n8n-nodes-libvirt-backup.libvirtExportArchive', 3, { target: 'replica', replicaDestination }, { ...lab, libvirtSshTargetApi: { id: replicaTarget, name: 'Libvirt replica target' } }),
			node('List on replica', 'n8n-nodes-libvirt-backup.libvirtListBackups', 4, { destination: replicaDestination, vmNames: vmName, kinds: [], options: {} }, onReplica, { executeOnce: true }),
			node('Verify on replica', 'n8n-nodes-libvirt-backup.libvirtVerifyChecksum', 5, {}, onReplica),
		],
		connections: Object.fromEntries(chain.slice(0, -1).map((name, index) => [name, { main: [[{ node: chain[index + 1], type: 'main', index: 0 }]] }])),
		settings: { executionOrder: 'v1' },
	};
}

interface Curl {
	status: number;
	headers: Record<string, string>;
	file: string;
}

/** curl to a file; status and response headers (lower-case names) from curl's own output. */
function curl(url: string, headers: string[], name: string): Curl & { exitCode: number; stderr: string } {
	const file = path.join(work, name);
	const headerFile = `${file}.headers`;
	const args = ['-sS', '-o', file, '-D', headerFile, '-w', '%{http_code}', ...headers.flatMap((h) => ['-H', h]), url];
	const run = spawnSync('curl', args, { encoding: 'utf8', timeout: 300_000 });
	const status = Number(run.stdout.trim());
	const parsed: Record<string, string> = {};
	for (const line of readFileSync(headerFile, 'utf8').split('\r\n')) {
		const colon = line.indexOf(':');
		if (colon > 0) parsed[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
	}
	return { status, headers: parsed, file, exitCode: run.status ?? -1, stderr: run.stderr };
}

function sha256(file: string): string {
	return createHash('sha256').update(readFileSync(file)).digest('hex');
}

beforeAll(async () => {
	work = await fs.mkdtemp(path.join(os.tmpdir(), 'lvb-e2e-export-'));
	destination = testDestination('export-e2e');
	vm = createTestVm('export', [{ target: 'vda', format: 'qcow2', virtualMiB: 64, writes: [{ pattern: 0x5a, offsetMiB: 0, lengthMiB: 8 }] }]);
	ids.push((await labBackup(vm.name, destination.dest)).id);
	vm.guestWrite('vda', 0x6b, 16, 4);
	ids.push((await labBackup(vm.name, destination.dest)).id);

	const tgz = await packPackage();
	n8n = await createUserFolder(tgz);
	await fs.rm(path.dirname(tgz), { recursive: true, force: true });
	const replicaHost = loadLab().replicaHost;
	if (!replicaHost) throw new Error('lab.json has no replicaHost: run bash scripts/lab/up.sh');
	const onReplica = labCredentialData({ host: replicaHost.host, port: replicaHost.port, hostKeys: replicaHost.knownHostsLine });
	const [replicaId, replicaTargetId] = ['LvbReplicaHost01', 'LvbReplicaTarg01'];
	const [libvirt, headerAuth] = await n8n.importCredentials([
		{ name: 'Libvirt lab host', type: 'libvirtSshApi', data: labCredentialData() },
		{ name: 'Backup webhook token', type: 'httpHeaderAuth', data: { name: TOKEN_HEADER, value: token } },
		{ id: replicaId, name: 'Libvirt replica host', type: 'libvirtSshApi', data: onReplica },
		{ id: replicaTargetId, name: 'Libvirt replica target', type: 'libvirtSshTargetApi', data: onReplica },
	]);
	replicaDest = testDestination('replica-e2e');
	const replicaWorkflowId = await n8n.importWorkflow(replicaWorkflow(libvirt.id, replicaId, replicaTargetId, destination.dest, vm.name, replicaDest.dest));
	replicaRun = await n8n.execute(replicaWorkflowId, 300_000);
	replicaAgain = await n8n.execute(replicaWorkflowId, 300_000);
	const replace = { REPLACE_CREDENTIAL_ID: libvirt.id, REPLACE_HEADER_AUTH_ID: headerAuth.id, [SHIPPED_DEST]: destination.dest };
	// The shipped workflow on another webhook path with Export Archive's parameters changed (e.g. zstd:
	// jest runs on Node 20, whose zlib has no zstd; n8n runs on Node 24).
	type Workflow = { name: string; nodes: Record<string, unknown>[]; connections: Record<string, unknown> };
	const variant = (hook: string, exportParameters: Record<string, unknown>): Workflow => {
		const workflow = JSON.parse(readFileSync(WORKFLOW, 'utf8')) as Workflow;
		workflow.name += ` (${hook})`;
		for (const node of workflow.nodes as { type: string; name: string; parameters: Record<string, unknown> }[]) {
			if (node.type === 'n8n-nodes-base.webhook') node.parameters.path = hook;
			if (node.name === 'Export Archive') Object.assign(node.parameters, exportParameters);
		}
		return workflow;
	};
	// The same through n8n binary data, answered by a Respond to Webhook node (what queue mode needs).
	const binary = variant('libvirt-export-bin', { target: 'binary' });
	binary.nodes.push({
		id: '00000000-0000-4000-8000-0000000000b1',
		name: 'Send the archive',
		type: 'n8n-nodes-base.respondToWebhook',
		typeVersion: 1.1,
		position: [880, -100],
		parameters: { respondWith: 'binary', options: {} },
	});
	binary.connections['Export Archive'] = { main: [[{ node: 'Send the archive', type: 'main', index: 0 }], [{ node: 'Answer the error', type: 'main', index: 0 }]] };
	// A destination whose one backup has an image damaged after it was written.
	corrupt = testDestination('export-e2e-corrupt');
	const bad = await labBackup(vm.name, corrupt.dest);
	corruptId = bad.id;
	flipByte(`${bad.path}/${bad.disks[0].file}`, 3 * 1024 * 1024);
	// Uncompressed, so that megabytes have gone out when the damage shows at the image's end; gzip
	// of the test's patterned data is so small that nothing has gone out by then.
	const damaged = variant('libvirt-export-bad', { compression: 'none' });
	const damagedEarly = variant('libvirt-export-bad-gz', {});
	const corruptReplace = { ...replace, [SHIPPED_DEST]: corrupt.dest };
	const workflows = [
		{ workflow: WORKFLOW, replace },
		{ workflow: variant('libvirt-export-zst', { compression: 'zstd', compressionLevel: 3 }), replace },
		{ workflow: variant('libvirt-export-zst-host', { compression: 'zstd', compressionLevel: 3, compressOn: 'host' }), replace },
		{ workflow: binary, replace },
		{ workflow: damaged, replace: corruptReplace },
		{ workflow: damagedEarly, replace: corruptReplace },
	];
	for (const id of await n8n.importWorkflows(workflows)) await n8n.publishWorkflow(id);
	server = await n8n.startServer({ waitForWebhooks: ['libvirt-export', 'libvirt-export-zst', 'libvirt-export-zst-host', 'libvirt-export-bin', 'libvirt-export-bad', 'libvirt-export-bad-gz'] });
}, 15 * 60_000);

afterAll(async () => {
	await server?.stop();
	await n8n?.cleanup();
	vm?.destroy();
	destination?.cleanup();
	replicaDest?.cleanup();
	corrupt?.cleanup();
	if (work) await fs.rm(work, { recursive: true, force: true });
});

test('without the token the webhook refuses and exports nothing', () => {
	const response = curl(`${server!.url}/webhook/libvirt-export?vm=${encodeURIComponent(vm.name)}&last=2`, [], 'refused');
	expect(response.status).toBe(403);
});

test('GET with the token downloads a tar.gz of the newest backups whose images hash to their manifests', () => {
	const response = curl(`${server!.url}/webhook/libvirt-export?vm=${encodeURIComponent(vm.name)}&last=2`, [`${TOKEN_HEADER}: ${token}`], 'export.tar.gz');
	if (response.status !== 200) throw new Error(`HTTP ${response.status}: ${readFileSync(response.file, 'utf8').slice(0, 2000)}\n${server!.log().slice(-4000)}`);
	expect(response.headers['content-type']).toMatch(/^application\/(gzip|x-gzip)/);
	expect(response.headers['content-disposition']).toMatch(/^attachment; filename="backups-export-\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}\.tar\.gz"; filename\*=UTF-8''backups-export-[\dT-]+\.tar\.gz$/);
	expect(response.exitCode).toBe(0);

	const listing = execFileSync('tar', ['-tzf', response.file], { encoding: 'utf8' }).split('\n').filter(Boolean);
	const vmDir = vmDirName(vm.name);
	for (const backupId of ids) {
		expect(listing).toEqual(expect.arrayContaining([`${vmDir}/${backupId}/manifest.json`, `${vmDir}/${backupId}/domain.xml`]));
	}
	const unpacked = path.join(work, 'unpacked');
	execFileSync('mkdir', ['-p', unpacked]);
	execFileSync('tar', ['-xzf', response.file, '-C', unpacked]);
	for (const backupId of ids) {
		const folder = path.join(unpacked, vmDir, backupId);
		const manifest = JSON.parse(readFileSync(path.join(folder, 'manifest.json'), 'utf8')) as { id: string; disks: { file: string; sha256: string }[] };
		expect(manifest.id).toBe(backupId);
		for (const disk of manifest.disks) expect(sha256(path.join(folder, disk.file))).toBe(disk.sha256);
	}
	// The incremental's image names its parent relatively, so the unpacked chain opens as it did on the host.
	const top = JSON.parse(readFileSync(path.join(unpacked, vmDir, ids[1], 'manifest.json'), 'utf8')) as { disks: { file: string }[] };
	const check = spawnSync('qemu-img', ['check', '-q', path.join(unpacked, vmDir, ids[1], top.disks[0].file)], { encoding: 'utf8' });
	expect(check.status).toBe(0);
});

test('a replica made through n8n lists and verifies on the replica host; running it again skips what is there', async () => {
	if (replicaRun.run?.status !== 'success') throw new Error(`replica run failed (${replicaRun.exitCode}):\n${replicaRun.stdout.slice(-4000)}\n${replicaRun.stderr.slice(-2000)}`);
	const replicated = nodeOutput(replicaRun.run, 'Replicate');
	expect(replicated.map((item) => [item.id, item.status]).sort()).toEqual(ids.map((id) => [id, 'replicated']).sort());
	expect(replicated.every((item) => item.host === loadLab().replicaHost!.host)).toBe(true);
	const listed = nodeOutput(replicaRun.run, 'List on replica');
	expect(listed.map((item) => item.id).sort()).toEqual([...ids].sort());
	expect(listed.every((item) => String(item.path).startsWith(`${replicaDest.dest}/`))).toBe(true);
	const verified = nodeOutput(replicaRun.run, 'Verify on replica', 0);
	expect(verified.map((item) => [item.id, item.valid])).toEqual(expect.arrayContaining(ids.map((id) => [id, true])));
	expect(nodeOutput(replicaRun.run, 'Verify on replica', 1)).toEqual([]);
	expect(nodeOutput(replicaAgain.run, 'Replicate').map((item) => [item.id, item.status]).sort()).toEqual(ids.map((id) => [id, 'skipped']).sort());
});

test('the same download as tar.zst (n8n on Node 24 has zstd in zlib) unpacks with the zstd tool', () => {
	const response = curl(`${server!.url}/webhook/libvirt-export-zst?vm=${encodeURIComponent(vm.name)}&last=2`, [`${TOKEN_HEADER}: ${token}`], 'export.tar.zst');
	if (response.status !== 200) throw new Error(`HTTP ${response.status}: ${readFileSync(response.file, 'utf8').slice(0, 2000)}`);
	expect(response.headers['content-type']).toBe('application/zstd');
	expect(response.headers['content-disposition']).toMatch(/\.tar\.zst$/);
	const listing = execFileSync('tar', ['--zstd', '-tf', response.file], { encoding: 'utf8' }).split('\n').filter(Boolean);
	expect(listing).toEqual(expect.arrayContaining(ids.map((backupId) => `${vmDirName(vm.name)}/${backupId}/manifest.json`)));
});

test('tar.zst compressed on the host: zstd frames from the host and from n8n, one archive whose images hash to their manifests', () => {
	const response = curl(`${server!.url}/webhook/libvirt-export-zst-host?vm=${encodeURIComponent(vm.name)}&last=2`, [`${TOKEN_HEADER}: ${token}`], 'export-host.tar.zst');
	if (response.status !== 200) throw new Error(`HTTP ${response.status}: ${readFileSync(response.file, 'utf8').slice(0, 2000)}\n${server!.log().slice(-4000)}`);
	expect(response.exitCode).toBe(0);
	// n8n alone writes one frame; here every image is the host's frame between frames of n8n's.
	const frames = Number(/# Zstandard Frames: (\d+)/.exec(execFileSync('zstd', ['-lv', response.file], { encoding: 'utf8' }))?.[1]);
	expect(frames).toBeGreaterThan(2);
	const unpacked = path.join(work, 'unpacked-host');
	execFileSync('mkdir', ['-p', unpacked]);
	execFileSync('tar', ['--zstd', '-xf', response.file, '-C', unpacked]);
	for (const backupId of ids) {
		const folder = path.join(unpacked, vmDirName(vm.name), backupId);
		const manifest = JSON.parse(readFileSync(path.join(folder, 'manifest.json'), 'utf8')) as { disks: { file: string; sha256: string }[] };
		for (const disk of manifest.disks) expect(sha256(path.join(folder, disk.file))).toBe(disk.sha256);
	}
});

test('through n8n binary data and Respond to Webhook (the queue-mode way) the download is the same archive', () => {
	const response = curl(`${server!.url}/webhook/libvirt-export-bin?vm=${encodeURIComponent(vm.name)}&last=2`, [`${TOKEN_HEADER}: ${token}`], 'export-bin.tar.gz');
	if (response.status !== 200) throw new Error(`HTTP ${response.status}: ${readFileSync(response.file, 'utf8').slice(0, 2000)}`);
	const listing = execFileSync('tar', ['-tzf', response.file], { encoding: 'utf8' }).split('\n').filter(Boolean);
	expect(listing).toEqual(expect.arrayContaining(ids.map((backupId) => `${vmDirName(vm.name)}/${backupId}/manifest.json`)));
});

test('a backup found corrupt mid-stream cuts the download: curl fails and the archive does not unpack whole', () => {
	const response = curl(`${server!.url}/webhook/libvirt-export-bad?vm=${encodeURIComponent(vm.name)}&last=1`, [`${TOKEN_HEADER}: ${token}`], 'export-bad.tar.gz');
	if (response.status !== 200) throw new Error(`HTTP ${response.status} (curl exit ${response.exitCode}: ${response.stderr})\n${server!.log().slice(-3000)}`);
	expect(response.exitCode).not.toBe(0);
	expect(response.stderr).toMatch(/transfer closed|outstanding read data|end of response|partial|chunk/i);
	expect(statSync(response.file).size).toBeGreaterThan(1024 * 1024);
	const partial = spawnSync('tar', ['-tf', response.file], { encoding: 'utf8' });
	expect(partial.status).not.toBe(0);
	// What did arrive is the start of the archive: the damaged image, never the manifest after it.
	expect(partial.stdout).not.toContain(`${corruptId}/manifest.json`);
});

test('a backup found corrupt before the first byte went out is answered with HTTP 500 and the reason', () => {
	const response = curl(`${server!.url}/webhook/libvirt-export-bad-gz?vm=${encodeURIComponent(vm.name)}&last=1`, [`${TOKEN_HEADER}: ${token}`], 'export-bad.json');
	expect(response.status).toBe(500);
	expect(response.headers['content-disposition']).toBeUndefined();
	expect(JSON.parse(readFileSync(response.file, 'utf8'))).toEqual({ error: expect.stringMatching(/sha256 .*manifest says/) });
});
