// Unit: the pure parts of "one credential, a fleet of hosts": which pinned keys apply to a host
// (OpenSSH's known_hosts host matching), the Host parameter's syntax, and the per-host concurrency.
import { parseHostKeyPins, pinsForHost } from '../../lib/ssh';
import { inParallel } from '../../nodes/shared/executeRouted';
import { hostForItem, hostFromCredentials, parseHostParameter } from '../../nodes/shared/target';

const KEY = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIK+RDs55VoBMvQ+/hf5fBV+RTCd4h3wSUYlSzAR1e2Lh';
const OTHER_KEY = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGXFnjIjhF8ohXz+D3rjqvivjUMoaYuGr30ahajhhFOs';
const FINGERPRINT = 'SHA256:9WIB2SA+u0gzktYd+nDjuoSXDhBXhhOs7P2oFZGRO7U';
/** `ssh-keygen -H` of "kvm01.example.com KEY" and "[10.0.0.5]:2222 KEY". */
const HASHED_KVM01 = `|1|t5RGfgq4n/QI2dEjLBF5BRN/Snw=|7Q3vLb5sAygXqk9ErIfsda7r6As= ${KEY}`;
const HASHED_PORT = `|1|xKEn3f0+oU0ZD+2UHhuqyLmMpsw=|kfg87jRP3VdApwZwxeKQNwb0rUY= ${KEY}`;

describe('pinsForHost: the pins that apply to one host of a fleet', () => {
	const cases: Array<[string, string, string, number, boolean]> = [
		['plain name', `kvm01 ${KEY}`, 'kvm01', 22, true],
		['plain name, other host', `kvm01 ${KEY}`, 'kvm02', 22, false],
		['names are case-insensitive', `KVM01.Example.com ${KEY}`, 'kvm01.example.COM', 22, true],
		['plain name on another port does not match', `kvm01 ${KEY}`, 'kvm01', 2222, false],
		['[host]:port', `[kvm01]:2222 ${KEY}`, 'kvm01', 2222, true],
		['[host]:port, other port', `[kvm01]:2222 ${KEY}`, 'kvm01', 2223, false],
		['comma list', `kvm01,10.0.0.1 ${KEY}`, '10.0.0.1', 22, true],
		['wildcard', `*.example.com ${KEY}`, 'kvm07.example.com', 22, true],
		['wildcard does not match elsewhere', `*.example.com ${KEY}`, 'kvm07.example.org', 22, false],
		['? wildcard', `kvm0? ${KEY}`, 'kvm05', 22, true],
		['negation vetoes', `*.example.com,!db.example.com ${KEY}`, 'db.example.com', 22, false],
		['negation leaves others', `*.example.com,!db.example.com ${KEY}`, 'web.example.com', 22, true],
		['regex characters are literal', `kvm.1 ${KEY}`, 'kvmx1', 22, false],
		['hashed name', HASHED_KVM01, 'kvm01.example.com', 22, true],
		['hashed name, other host', HASHED_KVM01, 'kvm02.example.com', 22, false],
		['hashed [host]:port', HASHED_PORT, '10.0.0.5', 2222, true],
		['hashed [host]:port, port 22', HASHED_PORT, '10.0.0.5', 22, false],
		['marker @cert-authority line keeps its host field', `@cert-authority kvm01 ${KEY}`, 'kvm01', 22, true],
		['a bare fingerprint names no host: it applies to every host', FINGERPRINT, 'anything', 22, true],
		['a key line without a host field applies to every host', KEY, 'anything', 2222, true],
	];
	test.each(cases)('%s', (_label, line, host, port, applies) => {
		expect(pinsForHost(parseHostKeyPins(line), host, port)).toHaveLength(applies ? 1 : 0);
	});

	test('out of a fleet list, each host gets its own key', () => {
		const pins = parseHostKeyPins(`kvm01 ${KEY}\nkvm02 ${OTHER_KEY}\n`);
		expect(pinsForHost(pins, 'kvm01', 22).map((pin) => pin.fingerprint)).toEqual([FINGERPRINT]);
		expect(pinsForHost(pins, 'kvm02', 22).map((pin) => pin.fingerprint)).toEqual([pins[1].fingerprint]);
		expect(pinsForHost(pins, 'kvm03', 22)).toEqual([]);
	});
});

describe('the Host parameter', () => {
	const ok: Array<[string, string, number]> = [
		['kvm01', 'kvm01', 22],
		['kvm01.example.com', 'kvm01.example.com', 22],
		['kvm01.example.com.', 'kvm01.example.com.', 22],
		['10.0.0.5', '10.0.0.5', 22],
		['10.0.0.5:2222', '10.0.0.5', 2222],
		['[kvm01]:2200', 'kvm01', 2200],
		['[2001:db8::5]', '2001:db8::5', 22],
		['[2001:db8::5]:2222', '2001:db8::5', 2222],
		['2001:db8::5', '2001:db8::5', 22],
	];
	test.each(ok)('%s', (raw, host, port) => {
		expect(parseHostParameter(raw, 22)).toEqual({ host, port });
	});

	const bad = ['a;b', '$(id)', '`id`', 'a b', 'web01\nevil', '../etc', '-oProxyCommand=x', 'kvm01:0', 'kvm01:65536', 'kvm01:22x', 'kvm01:', '[kvm01', 'a..b', '-kvm', `${'a'.repeat(64)}.com`, 'user@kvm01'];
	test.each(bad)('%j is refused with a clear error', (raw) => {
		expect(() => parseHostParameter(raw, 22)).toThrow(/^Host ".*" (is not a host name or address|has a port that is not 1-65535)\. Give a host name or address/);
	});

	const credential = hostFromCredentials({
		host: 'kvm01',
		port: 2222,
		username: 'backup',
		authMethod: 'privateKey',
		privateKey: 'KEY',
		hostKeys: `[kvm01]:2222 ${KEY}\n[kvm02]:2222 ${OTHER_KEY}`,
		sudoMode: 'nopasswd',
		libvirtUri: 'qemu:///system',
	});

	test("empty keeps the credential's host; the credential's own host keeps every pin", () => {
		expect(hostForItem(credential, '')).toBe(credential);
		expect(hostForItem(credential, '  ')).toBe(credential);
		expect(hostForItem(credential, undefined)).toBe(credential);
		const own = hostForItem(credential, 'KVM01');
		expect(own.target).toBe(credential.target);
		expect(own.name).toBe('KVM01');
	});

	test("another host keeps the user, key, sudo and URI, and takes the credential's port and only its own pins", () => {
		const other = hostForItem(credential, 'kvm02');
		expect(other.target).toMatchObject({ host: 'kvm02', port: 2222, username: 'backup', sudo: { mode: 'nopasswd' }, auth: credential.target.auth });
		expect(other.uri).toBe('qemu:///system');
		expect(other.name).toBe('kvm02');
		expect(other.target.hostKeys).toEqual({ pins: [expect.objectContaining({ hosts: '[kvm02]:2222' })], forHost: true });
		expect(hostForItem(credential, 'kvm03:22').target.hostKeys).toEqual({ pins: [], forHost: true });
	});

	test('skip host key verification stays skipped for every host', () => {
		const skipping = hostFromCredentials({ host: 'kvm01', port: 22, username: 'u', privateKey: 'K', skipHostKeyVerification: true });
		expect(hostForItem(skipping, 'kvm09').target.hostKeys).toEqual({ skipVerification: true });
	});
});

describe('inParallel', () => {
	async function trace(count: number, limit: number, delays: number[]) {
		const events: string[] = [];
		let running = 0;
		let most = 0;
		await inParallel([...Array(count).keys()], limit, async (entry) => {
			running++;
			most = Math.max(most, running);
			events.push(`start ${entry}`);
			await new Promise((resolve) => setTimeout(resolve, delays[entry] ?? 0));
			events.push(`end ${entry}`);
			running--;
		});
		return { events, most };
	}

	test('never more than the limit at once, entries started in order', async () => {
		const { events, most } = await trace(5, 2, [30, 5, 5, 5, 5]);
		expect(most).toBe(2);
		expect(events.filter((event) => event.startsWith('start'))).toEqual(['start 0', 'start 1', 'start 2', 'start 3', 'start 4']);
		expect(events.indexOf('end 0')).toBeGreaterThan(events.indexOf('start 2'));
	});

	test('limit 1 runs one after another', async () => {
		const { events, most } = await trace(3, 1, [5, 1, 1]);
		expect(most).toBe(1);
		expect(events).toEqual(['start 0', 'end 0', 'start 1', 'end 1', 'start 2', 'end 2']);
	});

	test('no entries, no work', async () => {
		expect((await trace(0, 3, [])).events).toEqual([]);
	});
});
