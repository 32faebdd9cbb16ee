/**
 * n8n's own REST API (the one its editor uses), as the owner: what a person does in the
 * Executions list. Used by the faults suite to find a running execution and stop it.
 */
import { request } from 'node:http';
import type { N8nServer } from './n8n';

interface HttpAnswer {
	status: number;
	setCookies: string[];
	text: string;
}

/**
 * One HTTP request on a connection of its own (no keep-alive): a pooled connection that the server
 * closes as idle just as it is reused fails the request ("other side closed"), which a test must
 * never mistake for the fault's doing.
 */
function httpCall(url: string, options: { method: 'GET' | 'POST'; headers?: Record<string, string>; body?: string; timeoutMs: number }): Promise<HttpAnswer> {
	return new Promise((resolve, reject) => {
		const call = request(url, { method: options.method, headers: { connection: 'close', ...options.headers }, agent: false, timeout: options.timeoutMs }, (response) => {
			let text = '';
			response.setEncoding('utf8');
			response.on('data', (chunk: string) => (text += chunk));
			response.on('end', () => resolve({ status: response.statusCode ?? 0, setCookies: response.headers['set-cookie'] ?? [], text }));
			response.on('error', reject);
		});
		call.on('timeout', () => call.destroy(new Error(`no answer within ${options.timeoutMs / 1000} s`)));
		call.on('error', reject);
		call.end(options.body);
	});
}

export const FAULTS_OWNER = { email: 'faults@example.com', password: 'LibvirtFaults1', firstName: 'Faults', lastName: 'Owner' };

export interface ExecutionSummary {
	id: string;
	workflowId: string;
	status: string;
	startedAt?: string;
	stoppedAt?: string | null;
}

export interface WebhookAnswer {
	/** 0 when no HTTP answer came (the connection failed or was cut). */
	status: number;
	json: Record<string, unknown> | undefined;
	text: string;
	ms: number;
}

/** A logged-in owner session on one running n8n. */
export class N8nRest {
	private constructor(
		readonly server: N8nServer,
		private readonly cookie: string,
	) {}

	/** Sets up the instance's owner (a fresh instance has none) and keeps the session cookie. */
	static async ownerSetup(server: N8nServer): Promise<N8nRest> {
		// /healthz answers before the database is ready; REST calls before that get 503.
		const deadline = Date.now() + 120_000;
		while ((await fetch(`${server.url}/healthz/readiness`).catch(() => undefined))?.status !== 200) {
			if (Date.now() > deadline) throw new Error(`n8n at ${server.url} did not become ready:\n${server.log().slice(-4000)}`);
			await new Promise((resolve) => setTimeout(resolve, 250));
		}
		const response = await httpCall(`${server.url}/rest/owner/setup`, {
			method: 'POST',
			headers: { 'content-type': 'application/json' },
			body: JSON.stringify(FAULTS_OWNER),
			timeoutMs: 60_000,
		});
		if (response.status !== 200) throw new Error(`owner setup failed: HTTP ${response.status} ${response.text}`);
		const cookie = response.setCookies.map((line) => line.split(';')[0]).find((pair) => pair.startsWith('n8n-auth='));
		if (!cookie) throw new Error('owner setup set no n8n-auth cookie');
		return new N8nRest(server, cookie);
	}

	private async call<T>(method: 'GET' | 'POST', route: string): Promise<T> {
		const response = await httpCall(`${this.server.url}/rest/${route}`, { method, headers: { cookie: this.cookie }, timeoutMs: 30_000 });
		if (response.status !== 200) throw new Error(`${method} /rest/${route}: HTTP ${response.status} ${response.text.slice(0, 500)}`);
		return (JSON.parse(response.text) as { data: T }).data;
	}

	async executions(workflowId: string, status?: string[]): Promise<ExecutionSummary[]> {
		const filter = encodeURIComponent(JSON.stringify({ workflowId, ...(status ? { status } : {}) }));
		return (await this.call<{ results: ExecutionSummary[] }>('GET', `executions?filter=${filter}&limit=50`)).results;
	}

	async execution(id: string): Promise<ExecutionSummary> {
		return await this.call<ExecutionSummary>('GET', `executions/${id}`);
	}

	/** The execution of `workflowId` that is running, once there is exactly one (waits up to `timeoutMs`). */
	async runningExecution(workflowId: string, timeoutMs = 60_000): Promise<ExecutionSummary> {
		const deadline = Date.now() + timeoutMs;
		for (;;) {
			const running = await this.executions(workflowId, ['running']);
			if (running.length === 1) return running[0];
			if (Date.now() > deadline) throw new Error(`waited ${timeoutMs / 1000} s for one running execution of workflow ${workflowId}; found ${running.length}`);
			await new Promise((resolve) => setTimeout(resolve, 250));
		}
	}

	/** The execution's status once it is no longer running (waits up to `timeoutMs`). */
	async finishedStatus(id: string, timeoutMs: number): Promise<string> {
		const deadline = Date.now() + timeoutMs;
		for (;;) {
			const { status } = await this.execution(id);
			if (!['new', 'running'].includes(status)) return status;
			if (Date.now() > deadline) throw new Error(`waited ${timeoutMs / 1000} s for execution ${id} to end; it is still ${status}`);
			await new Promise((resolve) => setTimeout(resolve, 250));
		}
	}

	/** Stop, as the editor's Stop button does. */
	async stop(id: string): Promise<{ status: string }> {
		return await this.call<{ status: string }>('POST', `executions/${id}/stop`);
	}
}

/** POSTs JSON to a webhook path; never throws: a connection cut by the fault is an answer too (status 0). */
export async function postWebhook(url: string, hookPath: string, headers: Record<string, string>, body: unknown, timeoutMs = 300_000): Promise<WebhookAnswer> {
	const started = Date.now();
	try {
		const response = await httpCall(`${url}/webhook/${hookPath}`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body), timeoutMs });
		let json: Record<string, unknown> | undefined;
		try {
			json = JSON.parse(response.text);
		} catch {
			json = undefined;
		}
		return { status: response.status, json, text: response.text, ms: Date.now() - started };
	} catch (error) {
		return { status: 0, json: undefined, text: String(error), ms: Date.now() - started };
	}
}
