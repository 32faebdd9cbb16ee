/**
 * Real notification receivers on loopback for the shipped workflows: an SMTP server (smtp-server,
 * messages parsed with mailparser) for the Send Email nodes and an HTTP server for the chat webhooks.
 * Used by the e2e tests (which assert on what arrived) and by `npm run demo` (which prints it).
 */
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { simpleParser } from 'mailparser';
import { SMTPServer } from 'smtp-server';

export interface ReceivedMail {
	from: string;
	to: string[];
	subject: string;
	/** The decoded plain-text body (n8n's Send Email in text format), or the HTML one's text. */
	text: string;
	html: string;
}

export interface MailReceiver {
	host: string;
	port: number;
	readonly mails: ReceivedMail[];
	/** Resolves with the first mail (already received or arriving later) that `match` accepts. */
	waitFor(match: (mail: ReceivedMail) => boolean, timeoutMs?: number): Promise<ReceivedMail>;
	close(): Promise<void>;
}

export interface ReceivedPost {
	path: string;
	headers: http.IncomingHttpHeaders;
	/** The body parsed as JSON where it is JSON, else the raw text. */
	body: unknown;
	raw: string;
}

export interface HttpReceiver {
	/** Base URL, e.g. http://127.0.0.1:PORT ; any path is accepted and recorded. */
	url: string;
	readonly posts: ReceivedPost[];
	waitFor(match: (post: ReceivedPost) => boolean, timeoutMs?: number): Promise<ReceivedPost>;
	close(): Promise<void>;
}

function waiter<T>(items: T[], listeners: Set<() => void>) {
	return (match: (item: T) => boolean, timeoutMs = 60_000): Promise<T> =>
		new Promise((resolve, reject) => {
			const check = () => {
				const found = items.find(match);
				if (!found) return false;
				listeners.delete(check);
				clearTimeout(timer);
				resolve(found);
				return true;
			};
			const timer = setTimeout(() => {
				listeners.delete(check);
				reject(new Error(`nothing matching arrived within ${timeoutMs} ms; received ${items.length}: ${JSON.stringify(items).slice(0, 2000)}`));
			}, timeoutMs);
			listeners.add(check);
			check();
		});
}

/** An SMTP server on 127.0.0.1 without TLS or authentication (n8n's SMTP credential: secure off, any user). */
export async function startMailReceiver(port = 0): Promise<MailReceiver> {
	const mails: ReceivedMail[] = [];
	const listeners = new Set<() => void>();
	const server = new SMTPServer({
		authOptional: true,
		disabledCommands: ['STARTTLS'],
		logger: false,
		onAuth(_auth, _session, callback) {
			callback(null, { user: 'any' });
		},
		onData(stream, session, callback) {
			simpleParser(stream)
				.then((parsed) => {
					const envelope = session.envelope;
					mails.push({
						from: parsed.from?.text ?? (envelope.mailFrom ? envelope.mailFrom.address : ''),
						// the envelope's recipients: they include Bcc, which the headers do not
						to: envelope.rcptTo.map((address) => address.address),
						subject: parsed.subject ?? '',
						text: parsed.text ?? '',
						html: typeof parsed.html === 'string' ? parsed.html : '',
					});
					for (const listener of [...listeners]) listener();
					callback();
				})
				.catch((error: Error) => callback(error));
		},
	});
	await new Promise<void>((resolve, reject) => {
		server.once('error', reject);
		server.listen(port, '127.0.0.1', () => resolve());
	});
	const address = server.server.address() as AddressInfo;
	return {
		host: '127.0.0.1',
		port: address.port,
		mails,
		waitFor: waiter(mails, listeners),
		close: () => new Promise((resolve) => server.close(() => resolve())),
	};
}

/** An HTTP server on 127.0.0.1 that answers 200 "ok" to every request and records it. */
export async function startHttpReceiver(port = 0): Promise<HttpReceiver> {
	const posts: ReceivedPost[] = [];
	const listeners = new Set<() => void>();
	const server = http.createServer((request, response) => {
		const chunks: Buffer[] = [];
		request.on('data', (chunk: Buffer) => chunks.push(chunk));
		request.on('end', () => {
			const raw = Buffer.concat(chunks).toString('utf8');
			let body: unknown = raw;
			try {
				body = JSON.parse(raw);
			} catch {
				// not JSON: kept as text
			}
			posts.push({ path: request.url ?? '/', headers: request.headers, body, raw });
			response.end('ok');
			for (const listener of [...listeners]) listener();
		});
	});
	await new Promise<void>((resolve, reject) => {
		server.once('error', reject);
		server.listen(port, '127.0.0.1', () => resolve());
	});
	return {
		url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
		posts,
		waitFor: waiter(posts, listeners),
		close: () => new Promise((resolve) => server.close(() => resolve())),
	};
}
