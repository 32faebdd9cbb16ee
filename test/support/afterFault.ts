/**
 * What every fault test checks once the fault is over, measured on the lab host: the counts the
 * safety ledger records (test/faults/ledger.ts), each with the finding that made it non-zero.
 */
import { CHECKPOINT_PREFIX } from '../../lib/backup';
import { BackupVerifier, listCatalog } from '../../lib/catalog';
import { quoteArg as q } from '../../lib/shell';
import { withSsh } from '../../lib/ssh';
import { INCOMPLETE_MARKER } from '../../lib/store/manifest';
import { vmBackupDir } from '../../lib/store';
import { labTarget } from './targets';
import { host, type TestVm } from './testVm';

export interface ForeignFile {
	path: string;
	content: string;
}

/** A file we did not write, planted where a careless cleanup would take it. */
export function plantForeignFile(path: string): ForeignFile {
	const content = `not ours: planted by the faults suite at ${new Date().toISOString()}\n`;
	host(`mkdir -p ${q(path.slice(0, path.lastIndexOf('/')))} && printf '%s' ${q(content)} > ${q(path)}`);
	return { path, content };
}

export interface StoreExpectations {
	dest: string;
	vms: TestVm[];
	/** Backup folders that were complete and valid before the fault (or were made by a run that succeeded). */
	good: string[];
	/** Ids of backups the fault interrupted: never to be listed, nor used as a parent. */
	interrupted: string[];
	foreign: ForeignFile[];
	/** Parents the runs after the fault chose (undefined for a full). */
	parents?: Array<string | undefined>;
}

export interface FaultCounts {
	dataLost: number;
	vmsLeftUnclean: number;
	partialBackupsListed: number;
	foreignFilesRemoved: number;
	/** One line per finding behind a non-zero count. */
	findings: string[];
}

/** A VM and the disk files it must be on (a test VM, or a recovered one). */
export type CheckedVm = Pick<TestVm, 'name' | 'dir'> & { disks: { target: string; path: string }[] };

/**
 * Whatever this VM was left with that a backup tool must never leave, one line each (empty: clean):
 * a disk not on its own file, paused (or, with `running`, not running), a job or block job, a
 * checkpoint of ours that no complete backup owns (`owned`), overlay files beside its disks.
 */
export function vmLeftovers(vm: CheckedVm, owned: ReadonlySet<string>, options: { running?: boolean } = {}): string[] {
	const found: string[] = [];
	const name = q(vm.name);
	const sources = host(`virsh -q domblklist ${name}`)
		.split('\n')
		.map((line) => line.trim().split(/\s+/))
		.filter((words) => words.length >= 2);
	for (const disk of vm.disks) {
		const source = sources.find(([target]) => target === disk.target)?.[1];
		if (source !== disk.path) found.push(`${vm.name} ${disk.target} is on ${source ?? 'nothing'}, not ${disk.path}`);
	}
	const [state, reason] = host(`LC_ALL=C virsh -q domstate --reason ${name}`).trim().split(/\s*\(|\)/);
	if (state === 'paused') found.push(`${vm.name} is paused (${reason})`);
	else if (options.running && state !== 'running') found.push(`${vm.name}: state is "${state}", not running`);
	if (state === 'running') {
		const job = host(`LC_ALL=C virsh -q domjobinfo ${name}`).trim();
		if (!/^Job type:\s+None/.test(job)) found.push(`${vm.name} has a job: ${job.split('\n')[0]}`);
		for (const disk of vm.disks) {
			const block = host(`LC_ALL=C virsh -q blockjob ${name} ${q(disk.target)} --info 2>&1 || true`).trim();
			if (block !== '' && !/No current block job/.test(block)) found.push(`${vm.name} ${disk.target} has a block job: ${block}`);
		}
	}
	const stray = host(`virsh -q checkpoint-list --domain ${name} --name`)
		.split('\n')
		.map((line) => line.trim())
		.filter((checkpoint) => checkpoint.startsWith(CHECKPOINT_PREFIX) && !owned.has(checkpoint));
	if (stray.length > 0) found.push(`${vm.name} has checkpoints no complete backup owns: ${stray.join(', ')}`);
	const overlays = host(`find ${q(vm.dir)} -name '.lvb-overlay-*' -print`).trim();
	if (overlays) found.push(`overlays left beside ${vm.name}'s disks: ${overlays}`);
	return found;
}

/** Whether the host still runs anything of ours for this destination (our remote scripts name it in their arguments). */
export function hostWorkFor(dest: string): string {
	// "[/]" keeps the pattern from matching the shell that runs pgrep.
	return host(`pgrep -a -f -- ${q(`[/]${dest.slice(1)}`)} || true`).trim();
}

/** Waits (bounded) until nothing of ours runs on the host for `dest`; the error says what was still running. */
export async function waitForHostWorkToEnd(dest: string, timeoutMs: number, what: string): Promise<number> {
	const started = Date.now();
	for (;;) {
		const left = hostWorkFor(dest);
		if (left === '') return Date.now() - started;
		if (Date.now() - started > timeoutMs) throw new Error(`waited ${timeoutMs / 1000} s for ${what}; still running on the host:\n${left}`);
		await new Promise((resolve) => setTimeout(resolve, 250));
	}
}

/** A backup folder that holds a manifest and no trace of an unfinished write. */
function completeOnHost(path: string): boolean {
	return host(`cd ${q(path)} 2>/dev/null && test -f manifest.json && ! test -e ${q(INCOMPLETE_MARKER)} && ! ls -A | grep -q '[.]partial$' && echo complete || true`).trim() === 'complete';
}

/** Measures the counts after a fault: List (listCatalog), re-verification of the good backups, the VMs, the planted files. */
export async function measureAfterFault(expect: StoreExpectations): Promise<FaultCounts> {
	const findings: string[] = [];
	return await withSsh(labTarget(), async (ssh) => {
		const catalog = await listCatalog(ssh, expect.dest);
		const interrupted = new Set(expect.interrupted);
		let partialBackupsListed = 0;
		for (const backup of catalog.backups) {
			if (interrupted.has(backup.id) || !completeOnHost(backup.path)) {
				partialBackupsListed++;
				findings.push(`List shows ${backup.path}, which is not a complete backup`);
			}
		}
		for (const parent of expect.parents ?? []) {
			if (parent !== undefined && interrupted.has(parent)) {
				partialBackupsListed++;
				findings.push(`a run after the fault used the interrupted ${parent} as its parent`);
			}
		}
		let dataLost = 0;
		const verifier = new BackupVerifier(ssh);
		for (const path of expect.good) {
			try {
				const verification = await verifier.verify(path);
				if (verification.status !== 'valid') {
					dataLost++;
					findings.push(`good backup ${path} is now ${verification.status}: ${verification.problems.join('; ')}`);
				}
			} catch (error) {
				dataLost++;
				findings.push(`good backup ${path} is gone: ${(error as Error).message}`);
			}
		}
		const owned = new Set(catalog.backups.map((backup) => backup.manifest.checkpoint).filter((name): name is string => typeof name === 'string'));
		const unclean = expect.vms.map((vm) => vmLeftovers(vm, owned, { running: true })).filter((left) => left.length > 0);
		for (const left of unclean) findings.push(...left);
		const running = hostWorkFor(expect.dest);
		if (running) findings.push(`still running on the host for ${expect.dest}: ${running}`);
		let foreignFilesRemoved = 0;
		for (const file of expect.foreign) {
			const now = host(`cat ${q(file.path)} 2>/dev/null || true`);
			if (now !== file.content) {
				foreignFilesRemoved++;
				findings.push(`foreign file ${file.path} was removed or changed`);
			}
		}
		return { dataLost, vmsLeftUnclean: unclean.length + (running ? 1 : 0), partialBackupsListed, foreignFilesRemoved, findings };
	});
}

/**
 * The backup folder a running job writes, once its `.partial` image under `dest` is seen growing on
 * the host (mid-copy). `run` is the request that started it: an answer before that is the reason it
 * never came.
 */
export async function growingPartial(dest: string, vm: Pick<TestVm, 'name'>, run: Promise<{ status: number; ms: number; text: string }>, timeoutMs = 90_000): Promise<{ id: string; dir: string }> {
	const vmDir = vmBackupDir(dest, vm.name);
	const deadline = Date.now() + timeoutMs;
	let answered: { status: number; ms: number; text: string } | undefined;
	void run.then((answer) => (answered = answer));
	let last = '';
	for (;;) {
		if (answered) throw new Error(`the backup run answered before its copy was seen (HTTP ${answered.status} after ${answered.ms} ms): ${answered.text.slice(0, 1000)}`);
		const now = host(`find ${q(vmDir)} -mindepth 2 -maxdepth 2 -name '*.partial' -printf '%s %h\\n' 2>/dev/null || true`).trim().split('\n')[0];
		const [size, dir] = [Number(now.split(' ')[0]), now.slice(now.indexOf(' ') + 1)];
		const [lastSize, lastDir] = [Number(last.split(' ')[0]), last.slice(last.indexOf(' ') + 1)];
		if (now && dir === lastDir && size > lastSize && lastSize > 0) return { id: dir.slice(dir.lastIndexOf('/') + 1), dir };
		if (Date.now() > deadline) throw new Error(`waited ${timeoutMs / 1000} s for a growing .partial image under ${vmDir} (the backup never got to copying); last seen: "${now}"`);
		last = now;
		await new Promise((resolve) => setTimeout(resolve, 200));
	}
}
