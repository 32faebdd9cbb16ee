/**
 * From a catalog to a prune plan, without I/O: the backups' manifests go through the retention
 * planner (lib/retention, PBS semantics and never-remove safeguards), and incomplete folders are
 * removed only when they are our own stale leftovers.
 */
import { LibvirtBackupError } from '../errors';
import { backupTime } from '../store/layout';
import type { BackupKind } from '../store/manifest';
import { MAX_WINDOW_YEARS, RetentionInputError, RetentionPolicyError, planRetention, type BackupRef, type Decision, type RetentionPolicy } from '../retention';
import { describeInstantUse } from '../store/instant';
import type { Catalog, CatalogBackup } from './list';

export interface PrunePlanEntry {
	vm: string;
	vmDir: string;
	id: string;
	path: string;
	kind: BackupKind | 'incomplete';
	/** Start of the backup (its id), ISO 8601. */
	timestamp: string;
	/** consolidate: kept, and rebuilt into a standalone full first so the chain below it can go. */
	action: 'keep' | 'prune' | 'consolidate';
	/** Which rules keep it, or why it goes. */
	reasons: string[];
	/** On-disk bytes of the folder: what pruning it frees. */
	bytes: number;
	/** How the host removes it: a backup with our manifest, or our stale unfinished folder. */
	removal?: 'remove' | 'stale';
	/** consolidate: the backups the synthetic full is made from, this one first, down to its full. */
	consolidateFrom?: string[];
}

export interface PrunePlanOptions {
	now: Date;
	/** IANA zone for hourly/daily/... buckets (default UTC). */
	timeZone?: string;
	/** Our unfinished folders older than this (by their id) are removed; default 24 h. */
	staleAfterMs?: number;
	/**
	 * When the policy drops the full of a chain whose later backup it keeps, rebuild the oldest
	 * kept incremental into a standalone full instead of keeping the whole chain below it.
	 */
	consolidate?: boolean;
}

export const DEFAULT_STALE_AFTER_MS = 24 * 3_600_000;
/**
 * An unfinished folder younger than an hour may be a backup still being written (the form's
 * minimum too); the longest age is the retention window limit, so the cutoff stays a real date.
 */
const MIN_STALE_AFTER_MS = 3_600_000;
const MAX_STALE_AFTER_MS = MAX_WINDOW_YEARS * 365.2425 * 86_400_000;

/** Validates a policy and options before anything is read or locked: an empty or malformed one is refused. */
export function checkPolicy(policy: RetentionPolicy, options: PrunePlanOptions): void {
	staleAfter(options);
	retention(() => planRetention([], policy, options.now, options.timeZone ?? 'UTC'));
}

function staleAfter(options: PrunePlanOptions): number {
	const ms = options.staleAfterMs ?? DEFAULT_STALE_AFTER_MS;
	if (typeof ms !== 'number' || !(ms >= MIN_STALE_AFTER_MS && ms <= MAX_STALE_AFTER_MS)) {
		throw new LibvirtBackupError(
			'INVALID_INPUT',
			`staleAfterMs must be a number of milliseconds from ${MIN_STALE_AFTER_MS} (1 h) to ${MAX_STALE_AFTER_MS} (${MAX_WINDOW_YEARS} years), got ${typeof ms === 'string' ? JSON.stringify(ms) : String(ms)}`,
			{ field: 'staleAfterMs' },
		);
	}
	return ms;
}

/** One entry per backup and per incomplete folder of the catalog. */
export function planPrune(catalog: Pick<Catalog, 'backups' | 'incomplete'>, policy: RetentionPolicy, options: PrunePlanOptions): PrunePlanEntry[] {
	const { backups } = catalog;
	// Backup ids are unique per VM folder only and the planner wants them unique overall: it gets
	// each backup's catalog position instead (short strings, cheap to hash at 100 000 backups).
	const positions = new Map<string, Map<string, number>>();
	backups.forEach(({ vmDir, id }, index) => {
		const ids = positions.get(vmDir) ?? positions.set(vmDir, new Map()).get(vmDir)!;
		ids.set(id, index);
	});
	const refs = backups.map(({ vmDir, manifest, verification, protected: isProtected, inUse }, index): BackupRef => {
		const parent = manifest.parent === undefined ? undefined : positions.get(vmDir)?.get(manifest.parent);
		return {
			id: String(index),
			// Per VM folder and UUID: two VMs of one name (two hosts into one destination, or a VM
			// re-created under an old name) never share counts or a newest-valid safeguard.
			vm: `${vmDir}/${manifest.vm.uuid}`,
			time: new Date(manifest.finishedAt),
			kind: manifest.kind,
			parent: parent === undefined ? undefined : String(parent),
			protected: isProtected,
			...(inUse?.length ? { inUseBy: inUse.map(describeInstantUse) } : {}),
			// Unverifiable proves nothing: counted like a backup never verified, not like a failed one.
			valid: verification === undefined || verification.status === 'unverifiable' ? undefined : verification.ok,
		};
	});
	let { decisions } = retention(() => planRetention(refs, policy, options.now, options.timeZone ?? 'UTC'));
	const consolidations = options.consolidate ? planConsolidations(backups, positions, decisions) : new Map<number, number[]>();
	if (consolidations.size > 0) {
		// Once rebuilt, the backup is a full: retention again, with nothing below it to keep.
		const rebuilt = refs.map((ref, index): BackupRef => (consolidations.has(index) ? { ...ref, kind: 'full', parent: undefined } : ref));
		decisions = retention(() => planRetention(rebuilt, policy, options.now, options.timeZone ?? 'UTC')).decisions;
	}
	const entries = decisions.map((decision, index): PrunePlanEntry => {
		const backup = backups[index];
		const entry: PrunePlanEntry = {
			vm: backup.vm,
			vmDir: backup.vmDir,
			id: backup.id,
			path: backup.path,
			kind: backup.manifest.kind,
			timestamp: backup.manifest.startedAt,
			action: decision.action,
			reasons: decision.reasons.map((reason) =>
				reason.startsWith(PARENT_REASON) ? `parent of kept incremental ${backups[Number(reason.slice(PARENT_REASON.length))].id}` : reason,
			),
			bytes: backup.diskBytes,
		};
		if (decision.action === 'prune') entry.removal = 'remove';
		const chain = consolidations.get(index);
		if (chain) {
			const below = chain.slice(1).map((member) => backups[member].id);
			entry.action = 'consolidate';
			entry.consolidateFrom = chain.map((member) => backups[member].id);
			entry.reasons.push(`consolidate: rebuilt as a standalone full so ${below.join(', ')} below it can go`);
		}
		return entry;
	});

	const staleAfterMs = staleAfter(options);
	const staleBefore = options.now.getTime() - staleAfterMs;
	for (const folder of catalog.incomplete) {
		const started = backupTime(folder.id);
		const stale = folder.writerLeftovers && started.getTime() < staleBefore;
		entries.push({
			vm: folder.vm,
			vmDir: folder.vmDir,
			id: folder.id,
			path: folder.path,
			kind: 'incomplete',
			timestamp: started.toISOString(),
			action: stale ? 'prune' : 'keep',
			reasons: [
				stale
					? `stale unfinished backup: started more than ${hours(staleAfterMs)} ago and holds only what an interrupted backup leaves`
					: folder.writerLeftovers
						? `unfinished backup younger than ${hours(staleAfterMs)}: it may still be being written`
						: `not a backup (${folder.reason}): left alone`,
			],
			bytes: folder.diskBytes,
			...(stale ? { removal: 'stale' as const } : {}),
		});
	}
	return entries;
}

/**
 * For each chain whose full the policy drops while keeping a later backup: the oldest backup a
 * rule keeps (an incremental), mapped to its chain (itself first, down to the full). A chain with
 * a gap, a member known invalid or missing an image, an interrupted consolidation, or a member an
 * instant-recovery VM runs on (its images must stay exactly as they are) is left as it is: its
 * ancestors stay as parents.
 */
function planConsolidations(backups: readonly CatalogBackup[], positions: ReadonlyMap<string, ReadonlyMap<string, number>>, decisions: readonly Decision[]): Map<number, number[]> {
	const keptByRule = (index: number) => decisions[index].action === 'keep' && decisions[index].reasons.some((reason) => !reason.startsWith(PARENT_REASON));
	const sound = (backup: CatalogBackup) =>
		backup.verification?.status !== 'invalid' && backup.missingFiles.length === 0 && backup.consolidation?.journal === undefined && !backup.inUse?.length;
	const targets = new Map<number, number[]>();
	backups.forEach((backup, index) => {
		if (backup.manifest.kind !== 'incremental' || !keptByRule(index) || !sound(backup)) return;
		const chain = [index];
		for (let current = backup; current.manifest.kind === 'incremental'; ) {
			const parent = positions.get(current.vmDir)?.get(current.manifest.parent ?? '');
			if (parent === undefined || chain.includes(parent)) return;
			const member = backups[parent];
			if (keptByRule(parent) || !sound(member) || member.manifest.kind === 'copy' || member.manifest.vm.uuid !== backup.manifest.vm.uuid) return;
			chain.push(parent);
			current = member;
		}
		targets.set(index, chain);
	});
	return targets;
}

/** How lib/retention words the chain safeguard: 'parent of kept <child id>'. */
const PARENT_REASON = 'parent of kept ';

function hours(ms: number): string {
	const value = ms / 3_600_000;
	return `${Number.isInteger(value) ? value : value.toFixed(1)} h`;
}

function retention<T>(plan: () => T): T {
	try {
		return plan();
	} catch (error) {
		if (error instanceof RetentionPolicyError || error instanceof RetentionInputError) {
			throw new LibvirtBackupError('INVALID_INPUT', error.message, error instanceof RetentionPolicyError && error.field ? { field: error.field } : {});
		}
		throw error;
	}
}
