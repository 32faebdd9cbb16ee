/**
 * Typed virsh calls and the translation of virsh/host failures into actionable errors. Every
 * remote virsh invocation of the engine goes through this module (or a script constant here).
 */
import { isLibvirtBackupError, LibvirtBackupError, tail } from '../errors';
import { newMarker, type RemoteStep } from '../batch';
import { scriptArgv } from '../shell';
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

/**
 * `sh -c DOMAIN_FOLDER_SCRIPT lvb-domain-folder URI UUID DEST MARKER PATH_TOKEN NAME_TOKEN COMMAND...`:
 * the domain's name (`virsh domname`), its folder name as lib/store/layout's vmDirName makes it
 * (bytes outside `[A-Za-z0-9_+-.]`, and a leading dot, as %XX), printed as `MARKER dir NAME`; then
 * COMMAND runs with every word that IS PATH_TOKEN replaced by `DEST/NAME` and every word that IS
 * NAME_TOKEN by NAME (whole words only: nothing is spliced into text). The caller checks the
 * folder against the VM its own exact match finds: this saves a round trip, it decides nothing.
 * No domain: `MARKER nodomain`, exit 77.
 */
export const DOMAIN_FOLDER_SCRIPT = `export LC_ALL=C
uri=$1 uuid=$2 dest=$3 m=$4 pathtoken=$5 nametoken=$6; shift 6
name=$(virsh -q -c "$uri" domname --domain "$uuid" 2>/dev/null) || name=
[ -n "$name" ] || { echo "$m nodomain"; exit 77; }
safe='ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_+-.'
hex=$(printf '%s' "$safe" | od -An -v -tx1)
enc=$(printf '%s' "$name" | od -An -v -tx1 | awk -v safe="$safe" -v hex="$hex" '
  BEGIN { n = split(hex, h, " "); for (i = 1; i <= n; i++) map[h[i]] = substr(safe, i, 1) }
  { for (i = 1; i <= NF; i++) { c = map[$i]; if (c != "" && !(c == "." && out == "")) out = out c; else out = out "%" toupper($i) } }
  END { print out }')
case $enc in ''|*[!A-Za-z0-9_+.%-]*) echo "$m nodomain"; exit 77;; esac
echo "$m dir $enc"
n=$# i=0
while [ $i -lt $n ]; do
  a=$1; shift
  case $a in "$pathtoken") a="$dest/$enc";; "$nametoken") a=$enc;; esac
  set -- "$@" "$a"
  i=$((i+1))
done
exec "$@"
`;

/** Tokens standing for the domain's folder (full path, and name) in a command run by DOMAIN_FOLDER_SCRIPT. */
export function domainFolderTokens(): { path: string; name: string } {
	const token = newMarker();
	return { path: `${token}-path`, name: `${token}-name` };
}

/** The argv that runs `command` with the domain's folder in place of `tokens` (see DOMAIN_FOLDER_SCRIPT). */
export function inDomainFolderArgv(uri: string, uuid: string, dest: string, marker: string, tokens: { path: string; name: string }, command: readonly string[]): string[] {
	return scriptArgv(DOMAIN_FOLDER_SCRIPT, 'lvb-domain-folder', [uri, uuid, dest, marker, tokens.path, tokens.name, ...command]);
}
