/**
 * lib/ssh against the lab's real OpenSSH sshd on loopback: pinned host keys, every connection
 * failure's message, and remote commands that die with their channel.
 */
import * as net from 'node:net';
import { isLibvirtBackupError, type LibvirtBackupError } from '../../lib/errors';
import { SshConnection, withSsh, parseHostKeyPins } from '../../lib/ssh';
import { loadLab, sshExec } from '../support/lab';
import { labTarget } from '../support/targets';

jest.setTimeout(60_000);

async function connectError(target: Parameters<typeof SshConnection.connect>[0]): Promise<LibvirtBackupError> {
	try {
		(await SshConnection.connect(target)).close();
	} catch (error) {
		if (isLibvirtBackupError(error)) return error;
		throw error;
	}
	throw new Error('connection unexpectedly succeeded');
}

/** Processes on the lab host whose command line contains the marker. */
function remoteProcesses(marker: string): string {
	return sshExec('root', `pgrep -af -- ${marker} | grep -v pgrep || true`).stdout.trim();
}

async function waitUntilGone(marker: string): Promise<string> {
	let left = remoteProcesses(marker);
	for (let i = 0; i < 40 && left !== ''; i++) {
		await new Promise((resolve) => setTimeout(resolve, 100));
		left = remoteProcesses(marker);
	}
	return left;
}

describe('SSH host key pinning', () => {
	const lab = loadLab();

	test('connects with a pinned known_hosts line and runs a command', async () => {
		await withSsh(labTarget(), async (ssh) => {
			expect(ssh.hostKeyFingerprint).toBe(lab.hostKeyFingerprint);
			const result = await ssh.run(['printf', '%s', 'hello']);
			expect(result).toEqual({ exitCode: 0, stdout: 'hello', stderr: '' });
			expect(ssh.execCount).toBe(1);
		});
	});

	test('connects with a pinned SHA256 fingerprint', async () => {
		await withSsh(labTarget('root', { hostKeys: { pins: parseHostKeyPins(lab.hostKeyFingerprint) } }), async (ssh) => {
			expect((await ssh.run(['true'])).exitCode).toBe(0);
		});
	});

	test('a host key mismatch names the presented fingerprint, and is detected before authentication', async () => {
		// The unauthorized key would fail authentication: getting the mismatch proves the key check came first.
		const error = await connectError(labTarget('unauthorized', { hostKeys: { pins: parseHostKeyPins(lab.wrongHostKeyLine) } }));
		expect(error.code).toBe('SSH_HOST_KEY_MISMATCH');
		expect(error.message).toContain(`presented ${lab.hostKeyFingerprint}`);
		expect(error.message).toContain('ssh-keyscan -p 2222 127.0.0.1 | ssh-keygen -lf -');
	});

	test('no pinned key at all is refused, showing the key to verify', async () => {
		const error = await connectError(labTarget('root', { hostKeys: { pins: [] } }));
		expect(error.code).toBe('SSH_NO_HOST_KEY');
		expect(error.message).toContain(lab.hostKeyFingerprint);
	});

	test('the explicit insecure switch skips verification', async () => {
		await withSsh(labTarget('root', { hostKeys: { skipVerification: true } }), async (ssh) => {
			expect((await ssh.run(['true'])).exitCode).toBe(0);
		});
	});
});

describe('SSH authentication', () => {
	const lab = loadLab();

	test('a key not in authorized_keys fails with an authentication error', async () => {
		const error = await connectError(labTarget('unauthorized'));
		expect(error.code).toBe('SSH_AUTH_FAILED');
		expect(error.message).toMatch(/Authentication failed for root@127\.0\.0\.1:2222 with private key/);
	});

	test('password authentication works, and a wrong password fails clearly', async () => {
		const password = lab.users.password.password as string;
		await withSsh(labTarget('password', { auth: { method: 'password', password } }), async (ssh) => {
			expect((await ssh.run(['id', '-un'])).stdout.trim()).toBe('lvbpass');
		});
		const error = await connectError(labTarget('password', { auth: { method: 'password', password: `${password}x` } }));
		expect(error.code).toBe('SSH_AUTH_FAILED');
		expect(error.message).toMatch(/with password/);
		expect(error.message).not.toContain(password);
	});

	test('an encrypted key works with its passphrase and is refused clearly without it', async () => {
		await withSsh(labTarget('encrypted'), async (ssh) => expect((await ssh.run(['true'])).exitCode).toBe(0));
		const error = await connectError(labTarget('encrypted', { auth: { method: 'privateKey', privateKey: lab.users.encrypted.privateKey } }));
		expect(error.code).toBe('INVALID_INPUT');
		expect(error.message).toMatch(/private key could not be used.*passphrase/);
	});

	test('an RSA key authenticates', async () => {
		await withSsh(labTarget('rsa'), async (ssh) => expect((await ssh.run(['true'])).exitCode).toBe(0));
	});
});

describe('SSH reachability', () => {
	test('a closed port is reported as unreachable', async () => {
		const server = net.createServer();
		await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
		const port = (server.address() as net.AddressInfo).port;
		await new Promise((resolve) => server.close(resolve));
		const error = await connectError(labTarget('root', { port }));
		expect(error.code).toBe('SSH_UNREACHABLE');
		expect(error.message).toBe(`Cannot reach 127.0.0.1:${port}: connection refused (is sshd running on that port?)`);
	});

	test('a server that never answers times out with the configured limit', async () => {
		const sockets: net.Socket[] = [];
		const server = net.createServer((socket) => sockets.push(socket));
		await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
		try {
			const error = await connectError(labTarget('root', { port: (server.address() as net.AddressInfo).port, readyTimeoutMs: 1000 }));
			expect(error.code).toBe('SSH_TIMEOUT');
			expect(error.message).toMatch(/no SSH handshake within 1 s/);
		} finally {
			sockets.forEach((socket) => socket.destroy());
			server.close();
		}
	});
});

describe('remote commands', () => {
	test('a failing command carries its exit code and stderr tail', async () => {
		await withSsh(labTarget(), async (ssh) => {
			await expect(ssh.run(['sh', '-c', 'echo first >&2; echo last-words >&2; exit 3'], { label: 'demo' })).rejects.toMatchObject({
				code: 'COMMAND_FAILED',
				message: expect.stringMatching(/^demo failed on 127\.0\.0\.1 \(exit code 3\): first\nlast-words$/),
			});
		});
	});

	test('hostile arguments reach the remote command unchanged and execute nothing', async () => {
		const hostile = [`$(touch /tmp/lvb-ssh-pwned)`, '`touch /tmp/lvb-ssh-pwned`', 'a;b|c&d', "it's", 'new\nline', '-n', ''];
		await withSsh(labTarget(), async (ssh) => {
			const { stdout } = await ssh.run(['printf', '%s\\0', ...hostile]);
			expect(stdout.split('\0').slice(0, -1)).toEqual(hostile);
		});
		expect(sshExec('root', 'test -e /tmp/lvb-ssh-pwned && echo found || echo absent').stdout.trim()).toBe('absent');
	});

	test('hundreds of fast commands, sequential and in parallel, all report their exit code', async () => {
		await withSsh(labTarget(), async (ssh) => {
			for (let i = 0; i < 100; i++) expect((await ssh.run(['sh', '-c', `exit ${i % 3}`], { okExitCodes: [1, 2] })).exitCode).toBe(i % 3);
			const parallel = await Promise.all(Array.from({ length: 8 }, (_, i) => ssh.run(['printf', '%s', String(i)])));
			expect(parallel.map((result) => result.stdout)).toEqual(['0', '1', '2', '3', '4', '5', '6', '7']);
		});
	});

	test('a command whose whole reply arrives in one read (busy event loop) still reports its exit code', async () => {
		await withSsh(labTarget(), async (ssh) => {
			for (let i = 0; i < 5; i++) {
				const running = ssh.run(['sh', '-c', 'exit 3'], { okExitCodes: [3] });
				// Block the event loop in slices, so each reply (exec success, exit-status, close) piles up.
				for (let slice = 0; slice < 10; slice++) {
					const until = Date.now() + 60;
					while (Date.now() < until);
					await new Promise((resolve) => setImmediate(resolve));
				}
				expect((await running).exitCode).toBe(3);
			}
		});
	});

	test('output streams to callbacks while the command runs', async () => {
		const chunks: string[] = [];
		await withSsh(labTarget(), async (ssh) => {
			await ssh.run(['sh', '-c', 'for i in 1 2 3; do echo line$i; sleep 0.1; done'], { onStdout: (chunk) => chunks.push(chunk.toString()) });
		});
		expect(chunks.join('')).toBe('line1\nline2\nline3\n');
		expect(chunks.length).toBeGreaterThan(1);
	});

	test.each([
		['a timeout', 'COMMAND_TIMEOUT'],
		['cancelling the execution', 'ABORTED'],
		['a dropped connection', 'SSH_CONNECTION_LOST'],
	])('%s stops the remote process too, not just the channel', async (_label, code) => {
		const marker = `lvb-watchdog-${code}-${process.pid}`;
		const ssh = await SshConnection.connect(labTarget());
		const abort = new AbortController();
		try {
			const running = ssh.run(['sh', '-c', `sleep 300; echo ${marker}`], {
				timeoutMs: code === 'COMMAND_TIMEOUT' ? 700 : undefined,
				signal: abort.signal,
			});
			await new Promise((resolve) => setTimeout(resolve, 400));
			expect(remoteProcesses(marker)).toContain(marker);
			if (code === 'ABORTED') abort.abort();
			if (code === 'SSH_CONNECTION_LOST') ssh.close();
			await expect(running).rejects.toMatchObject({ code });
			expect(await waitUntilGone(marker)).toBe('');
		} finally {
			ssh.close();
		}
	});

	test('a time bound longer than a Node timer can hold does not stop the command at once', async () => {
		await withSsh(labTarget(), async (ssh) => {
			// 36 000 minutes (Backup VM Disk's Timeout): above 2^31-1 ms, a bare setTimeout fires after 1 ms.
			expect((await ssh.run(['sleep', '1'], { timeoutMs: 36_000 * 60_000 })).exitCode).toBe(0);
		});
	});

	test('sudo mode runs the command as root', async () => {
		await withSsh(labTarget('sudo'), async (ssh) => {
			expect((await ssh.run(['id', '-u'])).stdout.trim()).toBe('0');
		});
	});

	test('SFTP reads a file from the host', async () => {
		await withSsh(labTarget(), async (ssh) => {
			const sftp = await ssh.sftp();
			const data = await new Promise<Buffer>((resolve, reject) => sftp.readFile('/etc/hostname', (error, buffer) => (error ? reject(error) : resolve(buffer))));
			expect(data.toString().trim()).toBe(sshExec('root', 'cat /etc/hostname').stdout.trim());
		});
	});
});
