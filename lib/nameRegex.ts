/**
 * Regular expressions typed by users run on RE2 (re2js, pure JavaScript), which matches in time
 * linear in the name: a backtracking engine (JavaScript's RegExp) lets a pattern like `(a+)+$`
 * block the whole n8n process for minutes on one VM name. JavaScript pattern syntax is translated
 * (named groups, `\u{...}`, `/`); what needs backtracking (backreferences, lookaround) is refused.
 */
import { RE2JS } from 're2js';
import { LibvirtBackupError } from './errors';

export function nameMatcher(pattern: string, parameter = 'name regex'): (name: string) => boolean {
	let compiled: RE2JS;
	try {
		compiled = RE2JS.compile(RE2JS.translateRegExp(pattern));
	} catch (error) {
		throw new LibvirtBackupError(
			'INVALID_INPUT',
			`Invalid ${parameter} "${pattern}": ${(error as Error).message.replace(/^error parsing regexp: /, '')} (RE2 syntax, matched in linear time: backreferences and lookaround are not supported)`,
		);
	}
	return (name) => compiled.test(name);
}
