/**
 * Every failure the engine reports is a LibvirtBackupError with a stable code (for workflows and
 * tests) and a message a person can act on. Node files turn these into NodeOperationErrors.
 */
export type ErrorCode =
	| 'INVALID_INPUT'
	| 'SSH_AUTH_FAILED'
	| 'SSH_HOST_KEY_MISMATCH'
	| 'SSH_NO_HOST_KEY'
	| 'SSH_UNREACHABLE'
	| 'SSH_TIMEOUT'
	| 'SSH_CONNECTION_LOST'
	| 'COMMAND_FAILED'
	| 'COMMAND_TIMEOUT'
	| 'ABORTED'
	| 'VIRSH_MISSING'
	| 'LIBVIRT_PERMISSION_DENIED'
	| 'LIBVIRT_UNREACHABLE'
	| 'SUDO_FAILED'
	| 'VM_NOT_FOUND'
	| 'PARSE_ERROR'
	| 'LOCKED'
	| 'NO_SPACE'
	| 'BACKUP_FAILED';

export class LibvirtBackupError extends Error {
	constructor(
		readonly code: ErrorCode,
		message: string,
		readonly details: Record<string, unknown> = {},
	) {
		super(message);
		this.name = 'LibvirtBackupError';
	}
}

export function isLibvirtBackupError(error: unknown, code?: ErrorCode): error is LibvirtBackupError {
	return error instanceof LibvirtBackupError && (code === undefined || error.code === code);
}

/** The last lines of a command's stderr, enough to explain a failure without flooding the UI. */
export function tail(text: string, maxLines = 8, maxChars = 2000): string {
	const lines = text.trimEnd().split('\n');
	const kept = lines.slice(-maxLines).join('\n');
	return kept.length > maxChars ? kept.slice(-maxChars) : kept;
}
