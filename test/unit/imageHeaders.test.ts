import { backingPath, HEADER_BYTES, parseImageHeaders, parseQcow2Header, type ImageFile } from '../../lib/libvirt/imageHeaders';

/** A qcow2 v3 header as qemu-img create writes it: size, optional backing name and backing format extension. */
function qcow2(size: number, backing?: { name: string; format?: string }, options: { encrypted?: boolean; incompatible?: bigint; dataFile?: boolean } = {}): Buffer {
	const head = Buffer.alloc(1024);
	head.writeUInt32BE(0x514649fb, 0);
	head.writeUInt32BE(3, 4);
	head.writeBigUInt64BE(BigInt(size), 24);
	head.writeUInt32BE(options.encrypted ? 2 : 0, 32);
	head.writeBigUInt64BE(options.incompatible ?? 0n, 72);
	head.writeUInt32BE(112, 100);
	let at = 112;
	const extension = (type: number, data: Buffer) => {
		head.writeUInt32BE(type, at);
		head.writeUInt32BE(data.length, at + 4);
		data.copy(head, at + 8);
		at += 8 + Math.ceil(data.length / 8) * 8;
	};
	if (backing?.format) extension(0xe2792aca, Buffer.from(backing.format));
	if (options.dataFile) extension(0x44415441, Buffer.from('data.raw'));
	extension(0, Buffer.alloc(0));
	if (backing) {
		head.writeBigUInt64BE(BigInt(at), 8);
		head.writeUInt32BE(Buffer.byteLength(backing.name), 16);
		head.write(backing.name, at);
	}
	return head;
}

describe('qcow2 headers read as qemu-img info reads them', () => {
	test.each<[string, Buffer, ReturnType<typeof parseQcow2Header>]>([
		['no backing file', qcow2(1 << 30), { virtualBytes: 1 << 30 }],
		['a backing file with its format', qcow2(64 << 20, { name: '/img/base.qcow2', format: 'qcow2' }), { virtualBytes: 64 << 20, backing: { name: '/img/base.qcow2', format: 'qcow2' } }],
		['a relative backing name', qcow2(64 << 20, { name: "mid it's.qcow2", format: 'raw' }), { virtualBytes: 64 << 20, backing: { name: "mid it's.qcow2", format: 'raw' } }],
		['a backing file without a format (qemu would probe it): qemu-img reads it', qcow2(1 << 20, { name: '/img/base' }), undefined],
		['a protocol-like backing name: qemu-img reads it', qcow2(1 << 20, { name: 'nbd:host:10809', format: 'raw' }), undefined],
		['encrypted: qemu-img reads it', qcow2(1 << 20, undefined, { encrypted: true }), undefined],
		['an external data file: qemu-img reads it', qcow2(1 << 20, undefined, { dataFile: true }), undefined],
		['an unknown incompatible feature: qemu-img reads it', qcow2(1 << 20, undefined, { incompatible: 1n << 7n }), undefined],
		['dirty and extended L2 are plain images', qcow2(1 << 20, undefined, { incompatible: 0b10001n }), { virtualBytes: 1 << 20 }],
		['not qcow2 at all', Buffer.alloc(512, 0x41), undefined],
		['cut short', qcow2(1 << 20).subarray(0, 60), undefined],
	])('%s', (_name, head, expected) => {
		expect(parseQcow2Header(head, 1 << 20)).toEqual(expected);
	});

	test('backing names resolve against the folder of the image that names them, unnormalised, as qemu does', () => {
		expect(backingPath('/a/b/top.qcow2', '../base.qcow2')).toBe('/a/b/../base.qcow2');
		expect(backingPath('/a/b/top.qcow2', '/c/base.qcow2')).toBe('/c/base.qcow2');
		expect(backingPath('top.qcow2', 'base.qcow2')).toBe('base.qcow2');
	});
});

describe('the batched header output', () => {
	const files: ImageFile[] = [
		{ path: '/img/a.qcow2', format: 'qcow2' },
		{ path: '/dev/sdb', format: 'raw' },
		{ path: '/img/c.raw', format: 'raw' },
		{ path: '/img/d.qcow2', format: 'qcow2' },
	];
	const a = qcow2(1 << 30, { name: 'base.qcow2', format: 'qcow2' });
	const c = Buffer.from('tiny raw');
	const d = Buffer.concat([qcow2(2 ** 31), Buffer.alloc(HEADER_BYTES - 1024)]);
	const sections = (stat: string, head: Buffer) => [
		{ kind: 'files', body: '0\n2\n3\n' },
		{ kind: 'stat', body: stat },
		{ kind: 'head', body: `${head.toString('base64')}\n` },
		{ kind: 'end', body: '' },
	];

	test('splits each regular file its own bytes; a file that is not regular is left to qemu-img', () => {
		const results = parseImageHeaders(files, sections(`1024 8 512\n8 8 512\n${10 << 20} 2048 512\n`, Buffer.concat([a, c, d])));
		expect(results).toEqual([
			{ top: { path: '/img/a.qcow2', format: 'qcow2', virtualBytes: 1 << 30, allocatedBytes: 4096 }, backing: { path: '/img/base.qcow2', format: 'qcow2' } },
			undefined,
			{ top: { path: '/img/c.raw', format: 'raw', virtualBytes: 8, allocatedBytes: 4096 } },
			{ top: { path: '/img/d.qcow2', format: 'qcow2', virtualBytes: 2 ** 31, allocatedBytes: 1 << 20 } },
		]);
	});

	test('a file that changed between stat and head (bytes do not add up) makes every image go to qemu-img', () => {
		expect(parseImageHeaders(files, sections(`1024 8 512\n9 8 512\n${10 << 20} 2048 512\n`, Buffer.concat([a, c, d])))).toEqual([undefined, undefined, undefined, undefined]);
	});

	test('output cut short (no end marker) trusts nothing', () => {
		expect(parseImageHeaders(files, sections('', Buffer.alloc(0)).slice(0, 3))).toEqual([undefined, undefined, undefined, undefined]);
	});
});
