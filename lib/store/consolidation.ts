/**
 * Consolidation rebuilds an incremental, in its own folder, into a standalone full (a synthetic
 * full) so Prune can drop the chain below it. The new images are written as
 * `<image>.lvb-full.partial`; once all are hashed and on disk, a journal holding the new manifest
 * is written, then the partials are renamed over the images, the manifest is replaced and the
 * journal removed. A crash before the journal leaves the old chain (partials are discarded); after
 * it, the next Prune finishes from the journal. Either the old chain or the new full, never neither.
 */
import { LibvirtBackupError } from '../errors';
import { parseManifest, type Manifest } from './manifest';

export const CONSOLIDATION_JOURNAL = '.lvb-consolidate.json';
export const FULL_PARTIAL_SUFFIX = '.lvb-full.partial';
export const CONSOLIDATION_FORMAT = 'n8n-nodes-libvirt-backup/consolidation';

export interface ConsolidationJournal {
	format: typeof CONSOLIDATION_FORMAT;
	version: 1;
	backupId: string;
	/** The manifest the folder gets when the consolidation is finished. */
	manifest: Manifest;
}

export function serializeJournal(journal: ConsolidationJournal): string {
	return `${JSON.stringify(journal, null, 2)}\n`;
}

/**
 * A journal read back from the destination, checked against the folder's current manifest: the
 * same backup and VM, a synthetic full of exactly the same image files. Anything else is refused.
 */
export function parseJournal(text: string, where: string, current: Manifest): ConsolidationJournal {
	const fail = (why: string) => new LibvirtBackupError('PARSE_ERROR', `${where}: not a usable consolidation journal: ${why}`);
	let value: Partial<ConsolidationJournal>;
	try {
		value = JSON.parse(text) as Partial<ConsolidationJournal>;
	} catch (error) {
		throw fail(`not valid JSON (${(error as Error).message})`);
	}
	if (!value || typeof value !== 'object' || value.format !== CONSOLIDATION_FORMAT || value.version !== 1) throw fail('unknown format or version');
	if (value.backupId !== current.id) throw fail(`it is for backup ${JSON.stringify(value.backupId)}, not ${current.id}`);
	const manifest = parseManifest(JSON.stringify(value.manifest), `${where} (manifest)`);
	if (manifest.id !== current.id || manifest.vm.uuid !== current.vm.uuid || manifest.vm.name !== current.vm.name) throw fail('its manifest is for another backup or VM');
	if (!manifest.consolidated || manifest.disks.some((disk) => disk.backingFile !== undefined)) throw fail('its manifest is not a synthetic full');
	const files = (m: Manifest) => m.disks.map((disk) => `${disk.target}\0${disk.file}`).sort().join('\n');
	if (files(manifest) !== files(current)) throw fail('its manifest names other images than the backup has');
	return { format: CONSOLIDATION_FORMAT, version: 1, backupId: current.id, manifest };
}
