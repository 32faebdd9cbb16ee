/**
 * Batched remote output: one remote script prints many sections, each introduced by a marker line
 * `<marker> <kind> <arg>`. A fresh random marker per run, so no VM name, path or error text that
 * comes back from the host can forge a section.
 */
import { randomBytes } from 'node:crypto';

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

