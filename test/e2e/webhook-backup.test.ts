// e2e: the shipped webhook-backup workflow in a REAL running n8n (`n8n start`), called over HTTP:
// Webhook (header auth) -> Backup VM Disk -> Verify Checksum -> Respond to Webhook with the result,
// or a non-2xx status with the reason (400 for a body without a usable vm, 422 when the backup fails).
import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { quoteArg as q } from '../../lib/shell';
import { createUserFolder, packPackage, REPO_ROOT, type N8nInstance, type N8nServer } from '../support/n8n';
import { labCredentialData } from '../support/targets';
import { createTestVm, host, testDestination, type TestVm } from '../support/testVm';
import { SHIPPED_DEST, TOKEN_HEADER } from '../support/shipped';

jest.setTimeout(600_000);

const WORKFLOW = path.join(REPO_ROOT, 'workflows', 'webhook-backup.json');
const token = randomBytes(18).toString('hex');

let n8n: N8nInstance | undefined;
let server: N8nServer | undefined;
let vm: TestVm;
let destination: { dest: string; cleanup(): void };

/** POST to the backup webhook; `body` is sent as given when a string (ill-formed JSON), else as JSON. */
async function post(body: unknown, headers: Record<string, string> = { [TOKEN_HEADER]: token }): Promise<{ status: number; json: Record<string, unknown> | undefined; text: string }> {
	const response = await fetch(`${server!.url}/webhook/libvirt-backup`, {
		method: 'POST',
		headers: { 'Content-Type': 'application/json', ...headers },
		body: typeof body === 'string' ? body : JSON.stringify(body),
		signal: AbortSignal.timeout(300_000),
	});
	const text = await response.text();
	let json: Record<string, unknown> | undefined;
	try {
		json = JSON.parse(text);
	} catch {
		json = undefined;
	}
	return { status: response.status, json, text };
}

beforeAll(async () => {
	destination = testDestination('webhook-e2e');
	vm = createTestVm('webhook', [{ target: 'vda', format: 'qcow2', virtualMiB: 16, writes: [{ pattern: 0x7e, offsetMiB: 0, lengthMiB: 1 }] }]);
	const tgz = await packPackage();
	n8n = await createUserFolder(tgz);
	await fs.rm(path.dirname(tgz), { recursive: true, force: true });
	const [libvirt, headerAuth] = await n8n.importCredentials([
		{ name: 'Libvirt host', type: 'libvirtSshApi', data: labCredentialData() },
		{ name: 'Backup webhook token', type: 'httpHeaderAuth', data: { name: TOKEN_HEADER, value: token } },
	]);
	const id = await n8n.importWorkflow(WORKFLOW, { REPLACE_CREDENTIAL_ID: libvirt.id, REPLACE_HEADER_AUTH_ID: headerAuth.id, [SHIPPED_DEST]: destination.dest });
	await n8n.publishWorkflow(id);
	server = await n8n.startServer({ waitForWebhooks: ['POST libvirt-backup'] });
}, 15 * 60_000);

afterAll(async () => {
	await server?.stop();
	await n8n?.cleanup();
	vm?.destroy();
	destination?.cleanup();
});

test('without the token the webhook refuses and backs up nothing', async () => {
	expect((await post({ vm: vm.name }, {})).status).toBe(403);
	expect((await post({ vm: vm.name }, { [TOKEN_HEADER]: 'wrong' })).status).toBe(403);
	expect(host(`ls -A ${q(destination.dest)}`).trim()).toBe('');
});

test('with the token a VM is backed up and verified; the answer is the result as JSON', async () => {
	const response = await post({ vm: vm.name, mode: 'auto' });
	if (response.status !== 200) throw new Error(`HTTP ${response.status}: ${response.text.slice(0, 2000)}\n${server!.log().slice(-4000)}`);
	expect(response.json).toMatchObject({ ok: true, vm: vm.name, kind: 'full', valid: true, status: 'valid', bytes: expect.any(Number), id: expect.stringMatching(/^\d{8}T\d{6}Z/) });
	expect(response.json!.path).toBe(`${destination.dest}/${vm.name}/${String(response.json!.id)}`);
	expect(response.json!.disks).toEqual([expect.objectContaining({ target: 'vda', ok: true, sha256: expect.stringMatching(/^[0-9a-f]{64}$/) })]);
	const manifest = JSON.parse(host(`cat ${q(`${String(response.json!.path)}/manifest.json`)}`));
	expect(manifest).toMatchObject({ id: response.json!.id, kind: 'full', vm: { name: vm.name } });
	expect(manifest.disks[0].sha256).toBe((response.json!.disks as Array<{ sha256: string }>)[0].sha256);
});

test('a VM that does not exist: 422 with the reason', async () => {
	const missing = `lvb-t-missing-${process.pid}`;
	const response = await post({ vm: missing });
	expect(response.status).toBe(422);
	expect(response.json).toMatchObject({ ok: false, reason: 'failed', vm: missing, error: expect.stringContaining(`VM not found: ${missing}`) });
});

test('a body without a usable vm, or with an unknown mode: 400 with what to send, and no backup', async () => {
	for (const body of [{}, { vm: '' }, { vm: '   ' }, { vm: 42 }, { vm: ['a'] }, { vms: vm.name }, { vm: vm.name, mode: 'everything' }]) {
		const response = await post(body);
		expect([JSON.stringify(body), response.status]).toEqual([JSON.stringify(body), 400]);
		expect(response.json).toMatchObject({ ok: false, reason: 'bad request', error: expect.stringContaining('"vm"') });
	}
	const notJson = await post('{"vm": ');
	expect(notJson.status).toBeGreaterThanOrEqual(400);
	expect(notJson.status).toBeLessThan(500);
	expect(host(`ls -A ${q(`${destination.dest}/${vm.name}`)}`).split('\n').filter((name) => /^\d{8}T/.test(name))).toHaveLength(1);
});
