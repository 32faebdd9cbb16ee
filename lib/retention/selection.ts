/**
 * The keep rules, with Proxmox Backup Server semantics.
 *
 * Source: proxmox-backup, pbs-datastore/src/prune.rs (`compute_prune_info`, `mark_selections`), and
 * the PBS manual, "Maintenance Tasks > Pruning": "The retention options are processed in the order
 * given above. Each option only covers backups within its time period. The next option does not
 * take care of already covered backups. It will only consider older backups."
 *
 * In code terms, each counted rule, in the order keep-last, -hourly, -daily, -weekly, -monthly,
 * -yearly:
 * 1. collects the buckets (under its own calendar unit) of every backup an earlier rule kept; those
 *    buckets are already covered, so they consume none of this rule's count;
 * 2. walks the VM's backups newest first, skipping any an earlier rule settled (kept or superseded)
 *    and any in a covered bucket;
 * 3. keeps the first (newest) backup of each new bucket until `count` buckets are kept, then stops;
 *    further backups in a bucket it kept are superseded and no later rule looks at them again.
 * Only buckets that contain backups count: a day without backups uses no keep-daily slot.
 *
 * This differs from restic's ApplyPolicy (internal/data/snapshot_policy.go), where every rule runs
 * over all snapshots independently, so a snapshot kept by keep-last also uses up keep-daily's slot
 * for its day, and the oldest snapshot is kept while counts remain. With PBS semantics
 * `keepLast 3, keepDaily 7` keeps the 3 newest backups plus the newest of 7 further days.
 *
 * keep-last counts backups, not timestamps: PBS buckets keep-last by backup time, which would merge
 * two backups with identical times; here each backup is its own bucket.
 */
import { type CalendarUnit, bucketLabel } from './buckets';
import type { Candidate } from './candidate';
import { cutoffBefore } from './duration';
import type { CountRule, CountRuleName, WindowRule } from './policy';
import type { ZoneClock } from './zone-clock';

const CALENDAR_UNITS: Record<Exclude<CountRuleName, 'keep-last'>, CalendarUnit> = {
	'keep-hourly': 'hour',
	'keep-daily': 'day',
	'keep-weekly': 'week',
	'keep-monthly': 'month',
	'keep-yearly': 'year',
};

interface RuleShape {
	bucketOf(candidate: Candidate): number;
	reason(bucket: number, keptSoFar: number): string;
}

function shapeOf({ rule, count }: CountRule): RuleShape {
	if (rule === 'keep-last') {
		return {
			bucketOf: (candidate) => candidate.index,
			reason: (_bucket, keptSoFar) => `keep-last ${keptSoFar}/${count}`,
		};
	}
	const unit = CALENDAR_UNITS[rule];
	return {
		bucketOf: (candidate) => candidate.buckets[unit],
		reason: (bucket) => `${rule} (${bucketLabel(unit, bucket)})`,
	};
}

/** Applies one counted rule to one VM's backups, sorted newest first (see the module comment). */
export function applyCountRule(vmBackups: readonly Candidate[], rule: CountRule): void {
	const shape = shapeOf(rule);
	const covered = new Set<number>();
	for (const candidate of vmBackups) {
		if (candidate.mark === 'keep') covered.add(shape.bucketOf(candidate));
	}
	const kept = new Set<number>();
	for (const candidate of vmBackups) {
		if (candidate.mark !== 'unmarked') continue;
		const bucket = shape.bucketOf(candidate);
		if (covered.has(bucket)) continue;
		if (kept.has(bucket)) {
			candidate.mark = 'superseded';
			continue;
		}
		if (kept.size >= rule.count) break;
		kept.add(bucket);
		candidate.mark = 'keep';
		candidate.reasons.push(shape.reason(bucket, kept.size));
	}
}

/**
 * keep-within and retention days keep every backup newer than the cutoff, future-dated ones
 * included. As in restic they stand apart from the counted rules: what they keep neither covers
 * buckets for nor consumes counts of keep-last..keep-yearly.
 */
export function applyWindowRule(
	backups: readonly Candidate[],
	rule: WindowRule,
	nowMs: number,
	clock: ZoneClock,
): void {
	const cutoffMs = cutoffBefore(nowMs, rule.duration, clock, rule.reason);
	for (const candidate of backups) {
		if (candidate.timeMs > cutoffMs) candidate.reasons.push(rule.reason);
	}
}
