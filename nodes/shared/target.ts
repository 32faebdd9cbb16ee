/** Maps the n8n credential to the engine's plain SSH target (no n8n types beyond this file). */
import type { ICredentialDataDecryptedObject } from 'n8n-workflow';
import { parseHostKeyPins, type SshTarget } from '../../lib/ssh';
import type { SudoMode } from '../../lib/shell';

export interface LibvirtHost {
	target: SshTarget;
	uri: string;
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
	return { target, uri: field(credentials, 'libvirtUri').trim() || 'qemu:///system' };
}
