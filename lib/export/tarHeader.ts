/**
 * The tar headers of an export, encoded here rather than by a packer, so that an archive can be
 * written as separate pieces (headers compressed in n8n, image data compressed on the host, see
 * archive.ts). The bytes are those tar-stream writes for the same entry (a unit test compares them):
 * a ustar header, or, for a name ustar cannot hold (over 100 bytes with no fitting split into a
 * 155-byte prefix, or not ASCII), a pax header carrying `path=` first. A size over 8 GiB - 1 is
 * written base-256, as GNU tar and tar-stream do.
 */
export const BLOCK = 512;
/** Two zero blocks end a tar. */
export const TAR_END = Buffer.alloc(2 * BLOCK);

export interface TarEntry {
	name: string;
	size: number;
	mode: number;
	mtime: Date;
}

const FILE = '0';
const PAX = 'x';

/** The zeros that pad `size` bytes of data to whole blocks. */
export function padding(size: number): Buffer {
	return Buffer.alloc((BLOCK - (size % BLOCK)) % BLOCK);
}

/** The header block(s) written before an entry's data. */
export function tarHeader(entry: TarEntry): Buffer {
	const plain = ustar(entry.name, entry, entry.size, FILE);
	if (plain) return plain;
	const record = paxRecord('path', entry.name);
	return Buffer.concat([ustar('PaxHeader', entry, record.length, PAX)!, record, padding(record.length), ustar('PaxHeader', entry, entry.size, FILE)!]);
}

/** The number of bytes `tarHeader` returns for this entry. */
export function tarHeaderBytes(entry: TarEntry): number {
	return tarHeader({ ...entry, size: 0 }).length;
}

function ustar(fullName: string, entry: TarEntry, size: number, type: string): Buffer | undefined {
	if (Buffer.byteLength(fullName) !== fullName.length) return undefined;
	let name = fullName;
	let prefix = '';
	while (name.length > 100) {
		const slash = name.indexOf('/');
		if (slash === -1) return undefined;
		prefix += prefix ? `/${name.slice(0, slash)}` : name.slice(0, slash);
		name = name.slice(slash + 1);
	}
	if (prefix.length > 155) return undefined;
	const block = Buffer.alloc(BLOCK);
	block.write(name, 0, 'latin1');
	block.write(octal(entry.mode & 0o7777, 6), 100);
	block.write(octal(0, 6), 108);
	block.write(octal(0, 6), 116);
	if (size.toString(8).length > 11) {
		block[124] = 0x80;
		for (let at = 11, rest = size; at > 0; at--, rest = Math.floor(rest / 0x100)) block[124 + at] = rest % 0x100;
	} else {
		block.write(octal(size, 11), 124);
	}
	block.write(octal(Math.trunc(entry.mtime.getTime() / 1000), 11), 136);
	block.write(type, 156);
	block.write('ustar\u000000', 257, 'latin1');
	block.write(octal(0, 6), 329);
	block.write(octal(0, 6), 337);
	if (prefix) block.write(prefix, 345, 'latin1');
	let sum = 8 * 32;
	for (let at = 0; at < BLOCK; at++) if (at < 148 || at >= 156) sum += block[at];
	block.write(octal(sum, 6), 148);
	return block;
}

/** `<digits> <key>=<value>\n`, the digits counting the whole record including themselves. */
function paxRecord(key: string, value: string): Buffer {
	const body = ` ${key}=${value}\n`;
	const length = Buffer.byteLength(body);
	let digits = String(length).length;
	if (length + digits >= 10 ** digits) digits++;
	return Buffer.from(`${length + digits}${body}`);
}

function octal(value: number, width: number): string {
	const digits = value.toString(8);
	return digits.length > width ? `${'7'.repeat(width)} ` : `${digits.padStart(width, '0')} `;
}
