/**
 * The ONE place that turns an argv array into a remote command line. Every value (VM names, paths,
 * URIs, parameters) is data: it is single-quoted here and nowhere is a command built by string
 * concatenation elsewhere in the code base.
 */
import { LibvirtBackupError } from './errors';

export type SudoMode = 'none' | 'nopasswd' | 'password';

/**
 * Runs the command in its own process group and kills that whole group when the channel's stdin
 * reaches EOF, or stays silent for `$1` seconds. Without a PTY, sshd sends no SIGHUP when a channel
 * closes, so a cancelled `qemu-img convert` would otherwise keep running, holding files and locks
 * (LAB.md, OpenSSH 9.2). And when the network silently drops (no FIN, no RST), sshd keeps the
 * session and stdin open for as long as TCP keeps the connection (hours): the client therefore
 * writes a heartbeat byte every few seconds, and silence means the client is gone.
 * dash's `read` has no timeout, so each byte is waited for by `timeout LIMIT head -c 1`; `wc -c`
 * tells a byte (1) from EOF or silence (0). Any byte counts, so what `sudo -S` leaves after the
 * password line does too. (dash's `kill` takes no `--`, so the negative pid follows the signal.)
 * `setsid` is not a group leader here (no job control), so it does not fork and `$!` is the new
 * group's id.
 */
const WATCHDOG_SCRIPT = [
	'limit=$1; shift',
	'exec 3<&0',
	'setsid "$@" </dev/null &',
	'child=$!',
	'(',
	'  while [ "$(timeout "$limit" head -c 1 <&3 | wc -c)" -eq 1 ]; do :; done',
	'  kill -TERM "-$child"',
	') >/dev/null 2>&1 &',
	'watch=$!',
	'exec 3<&-',
	'wait "$child"; rc=$?',
	'kill "$watch" 2>/dev/null',
	'exit "$rc"',
].join('\n');

/** Seconds without a heartbeat byte after which the watchdog ends the command (see connection.ts). */
export const WATCHDOG_SILENCE_SECONDS = 30;

/** POSIX single-quoting: the result is one shell word whose value is exactly `arg`. */
export function quoteArg(arg: string): string {
	if (arg.includes('\0')) {
		throw new LibvirtBackupError('INVALID_INPUT', 'A command argument contains a NUL byte, which no remote command can receive');
	}
	// '=' stays quoted: an unquoted NAME=value in command position would be an assignment.
	if (/^[A-Za-z0-9_@%+:,./-]+$/.test(arg)) {
		return arg;
	}
	return `'${arg.replace(/'/g, `'\\''`)}'`;
}

export interface CommandLineOptions {
	sudo?: SudoMode;
	/** Wrap in the watchdog so the remote process dies with its channel (default true). */
	watchdog?: boolean;
	/** Seconds of silence on stdin that end the command (default WATCHDOG_SILENCE_SECONDS). */
	silenceLimitSeconds?: number;
}

/**
 * The remote command line for argv. With sudo, the watchdog itself runs under sudo so that it can
 * kill the (root) command; `sudo -S` reads the password as the first line of stdin, byte by byte,
 * and leaves the rest of stdin to the watchdog.
 */
export function commandLine(argv: readonly string[], options: CommandLineOptions = {}): string {
	if (argv.length === 0 || argv[0] === '') {
		throw new LibvirtBackupError('INVALID_INPUT', 'Cannot run an empty command');
	}
	const limit = String(options.silenceLimitSeconds ?? WATCHDOG_SILENCE_SECONDS);
	const wrapped = options.watchdog === false ? [...argv] : ['sh', '-c', WATCHDOG_SCRIPT, 'lvb-watchdog', limit, ...argv];
	const sudo = options.sudo ?? 'none';
	const prefix = sudo === 'nopasswd' ? ['sudo', '-n', '--'] : sudo === 'password' ? ['sudo', '-S', '-p', '', '--'] : [];
	return [...prefix, ...wrapped].map(quoteArg).join(' ');
}

/**
 * A constant script run as `sh -c SCRIPT NAME args...`: the script is code from this repository,
 * the args are data and reach it as "$1", "$2"..., never spliced into its text.
 */
export function scriptArgv(script: string, name: string, args: readonly string[]): string[] {
	return ['sh', '-c', script, name, ...args];
}
