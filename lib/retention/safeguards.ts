/**
 * Never-remove rules, applied after the keep rules; each adds its own reason even to a backup that
 * is already kept, so a decision explains everything protecting it.
 *
 * Unlike PBS, where protected snapshots are taken out of the rule walk and use no counts, a
 * protected backup here is evaluated like any other first and then kept regardless.
 */
import type { Candidate, CandidateSet } from './candidate';

function isKept(candidate: Candidate): boolean {
	return candidate.reasons.length > 0;
}

export function applySafeguards({ byVm, byId }: CandidateSet): void {
	for (const vmBackups of byVm) {
		for (const candidate of vmBackups) {
			if (candidate.ref.protected === true) candidate.reasons.push('protected');
			// Removing it would pull the disk from under a running VM.
			for (const vm of candidate.ref.inUseBy ?? []) candidate.reasons.push(`in use by instant-recovery VM ${vm}`);
		}
		// A VM must never lose its last restorable backup, whatever the policy says: one that is not
		// known invalid and whose every ancestor is in the store and not known invalid.
		const newestValid = vmBackups.find((candidate) => restorable(candidate, byId));
		newestValid?.reasons.push('newest valid backup');
	}
	keepAncestors(byVm, byId);
}

function restorable(candidate: Candidate, byId: ReadonlyMap<string, Candidate>): boolean {
	const seen = new Set<Candidate>();
	for (let current: Candidate | undefined = candidate; current !== undefined; ) {
		if (current.ref.valid === false || seen.has(current)) return false;
		seen.add(current);
		if (current.ref.parent === undefined) return true;
		current = byId.get(current.ref.parent);
		if (current === undefined) return false;
	}
	return true;
}

/**
 * An incremental is useless without the chain it was taken against, so every ancestor of a kept
 * backup is kept too. Each kept backup is visited once and tags only its direct parent; a parent
 * that becomes kept this way is queued in turn, which walks chains transitively and stops on cycles.
 * A parent missing from the list (already pruned, or on another store) is simply not there to keep.
 */
function keepAncestors(byVm: readonly Candidate[][], byId: ReadonlyMap<string, Candidate>): void {
	const queue = byVm.flatMap((vmBackups) => vmBackups.filter(isKept));
	for (let next = 0; next < queue.length; next++) {
		const child = queue[next];
		const parent = child.ref.parent === undefined ? undefined : byId.get(child.ref.parent);
		if (parent === undefined || parent === child) continue;
		const wasKept = isKept(parent);
		parent.reasons.push(`parent of kept ${child.ref.id}`);
		if (!wasKept) queue.push(parent);
	}
}
