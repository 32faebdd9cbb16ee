/**
 * Typed access to the integration lab described by `${LVB_LAB_DIR:-/var/lib/lvb-lab}/lab.json`
 * (written by scripts/lab/up.sh), plus `sshExec`: run a command on the lab host through the
 * system `ssh` client with the pinned host key.
 *
 * Measured error texts (libvirt 9.0, OpenSSH 9.2), handy for assertions:
 * - non-root user outside the `libvirt` group (lvbnoperm, lvbsudo without sudo), exit 1:
 *     error: failed to connect to the hypervisor
 *     error: Failed to connect socket to '/var/run/libvirt/libvirt-sock': Permission denied
 *   (`virsh -r` says '/var/run/libvirt/libvirt-sock-ro' instead)
 * - lvbnovirsh running `virsh ...` through bash, exit 127: `bash: virsh: command not found`
 * - bad URIs, exit 1 (each after `error: failed to connect to the hypervisor`):
 *     qemu:///nonsense  -> error: internal error: unexpected qemu URI path '/nonsense', try qemu:///system
 *     bogus:///x        -> error: no connection driver available for bogus:///x
 *     test:///missing.xml -> error: XML error: failed to parse xml document '/missing.xml'
 * - unknown domain: error: failed to get domain 'nope'
 * - unauthorized key, exit 255: root@127.0.0.1: Permission denied (publickey,password,keyboard-interactive).
 * - keyboard-interactive is advertised but can never succeed (UsePAM no): use `password`.
 *
 * The fleet (`fleetLab()`, scripts/lab/fleet.sh): 3 more lab hosts, each its own network namespace
 * (reached at its `address`:22 from here), sshd with its own host key, libvirt and VMs. One
 * credential (`fleet.user`) and one URI (`fleet.uri`, qemu:///session) on all of them; each host
 * lists only its own VMs, and `fleet.destinationFolder` is the same path on every host but a
 * separate store per host (`backupStore` is where it really is, seen from the machine running jest).
 */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { quoteArg } from '../../lib/shell';

/** State strings exactly as `virsh domstate` prints them. */
export type LabVmState = 'running' | 'paused' | 'shut off';

export interface LabUser {
	username: string;
	privateKeyPath: string;
	/** OpenSSH-format PEM text (the `rsa` user: PKCS#1 "BEGIN RSA PRIVATE KEY"). */
	privateKey: string;
	publicKey: string;
	passphrase?: string;
	password?: string;
	/** How this account reaches qemu:///system: directly, only through `sudo -n`, or not at all. */
	libvirt: 'direct' | 'sudo' | 'none';
	/** false for lvbnovirsh (its sessions' PATH has no virsh). */
	virshOnPath?: boolean;
	/** false for the key that is in no authorized_keys file. */
	authorized?: boolean;
}

export interface LabUsers {
	root: LabUser;
	/** root, ed25519 key encrypted with `passphrase`. */
	encrypted: LabUser;
	/** root, RSA 3072 key in PEM (PKCS#1) format. */
	rsa: LabUser;
	/** lvbpass: password auth (and its own key); member of the libvirt socket group. */
	password: LabUser;
	/** lvbnovirsh: no virsh on PATH, everything else there. */
	novirsh: LabUser;
	/** lvbnoperm: virsh present, qemu:///system socket -> Permission denied. */
	noperm: LabUser;
	/** lvbsudo: passwordless sudo; virsh only works as `sudo -n virsh ...`. */
	sudo: LabUser;
	/** lvbsudopw: sudo that asks for `password` on every run; virsh only works through sudo. */
	sudoPassword: LabUser;
	/** username root, key not in any authorized_keys. */
	unauthorized: LabUser;
}

export interface LabDataExtent {
	offset: number;
	length: number;
	/** Byte value written (`qemu-io -c 'write -P pattern offset length'`). */
	pattern: number;
}

export interface LabDisk {
	target: string;
	type: 'file' | 'block' | 'network';
	device: 'disk' | 'cdrom';
	bus: string;
	format: 'qcow2' | 'raw';
	/** File or block device path; null for network disks and the empty cdrom. */
	path: string | null;
	virtualSize?: number;
	/** Backing files, nearest first (top's backing, then its backing, ...). */
	backingChain: string[];
	backingFormats?: string[];
	/** Every write, chronological (base layer first), with the image file it went to. */
	writes?: Array<LabDataExtent & { image: string }>;
	/** What a reader of the whole chain sees: non-overlapping extents; the rest reads as zeroes. */
	data?: LabDataExtent[];
	/** block disks: the file behind the loop device. */
	loopBackingFile?: string;
	/** network disks. */
	protocol?: string;
	sourceName?: string;
	hosts?: Array<{ name: string; port: number }>;
	readonly?: boolean;
}

export interface LabVm {
	name: string;
	uuid: string;
	state: LabVmState;
	hostile: boolean;
	disks: LabDisk[];
}

export interface LabTestDomain {
	name: string;
	state: LabVmState;
	disks: Array<{ target: string; path: string; format: string; backingChain?: string[] }>;
}

export interface LabFleetVm {
	name: string;
	/** Different on every host, also for the VM name all hosts have (`app`). */
	uuid: string;
	state: LabVmState;
	/** One 64 MiB qcow2 each; `data` patterns are per host (0xaN for app, 0xbN for hN-web on host N). */
	disks: LabDisk[];
}

export interface LabFleetHost {
	/** `lvb-h1`: also its hostname (as `hostname` prints it over SSH) and its network namespace. */
	name: string;
	address: string;
	port: number;
	/** As ssh-keyscan prints it: `10.231.1.2 ssh-ed25519 AAAA...`. */
	knownHostsLine: string;
	hostKeyFingerprint: string;
	hostPublicKey: string;
	netns: string;
	/** The veth end in the root namespace (scripts/lab/netem.sh delays it and `vethInNetns`). */
	veth: string;
	vethInNetns: string;
	/** This machine's address on the host's link. */
	rootAddress: string;
	/** The directory that is `destinationFolder` on this host, as seen by jest (root namespace). */
	backupStore: string;
	/** The host's qemu:///session directories (set by its sshd). */
	xdg: { runtimeDir: string; configHome: string; dataHome: string; cacheHome: string };
	vms: LabFleetVm[];
}

export interface LabFleet {
	/** lvbfleet: the one credential every fleet host accepts (key only). */
	user: LabUser;
	/** qemu:///session: the same string on every host, a different libvirt behind it on each. */
	uri: string;
	/** Same path on every host, separate storage per host. */
	destinationFolder: string;
	hosts: LabFleetHost[];
}

export interface Lab {
	labDir: string;
	host: string;
	port: number;
	/** As ssh-keyscan prints it: `[127.0.0.1]:2222 ssh-ed25519 AAAA...`. */
	knownHostsLine: string;
	/** `SHA256:...` (ssh-keygen -l style, without the bit count). */
	hostKeyFingerprint: string;
	/** `ssh-ed25519 AAAA...` */
	hostPublicKey: string;
	/** Same host, a different valid key: for host-key mismatch tests. */
	wrongHostKeyLine: string;
	wrongHostKeyFingerprint: string;
	/**
	 * A second sshd (own address, port and host key; same users and files): the "other host" a
	 * replica is written to. Absent in a lab.json written before it existed.
	 */
	replicaHost?: { host: string; port: number; hostKeyFingerprint: string; knownHostsLine: string };
	users: LabUsers;
	systemUri: string;
	domainType: 'kvm' | 'qemu';
	/** Unix group allowed on the qemu:///system socket. */
	libvirtGroup: string;
	/** Real domains in qemu:///system (including the hostile-named ones). */
	vms: LabVm[];
	/** Names of the hostile domains that qemu:///system accepted (all shut off). */
	hostileVms: string[];
	/** Names qemu:///system refused, with libvirt's error text. */
	hostileVmsRefused: Array<{ name: string; error: string }>;
	/** `test:///abs/fleet.xml`: libvirt test driver, no daemon, state re-read on every connect. */
	fleetUri: string;
	fleetCount: number;
	fleetDisksPerVm: number;
	fleetStates: Partial<Record<LabVmState, number>>;
	/** JSON file with every fleet domain: LabTestDomain & { uuid }. */
	fleetManifest: string;
	/** Every 10th fleet domain's vda is a qcow2 overlay of this file. */
	fleetBackingBase: string;
	hostileUri: string;
	hostileNames: string[];
	hostileDomains: LabTestDomain[];
	hostileNamesRefused: Array<{ name: string; error: string }>;
	/** The fleet of lab hosts; absent when lab.json was written by an up.sh without it. */
	fleet?: LabFleet;
}

export const labDir = (): string => process.env.LVB_LAB_DIR || '/var/lib/lvb-lab';

let cached: Lab | undefined;

/** Reads lab.json (cached per process). Throws with a hint when the lab is not up. */
export function loadLab(): Lab {
	if (cached) return cached;
	const file = path.join(labDir(), 'lab.json');
	let text: string;
	try {
		text = fs.readFileSync(file, 'utf8');
	} catch (e) {
		throw new Error(`lab description ${file} not readable (run: sudo bash scripts/lab/up.sh): ${String(e)}`);
	}
	cached = JSON.parse(text) as Lab;
	return cached;
}

/** The lab VM with this name (throws when it is not in lab.json). */
export function labVm(name: string): LabVm {
	const vm = loadLab().vms.find((v) => v.name === name);
	if (!vm) throw new Error(`no lab VM named ${JSON.stringify(name)}`);
	return vm;
}

/**
 * The fleet of lab hosts: lab.json's `fleet`, or the fleet's own file when lab.json was rewritten by
 * an up.sh that does not know the fleet yet.
 */
export function fleetLab(): LabFleet {
	const fleet = loadLab().fleet;
	if (fleet) return fleet;
	const file = path.join(labDir(), 'hosts', 'fleet.json');
	try {
		return JSON.parse(fs.readFileSync(file, 'utf8')) as LabFleet;
	} catch (e) {
		throw new Error(`fleet description ${file} not readable (run: sudo bash scripts/lab/up.sh): ${String(e)}`);
	}
}

/** The fleet host with this name (`lvb-h1`) or index (0 = lvb-h1). */
export function fleetHost(host: string | number): LabFleetHost {
	const hosts = fleetLab().hosts;
	const found = typeof host === 'number' ? hosts[host] : hosts.find((h) => h.name === host);
	if (!found) throw new Error(`no fleet host ${JSON.stringify(host)}`);
	return found;
}

/** Quote one word of a remote command line: the project's one quoting function (lib/shell). */
export const shq = quoteArg;

export interface SshExecResult {
	code: number | null;
	stdout: string;
	stderr: string;
	signal: NodeJS.Signals | null;
}

export interface SshExecOptions {
	/** Written to the remote command's stdin. */
	input?: string | Buffer;
	/** Kill ssh after this long (default 60 s). */
	timeoutMs?: number;
	/** 'key' (default) or 'password' (uses user.password, publickey disabled). */
	auth?: 'key' | 'password';
	/** Replace the pinned known_hosts line (e.g. lab.wrongHostKeyLine for mismatch tests). */
	knownHostsLine?: string;
	/** Extra `-o` options, e.g. { ConnectTimeout: '3' }. */
	sshOptions?: Record<string, string>;
	/** Another sshd than the lab's first one, e.g. a fleet host (see `fleetSshExec`). */
	target?: { address: string; port: number; knownHostsLine: string };
}

let tmpDir: string | undefined;
function tempDir(): string {
	if (!tmpDir) {
		tmpDir = fs.mkdtempSync(path.join(os.tmpdir(), 'lvb-ssh-'));
		const dir = tmpDir;
		process.once('exit', () => fs.rmSync(dir, { recursive: true, force: true }));
		// Answers ssh's passphrase/password prompt (SSH_ASKPASS_REQUIRE=force) from the environment.
		fs.writeFileSync(path.join(dir, 'askpass'), '#!/bin/sh\nprintf "%s\\n" "$LVB_ASKPASS_SECRET"\n', { mode: 0o700 });
	}
	return tmpDir;
}

function knownHostsFile(line: string): string {
	const f = path.join(tempDir(), `known_hosts-${Buffer.from(line).toString('base64url').slice(-16)}`);
	if (!fs.existsSync(f)) fs.writeFileSync(f, `${line}\n`, { mode: 0o600 });
	return f;
}

/**
 * Run `command` on the lab host as `user` (a LabUser or a key of lab.users) through the system
 * ssh client: pinned host key (StrictHostKeyChecking=yes, known_hosts in a temp file), no
 * ~/.ssh/config, no agent. Keys with a passphrase and password auth are answered via SSH_ASKPASS.
 * `command` is a remote shell command line: quote untrusted parts with `shq`.
 */
export function sshExec(user: LabUser | keyof LabUsers, command: string, opts: SshExecOptions = {}): SshExecResult {
	const lab = loadLab();
	const u = typeof user === 'string' ? lab.users[user] : user;
	const o: Record<string, string> = {
		StrictHostKeyChecking: 'yes',
		UserKnownHostsFile: knownHostsFile(opts.knownHostsLine ?? opts.target?.knownHostsLine ?? lab.knownHostsLine),
		GlobalKnownHostsFile: '/dev/null',
		IdentityAgent: 'none',
		ConnectTimeout: '15',
		LogLevel: 'ERROR',
		...(opts.sshOptions ?? {}),
	};
	const env: NodeJS.ProcessEnv = { ...process.env };
	delete env.SSH_AUTH_SOCK;
	let secret: string | undefined;
	if (opts.auth === 'password') {
		if (u.password === undefined) throw new Error(`lab user ${u.username} has no password`);
		secret = u.password;
		Object.assign(o, { PubkeyAuthentication: 'no', PreferredAuthentications: 'password', NumberOfPasswordPrompts: '1' });
	} else {
		Object.assign(o, { IdentitiesOnly: 'yes', PreferredAuthentications: 'publickey', PasswordAuthentication: 'no', KbdInteractiveAuthentication: 'no' });
		secret = u.passphrase;
	}
	if (secret !== undefined) {
		// BatchMode would suppress the askpass prompt; SSH_ASKPASS_REQUIRE=force needs no tty.
		o.BatchMode = 'no';
		Object.assign(env, { SSH_ASKPASS: path.join(tempDir(), 'askpass'), SSH_ASKPASS_REQUIRE: 'force', LVB_ASKPASS_SECRET: secret, DISPLAY: env.DISPLAY ?? ':0' });
	} else {
		o.BatchMode = 'yes';
	}
	const args = ['-F', '/dev/null', '-p', String(opts.target?.port ?? lab.port), '-l', u.username];
	if (opts.auth !== 'password') args.push('-i', u.privateKeyPath);
	for (const [k, v] of Object.entries(o)) args.push('-o', `${k}=${v}`);
	args.push(opts.target?.address ?? lab.host, command);
	const r = spawnSync('ssh', args, {
		env,
		input: opts.input ?? '',
		encoding: 'utf8',
		timeout: opts.timeoutMs ?? 60_000,
		maxBuffer: 256 * 1024 * 1024,
	});
	if (r.error) throw r.error;
	return { code: r.status, stdout: r.stdout, stderr: r.stderr, signal: r.signal };
}

/** `sshExec` on a fleet host as the fleet's shared user, host key pinned to that host's. */
export function fleetSshExec(host: LabFleetHost | string | number, command: string, opts: SshExecOptions = {}): SshExecResult {
	const h = typeof host === 'object' ? host : fleetHost(host);
	return sshExec(fleetLab().user, command, { target: h, ...opts });
}
