/**
 * A replica: backups copied to another host into the same `<dest>/<vm dir>/<id>/` layout, so List,
 * Verify, Prune and Restore work there as on the original (a 3-2-1 copy, like Proxmox Backup
 * Server's sync jobs). Per VM, under the replica's VM lock: plan (replicaPlan), then per backup,
 * parents first, the folder is made with our incomplete marker, each image streamed from the
 * source (byte count and sha256 checked as it passes) into `<file>.partial` on the replica (through
 * the sink: temp name, flush, rename), every image hashed and `qemu-img check`ed THERE against the
 * manifest, and only then finalized the way lib/backup finalizes (images renamed, domain.xml, the
 * manifest written last, the marker removed). Images keep their relative backing file names
 * (`../<parent id>/<file>`), so incrementals resolve on the replica as they did on the source.
 *
 * On failure the folder is removed while the lock is held. If the replica's connection itself is
 * lost, the receiver on the replica removes its temp file, and the folder (marker, no manifest:
 * never listed as a backup) is removed by the next replica run of that VM, or by Prune once stale.
 */
import { pipeline } from 'node:stream/promises';
import { Transform, type Readable } from 'node:stream';
import { LibvirtBackupError, isLibvirtBackupError } from '../errors';
import { finalizeBackupFolder, removeIncompleteFolders } from '../backup/hostFiles';
import { checkImages } from '../catalog/imageCheck';
import { readCatalog } from '../catalog/list';
import { judgeDisk } from '../catalog/verify';
import { scriptArgv } from '../shell';
import type { SshConnection } from '../ssh';
import { checkDestination } from '../store/layout';
import { acquireVmLock, type VmLock } from '../store/lock';
import { INCOMPLETE_MARKER, type BackupKind, type Manifest } from '../store/manifest';
import { createHostFileWriter, type HostFileWriter } from './sink';
import { DOMAIN_XML_FILE } from '../store/savedDomain';
import { openHostFile, type ExportableBackup } from './source';
import { planReplica, type ReplicaStep } from './replicaPlan';

export interface ReplicaProgress {
	/** The backup on the source host. */
	source: string;
	file: string;
	bytes: number;
	totalBytes: number;
}

export interface ReplicaOptions {
	/** The destination on the replica host (the `<dest>` of its layout). */
	dest: string;
	signal?: AbortSignal;
	onProgress?: (progress: ReplicaProgress) => void;
	/** Written into the replica's lock file while it is held. */
	lockHolder?: string;
}

export interface ReplicaResult {
	/** The backup's folder on the source host. */
	source: string;
	/** Its folder on the replica host. */
	path: string;
	vm: string;
	id: string;
	kind: BackupKind;
	status: 'replicated' | 'skipped' | 'refused' | 'failed';
	reason: string;
	/** Image bytes written to the replica (0 when skipped). */
	bytes: number;
	seconds: number;
}

/** domain.xml travels as a command argument (as lib/backup writes it): far below the 128 KiB one argument may have. */
const MAX_DOMAIN_XML_BYTES = 100 * 1024;
/** onProgress is called at least this often per file (in bytes), and at its end. */
const PROGRESS_EVERY_BYTES = 8 * 1024 * 1024;
const CREATE_TIMEOUT_MS = 60_000;

/**
 * `sh -c CREATE_SCRIPT lvb-replica-create DIR MARKER`: the folder must not exist (mkdir never
 * follows a link there) and the marker is created O_EXCL inside it.
 */
const CREATE_SCRIPT = `dir=$1 marker=$2
mkdir -- "$dir" || exit 1
dd of="$dir/$marker" conv=excl count=0 status=none </dev/null || exit 1`;

/** Replicates `items` (read from `source`) onto `target` under `opts.dest`; one result per item, in input order. */
export async function replicateBackups(source: SshConnection, target: SshConnection, items: ExportableBackup[], opts: ReplicaOptions): Promise<ReplicaResult[]> {
	const dest = checkDestination(opts.dest);
	const results: ReplicaResult[] = items.map((item) => ({
		source: item.backup.path,
		path: `${dest}/${item.backup.vmDir}/${item.backup.id}`,
		vm: item.backup.manifest.vm.name,
		id: item.backup.id,
		kind: item.backup.manifest.kind,
		status: 'refused',
		reason: 'not planned',
		bytes: 0,
		seconds: 0,
	}));
	const byVm = new Map<string, number[]>();
	items.forEach((item, index) => byVm.set(item.backup.vmDir, [...(byVm.get(item.backup.vmDir) ?? []), index]));
	for (const [vmDir, indexes] of byVm) {
		if (opts.signal?.aborted) throw new LibvirtBackupError('ABORTED', 'Cancelled: the replica run was stopped');
		const jobs = indexes.map((index) => ({ item: items[index], result: results[index], planned: false }));
		try {
			await replicateVm(source, target, dest, vmDir, jobs, opts);
		} catch (error) {
			if (isLibvirtBackupError(error, 'ABORTED') || opts.signal?.aborted || !(error instanceof Error)) throw error;
			// The VM's folder could not be read or a step failed outside a backup (e.g. the connection was lost).
			for (const job of jobs) if (!job.planned) settle(job, 'failed', error.message);
		}
	}
	return results;
}

interface Job {
	item: ExportableBackup;
	result: ReplicaResult;
	/** Its result is final (decided and, for a copy, carried out). */
	planned: boolean;
}

function settle(job: Job, status: ReplicaResult['status'], reason: string): void {
	Object.assign(job.result, { status, reason });
	job.planned = true;
}

async function replicateVm(source: SshConnection, target: SshConnection, dest: string, vmDir: string, jobs: Job[], opts: ReplicaOptions): Promise<void> {
	const vmName = jobs[0].item.backup.manifest.vm.name;
	const vmPath = `${dest}/${vmDir}`;
	let lock: VmLock;
	try {
		lock = await acquireVmLock(target, vmPath, opts.lockHolder ?? `n8n Export Archive (replica), ${new Date().toISOString()}`, vmName);
	} catch (error) {
		if (!isLibvirtBackupError(error)) throw error;
		for (const job of jobs) settle(job, 'failed', error.message);
		return;
	}
	let wrote = false;
	try {
		const catalog = await readCatalog(target, dest, [vmDir], opts.signal);
		const steps = planReplica(
			jobs.map((job) => ({ vmDir, id: job.item.backup.id, manifest: job.item.backup.manifest })),
			catalog,
		);
		const copied = new Set<string>();
		for (const step of steps) {
			const job = jobs[step.index];
			if (step.action !== 'copy') {
				settle(job, step.action === 'skip' ? 'skipped' : 'refused', step.reason);
				continue;
			}
			if (step.after !== undefined && !copied.has(step.after)) {
				settle(job, 'refused', `its parent ${step.after} could not be replicated in this run`);
				continue;
			}
			const started = Date.now();
			try {
				job.result.bytes = await copyBackup(source, target, vmPath, job.item, step, opts);
				settle(job, 'replicated', step.reason);
				copied.add(step.id);
				wrote = true;
			} catch (error) {
				if (isLibvirtBackupError(error, 'ABORTED') || opts.signal?.aborted) throw error;
				settle(job, 'failed', (error as Error).message);
			} finally {
				job.result.seconds = (Date.now() - started) / 1000;
			}
		}
	} finally {
		await lock.release({ removeCreatedFolder: !wrote });
	}
}

/** One backup onto the replica (under its VM lock); the folder is gone again when this throws. */
async function copyBackup(source: SshConnection, target: SshConnection, vmPath: string, item: ExportableBackup, step: ReplicaStep, opts: ReplicaOptions): Promise<number> {
	const { backup } = item;
	const manifest: Manifest = backup.manifest;
	const dir = `${vmPath}/${backup.id}`;
	if (step.replacesStale) await removeIncompleteFolders(target, vmPath, backup.id);
	await target.run(scriptArgv(CREATE_SCRIPT, 'lvb-replica-create', [dir, INCOMPLETE_MARKER]), { label: 'create the replica folder', timeoutMs: CREATE_TIMEOUT_MS, signal: opts.signal });
	try {
		let bytes = 0;
		for (const disk of manifest.disks) {
			const file = item.files.find((candidate) => candidate.name === disk.file);
			if (!file) throw new LibvirtBackupError('BACKUP_FAILED', `${backup.path}: image ${disk.file} is not among the files to copy`);
			await copyFile(source, target, `${backup.path}/${disk.file}`, `${dir}/${disk.file}.partial`, { bytes: file.bytes, sha256: disk.sha256 }, opts);
			bytes += file.bytes;
		}
		const domainXml = await readSmallFile(source, backup.path, item, opts.signal);
		const checked = await checkImages(
			target,
			manifest.disks.map((disk) => ({ path: `${dir}/${disk.file}.partial`, format: disk.format })),
			opts.signal,
		);
		const problems = manifest.disks
			.map((disk) => judgeDisk(disk, checked.get(`${dir}/${disk.file}.partial`)!, manifest.parent))
			.filter((verdict) => !verdict.ok)
			.map((verdict) => `${verdict.target} (${verdict.file}): ${verdict.detail}`);
		if (problems.length > 0) throw new LibvirtBackupError('BACKUP_FAILED', `The copy on the replica does not match the manifest: ${problems.join('; ')}`);
		await finalizeBackupFolder(
			target,
			dir,
			manifest.disks.map((disk) => disk.file),
			manifest,
			domainXml,
		);
		return bytes;
	} catch (error) {
		// While the lock is held nothing else writes there: our marker, no manifest = ours to remove.
		await removeIncompleteFolders(target, vmPath, backup.id).catch(() => undefined);
		throw error;
	}
}

async function copyFile(source: SshConnection, target: SshConnection, from: string, to: string, expect: { bytes: number; sha256: string }, opts: ReplicaOptions): Promise<void> {
	const input = await openHostFile(source, from, expect, opts.signal);
	let writer: HostFileWriter;
	try {
		writer = await createHostFileWriter(target, to, { signal: opts.signal });
	} catch (error) {
		input.destroy();
		throw error;
	}
	try {
		await pipeline(input, progress(from, expect.bytes, opts.onProgress), writer.stream, { signal: opts.signal });
		await writer.commit();
	} catch (error) {
		await writer.abort();
		throw opts.signal?.aborted ? new LibvirtBackupError('ABORTED', `Cancelled while copying ${from} to the replica`) : error;
	}
}

function progress(source: string, totalBytes: number, onProgress: ReplicaOptions['onProgress']): Transform {
	const file = source.slice(source.lastIndexOf('/') + 1);
	const backup = source.slice(0, source.lastIndexOf('/'));
	let bytes = 0;
	let reported = 0;
	return new Transform({
		transform(chunk: Buffer, _encoding, callback) {
			bytes += chunk.length;
			if (onProgress && (bytes - reported >= PROGRESS_EVERY_BYTES || bytes === totalBytes)) {
				reported = bytes;
				onProgress({ source: backup, file, bytes, totalBytes });
			}
			callback(null, chunk);
		},
	});
}

/** domain.xml from the source, read whole (it is small), its size checked against what was listed. */
async function readSmallFile(source: SshConnection, backupPath: string, item: ExportableBackup, signal?: AbortSignal): Promise<string> {
	const file = item.files.find((candidate) => candidate.name === DOMAIN_XML_FILE);
	if (!file) throw new LibvirtBackupError('BACKUP_FAILED', `${backupPath} has no ${DOMAIN_XML_FILE}`);
	if (file.bytes > MAX_DOMAIN_XML_BYTES) throw new LibvirtBackupError('BACKUP_FAILED', `${backupPath}/${DOMAIN_XML_FILE} is ${file.bytes} bytes: more than a domain definition holds (${MAX_DOMAIN_XML_BYTES})`);
	const stream: Readable = await openHostFile(source, `${backupPath}/${DOMAIN_XML_FILE}`, { bytes: file.bytes }, signal);
	const chunks: Buffer[] = [];
	for await (const chunk of stream) chunks.push(chunk as Buffer);
	return Buffer.concat(chunks).toString('utf8');
}
