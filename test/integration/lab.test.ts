// Sanity checks of the lab itself (scripts/lab/up.sh): if these fail, every other integration
// test result is meaningless.
import { spawnSync } from 'child_process';
import { createHash } from 'crypto';
import * as fs from 'fs';
import * as path from 'path';
import { Client, type ConnectConfig } from 'ssh2';
import { loadLab, sshExec, shq, type LabUser } from '../support/lab';

const lab = loadLab();

/** Local virsh, argument array (no shell), for the test-driver files. */
function virshLocal(uri: string, ...args: string[]) {
	const r = spawnSync('virsh', ['-q', '-c', uri, ...args], { encoding: 'utf8' });
	return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

function ssh2Exec(config: ConnectConfig, command: string): Promise<{ stdout: string; code: number | null }> {
	return new Promise((resolve, reject) => {
		const c = new Client();
		c.on('ready', () => {
			c.exec(command, (err, stream) => {
				if (err) return reject(err);
				let stdout = '';
				stream.on('data', (d: Buffer) => (stdout += d.toString()));
				stream.stderr.on('data', () => {});
				stream.on('close', (code: number | null) => {
					c.end();
					resolve({ stdout, code });
				});
			});
		});
		c.on('error', reject);
		c.connect({
			host: lab.host,
			port: lab.port,
			readyTimeout: 15000,
			hostVerifier: (key: Buffer) =>
				`SHA256:${createHash('sha256').update(key).digest('base64').replace(/=+$/, '')}` === lab.hostKeyFingerprint,
			...config,
		});
	});
}

describe('lab description', () => {
	test('lab.json is private and complete', () => {
		const st = fs.statSync(path.join(lab.labDir, 'lab.json'));
		expect(st.mode & 0o777).toBe(0o600);
		expect(lab.knownHostsLine).toMatch(/^\[127\.0\.0\.1\]:\d+ ssh-ed25519 AAAA\S+$/);
		expect(lab.wrongHostKeyLine).not.toBe(lab.knownHostsLine);
		expect(lab.hostKeyFingerprint).toMatch(/^SHA256:[A-Za-z0-9+/]{43}$/);
		for (const u of Object.values(lab.users) as LabUser[]) {
			expect(fs.readFileSync(u.privateKeyPath, 'utf8')).toBe(u.privateKey);
		}
		expect(lab.vms.map((v) => v.name)).toEqual(
			expect.arrayContaining(['lvb-running', 'lvb-paused', 'lvb-off-chain', 'lvb-two-disks', 'lvb-odd-disks']),
		);
		expect(lab.hostileVms).toContain("lvb-evil '\"; $(touch pwned) |&\\`$HOME*");
	});
});

describe('ssh', () => {
	test.each(['root', 'rsa', 'password', 'novirsh', 'noperm', 'sudo', 'sudoPassword'] as const)('key login as %s', (name) => {
		const r = sshExec(name, 'id -un');
		expect(r.stderr).toBe('');
		expect(r.code).toBe(0);
		expect(r.stdout.trim()).toBe(lab.users[name].username);
	});

	test('encrypted key (passphrase via askpass) and password auth with the ssh CLI', () => {
		expect(sshExec('encrypted', 'id -un').stdout.trim()).toBe('root');
		const r = sshExec('password', 'id -un', { auth: 'password' });
		expect(r.code).toBe(0);
		expect(r.stdout.trim()).toBe('lvbpass');
	});

	test('ssh2 accepts the encrypted key, the password and the pinned host key', async () => {
		const enc = lab.users.encrypted;
		expect(
			(await ssh2Exec({ username: enc.username, privateKey: enc.privateKey, passphrase: enc.passphrase }, 'id -un')).stdout.trim(),
		).toBe('root');
		const pw = lab.users.password;
		expect((await ssh2Exec({ username: pw.username, password: pw.password }, 'id -un')).stdout.trim()).toBe('lvbpass');
	});

	test('a key that is not authorized is refused', () => {
		const r = sshExec('unauthorized', 'true');
		expect(r.code).toBe(255);
		expect(r.stderr).toMatch(/Permission denied \(publickey/);
	});

	test('a different host key fails strict host key checking', () => {
		const r = sshExec('root', 'true', { knownHostsLine: lab.wrongHostKeyLine });
		expect(r.code).toBe(255);
		expect(r.stderr).toMatch(/Host key verification failed/);
	});
});

describe('lab users', () => {
	test('lvbnovirsh has sh, cat, setsid, kill, qemu-img but no virsh', () => {
		const tools = sshExec('novirsh', 'for c in sh cat setsid kill qemu-img sudo; do command -v "$c" >/dev/null || echo "missing $c"; done');
		expect(tools.stdout).toBe('');
		expect(tools.code).toBe(0);
		expect(sshExec('novirsh', 'command -v virsh').code).toBe(1);
		const r = sshExec('novirsh', 'virsh -c qemu:///system list');
		expect(r.code).toBe(127);
		expect(r.stderr).toMatch(/virsh: command not found/);
	});

	test('lvbnoperm gets permission denied on the qemu:///system socket', () => {
		const r = sshExec('noperm', 'virsh -c qemu:///system list --all');
		expect(r.code).toBe(1);
		expect(r.stderr).toContain("Failed to connect socket to '/var/run/libvirt/libvirt-sock': Permission denied");
	});

	test('lvbsudo reaches libvirt only through sudo -n', () => {
		const direct = sshExec('sudo', 'virsh -c qemu:///system list --all');
		expect(direct.code).toBe(1);
		expect(direct.stderr).toContain('Permission denied');
		const viaSudo = sshExec('sudo', 'sudo -n virsh -c qemu:///system domstate --domain lvb-running');
		expect(viaSudo.code).toBe(0);
		expect(viaSudo.stdout.trim()).toBe('running');
	});

	test('lvbsudopw reaches libvirt only through sudo, with its password', () => {
		expect(sshExec('sudoPassword', 'virsh -c qemu:///system list --all').stderr).toContain('Permission denied');
		const noPassword = sshExec('sudoPassword', 'sudo -n true');
		expect(noPassword.code).toBe(1);
		expect(noPassword.stderr).toMatch(/a password is required/);
		const viaSudo = sshExec('sudoPassword', "sudo -S -p '' virsh -c qemu:///system domstate --domain lvb-running", { input: `${lab.users.sudoPassword.password}\n` });
		expect(viaSudo.stdout.trim()).toBe('running');
		expect(viaSudo.code).toBe(0);
	});

	test('lvbpass (libvirt group) reaches libvirt directly', () => {
		const r = sshExec('password', 'virsh -c qemu:///system domstate --domain lvb-paused');
		expect(r.code).toBe(0);
		expect(r.stdout.trim()).toBe('paused');
	});
});

describe('real VMs (qemu:///system)', () => {
	test('every lab VM is in its promised state', () => {
		// One ssh call: the names go through shq, so this is also a check of the quoting helper.
		const script = lab.vms.map((v) => `virsh -c qemu:///system domstate --domain ${shq(v.name)} | head -1`).join('; ');
		const r = sshExec('root', script);
		expect(r.stderr).toBe('');
		expect(r.stdout.trim().split('\n')).toEqual(lab.vms.map((v) => v.state));
	});

	test('domblklist matches the recorded disks', () => {
		for (const vm of lab.vms.filter((v) => !v.hostile)) {
			const r = virshLocal(lab.systemUri, 'domblklist', '--details', '--domain', vm.name);
			expect(r.code).toBe(0);
			const rows = r.stdout.trim().split('\n').map((l) => l.trim().split(/\s+/));
			expect(rows.map((x) => x[2])).toEqual(vm.disks.map((d) => d.target));
			for (const d of vm.disks.filter((x) => x.type !== 'network')) {
				expect(rows.find((x) => x[2] === d.target)?.[3]).toBe(d.path ?? '-');
			}
		}
	});

	test('the off-chain vda is a 3-level qcow2 chain holding the recorded data', () => {
		const vda = lab.vms.find((v) => v.name === 'lvb-off-chain')!.disks[0];
		const info = JSON.parse(
			sshExec('root', `qemu-img info -U --backing-chain --output=json ${shq(vda.path!)}`).stdout,
		) as Array<{ filename: string; format: string; 'virtual-size': number; 'actual-size': number }>;
		expect(info.map((i) => i.filename)).toEqual([vda.path, ...vda.backingChain]);
		expect(info[0]['virtual-size']).toBe(64 * 1024 * 1024);
		const cmds = vda.data!.map((e) => `-c ${shq(`read -P 0x${e.pattern.toString(16)} ${e.offset} ${e.length}`)}`).join(' ');
		const r = sshExec('root', `qemu-io -r -U -f qcow2 ${cmds} ${shq(vda.path!)}`);
		expect(r.code).toBe(0);
		expect(r.stdout).not.toMatch(/verification failed/i);
		expect(r.stdout.match(/^read /gm)?.length).toBe(vda.data!.length);
	});

	test('disk images are sparse (allocated < virtual)', () => {
		for (const vm of lab.vms) {
			for (const d of vm.disks.filter((x) => x.type === 'file' && x.path)) {
				const st = fs.statSync(d.path!);
				expect(st.blocks * 512).toBeLessThan(d.virtualSize!);
			}
		}
	});

	test('odd disks: block device, network and cdrom as recorded', () => {
		const odd = lab.vms.find((v) => v.name === 'lvb-odd-disks')!;
		expect(odd.disks.map((d) => d.type)).toEqual(expect.arrayContaining(['file', 'network']));
		expect(odd.disks.find((d) => d.device === 'cdrom')).toBeDefined();
		const block = odd.disks.find((d) => d.type === 'block');
		if (block) expect(fs.statSync(block.path!).isBlockDevice()).toBe(true);
	});
});

describe('libvirt test driver files', () => {
	test(`fleet lists ${500} domains in the recorded states`, () => {
		expect(lab.fleetCount).toBe(500);
		const r = sshExec('root', `virsh -c ${shq(lab.fleetUri)} list --all --name | grep -c .`);
		expect(r.stdout.trim()).toBe('500');
		const running = virshLocal(lab.fleetUri, 'list', '--state-running', '--uuid').stdout.trim().split('\n');
		expect(running.length).toBe(lab.fleetStates.running);
		const blk = virshLocal(lab.fleetUri, 'domblklist', '--domain', 'lvb-fleet-0000').stdout.trim().split('\n');
		expect(blk).toHaveLength(lab.fleetDisksPerVm);
		for (const row of blk) expect(fs.existsSync(row.trim().split(/\s+/)[1])).toBe(true);
	});

	test('every hostile test-driver name resolves to its recorded state', () => {
		expect(lab.hostileNames.length).toBeGreaterThan(10);
		expect(virshLocal(lab.hostileUri, 'list', '--all', '--uuid').stdout.trim().split('\n')).toHaveLength(lab.hostileNames.length);
		for (const d of lab.hostileDomains) {
			const r = virshLocal(lab.hostileUri, 'domstate', `--domain=${d.name}`);
			expect({ name: d.name, out: r.stdout.trim() }).toEqual({ name: d.name, out: d.state });
		}
	});
});
