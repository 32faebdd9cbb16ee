#!/usr/bin/env node
// Lab VMs (real, qemu:///system), libvirt test-driver node files and lab.json.
// Called by up.sh / down.sh after the daemons are handled:
//   node scripts/lab/vms.js up [--reset]   create images, define/start/pause domains, write lab.json
//   node scripts/lab/vms.js down           destroy + undefine every lab domain, detach loop devices
// Plain node, no dependencies. Every external command goes through spawn(Sync) with an argument
// array (no shell), so hostile domain names and paths never meet a shell here.
'use strict';

const fs = require('fs');
const path = require('path');
const crypto = require('crypto');
const { stableUuid, writeIfChanged } = require('./util');
const { spawnSync } = require('child_process');

const LAB = process.env.LVB_LAB_DIR || '/var/lib/lvb-lab';
const PORT = Number(process.env.LVB_LAB_SSH_PORT || 2222);
const HOST = '127.0.0.1';
const REPLICA_PORT = Number(process.env.LVB_LAB_REPLICA_SSH_PORT || 2223);
const REPLICA_HOST = process.env.LVB_LAB_REPLICA_SSH_HOST || '127.0.0.2';
const SYSTEM_URI = 'qemu:///system';
const MiB = 1024 * 1024;
const IMAGES = path.join(LAB, 'images');
const STATE = path.join(LAB, 'state');
const DOMAINS_DIR = path.join(LAB, 'domains');
const DEFINED_FILE = path.join(STATE, 'domains.json'); // every name the lab ever defined (for down)
const LOOP_FILE = path.join(STATE, 'loop.json');

function log(msg) {
	process.stderr.write(`[lab] ${msg}\n`);
}

function run(cmd, args, opts = {}) {
	const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 64 * MiB, input: opts.input });
	if (r.error) throw new Error(`${cmd}: ${r.error.message}`);
	const res = { code: r.status, stdout: r.stdout, stderr: r.stderr };
	if (r.status !== 0 && !opts.allowFail) {
		throw new Error(`${cmd} ${JSON.stringify(args)} exited ${r.status}: ${r.stderr.trim()}`);
	}
	return res;
}
const virsh = (args, opts) => run('virsh', ['-q', '-c', SYSTEM_URI, ...args], opts);

const xmlEsc = (s) =>
	String(s)
		.replace(/&/g, '&amp;')
		.replace(/</g, '&lt;')
		.replace(/>/g, '&gt;')
		.replace(/"/g, '&quot;')
		.replace(/'/g, '&apos;')
		// XML end-of-line handling turns a literal CR into LF: keep control characters as references.
		.replace(/[\r\n\t]/g, (c) => `&#${c.charCodeAt(0)};`);

/** Stable UUID per name, so re-generated XML is byte-identical and lab.json does not churn. */
const uuidFor = (name) => stableUuid(`lvb-lab:${name}`);

const readJson = (file, dflt) => {
	try {
		return JSON.parse(fs.readFileSync(file, 'utf8'));
	} catch {
		return dflt;
	}
};

// ------------------------------------------------------------------------------------------------
// Disk images. Each file disk is 64 MiB virtual with a few MiB of patterned data at known offsets
// (so allocated < virtual, and a backup can be checked with `qemu-io -c 'read -P 0xNN off len'`).

let nextPattern = 0x11;
const pattern = () => {
	const p = nextPattern;
	nextPattern += 0x11;
	if (nextPattern > 0xff) nextPattern = (nextPattern & 0xff) + 1;
	return p;
};
const stdWrites = (p) => [
	{ offset: 0, length: 1 * MiB, pattern: p },
	{ offset: 16 * MiB, length: 1 * MiB, pattern: p },
	{ offset: 48 * MiB, length: 2 * MiB, pattern: p },
];

/** image spec: { path, format, virtualSize, backing?: spec, writes: [{offset,length,pattern}] } */
function ensureImage(img) {
	if (img.backing) ensureImage(img.backing);
	if (fs.existsSync(img.path)) return false;
	fs.mkdirSync(path.dirname(img.path), { recursive: true });
	const tmp = path.join(path.dirname(img.path), `.tmp-${process.pid}-${path.basename(img.path)}`);
	const args = ['create', '-q', '-f', img.format];
	if (img.backing) args.push('-b', img.backing.path, '-F', img.backing.format);
	args.push(tmp, String(img.virtualSize));
	run('qemu-img', args);
	if (img.writes.length) {
		const io = ['-f', img.format];
		for (const w of img.writes) io.push('-c', `write -q -P 0x${w.pattern.toString(16)} ${w.offset} ${w.length}`);
		io.push(tmp);
		run('qemu-io', io);
	}
	fs.renameSync(tmp, img.path);
	return true;
}

function fileImage(file, format, writes, backing) {
	return { path: path.join(IMAGES, file), format, virtualSize: 64 * MiB, writes, backing };
}

/** Non-overlapping extents of the data a reader of the whole chain sees (top layer wins). */
function effectiveExtents(img) {
	const layers = [];
	for (let i = img; i; i = i.backing) layers.unshift(i);
	const writes = layers.flatMap((l) => l.writes);
	const cuts = [...new Set(writes.flatMap((w) => [w.offset, w.offset + w.length]))].sort((a, b) => a - b);
	const out = [];
	for (let i = 0; i + 1 < cuts.length; i++) {
		const [a, b] = [cuts[i], cuts[i + 1]];
		const w = [...writes].reverse().find((x) => x.offset <= a && x.offset + x.length >= b);
		if (!w) continue;
		const last = out[out.length - 1];
		if (last && last.pattern === w.pattern && last.offset + last.length === a) last.length += b - a;
		else out.push({ offset: a, length: b - a, pattern: w.pattern });
	}
	return out;
}

// ------------------------------------------------------------------------------------------------
// Loop device for the block disk (optional: skipped where loop devices are unavailable).

function loopFor(file) {
	const r = run('losetup', ['-n', '-O', 'NAME', '-j', file], { allowFail: true });
	return r.code === 0 ? r.stdout.split('\n').filter(Boolean)[0] || null : null;
}

function ensureLoop(file) {
	let dev = loopFor(file);
	if (!dev) {
		const r = run('losetup', ['--find', '--show', file], { allowFail: true });
		if (r.code !== 0) {
			log(`no loop device (block disk skipped): ${r.stderr.trim()}`);
			return null;
		}
		dev = r.stdout.trim();
		log(`attached ${dev} -> ${file}`);
	}
	writeIfChanged(LOOP_FILE, JSON.stringify({ device: dev, file }, null, 2) + '\n');
	return dev;
}

function detachLoops() {
	const rec = readJson(LOOP_FILE, null);
	const files = new Set([path.join(IMAGES, 'lvb-odd-disks', 'vdb-block.img')]);
	if (rec && rec.file) files.add(rec.file);
	for (const f of files) {
		for (let i = 0; i < 5; i++) {
			const dev = loopFor(f);
			if (!dev) break;
			log(`detaching ${dev} (${f})`);
			run('losetup', ['-d', dev], { allowFail: true });
		}
	}
	fs.rmSync(LOOP_FILE, { force: true });
}

// ------------------------------------------------------------------------------------------------
// The real lab domains.

function kvmUsable() {
	try {
		fs.closeSync(fs.openSync('/dev/kvm', 'r+'));
		return true;
	} catch {
		return false;
	}
}

// Names that must be defined in qemu:///system (shut off). The first one is required; the others
// are kept only if libvirt accepts them (the refusals are recorded in lab.json).
const EVIL = "lvb-evil '\"; $(touch pwned) |&\\`$HOME*";
const HOSTILE_REAL = [EVIL, '-lvb-dash', '--help', 'lvb-ünï-€', 'lvb-new\nline', 'lvb-cr\rreturn', ' lvb-lead-space', 'lvb-tab\tname'];

function buildSpecs(opts) {
	nextPattern = 0x11;
	const d = (name) => name.replace(/[^A-Za-z0-9._-]/g, '_');
	const specs = [];
	const qcowDisk = (vm, target) => ({
		target, type: 'file', device: 'disk', bus: 'virtio',
		image: fileImage(`${d(vm)}/${target}.qcow2`, 'qcow2', stdWrites(pattern())),
	});
	const rawDisk = (vm, target) => ({
		target, type: 'file', device: 'disk', bus: 'virtio',
		image: fileImage(`${d(vm)}/${target}.raw`, 'raw', stdWrites(pattern())),
	});

	specs.push({ name: 'lvb-running', state: 'running', disks: [qcowDisk('lvb-running', 'vda')] });
	specs.push({ name: 'lvb-paused', state: 'paused', disks: [qcowDisk('lvb-paused', 'vda')] });

	// base.qcow2 <- mid.qcow2 <- top.qcow2 (absolute backing paths, backing format recorded).
	const pb = pattern(), pm = pattern(), pt = pattern();
	const base = fileImage('lvb-off-chain/vda-base.qcow2', 'qcow2', stdWrites(pb));
	const mid = fileImage('lvb-off-chain/vda-mid.qcow2', 'qcow2', [
		{ offset: 1 * MiB, length: 1 * MiB, pattern: pm },
		{ offset: 16 * MiB, length: MiB / 2, pattern: pm },
	], base);
	const top = fileImage('lvb-off-chain/vda-top.qcow2', 'qcow2', [
		{ offset: 2 * MiB, length: 1 * MiB, pattern: pt },
		{ offset: 16 * MiB + MiB / 4, length: MiB / 4, pattern: pt },
	], mid);
	specs.push({
		name: 'lvb-off-chain', state: 'shut off',
		disks: [{ target: 'vda', type: 'file', device: 'disk', bus: 'virtio', image: top }, rawDisk('lvb-off-chain', 'vdb')],
	});

	specs.push({ name: 'lvb-two-disks', state: 'running', disks: [qcowDisk('lvb-two-disks', 'vda'), rawDisk('lvb-two-disks', 'vdb')] });

	// vda qcow2, vdb block device (loop), vdc network (nbd, nothing listens), sda empty cdrom.
	const odd = { name: 'lvb-odd-disks', state: 'shut off', disks: [qcowDisk('lvb-odd-disks', 'vda')] };
	const blockImg = { path: path.join(IMAGES, 'lvb-odd-disks', 'vdb-block.img'), format: 'raw', virtualSize: 16 * MiB, writes: [{ offset: 0, length: 1 * MiB, pattern: pattern() }] };
	ensureImage(blockImg);
	const loop = opts.loops ? ensureLoop(blockImg.path) : null;
	if (loop) odd.disks.push({ target: 'vdb', type: 'block', device: 'disk', bus: 'virtio', format: 'raw', path: loop, loopBackingFile: blockImg.path, writes: blockImg.writes });
	odd.disks.push({ target: 'vdc', type: 'network', device: 'disk', bus: 'virtio', format: 'raw', protocol: 'nbd', sourceName: 'lvb-nbd-export', host: '127.0.0.1', port: 10809 });
	odd.disks.push({ target: 'sda', type: 'file', device: 'cdrom', bus: 'sata', format: 'raw', path: null, readonly: true });
	specs.push(odd);

	// Hostile names, shut off, one small qcow2 disk each; the first one's disk path is hostile too.
	HOSTILE_REAL.forEach((name, i) => {
		const file = i === 0 ? `hostile/dir with space/it's a "disk" $(touch pwned).qcow2` : `hostile/${i}.qcow2`;
		specs.push({
			name, state: 'shut off', hostile: true, optional: i > 0,
			disks: [{ target: 'vda', type: 'file', device: 'disk', bus: 'virtio', image: { ...fileImage(file, 'qcow2', [{ offset: 0, length: 1 * MiB, pattern: pattern() }]), virtualSize: 16 * MiB } }],
		});
	});
	return specs;
}

function diskXml(disk) {
	const ro = disk.readonly ? '<readonly/>' : '';
	const tgt = `<target dev='${disk.target}' bus='${disk.bus}'/>`;
	if (disk.type === 'file') {
		const fmt = disk.image ? disk.image.format : disk.format;
		const src = disk.image ? `<source file='${xmlEsc(disk.image.path)}'/>` : disk.path ? `<source file='${xmlEsc(disk.path)}'/>` : '';
		return `<disk type='file' device='${disk.device}'><driver name='qemu' type='${fmt}'/>${src}${tgt}${ro}</disk>`;
	}
	if (disk.type === 'block') {
		return `<disk type='block' device='disk'><driver name='qemu' type='raw'/><source dev='${xmlEsc(disk.path)}'/>${tgt}</disk>`;
	}
	if (disk.type === 'network') {
		return (
			`<disk type='network' device='disk'><driver name='qemu' type='${disk.format}'/>` +
			`<source protocol='${disk.protocol}' name='${xmlEsc(disk.sourceName)}'><host name='${disk.host}' port='${disk.port}'/></source>${tgt}</disk>`
		);
	}
	throw new Error(`unknown disk type ${disk.type}`);
}

function domainXml(spec, domType) {
	const lines = [
		`<domain type='${domType}'>`,
		`  <name>${xmlEsc(spec.name)}</name>`,
		`  <uuid>${uuidFor(spec.name)}</uuid>`,
		`  <description>n8n-nodes-libvirt-backup lab domain (scripts/lab/up.sh)</description>`,
		`  <memory unit='MiB'>96</memory>`,
		`  <vcpu>1</vcpu>`,
		`  <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>`,
		`  <features><acpi/></features>`,
		`  <on_poweroff>destroy</on_poweroff><on_reboot>restart</on_reboot><on_crash>destroy</on_crash>`,
		`  <devices>`,
		`    <emulator>/usr/bin/qemu-system-x86_64</emulator>`,
		...spec.disks.map((dk) => `    ${diskXml(dk)}`),
		`    <serial type='pty'/>`,
		`    <console type='pty'/>`,
		`    <memballoon model='none'/>`,
		`  </devices>`,
		`</domain>`,
		'',
	];
	return lines.join('\n');
}

function listUuids(flags) {
	return new Set(virsh(['list', '--uuid', ...flags]).stdout.split('\n').map((s) => s.trim()).filter(Boolean));
}

function domainStates() {
	return {
		all: listUuids(['--all']),
		active: listUuids([]),
		running: listUuids(['--state-running']),
		paused: listUuids(['--state-paused']),
	};
}

function recordDefined(name) {
	const names = readJson(DEFINED_FILE, []);
	if (!names.includes(name)) {
		names.push(name);
		writeIfChanged(DEFINED_FILE, JSON.stringify(names, null, 2) + '\n');
	}
}

/** destroy + undefine by UUID (names may be hostile; the UUID is derived from the name). */
function removeDomain(name) {
	let id = uuidFor(name);
	if (virsh(['domuuid', '--domain', id], { allowFail: true }).code !== 0) {
		// Not found by the lab's UUID: maybe defined by name with another UUID.
		if (virsh(['domuuid', '--domain', name], { allowFail: true }).code !== 0) return false;
		id = name;
	}
	virsh(['destroy', '--domain', id], { allowFail: true });
	const r = virsh(['undefine', '--domain', id, '--snapshots-metadata', '--checkpoints-metadata'], { allowFail: true });
	if (r.code !== 0) log(`undefine ${JSON.stringify(name)}: ${r.stderr.trim()}`);
	return r.code === 0;
}

function slug(name) {
	return crypto.createHash('sha1').update(name).digest('hex').slice(0, 12);
}

async function setupDomains(reset) {
	fs.mkdirSync(DOMAINS_DIR, { recursive: true });
	const domType = kvmUsable() ? 'kvm' : 'qemu';
	if (reset) {
		const names = readJson(DEFINED_FILE, []);
		const active = listUuids([]);
		await destroyAll(names.map(uuidFor).filter((u) => active.has(u)));
		for (const name of names) removeDomain(name);
		detachLoops();
		fs.rmSync(IMAGES, { recursive: true, force: true });
		fs.rmSync(DOMAINS_DIR, { recursive: true, force: true });
		fs.mkdirSync(DOMAINS_DIR, { recursive: true });
		writeIfChanged(DEFINED_FILE, '[]\n');
	}
	const specs = buildSpecs({ loops: true });
	const wanted = new Set(specs.map((s) => s.name));
	// Lab domains from an older spec that are no longer wanted.
	for (const name of readJson(DEFINED_FILE, [])) {
		if (!wanted.has(name)) {
			log(`removing obsolete lab domain ${JSON.stringify(name)}`);
			removeDomain(name);
			writeIfChanged(DEFINED_FILE, JSON.stringify(readJson(DEFINED_FILE, []).filter((n) => n !== name), null, 2) + '\n');
		}
	}
	let st = domainStates();
	const refused = [];
	const defined = [];
	for (const spec of specs) {
		const uuid = uuidFor(spec.name);
		const xml = domainXml(spec, domType);
		const xmlFile = path.join(DOMAINS_DIR, `${slug(spec.name)}.xml`);
		let old = null;
		try {
			old = fs.readFileSync(xmlFile, 'utf8');
		} catch {}
		const exists = st.all.has(uuid);
		// A libvirtd restart re-reads its saved XML, and XML turns a CR in a name into LF: redefine a
		// domain whose name is no longer the one promised (undefine first: same UUID, other name).
		const renamed = exists && virsh(['domname', '--domain', uuid], { allowFail: true }).stdout.replace(/\n$/, '') !== spec.name;
		if (!exists || old !== xml || renamed) {
			for (const dk of spec.disks) if (dk.image) ensureImage(dk.image);
			if (exists && st.active.has(uuid)) virsh(['destroy', '--domain', uuid], { allowFail: true });
			if (renamed) {
				virsh(['undefine', '--domain', uuid, '--snapshots-metadata', '--checkpoints-metadata'], { allowFail: true });
				log(`redefining ${JSON.stringify(spec.name)}: libvirt had renamed it`);
			}
			recordDefined(spec.name);
			const tmp = `${xmlFile}.new`;
			fs.writeFileSync(tmp, xml);
			const r = virsh(['define', '--file', tmp], { allowFail: true });
			fs.rmSync(tmp, { force: true });
			if (r.code !== 0) {
				const err = r.stderr.trim().replace(/^error: /gm, '');
				if (!spec.optional) throw new Error(`virsh define ${JSON.stringify(spec.name)} failed: ${err}`);
				refused.push({ name: spec.name, error: err });
				fs.rmSync(xmlFile, { force: true });
				writeIfChanged(DEFINED_FILE, JSON.stringify(readJson(DEFINED_FILE, []).filter((n) => n !== spec.name), null, 2) + '\n');
				continue;
			}
			// libvirt may have normalised the name: check it kept it byte for byte.
			const got = virsh(['domname', '--domain', uuid]).stdout.replace(/\n+$/, '');
			if (got !== spec.name) log(`WARNING: libvirt stores ${JSON.stringify(spec.name)} as ${JSON.stringify(got)}`);
			fs.writeFileSync(xmlFile, xml);
			log(`defined ${JSON.stringify(spec.name)}`);
		}
		defined.push(spec);
	}
	// Re-establish promised states (a test may have changed them).
	st = domainStates();
	for (const spec of defined) {
		const uuid = uuidFor(spec.name);
		const isRunning = st.running.has(uuid);
		const isPaused = st.paused.has(uuid);
		const isActive = st.active.has(uuid);
		if (spec.state === 'shut off') {
			if (isActive) {
				log(`destroying ${JSON.stringify(spec.name)} (promised: shut off)`);
				virsh(['destroy', '--domain', uuid]);
			}
			continue;
		}
		if (isActive && !isRunning && !isPaused) virsh(['destroy', '--domain', uuid], { allowFail: true }); // crashed, pmsuspended...
		if (!isRunning && !isPaused) {
			log(`starting ${spec.name}`);
			virsh(['start', '--domain', uuid]);
			if (spec.state === 'paused') virsh(['suspend', '--domain', uuid]);
		} else if (spec.state === 'running' && isPaused) {
			log(`resuming ${spec.name}`);
			virsh(['resume', '--domain', uuid]);
		} else if (spec.state === 'paused' && isRunning) {
			log(`suspending ${spec.name}`);
			virsh(['suspend', '--domain', uuid]);
		}
	}
	// Remember refusals across warm runs (a refused name is never defined, so it is retried; keep
	// the last error text).
	const refusedFile = path.join(STATE, 'refused.json');
	if (refused.length || !fs.existsSync(refusedFile)) writeIfChanged(refusedFile, JSON.stringify(refused, null, 2) + '\n');
	return { domType, specs: defined, refused: readJson(refusedFile, []) };
}

// ------------------------------------------------------------------------------------------------
// Test-driver node files (no daemon: test:///abs/path.xml). State is re-read on every connection.

const FLEET_COUNT = 500;
const FLEET_GEN = 'fleet-v2';
const RUNSTATE = { running: 1, paused: 3, 'shut off': 5 };

function testDomainXml(name, state, disks, memMiB = 1024) {
	return [
		`<domain type='test' xmlns:test='http://libvirt.org/schemas/domain/test/1.0'>`,
		`  <name>${xmlEsc(name)}</name>`,
		`  <uuid>${uuidFor(`test:${name}`)}</uuid>`,
		`  <memory unit='MiB'>${memMiB}</memory>`,
		`  <vcpu>1</vcpu>`,
		`  <os><type arch='x86_64'>hvm</type></os>`,
		`  <devices>`,
		...disks.map(
			(dk) =>
				`    <disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='${xmlEsc(dk.path)}'/><target dev='${dk.target}' bus='virtio'/></disk>`,
		),
		`  </devices>`,
		`  <test:runstate>${RUNSTATE[state]}</test:runstate>`,
		`</domain>`,
	].join('\n');
}

function fleetState(i) {
	const m = i % 10;
	return m < 6 ? 'running' : m === 6 ? 'paused' : 'shut off';
}

function copyTemplate(src, dst) {
	if (!fs.existsSync(dst)) fs.copyFileSync(src, dst);
}

function ensureFleet() {
	const dir = path.join(LAB, 'fleet');
	const xmlPath = path.join(dir, 'fleet.xml');
	const manifestPath = path.join(dir, 'fleet.json');
	const stamp = path.join(dir, '.generated');
	const imgDir = path.join(dir, 'images');
	const gen = `${FLEET_GEN} ${FLEET_COUNT}`;
	const fresh = fs.existsSync(xmlPath) && fs.existsSync(manifestPath) && readFileOr(stamp) === gen;
	if (!fresh) {
		const t0 = Date.now();
		fs.rmSync(dir, { recursive: true, force: true });
		fs.mkdirSync(imgDir, { recursive: true });
		// Real, distinct qcow2 files, copied from templates (4 KiB clusters: 16-20 KiB each).
		const tpl = (name, size, backing) => {
			const p = path.join(dir, name);
			if (!fs.existsSync(p)) {
				const a = ['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4096'];
				if (backing) a.push('-b', backing, '-F', 'qcow2');
				run('qemu-img', [...a, p, size]);
			}
			return p;
		};
		const base = tpl('base.qcow2', '1G');
		const tVda = tpl('template-vda.qcow2', '1G');
		const tVdaOverlay = tpl('template-vda-overlay.qcow2', '1G', base);
		const tVdb = tpl('template-vdb.qcow2', '2G');
		const parts = ['<node>'];
		const manifest = [];
		for (let i = 0; i < FLEET_COUNT; i++) {
			const name = `lvb-fleet-${String(i).padStart(4, '0')}`;
			const state = fleetState(i);
			const backed = i % 10 === 0; // every 10th VM's vda is an overlay of the shared base
			const vda = path.join(imgDir, `${name}-vda.qcow2`);
			const vdb = path.join(imgDir, `${name}-vdb.qcow2`);
			copyTemplate(backed ? tVdaOverlay : tVda, vda);
			copyTemplate(tVdb, vdb);
			const disks = [
				{ target: 'vda', path: vda, format: 'qcow2', backingChain: backed ? [base] : [] },
				{ target: 'vdb', path: vdb, format: 'qcow2', backingChain: [] },
			];
			parts.push(testDomainXml(name, state, disks, 512 + (i % 4) * 512));
			manifest.push({ name, uuid: uuidFor(`test:${name}`), state, disks });
		}
		parts.push('</node>', '');
		fs.writeFileSync(xmlPath, parts.join('\n'));
		fs.writeFileSync(manifestPath, JSON.stringify(manifest, null, 1) + '\n');
		fs.writeFileSync(stamp, gen);
		log(`generated fleet.xml (${FLEET_COUNT} domains, ${FLEET_COUNT * 2} qcow2 files) in ${Date.now() - t0} ms`);
	}
	const manifest = readJson(manifestPath, []);
	const states = {};
	for (const m of manifest) states[m.state] = (states[m.state] || 0) + 1;
	return { uri: `test://${xmlPath}`, manifestPath, count: manifest.length, states, base: path.join(dir, 'base.qcow2') };
}

function readFileOr(f, dflt = null) {
	try {
		return fs.readFileSync(f, 'utf8');
	} catch {
		return dflt;
	}
}

// Test driver: every candidate is tried alone first; accepted ones go into hostile.xml.
const HOSTILE_TEST = [
	EVIL,
	"lvb 'single' quote",
	'lvb "double" quote',
	'lvb  two  spaces',
	' lvb-leading-space',
	'lvb-trailing-space ',
	'lvb;touch pwned-semicolon',
	'lvb|touch pwned-pipe',
	'lvb&&touch pwned-and',
	'lvb`touch pwned-backtick`',
	'lvb-$(touch pwned)',
	'lvb-$HOME',
	'lvb-${IFS}x',
	'lvb-*',
	'lvb-[ab]?',
	'lvb-~',
	'-lvb-dash',
	'--help',
	'lvb-ünï-€-日本',
	'lvb-new\nline',
	'lvb-cr\rreturn',
	'lvb-tab\tname',
	'lvb-back\\slash',
	'lvb-<xml>&amp;',
	'lvb-%s%n',
	'lvb-#hash',
	'lvb-emoji-💾',
	'lvb/slash',
];
const HOSTILE_GEN = 'hostile-v2';

function ensureHostile() {
	const dir = path.join(LAB, 'hostile-test');
	const xmlPath = path.join(dir, 'hostile.xml');
	const infoPath = path.join(dir, 'hostile.json');
	const gen = `${HOSTILE_GEN} ${JSON.stringify(HOSTILE_TEST)}`;
	if (readFileOr(path.join(dir, '.generated')) !== gen || !fs.existsSync(xmlPath) || !fs.existsSync(infoPath)) {
		fs.mkdirSync(path.join(dir, 'images', 'dir with space'), { recursive: true });
		const tplPath = path.join(dir, 'template.qcow2');
		if (!fs.existsSync(tplPath)) run('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4096', tplPath, '1G']);
		const accepted = [];
		const refused = [];
		const probe = path.join(dir, 'probe.xml');
		HOSTILE_TEST.forEach((name, i) => {
			const file =
				i === 0
					? path.join(dir, 'images', 'dir with space', `it's a "disk" $(touch pwned).qcow2`)
					: path.join(dir, 'images', `${i}.qcow2`);
			const dom = testDomainXml(name, i % 3 === 0 ? 'running' : i % 3 === 1 ? 'shut off' : 'paused', [{ target: 'vda', path: file }]);
			fs.writeFileSync(probe, `<node>\n${dom}\n</node>\n`);
			const uuid = uuidFor(`test:${name}`);
			const r = run('virsh', ['-q', '-c', `test://${probe}`, 'domname', '--domain', uuid], { allowFail: true });
			const stored = r.code === 0 ? r.stdout.replace(/\n\n?$/, '') : null;
			if (stored !== null && stored !== name) {
				refused.push({ name, error: `stored as ${JSON.stringify(stored)}` });
			} else if (stored === name) {
				copyTemplate(tplPath, file);
				accepted.push({ name, dom, state: i % 3 === 0 ? 'running' : i % 3 === 1 ? 'shut off' : 'paused', disks: [{ target: 'vda', path: file, format: 'qcow2' }] });
			} else {
				refused.push({ name, error: (r.stderr || '').trim().replace(/^error: /gm, '') });
			}
		});
		fs.rmSync(probe, { force: true });
		fs.writeFileSync(xmlPath, ['<node>', ...accepted.map((a) => a.dom), '</node>', ''].join('\n'));
		fs.writeFileSync(
			infoPath,
			JSON.stringify({ domains: accepted.map(({ dom, ...rest }) => rest), refused }, null, 2) + '\n',
		);
		fs.writeFileSync(path.join(dir, '.generated'), gen);
		log(`generated hostile.xml (${accepted.length} accepted, ${refused.length} refused)`);
	}
	const info = readJson(infoPath, { domains: [], refused: [] });
	return { uri: `test://${xmlPath}`, ...info };
}

// ------------------------------------------------------------------------------------------------
// lab.json

function keyUser(username, keyName, extra = {}) {
	const p = path.join(LAB, 'keys', keyName);
	return {
		username,
		privateKeyPath: p,
		privateKey: fs.readFileSync(p, 'utf8'),
		publicKey: fs.readFileSync(`${p}.pub`, 'utf8').trim(),
		...extra,
	};
}

function hostKeyInfo(pubPath, host = HOST, port = PORT) {
	const [type, b64] = fs.readFileSync(pubPath, 'utf8').trim().split(/\s+/);
	const hostPart = port === 22 ? host : `[${host}]:${port}`;
	const fp = run('ssh-keygen', ['-l', '-E', 'sha256', '-f', pubPath]).stdout.split(/\s+/)[1];
	return { line: `${hostPart} ${type} ${b64}`, fingerprint: fp, publicKey: `${type} ${b64}` };
}

function diskInfo(dk) {
	const out = { target: dk.target, type: dk.type, device: dk.device, bus: dk.bus };
	if (dk.image) {
		const chain = [];
		for (let b = dk.image.backing; b; b = b.backing) chain.push(b.path);
		const writes = [];
		const layers = [];
		for (let l = dk.image; l; l = l.backing) layers.unshift(l);
		for (const l of layers) for (const w of l.writes) writes.push({ image: l.path, ...w });
		Object.assign(out, {
			format: dk.image.format,
			path: dk.image.path,
			virtualSize: dk.image.virtualSize,
			backingChain: chain,
			backingFormats: layers.slice(0, -1).reverse().map((l) => l.format),
			writes,
			data: effectiveExtents(dk.image),
		});
	} else if (dk.type === 'block') {
		Object.assign(out, { format: 'raw', path: dk.path, loopBackingFile: dk.loopBackingFile, backingChain: [], data: dk.writes });
	} else if (dk.type === 'network') {
		Object.assign(out, { format: dk.format, path: null, protocol: dk.protocol, sourceName: dk.sourceName, hosts: [{ name: dk.host, port: dk.port }], backingChain: [] });
	} else {
		Object.assign(out, { format: dk.format, path: dk.path, readonly: !!dk.readonly, backingChain: [] });
	}
	return out;
}

function writeLabJson(dom, fleet, hostile) {
	const hk = hostKeyInfo(path.join(LAB, 'ssh', 'ssh_host_ed25519_key.pub'));
	const wrong = hostKeyInfo(path.join(LAB, 'ssh', 'wrong_host_ed25519_key.pub'));
	const replica = hostKeyInfo(path.join(LAB, 'ssh', 'replica_host_ed25519_key.pub'), REPLICA_HOST, REPLICA_PORT);
	const secret = (f) => fs.readFileSync(path.join(LAB, 'secrets', f), 'utf8');
	const lab = {
		labDir: LAB,
		host: HOST,
		port: PORT,
		knownHostsLine: hk.line,
		hostKeyFingerprint: hk.fingerprint,
		hostPublicKey: hk.publicKey,
		wrongHostKeyLine: wrong.line,
		wrongHostKeyFingerprint: wrong.fingerprint,
		replicaHost: { host: REPLICA_HOST, port: REPLICA_PORT, hostKeyFingerprint: replica.fingerprint, knownHostsLine: replica.line },
		users: {
			root: keyUser('root', 'root', { libvirt: 'direct' }),
			encrypted: keyUser('root', 'encrypted', { passphrase: secret('encrypted.passphrase'), libvirt: 'direct' }),
			rsa: keyUser('root', 'rsa', { libvirt: 'direct' }),
			password: keyUser('lvbpass', 'lvbpass', { password: secret('lvbpass.password'), libvirt: 'direct' }),
			novirsh: keyUser('lvbnovirsh', 'lvbnovirsh', { libvirt: 'none', virshOnPath: false }),
			noperm: keyUser('lvbnoperm', 'lvbnoperm', { libvirt: 'none' }),
			sudo: keyUser('lvbsudo', 'lvbsudo', { libvirt: 'sudo' }),
			sudoPassword: keyUser('lvbsudopw', 'lvbsudopw', { password: secret('lvbsudopw.password'), libvirt: 'sudo' }),
			unauthorized: keyUser('root', 'unauthorized', { libvirt: 'none', authorized: false }),
		},
		systemUri: SYSTEM_URI,
		domainType: dom.domType,
		libvirtGroup: 'libvirt',
		vms: dom.specs.map((s) => ({ name: s.name, uuid: uuidFor(s.name), state: s.state, hostile: !!s.hostile, disks: s.disks.map(diskInfo) })),
		hostileVms: dom.specs.filter((s) => s.hostile).map((s) => s.name),
		hostileVmsRefused: dom.refused,
		fleetUri: fleet.uri,
		fleetCount: fleet.count,
		fleetDisksPerVm: 2,
		fleetStates: fleet.states,
		fleetManifest: fleet.manifestPath,
		fleetBackingBase: fleet.base,
		hostileUri: hostile.uri,
		hostileNames: hostile.domains.map((d) => d.name),
		hostileDomains: hostile.domains,
		hostileNamesRefused: hostile.refused,
		// The fleet of lab hosts (fleet.sh, fleet.js), when up.
		fleet: readJson(path.join(LAB, 'hosts', 'fleet.json'), undefined),
	};
	const changed = writeIfChanged(path.join(LAB, 'lab.json'), JSON.stringify(lab, null, 2) + '\n', 0o600);
	if (changed) log(`wrote ${path.join(LAB, 'lab.json')}`);
}

// ------------------------------------------------------------------------------------------------

async function up(reset) {
	fs.mkdirSync(STATE, { recursive: true });
	const dom = await setupDomains(reset);
	const fleet = ensureFleet();
	const hostile = ensureHostile();
	writeLabJson(dom, fleet, hostile);
}

/** Destroy the given domains (by UUID or name) in parallel: `virsh destroy` takes ~2 s each. */
function destroyAll(ids) {
	const { spawn } = require('child_process');
	return Promise.all(
		ids.map(
			(id) =>
				new Promise((resolve) => {
					const p = spawn('virsh', ['-q', '-c', SYSTEM_URI, 'destroy', '--domain', id], { stdio: 'ignore' });
					p.on('exit', resolve);
					p.on('error', resolve);
				}),
		),
	);
}

async function down() {
	const recorded = readJson(DEFINED_FILE, []);
	const names = new Set(recorded);
	const canTalk = run('virsh', ['-c', SYSTEM_URI, 'version'], { allowFail: true }).code === 0;
	if (canTalk) {
		const lab = readJson(path.join(LAB, 'lab.json'), null);
		if (lab && Array.isArray(lab.vms)) for (const v of lab.vms) names.add(v.name);
		const active = listUuids([]);
		const running = [...names].filter((n) => active.has(uuidFor(n)));
		if (running.length) log(`destroying ${running.map((n) => JSON.stringify(n)).join(', ')}`);
		await destroyAll([...names].map(uuidFor).filter((u) => active.has(u)));
		for (const name of names) {
			if (removeDomain(name)) log(`undefined ${JSON.stringify(name)}`);
		}
		writeIfChanged(DEFINED_FILE, '[]\n');
		fs.rmSync(DOMAINS_DIR, { recursive: true, force: true });
	} else if (recorded.length) {
		log(`libvirtd not reachable: lab domains left defined: ${JSON.stringify(recorded)}`);
	}
	detachLoops();
}

const [cmd, ...rest] = process.argv.slice(2);
(async () => {
	if (cmd === 'up') await up(rest.includes('--reset'));
	else if (cmd === 'down') await down();
	else {
		process.stderr.write('usage: vms.js up [--reset] | down\n');
		process.exit(2);
	}
})().catch((e) => {
	log(`ERROR: ${e.message}`);
	process.exit(1);
});
