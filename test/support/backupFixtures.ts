/**
 * Backups made on the lab host the way our writer leaves them, without running a backup: qcow2
 * images with known data (`qemu-img create` + `qemu-io write -P`), sha256 computed on the host, and
 * a manifest written with `serializeManifest`. Incrementals get a qcow2 backing file
 * `../<parent id>/<file>`. Each test works in a fresh destination under
 * /var/lib/lvb-lab/test-dest/<random>/ and removes it afterwards.
 */
import { randomBytes } from 'crypto';
import { backupTime, vmDirName } from '../../lib/store/layout';
import { INCOMPLETE_MARKER, MANIFEST_FILE, MANIFEST_FORMAT, MANIFEST_VERSION, PROTECTED_MARKER, serializeManifest, type BackupKind, type Manifest } from '../../lib/store/manifest';
import { labDir, sshExec, shq } from './lab';

export interface FixtureDisk {
	target: string;
	/** Byte written over the first `dataKiB` KiB of the image (an incremental writes at its own offset). */
	pattern: number;
	virtualMiB?: number;
	dataKiB?: number;
}

export interface FixtureBackup {
	vm: string;
	/** Backup id, e.g. 20261128T144300Z. */
	id: string;
	kind?: BackupKind;
	parent?: string;
	disks?: FixtureDisk[];
	protected?: boolean;
	uuid?: string;
}

export interface MadeBackup {
	path: string;
	manifest: Manifest;
}

/** Runs a shell command line on the lab host as root; throws with stderr when it fails. */
export function onHost(command: string, input?: string): string {
	const result = sshExec('root', command, { input, timeoutMs: 120_000 });
	if (result.code !== 0) throw new Error(`lab host command failed (${result.code}): ${command.slice(0, 300)}\n${result.stderr}`);
	return result.stdout;
}

/** A fresh destination; `name` (may be hostile) is the last path component, inside a random folder. */
export function makeDest(name = 'dest'): string {
	const dest = `${labDir()}/test-dest/${randomBytes(6).toString('hex')}/${name}`;
	onHost(`mkdir -p -- ${shq(dest)}`);
	return dest;
}

/** Removes the random folder a destination from makeDest lives in. */
export function removeDest(dest: string): void {
	const root = `${labDir()}/test-dest/`;
	const random = dest.slice(root.length).split('/')[0];
	if (!dest.startsWith(root) || !/^[0-9a-f]{12}$/.test(random)) throw new Error(`not a test destination: ${dest}`);
	onHost(`rm -rf -- ${shq(root + random)}`);
}

const DEFAULT_DISKS: FixtureDisk[] = [{ target: 'vda', pattern: 0x11 }];

/** Makes the backups in order (parents before their incrementals), in two SSH commands. */
export function makeBackups(dest: string, specs: readonly FixtureBackup[]): MadeBackup[] {
	const images = specs.flatMap((spec) => (spec.disks ?? DEFAULT_DISKS).map((disk, index) => ({ spec, disk, index })));
	const create = images.map(({ spec, disk, index }) => {
		const dir = `${dest}/${vmDirName(spec.vm)}/${spec.id}`;
		const file = `${disk.target}.qcow2`;
		const size = `${disk.virtualMiB ?? 4}M`;
		const backing = spec.kind === 'incremental' ? `-b ${shq(`../${spec.parent}/${file}`)} -F qcow2 ` : '';
		const offset = spec.kind === 'incremental' ? `${(disk.dataKiB ?? 64) * (index + 1)}k` : '0';
		return [
			`mkdir -p -- ${shq(dir)} && cd -- ${shq(dir)}`,
			`qemu-img create -q -f qcow2 ${backing}${file} ${size}`,
			`qemu-io -c ${shq(`write -P ${disk.pattern} ${offset} ${disk.dataKiB ?? 64}k`)} ${file} >/dev/null`,
			`echo "$(sha256sum < ${file} | cut -c1-64) $(stat -c %s ${file})"`,
		].join(' && ');
	});
	const lines = onHost(`set -e\n${create.join('\n')}`).trim().split('\n');
	let next = 0;
	const made = specs.map((spec): MadeBackup => {
		const started = backupTime(spec.id);
		const manifest: Manifest = {
			format: MANIFEST_FORMAT,
			version: MANIFEST_VERSION,
			vm: { name: spec.vm, uuid: spec.uuid ?? '6f1c7d0e-0000-4000-8000-000000000001' },
			host: 'lvb-lab',
			id: spec.id,
			startedAt: started.toISOString(),
			finishedAt: new Date(started.getTime() + 60_000).toISOString(),
			kind: spec.kind ?? 'full',
			...(spec.kind === 'incremental' ? { parent: spec.parent } : {}),
			method: 'offline-convert',
			consistency: 'offline',
			disks: (spec.disks ?? DEFAULT_DISKS).map((disk) => {
				const [sha256, bytes] = lines[next++].split(' ');
				return {
					target: disk.target,
					source: `/var/lib/libvirt/images/${disk.target}.qcow2`,
					sourceFormat: 'qcow2',
					file: `${disk.target}.qcow2`,
					format: 'qcow2',
					virtualBytes: (disk.virtualMiB ?? 4) * 1024 * 1024,
					bytes: Number(bytes),
					sha256,
					...(spec.kind === 'incremental' ? { backingFile: `../${spec.parent}/${disk.target}.qcow2` } : {}),
					compressed: false,
				};
			}),
			warnings: [],
		};
		return { path: `${dest}/${vmDirName(spec.vm)}/${spec.id}`, manifest };
	});
	const write = made.flatMap(({ path, manifest }, index) => [
		`printf '%s' ${shq(`<domain type='kvm'><name>${manifest.vm.name.replace(/[<&>'"]/g, '')}</name></domain>\n`)} > ${shq(`${path}/domain.xml`)}`,
		`printf '%s' ${shq(serializeManifest(manifest))} > ${shq(`${path}/${MANIFEST_FILE}`)}`,
		...(specs[index].protected ? [`touch -- ${shq(`${path}/${PROTECTED_MARKER}`)}`] : []),
	]);
	onHost(`set -e\n${write.join('\n')}`);
	return made;
}

export function makeBackup(dest: string, spec: FixtureBackup): MadeBackup {
	return makeBackups(dest, [spec])[0];
}

/** An unfinished backup folder as our writer leaves it when interrupted (marker + partial image). */
export function makeUnfinished(dest: string, vm: string, id: string, extraFiles: string[] = []): string {
	const dir = `${dest}/${vmDirName(vm)}/${id}`;
	onHost(
		[
			`mkdir -p -- ${shq(dir)}`,
			`touch -- ${shq(`${dir}/${INCOMPLETE_MARKER}`)}`,
			`head -c 65536 /dev/zero > ${shq(`${dir}/vda.qcow2.partial`)}`,
			...extraFiles.map((file) => `echo foreign > ${shq(`${dir}/${file}`)}`),
		].join(' && '),
	);
	return dir;
}

/** Sets a path's (and, for a folder, everything inside it) mtime to a date long ago. */
export function ageFiles(path: string, date = '2020-01-01 00:00:00'): void {
	onHost(`find ${shq(path)} -exec touch -h -d ${shq(date)} {} +`);
}

/** Every path under `root` (relative, sorted), to prove what a run changed and what it left alone. */
export function tree(root: string): string[] {
	return onHost(`cd -- ${shq(root)} && find . -mindepth 1 -print0 | sort -z | tr '\\0' '\\n'`)
		.split('\n')
		.filter(Boolean);
}

export function exists(path: string): boolean {
	return sshExec('root', `test -e ${shq(path)} || test -L ${shq(path)}`).code === 0;
}

/** Overwrites one byte of a file on the host with its bitwise complement. */
export function flipByte(path: string, offset: number): void {
	onHost(
		`b=$(dd if=${shq(path)} bs=1 skip=${offset} count=1 2>/dev/null | od -An -tu1 | tr -d ' ') && printf "$(printf '\\\\%03o' $((255 - b)))" | dd of=${shq(path)} bs=1 seek=${offset} count=1 conv=notrunc 2>/dev/null`,
	);
}

export function truncateFile(path: string, bytes: number): void {
	onHost(`truncate -s ${bytes} -- ${shq(path)}`);
}

export function readHostFile(path: string): string {
	return onHost(`cat -- ${shq(path)}`);
}
