/**
 * What a replica run does with each backup, decided before anything is written (pure): copy it,
 * skip it (the same backup is on the replica already), or refuse it with the reason. Parents come
 * before their incrementals; an incremental is copied only onto a parent that is on the replica or
 * copied earlier in the same run, so every backing file `../<parent id>/<file>` resolves there.
 */
import type { Manifest } from '../store/manifest';
import type { VerificationStatus } from '../store/verification';

export interface ReplicaSource {
	vmDir: string;
	id: string;
	manifest: Manifest;
}

/** What the replica's catalog says about one VM folder (the parts the plan needs). */
export interface ReplicaTarget {
	backups: { vmDir: string; id: string; manifest: Manifest; verification?: { status: VerificationStatus }; missingFiles: string[] }[];
	incomplete: { vmDir: string; id: string; reason: string; writerLeftovers: boolean }[];
}

export interface ReplicaStep {
	/** Index into the sources given to the planner. */
	index: number;
	vmDir: string;
	id: string;
	action: 'copy' | 'skip' | 'refuse';
	reason: string;
	/** A parent copied earlier in this run: this step runs only if that copy succeeded. */
	after?: string;
	/** An unfinished folder our writer left at this id is in the way: remove it first (under the lock). */
	replacesStale?: boolean;
}

const imagesOf = (manifest: Manifest) =>
	manifest.disks
		.map((disk) => `${disk.target}\0${disk.file}\0${disk.sha256}`)
		.sort()
		.join('\n');

export function sameBackup(a: Manifest, b: Manifest): boolean {
	return a.id === b.id && a.vm.uuid === b.vm.uuid && a.kind === b.kind && a.parent === b.parent && imagesOf(a) === imagesOf(b);
}

/**
 * Orders the sources (per VM folder in the order VMs first appear, parents before children, then by
 * id) and decides each one. A source listed twice is planned once.
 */
export function planReplica(sources: readonly ReplicaSource[], target: ReplicaTarget): ReplicaStep[] {
	const steps: ReplicaStep[] = [];
	const planned = new Map<string, ReplicaStep>();
	const key = (vmDir: string, id: string) => `${vmDir}/${id}`;
	const onTarget = new Map(target.backups.map((backup) => [key(backup.vmDir, backup.id), backup]));
	const inTheWay = new Map(target.incomplete.map((folder) => [key(folder.vmDir, folder.id), folder]));

	for (const index of order(sources)) {
		const source = sources[index];
		const { vmDir, id, manifest } = source;
		const step = (action: ReplicaStep['action'], reason: string, extra: Partial<ReplicaStep> = {}): ReplicaStep => ({ index, vmDir, id, action, reason, ...extra });
		if (planned.has(key(vmDir, id))) {
			steps.push(step('skip', 'listed twice: planned once'));
			continue;
		}
		const decided = decide(source, planned.get(key(vmDir, manifest.parent ?? '')), onTarget, inTheWay, step);
		planned.set(key(vmDir, id), decided);
		steps.push(decided);
	}
	return steps;
}

function decide(
	source: ReplicaSource,
	parentStep: ReplicaStep | undefined,
	onTarget: Map<string, ReplicaTarget['backups'][number]>,
	inTheWay: Map<string, ReplicaTarget['incomplete'][number]>,
	step: (action: ReplicaStep['action'], reason: string, extra?: Partial<ReplicaStep>) => ReplicaStep,
): ReplicaStep {
	const { vmDir, id, manifest } = source;
	const existing = onTarget.get(`${vmDir}/${id}`);
	if (existing) {
		if (!sameBackup(existing.manifest, manifest)) return step('refuse', `a different backup with id ${id} is on the replica already (other VM, kind, parent or images); nothing was changed`);
		if (existing.verification?.status === 'invalid') return step('refuse', `backup ${id} is on the replica but its verification there found it invalid; remove or quarantine it there first`);
		if (existing.missingFiles.length > 0) return step('refuse', `backup ${id} is on the replica but images are missing there: ${existing.missingFiles.join(', ')}`);
		return step('skip', 'already on the replica (same manifest and image sha256)');
	}
	const stale = inTheWay.get(`${vmDir}/${id}`);
	if (stale && !stale.writerLeftovers) return step('refuse', `a folder ${id} that is not a backup is on the replica (${stale.reason}); it was left alone`);
	const extra: Partial<ReplicaStep> = stale ? { replacesStale: true } : {};
	const parent = manifest.parent;
	if (manifest.kind !== 'incremental' || parent === undefined) return step('copy', 'not on the replica yet', extra);

	if (parentStep) {
		if (parentStep.action === 'refuse') return step('refuse', `its parent ${parent} is not replicated: ${parentStep.reason}`);
		if (parentStep.action === 'copy') return step('copy', `incremental on ${parent}, copied first in this run`, { ...extra, after: parent });
		return step('copy', `incremental on ${parent}, which is on the replica`, extra);
	}
	const onReplica = onTarget.get(`${vmDir}/${parent}`);
	if (!onReplica) return step('refuse', `incremental whose parent ${parent} is neither on the replica nor in this run: replicate ${parent} first (or with it)`);
	if (onReplica.manifest.vm.uuid !== manifest.vm.uuid) return step('refuse', `its parent ${parent} on the replica belongs to another VM`);
	if (onReplica.verification?.status === 'invalid') return step('refuse', `its parent ${parent} on the replica was found invalid there`);
	if (onReplica.missingFiles.length > 0) return step('refuse', `its parent ${parent} on the replica misses images: ${onReplica.missingFiles.join(', ')}`);
	const parentFiles = new Set(onReplica.manifest.disks.map((disk) => disk.file));
	const unresolved = manifest.disks.filter((disk) => disk.backingFile !== undefined && !parentFiles.has(disk.backingFile.slice(`../${parent}/`.length)));
	if (unresolved.length > 0) {
		return step('refuse', `its parent ${parent} on the replica has no image ${unresolved.map((disk) => disk.backingFile).join(', ')}`);
	}
	return step('copy', `incremental on ${parent}, which is on the replica`, extra);
}

/** Source indexes: VM folders in first-seen order; within one, each parent before its children, else by id. */
function order(sources: readonly ReplicaSource[]): number[] {
	const byVm = new Map<string, number[]>();
	sources.forEach((source, index) => {
		const list = byVm.get(source.vmDir) ?? [];
		list.push(index);
		byVm.set(source.vmDir, list);
	});
	const out: number[] = [];
	for (const indexes of byVm.values()) {
		const pending = [...indexes].sort((a, b) => (sources[a].id < sources[b].id ? -1 : sources[a].id > sources[b].id ? 1 : a - b));
		const ids = new Set(pending.map((index) => sources[index].id));
		const emitted = new Set<string>();
		while (pending.length > 0) {
			// The first whose parent is not still waiting; a loop (which no valid chain has) goes in id order.
			let at = pending.findIndex((index) => {
				const parent = sources[index].manifest.parent;
				return parent === undefined || !ids.has(parent) || emitted.has(parent);
			});
			if (at === -1) at = 0;
			const [index] = pending.splice(at, 1);
			emitted.add(sources[index].id);
			out.push(index);
		}
	}
	return out;
}
