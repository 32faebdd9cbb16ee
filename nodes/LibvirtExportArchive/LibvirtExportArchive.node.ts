import {
	NodeConnectionTypes,
	NodeOperationError,
	type ICredentialTestFunctions,
	type ICredentialsDecrypted,
	type IDataObject,
	type IExecuteFunctions,
	type INodeCredentialTestResult,
	type INodeExecutionData,
	type INodeType,
	type INodeTypeDescription,
} from 'n8n-workflow';
import type { Readable } from 'stream';
import {
	ARCHIVE_FORMATS,
	archiveSettings,
	capBytes,
	openArchive,
	rechunk,
	replicateBackups,
	resolveBackups,
	summarize,
	tarSize,
	writeArchiveOffThread,
	writeArchiveToHost,
	type ArchiveSummary,
	type ExportableBackup,
	type ReplicaResult,
} from '../../lib/export';
import { formatBytes } from '../../lib/format';
import { checkDestination } from '../../lib/store/layout';
import { LibvirtBackupError } from '../../lib/errors';
import { SshConnection, withSsh } from '../../lib/ssh';
import { libvirtSshConnectionTest } from '../shared/connectionTest';
import { toNodeError } from '../shared/errors';
import { forErrorOutput, hostKeyWarning, withWarningDescription } from '../shared/executeRouted';
import { hostForItem, hostFromCredentials, type LibvirtHost } from '../shared/target';
import { binaryDataLimit } from './binaryDataLimit';
import { checkResponseTarget, streamResponse } from './responseBody';
import { hostProperty } from '../shared/fleetParameters';

type Target = 'binary' | 'response' | 'hostFile' | 'remoteFile' | 'replica';
const ARCHIVE_TARGETS = ['binary', 'response', 'hostFile', 'remoteFile'];
/** Chunks handed to n8n's binary data store (see rechunk). */
const STORE_CHUNK_BYTES = 1024 * 1024;

const LIMITS_NOTICE =
	'n8n binary data: in "filesystem" mode (n8n\'s default) the archive streams to disk and only free space limits it. In "database" mode (what queue mode uses) n8n holds the whole file in memory and takes at most N8N_BINARY_DATA_DATABASE_MAX_FILE_SIZE MiB (default 512, at most 1024); in "default" (memory) mode at most about 384 MiB. For big exports write a file on a host instead.';

export class LibvirtExportArchive implements INodeType {
	description: INodeTypeDescription = {
		displayName: 'Export Archive',
		name: 'libvirtExportArchive',
		icon: { light: 'file:../icons/libvirt.svg', dark: 'file:../icons/libvirt.dark.svg' },
		group: ['transform'],
		version: 1,
		subtitle: '={{$parameter["target"] + " · " + $parameter["compression"]}}',
		documentationUrl: 'https://github.com/n8n-nodes-libvirt-backup/n8n-nodes-libvirt-backup/blob/main/docs/nodes/export-archive.md',
		description: 'Pack VM backups into a tar archive or copy them to another host',
		defaults: { name: 'Export Archive' },
		usableAsTool: true,
		inputs: [NodeConnectionTypes.Main],
		outputs: [NodeConnectionTypes.Main],
		credentials: [
			{ name: 'libvirtSshApi', required: true, testedBy: 'libvirtSshConnectionTest' },
			{ name: 'libvirtSshTargetApi', required: true, testedBy: 'libvirtSshTargetConnectionTest', displayOptions: { show: { target: ['remoteFile', 'replica'] } } },
		],
		properties: [
			hostProperty,
			{
				displayName: 'Backup Path',
				name: 'backupPath',
				type: 'string',
				required: true,
				default: '={{ $json.path }}',
				placeholder: '/var/backups/libvirt/web01/20261128T144300Z',
				description: 'Folder of the backup on the host: the path field of a Backup VM Disk or List Backups item, or a path typed here',
			},
			{
				displayName: 'Archives',
				name: 'archivePer',
				type: 'options',
				options: [
					{ name: 'One for All Input Items', value: 'all', description: 'One archive holding every input backup' },
					{ name: 'One per Input Item', value: 'item', description: 'One archive for each input backup' },
				],
				default: 'all',
				displayOptions: { show: { target: ['binary', 'hostFile', 'remoteFile'] } },
			},
			{
				displayName: 'Destination',
				name: 'target',
				type: 'options',
				options: [
					{ name: 'N8n Binary Data', value: 'binary', description: 'As a file on the output item, e.g. for Respond to Webhook' },
					{
						name: 'Webhook Response (Streamed)',
						value: 'response',
						description: "Straight to the caller of the workflow's Webhook as it is packed, stored nowhere (regular mode; Webhook Respond: Using Respond to Webhook Node)",
					},
					{ name: 'File on This Host', value: 'hostFile', description: 'A file on the libvirt host, e.g. on an off-site mount' },
					{ name: 'File on Another Host (SSH)', value: 'remoteFile', description: 'A file on another host, through its own SSH credential' },
					{
						name: 'Replica on Another Host (SSH)',
						value: 'replica',
						description: 'The backups themselves in the same <destination>/<VM>/<ID>/ layout on another host, hashed there against their manifests (a 3-2-1 copy)',
					},
				],
				default: 'binary',
			},
			{
				displayName: LIMITS_NOTICE,
				name: 'binaryLimitsNotice',
				type: 'notice',
				default: '',
				displayOptions: { show: { target: ['binary'] } },
			},
			{
				displayName:
					"Streamed to the caller of this workflow's Webhook (Respond: Using 'Respond to Webhook' Node) as it is packed; nothing is stored in n8n. Regular mode only (queue mode workers cannot stream a response). A failure before the first byte answers HTTP 500 with the reason; one after it cuts the download, so the client sees an incomplete transfer. Put a Respond to Webhook node on the error output to answer errors.",
				name: 'responseNotice',
				type: 'notice',
				default: '',
				displayOptions: { show: { target: ['response'] } },
			},
			{
				displayName: 'Compression',
				name: 'compression',
				type: 'options',
				options: [
					{ name: 'None (.Tar)', value: 'none' },
					{ name: 'Gzip (.Tar.gz)', value: 'gzip' },
					{ name: 'Zstandard (.Tar.zst)', value: 'zstd', description: 'Needs n8n on Node.js 22.15+ (n8n 2.x runs on Node.js 22 or 24)' },
				],
				default: 'gzip',
				displayOptions: { show: { target: ARCHIVE_TARGETS } },
				description: 'qcow2 images of a used disk compress little; zstd is several times faster than gzip at a similar ratio',
			},
			{
				displayName: 'Compression Level',
				name: 'compressionLevel',
				type: 'number',
				typeOptions: { minValue: 1, maxValue: 19 },
				default: 1,
				description: 'Gzip 1 to 9, zstd 1 to 19. Higher levels save little on disk images and cost much more time.',
				displayOptions: { show: { target: ARCHIVE_TARGETS }, hide: { compression: ['none'] } },
			},
			{
				displayName: 'Compress On',
				name: 'compressOn',
				type: 'options',
				options: [
					{ name: 'N8n', value: 'n8n', description: 'The host sends the images as they are; n8n compresses' },
					{
						name: 'Source Host',
						value: 'host',
						description:
							'The host compresses each image (its gzip or zstd) and checks its sha256 there: fewer bytes over a slow network and no compression work in n8n, more CPU on the host. A host without the program gets the archive compressed in n8n.',
					},
				],
				default: 'n8n',
				displayOptions: { show: { target: ARCHIVE_TARGETS }, hide: { compression: ['none'] } },
				description: 'Where the compression runs; the output field compressedOn says where it did',
			},
			{
				displayName: 'File Name',
				name: 'fileName',
				type: 'string',
				default: '',
				placeholder: 'backups-export-2026-11-28T14-43-00.tar.gz',
				description: 'Name of the archive; empty for backups-export-<UTC time>. The extension follows the compression and is added when missing.',
				displayOptions: { show: { target: ARCHIVE_TARGETS } },
			},
			{
				displayName: 'Destination on Other Host',
				name: 'replicaDestination',
				type: 'string',
				required: true,
				default: '',
				placeholder: '/mnt/offsite/libvirt-backups',
				description:
					'Absolute backup destination on the other host: each backup lands in <destination>/<VM>/<ID>/ there. Backups already there are skipped; an incremental needs its parent there or in the same run.',
				displayOptions: { show: { target: ['replica'] } },
			},
			{
				displayName: 'Folder on Host',
				name: 'folder',
				type: 'string',
				required: true,
				default: '',
				placeholder: '/mnt/offsite/libvirt-exports',
				description: 'Existing folder the archive is written to (under a temporary name, renamed when complete)',
				displayOptions: { show: { target: ['hostFile', 'remoteFile'] } },
			},
			{
				displayName: 'Overwrite',
				name: 'overwrite',
				type: 'boolean',
				default: false,
				description: 'Whether to replace an existing file of the same name (never a link or a folder). Off: an existing file fails the export.',
				displayOptions: { show: { target: ['hostFile', 'remoteFile'] } },
			},
			{
				displayName: 'Put Output File in Field',
				name: 'binaryPropertyName',
				type: 'string',
				default: 'data',
				description: 'Name of the binary field of the output item',
				displayOptions: { show: { target: ['binary'] } },
			},
		],
	};

	methods = { credentialTest: { libvirtSshConnectionTest, libvirtSshTargetConnectionTest } };

	async execute(this: IExecuteFunctions): Promise<INodeExecutionData[][]> {
		const items = this.getInputData();
		const signal = this.getExecutionCancelSignal();
		const output: INodeExecutionData[] = [];
		const done = new Set<number>();
		/** Host key warnings of this node's own connections (see executeRouted): on every item it outputs. */
		const warnings: (string | undefined)[] = [];
		const currentWarning = () => [...new Set(warnings.filter(Boolean))].join(' ') || undefined;
		/** Error items, with the input item each stands for. */
		const failed = new Map<INodeExecutionData, number>();
		const fail = (error: unknown, itemIndexes: number[]) => {
			const nodeError = toNodeError(this.getNode(), error, itemIndexes[0]);
			if (!this.continueOnFail()) throw withWarningDescription(nodeError, currentWarning());
			for (const itemIndex of itemIndexes) {
				const item = { json: { ...items[itemIndex].json, error: nodeError.message }, pairedItem: { item: itemIndex } };
				output.push(item);
				failed.set(item, itemIndex);
				done.add(itemIndex);
			}
		};

		const target = this.getNodeParameter('target', 0) as Target;
		try {
			const credentialHost = hostFromCredentials(await this.getCredentials('libvirtSshApi'));
			// Known before connecting, so that a connection failure says it too.
			warnings.push(hostKeyWarning(credentialHost.target));
			if (target === 'response') checkResponseTarget(this);
			const other = target === 'remoteFile' || target === 'replica' ? hostFromCredentials(await this.getCredentials('libvirtSshTargetApi')) : undefined;
			const exportFromHost = async (host: LibvirtHost, hostItems: number[]) => {
				const own = host.target === credentialHost.target ? 0 : warnings.push(hostKeyWarning(host.target)) - 1;
				await withSsh(
					host.target,
					async (ssh) => {
						warnings[own] = hostKeyWarning(host.target, ssh.hostKeyFingerprint);
						const resolved = new Map<number, ExportableBackup>();
						for (const itemIndex of hostItems) {
							try {
								const path = String(this.getNodeParameter('backupPath', itemIndex, '')).trim();
								if (!path) throw new NodeOperationError(this.getNode(), 'No backup path: connect a List Backups or Backup VM Disk node, or enter the backup folder', { itemIndex });
								resolved.set(itemIndex, (await resolveBackups(ssh, [path], signal))[0]);
							} catch (error) {
								fail(error, [itemIndex]);
							}
						}
						const indexes = [...resolved.keys()];
						const groups = target === 'replica' ? [] : target !== 'response' && this.getNodeParameter('archivePer', 0) === 'item' ? indexes.map((index) => [index]) : indexes.length ? [indexes] : [];
						const remote = other ? await SshConnection.connect(other.target, signal) : undefined;
						if (other && remote) warnings.push(hostKeyWarning(other.target, remote.hostKeyFingerprint));
						try {
							if (target === 'replica' && remote) {
								for (const result of await replicate(this, ssh, remote, resolved, signal)) {
									if (result.status === 'failed' || result.status === 'refused') {
										fail(new LibvirtBackupError('BACKUP_FAILED', `${result.source}: ${result.status}: ${result.reason}`), result.items);
									} else {
										output.push({ json: result.json, pairedItem: result.items.map((item) => ({ item })) });
										result.items.forEach((index) => done.add(index));
									}
								}
							}
							for (const group of groups) {
								try {
									// The same backup from two items goes into the archive once.
									const backups = [...new Map(group.map((index) => [resolved.get(index)!.backup.path, resolved.get(index)!])).values()];
									output.push({ ...(await exportGroup(this, ssh, remote, group, backups, signal)), pairedItem: group.map((item) => ({ item })) });
									group.forEach((index) => done.add(index));
								} catch (error) {
									fail(error, group);
								}
							}
						} finally {
							remote?.close();
						}
					},
					signal,
				);
			};
			// The items' hosts (the Host parameter), in order of first appearance: one host at a time.
			const byHost = new Map<string, { host: LibvirtHost; items: number[] }>();
			for (let itemIndex = 0; itemIndex < items.length; itemIndex++) {
				try {
					const host = hostForItem(credentialHost, this.getNodeParameter('host', itemIndex, ''));
					const key = `${host.target.host.toLowerCase()}\0${host.target.port}`;
					byHost.set(key, { host, items: [...(byHost.get(key)?.items ?? []), itemIndex] });
				} catch (error) {
					fail(error, [itemIndex]);
				}
			}
			if (target === 'response' && byHost.size > 1) {
				throw new NodeOperationError(this.getNode(), `The streamed response carries one archive from one host, but these items name ${byHost.size} hosts (${[...byHost.values()].map(({ host }) => host.name).join(', ')})`, {
					description: 'Export each host in its own run, or write the archives to files on a host.',
				});
			}
			for (const { host, items: hostItems } of byHost.values()) {
				try {
					await exportFromHost(host, hostItems);
				} catch (error) {
					if (error instanceof NodeOperationError) throw withWarningDescription(error, currentWarning());
					fail(error, hostItems.filter((index) => !done.has(index)));
				}
			}
		} catch (error) {
			const left = items.map((_item, index) => index).filter((index) => !done.has(index));
			if (left.length === 0 || error instanceof NodeOperationError) throw withWarningDescription(toNodeError(this.getNode(), error, left[0] ?? 0), currentWarning());
			fail(error, left);
		}
		const warning = currentWarning();
		if (warning) this.addExecutionHints({ message: warning, type: 'warning', location: 'outputPane' });
		const toErrorOutput = this.getNode().onError === 'continueErrorOutput';
		for (const item of output) {
			if (warning) item.json.hostKeyWarning = warning;
			else delete item.json.hostKeyWarning;
			const input = failed.get(item);
			// n8n sends an item to the error output only when it holds nothing but error and details.
			if (toErrorOutput && input !== undefined) item.json = forErrorOutput(item.json, items[input].json);
		}
		return [output];
	}
}

/**
 * The replica target: every resolved backup (once, parents first, decided by the replica planner) onto
 * the other host; one result per distinct backup, with the input items that named it.
 */
async function replicate(
	context: IExecuteFunctions,
	ssh: SshConnection,
	remote: SshConnection,
	resolved: Map<number, ExportableBackup>,
	signal: AbortSignal | undefined,
): Promise<{ status: ReplicaResult['status']; reason: string; source: string; items: number[]; json: IDataObject }[]> {
	const byPath = new Map<string, { backup: ExportableBackup; items: number[] }>();
	for (const [index, backup] of resolved) {
		const entry = byPath.get(backup.backup.path) ?? byPath.set(backup.backup.path, { backup, items: [] }).get(backup.backup.path)!;
		entry.items.push(index);
	}
	if (byPath.size === 0) return [];
	const first = Math.min(...resolved.keys());
	const dest = String(context.getNodeParameter('replicaDestination', first, '')).trim();
	const holder = `n8n Export Archive replica (execution ${context.getExecutionId() ?? '?'})`;
	const results = await replicateBackups(ssh, remote, [...byPath.values()].map((entry) => entry.backup), { dest, signal, lockHolder: holder });
	return results.map((result) => ({
		status: result.status,
		reason: result.reason,
		source: result.source,
		items: byPath.get(result.source)?.items ?? [],
		json: {
			target: 'replica',
			status: result.status,
			...(result.reason ? { reason: result.reason } : {}),
			vm: result.vm,
			id: result.id,
			kind: result.kind,
			source: result.source,
			path: result.path,
			host: remote.target.host,
			destination: dest,
			bytes: result.bytes,
			size: formatBytes(result.bytes),
			durationMs: Math.round(result.seconds * 1000),
		},
	}));
}

/** One archive of `backups` (from the items `group`) to the chosen destination; its output item. */
async function exportGroup(
	context: IExecuteFunctions,
	ssh: SshConnection,
	remote: SshConnection | undefined,
	group: number[],
	backups: ExportableBackup[],
	signal: AbortSignal | undefined,
): Promise<INodeExecutionData> {
	const itemIndex = group[0];
	const target = context.getNodeParameter('target', itemIndex) as Target;
	const { compression, compressOn } = archiveSettings(context.getNodeParameter('compression', itemIndex), context.getNodeParameter('compressionLevel', itemIndex, 1), context.getNodeParameter('compressOn', itemIndex, 'n8n'));
	const format = ARCHIVE_FORMATS[compression.kind];
	const fileName = archiveName(String(context.getNodeParameter('fileName', itemIndex, '')), format.extension, new Date());
	const started = Date.now();
	const json = (summary: ArchiveSummary, where: IDataObject): IDataObject => ({
		fileName,
		target,
		...where,
		compression: compression.kind === 'none' ? 'none' : `${compression.kind} -${compression.level}`,
		bytes: summary.bytes,
		size: formatBytes(summary.bytes),
		sha256: summary.sha256,
		tarBytes: summary.tarBytes,
		...(summary.compressedOn ? { compressedOn: summary.compressedOn } : {}),
		files: summary.files,
		backups: summary.backups,
		durationMs: Date.now() - started,
	});

	if (target === 'response') {
		const summary = await streamResponse(context, { 'content-type': format.mimeType, 'content-disposition': contentDisposition(fileName) }, async (response) => await writeArchiveOffThread(ssh.target, backups, compression, response, signal, compressOn));
		return { json: json(summary, {}) };
	}
	if (target !== 'binary') {
		const folder = checkDestination(String(context.getNodeParameter('folder', itemIndex, '')).trim(), 'Folder on Host');
		const path = `${folder}/${fileName}`;
		const summary = await writeArchiveToHost(ssh, remote ?? ssh, backups, path, compression, { signal, overwrite: context.getNodeParameter('overwrite', itemIndex, false) === true, compressOn });
		const where = remote ? { host: remote.target.host, path } : { path };
		return { json: json(summary, where) };
	}

	const limit = binaryDataLimit(process.env);
	const tarBytes = tarSize(backups);
	if (limit.maxBytes !== undefined && compression.kind === 'none' && tarBytes > limit.maxBytes) {
		throw new LibvirtBackupError(
			'INVALID_INPUT',
			`The archive would be ${formatBytes(tarBytes)}, more than n8n can store: ${limit.reason}. Export to a file on a host instead, choose compression, or switch n8n to binary data mode "filesystem".`,
		);
	}
	if (limit.buffered) {
		context.addExecutionHints({
			message: `${limit.reason}: n8n holds the whole archive in its memory while storing it. For large exports write a file on a host instead.`,
			type: 'info',
			location: 'outputPane',
		});
	}
	const archive = await openArchive(ssh, backups, compression, signal, { compressOn });
	let stream: Readable = archive.stream;
	if (limit.maxBytes !== undefined) {
		const max = limit.maxBytes;
		// A compressed size is known only at the end: the export stops as soon as it passes the limit.
		stream = archive.stream.pipe(
			capBytes(max, () => new LibvirtBackupError('INVALID_INPUT', `The compressed archive grew past ${formatBytes(max)}, more than n8n can store: ${limit.reason}. Export to a file on a host instead.`)),
		);
		archive.stream.on('error', (error) => stream.destroy(error));
		stream.on('close', () => archive.stream.destroy());
	}
	const binaryPropertyName = String(context.getNodeParameter('binaryPropertyName', itemIndex, 'data')) || 'data';
	const chunked = stream.pipe(rechunk(STORE_CHUNK_BYTES));
	stream.on('error', (error) => chunked.destroy(error));
	const binary = await context.helpers.prepareBinaryData(chunked, fileName, format.mimeType);
	const summary = summarize(archive, backups);
	return { json: json(summary, { binaryDataMode: limit.mode }), binary: { [binaryPropertyName]: binary } };
}

/** An attachment header for any file name: an ASCII fallback and the exact name (RFC 6266). */
export function contentDisposition(fileName: string): string {
	return `attachment; filename="${fileName.replace(/[^\x20-\x7e]|["\\]/g, '_')}"; filename*=UTF-8''${encodeURIComponent(fileName)}`;
}

/** The archive's name: as given (extension added when missing) or backups-export-<UTC time>. */
export function archiveName(given: string, extension: string, now: Date): string {
	const name = given.trim() || `backups-export-${now.toISOString().slice(0, 19).replace(/:/g, '-')}`;
	if (name.includes('/') || name === '.' || name === '..' || /[\0\n\r]/.test(name)) throw new LibvirtBackupError('INVALID_INPUT', `File Name must be a plain file name, got "${given}"`);
	return name.endsWith(extension) ? name : `${name}${extension}`;
}

/** The export target credential's test: connect with its pinned host key and run one command. */
export async function libvirtSshTargetConnectionTest(this: ICredentialTestFunctions, credential: ICredentialsDecrypted): Promise<INodeCredentialTestResult> {
	try {
		const { target } = hostFromCredentials(credential.data ?? {});
		const presented = await withSsh(target, async (ssh) => {
			await ssh.run(['true'], { label: 'a test command', timeoutMs: 30_000 });
			return ssh.hostKeyFingerprint;
		});
		const warning = hostKeyWarning(target, presented);
		return { status: 'OK', message: `Connected to ${target.username}@${target.host}:${target.port}${warning ? `. WARNING: ${warning}` : ''}` };
	} catch (error) {
		return { status: 'Error', message: (error as Error).message };
	}
}
