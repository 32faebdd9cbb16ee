#!/usr/bin/env node
// The fleet's VMs and description (see fleet.sh, which starts the daemons first):
//   node scripts/lab/fleet.js up     images, domains and VM states on every fleet host; $LAB/hosts/fleet.json
//   node scripts/lab/fleet.js down   destroy + undefine every fleet domain
// Each host's libvirt is the session daemon of user lvbfleet with that host's XDG directories; this
// script (root) talks to it through the daemon's socket (qemu+unix:///session?socket=...), which
// never autospawns a daemon; the daemon itself does the work as lvbfleet.
// Per host: `app` (running; the one name every host has) and `hN-web` (shut off), each with one
// 64 MiB qcow2 disk holding a per-host byte pattern, so a backup shows which host it came from.
'use strict';

const fs = require('fs');
const path = require('path');
const crypto = require('crypto');
const { stableUuid, writeIfChanged } = require('./util');
const { spawnSync, spawn } = require('child_process');

const LAB = process.env.LVB_LAB_DIR || '/var/lib/lvb-lab';
const FLEET_DIR = path.join(LAB, 'hosts');
const FLEET_FILE = path.join(FLEET_DIR, 'fleet.json');
const USER = 'lvbfleet';
const USER_IDS = (() => {
	const line = fs.readFileSync('/etc/passwd', 'utf8').split('\n').find((l) => l.startsWith(`${USER}:`));
	if (!line) throw new Error(`no user ${USER}`);
	const [, , uid, gid] = line.split(':');
	return { uid: Number(uid), gid: Number(gid) };
})();
const URI = 'qemu:///session';
const DEST = '/srv/lvb-fleet/backups';
const HOSTS = ['h1', 'h2', 'h3'];
const MiB = 1024 * 1024;

const log = (msg) => process.stderr.write(`[lab] fleet: ${msg}\n`);

function run(cmd, args, opts = {}) {
	const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 16 * MiB });
	if (r.error) throw new Error(`${cmd}: ${r.error.message}`);
	if (r.status !== 0 && !opts.allowFail) throw new Error(`${cmd} ${JSON.stringify(args)} exited ${r.status}: ${r.stderr.trim()}`);
	return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

const hostDir = (h) => path.join(FLEET_DIR, h);
const mgmtUri = (h) => `qemu+unix:///session?socket=${hostDir(h)}/run/libvirt/libvirt-sock`;
const virsh = (h, args, opts) => run('virsh', ['-q', '-c', mgmtUri(h), ...args], opts);
function runAsync(cmd, args) {
	return new Promise((resolve, reject) => {
		const p = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
		let out = '';
		let err = '';
		p.stdout.on('data', (b) => (out += b));
		p.stderr.on('data', (b) => (err += b));
		p.on('error', reject);
		p.on('exit', (code) => (code === 0 ? resolve(out) : reject(new Error(`${cmd} ${args.join(' ')} exited ${code}: ${err.trim()}`))));
	});
}
const virshAsync = (h, args) => runAsync('virsh', ['-q', '-c', mgmtUri(h), ...args]);

const uuidFor = (h, name) => stableUuid(`lvb-fleet:${h}:${name}`);

/** The VMs of host h (N = 1..3): byte patterns 0xaN (app) and 0xbN (hN-web). */
function specs(h) {
	const n = Number(h.slice(1));
	const vm = (name, state, pattern) => ({
		name,
		uuid: uuidFor(h, name),
		state,
		disks: [
			{
				target: 'vda',
				type: 'file',
				device: 'disk',
				bus: 'virtio',
				format: 'qcow2',
				path: path.join(hostDir(h), 'images', `${name}-vda.qcow2`),
				virtualSize: 64 * MiB,
				backingChain: [],
				data: [
					{ offset: 0, length: 1 * MiB, pattern },
					{ offset: 16 * MiB, length: 2 * MiB, pattern },
				],
			},
		],
	});
	return [vm('app', 'running', 0xa0 + n), vm(`${h}-web`, 'shut off', 0xb0 + n)];
}

async function ensureImage(disk) {
	if (fs.existsSync(disk.path)) return;
	const tmp = `${path.dirname(disk.path)}/.tmp-${process.pid}-${path.basename(disk.path)}`;
	await runAsync('qemu-img', ['create', '-q', '-f', 'qcow2', tmp, String(disk.virtualSize)]);
	const io = ['-f', 'qcow2'];
	for (const w of disk.data) io.push('-c', `write -q -P 0x${w.pattern.toString(16)} ${w.offset} ${w.length}`);
	await runAsync('qemu-io', [...io, tmp]);
	fs.chownSync(tmp, USER_IDS.uid, USER_IDS.gid);
	fs.renameSync(tmp, disk.path);
}

function domainXml(vm) {
	const disks = vm.disks.map(
		(d) => `    <disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='${d.path}'/><target dev='${d.target}' bus='virtio'/></disk>`,
	);
	return [
		`<domain type='${fs.existsSync('/dev/kvm') ? 'kvm' : 'qemu'}'>`,
		`  <name>${vm.name}</name>`,
		`  <uuid>${vm.uuid}</uuid>`,
		`  <description>n8n-nodes-libvirt-backup fleet lab domain (scripts/lab/fleet.js)</description>`,
		`  <memory unit='MiB'>96</memory>`,
		`  <vcpu>1</vcpu>`,
		`  <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>`,
		`  <features><acpi/></features>`,
		`  <on_poweroff>destroy</on_poweroff><on_reboot>restart</on_reboot><on_crash>destroy</on_crash>`,
		`  <devices>`,
		`    <emulator>/usr/bin/qemu-system-x86_64</emulator>`,
		...disks,
		`    <serial type='pty'/>`,
		`    <console type='pty'/>`,
		`    <memballoon model='none'/>`,
		`  </devices>`,
		`</domain>`,
		'',
	].join('\n');
}

/** Every host's domains by name -> state, one `virsh list --all` per host, all at once (fleet names have no spaces). */
async function hostStates() {
	const lists = await Promise.all(HOSTS.map((h) => virshAsync(h, ['list', '--all'])));
	return Object.fromEntries(
		HOSTS.map((h, i) => [h, new Map(lists[i].split('\n').filter((l) => l.trim()).map((l) => l.trim().split(/\s+/)).map(([, name, ...state]) => [name, state.join(' ')]))]),
	);
}

/** Host h's VMs defined (when new or their XML changed) and in their promised states; hosts run in parallel. */
async function ensureHost(h, st) {
	const domDir = path.join(hostDir(h), 'domains');
	fs.mkdirSync(domDir, { recursive: true });
	for (const vm of specs(h)) {
		const xml = domainXml(vm);
		const xmlFile = path.join(domDir, `${vm.name}.xml`);
		let old = null;
		try {
			old = fs.readFileSync(xmlFile, 'utf8');
		} catch {}
		const state = st.get(vm.name);
		let running = state === 'running';
		if (state === undefined || old !== xml) {
			for (const d of vm.disks) await ensureImage(d);
			if (running) await virshAsync(h, ['destroy', '--domain', vm.uuid]).catch(() => undefined);
			running = false;
			fs.writeFileSync(`${xmlFile}.new`, xml, { mode: 0o644 });
			await virshAsync(h, ['define', '--file', `${xmlFile}.new`]);
			fs.renameSync(`${xmlFile}.new`, xmlFile);
			log(`defined ${vm.name} on lvb-${h}`);
		}
		// Re-establish the promised state (a test may have changed it).
		if (vm.state === 'running' && !running) {
			if (state !== undefined && state !== 'shut off') await virshAsync(h, ['destroy', '--domain', vm.uuid]).catch(() => undefined); // paused, crashed...
			log(`starting ${vm.name} on lvb-${h}`);
			// Tests share the fleet: one may have started it since the list was taken.
			await virshAsync(h, ['start', '--domain', vm.uuid]).catch(async (e) => {
				if ((await virshAsync(h, ['domstate', '--domain', vm.uuid])).trim() !== 'running') throw e;
			});
		} else if (vm.state === 'shut off' && state !== undefined && state !== 'shut off') {
			log(`destroying ${vm.name} on lvb-${h} (promised: shut off)`);
			await virshAsync(h, ['destroy', '--domain', vm.uuid]);
		}
	}
}

function hostKey(h, address) {
	const pub = path.join(hostDir(h), 'ssh', 'ssh_host_ed25519_key.pub');
	const [type, b64] = fs.readFileSync(pub, 'utf8').trim().split(/\s+/);
	// As `ssh-keygen -l -E sha256` prints it, without a process per host on every up.sh.
	const fp = `SHA256:${crypto.createHash('sha256').update(Buffer.from(b64, 'base64')).digest('base64').replace(/=+$/, '')}`;
	return { knownHostsLine: `${address} ${type} ${b64}`, hostKeyFingerprint: fp, hostPublicKey: `${type} ${b64}` };
}

function description() {
	const key = path.join(LAB, 'keys', 'fleet');
	return {
		user: {
			username: USER,
			privateKeyPath: key,
			privateKey: fs.readFileSync(key, 'utf8'),
			publicKey: fs.readFileSync(`${key}.pub`, 'utf8').trim(),
			libvirt: 'direct',
		},
		uri: URI,
		destinationFolder: DEST,
		hosts: HOSTS.map((h) => {
			const n = h.slice(1);
			const address = `10.231.${n}.2`;
			const d = hostDir(h);
			return {
				name: `lvb-${h}`,
				address,
				port: 22,
				...hostKey(h, address),
				netns: `lvb-${h}`,
				veth: `lvb-${h}`,
				vethInNetns: 'eth0',
				rootAddress: `10.231.${n}.1`,
				backupStore: path.join(d, 'backups'),
				xdg: { runtimeDir: `${d}/run`, configHome: `${d}/config`, dataHome: `${d}/data`, cacheHome: `${d}/cache` },
				vms: specs(h),
			};
		}),
	};
}

async function up() {
	const st = await hostStates();
	await Promise.all(HOSTS.map((h) => ensureHost(h, st[h])));
	if (writeIfChanged(FLEET_FILE, JSON.stringify(description(), null, 2) + '\n', 0o600)) log(`wrote ${FLEET_FILE}`);
}

async function down() {
	for (const h of HOSTS) {
		if (virsh(h, ['version'], { allowFail: true }).code !== 0) {
			log(`libvirtd of lvb-${h} not reachable: its domains are left defined`);
			continue;
		}
		const vms = specs(h);
		await Promise.all(vms.map((vm) => virshAsync(h, ['destroy', '--domain', vm.uuid]).catch(() => undefined)));
		for (const vm of vms) {
			const r = virsh(h, ['undefine', '--domain', vm.uuid, '--snapshots-metadata', '--checkpoints-metadata'], { allowFail: true });
			if (r.code === 0) log(`undefined ${vm.name} on lvb-${h}`);
		}
		fs.rmSync(path.join(hostDir(h), 'domains'), { recursive: true, force: true });
	}
}

const [cmd] = process.argv.slice(2);
(cmd === 'up' ? up() : cmd === 'down' ? down() : Promise.reject(new Error('usage: fleet.js up | down'))).catch((e) => {
	log(`ERROR: ${e.message}`);
	process.exit(1);
});
