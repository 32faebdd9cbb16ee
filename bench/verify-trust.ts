/**
 * Verify of an incremental: trusting parents verified earlier vs Re-Hash Whole Chain. Run by hand
 * as root on the lab machine (lab up):
 *   npx tsx bench/verify-trust.ts [--runs 5] [--disk-mib 256] [--data-mib 192] [--change-mib 16]
 *
 * A throwaway running VM (createTestVm) with one qcow2 disk of --disk-mib MiB, --data-mib MiB
 * written before it starts; a full backup and three incrementals, each after a --change-mib MiB
 * guest write. The newest incremental is verified once (untimed: every member hashed, a valid
 * record written next to each), then timed --runs times each way, alternating, every run with a
 * fresh verifier over one open SSH connection (nothing cached between runs but the host's page
 * cache, warm for both). Prints wall time (median, min, max) and the bytes of the images each way
 * reads; removes the VM and its destination at the end.
 */
import { backupVm, type BackupResult } from '../lib/backup';
import { BackupVerifier } from '../lib/catalog';
import { SshConnection } from '../lib/ssh';
import { quoteArg as q } from '../lib/shell';
import { loadLab } from '../test/support/lab';
import { labTarget } from '../test/support/targets';
import { createTestVm, host, testDestination } from '../test/support/testVm';

const argv = process.argv.slice(2);
const option = (name: string, fallback: number): number => {
	const value = argv.includes(name) ? Number(argv[argv.indexOf(name) + 1]) : fallback;
	if (!Number.isInteger(value) || value < 1) throw new Error(`${name} must be a positive integer`);
	return value;
};
const RUNS = option('--runs', 5);
const DISK_MIB = option('--disk-mib', 256);
const DATA_MIB = option('--data-mib', 192);
const CHANGE_MIB = option('--change-mib', 16);
if (DATA_MIB + CHANGE_MIB > DISK_MIB) throw new Error('--data-mib + --change-mib must fit in --disk-mib');

const lab = loadLab();
const MiB = 1024 * 1024;

function stats(values: number[]): string {
	const sorted = [...values].sort((a, b) => a - b);
	const mid = Math.floor(sorted.length / 2);
	const median = sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
	return `median ${median.toFixed(2)} s (min ${sorted[0].toFixed(2)}, max ${sorted[sorted.length - 1].toFixed(2)})`;
}

async function main(): Promise<void> {
	const vm = createTestVm('bench-vtrust', [{ target: 'vda', format: 'qcow2', virtualMiB: DISK_MIB, writes: [{ pattern: 0x5a, offsetMiB: 0, lengthMiB: DATA_MIB }] }]);
	const destination = testDestination('bench-vtrust');
	const ssh = await SshConnection.connect(labTarget());
	try {
		const chain: BackupResult[] = [];
		for (let night = 0; night < 4; night++) {
			if (night > 0) vm.guestWrite('vda', 0x60 + night, (night * CHANGE_MIB) % (DISK_MIB - CHANGE_MIB), CHANGE_MIB);
			chain.push(await backupVm(ssh, { uri: lab.systemUri, vm: vm.name, dest: destination.dest, mode: 'auto', compression: 'none', quiesce: 'off', holder: 'bench/verify-trust.ts', host: 'lab' }));
		}
		if (chain.map((backup) => backup.kind).join() !== 'full,incremental,incremental,incremental') throw new Error(`unexpected chain: ${chain.map((backup) => backup.kind).join()}`);
		const newest = chain[3];
		const bytes = chain.map((backup) => Number(host(`stat -c %s -- ${q(`${backup.path}/${backup.disks[0].file}`)}`).trim()));
		const first = await new BackupVerifier(ssh).verify(newest.path);
		if (!first.valid) throw new Error(`the chain does not verify: ${first.problems.join('; ')}`);

		const times = { trust: [] as number[], rehash: [] as number[] };
		for (let run = 0; run < RUNS; run++) {
			const order: Array<keyof typeof times> = run % 2 === 0 ? ['trust', 'rehash'] : ['rehash', 'trust'];
			for (const way of order) {
				const started = performance.now();
				const result = await new BackupVerifier(ssh).verify(newest.path, { rehashChain: way === 'rehash' });
				times[way].push((performance.now() - started) / 1000);
				const trusted = result.parents.filter((parent) => parent.trusted).length;
				if (!result.valid || trusted !== (way === 'trust' ? 3 : 0)) throw new Error(`${way}: valid ${result.valid}, ${trusted} parents trusted`);
			}
		}
		const mib = (n: number) => `${(n / MiB).toFixed(1)} MiB`;
		console.log(`Chain: full + 3 incrementals of a running VM (${DISK_MIB} MiB qcow2, ${DATA_MIB} MiB data, ${CHANGE_MIB} MiB changed per night); image sizes ${bytes.map(mib).join(', ')}`);
		console.log(`Verify the newest incremental, ${RUNS} runs each, warm page cache:`);
		console.log(`  trust parents verified earlier (default): ${stats(times.trust)}; reads ${mib(bytes[3])} (its own image)`);
		console.log(`  Re-Hash Whole Chain:                      ${stats(times.rehash)}; reads ${mib(bytes.reduce((sum, n) => sum + n, 0))} (all 4 images)`);
	} finally {
		ssh.close();
		vm.destroy();
		destination.cleanup();
	}
}

main().catch((error: unknown) => {
	console.error(error);
	process.exitCode = 1;
});
