/**
 * The safety ledger: every fault injected, hostile input tried and secret check made by the faults
 * suite appends one JSON line here; the jest summary reporter prints the Safety table from it at
 * the end of the run (test/support/summary-reporter.js). Append-only lines, so parallel jest workers
 * can write to it at once.
 */
import { appendFileSync } from 'fs';

/** Set by the reporter for each jest run; the fallback is for a test file run outside jest's reporter. */
const ledger = () => process.env.LVB_SAFETY_LEDGER ?? '/tmp/lvb-safety-ledger.jsonl';

export interface FaultEntry {
	kind: 'fault';
	/** e.g. "backup (running VM): SSH connection cut mid-copy". */
	name: string;
	/** The next run succeeded and every check below held. */
	survived: boolean;
	/** Good backups damaged or removed. */
	dataLost: number;
	/** VMs left on an overlay, frozen, or with a block job running. */
	vmsLeftUnclean: number;
	/** Folders without a valid manifest that List, Export, Restore or a parent choice took for a backup. */
	partialBackupsListed: number;
	/** Files we did not write that were removed. */
	foreignFilesRemoved: number;
}

export interface HostileEntry {
	kind: 'hostile';
	/** e.g. "Backup VM Disk / VM: name with $(touch canary)". */
	name: string;
	/** A clear error or correct handling; no canary; nothing outside the destination touched. */
	handled: boolean;
	ms: number;
}

export interface SecretEntry {
	kind: 'secret';
	/** Where it was looked for, e.g. "n8n log", "execution data", "node error". */
	name: string;
	leaked: number;
}

export type LedgerEntry = FaultEntry | HostileEntry | SecretEntry;

export function record(entry: LedgerEntry): void {
	appendFileSync(ledger(), `${JSON.stringify(entry)}\n`);
}
