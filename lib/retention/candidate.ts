import { type CalendarBuckets, createBucketer } from './buckets';
import { RetentionInputError, describeValue } from './errors';
import type { BackupRef } from './types';
import type { ZoneClock } from './zone-clock';

/**
 * How the counted rules have settled a backup, mirroring PBS's PruneMark. 'superseded' = in the same
 * bucket as a backup a rule kept; later rules skip it (PBS marks it Remove).
 */
export type RuleMark = 'unmarked' | 'keep' | 'superseded';

/** A backup plus what planning derives from it once: epoch time, calendar buckets, verdict so far. */
export interface Candidate {
	ref: BackupRef;
	/** Position in the input; also keep-last's bucket key, unique per backup. */
	index: number;
	timeMs: number;
	buckets: CalendarBuckets;
	mark: RuleMark;
	/** Every reason to keep it; a backup with none is pruned. */
	reasons: string[];
}

export interface CandidateSet {
	/** In input order. */
	all: Candidate[];
	/** One group per VM, each sorted newest first. */
	byVm: Candidate[][];
	byId: Map<string, Candidate>;
}

const KINDS: ReadonlySet<string> = new Set(['full', 'incremental', 'copy']);

function validate(ref: BackupRef, index: number): number {
	const where = `backups[${index}]`;
	if (typeof ref !== 'object' || ref === null) throw new RetentionInputError(`${where} must be an object`);
	if (typeof ref.id !== 'string' || ref.id === '') {
		throw new RetentionInputError(`${where}.id must be a non-empty string, got ${describeValue(ref.id)}`);
	}
	if (typeof ref.vm !== 'string' || ref.vm === '') {
		throw new RetentionInputError(`${where}.vm must be a non-empty string, got ${describeValue(ref.vm)}`);
	}
	const timeMs = ref.time instanceof Date ? ref.time.getTime() : Number.NaN;
	if (!Number.isFinite(timeMs)) {
		throw new RetentionInputError(`${where}.time (backup ${ref.id}) must be a valid Date, got ${describeValue(ref.time)}`);
	}
	if (!KINDS.has(ref.kind)) {
		throw new RetentionInputError(
			`${where}.kind (backup ${ref.id}) must be one of full, incremental, copy, got ${describeValue(ref.kind)}`,
		);
	}
	if (ref.parent !== undefined && typeof ref.parent !== 'string') {
		throw new RetentionInputError(`${where}.parent (backup ${ref.id}) must be a backup id, got ${describeValue(ref.parent)}`);
	}
	return timeMs;
}

/**
 * Newest first; equal times are ordered by id, the greater id counting as newer, so the plan never
 * depends on the input order.
 */
function newestFirst(a: Candidate, b: Candidate): number {
	if (a.timeMs !== b.timeMs) return b.timeMs - a.timeMs;
	if (a.ref.id === b.ref.id) return 0;
	return a.ref.id < b.ref.id ? 1 : -1;
}

export function buildCandidates(backups: readonly BackupRef[], clock: ZoneClock): CandidateSet {
	if (!Array.isArray(backups)) throw new RetentionInputError(`backups must be an array, got ${describeValue(backups)}`);
	const all: Candidate[] = [];
	const byId = new Map<string, Candidate>();
	const groups = new Map<string, Candidate[]>();
	const bucketsOf = createBucketer(clock);
	backups.forEach((ref, index) => {
		const timeMs = validate(ref, index);
		const duplicate = byId.get(ref.id);
		if (duplicate !== undefined) {
			throw new RetentionInputError(
				`Duplicate backup id ${JSON.stringify(ref.id)} at backups[${duplicate.index}] and backups[${index}]`,
			);
		}
		const candidate: Candidate = {
			ref,
			index,
			timeMs,
			buckets: bucketsOf(timeMs),
			mark: 'unmarked',
			reasons: [],
		};
		all.push(candidate);
		byId.set(ref.id, candidate);
		const group = groups.get(ref.vm);
		if (group === undefined) groups.set(ref.vm, [candidate]);
		else group.push(candidate);
	});
	const byVm = [...groups.values()];
	for (const group of byVm) group.sort(newestFirst);
	return { all, byVm, byId };
}
