/** The Export Archive node's pure parts: n8n's binary data limit per mode, and the archive's name. */
import { constants as bufferConstants } from 'buffer';
import { binaryDataLimit } from '../../../nodes/LibvirtExportArchive/binaryDataLimit';
import { archiveName } from '../../../nodes/LibvirtExportArchive/LibvirtExportArchive.node';

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
