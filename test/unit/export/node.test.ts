/** The Export Archive node's pure parts: n8n's binary data limit per mode, the archive's name and its download header, and when a streamed response is possible. */
import { constants as bufferConstants } from 'buffer';
import { binaryDataLimit } from '../../../nodes/LibvirtExportArchive/binaryDataLimit';
import type { IExecuteFunctions } from 'n8n-workflow';
import { archiveName, contentDisposition } from '../../../nodes/LibvirtExportArchive/LibvirtExportArchive.node';
import { checkResponseTarget } from '../../../nodes/LibvirtExportArchive/responseBody';

describe('binaryDataLimit (n8n 2.41 binary data modes)', () => {
	test('filesystem by default, database in queue mode (512 MiB unless configured), memory mode by V8 string length', () => {
		expect(binaryDataLimit({})).toMatchObject({ mode: 'filesystem', buffered: false });
		expect(binaryDataLimit({}).maxBytes).toBeUndefined();
		expect(binaryDataLimit({ EXECUTIONS_MODE: 'queue' })).toMatchObject({ mode: 'database', maxBytes: 512 * 1024 * 1024, buffered: true });
		expect(binaryDataLimit({ EXECUTIONS_MODE: 'queue', N8N_BINARY_DATA_DATABASE_MAX_FILE_SIZE: '1024' })).toMatchObject({ maxBytes: 1024 * 1024 * 1024 });
		expect(binaryDataLimit({ N8N_DEFAULT_BINARY_DATA_MODE: 'default' })).toMatchObject({ maxBytes: Math.floor(bufferConstants.MAX_STRING_LENGTH / 4) * 3, buffered: true });
		expect(binaryDataLimit({ EXECUTIONS_MODE: 'queue', N8N_DEFAULT_BINARY_DATA_MODE: 's3' })).toMatchObject({ mode: 's3', buffered: false });
	});
});

describe('archiveName', () => {
	const now = new Date('2026-11-28T14:43:05.123Z');
	test('default name as the old tool named it; the extension follows the compression', () => {
		expect(archiveName('', '.tar.gz', now)).toBe('backups-export-2026-11-28T14-43-05.tar.gz');
		expect(archiveName(' nightly ', '.tar.zst', now)).toBe('nightly.tar.zst');
		expect(archiveName('nightly.tar', '.tar', now)).toBe('nightly.tar');
	});
	test('refuses a path', () => {
		expect(() => archiveName('../x', '.tar', now)).toThrow(/plain file name/);
	});
});

describe('contentDisposition', () => {
	test.each([
		['backups-export-2026-11-28T14-43-05.tar.gz', `attachment; filename="backups-export-2026-11-28T14-43-05.tar.gz"; filename*=UTF-8''backups-export-2026-11-28T14-43-05.tar.gz`],
		['web "01".tar', `attachment; filename="web _01_.tar"; filename*=UTF-8''web%20%2201%22.tar`],
		['a\\b;c.tar', `attachment; filename="a_b;c.tar"; filename*=UTF-8''a%5Cb%3Bc.tar`],
		['sauvegarde-été.tar', `attachment; filename="sauvegarde-_t_.tar"; filename*=UTF-8''sauvegarde-%C3%A9t%C3%A9.tar`],
	])('%j', (name, header) => {
		expect(contentDisposition(name)).toBe(header);
	});
});

describe('checkResponseTarget', () => {
	const context = (parents: Array<{ type: string; parameters?: Record<string, unknown> }>) =>
		({ getNode: () => ({ name: 'Export Archive' }), getParentNodes: () => parents }) as unknown as IExecuteFunctions;
	const queueMode = process.env.EXECUTIONS_MODE;
	afterEach(() => {
		if (queueMode === undefined) delete process.env.EXECUTIONS_MODE;
		else process.env.EXECUTIONS_MODE = queueMode;
	});

	test('a Webhook answering through a response node upstream: accepted', () => {
		delete process.env.EXECUTIONS_MODE;
		expect(() => checkResponseTarget(context([{ type: 'n8n-nodes-base.webhook', parameters: { responseMode: 'responseNode' } }]))).not.toThrow();
	});
	test.each([
		['no webhook (a schedule)', [{ type: 'n8n-nodes-base.scheduleTrigger' }]],
		['a webhook that answers at once', [{ type: 'n8n-nodes-base.webhook', parameters: { responseMode: 'onReceived' } }]],
		['a webhook that answers with the last node', [{ type: 'n8n-nodes-base.webhook', parameters: { responseMode: 'lastNode' } }]],
	])('%s: refused with what it needs', (_name, parents) => {
		delete process.env.EXECUTIONS_MODE;
		expect(() => checkResponseTarget(context(parents))).toThrow(/Webhook node with Respond set to "Using 'Respond to Webhook' Node"/);
	});
	test('queue mode: refused, pointing at n8n binary data', () => {
		process.env.EXECUTIONS_MODE = 'queue';
		expect(() => checkResponseTarget(context([{ type: 'n8n-nodes-base.webhook', parameters: { responseMode: 'responseNode' } }]))).toThrow(/queue mode .*N8n Binary Data/);
	});
});
