import type { IExecuteFunctions } from 'n8n-workflow';
import type { ServerResponse } from 'http';
import { Readable, type Writable } from 'stream';
import { LibvirtBackupError } from '../../lib/errors';

/** How long n8n gets to take the response (it does within milliseconds when a webhook call waits). */
const TAKE_WAIT_MS = 10_000;

/**
 * A stand-in body for `sendResponse`: n8n (regular mode, Webhook "Respond: Using 'Respond to
 * Webhook' Node") pipes a Readable body into the HTTP response. This one only takes hold of the
 * response it is piped into, so that the archive can be written into it directly (from the export's
 * shared ring, without a copy), cut on failure (the client then sees an incomplete transfer, never a
 * short archive that looks complete), and ended when it is complete: n8n ends the response on the
 * tick after it starts the pipe, as it would for a body that is already whole, and that end is held.
 */
class ResponseBody extends Readable {
	private onTaken?: (taken: { response: Writable; end: () => void }) => void;
	/** The response n8n piped this into, and its real end (the one n8n calls is held). */
	readonly taken = new Promise<{ response: Writable; end: () => void }>((resolve) => (this.onTaken = resolve));

	override _read(): void {
		// Nothing flows through the pipe: the archive is written into the response itself.
	}

	override pipe<T extends NodeJS.WritableStream>(destination: T): T {
		const response = destination as unknown as Writable;
		const end = response.end.bind(response) as () => Writable;
		response.end = (() => response) as Writable['end'];
		this.onTaken?.({ response, end: () => void end() });
		return destination;
	}
}

/** Refuses, before anything is read, a workflow whose start can take no streamed response. */
export function checkResponseTarget(context: IExecuteFunctions): void {
	const needs = 'Destination "Webhook Response (Streamed)" needs the workflow to start from a Webhook node with Respond set to "Using \'Respond to Webhook\' Node"';
	if (process.env.EXECUTIONS_MODE === 'queue') {
		throw new LibvirtBackupError('INVALID_INPUT', `${needs}, in n8n's regular mode: in queue mode a worker cannot stream a response. Use "N8n Binary Data" with Respond to Webhook instead.`);
	}
	const parents = context.getParentNodes(context.getNode().name, { includeNodeParameters: true });
	const webhook = parents.find((node) => node.type === 'n8n-nodes-base.webhook' && (node as { parameters?: { responseMode?: unknown } }).parameters?.responseMode === 'responseNode');
	if (!webhook) throw new LibvirtBackupError('INVALID_INPUT', `${needs}.`);
}

/**
 * Sends the webhook's response (status 200, `headers`) and has `write` write the body into it;
 * ends the response when `write` resolves, cuts it when `write` fails. Fails when n8n does not take
 * the response (no webhook caller waits, e.g. a manual run from the editor).
 */
export async function streamResponse<T>(context: IExecuteFunctions, headers: Record<string, string>, write: (response: Writable) => Promise<T>): Promise<T> {
	const body = new ResponseBody();
	await context.sendResponse({ body: body as unknown as Buffer, headers, statusCode: 200 });
	let timer: NodeJS.Timeout | undefined;
	const taken = await Promise.race([body.taken, new Promise<undefined>((resolve) => (timer = setTimeout(() => resolve(undefined), TAKE_WAIT_MS)))]);
	clearTimeout(timer);
	if (!taken) {
		throw new LibvirtBackupError(
			'INVALID_INPUT',
			'Nobody took the streamed response: "Webhook Response (Streamed)" works when the workflow runs from a call to its Webhook (a manual run from the editor has no caller).',
		);
	}
	const { response, end } = taken;
	const result = await write(response).catch(async (error: Error) => {
		const http = response as Writable & Partial<Pick<ServerResponse, 'headersSent' | 'statusCode' | 'setHeader' | 'removeHeader'>>;
		if (http.headersSent === false && http.setHeader && http.removeHeader) {
			// Nothing sent yet: a plain error answer instead of the archive.
			http.statusCode = 500;
			http.removeHeader('content-disposition');
			http.setHeader('content-type', 'application/json; charset=utf-8');
			http.write(JSON.stringify({ error: error.message }));
			end();
		} else {
			// Cut, not ended: the client sees an incomplete transfer, never a short archive that looks whole.
			response.destroy(error);
		}
		return await Promise.reject(error);
	});
	end();
	return result;
}
