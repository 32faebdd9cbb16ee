/** One backup as the retention planner sees it: only what the manifest says, never the files. */
export interface BackupRef {
	id: string;
	vm: string;
	/** When the backup finished (or started, if the manifest has no finish time). */
	time: Date;
	kind: 'full' | 'incremental' | 'copy';
	/** Id of the backup this one depends on (an incremental's base). */
	parent?: string;
	protected?: boolean;
	/** VMs that run on this backup right now (instant recovery), as a person should read them. */
	inUseBy?: readonly string[];
	/** false = verification failed; undefined = never verified, treated as good. */
	valid?: boolean;
}

/**
 * Keep rules in the Proxmox Backup Server sense (see selection.ts for the exact semantics).
 * A count of 0 or an unset field disables that rule; at least one rule must be active.
 */
export interface RetentionPolicy {
	keepLast?: number;
	keepHourly?: number;
	keepDaily?: number;
	keepWeekly?: number;
	keepMonthly?: number;
	keepYearly?: number;
	/** Keep everything newer than now minus this duration, e.g. '7d', '36h', '2w', '1m', '1y', '1d12h'. */
	keepWithin?: string;
	/** Legacy shortcut: the same as keepWithin `${retentionDays}d`. */
	retentionDays?: number;
}

export type RetentionAction = 'keep' | 'prune';

export interface Decision {
	id: string;
	vm: string;
	time: Date;
	action: RetentionAction;
	/** Why it is kept, e.g. ['keep-daily (2026-11-27)', 'keep-last 3/5'], or ['matched no rule']. */
	reasons: string[];
}

/** One decision per input backup, in input order. */
export interface RetentionPlan {
	decisions: Decision[];
}
