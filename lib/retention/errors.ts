/** The policy itself is unusable: empty (it would prune everything) or a field has a bad value. */
export class RetentionPolicyError extends Error {
	constructor(
		message: string,
		readonly field?: string,
		readonly value?: unknown,
	) {
		super(message);
		this.name = 'RetentionPolicyError';
	}
}

/** The backups, `now` or the time zone handed to the planner are malformed. */
export class RetentionInputError extends Error {
	constructor(message: string) {
		super(message);
		this.name = 'RetentionInputError';
	}
}

/** Renders an offending value for an error message: strings quoted, everything else as written. */
export function describeValue(value: unknown): string {
	return typeof value === 'string' ? JSON.stringify(value) : String(value);
}
