/**
 * Discovery benchmark on the lab's test-driver fleet (500 domains x 2 disks), run by hand:
 *   npm run lab:up && npm run bench:discover [-- --runs 3]
 * Compares, in the same run and over the same SSH connection, our batched discovery (a constant
 * number of SSH execs) with the per-VM method the old scripts used (one exec per VM for its disk
 * list, one per disk for its size). Prints a table with the ratio; copy it into the README.
 */
import { discoverVms } from '../lib/libvirt';
import { withSsh, type SshConnection } from '../lib/ssh';
import { loadLab } from '../test/support/lab';
import { labTarget } from '../test/support/targets';

const runs = Number(process.argv[process.argv.indexOf('--runs') + 1] || 3);

/** The old way: list, then one exec per VM (domblklist) and one per disk (qemu-img info). */
async function perVmBaseline(ssh: SshConnection, uri: string): Promise<number> {
	const { stdout } = await ssh.run(['virsh', '-c', uri, 'list', '--all', '--uuid']);
	let disks = 0;
	for (const uuid of stdout.split('\n').filter(Boolean)) {
		const list = await ssh.run(['virsh', '-c', uri, 'domblklist', uuid, '--details']);
		const paths = list.stdout
			.split('\n')
			.slice(2)
			.map((line) => line.trim().split(/\s+/).slice(3).join(' '))
			.filter((path) => path.startsWith('/'));
		for (const path of paths) {
			await ssh.run(['qemu-img', 'info', '--output=json', '-U', '--backing-chain', path]);
			disks += 1;
		}
	}
	return disks;
}

function median(values: number[]): number {
	const sorted = [...values].sort((a, b) => a - b);
	return sorted[Math.floor(sorted.length / 2)];
}

async function main(): Promise<void> {
	const lab = loadLab();
	await withSsh(labTarget(), async (ssh) => {
		const ours: number[] = [];
		let execs = 0;
		let vms = 0;
		for (let run = 0; run < runs; run++) {
			const started = performance.now();
			const result = await discoverVms(ssh, lab.fleetUri);
			ours.push((performance.now() - started) / 1000);
			execs = result.sshExecs;
			vms = result.vms.length;
		}
		const execsBefore = ssh.execCount;
		const started = performance.now();
		const disks = await perVmBaseline(ssh, lab.fleetUri);
		const baseline = (performance.now() - started) / 1000;
		const baselineExecs = ssh.execCount - execsBefore;

		const rows = [
			['method', 'VMs', 'disks', 'SSH execs', 'seconds', 'vs baseline'],
			['discoverVms (batched, median of ' + runs + ')', vms, vms * 2, execs, median(ours).toFixed(2), `${(baseline / median(ours)).toFixed(1)}x faster`],
			['per-VM execs (old method)', vms, disks, baselineExecs, baseline.toFixed(2), '1.0x'],
		];
		console.log(rows.map((row) => `| ${row.join(' | ')} |`).join('\n'));
	});
}

main().catch((error: unknown) => {
	console.error(error);
	process.exit(1);
});
