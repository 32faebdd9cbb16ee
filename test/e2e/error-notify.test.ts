// e2e: the shipped error-notify workflow in a REAL running n8n. Two copies of webhook-backup whose
// Backup VM Disk stops the run on error (instead of its error output) fail uncaught when called over
// HTTP; n8n then runs the error workflow they name (LvbErrorNotify01), whose email and chat message
// arrive at real receivers on loopback with the workflow, the node, the VM (or that it is not known)
// and the error.
import { randomBytes, randomUUID } from 'node:crypto';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { createUserFolder, packPackage, REPO_ROOT, type N8nInstance, type N8nServer } from '../support/n8n';
import { startHttpReceiver, startMailReceiver, type HttpReceiver, type MailReceiver } from '../support/receivers';
import { labCredentialData } from '../support/targets';
import { SHIPPED_DEST, SHIPPED_HOOK, TOKEN_HEADER } from '../support/shipped';

jest.setTimeout(600_000);

const ERROR_WORKFLOW = path.join(REPO_ROOT, 'workflows', 'error-notify.json');
const WEBHOOK_WORKFLOW = path.join(REPO_ROOT, 'workflows', 'webhook-backup.json');
const token = randomBytes(18).toString('hex');
const MISSING_VM = `lvb-t-missing-${process.pid}`;

let n8n: N8nInstance | undefined;
let server: N8nServer | undefined;
let chat: HttpReceiver;
let mail: MailReceiver;

interface Node {
	name: string;
	type: string;
	onError?: string;
	webhookId?: string;
	parameters: Record<string, unknown>;
}

/** webhook-backup under another name and path, its Backup VM Disk stopping the run on error, at `destination`. */
async function failingCopy(name: string, hookPath: string, destination: string): Promise<Record<string, unknown>> {
	const workflow = JSON.parse(await fs.readFile(WEBHOOK_WORKFLOW, 'utf8')) as { name: string; nodes: Node[]; settings: Record<string, unknown> };
	workflow.name = name;
	for (const node of workflow.nodes) {
		if (node.type === 'n8n-nodes-base.webhook') {
			node.parameters.path = hookPath;
			node.webhookId = randomUUID();
		}
		if (node.name === 'Backup VM Disk') {
			delete node.onError;
			node.parameters.destination = destination;
		}
	}
	expect(workflow.settings.errorWorkflow).toBe('LvbErrorNotify01');
	return workflow;
}

async function call(hookPath: string, body: unknown): Promise<number> {
	const response = await fetch(`${server!.url}/webhook/${hookPath}`, {
		method: 'POST',
		headers: { 'Content-Type': 'application/json', [TOKEN_HEADER]: token },
		body: JSON.stringify(body),
		signal: AbortSignal.timeout(120_000),
	});
	await response.text();
	return response.status;
}

beforeAll(async () => {
	[chat, mail] = await Promise.all([startHttpReceiver(), startMailReceiver()]);
	const tgz = await packPackage();
	n8n = await createUserFolder(tgz);
	await fs.rm(path.dirname(tgz), { recursive: true, force: true });
	const [libvirt, headerAuth, smtp] = await n8n.importCredentials([
		{ name: 'Libvirt host', type: 'libvirtSshApi', data: labCredentialData() },
		{ name: 'Backup webhook token', type: 'httpHeaderAuth', data: { name: TOKEN_HEADER, value: token } },
		{ name: 'SMTP', type: 'smtp', data: { host: mail.host, port: mail.port, secure: false, disableStartTls: true, user: 'any', password: 'any' } },
	]);
	const replace = { REPLACE_CREDENTIAL_ID: libvirt.id, REPLACE_HEADER_AUTH_ID: headerAuth.id, REPLACE_SMTP_CREDENTIAL_ID: smtp.id, [SHIPPED_HOOK]: `${chat.url}/hook` };
	const ids = await n8n.importWorkflows([
		{ workflow: ERROR_WORKFLOW, replace },
		{ workflow: await failingCopy('Backup on request (VM missing)', 'backup-missing-vm', SHIPPED_DEST), replace },
		{ workflow: await failingCopy('Backup on request (bad destination)', 'backup-bad-dest', 'relative/backups'), replace },
	]);
	expect(ids[0]).toBe('LvbErrorNotify01');
	// n8n runs only a published error workflow.
	for (const id of ids) await n8n.publishWorkflow(id);
	server = await n8n.startServer({ waitForWebhooks: ['POST backup-missing-vm', 'POST backup-bad-dest'] });
}, 15 * 60_000);

afterAll(async () => {
	await server?.stop();
	await n8n?.cleanup();
	await chat?.close();
	await mail?.close();
});

test('a backup of a VM that does not exist fails the run: email and chat name the workflow, the node, the VM and the error', async () => {
	expect(await call('backup-missing-vm', { vm: MISSING_VM })).toBeGreaterThanOrEqual(500);
	const email = await mail.waitFor((m) => m.subject.includes('Backup on request (VM missing)'));
	expect(email).toMatchObject({ to: ['backup-admin@example.com'], subject: 'n8n workflow "Backup on request (VM missing)" failed at "Backup VM Disk"' });
	expect(email.text).toContain('Workflow: Backup on request (VM missing)\nNode: Backup VM Disk\n');
	expect(email.text).toContain(`VM: ${MISSING_VM}\n`);
	expect(email.text).toMatch(new RegExp(`Error: VM not found: ${MISSING_VM} \\(on `));
	const post = await chat.waitFor((p) => String((p.body as { text?: unknown }).text).includes('Backup on request (VM missing)'));
	expect((post.body as { text: string }).text).toMatch(new RegExp(`^Workflow "Backup on request \\(VM missing\\)" failed at node "Backup VM Disk" \\(VM: ${MISSING_VM}\\): VM not found: ${MISSING_VM} \\(on `));
});

test('an error that names no VM says the VM is not known', async () => {
	expect(await call('backup-bad-dest', { vm: 'lvb-paused' })).toBeGreaterThanOrEqual(500);
	const email = await mail.waitFor((m) => m.subject.includes('Backup on request (bad destination)'));
	expect(email.text).toContain('Node: Backup VM Disk\nVM: not known');
	expect(email.text).toContain('Error: Destination must be an absolute path on the host, got "relative/backups"');
	const post = await chat.waitFor((p) => String((p.body as { text?: unknown }).text).includes('Backup on request (bad destination)'));
	expect((post.body as { text: string }).text).toContain('failed at node "Backup VM Disk" (VM: not known');
});
