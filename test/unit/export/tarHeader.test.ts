/** Our tar headers against tar-stream's for the same entries, byte for byte (archive.ts writes headers apart from the data). */
import { pack } from 'tar-stream';
import { padding, tarHeader, tarHeaderBytes, TAR_END, type TarEntry } from '../../../lib/export/tarHeader';

/** What tar-stream writes before an entry's data: the header(s) are pushed when the entry opens, before any body byte. */
async function tarStreamHeader(entry: TarEntry): Promise<Buffer> {
	const packer = pack();
	const chunks: Buffer[] = [];
	packer.on('data', (chunk: unknown) => chunks.push(chunk as Buffer));
	packer.entry({ ...entry, type: 'file' });
	await new Promise((resolve) => setTimeout(resolve, 10));
	packer.destroy();
	return Buffer.concat(chunks);
}

const MTIME = new Date('2026-11-20T01:01:00.000Z');
const entry = (name: string, size = 1234): TarEntry => ({ name, size, mode: 0o644, mtime: MTIME });

describe('tarHeader', () => {
	test.each<[string, TarEntry, number]>([
		['a short name', entry('web01/20261120T010000Z/vda.qcow2'), 512],
		['an empty file', entry('web01/20261120T010000Z/empty', 0), 512],
		['100 bytes exactly', entry(`${'d'.repeat(60)}/${'f'.repeat(39)}`), 512],
		['a long name split into prefix and name', entry(`${'v'.repeat(120)}/20261120T010000Z/vda.qcow2`), 512],
		['a 200-byte folder name (pax)', entry(`vm-${'x'.repeat(200)}/20261121T010000Z/vda.qcow2`), 1536],
		['a prefix over 155 bytes (pax)', entry(`${'a'.repeat(100)}/${'b'.repeat(100)}/vda.qcow2`), 1536],
		['a name that is not ASCII (pax)', entry('wéb-01/20261120T010000Z/vda.qcow2'), 1536],
		['a pax record whose length gains a digit (99 -> 100)', entry(`${'p'.repeat(89)}é`), 1536],
		['a size over 8 GiB - 1 (base-256)', entry('big/20261120T010000Z/vda.qcow2', 8 * 1024 ** 3 + 1), 512],
		['a size of 8 GiB - 1 (the largest octal)', entry('big/20261120T010000Z/vda.qcow2', 8 * 1024 ** 3 - 1), 512],
	])('%s: the same bytes as tar-stream', async (_name, tarEntry, length) => {
		const ours = tarHeader(tarEntry);
		expect(ours.length).toBe(length);
		expect(ours.equals(await tarStreamHeader(tarEntry))).toBe(true);
		expect(tarHeaderBytes(tarEntry)).toBe(length);
	});

	test('padding fills the last block; the end is two zero blocks', () => {
		expect([0, 1, 511, 512, 513].map((size) => padding(size).length)).toEqual([0, 511, 1, 0, 511]);
		expect(TAR_END.equals(Buffer.alloc(1024))).toBe(true);
	});
});
