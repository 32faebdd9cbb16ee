/**
 * Prune Old Backups: plan from manifests (never file times), then, per VM and under the VM's lock
 * (so it never races a running backup), re-read that VM's folder, re-plan and let the host remove
 * exactly the planned folders after re-checking each one. A dry run reads once and changes nothing.
 */
import { LibvirtBackupError, isLibvirtBackupError } from '../errors';
import { acquireVmLock, type VmLock } from '../store/lock';
import { checkDestination } from '../store/layout';
import type { RetentionPolicy } from '../retention';
import type { SshConnection } from '../ssh';
import { changeFolders, type ChangeOutcome } from './changes';
import { consolidateBackup, discardConsolidation, resumeConsolidation } from './consolidate';
import { listCatalog, readCatalog, type Catalog, type CatalogBackup } from './list';
import { CONSOLIDATION_JOURNAL } from '../store/consolidation';
import { DEFAULT_STALE_AFTER_MS, checkPolicy, planPrune, type PrunePlanEntry } from './plan';

export interface PruneRequest {
	dest: string;
	/** Only these VMs (names as in the manifests); unset = every VM under the destination. An empty list is refused. */
	vmNames?: string[];
	policy: RetentionPolicy;
	dryRun: boolean;
	now?: Date;
	timeZone?: string;
	staleAfterMs?: number;
	/** What to do when a VM's lock is held by a running job: fail the prune, or leave that VM alone. */
	ifLocked?: 'fail' | 'skip';
	/** Written into the lock file so a blocked job can say who holds it. */
	lockHolder?: string;
	/** Rebuild the oldest kept incremental of a chain whose full the policy drops (see planPrune). */
	consolidate?: boolean;
}

export interface PruneItem extends PrunePlanEntry {
	dryRun: boolean;
	/** The folder is gone from the host (false in a dry run). */
	removed: boolean;
	/** Bytes this item frees (pruned) or would free (dry run); 0 when kept or not removed. */
	freedBytes: number;
	/** A consolidate entry: the synthetic full is in place (false in a dry run). */
	consolidated?: boolean;
	/** Why a planned removal or consolidation did not happen. */
	error?: string;
}

export interface PruneResult {
	dest: string;
	dryRun: boolean;
	items: PruneItem[];
	kept: number;
	pruned: number;
	/** Backups rebuilt (or, in a dry run, to be rebuilt) into standalone fulls. */
	consolidated: number;
	freedBytes: number;
	/** VMs left alone because their lock was held (ifLocked: 'skip'). */
	lockedVms: string[];
	sshExecs: number;
}

export async function pruneBackups(ssh: SshConnection, request: PruneRequest, signal?: AbortSignal): Promise<PruneResult> {
	const dest = checkDestination(request.dest);
	const now = request.now ?? new Date();
	const planOptions = { now, timeZone: request.timeZone, staleAfterMs: request.staleAfterMs ?? DEFAULT_STALE_AFTER_MS, consolidate: request.consolidate ?? false };
	checkPolicy(request.policy, planOptions);
	// An empty list is what a filter or expression that matched nothing yields; reading it as "all
	// VMs" would prune every VM's backups.
	if (request.vmNames?.length === 0) {
		throw new LibvirtBackupError('INVALID_INPUT', 'No VM selected: the VM list is empty. Leave VM Names unset to prune every VM under the destination.', { field: 'vmNames' });
	}
	const execsBefore = ssh.execCount;
	const catalog = await listCatalog(ssh, dest, { vmNames: request.vmNames }, signal);

	const items: PruneItem[] = [];
	const lockedVms: string[] = [];
	const plan = planPrune(catalog, request.policy, planOptions);
	if (request.dryRun) {
		for (const entry of plan) items.push({ ...entry, dryRun: true, removed: false, freedBytes: entry.action === 'prune' ? entry.bytes : 0 });
	}
	// A VM with nothing to prune is not locked (nor is a lock file created in a foreign folder);
	// one with something to prune is re-read and re-planned under its lock before anything goes.
	for (const [vmDir, entries] of request.dryRun ? [] : byVmDir(plan)) {
		const interrupted = catalog.backups.some((backup) => backup.vmDir === vmDir && backup.consolidation !== undefined);
		if (!interrupted && !entries.some((entry) => entry.action !== 'keep')) {
			for (const entry of entries) items.push({ ...entry, dryRun: false, removed: false, freedBytes: 0 });
			continue;
		}
		const lock = await lockVm(ssh, dest, vmDir, entries[0].vm, request);
		if ('lockedBy' in lock) {
			lockedVms.push(entries[0].vm);
			for (const entry of entries) {
				items.push({ ...entry, action: 'keep', reasons: [`VM is locked by ${lock.lockedBy}: left alone this time`], dryRun: false, removed: false, freedBytes: 0 });
			}
			continue;
		}
		try {
			const fresh = await readCatalog(ssh, dest, [vmDir], signal);
			items.push(...(await pruneVm(ssh, fresh, vmDir, request.policy, planOptions, signal)));
		} finally {
			await lock.release();
		}
	}
	const pruned = items.filter((item) => item.action === 'prune');
	return {
		dest,
		dryRun: request.dryRun,
		items,
		kept: items.length - pruned.length,
		pruned: pruned.length,
		consolidated: items.filter((item) => item.action === 'consolidate' && (item.dryRun || item.consolidated)).length,
		freedBytes: items.reduce((total, item) => total + item.freedBytes, 0),
		lockedVms,
		sshExecs: ssh.execCount - execsBefore,
	};
}

async function pruneVm(
	ssh: SshConnection,
	first: Catalog,
	vmDir: string,
	policy: RetentionPolicy,
	options: { now: Date; timeZone?: string; staleAfterMs: number; consolidate: boolean },
	signal?: AbortSignal,
): Promise<PruneItem[]> {
	let catalog = first;
	const errors = new Map<string, string>();
	const failed = (error: unknown): string => {
		if (signal?.aborted) throw error;
		return (error as Error).message;
	};
	// A consolidation a crash interrupted is finished first: its chain is only safe to drop after.
	let resumed = false;
	for (const backup of catalog.backups) {
		if (!backup.consolidation) continue;
		const journal = backup.consolidation.journal;
		if (journal === undefined) {
			await discardConsolidation(ssh, backup, signal).catch((error: unknown) => errors.set(backup.id, `leftover partial images could not be removed: ${failed(error)}`));
			resumed = true;
			continue;
		}
		if (journal === null) {
			errors.set(backup.id, `${CONSOLIDATION_JOURNAL} is not a regular file: the interrupted consolidation was left alone`);
			continue;
		}
		try {
			await resumeConsolidation(ssh, backup, journal, signal);
			resumed = true;
		} catch (error) {
			errors.set(backup.id, `the interrupted consolidation could not be finished: ${failed(error)}`);
		}
	}
	if (resumed) catalog = await readCatalog(ssh, catalog.dest, [vmDir], signal);
	let plan = planPrune(catalog, policy, options);
	const consolidations = plan.filter((entry) => entry.action === 'consolidate');
	const consolidated = new Map<string, PrunePlanEntry>();
	if (consolidations.length > 0) {
		const byId = new Map(catalog.backups.filter((backup) => backup.vmDir === vmDir).map((backup) => [backup.id, backup]));
		for (const entry of consolidations) {
			const chain = (entry.consolidateFrom ?? []).map((id) => byId.get(id));
			try {
				if (chain.length === 0 || chain.some((member) => member === undefined)) throw new Error('its chain is not in the store');
				const members = chain as CatalogBackup[];
				await consolidateBackup(ssh, members[0], members, { now: options.now, signal });
				consolidated.set(entry.id, entry);
			} catch (error) {
				errors.set(entry.id, `consolidation failed, the chain below it is kept: ${failed(error)}`);
			}
		}
		// Planned again from what is there now: a rebuilt backup is a full, and only then does the
		// chain below it go; one that failed still has its chain, which stays.
		catalog = await readCatalog(ssh, catalog.dest, [vmDir], signal);
		plan = planPrune(catalog, policy, { ...options, consolidate: false }).map((entry) => {
			const done = consolidated.get(entry.id);
			return done ? { ...entry, action: 'consolidate' as const, reasons: done.reasons, consolidateFrom: done.consolidateFrom } : entry;
		});
	}
	const doomed = plan.filter((entry) => entry.action === 'prune' && entry.removal);
	const outcomes = new Map<string, ChangeOutcome>();
	if (doomed.length > 0) {
		const changes = doomed.map((entry) => ({ op: entry.removal as 'remove' | 'stale', id: entry.id }));
		const staleBefore = new Date(options.now.getTime() - options.staleAfterMs);
		for (const outcome of await changeFolders(ssh, catalog.dest, vmDir, changes, { staleBefore, signal })) outcomes.set(outcome.id, outcome);
	}
	return plan.map((entry): PruneItem => {
		const outcome = outcomes.get(entry.id);
		const removed = outcome?.status === 'removed';
		const item: PruneItem = { ...entry, dryRun: false, removed, freedBytes: removed ? entry.bytes : 0 };
		if (entry.action === 'consolidate') item.consolidated = consolidated.has(entry.id);
		if (entry.action === 'prune' && !removed) item.error = outcome ? `${outcome.status}: ${outcome.detail}` : 'not removed';
		const error = errors.get(entry.id);
		if (error) item.error = error;
		return item;
	});
}

async function lockVm(ssh: SshConnection, dest: string, vmDir: string, vmName: string, request: PruneRequest): Promise<VmLock | { lockedBy: string }> {
	try {
		return await acquireVmLock(ssh, `${dest}/${vmDir}`, request.lockHolder ?? `n8n Prune Old Backups, ${new Date().toISOString()}`, vmName);
	} catch (error) {
		if (request.ifLocked === 'skip' && isLibvirtBackupError(error, 'LOCKED')) return { lockedBy: String(error.details.holder || 'another job') };
		throw error;
	}
}

function byVmDir(plan: readonly PrunePlanEntry[]): Map<string, PrunePlanEntry[]> {
	const groups = new Map<string, PrunePlanEntry[]>();
	for (const entry of plan) {
		const group = groups.get(entry.vmDir);
		if (group) group.push(entry);
		else groups.set(entry.vmDir, [entry]);
	}
	return groups;
}
