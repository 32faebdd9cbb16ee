/**
 * The ONE place that turns an argv array into a remote command line. Every value (VM names, paths,
 * URIs, parameters) is data: it is single-quoted here and nowhere is a command built by string
 * concatenation elsewhere in the code base.
 */
import { LibvirtBackupError } from './errors';

export type SudoMode = 'none' | 'nopasswd' | 'password';

/**
 * Runs the command in its own process group and kills that whole group when the channel's stdin
 * reaches EOF. Without a PTY, sshd sends no SIGHUP when a channel closes, so a cancelled
 * `qemu-img convert` would otherwise keep running, holding files and locks (LAB.md, OpenSSH 9.2).
 * (dash's `kill` takes no `--`, so the negative pid follows the signal directly.)
 * The client keeps stdin open for the life of the command; closing the channel (cancel, timeout,
 * dropped connection) closes it. `setsid` is not a group leader here (no job control), so it does
 * not fork and `$!` is the new group's id.
 */
const WATCHDOG_SCRIPT = [
	'exec 3<&0',
	'setsid "$@" </dev/null &',
	'child=$!',
	'( cat <&3 >/dev/null 2>&1; kill -TERM "-$child" 2>/dev/null ) >/dev/null 2>&1 &',
	'watch=$!',
	'exec 3<&-',
	'wait "$child"; rc=$?',
	'kill "$watch" 2>/dev/null',
	'exit "$rc"',
].join('\n');

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
	const wrapped = options.watchdog === false ? [...argv] : ['sh', '-c', WATCHDOG_SCRIPT, 'lvb-watchdog', ...argv];
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
