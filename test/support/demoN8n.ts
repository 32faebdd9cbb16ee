/**
 * The demo's n8n, in one place for `npm run demo`, `npm run screenshots` and the browser test: a
 * fresh user folder with the packed package, the credentials the shipped workflows name (lab host,
 * SMTP to a local receiver, webhook header token, off-site host = the lab's replica sshd, as an
 * export target and as a libvirt host),
 * every workflows/*.json imported with its placeholders replaced, the nightly workflow and every
 * webhook workflow published, and — once `serve()` starts the server — an owner account, so the
 * editor opens on its login page.
 */
import { randomBytes } from 'node:crypto';
import { promises as fs, readdirSync } from 'node:fs';
import { createServer } from 'node:net';
import * as path from 'node:path';
import { loadLab } from './lab';
import { createUserFolder, packPackage, REPO_ROOT, type N8nInstance, type N8nServer } from './n8n';
import { startHttpReceiver, startMailReceiver, type HttpReceiver, type MailReceiver } from './receivers';
import { labCredentialData } from './targets';
import { SHIPPED_DEST, SHIPPED_HOOK, SHIPPED_OFFSITE, TOKEN_HEADER } from './shipped';

export const WORKFLOWS_DIR = path.join(REPO_ROOT, 'workflows');
export const NIGHTLY_FILE = 'nightly-backup.json';
/** The port `npm run demo` serves the editor on (n8n's default, what the README links to). */
export const DEMO_PORT = 5678;
/** A fixed login, printed by the demo: the instance listens on loopback only. */
export const DEMO_OWNER = { email: 'demo@example.com', password: 'LibvirtDemo1', firstName: 'Demo', lastName: 'Owner' };

export interface DemoWorkflow {
	/** File name without `.json`, e.g. `nightly-backup`. */
	name: string;
	file: string;
	id: string;
	/** The workflow's own name (as the editor lists it). */
	title: string;
	published: boolean;
	/** Its webhooks (`<method> /webhook/<path>` once published). */
	webhooks: Array<{ method: string; path: string }>;
}

export interface DemoN8n {
	n8n: N8nInstance;
	mail: MailReceiver;
	chat: HttpReceiver;
	/** The header credential's name and value (`curl -H "<name>: <value>"`). */
	webhookToken: { name: string; value: string };
	workflows: DemoWorkflow[];
	nightly: DemoWorkflow;
	/** Where the shipped destinations point in the lab. */
	backupsDir: string;
	offsiteDir: string;
	/** The running server (after serve()). */
	server?: N8nServer;
	/** Starts `n8n start` (on `port`, else a free one) and sets up the owner account. */
	serve(port?: number): Promise<N8nServer>;
	/** Stops the server (if any), closes the receivers, removes the user folder. */
	close(): Promise<void>;
}

interface WorkflowJson {
	name?: string;
	nodes?: Array<{ type?: string; parameters?: { path?: unknown; authentication?: unknown; httpMethod?: unknown } }>;
}

/** Fails with a clear message when `port` on 127.0.0.1 is taken (e.g. another n8n). */
export async function assertPortFree(port: number): Promise<void> {
	await new Promise<void>((resolve, reject) => {
		const probe = createServer();
		probe.once('error', (error: NodeJS.ErrnoException) =>
			reject(
				new Error(
					error.code === 'EADDRINUSE'
						? `port ${port} on 127.0.0.1 is already in use (another n8n or demo still running?): stop it and run the demo again`
						: `cannot listen on 127.0.0.1:${port}: ${error.message}`,
				),
			),
		);
		probe.listen(port, '127.0.0.1', () => probe.close(() => resolve()));
	});
}

export function shippedWorkflowFiles(): string[] {
	return readdirSync(WORKFLOWS_DIR)
		.filter((file) => file.endsWith('.json'))
		.sort()
		.map((file) => path.join(WORKFLOWS_DIR, file));
}

const WEBHOOK_TYPE = 'n8n-nodes-base.webhook';

export interface DemoOptions {
	backupsDir?: string;
	offsiteDir?: string;
	/**
	 * Replace only the credential ids and keep the shipped destinations and chat hook, so that the
	 * canvas shows what a user imports (the screenshots); the workflows then cannot run.
	 */
	shippedText?: boolean;
	/** Changes a workflow (by file name without `.json`) before it is imported, e.g. narrows a test's Discover. */
	edit?: (name: string, workflow: Record<string, unknown>) => void;
}

export async function createDemoN8n(options: DemoOptions = {}): Promise<DemoN8n> {
	const lab = loadLab();
	const backupsDir = options.backupsDir ?? `${lab.labDir}/demo-backups`;
	const offsiteDir = options.offsiteDir ?? `${lab.labDir}/demo-offsite`;
	const mail = await startMailReceiver();
	const chat = await startHttpReceiver();
	let n8n: N8nInstance | undefined;
	let server: N8nServer | undefined;
	const close = async () => {
		await server?.stop();
		await Promise.all([mail.close(), chat.close()]);
		await n8n?.cleanup();
	};
	try {
		const tgz = await packPackage();
		try {
			n8n = await createUserFolder(tgz);
		} finally {
			await fs.rm(path.dirname(tgz), { recursive: true, force: true });
		}
		const replica = lab.replicaHost;
		const onReplica = labCredentialData(replica ? { host: replica.host, port: replica.port, hostKeys: replica.knownHostsLine } : {});
		const webhookToken = { name: TOKEN_HEADER, value: randomBytes(18).toString('base64url') };
		const [libvirt, smtp, header, target, offsite] = await n8n.importCredentials([
			{ name: 'Libvirt host', type: 'libvirtSshApi', data: labCredentialData() },
			{
				name: 'SMTP',
				type: 'smtp',
				data: { host: mail.host, port: mail.port, secure: false, disableStartTls: true, user: 'any', password: 'any' },
			},
			{ name: 'Backup webhook token', type: 'httpHeaderAuth', data: webhookToken },
			{ name: 'Off-site host', type: 'libvirtSshTargetApi', data: onReplica },
			// offsite-copy verifies its copies on the off-site host with the libvirt nodes
			{ name: 'Off-site host (Libvirt SSH)', type: 'libvirtSshApi', data: onReplica },
		]);
		const replace: Record<string, string> = {
			REPLACE_CREDENTIAL_ID: libvirt.id,
			REPLACE_SMTP_CREDENTIAL_ID: smtp.id,
			REPLACE_HEADER_AUTH_ID: header.id,
			REPLACE_TARGET_CREDENTIAL_ID: target.id,
			REPLACE_OFFSITE_CREDENTIAL_ID: offsite.id,
		};
		if (!options.shippedText) {
			replace[SHIPPED_DEST] = backupsDir;
			replace[SHIPPED_OFFSITE] = offsiteDir;
			replace[SHIPPED_HOOK] = `${chat.url}/hooks/chat`;
		}
		const files = shippedWorkflowFiles();
		const parsed: WorkflowJson[] = [];
		for (const file of files) {
			let text = await fs.readFile(file, 'utf8');
			for (const [from, to] of Object.entries(replace)) text = text.split(from).join(to);
			// A placeholder added to a workflow without a value here would reach n8n as a dead reference.
			const left = (options.shippedText ? text.split(SHIPPED_HOOK).join('') : text).match(/REPLACE_[A-Z_]+/);
			if (left) throw new Error(`${path.relative(REPO_ROOT, file)}: placeholder ${left[0]} has no demo value (add it in test/support/demoN8n.ts)`);
			const workflow = JSON.parse(text);
			options.edit?.(path.basename(file, '.json'), workflow);
			parsed.push(workflow);
		}
		const ids = await n8n.importWorkflows(parsed.map((workflow) => ({ workflow: workflow as Record<string, unknown> })));
		const workflows: DemoWorkflow[] = files.map((file, i) => {
			const webhooks = (parsed[i].nodes ?? [])
				.filter((node) => node.type === WEBHOOK_TYPE)
				.map((node) => ({ method: String(node.parameters?.httpMethod ?? 'GET'), path: String(node.parameters?.path ?? ''), auth: node.parameters?.authentication }));
			return {
				name: path.basename(file, '.json'),
				file,
				id: ids[i],
				title: parsed[i].name ?? path.basename(file, '.json'),
				published: path.basename(file) === NIGHTLY_FILE || webhooks.length > 0,
				webhooks: webhooks.map(({ method, path }) => ({ method, path })),
			};
		});
		const nightly = workflows.find((workflow) => path.basename(workflow.file) === NIGHTLY_FILE);
		if (!nightly) throw new Error(`workflows/${NIGHTLY_FILE} is missing`);
		for (const workflow of workflows) if (workflow.published) await n8n.publishWorkflow(workflow.id);
		// Only webhooks behind header auth can be probed without running their workflow; startServer
		// probes with GET, or POST for a `POST <path>` entry.
		const probeable = parsed.flatMap((workflow) =>
			(workflow.nodes ?? [])
				.filter((node) => node.type === WEBHOOK_TYPE && node.parameters?.authentication === 'headerAuth')
				.filter((node) => ['GET', 'POST'].includes(String(node.parameters?.httpMethod ?? 'GET')))
				.map((node) => `${node.parameters?.httpMethod === 'POST' ? 'POST ' : ''}${String(node.parameters?.path)}`),
		);
		const instance = n8n;
		const demo: DemoN8n = {
			n8n: instance,
			mail,
			chat,
			webhookToken,
			workflows,
			nightly,
			backupsDir,
			offsiteDir,
			async serve(port?: number) {
				if (port !== undefined) await assertPortFree(port);
				server = await instance.startServer({
					port,
					waitForWebhooks: probeable,
					env: { N8N_PERSONALIZATION_ENABLED: 'false' },
				});
				demo.server = server;
				// /healthz answers before the database is ready; REST calls before that get 503.
				const deadline = Date.now() + 120_000;
				while ((await fetch(`${server.url}/healthz/readiness`).catch(() => undefined))?.status !== 200) {
					if (Date.now() > deadline) throw new Error(`n8n at ${server.url} did not become ready:\n${server.log().slice(-4000)}`);
					await new Promise((resolve) => setTimeout(resolve, 250));
				}
				const setup = await fetch(`${server.url}/rest/owner/setup`, {
					method: 'POST',
					headers: { 'content-type': 'application/json' },
					body: JSON.stringify(DEMO_OWNER),
				});
				if (!setup.ok) throw new Error(`owner setup failed: HTTP ${setup.status} ${await setup.text()}`);
				return server;
			},
			close,
		};
		return demo;
	} catch (error) {
		await close();
		throw error;
	}
}

