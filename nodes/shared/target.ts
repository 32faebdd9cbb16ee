/** Maps the n8n credential to the engine's plain SSH target (no n8n types beyond this file). */
import type { ICredentialDataDecryptedObject } from 'n8n-workflow';
import { LibvirtBackupError } from '../../lib/errors';
import { parseHostKeyPins, pinsForHost, type SshTarget } from '../../lib/ssh';
import type { SudoMode } from '../../lib/shell';

export interface LibvirtHost {
	target: SshTarget;
	uri: string;
	/** The host as items name it (the Host parameter as given, else the credential's host): what a downstream Host parameter can take back. */
	name: string;
}

function field(credentials: ICredentialDataDecryptedObject, name: string): string {
	const value = credentials[name];
	return typeof value === 'string' ? value : value === undefined || value === null ? '' : String(value);
}

export function hostFromCredentials(credentials: ICredentialDataDecryptedObject): LibvirtHost {
	const sudoMode = (field(credentials, 'sudoMode') || 'none') as SudoMode;
	const target: SshTarget = {
		host: field(credentials, 'host').trim(),
		port: Number(credentials.port ?? 22),
		username: field(credentials, 'username').trim(),
		auth:
			field(credentials, 'authMethod') === 'password'
				? { method: 'password', password: field(credentials, 'password') }
				: { method: 'privateKey', privateKey: field(credentials, 'privateKey'), passphrase: field(credentials, 'passphrase') || undefined },
		hostKeys: credentials.skipHostKeyVerification === true ? { skipVerification: true } : { pins: parseHostKeyPins(field(credentials, 'hostKeys')) },
		sudo: { mode: sudoMode, password: sudoMode === 'password' ? field(credentials, 'sudoPassword') : undefined },
	};
	return { target, uri: field(credentials, 'libvirtUri').trim() || 'qemu:///system', name: target.host };
}

/**
 * The host an item names with the node's Host parameter: `host`, `host:port`, `[v6 address]` or
 * `[host]:port` (empty: the credential's own host). The credential's user, key, sudo mode and URI are
 * kept; its pinned keys are narrowed to this host's (pinsForHost) unless it is the credential's own.
 */
export function hostForItem(credentialHost: LibvirtHost, hostParameter: unknown): LibvirtHost {
	const raw = typeof hostParameter === 'string' ? hostParameter.trim() : hostParameter === undefined || hostParameter === null ? '' : String(hostParameter);
	if (raw === '') return credentialHost;
	const { host, port } = parseHostParameter(raw, credentialHost.target.port);
	const own = credentialHost.target;
	if (host.toLowerCase() === own.host.toLowerCase() && port === own.port) return { ...credentialHost, name: raw };
	const hostKeys: SshTarget['hostKeys'] = 'pins' in own.hostKeys ? { pins: pinsForHost(own.hostKeys.pins, host, port), forHost: true } : own.hostKeys;
	return { ...credentialHost, target: { ...own, host, port, hostKeys }, name: raw };
}

const HOST_NAME = /^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$/;
const IPV6 = /^[0-9A-Fa-f:.]+$/;

export function parseHostParameter(raw: string, defaultPort: number): { host: string; port: number } {
	const bad = (why: string) =>
		new LibvirtBackupError('INVALID_INPUT', `Host ${JSON.stringify(raw.slice(0, 100))} ${why}. Give a host name or address, optionally with a port: web01.example.com, 10.0.0.5:2222, [2001:db8::5]:22.`);
	let host = raw;
	let portText: string | undefined;
	const bracketed = /^\[([^\]]*)\](?::(.*))?$/.exec(raw);
	if (bracketed) {
		[, host, portText] = bracketed;
	} else if ((raw.match(/:/g) ?? []).length === 1) {
		[host, portText] = raw.split(':');
	}
	if (!HOST_NAME.test(host) && !(host.includes(':') && IPV6.test(host))) throw bad('is not a host name or address');
	if (portText === undefined) return { host, port: defaultPort };
	const port = Number(portText);
	if (!/^\d{1,5}$/.test(portText) || port < 1 || port > 65535) throw bad('has a port that is not 1-65535');
	return { host, port };
}
