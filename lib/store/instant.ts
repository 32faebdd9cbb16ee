/**
 * The in-use marker of instant recovery: while a VM runs on a backup's images (a qcow2 overlay on
 * the read-only chain), every backup folder of that chain holds `.lvb-instant-<domain uuid>.json`
 * naming the VM. List reads it, Prune and consolidation keep such a backup and its chain.
 *
 * The destination is not trusted, so a marker can only ever KEEP a backup: any file with a marker
 * name counts, whatever it holds (one that cannot be read says so in the reason); nothing a
 * marker says is ever used to choose a file to remove or a domain to touch.
 */
export const INSTANT_MARKER_PREFIX = '.lvb-instant-';
export const INSTANT_MARKER_SUFFIX = '.json';
export const INSTANT_MARKER_FORMAT = 'n8n-nodes-libvirt-backup/instant-recovery';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const MARKER_NAME = /^\.lvb-instant-([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\.json$/;
/** A name shown in a prune reason: a VM name is at most a few hundred bytes, a planted text is cut. */
const MAX_SHOWN_NAME = 200;

export interface InstantMarker {
	format: typeof INSTANT_MARKER_FORMAT;
	version: 1;
	domain: { name: string; uuid: string };
	/** `uname -n` of the host the VM was defined on. */
	host: string;
	/** The backup the VM was recovered from (the top of the chain). */
	backup: string;
	createdAt: string;
}

/** What the catalog knows of one marker in a backup folder. */
export interface InstantUse {
	/** The marker's file name. */
	file: string;
	/** Domain UUID, from the file name. */
	uuid: string;
	/** VM name and host as the marker says (untrusted: shown, never acted on). */
	name?: string;
	host?: string;
	/** Why the marker's content could not be read; it keeps the backup all the same. */
	problem?: string;
}

export function isUuid(value: string): boolean {
	return UUID.test(value);
}

export function instantMarkerName(domainUuid: string): string {
	if (!isUuid(domainUuid)) throw new Error(`not a domain UUID: ${JSON.stringify(domainUuid)}`);
	return `${INSTANT_MARKER_PREFIX}${domainUuid}${INSTANT_MARKER_SUFFIX}`;
}

/** The domain UUID a marker file name carries, or undefined for any other name. */
export function instantMarkerUuid(fileName: string): string | undefined {
	return MARKER_NAME.exec(fileName)?.[1];
}

export function serializeInstantMarker(marker: InstantMarker): string {
	return `${JSON.stringify(marker, null, 2)}\n`;
}

/**
 * Reads a marker found in a backup folder. `text` is undefined when the file was not a regular
 * file or could not be read. The result always describes a use: a marker keeps its backup.
 */
export function readInstantUse(fileName: string, entryType: string, text: string | undefined): InstantUse | undefined {
	const uuid = instantMarkerUuid(fileName);
	if (uuid === undefined) return undefined;
	const use: InstantUse = { file: fileName, uuid };
	if (entryType !== 'file') return { ...use, problem: `${fileName} is not a regular file (${entryType})` };
	if (text === undefined) return { ...use, problem: `${fileName} could not be read` };
	let value: Partial<InstantMarker>;
	try {
		value = JSON.parse(text) as Partial<InstantMarker>;
	} catch {
		return { ...use, problem: `${fileName} is not valid JSON` };
	}
	if (!value || typeof value !== 'object' || value.format !== INSTANT_MARKER_FORMAT || value.version !== 1) return { ...use, problem: `${fileName} is not an instant-recovery marker of a known version` };
	if (value.domain?.uuid !== uuid || typeof value.domain.name !== 'string' || value.domain.name === '') return { ...use, problem: `${fileName} names another domain than its file name` };
	return { ...use, name: value.domain.name.slice(0, MAX_SHOWN_NAME), ...(typeof value.host === 'string' ? { host: value.host.slice(0, MAX_SHOWN_NAME) } : {}) };
}

/** How a prune plan names the VM that keeps a backup. */
export function describeInstantUse(use: InstantUse): string {
	return use.name === undefined ? `an unknown VM (domain ${use.uuid}; ${use.problem ?? 'marker unreadable'})` : `${JSON.stringify(use.name)} (domain ${use.uuid}${use.host ? ` on ${use.host}` : ''})`;
}
