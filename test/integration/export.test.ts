// Export Archive against the lab: the engine writing archives to host files (unpacked with `tar`
// into a store List Backups reads, images hashing to the manifest), refusals that leave nothing
// behind, and the node in the REAL n8n engine in-process (binary data, the binary data mode limit,
// a file on another host through its own credential, continueOnFail). Needs `npm run build`.
import { createHash } from 'crypto';
import { Readable } from 'stream';
import * as zlib from 'zlib';
import { extract as tarExtract } from 'tar-stream';
import type { IDataObject, INode } from 'n8n-workflow';
import { listCatalog } from '../../lib/catalog';
import { isLibvirtBackupError } from '../../lib/errors';
import { resolveBackups, writeArchiveToHost } from '../../lib/export';
import { hostHasProgram, openHostCompressed } from '../../lib/export/source';
import { SshConnection } from '../../lib/ssh';
import { makeBackups, makeDest, onHost, removeDest, tree, type MadeBackup } from '../support/backupFixtures';
import { loadLab, shq } from '../support/lab';
import { InProcessN8n, type CredentialStore, type WorkflowJson } from '../support/n8n-inprocess';
import { labCredentialData, labTarget } from '../support/targets';

jest.setTimeout(180_000);

const PACKAGE = 'n8n-nodes-libvirt-backup';
const TRIGGER = 'When clicking ‘Execute workflow’';

let ssh: SshConnection;
let dest: string;
let out: string;
let made: MadeBackup[];

beforeAll(async () => {
	dest = makeDest(`export 'store' $(x)`);
	out = makeDest('out');
	made = makeBackups(dest, [
		{ vm: 'web01', id: '20261120T010000Z', disks: [{ target: 'vda', pattern: 0x11, dataKiB: 512 }, { target: 'vdb', pattern: 0x12 }] },
		{ vm: 'web01', id: '20261121T010000Z', kind: 'incremental', parent: '20261120T010000Z', disks: [{ target: 'vda', pattern: 0x21 }, { target: 'vdb', pattern: 0x22 }] },
		{ vm: `db "01"`, id: '20261121T020000Z' },
		{ vm: 'broken', id: '20261122T010000Z' },
		{ vm: 'planted', id: '20261122T020000Z' },
	]);
	ssh = await SshConnection.connect(labTarget());
});

afterAll(() => {
	ssh?.close();
	removeDest(dest);
	removeDest(out);
});

describe('engine: archive to a file on the host', () => {
	test.each([
		['tar', { kind: 'none' } as const, '.tar', '', 'n8n' as const, undefined],
		['tar.gz', { kind: 'gzip', level: 1 } as const, '.tar.gz', 'z', 'n8n' as const, 'n8n'],
		// The host's gzip members for the images, ours for the rest: one .tar.gz to tar.
		['tar.gz compressed on the host', { kind: 'gzip', level: 1 } as const, '.host.tar.gz', 'z', 'host' as const, 'host'],
	])('%s: unpacked with tar it is a store List Backups reads, images hash to the manifest', async (_name, compression, extension, flag, compressOn, compressedOn) => {
		const backups = await resolveBackups(ssh, made.slice(0, 3).map((backup) => backup.path));
		const path = `${out}/export${extension}`;
		const summary = await writeArchiveToHost(ssh, ssh, backups, path, compression, { compressOn });

		expect(summary.compressedOn).toBe(compressedOn);
		expect(summary.bytes).toBe(Number(onHost(`stat -c %s -- ${shq(path)}`)));
		expect(summary.sha256).toBe(onHost(`sha256sum < ${shq(path)} | cut -c1-64`).trim());
		const unpacked = `${out}/unpacked${extension}`;
		onHost(`mkdir -p -- ${shq(unpacked)} && tar -x${flag}f ${shq(path)} -C ${shq(unpacked)}`);
		const catalog = await listCatalog(ssh, unpacked);
		expect(catalog.backups.map((backup) => backup.manifest)).toEqual(
			made
				.slice(0, 3)
				.map((backup) => backup.manifest)
				.sort((a, b) => (a.vm.name === b.vm.name ? (a.id < b.id ? 1 : -1) : a.vm.name < b.vm.name ? -1 : 1)),
		);
		expect(catalog.incomplete).toEqual([]);
		for (const backup of catalog.backups) {
			for (const disk of backup.manifest.disks) expect(onHost(`sha256sum < ${shq(`${backup.path}/${disk.file}`)} | cut -c1-64`).trim()).toBe(disk.sha256);
		}
		expect(tree(out).filter((entry) => entry.includes('.partial'))).toEqual([]);
	});

	test.each(['n8n', 'host'] as const)('an image changed after the backup fails the export and leaves no file, temporary or final (compressed on %s)', async (compressOn) => {
		const backups = await resolveBackups(ssh, [made[0].path, made[3].path]);
		// Same size, one byte different: only the sha256 computed as it streams can tell.
		onHost(`printf '\\377' | dd of=${shq(`${made[3].path}/vda.qcow2`)} bs=1 seek=70000 conv=notrunc status=none`);
		const before = tree(out);
		const error = await writeArchiveToHost(ssh, ssh, backups, `${out}/corrupt.tar.gz`, { kind: 'gzip', level: 1 }, { compressOn }).catch((e: unknown) => e);

		expect((error as Error).message).toMatch(/vda\.qcow2 has sha256 [0-9a-f]{64}, the manifest says/);
		expect(tree(out)).toEqual(before);
	});

	test('compressed on the host: a compressor that fails, or frames that do not decompress to the image, fail the stream; a host without the program is told apart', async () => {
		const [backup] = await resolveBackups(ssh, [made[0].path]);
		const image = backup.files[0];
		const path = `${backup.backup.path}/${image.name}`;
		const drain = async (stream: Readable) => {
			for await (const chunk of stream) void chunk;
		};
		const gzip = { kind: 'gzip', level: 1 } as const;
		const expect_ = { bytes: image.bytes, sha256: image.sha256! };
		const failed = await drain(await openHostCompressed(ssh, path, expect_, gzip, undefined, ['sh', '-c', 'gzip -1 -c; echo gave up >&2; exit 3'])).catch((e: unknown) => e);
		expect((failed as Error).message).toMatch(/compressing .*vda\.qcow2 failed on .*\(exit code 3\): gave up/);
		const cut = await drain(await openHostCompressed(ssh, path, expect_, gzip, undefined, ['sh', '-c', 'gzip -1 -c | head -c 1000'])).catch((e: unknown) => e);
		expect((cut as Error).message).toMatch(/vda\.qcow2: what the host sent does not decompress/);
		// Valid frames of other bytes: only the hash of what was decompressed here can tell.
		const other = await drain(await openHostCompressed(ssh, path, expect_, gzip, undefined, ['sh', '-c', 'tr "\\000" "\\001" | gzip -1 -c'])).catch((e: unknown) => e);
		expect((other as Error).message).toMatch(/vda\.qcow2 has sha256 [0-9a-f]{64}, the manifest says/);
		await expect(drain(await openHostCompressed(ssh, path, expect_, gzip))).resolves.toBeUndefined();

		expect(await hostHasProgram(ssh, 'gzip')).toBe(true);
		expect(await hostHasProgram(ssh, 'lvb-no-such-compressor')).toBe(false);
	});

	test('an image replaced by a symbolic link is refused before anything is written', async () => {
		onHost(`cd -- ${shq(made[4].path)} && mv vda.qcow2 elsewhere && ln -s elsewhere vda.qcow2`);
		const error = await resolveBackups(ssh, [made[4].path]).catch((e: unknown) => e);
		expect(isLibvirtBackupError(error, 'INVALID_INPUT')).toBe(true);
		expect((error as Error).message).toMatch(/image files are missing: vda\.qcow2/);
	});
});

describe('node in the n8n engine', () => {
	let n8n: InProcessN8n;
	const saved = { ...process.env };

	beforeAll(async () => {
		n8n = await InProcessN8n.create();
	});
	afterAll(async () => {
		await n8n?.shutdown();
	});
	afterEach(() => {
		for (const key of ['N8N_DEFAULT_BINARY_DATA_MODE', 'N8N_BINARY_DATA_DATABASE_MAX_FILE_SIZE']) {
			if (saved[key] === undefined) delete process.env[key];
			else process.env[key] = saved[key];
		}
	});

	function credentials(): CredentialStore {
		const lab = loadLab();
		const replica = (lab as unknown as { replicaHost?: { host: string; port: number; knownHostsLine: string } }).replicaHost;
		return {
			src: { type: 'libvirtSshApi', data: labCredentialData() },
			// The second host (lab.json replicaHost: its own sshd and host key) when the lab has it.
			dst: { type: 'libvirtSshTargetApi', data: labCredentialData(replica ? { host: replica.host, port: replica.port, hostKeys: replica.knownHostsLine } : {}) },
		};
	}

	/** Manual Trigger (one item) -> Export Archive of that backup path. */
	function workflow(path: string, parameters: Record<string, unknown>, continueOnFail: boolean | 'errorOutput' = false): WorkflowJson {
		const nodes: INode[] = [
			{ id: 't', name: TRIGGER, type: 'n8n-nodes-base.manualTrigger', typeVersion: 1, position: [0, 0], parameters: {} },
			{
				id: 'e',
				name: 'Export',
				type: `${PACKAGE}.libvirtExportArchive`,
				typeVersion: 1,
				position: [200, 0],
				parameters: { backupPath: path, ...parameters } as INode['parameters'],
				credentials: { libvirtSshApi: { id: 'src', name: 'lab' }, libvirtSshTargetApi: { id: 'dst', name: 'other' } },
				...(continueOnFail === true ? { onError: 'continueRegularOutput' as const } : {}),
				...(continueOnFail === 'errorOutput' ? { onError: 'continueErrorOutput' as const } : {}),
			},
		];
		return { nodes, connections: { [TRIGGER]: { main: [[{ node: 'Export', type: 'main', index: 0 }]] } } };
	}

	async function untarGz(data: Buffer): Promise<Map<string, string>> {
		const hashes = new Map<string, string>();
		const extract = tarExtract();
		const done = (async () => {
			for await (const entry of extract) {
				const hash = createHash('sha256');
				for await (const chunk of entry as AsyncIterable<Buffer>) hash.update(chunk);
				hashes.set(entry.header.name, hash.digest('hex'));
			}
		})();
		Readable.from([zlib.gunzipSync(data)]).pipe(extract);
		await done;
		return hashes;
	}

	test('binary data: a tar.gz named backups-export-<time>.tar.gz whose images hash to the manifest', async () => {
		const result = await n8n.run(workflow(made[0].path, {}), { credentials: credentials() });
		expect(result.error).toBeUndefined();
		const item = result.run.data.resultData.runData.Export[0].data!.main[0]![0];
		const binary = item.binary!.data;
		expect(binary.fileName).toMatch(/^backups-export-\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}\.tar\.gz$/);
		expect(binary.mimeType).toBe('application/gzip');
		const data = Buffer.from(binary.data, 'base64');
		expect(item.json).toMatchObject({ target: 'binary', bytes: data.length, sha256: createHash('sha256').update(data).digest('hex'), files: 4 });

		const hashes = await untarGz(data);
		for (const disk of made[0].manifest.disks) expect(hashes.get(`web01/20261120T010000Z/${disk.file}`)).toBe(disk.sha256);
		expect([...hashes.keys()].map((name) => name.split('/').pop())).toEqual(['vda.qcow2', 'vdb.qcow2', 'domain.xml', 'manifest.json']);
	});

	test('a credential that skips host key verification says so in every output item, as every other node does', async () => {
		const store = credentials();
		store.src = { ...store.src, data: { ...store.src.data, skipHostKeyVerification: true } };
		const result = await n8n.run(workflow(made[0].path, {}), { credentials: store });
		expect(result.error).toBeUndefined();
		expect(result.output('Export')).toEqual([expect.objectContaining({ hostKeyWarning: expect.stringMatching(/^host key NOT verified/) }) as IDataObject]);
	});

	test('binary data: an image changed after the backup fails the node, and no item refers to a partial archive', async () => {
		// made[3] was changed in place by the engine test above (same size, one byte).
		const result = await n8n.run(workflow(made[3].path, {}), { credentials: credentials() });
		expect(result.error?.message).toMatch(/vda\.qcow2 has sha256 [0-9a-f]{64}, the manifest says/);
		expect(result.output('Export')).toEqual([]);
	});

	test('binary data in database mode: an archive over the limit fails before anything is read', async () => {
		process.env.N8N_DEFAULT_BINARY_DATA_MODE = 'database';
		process.env.N8N_BINARY_DATA_DATABASE_MAX_FILE_SIZE = '0.1';
		const result = await n8n.run(workflow(made[0].path, { compression: 'none' }), { credentials: credentials() });
		expect(result.error?.message).toMatch(/The archive would be .* more than n8n can store: .*"database".* at most 0\.1 MiB per file/);
	});

	test('a file on another host through its own credential; a missing backup is an error item with continueOnFail', async () => {
		const missing = `${dest}/web01/20261129T000000Z`;
		const result = await n8n.run(
			workflow(made[2].path, { target: 'remoteFile', folder: out, fileName: 'other-host', compression: 'gzip' }),
			{ credentials: credentials() },
		);
		expect(result.error).toBeUndefined();
		const items = result.output('Export');
		expect(items[0]).toMatchObject({ target: 'remoteFile', path: `${out}/other-host.tar.gz`, files: 3 });
		expect(onHost(`tar -tzf ${shq(`${out}/other-host.tar.gz`)}`).trim().split('\n')).toEqual([
			'db%20%2201%22/20261121T020000Z/vda.qcow2',
			'db%20%2201%22/20261121T020000Z/domain.xml',
			'db%20%2201%22/20261121T020000Z/manifest.json',
		]);

		const failed = await n8n.run(workflow(missing, { target: 'hostFile', folder: out }, true), { credentials: credentials() });
		expect(failed.output('Export')).toEqual([expect.objectContaining({ error: expect.stringMatching(/cannot be exported: no such backup on the host/) }) as IDataObject]);
		expect(tree(out).filter((entry) => entry.startsWith('./backups-export-'))).toEqual([]);
	});

	// n8n moves an item to the error output only when its json holds nothing but error, message and
	// details: a failed item that kept its input's fields (a List Backups item) went down the success branch.
	test('with the error output on, a failed item leaves on the error output, with the host key warning in its details', async () => {
		const missing = `${dest}/web01/20261129T000000Z`;
		const store = credentials();
		store.src = { ...store.src, data: { ...store.src.data, skipHostKeyVerification: true } };
		const result = await n8n.run(workflow(missing, { target: 'hostFile', folder: out }, 'errorOutput'), { credentials: store });
		expect(result.error).toBeUndefined();
		expect(result.output('Export', 0)).toEqual([]);
		expect(result.output('Export', 1)).toEqual([
			{ error: expect.stringMatching(/cannot be exported: no such backup on the host/), details: { hostKeyWarning: expect.stringMatching(/^host key NOT verified/) } },
		]);
	});

	test('a Folder on Host with ".." parts is refused before anything is read or written', async () => {
		const result = await n8n.run(workflow(made[0].path, { target: 'hostFile', folder: `${out}/../escape` }), { credentials: credentials() });
		expect(result.error?.message).toMatch(/Folder on Host ".*" must not contain "\.\.", "\." or empty path parts/);
		expect(onHost(`ls -A ${shq(`${out}/..`)}`)).not.toMatch(/escape/);
	});

	test('a thrown error (no continue) carries the host key warning in its description, as every other node does', async () => {
		const store = credentials();
		store.src = { ...store.src, data: { ...store.src.data, skipHostKeyVerification: true } };
		const result = await n8n.run(workflow(`${dest}/web01/20261129T000000Z`, { target: 'hostFile', folder: out }), { credentials: store });
		expect(result.error?.message).toMatch(/no such backup on the host/);
		expect((result.error as { description?: string } | undefined)?.description).toMatch(/host key NOT verified/);
	});
});
