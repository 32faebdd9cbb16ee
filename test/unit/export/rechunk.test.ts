import { Readable } from 'node:stream';
import { rechunk } from '../../../lib/export';

async function collect(chunks: Buffer[], bytes: number): Promise<Buffer[]> {
	const out: Buffer[] = [];
	// 'data' events see each chunk as pushed (a read() would join what is buffered).
	const stream = Readable.from(chunks).pipe(rechunk(bytes));
	stream.on('data', (chunk: Buffer) => out.push(chunk));
	await new Promise((resolve) => stream.on('end', resolve));
	return out;
}

describe('rechunk (chunks for n8n binary data store)', () => {
	it('joins small chunks into ones of at least the size, the rest last, the bytes unchanged', async () => {
		const input = Array.from({ length: 10 }, (_, index) => Buffer.alloc(300, index));
		const out = await collect(input, 1000);
		expect(out.map((chunk) => chunk.length)).toEqual([1200, 1200, 600]);
		expect(Buffer.concat(out).equals(Buffer.concat(input))).toBe(true);
	});

	it('passes a big chunk on whole and ends cleanly on empty input', async () => {
		expect((await collect([Buffer.alloc(5000, 1)], 1000)).map((chunk) => chunk.length)).toEqual([5000]);
		expect(await collect([], 1000)).toEqual([]);
	});
});
