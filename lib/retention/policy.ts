import { type CalendarDuration, checkWindowLength, isZeroDuration, parseDuration } from './duration';
import { RetentionPolicyError, describeValue } from './errors';
import type { RetentionPolicy } from './types';

/** The counted rules in the order PBS applies them; the order matters (see selection.ts). */
export const COUNT_RULES = [
	{ field: 'keepLast', rule: 'keep-last' },
	{ field: 'keepHourly', rule: 'keep-hourly' },
	{ field: 'keepDaily', rule: 'keep-daily' },
	{ field: 'keepWeekly', rule: 'keep-weekly' },
	{ field: 'keepMonthly', rule: 'keep-monthly' },
	{ field: 'keepYearly', rule: 'keep-yearly' },
] as const;

export type CountRuleName = (typeof COUNT_RULES)[number]['rule'];

export interface CountRule {
	rule: CountRuleName;
	count: number;
}

/** A time window: everything newer than now minus `duration` is kept with `reason`. */
export interface WindowRule {
	reason: string;
	duration: CalendarDuration;
}

/** A validated policy: only active rules, counted rules in application order. */
export interface NormalizedPolicy {
	counts: CountRule[];
	windows: WindowRule[];
}

const KNOWN_FIELDS = new Set<string>([...COUNT_RULES.map((r) => r.field), 'keepWithin', 'retentionDays']);

export const EMPTY_POLICY_MESSAGE =
	'Retention policy is empty: set at least one keep-* rule or retention days; refusing to prune everything';

/**
 * The largest keep-* count. Larger ones are refused, not clamped: no store holds a million backups
 * of one VM, and past 2^53 a count is not even an exact whole number.
 */
export const MAX_KEEP_COUNT = 1_000_000;

function readCount(field: string, value: unknown, max = MAX_KEEP_COUNT): number {
	if (value === undefined) return 0;
	if (typeof value !== 'number' || !Number.isInteger(value) || value < 0) {
		throw new RetentionPolicyError(
			`${field} must be a non-negative whole number, got ${describeValue(value)}`,
			field,
			value,
		);
	}
	if (value > max) throw new RetentionPolicyError(`${field} must be a whole number from 0 to ${max}, got ${describeValue(value)}`, field, value);
	return value;
}

/**
 * Validates a policy and drops inactive rules. Unknown fields are rejected rather than ignored:
 * a misspelt rule silently doing nothing would prune backups the user meant to keep.
 */
export function normalizePolicy(policy: RetentionPolicy): NormalizedPolicy {
	if (typeof policy !== 'object' || policy === null) {
		throw new RetentionPolicyError(`Retention policy must be an object, got ${describeValue(policy)}`);
	}
	for (const field of Object.keys(policy)) {
		if (!KNOWN_FIELDS.has(field)) {
			throw new RetentionPolicyError(
				`Unknown retention policy field ${JSON.stringify(field)}; known fields: ${[...KNOWN_FIELDS].join(', ')}`,
				field,
			);
		}
	}
	const fields = policy as Record<string, unknown>;
	const counts: CountRule[] = [];
	for (const { field, rule } of COUNT_RULES) {
		const count = readCount(field, fields[field]);
		if (count > 0) counts.push({ rule, count });
	}

	const windows: WindowRule[] = [];
	// A blank keepWithin is how an unfilled form field arrives, so it means "not set".
	const keepWithin = typeof policy.keepWithin === 'string' ? policy.keepWithin.trim() : policy.keepWithin;
	if (keepWithin !== undefined && keepWithin !== '') {
		const duration = parseDuration('keepWithin', keepWithin);
		checkWindowLength('keepWithin', keepWithin, duration);
		if (!isZeroDuration(duration)) windows.push({ reason: `keep-within ${keepWithin}`, duration });
	}
	const retentionDays = readCount('retentionDays', fields.retentionDays, Number.POSITIVE_INFINITY);
	if (retentionDays > 0) {
		const duration = { years: 0, months: 0, days: retentionDays, hours: 0 };
		checkWindowLength('retentionDays', retentionDays, duration);
		windows.push({ reason: `retention-days ${retentionDays}`, duration });
	}

	if (counts.length === 0 && windows.length === 0) throw new RetentionPolicyError(EMPTY_POLICY_MESSAGE);
	return { counts, windows };
}
