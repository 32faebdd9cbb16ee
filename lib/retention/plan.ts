import { buildCandidates } from './candidate';
import { RetentionInputError, describeValue } from './errors';
import { normalizePolicy } from './policy';
import { applySafeguards } from './safeguards';
import { applyCountRule, applyWindowRule } from './selection';
import type { BackupRef, Decision, RetentionPlan, RetentionPolicy } from './types';
import { createZoneClock } from './zone-clock';

/**
 * Decides, per VM, which backups a policy keeps and which it prunes. Pure: it reads only its
 * arguments, so the same input always yields the same plan, and deleting is left to the caller.
 *
 * @param now       the reference time for keepWithin / retentionDays
 * @param timeZone  IANA zone in which hours, days, ISO weeks, months and years are counted
 * @throws RetentionPolicyError for an empty or malformed policy
 * @throws RetentionInputError for malformed backups, `now` or time zone
 */
export function planRetention(
	backups: readonly BackupRef[],
	policy: RetentionPolicy,
	now: Date,
	timeZone = 'UTC',
): RetentionPlan {
	const rules = normalizePolicy(policy);
	const nowMs = now instanceof Date ? now.getTime() : Number.NaN;
	if (!Number.isFinite(nowMs)) throw new RetentionInputError(`now must be a valid Date, got ${describeValue(now)}`);
	const clock = createZoneClock(timeZone);
	const candidates = buildCandidates(backups, clock);

	for (const vmBackups of candidates.byVm) {
		for (const rule of rules.counts) applyCountRule(vmBackups, rule);
	}
	for (const rule of rules.windows) applyWindowRule(candidates.all, rule, nowMs, clock);
	applySafeguards(candidates);

	const decisions = candidates.all.map(({ ref, reasons }): Decision => ({
		id: ref.id,
		vm: ref.vm,
		time: ref.time,
		action: reasons.length > 0 ? 'keep' : 'prune',
		reasons: reasons.length > 0 ? reasons : ['matched no rule'],
	}));
	return { decisions };
}
