/** Engine SSH targets for the lab's users (see scripts/lab/up.sh and lab.json). */
import { parseHostKeyPins, type SshTarget } from '../../lib/ssh';
import { fleetHost, fleetLab, loadLab, type LabFleetHost } from './lab';

export type LabUser = 'root' | 'encrypted' | 'rsa' | 'password' | 'novirsh' | 'noperm' | 'sudo' | 'sudoPassword' | 'unauthorized';

export function labTarget(user: LabUser = 'root', overrides: Partial<SshTarget> = {}): SshTarget {
	const lab = loadLab();
	const account = lab.users[user];
	return {
		host: lab.host,
		port: lab.port,
		username: account.username,
		auth: { method: 'privateKey', privateKey: account.privateKey, passphrase: account.passphrase },
		hostKeys: { pins: parseHostKeyPins(lab.knownHostsLine) },
		sudo: user === 'sudo' ? { mode: 'nopasswd' } : user === 'sudoPassword' ? { mode: 'password', password: account.password } : { mode: 'none' },
		readyTimeoutMs: 10_000,
		...overrides,
	};
}

/**
 * The lab's replica host (its second sshd) for a lab user, or the first sshd when lab.json has no
 * replicaHost: either way a separate connection, as a replica on another host gets.
 */
export function replicaTarget(user: LabUser = 'root'): SshTarget {
	const replica = loadLab().replicaHost;
	if (!replica) return labTarget(user);
	return labTarget(user, { host: replica.host, port: replica.port, hostKeys: { pins: parseHostKeyPins(replica.knownHostsLine) } });
}

/** The engine's SSH target for a fleet host: the fleet's one credential, that host's pinned key. */
export function fleetTarget(host: LabFleetHost | string | number, overrides: Partial<SshTarget> = {}): SshTarget {
	const h = typeof host === 'object' ? host : fleetHost(host);
	const user = fleetLab().user;
	return {
		host: h.address,
		port: h.port,
		username: user.username,
		auth: { method: 'privateKey', privateKey: user.privateKey },
		hostKeys: { pins: parseHostKeyPins(h.knownHostsLine) },
		sudo: { mode: 'none' },
		readyTimeoutMs: 10_000,
		...overrides,
	};
}

/** The `libvirtSshApi` credential data for a lab user, as a person would fill it in n8n. */
export function labCredentialData(overrides: Record<string, string | number | boolean> = {}): Record<string, string | number | boolean> {
	const lab = loadLab();
	return {
		host: lab.host,
		port: lab.port,
		username: lab.users.root.username,
		authMethod: 'privateKey',
		privateKey: lab.users.root.privateKey,
		hostKeys: lab.knownHostsLine,
		skipHostKeyVerification: false,
		sudoMode: 'none',
		libvirtUri: lab.systemUri,
		...overrides,
	};
}
