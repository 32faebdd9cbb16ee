/**
 * Typed virsh calls and the translation of virsh/host failures into actionable errors. Every
 * remote virsh invocation of the engine goes through this module (or a script constant here).
 */
import { isLibvirtBackupError, LibvirtBackupError, tail } from '../errors';
import type { RemoteStep } from '../batch';
import type { RunOptions, RunResult, SshConnection } from '../ssh';

/** Turns a failed virsh run into the error a person can act on. */
export function virshFailure(result: Pick<RunResult, 'exitCode' | 'stderr'>, uri: string, username: string): LibvirtBackupError {
	const stderr = tail(result.stderr);
	if (result.exitCode === 127 || /virsh: (command )?not found/.test(result.stderr)) {
		return new LibvirtBackupError(
			'VIRSH_MISSING',
			'virsh not found on host: install libvirt-clients (Debian/Ubuntu) or libvirt-client (RHEL/Fedora), or make sure it is on the PATH of the SSH user',
		);
	}
	if (/Permission denied/i.test(result.stderr) && /sock|connect/i.test(result.stderr)) {
		return new LibvirtBackupError(
			'LIBVIRT_PERMISSION_DENIED',
			`Permission denied on the libvirt socket for ${uri} as user "${username}": add the user to the "libvirt" group on the host, or set the credential's sudo mode. virsh said: ${stderr}`,
		);
	}
	if (/failed to connect to the hypervisor|no connection driver available|Cannot recv data|Failed to connect socket/i.test(result.stderr)) {
		return new LibvirtBackupError('LIBVIRT_UNREACHABLE', `Cannot connect to libvirt at ${uri}: ${stderr}. Check the credential's libvirt URI and that libvirtd (or virtqemud) runs on the host.`);
	}
	return new LibvirtBackupError('COMMAND_FAILED', `virsh failed for ${uri} (exit code ${result.exitCode}): ${stderr || 'no error output'}`);
}

/** Runs a remote command that calls virsh and maps its failure to a virsh error. */
export async function runVirsh(
	ssh: SshConnection,
	argv: string[],
	uri: string,
	label: string,
	signal?: AbortSignal,
	options: Omit<RunOptions, 'label' | 'signal'> = {},
): Promise<RunResult> {
	try {
		return await ssh.run(argv, { ...options, label, signal });
	} catch (error) {
		if (isLibvirtBackupError(error, 'COMMAND_FAILED') && typeof error.details.exitCode === 'number') {
			throw virshFailure({ exitCode: error.details.exitCode, stderr: String(error.details.stderr ?? '') }, uri, ssh.target.username);
		}
		throw error;
	}
}

export interface LibvirtVersions {
	libvirt?: string;
	hypervisor?: string;
	hypervisorVersion?: string;
}

/** `virsh version` under LC_ALL=C: the product names and numbers are not translated. */
export async function virshVersion(ssh: SshConnection, uri: string, signal?: AbortSignal): Promise<LibvirtVersions> {
	const result = await runVirsh(ssh, ['env', 'LC_ALL=C', 'virsh', '-c', uri, 'version'], uri, 'virsh version', signal);
	const libvirt = /Using library: libvirt (\S+)/.exec(result.stdout)?.[1];
	const running = /Running hypervisor: (\S+) (\S+)/.exec(result.stdout);
	return { libvirt, hypervisor: running?.[1], hypervisorVersion: running?.[2] };
}

/** The domain definition: the persistent (inactive) one when there is one. */
export async function dumpDomainXml(ssh: SshConnection, uri: string, uuid: string, inactive: boolean): Promise<string> {
	const step = dumpDomainXmlStep(uri, uuid, inactive, ssh.target.username);
	return (await runVirsh(ssh, step.argv, uri, step.label)).stdout;
}

/** dumpDomainXml as a step of a batched command (lib/batch). */
export function dumpDomainXmlStep(uri: string, uuid: string, inactive: boolean, username: string): RemoteStep<string> {
	return {
		label: 'virsh dumpxml',
		argv: ['virsh', '-q', '-c', uri, 'dumpxml', '--domain', uuid, ...(inactive ? ['--inactive'] : [])],
		parse: (stdout) => stdout,
		failure: (exitCode, stderr) => virshFailure({ exitCode, stderr }, uri, username),
	};
}
