/**
 * Pinned host keys: OpenSSH known_hosts lines (plain, `[host]:port`, or hashed host fields, with or
 * without markers) or `SHA256:<base64>` fingerprints as `ssh-keygen -lf` prints them.
 *
 * For the credential's own host every pinned key is accepted, whatever a known_hosts line's host
 * field says (the credential belongs to that host). When a node's Host parameter sends the credential
 * to another host of a fleet, only the pins for that host apply (`pinsForHost`): known_hosts lines
 * whose host field matches it (plain, `[host]:port`, hashed, `*`/`?` patterns, `!` negation, as
 * OpenSSH matches them) and bare fingerprints, which name no host.
 */
import { createHash, createHmac } from 'node:crypto';
import { LibvirtBackupError } from '../errors';

export interface HostKeyPin {
	/** `SHA256:` + unpadded base64 of the key blob's SHA-256, exactly as OpenSSH shows it. */
	fingerprint: string;
	/** Key algorithm when known (from a known_hosts line), so the client can ask for that key type. */
	keyType?: string;
	/** A known_hosts line's host field (comma list of names, patterns or one hashed name); none for a bare fingerprint. */
	hosts?: string;
}

const KEY_TYPES = /^(ssh-ed25519|ssh-rsa|ssh-dss|ecdsa-sha2-nistp(256|384|521)|sk-ssh-ed25519@openssh\.com|sk-ecdsa-sha2-nistp256@openssh\.com)$/;

export function fingerprintOf(keyBlob: Buffer): string {
	return `SHA256:${createHash('sha256').update(keyBlob).digest('base64').replace(/=+$/, '')}`;
}

export function parseHostKeyPins(text: string): HostKeyPin[] {
	const pins: HostKeyPin[] = [];
	for (const [index, rawLine] of text.split(/\r?\n/).entries()) {
		const line = rawLine.trim();
		if (line === '' || line.startsWith('#')) continue;
		const fingerprint = /^(?:\d+\s+)?(SHA256:[A-Za-z0-9+/]{43})=?(?:\s.*)?$/.exec(line);
		if (fingerprint) {
			pins.push({ fingerprint: fingerprint[1] });
			continue;
		}
		const fields = line.split(/\s+/);
		if (fields[0].startsWith('@')) {
			if (fields[0] === '@revoked') continue;
			fields.shift();
		}
		const typeAt = fields.findIndex((field) => KEY_TYPES.test(field));
		const hosts = typeAt > 0 ? fields[typeAt - 1] : undefined;
		const blob = typeAt >= 0 ? fields[typeAt + 1] : undefined;
		if (!blob || !/^[A-Za-z0-9+/]+={0,2}$/.test(blob)) {
			throw new LibvirtBackupError(
				'INVALID_INPUT',
				`Pinned host key line ${index + 1} is neither a known_hosts line nor a SHA256 fingerprint: "${line.slice(0, 80)}". ` +
					'Get the right value with: ssh-keyscan -p PORT HOST | ssh-keygen -lf -',
			);
		}
		pins.push({ fingerprint: fingerprintOf(Buffer.from(blob, 'base64')), keyType: fields[typeAt], ...(hosts ? { hosts } : {}) });
	}
	return pins;
}

/** The pins that apply to `host` on `port` when the credential is used for a host other than its own. */
export function pinsForHost(pins: readonly HostKeyPin[], host: string, port: number): HostKeyPin[] {
	const name = port === 22 ? host.toLowerCase() : `[${host.toLowerCase()}]:${port}`;
	return pins.filter((pin) => pin.hosts === undefined || hostFieldMatches(pin.hosts, name));
}

/** OpenSSH's known_hosts host field matching: one hashed name, or a comma list where a matching `!pattern` vetoes. */
function hostFieldMatches(field: string, name: string): boolean {
	const hashed = /^\|1\|([A-Za-z0-9+/=]+)\|([A-Za-z0-9+/=]+)$/.exec(field);
	if (hashed) return createHmac('sha1', Buffer.from(hashed[1], 'base64')).update(name).digest('base64') === hashed[2];
	let matched = false;
	for (const entry of field.toLowerCase().split(',')) {
		const negated = entry.startsWith('!');
		if (!wildcardMatch(negated ? entry.slice(1) : entry, name)) continue;
		if (negated) return false;
		matched = true;
	}
	return matched;
}

function wildcardMatch(pattern: string, name: string): boolean {
	const regex = pattern.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.');
	return new RegExp(`^${regex}$`).test(name);
}

/** The server host key algorithms to offer, so a server with several keys presents a pinned one. */
export function preferredHostKeyAlgorithms(pins: readonly HostKeyPin[]): string[] | undefined {
	const types = new Set<string>();
	for (const pin of pins) {
		if (!pin.keyType) return undefined; // a bare fingerprint can be any type: let ssh2 negotiate
		if (pin.keyType === 'ssh-rsa') {
			types.add('rsa-sha2-512').add('rsa-sha2-256').add('ssh-rsa');
		} else {
			types.add(pin.keyType);
		}
	}
	return types.size > 0 ? [...types] : undefined;
}
