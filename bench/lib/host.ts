/**
 * Bench helpers shared by the lab benchmarks (bench/backup.ts, bench/consolidate.ts): remote
 * scripts as one exec, the untimed settle between runs, OS-less bench VMs with a disk of random
 * data, guest writes through the QEMU monitor, and the statistics and context every report prints.
 */
import { spawnSync } from 'child_process';
import * as os from 'os';
import * as path from 'path';
import { scriptArgv } from '../../lib/shell';
import type { SshConnection } from '../../lib/ssh';
import { shq, sshExec } from '../../test/support/lab';

export const MiB = 1024 * 1024;
/** The bench disk's virtual size. */
export const VIRTUAL_MIB = 4096;
/** [offset MiB, length MiB] of random data: 1331 MiB in 7 regions of a 4 GiB disk. */
export const REGIONS: Array<[number, number]> = [
	[0, 64],
	[100, 256],
	[700, 320],
	[1500, 128],
	[2048, 300],
	[2900, 200],
	[3600, 63],
];
export const DATA_BYTES = REGIONS.reduce((sum, [, len]) => sum + len * MiB, 0);
/** The bench VMs' only disk, as QEMU's monitor names it. */
export const DEVICE = '/machine/peripheral/virtio-disk0/virtio-backend';
/** Above this, SSH execs cost more than this machine's sshd should (see the report's SSH line). */
export const SLOW_EXEC_MS = 30;

/** One remote script as one exec; returns stdout. */
export async function sh(ssh: SshConnection, script: string, args: string[] = [], label = 'bench'): Promise<string> {
	return (await ssh.run(scriptArgv(script, `lvb-bench-${label}`, args), { label })).stdout;
}

export function median(values: number[]): number {
	const sorted = [...values].sort((a, b) => a - b);
	const mid = Math.floor(sorted.length / 2);
	return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

export function rotate<T>(items: T[], by: number): T[] {
	const k = ((by % items.length) + items.length) % items.length;
	return [...items.slice(k), ...items.slice(0, k)];
}

/** Untimed, after every run: size of `measure`, remove `remove`, flush dirty pages for everyone. */
export async function settle(ssh: SshConnection, measure: string | undefined, remove: string[]): Promise<number> {
	const out = await sh(ssh, 'm=$1; shift\n[ -n "$m" ] && du -sb -- "$m" | cut -f1\nrm -rf -- "$@"\nsync', [measure ?? '', ...remove], 'settle');
	return Number(out.trim() || 0);
}

export function benchDomainXml(domainType: string, name: string, disk: string, description: string): string {
	return [
		`<domain type='${domainType}'>`,
		`  <name>${name}</name>`,
		`  <description>${description}</description>`,
		`  <memory unit='MiB'>96</memory>`,
		`  <vcpu>1</vcpu>`,
		`  <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>`,
		`  <features><acpi/></features>`,
		`  <on_poweroff>destroy</on_poweroff><on_reboot>restart</on_reboot><on_crash>destroy</on_crash>`,
		`  <devices>`,
		`    <emulator>/usr/bin/qemu-system-x86_64</emulator>`,
		`    <disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='${disk}'/><target dev='vda' bus='virtio'/></disk>`,
		`    <serial type='pty'/>`,
		`    <console type='pty'/>`,
		`    <memballoon model='none'/>`,
		`  </devices>`,
		`</domain>`,
		'',
	].join('\n');
}

export interface BenchVm {
	name: string;
	disk: string;
}

/**
 * Defines `vms` (shut off), each with its own qcow2 copy of one 4 GiB disk holding REGIONS of
 * /dev/urandom data. Returns the report's line about the disk.
 */
export async function createBenchVms(
	ssh: SshConnection,
	options: { uri: string; domainType: string; dir: string; vms: BenchVm[]; description: string },
): Promise<string> {
	const started = performance.now();
	const raw = `${options.dir}/data.raw`;
	await sh(
		ssh,
		`set -e
dir=$1 raw=$2 size=$3; shift 3
mkdir -p -- "$dir"
truncate -s "$size" -- "$raw"
while [ $# -gt 0 ]; do
  head -c "$(($2 * 1048576))" /dev/urandom | dd of="$raw" bs=1M seek="$1" conv=notrunc iflag=fullblock status=none
  shift 2
done`,
		[options.dir, raw, `${VIRTUAL_MIB}M`, ...REGIONS.flatMap(([offset, length]) => [String(offset), String(length)])],
		'make-data',
	);
	for (const vm of options.vms) {
		await sh(
			ssh,
			`set -e
raw=$1 disk=$2 xmlfile=$3 xml=$4 uri=$5
qemu-img convert -f raw -O qcow2 "$raw" "$disk"
printf '%s' "$xml" >"$xmlfile"
virsh -q -c "$uri" define "$xmlfile" >/dev/null`,
			[raw, vm.disk, `${options.dir}/${vm.name}.xml`, benchDomainXml(options.domainType, vm.name, vm.disk, options.description), options.uri],
			'define',
		);
	}
	await sh(ssh, 'rm -f -- "$1"; sync', [raw], 'rm-raw');
	const info = JSON.parse(await sh(ssh, 'qemu-img info -U --output=json -- "$1"', [options.vms[0].disk], 'info')) as { 'virtual-size': number; 'actual-size': number };
	return (
		`Bench disk: qcow2, ${(info['virtual-size'] / 2 ** 30).toFixed(2)} GiB virtual, ${(info['actual-size'] / 2 ** 30).toFixed(2)} GiB allocated ` +
		`(${DATA_BYTES / MiB} MiB from /dev/urandom in ${REGIONS.length} regions: ${REGIONS.map(([o, l]) => `${l} MiB @ ${o} MiB`).join(', ')}), ` +
		`one copy per bench VM; made in ${((performance.now() - started) / 1000).toFixed(1)} s (untimed).`
	);
}

/** Destroys and undefines `names` and removes `dir`; synchronous (system ssh), so it also works from a signal handler. Idempotent. */
export function removeBenchVms(uri: string, names: string[], dir: string): void {
	const q = shq;
	const script = names
		.map((name) => `virsh -q -c ${q(uri)} destroy ${q(name)} >/dev/null 2>&1; virsh -q -c ${q(uri)} undefine ${q(name)} --checkpoints-metadata >/dev/null 2>&1`)
		.concat([`rm -rf -- ${q(dir)}`])
		.join('\n');
	const result = sshExec('root', script, { timeoutMs: 120_000 });
	if (result.code !== 0) console.error(`teardown: exit ${result.code}: ${result.stderr}`);
}

/** A `qemu-io` command run by the VM's QEMU on its disk, through the monitor (a guest write without a guest OS). */
export async function qemuIo(ssh: SshConnection, uri: string, vm: string, command: string): Promise<void> {
	const out = await sh(ssh, 'virsh -q -c "$1" qemu-monitor-command "$2" --hmp "$3"', [uri, vm, `qemu-io -d ${DEVICE} "${command}"`], 'qemu-io');
	if (/error|not found|invalid/i.test(out)) throw new Error(`qemu-io "${command}" in ${vm} failed: ${out}`);
}

/** Median cost of one exec on `ssh`, and of a new system-ssh connection + command, in ms. */
export async function sshCosts(ssh: SshConnection): Promise<{ execMs: number; connectMs: number }> {
	const connect: number[] = [];
	for (let i = 0; i < 3; i++) {
		const t = performance.now();
		if (sshExec('root', 'true').code !== 0) throw new Error('cannot reach the lab sshd: run bash scripts/lab/up.sh');
		connect.push(performance.now() - t);
	}
	const exec: number[] = [];
	for (let i = 0; i < 30; i++) {
		const t = performance.now();
		await ssh.run(['true']);
		exec.push(performance.now() - t);
	}
	return { execMs: median(exec), connectMs: median(connect) };
}

export function sshLine(costs: { execMs: number; connectMs: number }): string {
	return (
		`SSH: ours runs over one ssh2 connection to the lab sshd (opened before timing); each by-hand method is ONE exec on that same connection. ` +
		`Per-exec cost, median of 30 \`ssh.run(['true'])\`: **${costs.execMs.toFixed(1)} ms**; a new system-ssh connection + command: ${costs.connectMs.toFixed(0)} ms (paid by no method here).` +
		(costs.execMs > SLOW_EXEC_MS
			? ` WARNING: over ${SLOW_EXEC_MS} ms per exec; known causes: an sshd whose sessions run a heavy ~/.bashrc (the lab sshd sets SHLVL=1 against that) and an ssh2 socket without TCP_NODELAY.`
			: '')
	);
}

/** 1/5/15-minute load averages, as the reports print them. */
export function loadAverage(): string {
	return os.loadavg().map((l) => l.toFixed(1)).join(' / ');
}

/** The engine's code as loaded: lib/'s tree in HEAD plus any uncommitted changes to it. */
export function engineState(): { key: string; text: string } {
	const git = (args: string[]) => spawnSync('git', args, { cwd: path.join(__dirname, '..', '..'), encoding: 'utf8' }).stdout.trim();
	const dirty = git(['status', '--porcelain', '--', 'lib']);
	return {
		key: `${git(['rev-parse', 'HEAD:lib'])} ${git(['diff', 'HEAD', '--', 'lib'])}`,
		text: `commit ${git(['rev-parse', '--short', 'HEAD'])}${dirty ? ` with uncommitted changes in lib/ (${dirty.split('\n').length} files)` : ' (lib/ clean)'}`,
	};
}

/** Runs a bench's main; Ctrl-C or SIGTERM runs `teardown` (removing its VMs) first, a failure exits 1. */
export function runBench(main: () => Promise<void>, teardown: () => void): void {
	for (const signal of ['SIGINT', 'SIGTERM'] as const) {
		process.once(signal, () => {
			console.error(`${signal}: removing the bench VM(s)...`);
			teardown();
			process.exit(130);
		});
	}
	main().catch((error: unknown) => {
		console.error(error);
		process.exit(1);
	});
}
