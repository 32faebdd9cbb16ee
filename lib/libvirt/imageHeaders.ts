/**
 * Sizes of qcow2 and raw images without one `qemu-img info` process per image (~10 ms each on an
 * idle host, far more on a busy one: most of a large discovery): one `stat` for all the files and
 * one `head` for the first bytes of all of them, the qcow2 headers parsed here. What qemu-img info
 * reports for such an image is its format, its size (raw: the file's length; qcow2: the header's
 * size field), `actual-size` (the file's allocated blocks) and its backing file (qcow2 header,
 * name resolved as qemu does). Anything this reader is not sure of (a file that is not regular,
 * an encrypted image, an external data file, a backing file without a recorded format that qemu
 * would probe, a protocol-like name, a header it cannot read) is left to qemu-img.
 */
/** Bytes read from the start of each image: header, extensions and the usual place of the backing name. */
export const HEADER_BYTES = 4096;

/**
 * `sh -c IMAGE_HEADERS_SCRIPT lvb-image-headers MARKER PATH...`: the indexes of the paths that are
 * readable regular files (`MARKER files`), `stat` of those (size, blocks, block size), then the
 * first HEADER_BYTES of each, base64. `[ -f ]` and `[ -r ]` are shell built-ins: no process per file.
 */
export const IMAGE_HEADERS_SCRIPT = `export LC_ALL=C
m=$1; shift
echo "$m files"
n=$# i=0
while [ $i -lt $n ]; do
  p=$1; shift
  if [ -f "$p" ] && [ -r "$p" ]; then set -- "$@" "$p"; echo "$i"; fi
  i=$((i+1))
done
echo "$m stat"
[ $# -eq 0 ] || stat -L -c '%s %b %B' -- "$@"
echo "$m head"
[ $# -eq 0 ] || head -q -c ${HEADER_BYTES} -- "$@" | base64 -w 0
echo
echo "$m end"
`;

export interface ImageFile {
	path: string;
	format: 'qcow2' | 'raw';
}

export interface HeaderLayer {
	path: string;
	format: string;
	virtualBytes: number;
	allocatedBytes: number;
}

/** What the headers say of one image: its top layer, and the backing image qemu-img must describe. */
export interface ImageHeader {
	top: HeaderLayer;
	backing?: { path: string; format: string };
}

/**
 * Each file's header result in order, undefined where qemu-img must look (not a regular file,
 * not sure). `sections` are IMAGE_HEADERS_SCRIPT's marker sections.
 */
export function parseImageHeaders(files: readonly ImageFile[], sections: { kind: string; body: string }[]): (ImageHeader | undefined)[] {
	const results: (ImageHeader | undefined)[] = files.map(() => undefined);
	const body = (kind: string) => sections.find((section) => section.kind === kind)?.body ?? '';
	if (!sections.some((section) => section.kind === 'end')) return results;
	const regular = body('files').split('\n').filter(Boolean).map(Number);
	const stats = body('stat').split('\n').filter(Boolean).map((line) => line.split(' ').map(Number));
	const heads = Buffer.from(body('head').trim(), 'base64');
	// A file that changed or vanished between the test and stat/head: trust none of them.
	if (stats.length !== regular.length || stats.some((stat) => stat.length !== 3 || stat.some((n) => !Number.isSafeInteger(n) || n < 0))) return results;
	const expected = stats.reduce((sum, [size]) => sum + Math.min(size, HEADER_BYTES), 0);
	if (heads.length !== expected) return results;
	let offset = 0;
	regular.forEach((index, n) => {
		const [size, blocks, blockSize] = stats[n];
		const head = heads.subarray(offset, offset + Math.min(size, HEADER_BYTES));
		offset += head.length;
		const file = files[index];
		if (!file) return;
		const allocatedBytes = blocks * blockSize;
		if (file.format === 'raw') {
			results[index] = { top: { path: file.path, format: 'raw', virtualBytes: size, allocatedBytes } };
			return;
		}
		const header = parseQcow2Header(head, size);
		if (!header) return;
		results[index] = {
			top: { path: file.path, format: 'qcow2', virtualBytes: header.virtualBytes, allocatedBytes },
			...(header.backing ? { backing: { path: backingPath(file.path, header.backing.name), format: header.backing.format } } : {}),
		};
	});
	return results;
}

const QCOW2_MAGIC = 0x514649fb;
const EXT_BACKING_FORMAT = 0xe2792aca;
const EXT_DATA_FILE = 0x44415441;
/** Incompatible feature bits a plain image may have: dirty (0), compression type (3), extended L2 (4). */
const HARMLESS_INCOMPATIBLE = 0b11001n;

/** The qcow2 header's size and backing file, or undefined when qemu-img should read this image. */
export function parseQcow2Header(head: Buffer, fileSize: number): { virtualBytes: number; backing?: { name: string; format: string } } | undefined {
	if (head.length < 104 || head.readUInt32BE(0) !== QCOW2_MAGIC) return undefined;
	const version = head.readUInt32BE(4);
	if (version !== 2 && version !== 3) return undefined;
	const backingOffset = head.readBigUInt64BE(8);
	const backingSize = head.readUInt32BE(16);
	const size = head.readBigUInt64BE(24);
	if (head.readUInt32BE(32) !== 0) return undefined; // encrypted
	if (size > BigInt(Number.MAX_SAFE_INTEGER)) return undefined;
	let extensions = 72;
	if (version === 3) {
		if ((head.readBigUInt64BE(72) & ~HARMLESS_INCOMPATIBLE) !== 0n) return undefined;
		extensions = head.readUInt32BE(100);
	}
	let format: string | undefined;
	for (let at = extensions; ; ) {
		if (at + 8 > head.length) return undefined;
		const type = head.readUInt32BE(at);
		const length = head.readUInt32BE(at + 4);
		if (type === 0) break;
		if (at + 8 + length > head.length) return undefined;
		if (type === EXT_DATA_FILE) return undefined;
		if (type === EXT_BACKING_FORMAT) format = head.subarray(at + 8, at + 8 + length).toString('utf8');
		at += 8 + Math.ceil(length / 8) * 8;
	}
	if (backingOffset === 0n || backingSize === 0) return { virtualBytes: Number(size) };
	const start = Number(backingOffset);
	if (start + backingSize > head.length || start + backingSize > fileSize) return undefined;
	const name = head.subarray(start, start + backingSize).toString('utf8');
	// Without a recorded format qemu probes the backing file; a ':' may be a protocol (nbd:, json:): qemu-img decides.
	if (!format || !['qcow2', 'raw'].includes(format) || name.includes(':') || name.includes('\0')) return undefined;
	return { virtualBytes: Number(size), backing: { name, format } };
}

/** A backing file name as qemu resolves it: relative to the folder of the image that names it, not normalised. */
export function backingPath(image: string, name: string): string {
	if (name.startsWith('/')) return name;
	const slash = image.lastIndexOf('/');
	return slash === -1 ? name : `${image.slice(0, slash + 1)}${name}`;
}
