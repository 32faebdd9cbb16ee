/** Human-readable forms of engine values, for messages and for the fields a person reads first. */

export function formatBytes(bytes: number): string {
	const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
	let value = bytes;
	let unit = 0;
	while (value >= 1024 && unit < units.length - 1) {
		value /= 1024;
		unit += 1;
	}
	return `${value.toFixed(unit === 0 ? 0 : 1)} ${units[unit]}`;
}

/** `42s`, `3m 05s`, `2h 07m`: whole seconds, the two largest units. */
export function formatDuration(seconds: number): string {
	const total = Math.round(seconds);
	if (total < 60) return `${total}s`;
	const pad = (n: number) => String(n).padStart(2, '0');
	if (total < 3600) return `${Math.floor(total / 60)}m ${pad(total % 60)}s`;
	return `${Math.floor(total / 3600)}h ${pad(Math.floor((total % 3600) / 60))}m`;
}

export interface DiskLine {
	target: string;
	/** null when the size is not known. */
	bytes: number | null;
	format?: string;
	/** Shown in parentheses after the disk, e.g. "not backupable". */
	note?: string;
}

/** One line for a list of disks: `vda 2.0 GiB qcow2, vdb 512.0 MiB raw`. */
export function diskSummary(disks: readonly DiskLine[]): string {
	return disks
		.map(({ target, bytes, format, note }) =>
			[target, bytes === null ? 'size unknown' : formatBytes(bytes), format, note ? `(${note})` : undefined].filter((part) => part !== undefined && part !== '').join(' '),
		)
		.join(', ');
}
