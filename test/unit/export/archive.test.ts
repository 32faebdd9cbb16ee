/** Packing backups into a tar (optionally compressed) from local streams, and listing it back. */
import { createHash } from 'crypto';
import { Readable } from 'stream';
import * as zlib from 'zlib';
import { extract as tarExtract, pack as tarPack } from 'tar-stream';
import { compressor, packArchive, tarSize, type Compression } from '../../../lib/export/archive';
import type { ExportableBackup } from '../../../lib/export/source';
import type { CatalogBackup } from '../../../lib/catalog';

function backup(vmDir: string, id: string, files: Record<string, Buffer>): { item: ExportableBackup; contents: Map<string, Buffer> } {
	const contents = new Map<string, Buffer>();
	for (const [name, data] of Object.entries(files)) contents.set(`${vmDir}/${id}/${name}`, data);
	const item = {
		backup: { vmDir, id, dest: '/b', vm: vmDir, path: `/b/${vmDir}/${id}`, manifest: { finishedAt: '2026-11-20T01:01:00.000Z' } } as unknown as CatalogBackup,
		files: Object.entries(files).map(([name, data]) => ({ name, bytes: data.length })),
	};
	return { item, contents };
}

function fromBuffer(data: Buffer): Readable {
	// Several chunks, as a network stream delivers them.
	const chunks: Buffer[] = [];
	for (let at = 0; at < data.length; at += 7000) chunks.push(data.subarray(at, at + 7000));
	return Readable.from(chunks);
}

async function collect(stream: Readable): Promise<Buffer> {
	const chunks: Buffer[] = [];
	for await (const chunk of stream as AsyncIterable<Buffer>) chunks.push(chunk);
	return Buffer.concat(chunks);
}

async function untar(archive: Buffer): Promise<Map<string, Buffer>> {
	const found = new Map<string, Buffer>();
	const extract = tarExtract();
	const done = (async () => {
		for await (const entry of extract) {
			found.set(entry.header.name, await collect(entry as unknown as Readable));
		}
	})();
	extract.end(archive);
	await done;
	return found;
}

function zstdCases(): [string, Compression, (data: Buffer) => Buffer][] {
	const decompress = (zlib as unknown as { zstdDecompressSync?: (data: Buffer) => Buffer }).zstdDecompressSync;
	return decompress ? [['tar.zst', { kind: 'zstd', level: 1 }, (data) => decompress(data)]] : [];
}

const LONG_VM = `vm-${'x'.repeat(200)}`;
const a = backup('web01', '20261120T010000Z', { 'vda.qcow2': Buffer.alloc(100_000, 0x11), 'domain.xml': Buffer.from('<domain/>\n'), 'manifest.json': Buffer.from('{}\n') });
const b = backup(LONG_VM, '20261121T010000Z', { 'vda.qcow2': Buffer.alloc(512, 0x22), 'empty': Buffer.alloc(0), 'manifest.json': Buffer.from('{"x":1}\n') });
const all = new Map([...a.contents, ...b.contents]);
const opener = async (item: ExportableBackup, file: { name: string }) => fromBuffer(all.get(`${item.backup.vmDir}/${item.backup.id}/${file.name}`)!);

describe('packArchive', () => {
	test.each<[string, Compression, (data: Buffer) => Buffer]>([
		['tar', { kind: 'none' }, (data) => data],
		['tar.gz', { kind: 'gzip', level: 1 }, (data) => zlib.gunzipSync(data)],
		// Node >= 22.15 only (n8n 2.x runs there; jest here may run on Node 20).
		...zstdCases(),
	])('%s: every file under <vm dir>/<id>/, in order, byte for byte; exact tar size; sha256 of what was delivered', async (_name, compression, decompress) => {
		const archive = await packArchive([a.item, b.item], opener, compression);
		const data = await collect(archive.stream);
		const tar = decompress(data);

		expect(archive.tarBytes).toBe(tar.length);
		expect(archive.digest()).toEqual({ bytes: data.length, sha256: createHash('sha256').update(data).digest('hex') });
		const entries = await untar(tar);
		expect([...entries.keys()]).toEqual([...all.keys()]);
		for (const [name, content] of all) expect(entries.get(name)!.equals(content)).toBe(true);
	});

	test('the tar is byte for byte what tar-stream packs for the same entries', async () => {
		const reference = tarPack();
		const packed = collect(reference as unknown as Readable);
		for (const item of [a.item, b.item]) {
			for (const file of item.files) {
				const name = `${item.backup.vmDir}/${item.backup.id}/${file.name}`;
				reference.entry({ name, size: file.bytes, mode: 0o644, mtime: new Date(item.backup.manifest.finishedAt) }, all.get(name)!);
			}
		}
		reference.finalize();
		const ours = await collect((await packArchive([a.item, b.item], opener, { kind: 'none' })).stream);
		expect(ours.equals(await packed)).toBe(true);
	});

	test('tarSize is exact for names that need a pax header', async () => {
		expect(tarSize([b.item])).toBe((await collect((await packArchive([b.item], opener, { kind: 'none' })).stream)).length);
	});

	test('a source that errors fails the archive: it never ends short', async () => {
		const broken = async (item: ExportableBackup, file: { name: string }) => {
			if (file.name !== 'domain.xml') return opener(item, file);
			return new Readable({
				read() {
					this.destroy(new Error('sha256 differs'));
				},
			});
		};
		const archive = await packArchive([a.item], broken, { kind: 'gzip', level: 1 });
		await expect(collect(archive.stream)).rejects.toThrow('sha256 differs');
		expect(() => archive.digest()).toThrow(/not been completely written/);
	});

	test('a source shorter or longer than its header fails the archive', async () => {
		const short = async () => fromBuffer(Buffer.alloc(10));
		const archive = await packArchive([a.item], short, { kind: 'none' });
		await expect(collect(archive.stream)).rejects.toThrow(/vda\.qcow2 delivered 10 bytes, its header says 100000/);
		const long = async () => fromBuffer(Buffer.alloc(200_000));
		const longer = await packArchive([a.item], long, { kind: 'none' });
		await expect(collect(longer.stream)).rejects.toThrow(/vda\.qcow2 delivered more than the 100000 bytes its header says/);
	});

	// With compression the file passes one more stage (chunks joined to 1 MiB for zlib): the stop must still reach it.
	test.each<[string, Compression]>([
		['tar', { kind: 'none' }],
		['tar.gz', { kind: 'gzip', level: 1 }],
	])('%s: a consumer that stops destroys the file being read', async (_name, compression) => {
		let source: Readable | undefined;
		const endless = async () => {
			source = new Readable({ read() { this.push(Buffer.alloc(65536)); } });
			return source;
		};
		const big = backup('big', '20261120T010000Z', { 'vda.qcow2': Buffer.alloc(0) });
		big.item.files[0].bytes = 1 << 30;
		const archive = await packArchive([big.item], endless, compression);
		archive.stream.once('data', () => archive.stream.destroy());
		await new Promise((resolve) => archive.stream.once('close', resolve));
		await new Promise((resolve) => setImmediate(resolve));
		expect(source!.destroyed).toBe(true);
	});

	describe('images compressed on their host', () => {
		// The images of `a` and `b` carry a manifest sha256 (as resolveBackups gives them): those come as frames from the "host".
		const withSums = [a.item, b.item].map((item) => ({ ...item, files: item.files.map((file) => (file.name === 'vda.qcow2' ? { ...file, sha256: 'ab'.repeat(32) } : file)) }));
		const hostGzip = async (item: ExportableBackup, file: { name: string }) => fromBuffer(zlib.gzipSync(all.get(`${item.backup.vmDir}/${item.backup.id}/${file.name}`)!, { level: 1 }));

		test('the frames (ours for headers, padding and small files, the host\'s for images) gunzip to the same tar, byte for byte', async () => {
			const asked: string[] = [];
			const counting = async (item: ExportableBackup, file: { name: string }) => {
				asked.push(file.name);
				return hostGzip(item, file);
			};
			const framed = await packArchive(withSums, opener, { kind: 'gzip', level: 1 }, undefined, { openCompressed: counting });
			const data = await collect(framed.stream);
			const plain = await collect((await packArchive(withSums, opener, { kind: 'none' })).stream);

			expect(asked).toEqual(['vda.qcow2', 'vda.qcow2']);
			expect(zlib.gunzipSync(data).equals(plain)).toBe(true);
			expect(framed.tarBytes).toBe(plain.length);
			expect(framed.digest()).toEqual({ bytes: data.length, sha256: createHash('sha256').update(data).digest('hex') });
		});

		test('an image whose host stream errors (a sha256 the manifest does not have) fails the archive', async () => {
			const failing = async () =>
				new Readable({
					read() {
						this.destroy(new Error('has sha256 00, the manifest says ab'));
					},
				});
			const archive = await packArchive(withSums, opener, { kind: 'gzip', level: 1 }, undefined, { openCompressed: failing });
			await expect(collect(archive.stream)).rejects.toThrow('the manifest says');
			expect(() => archive.digest()).toThrow(/not been completely written/);
		});

		test('a consumer that stops destroys the image stream being read', async () => {
			let source: Readable | undefined;
			const endless = async () => {
				source = new Readable({ read() { this.push(Buffer.alloc(65536)); } });
				return source;
			};
			const archive = await packArchive(withSums, opener, { kind: 'gzip', level: 1 }, undefined, { openCompressed: endless });
			archive.stream.once('data', () => archive.stream.destroy());
			await new Promise((resolve) => archive.stream.once('close', resolve));
			await new Promise((resolve) => setImmediate(resolve));
			expect(source!.destroyed).toBe(true);
		});

		test('uncompressed, nothing is asked of the host', async () => {
			const never = async (): Promise<Readable> => {
				throw new Error('asked the host to compress a plain tar');
			};
			const archive = await packArchive(withSums, opener, { kind: 'none' }, undefined, { openCompressed: never });
			expect((await collect(archive.stream)).length).toBe(archive.tarBytes);
		});
	});

	test('refuses a bad level, and zstd where this Node has no zstd, before anything is read', () => {
		expect(() => compressor({ kind: 'gzip', level: 10 })).toThrow(/gzip level must be a whole number from 1 to 9/);
		const hasZstd = 'createZstdCompress' in zlib;
		if (hasZstd) expect(compressor({ kind: 'zstd', level: 3 })).toBeDefined();
		else expect(() => compressor({ kind: 'zstd', level: 3 })).toThrow(new RegExp(`zstd compression needs Node.js 22.15 .* this n8n runs on Node.js ${process.version.replace(/\./g, '\\.')}`));
	});
});
