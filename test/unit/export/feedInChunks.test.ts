import { createHash, randomBytes } from 'node:crypto';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { feedInChunks } from '../../../lib/export';

/** A slow consumer (zlib's stand-in): takes each chunk's hash on write and again when it calls back, later. */
function slowConsumer(delayMs: number) {
	const seen: { length: number; hashAtWrite: string; hashAtCallback?: string }[] = [];
	const bytes: Buffer[] = [];
	let ended = false;
	const sink = new Writable({
		highWaterMark: 1,
		write(chunk: Buffer, _encoding, callback) {
			const entry = { length: chunk.length, hashAtWrite: createHash('sha256').update(chunk).digest('hex') } as (typeof seen)[number];
			seen.push(entry);
			bytes.push(Buffer.from(chunk));
			// Still reading the chunk until the callback: the feeder must not refill its buffer before.
			setTimeout(() => {
				entry.hashAtCallback = createHash('sha256').update(chunk).digest('hex');
				callback();
			}, delayMs);
		},
		final(callback) {
			ended = true;
			callback();
		},
	});
	return { sink, seen, bytes: () => Buffer.concat(bytes), ended: () => ended };
}

describe('feedInChunks (zlib fed from reused buffers)', () => {
	it('hands on chunks of exactly the size, the rest last, the bytes unchanged, and never refills a buffer the consumer still reads', async () => {
		const input = Array.from({ length: 40 }, (_, index) => randomBytes(37 + index * 97));
		const consumer = slowConsumer(2);
		await pipeline(Readable.from(input), feedInChunks(consumer.sink, 1000, 2));
		if (!consumer.sink.writableFinished) await new Promise((resolve) => consumer.sink.once('finish', resolve));
		const total = input.reduce((sum, chunk) => sum + chunk.length, 0);
		expect(consumer.seen.map((entry) => entry.length)).toEqual([...Array.from({ length: Math.floor(total / 1000) }, () => 1000), ...(total % 1000 ? [total % 1000] : [])]);
		expect(consumer.bytes().equals(Buffer.concat(input))).toBe(true);
		for (const entry of consumer.seen) expect(entry.hashAtCallback).toBe(entry.hashAtWrite);
		expect(consumer.ended()).toBe(true);
	});

	it('ends the consumer on empty input, and a consumer that fails stops the feeder with an error', async () => {
		const empty = slowConsumer(0);
		await pipeline(Readable.from([]), feedInChunks(empty.sink, 1000));
		expect(empty.seen).toEqual([]);
		expect(empty.ended()).toBe(true);

		const failing = new Writable({
			write(_chunk, _encoding, callback) {
				callback(new Error('disk full'));
			},
		});
		failing.on('error', () => undefined);
		const many = Array.from({ length: 50 }, () => Buffer.alloc(600, 7));
		await expect(pipeline(Readable.from(many), feedInChunks(failing, 1000, 2))).rejects.toThrow(/stopped before it was complete|disk full/);
	});
});
