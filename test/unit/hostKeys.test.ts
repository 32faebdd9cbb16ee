import { fingerprintOf, parseHostKeyPins } from '../../lib/ssh';
import { preferredHostKeyAlgorithms } from '../../lib/ssh/hostKeys';

// A real key pair made with ssh-keygen; `ssh-keygen -lf` printed this fingerprint for it.
const BLOB = 'AAAAC3NzaC1lZDI1NTE5AAAAIM1N7UwZBbW1eCc3PzOxZZxThKfZ9SNxYUMy5S77SvF6';
const FINGERPRINT = 'SHA256:UntV9U1Fkb108083dTuICjuWN17OkE5hzouSWHRJuxE';

describe('pinned host keys', () => {
	test('the fingerprint of a key blob is what ssh-keygen -lf prints', () => {
		expect(fingerprintOf(Buffer.from(BLOB, 'base64'))).toBe(FINGERPRINT);
	});

	test.each([
		['a known_hosts line with [host]:port', `[127.0.0.1]:2222 ssh-ed25519 ${BLOB}`],
		['a plain known_hosts line', `kvm01.example.com,10.0.0.5 ssh-ed25519 ${BLOB}`],
		['a hashed known_hosts line', `|1|abc=|def= ssh-ed25519 ${BLOB}`],
		['a bare public key line', `ssh-ed25519 ${BLOB} root@vm`],
		['a @cert-authority marker line', `@cert-authority *.example.com ssh-ed25519 ${BLOB}`],
		['a SHA256 fingerprint', FINGERPRINT],
		['ssh-keygen -lf output', `256 ${FINGERPRINT} root@vm (ED25519)`],
	])('accepts %s', (_label, line) => {
		expect(parseHostKeyPins(line).map((pin) => pin.fingerprint)).toEqual([FINGERPRINT]);
	});

	test('skips blank lines, comments and @revoked keys', () => {
		expect(parseHostKeyPins(`\n# comment\n@revoked * ssh-ed25519 ${BLOB}\n\n`)).toEqual([]);
	});

	test('reads several pins, one per line', () => {
		const pins = parseHostKeyPins(`${FINGERPRINT}\r\n[h]:22 ssh-ed25519 ${BLOB}\n`);
		expect(pins).toHaveLength(2);
		expect(pins[1].keyType).toBe('ssh-ed25519');
	});

	test('refuses a line that is neither a key nor a fingerprint, naming the line and the fix', () => {
		expect(() => parseHostKeyPins(`${FINGERPRINT}\nnot a key`)).toThrow(/line 2 .*ssh-keyscan/);
		expect(() => parseHostKeyPins('SHA256:tooShort')).toThrow(/neither a known_hosts line nor a SHA256 fingerprint/);
	});

	test('asks the server for the pinned key types, or lets it choose when only fingerprints are pinned', () => {
		expect(preferredHostKeyAlgorithms(parseHostKeyPins(`h ssh-ed25519 ${BLOB}`))).toEqual(['ssh-ed25519']);
		expect(preferredHostKeyAlgorithms(parseHostKeyPins(FINGERPRINT))).toBeUndefined();
		expect(preferredHostKeyAlgorithms(parseHostKeyPins(`h ssh-rsa ${BLOB}`))).toEqual(['rsa-sha2-512', 'rsa-sha2-256', 'ssh-rsa']);
	});
});
