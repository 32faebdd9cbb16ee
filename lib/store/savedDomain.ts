/**
 * The domain definition a backup keeps (`domain.xml`, written by lib/backup), read back for a restore
 * as a new VM or an instant recovery. The destination is not trusted: the file must be a regular
 * file, not a link (never followed), and no bigger than a definition of ours can be; it is read with
 * a cap, so a huge file there never reaches n8n whole.
 */
import { LibvirtBackupError, isLibvirtBackupError } from '../errors';
import { scriptArgv } from '../shell';
import type { SshConnection } from '../ssh';

export const DOMAIN_XML_FILE = 'domain.xml';
/** Ours are a few KiB (lib/backup passes one as a command argument, at most 128 KiB); 1 MiB leaves room for hand-edited ones. */
export const MAX_SAVED_XML_BYTES = 1024 * 1024;
/** A read of a small file: a minute or more means a hung share. */
const READ_TIMEOUT_MS = 120_000;

/**
 * `sh -c READ_SCRIPT lvb-saved-xml FILE MAX`: at most MAX bytes of FILE (the caller asks one more, to
 * see an oversized one), refused when it is a link or not a regular file. Opened O_NOFOLLOW|O_NONBLOCK,
 * as the export reads files, so a link swapped in after the test is refused and a FIFO cannot block.
 */
const READ_SCRIPT = `f=$1 max=$2
if [ -L "$f" ] || [ ! -f "$f" ]; then echo "$f is missing, a symbolic link or not a regular file" >&2; exit 65; fi
exec dd if="$f" iflag=nofollow,nonblock,count_bytes bs=65536 count="$max" status=none`;

/** The saved definition of the backup at `backupPath`, or a clear INVALID_INPUT error saying why it cannot be used. */
export async function readSavedDomainXml(ssh: SshConnection, backupPath: string, signal?: AbortSignal): Promise<string> {
	const file = `${backupPath}/${DOMAIN_XML_FILE}`;
	let stdout: string;
	try {
		({ stdout } = await ssh.run(scriptArgv(READ_SCRIPT, 'lvb-saved-xml', [file, String(MAX_SAVED_XML_BYTES + 1)]), { label: `read ${DOMAIN_XML_FILE}`, signal, timeoutMs: READ_TIMEOUT_MS }));
	} catch (error) {
		if (isLibvirtBackupError(error, 'COMMAND_FAILED')) throw new LibvirtBackupError('INVALID_INPUT', `${backupPath} has no usable saved domain definition: ${error.message}`);
		throw error;
	}
	if (Buffer.byteLength(stdout) > MAX_SAVED_XML_BYTES) throw new LibvirtBackupError('INVALID_INPUT', `${file} is larger than ${MAX_SAVED_XML_BYTES} bytes: not a domain definition of ours`);
	return stdout;
}
