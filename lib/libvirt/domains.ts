/**
 * Defining, starting, stopping and removing domains, addressed by UUID. A domain we define gets a
 * UUID chosen here, so every later call names it by that UUID and its name never reaches a command
 * line.
 */
import { randomUUID } from 'node:crypto';
import { LibvirtBackupError, isLibvirtBackupError, tail } from '../errors';
import { scriptArgv } from '../shell';
import type { SshConnection } from '../ssh';
import { checkNewDomainName, parseDomainXml, withUuid } from './domainXml';
import { runVirsh } from './virsh';

/** Each call is one or two virsh calls (stop's own wait has its own bound). */
const CALL_TIMEOUT_MS = 120_000;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

function checkUuid(uuid: string): void {
	if (!UUID.test(uuid)) throw new LibvirtBackupError('INVALID_INPUT', `Not a domain UUID: ${JSON.stringify(uuid)}`);
}

/** `active` lists running, paused and other live domains: what is not in it is shut off. */
const ACTIVE_FUNCTION = `active() { virsh -q -c "$uri" list --uuid | grep -qixF -- "$dom"; }`;

/**
 * Args: uri, uuid, xml. Refuses a UUID that exists (a define would silently redefine that domain);
 * libvirt itself refuses a name that exists under another UUID. The XML goes through a private
 * temp file, then the definition libvirt stored is printed for the caller to check.
 */
const DEFINE_SCRIPT = `export LC_ALL=C
uri=$1 dom=$2 xml=$3
all=$(virsh -q -c "$uri" list --all --uuid) || exit $?
if printf '%s\\n' "$all" | grep -qixF -- "$dom"; then echo "UUID $dom is taken by another domain" >&2; exit 3; fi
umask 077
f=$(mktemp) || exit 1
trap 'rm -f -- "$f"' EXIT
printf '%s' "$xml" >"$f" || exit 1
virsh -q -c "$uri" define --file "$f" >/dev/null || exit $?
virsh -q -c "$uri" dumpxml --domain "$dom" --inactive`;

/**
 * Defines a new persistent domain from `xml` (its `<uuid>`, if any, is replaced by a fresh one).
 * Refuses a name or UUID that already exists: it never changes another domain's definition.
 */
export async function defineDomain(ssh: SshConnection, uri: string, xml: string): Promise<{ name: string; uuid: string }> {
	const uuid = randomUUID();
	const wanted = parseDomainXml(withUuid(xml, uuid)).name;
	checkNewDomainName(wanted);
	let stored: string;
	try {
		stored = (await runVirsh(ssh, scriptArgv(DEFINE_SCRIPT, 'lvb-define', [uri, uuid, withUuid(xml, uuid)]), uri, 'virsh define', undefined, { timeoutMs: CALL_TIMEOUT_MS })).stdout;
	} catch (error) {
		if (isLibvirtBackupError(error) && /already exists/.test(error.message)) {
			throw new LibvirtBackupError('INVALID_INPUT', `Cannot define VM ${JSON.stringify(wanted)}: a VM of that name already exists on the host (${tail(error.message, 1)}). Choose another name.`);
		}
		throw error;
	}
	const defined = parseDomainXml(stored);
	if (defined.uuid.toLowerCase() !== uuid || defined.name !== wanted) {
		throw new LibvirtBackupError('COMMAND_FAILED', `libvirt stored domain ${JSON.stringify(defined.name)} (${defined.uuid}) instead of ${JSON.stringify(wanted)} (${uuid})`);
	}
	return { name: defined.name, uuid };
}

export async function startDomain(ssh: SshConnection, uri: string, uuid: string): Promise<void> {
	checkUuid(uuid);
	await runVirsh(ssh, ['virsh', '-q', '-c', uri, 'start', '--domain', uuid], uri, 'virsh start', undefined, { timeoutMs: CALL_TIMEOUT_MS });
}

/**
 * Args: uri, uuid, mode (graceful | force | graceful-then-force), seconds. Graceful is an ACPI
 * shutdown request and a wait until the domain is off; a guest that ignores it (no OS, no ACPI
 * daemon, paused) is still running at the deadline: exit 124, or forced off when asked.
 */
const STOP_SCRIPT = `export LC_ALL=C
uri=$1 dom=$2 mode=$3 seconds=$4
${ACTIVE_FUNCTION}
active || exit 0
if [ "$mode" != force ]; then
  virsh -q -c "$uri" shutdown --domain "$dom" >/dev/null || { active || exit 0; exit 1; }
  end=$(($(date +%s) + seconds))
  while active; do
    if [ "$(date +%s)" -ge "$end" ]; then
      [ "$mode" = graceful ] && { echo "the VM did not shut down within $seconds s" >&2; exit 124; }
      break
    fi
    sleep 0.5
  done
fi
active || exit 0
virsh -q -c "$uri" destroy --domain "$dom" >/dev/null && exit 0
active && exit 1
exit 0`;

export interface StopOptions {
	/** Ask the guest to shut down (ACPI) and wait; otherwise power it off at once (`virsh destroy`). */
	graceful: boolean;
	/** How long a graceful shutdown may take. */
	timeoutMs: number;
	/** After a graceful shutdown timed out: power the domain off instead of failing. */
	forceAfterTimeout?: boolean;
	signal?: AbortSignal;
}

/** Stops a domain (nothing to do when it is already shut off); see StopOptions. */
export async function stopDomain(ssh: SshConnection, uri: string, uuid: string, options: StopOptions): Promise<void> {
	checkUuid(uuid);
	const seconds = Math.max(1, Math.ceil(options.timeoutMs / 1000));
	const mode = !options.graceful ? 'force' : options.forceAfterTimeout ? 'graceful-then-force' : 'graceful';
	const argv = scriptArgv(STOP_SCRIPT, 'lvb-stop', [uri, uuid, mode, String(seconds)]);
	const { exitCode } = await runVirsh(ssh, argv, uri, 'virsh shutdown', options.signal, { timeoutMs: seconds * 1000 + CALL_TIMEOUT_MS, okExitCodes: [0, 124] });
	if (exitCode === 124) {
		throw new LibvirtBackupError(
			'COMMAND_TIMEOUT',
			`VM ${uuid} did not shut down within ${seconds} s after the ACPI shutdown request (a guest without an OS or ACPI support ignores it): raise the timeout, or choose to force it off`,
		);
	}
}

/**
 * Removes a shut-off domain's definition, with its checkpoint and snapshot metadata and its UEFI
 * variable store. A running domain is refused: undefining it would leave it running as a transient
 * domain.
 */
const UNDEFINE_SCRIPT = `export LC_ALL=C
uri=$1 dom=$2
${ACTIVE_FUNCTION}
if active; then echo "the VM is running: stop it first" >&2; exit 3; fi
virsh -q -c "$uri" undefine --domain "$dom" --nvram --checkpoints-metadata --snapshots-metadata >/dev/null`;

export async function undefineDomain(ssh: SshConnection, uri: string, uuid: string): Promise<void> {
	checkUuid(uuid);
	await runVirsh(ssh, scriptArgv(UNDEFINE_SCRIPT, 'lvb-undefine', [uri, uuid]), uri, 'virsh undefine', undefined, { timeoutMs: CALL_TIMEOUT_MS });
}
