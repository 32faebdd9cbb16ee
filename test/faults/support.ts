/**
 * What every engine fault test checks after its fault, measured on the lab host, then recorded in
 * the safety ledger: good backups still verify (whole chain re-hashed), the catalog lists only the
 * backups that completed, the VMs are on their own disks with no job, no pause and no checkpoint
 * that no backup names, and the foreign files planted before the fault are still there, unchanged.
 */
import { spawnSync } from 'child_process';
import { randomBytes } from 'crypto';
import { BackupVerifier, listCatalog } from '../../lib/catalog';
import { quoteArg as q } from '../../lib/shell';
import { withSsh } from '../../lib/ssh';
import { plantForeignFile, vmLeftovers, type CheckedVm, type FaultCounts, type ForeignFile } from '../support/afterFault';
import { loadLab } from '../support/lab';
import { labTarget } from '../support/targets';
import { host } from '../support/testVm';
import { record } from './ledger';

/** A file we did not write, planted where a job works (a destination, a VM folder, a backup folder). */
export function plantForeign(dir: string): ForeignFile {
	return plantForeignFile(`${dir}/foreign-${randomBytes(4).toString('hex')}.txt`);
}

export interface FaultScene {
	/** The ledger name, e.g. "backup (running VM): SSH connection cut mid-copy". */
	name: string;
	dest: string;
	/** VMs the job touched: left on their own disks, no job, not paused, no stray checkpoint. */
	vms: CheckedVm[];
	/** Backup folders that completed (before the fault or after it): listed, and valid. */
	good: string[];
	foreign: ForeignFile[];
	/** The run after the fault succeeded (the test's own expectations on it passed). */
	nextRunSucceeded: boolean;
	/** What the next run threw, if it did (shown when the test fails). */
	nextRunError?: unknown;
	/** Counts the test measured itself before the next run (e.g. a chain checked before a prune finished it). */
	before?: Partial<FaultCounts>;
}

/** Measures the scene after the fault and the next run. */
export async function measure(scene: FaultScene): Promise<FaultCounts> {
	const findings: string[] = [];
	const { backups } = await withSsh(labTarget(), (ssh) => listCatalog(ssh, scene.dest));
	const good = new Set(scene.good);
	const partial = backups.filter((backup) => !good.has(backup.path));
	for (const backup of partial) findings.push(`listed but never completed: ${backup.path}`);

	let dataLost = 0;
	await withSsh(labTarget(), async (ssh) => {
		const verifier = new BackupVerifier(ssh);
		for (const path of scene.good) {
			const listed = backups.some((backup) => backup.path === path);
			const verdict = listed ? await verifier.verify(path, { rehashChain: true }) : undefined;
			if (!verdict || verdict.status !== 'valid') {
				dataLost++;
				findings.push(`good backup ${path} ${verdict ? `is ${verdict.status}: ${verdict.problems.join('; ')}` : 'is no longer listed'}`);
			}
		}
	});

	const checkpointsNamed = new Set(backups.map((backup) => backup.manifest.checkpoint).filter((name): name is string => name !== undefined));
	let vmsLeftUnclean = 0;
	for (const vm of scene.vms) {
		const leftovers = vmLeftovers(vm, checkpointsNamed);
		if (leftovers.length > 0) vmsLeftUnclean++;
		findings.push(...leftovers);
	}

	let foreignFilesRemoved = 0;
	for (const file of scene.foreign) {
		const now = host(`cat ${q(file.path)} 2>/dev/null || true`);
		if (now !== file.content) {
			foreignFilesRemoved++;
			findings.push(`foreign file ${file.path} ${now ? 'changed' : 'removed'}`);
		}
	}
	const before = scene.before ?? {};
	return {
		dataLost: dataLost + (before.dataLost ?? 0),
		vmsLeftUnclean: vmsLeftUnclean + (before.vmsLeftUnclean ?? 0),
		partialBackupsListed: partial.length + (before.partialBackupsListed ?? 0),
		foreignFilesRemoved: foreignFilesRemoved + (before.foreignFilesRemoved ?? 0),
		findings: [...(before.findings ?? []), ...findings],
	};
}

/** Measures, records the ledger entry, and fails the test when anything was lost, left or listed. */
export async function settle(scene: FaultScene): Promise<void> {
	const counts = await measure(scene);
	const clean = counts.dataLost + counts.vmsLeftUnclean + counts.partialBackupsListed + counts.foreignFilesRemoved === 0;
	record({
		kind: 'fault',
		name: scene.name,
		survived: scene.nextRunSucceeded && clean,
		dataLost: counts.dataLost,
		vmsLeftUnclean: counts.vmsLeftUnclean,
		partialBackupsListed: counts.partialBackupsListed,
		foreignFilesRemoved: counts.foreignFilesRemoved,
	});
	const nextRunError = scene.nextRunError instanceof Error ? scene.nextRunError.message : scene.nextRunError;
	expect({ findings: counts.findings, nextRunError, nextRunSucceeded: scene.nextRunSucceeded }).toEqual({ findings: [], nextRunError: undefined, nextRunSucceeded: true });
}

/** Files our writers leave only while they work: temp names, partial copies, incomplete markers. */
export function leftovers(dir: string): string[] {
	return host(`find ${q(dir)} \\( -name '*.partial' -o -name '*.tmp' -o -name '.lvb-incomplete' -o -name '*.lvb-restore.partial' -o -name '.lvb-tmp*' \\) -print 2>/dev/null || true`)
		.split('\n')
		.filter(Boolean);
}

/** A small ext4 filesystem of its own (a loop-mounted sparse image) under the lab's test folder. */
export function loopFilesystem(purpose: string, sizeMiB: number): { dir: string; remove(): void } {
	const base = `${loadLab().labDir}/test-dest/loop-${purpose}-${process.pid}`;
	const image = `${base}.img`;
	host(`mkdir -p ${q(base)} && truncate -s ${sizeMiB}M ${q(image)} && mkfs.ext4 -q -F -m 0 ${q(image)} && mount -o loop ${q(image)} ${q(base)}`);
	return { dir: base, remove: () => host(`umount ${q(base)}; rm -rf ${q(base)} ${q(image)}`) };
}

/** Restarts the lab's libvirtd the way scripts/lab/up.sh runs it (its own pid file; running VMs survive). */
export function restartLibvirtd(): void {
	const script = 'source scripts/lab/common.sh && stop_pidfile libvirtd "$RUN/libvirtd.pid" /usr/sbin/libvirtd && start_libvirt';
	const result = spawnSync('bash', ['-c', script], { cwd: `${__dirname}/../..`, encoding: 'utf8', timeout: 60_000 });
	if (result.status !== 0) throw new Error(`libvirtd restart failed: ${result.stderr}`);
}

/**
 * Puts the lab back as lab.json promises it after a libvirtd restart: libvirtd re-reads its saved
 * domain XML, where a CR in a name comes back as LF (the lab's "lvb-cr\rreturn" became
 * "lvb-cr\nreturn" and failed lab.test and discover.test later in CI). scripts/lab/up.sh redefines
 * such a domain; it is idempotent and takes seconds when the lab is up.
 */
export function repairLab(): void {
	const result = spawnSync('bash', ['scripts/lab/up.sh'], { cwd: `${__dirname}/../..`, encoding: 'utf8', timeout: 300_000 });
	if (result.status !== 0) throw new Error(`scripts/lab/up.sh failed after the libvirtd restart: ${result.stderr.slice(-2000)}`);
}

/** Backups of `paths` that do not verify (whole chain re-hashed), with what was wrong. */
export async function invalidBackups(paths: readonly string[], target = labTarget()): Promise<string[]> {
	return await withSsh(target, async (ssh) => {
		const verifier = new BackupVerifier(ssh);
		const problems: string[] = [];
		for (const path of paths) {
			const verdict = await verifier.verify(path, { rehashChain: true });
			if (verdict.status !== 'valid') problems.push(`${path} is ${verdict.status}: ${verdict.problems.join('; ')}`);
		}
		return problems;
	});
}

/**
 * Resolves once a file named `name` (a find -name pattern) under `dir` is larger than `minBytes`:
 * the job is writing. One remote loop on its own connection, so this process keeps serving the job.
 */
export async function whenWriting(dir: string, name: string, minBytes = 16 << 20, limitMs = 120_000): Promise<void> {
	const script = 'i=0; while [ $i -lt "$4" ]; do [ -n "$(find "$1" -name "$2" -size +"$3"c -print -quit 2>/dev/null)" ] && exit 0; sleep 0.02; i=$((i+1)); done; exit 1';
	const seen = await withSsh(labTarget(), (ssh) => ssh.run(['sh', '-c', script, 'lvb-test-wait', dir, name, String(minBytes), String(Math.ceil(limitMs / 20))], { okExitCodes: [0, 1], timeoutMs: limitMs + 30_000 }));
	if (seen.exitCode !== 0) throw new Error(`no ${name} under ${dir} grew past ${minBytes} bytes within ${limitMs} ms`);
}
