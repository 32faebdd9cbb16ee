/**
 * Reading backups out of the lab host for export: which files, refused backups, and file streams
 * that fail (never end short) on a changed, truncated or planted file, with SSH flow control.
 */
import { createHash } from 'crypto';
import type { Readable } from 'stream';
import { openHostFile, resolveBackups } from '../../lib/export/source';
import { isLibvirtBackupError } from '../../lib/errors';
import { SshConnection } from '../../lib/ssh';
import { VERIFICATION_FILE, serializeVerification } from '../../lib/store';
import { makeBackups, makeDest, makeUnfinished, onHost, removeDest, type MadeBackup } from '../support/backupFixtures';
import { shq } from '../support/lab';
import { labTarget } from '../support/targets';

jest.setTimeout(120_000);

async function drain(stream: Readable): Promise<{ bytes: number; sha256: string }> {
	const hash = createHash('sha256');
	let bytes = 0;
	for await (const chunk of stream as AsyncIterable<Buffer>) {
		bytes += chunk.length;
		hash.update(chunk);
	}
	return { bytes, sha256: hash.digest('hex') };
}

function hostSha(path: string): string {
	return onHost(`sha256sum < ${shq(path)} | cut -c1-64`).trim();
}

describe('export source', () => {
	let ssh: SshConnection;
	let dest: string;
	let made: MadeBackup[];

	beforeAll(async () => {
		dest = makeDest(`export 'src' $(x)`);
		made = makeBackups(dest, [
			{ vm: 'web01', id: '20261120T010000Z', disks: [{ target: 'vda', pattern: 0x11 }, { target: 'vdb', pattern: 0x12 }] },
			{ vm: 'web01', id: '20261121T010000Z', kind: 'incremental', parent: '20261120T010000Z', disks: [{ target: 'vda', pattern: 0x21 }, { target: 'vdb', pattern: 0x22 }] },
			{ vm: 'db 01', id: '20261121T020000Z' },
			{ vm: 'bad', id: '20261122T010000Z' },
			{ vm: 'bad', id: '20261122T020000Z' },
			{ vm: 'bad', id: '20261122T030000Z' },
			{ vm: 'bad', id: '20261122T040000Z' },
		]);
		makeUnfinished(dest, 'bad', '20261123T010000Z');
		const invalid = serializeVerification({
			format: 'n8n-nodes-libvirt-backup/verification',
			version: 1,
			backupId: '20261122T010000Z',
			verifiedAt: '2026-11-22T05:00:00.000Z',
			status: 'invalid',
			ok: false,
			disks: [],
			parents: [],
			problems: ['vda.qcow2: sha256 differs'],
		});
		onHost(
			[
				`printf '%s' ${shq(invalid)} > ${shq(`${made[3].path}/${VERIFICATION_FILE}`)}`,
				`touch -- ${shq(`${made[4].path}/.lvb-consolidate.json`)}`,
				`mv -- ${shq(`${made[5].path}/vda.qcow2`)} ${shq(`${made[5].path}/vda.real`)} && ln -s vda.real ${shq(`${made[5].path}/vda.qcow2`)}`,
				`mv -- ${shq(made[6].path)} ${shq(`${made[6].path}.quarantined`)}`,
			].join(' && '),
		);
		ssh = await SshConnection.connect(labTarget());
	});

	afterAll(() => {
		ssh?.close();
		removeDest(dest);
	});

	test('resolves backups to their files (images first, manifest last), one catalog read per VM folder', async () => {
		const before = ssh.execCount;
		const resolved = await resolveBackups(ssh, [made[1].path, `${made[2].path}/`, made[0].path, made[1].path]);

		expect(ssh.execCount - before).toBe(3); // web01 and "db 01" catalogs, one stat for all files
		expect(resolved.map((item) => item.backup.path)).toEqual([made[1].path, made[2].path, made[0].path]);
		const [incremental] = resolved;
		expect(incremental.backup.manifest).toEqual(made[1].manifest);
		expect(incremental.files.map((file) => file.name)).toEqual(['vda.qcow2', 'vdb.qcow2', 'domain.xml', 'manifest.json']);
		expect(incremental.files[0]).toEqual({ name: 'vda.qcow2', bytes: made[1].manifest.disks[0].bytes, sha256: made[1].manifest.disks[0].sha256 });
		const manifestBytes = Number(onHost(`stat -c %s -- ${shq(`${made[1].path}/manifest.json`)}`));
		expect(incremental.files[3]).toEqual({ name: 'manifest.json', bytes: manifestBytes });
	});

	test.each([
		['a missing backup', () => `${dest}/web01/20261129T010000Z`, /no such backup/],
		['an unfinished backup', () => `${dest}/bad/20261123T010000Z`, /not a finished backup: no manifest/],
		['a backup whose latest verification is invalid', () => made[3].path, /found it invalid: vda.qcow2: sha256 differs/],
		['a backup mid-consolidation', () => made[4].path, /consolidation .* is unfinished/],
		['a backup whose image is a symbolic link', () => made[5].path, /image files are missing: vda.qcow2/],
		['a quarantined backup', () => made[6].path, /only its quarantined copy exists/],
		['a path that is not a backup folder', () => `${dest}/web01`, /is not a backup folder/],
	])('refuses %s', async (_what, path, message) => {
		const error = await resolveBackups(ssh, [made[0].path, path()]).catch((e: unknown) => e);
		expect(isLibvirtBackupError(error, 'INVALID_INPUT')).toBe(true);
		expect((error as Error).message).toMatch(message);
	});

	test('streams an image whose bytes and sha256 match the manifest', async () => {
		const disk = made[0].manifest.disks[1];
		const result = await drain(await openHostFile(ssh, `${made[0].path}/${disk.file}`, { bytes: disk.bytes, sha256: disk.sha256 }));
		expect(result).toEqual({ bytes: disk.bytes, sha256: disk.sha256 });
	});

	test('errors (never ends cleanly) on a changed, a longer or a shorter file', async () => {
		const disk = made[0].manifest.disks[0];
		const path = `${made[0].path}/${disk.file}`;
		await expect(drain(await openHostFile(ssh, path, { bytes: disk.bytes, sha256: 'f'.repeat(64) }))).rejects.toThrow(/has sha256 [0-9a-f]{64}, the manifest says f{64}/);
		await expect(drain(await openHostFile(ssh, path, { bytes: disk.bytes + 1 }))).rejects.toThrow(new RegExp(`has ${disk.bytes} bytes, expected ${disk.bytes + 1}`));
		await expect(drain(await openHostFile(ssh, path, { bytes: disk.bytes - 1 }))).rejects.toThrow(/has more than the expected/);
	});

	test('refuses a symbolic link, a FIFO and a missing file without blocking', async () => {
		const dir = made[2].path;
		onHost(`cd -- ${shq(dir)} && ln -sf vda.qcow2 link.qcow2 && rm -f fifo && mkfifo fifo`);
		await expect(drain(await openHostFile(ssh, `${dir}/link.qcow2`, { bytes: 1 }))).rejects.toThrow(/symbolic link: not followed/);
		await expect(drain(await openHostFile(ssh, `${dir}/fifo`, { bytes: 1 }))).rejects.toThrow(/not a regular file/);
		await expect(drain(await openHostFile(ssh, `${dir}/nope`, { bytes: 1 }))).rejects.toThrow(/not a regular file/);
		onHost(`rm -f -- ${shq(`${dir}/link.qcow2`)} ${shq(`${dir}/fifo`)}`);
	});

	test('keeps flow control: an unread stream holds a bounded amount, then delivers every byte', async () => {
		const path = `${dest}/big.bin`;
		onHost(`head -c 67108864 /dev/urandom > ${shq(path)}`);
		const sha256 = hostSha(path);
		const stream = await openHostFile(ssh, path, { bytes: 64 * 1024 * 1024, sha256 });
		// How far the reader on the host got: the file offset of whoever holds the file open.
		const offsetScript = `fd=$(find /proc/[0-9]*/fd -maxdepth 1 -lname "$1" 2>/dev/null | head -n 1)
[ -n "$fd" ] && awk '/^pos:/ { print $2 }' "\${fd%/fd/*}/fdinfo/\${fd##*/}" || echo -1`;
		const hostOffset = async () => Number((await ssh.run(['sh', '-c', offsetScript, 'offset', path])).stdout.trim());
		let offset = -1;
		for (let still = 0; still < 3; ) {
			await new Promise((resolve) => setTimeout(resolve, 300));
			const now = await hostOffset();
			still = now === offset ? still + 1 : 0;
			offset = now;
		}
		expect(offset).toBeGreaterThan(0);
		expect(offset).toBeLessThan(16 * 1024 * 1024);
		expect(await drain(stream)).toEqual({ bytes: 64 * 1024 * 1024, sha256 });
	});

	test('destroying the stream stops the read on the host', async () => {
		const path = `${dest}/big.bin`;
		const stream = await openHostFile(ssh, path, { bytes: 64 * 1024 * 1024 });
		stream.destroy();
		// Polls until no process holds the file open (bounded: exit 1 after 20 tries).
		const openers = `for i in $(seq 20); do
  held=0; for fd in /proc/[0-9]*/fd/*; do [ "$(readlink "$fd" 2>/dev/null)" = "$1" ] && held=1; done
  [ $held = 0 ] && exit 0; sleep 0.5
done; exit 1`;
		await expect(ssh.run(['sh', '-c', openers, 'openers', path])).resolves.toMatchObject({ exitCode: 0 });
	});
});
