/**
 * Where backups live: `<dest>/<vm dir>/<backup id>/`. The VM directory name is the VM name with
 * every byte outside [A-Za-z0-9_+-.] (and a leading '.') percent-encoded, so names like `..`,
 * `a/b`-lookalikes, quotes or newlines can never leave `<dest>/` or collide; manifests keep the
 * real name.
 */
import { LibvirtBackupError } from '../errors';

export function vmDirName(vmName: string): string {
	if (vmName === '') throw new LibvirtBackupError('INVALID_INPUT', 'VM name is empty');
	let out = '';
	for (const byte of Buffer.from(vmName, 'utf8')) {
		const char = String.fromCharCode(byte);
		const safe = /[A-Za-z0-9_+-]/.test(char) || (char === '.' && out !== '');
		out += safe ? char : `%${byte.toString(16).toUpperCase().padStart(2, '0')}`;
	}
	return out;
}

export function vmNameFromDir(dir: string): string {
	return Buffer.from(dir.replace(/%([0-9A-F]{2})/g, (_m, hex: string) => String.fromCharCode(parseInt(hex, 16))), 'latin1').toString('utf8');
}

/** A destination (or another folder on the host, named by `what`) must be an absolute, normalized path: no `..`, no `//`, no trailing slash. */
export function checkDestination(dest: string, what = 'Destination'): string {
	const trimmed = dest.length > 1 ? dest.replace(/\/+$/, '') : dest;
	if (!trimmed.startsWith('/')) throw new LibvirtBackupError('INVALID_INPUT', `${what} must be an absolute path on the host, got "${dest}"`);
	if (trimmed === '/') throw new LibvirtBackupError('INVALID_INPUT', `${what} cannot be the root directory "/"`);
	if (trimmed.split('/').some((part, index) => index > 0 && (part === '' || part === '.' || part === '..'))) {
		throw new LibvirtBackupError('INVALID_INPUT', `${what} "${dest}" must not contain "..", "." or empty path parts`);
	}
	if (/[\0\n\r]/.test(trimmed)) throw new LibvirtBackupError('INVALID_INPUT', `${what} must not contain NUL or line breaks`);
	return trimmed;
}

/** Backup id for a start time: `20261128T144300Z`, optionally suffixed to stay unique. */
export function backupId(startedAt: Date, suffix = 0): string {
	const id = startedAt.toISOString().replace(/[-:]/g, '').replace(/\.\d{3}Z$/, 'Z');
	return suffix === 0 ? id : `${id}-${suffix}`;
}

export function backupTime(id: string): Date {
	const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z/.exec(id);
	if (!m) throw new LibvirtBackupError('INVALID_INPUT', `"${id}" is not a backup id`);
	return new Date(Date.UTC(+m[1], +m[2] - 1, +m[3], +m[4], +m[5], +m[6]));
}

export function vmBackupDir(dest: string, vmName: string): string {
	return `${checkDestination(dest)}/${vmDirName(vmName)}`;
}

export function backupDir(dest: string, vmName: string, id: string): string {
	return `${vmBackupDir(dest, vmName)}/${id}`;
}
