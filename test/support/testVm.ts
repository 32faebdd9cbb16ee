/**
 * Throwaway real VMs in the lab's libvirtd (qemu:///system) for tests that change VM state or
 * create checkpoints, so they never disturb the lab's own VMs or each other. No OS: the "guest"
 * writes through the QEMU monitor (qemu-io), as LAB.md describes.
 */
import { quoteArg } from '../../lib/shell';
import { loadLab, sshExec } from './lab';

export interface TestDiskSpec {
	target: string;
	format: 'qcow2' | 'raw';
	virtualMiB: number;
	/** Regions written before the VM starts: `write -P pattern offset length` (MiB units). */
	writes?: { pattern: number; offsetMiB: number; lengthMiB: number }[];
}

export interface TestVm {
	name: string;
	dir: string;
	disks: (TestDiskSpec & { path: string })[];
	/** Runs a shell command on the lab host as root; throws on failure. */
	host(command: string): string;
	/** Guest write through the QEMU monitor into a running VM's disk. */
	guestWrite(target: string, pattern: number, offsetMiB: number, lengthMiB: number): void;
	/** The host command line that does that write (to chain it with others in one SSH call). */
	guestWriteCommand(target: string, pattern: number, offsetMiB: number, lengthMiB: number): string;
	destroy(): void;
}

export function host(command: string): string {
	const result = sshExec('root', command);
	if (result.code !== 0) throw new Error(`lab host command failed (${result.code}): ${command}\n${result.stderr}`);
	return result.stdout;
}

export function createTestVm(purpose: string, disks: TestDiskSpec[], state: 'running' | 'shutoff' | 'paused' = 'running'): TestVm {
	const lab = loadLab();
	const name = `lvb-t-${purpose}-${process.pid}`;
	const dir = `${lab.labDir}/test-vms/${name}`;
	const q = quoteArg;
	host(`virsh -q destroy ${q(name)} >/dev/null 2>&1; virsh -q undefine ${q(name)} --checkpoints-metadata >/dev/null 2>&1; rm -rf ${q(dir)}; mkdir -p ${q(dir)}`);
	const withPaths = disks.map((disk) => ({ ...disk, path: `${dir}/${disk.target}.${disk.format}` }));
	for (const disk of withPaths) {
		const writes = (disk.writes ?? []).map((w) => `-c ${q(`write -P ${w.pattern} ${w.offsetMiB}M ${w.lengthMiB}M`)}`).join(' ');
		host(`qemu-img create -q -f ${disk.format} ${q(disk.path)} ${disk.virtualMiB}M${writes ? ` && qemu-io -f ${disk.format} ${writes} ${q(disk.path)} >/dev/null` : ''}`);
	}
	const diskXml = withPaths
		.map((disk) => `<disk type='file' device='disk'><driver name='qemu' type='${disk.format}'/><source file='${disk.path}'/><target dev='${disk.target}' bus='virtio'/></disk>`)
		.join('');
	const xml = `<domain type='${lab.domainType}'><name>${name}</name><memory unit='MiB'>96</memory><vcpu>1</vcpu><os><type arch='x86_64' machine='pc'>hvm</type></os><devices>${diskXml}<serial type='pty'/><memballoon model='none'/></devices></domain>`;
	host(`printf '%s' ${q(xml)} > ${q(`${dir}/domain.xml`)} && virsh -q define ${q(`${dir}/domain.xml`)} >/dev/null`);
	if (state !== 'shutoff') host(`virsh -q start ${q(name)} >/dev/null`);
	if (state === 'paused') host(`virsh -q suspend ${q(name)} >/dev/null`);
	return {
		name,
		dir,
		disks: withPaths,
		host,
		guestWriteCommand(target, pattern, offsetMiB, lengthMiB) {
			const index = withPaths.findIndex((disk) => disk.target === target);
			const device = `/machine/peripheral/virtio-disk${index}/virtio-backend`;
			const command = `qemu-io -d ${device} "write -P ${pattern} ${offsetMiB}M ${lengthMiB}M"`;
			return `virsh -q qemu-monitor-command ${q(name)} --hmp ${q(command)}`;
		},
		guestWrite(target, pattern, offsetMiB, lengthMiB) {
			const out = host(this.guestWriteCommand(target, pattern, offsetMiB, lengthMiB));
			if (/error|not found/i.test(out)) throw new Error(`guest write failed: ${out}`);
		},
		destroy() {
			host(`virsh -q destroy ${q(name)} >/dev/null 2>&1; virsh -q undefine ${q(name)} --checkpoints-metadata >/dev/null 2>&1; rm -rf ${q(dir)}`);
		},
	};
}

/** A fresh backup destination on the lab host, removed by the returned cleanup. */
export function testDestination(purpose: string): { dest: string; cleanup(): void } {
	const dest = `${loadLab().labDir}/test-dest/${purpose}-${process.pid}-${Date.now()}`;
	host(`mkdir -p ${quoteArg(dest)}`);
	return { dest, cleanup: () => host(`rm -rf ${quoteArg(dest)}`) };
}
