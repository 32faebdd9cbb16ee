/**
 * The items Discover VMs, Backup VM Disk and Verify Checksum put out. n8n's Table view shows an
 * item's keys as columns in their order, so what a person scans comes first (name, state, readable
 * sizes, a one-line disk summary) and the details (nested disks, raw bytes, host, UUID) after.
 * Every engine field is kept with its raw value: workflows read them.
 */
import type { IDataObject } from 'n8n-workflow';
import type { BackupResult } from '../../lib/backup';
import type { BackupVerification } from '../../lib/catalog';
import { diskSummary, formatBytes, formatDuration } from '../../lib/format';
import type { DiscoveredVm } from '../../lib/libvirt';

export function discoveredVmItem(vm: DiscoveredVm, host: string): IDataObject {
	const { name, state, backupable, reasons, uuid, disks, totalVirtualBytes, totalAllocatedBytes, ...other } = vm;
	return {
		name,
		state,
		backupable,
		virtualSize: formatBytes(totalVirtualBytes),
		allocatedSize: formatBytes(totalAllocatedBytes),
		diskSummary: diskSummary(
			disks.map((disk) => ({ target: disk.target, bytes: disk.virtualBytes, format: disk.format, note: disk.backupable ? undefined : 'not backupable' })),
		),
		reasons,
		...other,
		uuid,
		host,
		totalVirtualBytes,
		totalAllocatedBytes,
		disks: disks as unknown as IDataObject[],
	};
}

export function backupItem(result: BackupResult): IDataObject {
	const { vm, id, kind, consistency, warnings, method, path, parent, startedAt, finishedAt, uuid, host, checkpoint, totalBytes, durationSeconds, disks, ...other } = result;
	return {
		vm,
		id,
		kind,
		consistency,
		size: formatBytes(totalBytes),
		duration: formatDuration(durationSeconds),
		diskSummary: diskSummary(disks.map((disk) => ({ target: disk.target, bytes: disk.bytes, format: disk.format }))),
		warnings,
		method,
		path,
		parent,
		startedAt,
		finishedAt,
		...other,
		uuid,
		host,
		checkpoint,
		totalBytes,
		durationSeconds,
		disks: disks as unknown as IDataObject[],
	};
}

/**
 * The input item with the verification on it: the verdict first, the input's own fields in their
 * order, and `disks` in the input's shape, each disk with its checks added (a downstream node reads
 * `disks[i].bytes` from a Backup item the same before and after Verify).
 */
export function verifiedItem(input: IDataObject, result: BackupVerification): IDataObject {
	const verdict: IDataObject = {
		vm: result.vm,
		id: result.id,
		valid: result.valid,
		status: result.status,
		action: result.action,
		checkSummary: result.disks.length > 0 ? result.disks.map((disk) => `${disk.target} ${disk.status}`).join(', ') : result.status,
		problems: result.problems,
	};
	return Object.assign({ ...verdict }, input, verdict, {
		path: result.path,
		checkedAt: result.checkedAt,
		parents: result.parents as unknown as IDataObject[],
		disks: withChecks(input.disks, result.disks as unknown as IDataObject[]),
	});
}

function withChecks(inputDisks: unknown, checks: IDataObject[]): IDataObject[] {
	if (!Array.isArray(inputDisks)) return checks;
	const byTarget = new Map(checks.map((check) => [check.target, check]));
	const merged = inputDisks.map((disk: unknown) => {
		if (typeof disk !== 'object' || disk === null) return disk as IDataObject;
		const check = byTarget.get((disk as IDataObject).target);
		byTarget.delete((disk as IDataObject).target);
		return check ? { ...(disk as IDataObject), ...check } : (disk as IDataObject);
	});
	return [...merged, ...byTarget.values()];
}
