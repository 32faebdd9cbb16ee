/** Engine SSH targets for the lab's users (see scripts/lab/up.sh and lab.json). */
import { parseHostKeyPins, type SshTarget } from '../../lib/ssh';
import { loadLab } from './lab';

export type LabUser = 'root' | 'encrypted' | 'rsa' | 'password' | 'novirsh' | 'noperm' | 'sudo' | 'unauthorized';

export function labTarget(user: LabUser = 'root', overrides: Partial<SshTarget> = {}): SshTarget {
	const lab = loadLab();
	const account = lab.users[user];
	return {
		host: lab.host,
		port: lab.port,
		username: account.username,
		auth: { method: 'privateKey', privateKey: account.privateKey, passphrase: account.passphrase },
		hostKeys: { pins: parseHostKeyPins(lab.knownHostsLine) },
		sudo: { mode: user === 'sudo' ? 'nopasswd' : 'none' },
		readyTimeoutMs: 10_000,
		...overrides,
	};
}
