/**
 * Batched remote output: one remote script prints many sections, each introduced by a marker line
 * `<marker> <kind> <arg>`. A fresh random marker per run, so no VM name, path or error text that
 * comes back from the host can forge a section.
 */
import { randomBytes } from 'node:crypto';
import { LibvirtBackupError, tail } from './errors';
import type { SshConnection } from './ssh';

export function newMarker(): string {
	return `@@LVB-${randomBytes(8).toString('hex')}`;
}

/** Splits `marker kind arg\n...` sections out of batched output. */
export function splitSections(output: string, marker: string): { kind: string; arg: string; body: string }[] {
	const sections: { kind: string; arg: string; body: string }[] = [];
	const parts = output.split(`${marker} `);
	for (const part of parts.slice(1)) {
		const lineEnd = part.indexOf('\n');
		const header = lineEnd === -1 ? part : part.slice(0, lineEnd);
		const [kind, arg = ''] = header.split(' ');
		sections.push({ kind, arg, body: lineEnd === -1 ? '' : part.slice(lineEnd + 1) });
	}
	return sections;
}


/**
 * One part of a batched remote command (see stepsArgv): its argv, and how to read what it printed.
 * Several steps run one after another in ONE exec: one round trip instead of one each.
 */
export interface RemoteStep<T> {
	label: string;
	argv: string[];
	/** Its output so far, each time more arrives (progress). */
	onOutput?(stdout: string): void;
	/** Its whole output; exitCode is 0 unless the step is optional and failed. */
	parse(stdout: string, exitCode: number): T;
	/** The error its failure is (its exit code and stderr); default: a failed command named by label. */
	failure?(exitCode: number, stderr: string): Error;
	/** A failure of this step does not stop the steps after it (its stderr comes on its stdout then). */
	optional?: boolean;
}

/**
 * `sh -c STEPS_SCRIPT lvb-steps MARKER [MUST COUNT ARGV...]...`: runs each argv (COUNT words) in
 * turn, each part of the output (stderr too) after `MARKER step I`; the first required step that
 * fails ends the run with `MARKER failed I` and RC (exit 0: the reader turns it into that step's
 * error). The first COUNT words are kept by rotating them to the end and shifting the rest away.
 */
export const STEPS_SCRIPT = `m=$1; shift
i=0
while [ $# -gt 0 ]; do
  must=$1 n=$2; shift 2
  printf '\\n%s step %s\\n' "$m" "$i"; printf '\\n%s step %s\\n' "$m" "$i" >&2
  if [ "$must" = 1 ]; then
    ( k=0; while [ $k -lt "$n" ]; do set -- "$@" "$1"; shift; k=$((k+1)); done; shift $(($# - n)); exec "$@" )
  else
    ( k=0; while [ $k -lt "$n" ]; do set -- "$@" "$1"; shift; k=$((k+1)); done; shift $(($# - n)); exec "$@" 2>&1 )
  fi
  rc=$?
  if [ $rc != 0 ]; then
    printf '\\n%s failed %s\\n%s\\n' "$m" "$i" "$rc"
    [ "$must" = 1 ] && exit 0
  fi
  shift "$n"
  i=$((i+1))
done
printf '\\n%s end\\n' "$m"
`;

/** The argv that runs `steps` one after another (its output is read by readSteps with the same marker). */
export function stepsArgv(steps: readonly RemoteStep<unknown>[], marker: string): string[] {
	return ['sh', '-c', STEPS_SCRIPT, 'lvb-steps', marker, ...steps.flatMap((step) => [step.optional ? '0' : '1', String(step.argv.length), ...step.argv])];
}

/** Feeds each step's output so far to its onOutput, as the batched output grows. */
export function stepsProgress(steps: readonly RemoteStep<unknown>[], marker: string): (output: string) => void {
	return (output) => {
		const start = output.lastIndexOf(`${marker} step `);
		if (start === -1) return;
		const [current] = splitSections(output.slice(start), marker);
		steps[Number(current.arg)]?.onOutput?.(current.body);
	};
}

/** Each step's result from the batched output and stderr; the first required step that failed throws its error. */
export function readSteps<T extends unknown[]>(steps: { [K in keyof T]: RemoteStep<T[K]> }, marker: string, stdout: string, stderr: string): T {
	const sections = splitSections(stdout, marker);
	const failed = new Map(sections.filter((section) => section.kind === 'failed').map((section) => [Number(section.arg), Number(section.body.trim()) || 1]));
	// Each step's part ends with the newline printed before the next marker: not the step's.
	const outputs = new Map(sections.filter((section) => section.kind === 'step').map((section) => [Number(section.arg), section.body.replace(/\n$/, '')]));
	const errors = new Map(splitSections(stderr, marker).filter((section) => section.kind === 'step').map((section) => [Number(section.arg), section.body]));
	return steps.map((step, index) => {
		const exitCode = failed.get(index) ?? 0;
		if (exitCode !== 0 && !step.optional) {
			const stepStderr = errors.get(index) ?? stderr;
			throw step.failure?.(exitCode, stepStderr) ?? new LibvirtBackupError('COMMAND_FAILED', `${step.label} failed (exit code ${exitCode}): ${tail(stepStderr) || 'no error output'}`, { exitCode, stderr: tail(stepStderr) });
		}
		if (!outputs.has(index) && !sections.some((section) => section.kind === 'end')) {
			throw new LibvirtBackupError('COMMAND_FAILED', `${step.label} did not run: the batched remote command ended early`);
		}
		return step.parse(outputs.get(index) ?? '', exitCode);
	}) as T;
}

/** Runs `steps` as ONE remote command: one round trip for all of them. */
export async function runSteps<T extends unknown[]>(
	ssh: SshConnection,
	steps: { [K in keyof T]: RemoteStep<T[K]> },
	options: { label: string; signal?: AbortSignal; timeoutMs?: number },
): Promise<T> {
	const marker = newMarker();
	let output = '';
	const progress = stepsProgress(steps, marker);
	const result = await ssh.run(stepsArgv(steps, marker), {
		...options,
		onStdout: (chunk) => {
			output += chunk.toString('utf8');
			progress(output);
		},
	});
	return readSteps<T>(steps, marker, output, result.stderr);
}
