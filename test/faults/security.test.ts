// Security faults against a REAL n8n 2.41 (the packed package, as the Community Nodes installer puts
// it) and REAL users on the lab host:
// - a host key mismatch is refused before any authentication data is sent (the sshd log of the
//   connection shows no auth attempt; a control run with the right key and a wrong password does),
//   and the error names the key the server presented;
// - with "Skip Host Key Verification" every output item of every node, success and error, says so;
// - secrets (password, private key, passphrase, sudo password) are in no node output, error, n8n log
//   line (debug), CLI output or anywhere in n8n's database, after successes and failures alike;
// - the README's least-privilege setups work as documented: root with a restricted key, a sudo user
//   whose rule allows only /bin/sh (with and without password), a libvirt-group user for discovery only.
//
// The users, their sudo rules and a private sshd (own port, own log, the lab's host key) are made in
// beforeAll and removed in afterAll: the shared lab sshd serves fixed users and must not be restarted.
// Needs root on the lab machine (useradd, sudoers.d), as the lab itself does.
import { execFileSync } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { existsSync, promises as fs, readFileSync, statSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { loadLab, type Lab } from '../support/lab';
import { createUserFolder, ensureN8n, freePort, nodeOutput, packPackage, type CredentialInput, type ExecuteResult, type N8nInstance, type RunJson } from '../support/n8n';
import { createTestVm, testDestination, type TestVm } from '../support/testVm';
import { record } from './ledger';

jest.setTimeout(900_000);

const PKG = 'n8n-nodes-libvirt-backup.';
const SUDO_USER = 'lvbsecsudo';
const SUDOPW_USER = 'lvbsecsudopw';
const VIEW_USER = 'lvbsecview';
const USERS = [SUDO_USER, SUDOPW_USER, VIEW_USER];
const SUDOERS = '/etc/sudoers.d/lvb-security-test';
const SYSTEM_URI = 'qemu:///system';

// Distinctive markers: each secret holds its own token, plus space, quotes and $ (no shell may see them).
const tag = randomBytes(6).toString('hex');
const marker = (what: string) => `LVBSEC-${what}-${tag} $x'"!`;
const SECRET = {
	passphrase: marker('passphrase'),
	sudoPassword: marker('sudopw'),
	wrongSudoPassword: marker('wrongsudopw'),
	wrongPassword: marker('wrongpw'),
	unreachablePassword: marker('unreachpw'),
};

let lab: Lab;
let work: string;
let sshdPort: number;
let sshdLog: string;
let restrictedKey: string;
const userKeys: Record<string, string> = {};
let vm: TestVm;
let dest: { dest: string; cleanup(): void };
let n8n: N8nInstance | undefined;
let n8nLog: string;
const cliOutput: string[] = [];
const runs: Record<string, ExecuteResult> = {};
const sshdSlices: Record<string, string> = {};

const sh = (cmd: string, args: string[], input?: string) => execFileSync(cmd, args, { input, encoding: 'utf8', stdio: ['pipe', 'pipe', 'pipe'] });

/**
 * Search forms of a secret: itself, JSON-escaped, its distinctive token alone, and the token in
 * base64 at each of the three byte alignments it can have inside longer encoded text (the edge
 * characters, which mix in neighbouring bytes, are left out).
 */
function forms(secret: string): string[] {
	const token = secret.split(' ')[0];
	const base64 = [0, 1, 2].map((shift) => Buffer.from('\0'.repeat(shift) + token).toString('base64').slice(shift ? 4 : 0, -4));
	return [...new Set([secret, JSON.stringify(secret).slice(1, -1), token, ...base64])];
}

/** Secrets the runs used: the markers above and a line from the body of the (encrypted) private key. */
function secrets(): Record<string, string> {
	const keyBody = readFileSync(restrictedKey, 'utf8').split('\n')[2];
	const userKeyBodies = Object.fromEntries(Object.entries(userKeys).map(([u, k]) => [`private key of ${u}`, readFileSync(k, 'utf8').split('\n')[2]]));
	return { ...SECRET, 'private key (restricted root)': keyBody, ...userKeyBodies };
}

function leaks(text: string): string[] {
	const found: string[] = [];
	for (const [name, secret] of Object.entries(secrets())) {
		for (const form of forms(secret)) if (text.includes(form)) found.push(`${name} (as ${form === secret ? 'plain' : JSON.stringify(form)})`);
	}
	return found;
}

function checkPlace(name: string, text: string): string[] {
	const found = leaks(text);
	record({ kind: 'secret', name, leaked: found.length });
	return found;
}

function credential(name: string, data: Record<string, unknown>): CredentialInput {
	return {
		name,
		type: 'libvirtSshApi',
		data: {
			host: lab.host,
			port: sshdPort,
			hostKeys: lab.hostKeyFingerprint,
			skipHostKeyVerification: false,
			sudoMode: 'none',
			libvirtUri: SYSTEM_URI,
			...data,
		},
	};
}

const keyAuth = (user: string) => ({ username: user, authMethod: 'privateKey', privateKey: readFileSync(userKeys[user], 'utf8') });
const passwordAuth = (user: string, password: string) => ({ username: user, authMethod: 'password', password });

interface NodeSpec {
	name: string;
	type: string;
	parameters: Record<string, unknown>;
	credential: { id: string; name: string };
	onError?: string;
}

/** A workflow: a Manual Trigger, the nodes, and `edges` [from, to] (the trigger is "Start"). */
function workflow(name: string, nodes: NodeSpec[], edges: Array<[string, string]>): Record<string, unknown> {
	const connections: Record<string, { main: Array<Array<{ node: string; type: string; index: number }>> }> = {};
	for (const [from, to] of edges) (connections[from] ??= { main: [[]] }).main[0].push({ node: to, type: 'main', index: 0 });
	return {
		name,
		nodes: [
			{ parameters: {}, id: randomUUID(), name: 'Start', type: 'n8n-nodes-base.manualTrigger', typeVersion: 1, position: [0, 0] },
			...nodes.map((n, i) => ({
				parameters: n.parameters,
				id: randomUUID(),
				name: n.name,
				type: PKG + n.type,
				typeVersion: 1,
				position: [240 * (i + 1), 0],
				credentials: { libvirtSshApi: n.credential },
				...(n.onError ? { onError: n.onError } : {}),
			})),
		],
		connections,
		settings: { executionOrder: 'v1' },
	};
}

/**
 * The run JSON of `n8n execute` at log level debug: a failed run's JSON is a logger line (a colour
 * coded "HH:MM:SS info    {" ... "} { <log metadata> }") that test/support/n8n.ts cannot parse.
 */
function debugRunJson(stdout: string): RunJson | undefined {
	const lines = stdout.replace(/\x1b\[[0-9;]*m/g, '').split('\n');
	const start = lines.findIndex((l) => l === '{' || /\sinfo\s+\{$/.test(l));
	const end = lines.findIndex((l, i) => i > start && /^\}( \{.*\})?$/.test(l));
	if (start < 0 || end < 0) return undefined;
	return JSON.parse(`{\n${lines.slice(start + 1, end).join('\n')}\n}`) as RunJson;
}

/** Runs a workflow and keeps what the sshd logged while it ran. */
async function execute(key: string, id: string): Promise<ExecuteResult> {
	const before = statSync(sshdLog).size;
	const executed = await n8n!.execute(id);
	const r = { ...executed, run: debugRunJson(executed.stdout) };
	cliOutput.push(r.stdout, r.stderr);
	runs[key] = r;
	sshdSlices[key] = readFileSync(sshdLog, 'utf8').slice(before);
	return r;
}

function runErrors(run: RunJson | undefined): string {
	const errors: unknown[] = [run?.data?.resultData?.error];
	for (const node of Object.values(run?.data?.resultData?.runData ?? {})) for (const r of node) errors.push(r.error);
	return JSON.stringify(errors.filter(Boolean));
}

const errorText = (r: ExecuteResult) => `${runErrors(r.run)}\n${r.stdout}\n${r.stderr}`;

// Seven nodes, each with the parameters that make it work on the test VM's backup.
function sevenNodes(rootCred: { id: string; name: string }, otherCred: { id: string; name: string }, onError?: string): NodeSpec[] {
	const restoreFolder = `${dest.dest}-restored`;
	return [
		{ name: 'Discover VMs', type: 'libvirtDiscoverVms', parameters: { names: vm.name }, credential: rootCred, onError },
		{ name: 'Backup VM Disk', type: 'libvirtBackupVmDisk', parameters: { destination: dest.dest, mode: 'auto' }, credential: rootCred, onError },
		{ name: 'Verify Checksum', type: 'libvirtVerifyChecksum', parameters: {}, credential: otherCred, onError },
		{ name: 'List Backups', type: 'libvirtListBackups', parameters: { destination: dest.dest, vmNames: '', kinds: [], options: {} }, credential: otherCred, onError },
		{ name: 'Prune Old Backups', type: 'libvirtPruneBackups', parameters: { destination: dest.dest, vmNames: '', dryRun: true, keepLast: 5 }, credential: otherCred, onError },
		{ name: 'Export Archive', type: 'libvirtExportArchive', parameters: {}, credential: otherCred, onError },
		{ name: 'Restore VM Disk', type: 'libvirtRestoreVmDisk', parameters: { operation: 'restore', target: 'folder', folder: restoreFolder }, credential: otherCred, onError },
	];
}
const SEVEN = ['Discover VMs', 'Backup VM Disk', 'Verify Checksum', 'List Backups', 'Prune Old Backups', 'Export Archive', 'Restore VM Disk'];

function makeUsersAndSshd(): void {
	for (const u of USERS) {
		try {
			sh('userdel', ['-r', '-f', u]);
		} catch {
			/* absent: a clean start */
		}
		sh('useradd', ['-m', '-s', '/bin/bash', '-p', '*', u]);
	}
	const hash = sh('openssl', ['passwd', '-6', '-stdin'], `${SECRET.sudoPassword}\n`).trim();
	sh('usermod', ['-p', hash, SUDOPW_USER]);
	sh('usermod', ['-aG', 'libvirt', VIEW_USER]);
	// The README's rules, verbatim in kind: /bin/sh only, with and without password.
	const rules = [
		`Defaults:${SUDOPW_USER} timestamp_timeout=0, lecture=never`,
		`${SUDO_USER} ALL=(root) NOPASSWD: /bin/sh`,
		`${SUDOPW_USER} ALL=(root) /bin/sh`,
		'',
	].join('\n');
	const tmpRules = path.join(work, 'sudoers');
	writeFileSync(tmpRules, rules, { mode: 0o440 });
	sh('visudo', ['-cqf', tmpRules]);
	sh('install', ['-m', '0440', '-o', 'root', '-g', 'root', tmpRules, SUDOERS]);

	const keys = path.join(work, 'keys');
	const ak = path.join(work, 'authorized_keys');
	sh('mkdir', ['-p', keys, ak]);
	// sshd reads each user's authorized_keys as that user: the folders on the way must let them in.
	sh('chmod', ['0755', work, ak]);
	sh('chmod', ['0700', keys]);
	restrictedKey = path.join(keys, 'root-restricted');
	sh('ssh-keygen', ['-q', '-t', 'ed25519', '-N', SECRET.passphrase, '-C', 'n8n-backup', '-f', restrictedKey]);
	// README "Least privilege", option 1.
	const options = `from="${lab.host}",no-pty,no-agent-forwarding,no-port-forwarding,no-X11-forwarding`;
	writeFileSync(path.join(ak, 'root'), `${options} ${readFileSync(`${restrictedKey}.pub`, 'utf8')}`, { mode: 0o644 });
	for (const u of USERS) {
		userKeys[u] = path.join(keys, u);
		sh('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', u, '-f', userKeys[u]]);
		writeFileSync(path.join(ak, u), readFileSync(`${userKeys[u]}.pub`, 'utf8'), { mode: 0o644 });
	}

	sshdLog = path.join(work, 'sshd.log');
	writeFileSync(sshdLog, '');
	const config = path.join(work, 'sshd_config');
	writeFileSync(
		config,
		[
			`Port ${sshdPort}`,
			`ListenAddress ${lab.host}`,
			`HostKey ${lab.labDir}/ssh/ssh_host_ed25519_key`,
			`PidFile ${work}/sshd.pid`,
			`AuthorizedKeysFile ${ak}/%u`,
			`AllowUsers root ${USERS.join(' ')}`,
			'PermitRootLogin prohibit-password',
			'PubkeyAuthentication yes',
			'PasswordAuthentication yes',
			'KbdInteractiveAuthentication no',
			'UsePAM no',
			'StrictModes no',
			'LogLevel VERBOSE',
			'MaxStartups 50:30:100',
			'Subsystem sftp internal-sftp',
			// As the lab's sshd: skip root's ~/.bashrc (pyenv on this machine) so runs measure our code.
			'SetEnv SHLVL=1',
			'',
		].join('\n'),
		{ mode: 0o600 },
	);
	sh('/usr/sbin/sshd', ['-t', '-f', config]);
	sh('/usr/sbin/sshd', ['-f', config, '-E', sshdLog]);
}

function stopSshdAndUsers(): void {
	const pidFile = `${work}/sshd.pid`;
	if (existsSync(pidFile)) {
		try {
			process.kill(Number(readFileSync(pidFile, 'utf8').trim()), 'SIGTERM');
		} catch {
			/* already gone */
		}
	}
	for (const u of USERS) {
		try {
			sh('userdel', ['-r', '-f', u]);
		} catch {
			/* already gone */
		}
	}
	sh('rm', ['-f', SUDOERS]);
}

beforeAll(async () => {
	lab = loadLab();
	work = await fs.mkdtemp(path.join(os.tmpdir(), 'lvb-security-'));
	sshdPort = await freePort();
	makeUsersAndSshd();
	vm = createTestVm('security', [{ target: 'vda', format: 'qcow2', virtualMiB: 16, writes: [{ pattern: 0x5a, offsetMiB: 0, lengthMiB: 1 }] }], 'shutoff');
	// Like /var/lib/libvirt/images: the disk images are not readable by other users.
	vm.host(`chmod 0700 ${vm.dir}`);
	dest = testDestination('security');

	await ensureN8n();
	n8n = await createUserFolder(await packPackage());
	n8nLog = path.join(n8n.userFolder, 'n8n-debug.log');
	Object.assign(n8n.env, { N8N_LOG_LEVEL: 'debug', N8N_LOG_OUTPUT: 'console,file', N8N_LOG_FILE_LOCATION: n8nLog });

	const closedPort = await freePort();
	const creds = await n8n.importCredentials([
		credential('root restricted, skip verification', {
			username: 'root',
			authMethod: 'privateKey',
			privateKey: readFileSync(restrictedKey, 'utf8'),
			passphrase: SECRET.passphrase,
			hostKeys: '',
			skipHostKeyVerification: true,
		}),
		credential('sudo /bin/sh, skip verification', { ...keyAuth(SUDO_USER), sudoMode: 'nopasswd', hostKeys: '', skipHostKeyVerification: true }),
		credential('wrong password, skip verification', { ...passwordAuth(SUDOPW_USER, SECRET.wrongPassword), hostKeys: '', skipHostKeyVerification: true }),
		credential('host key mismatch', { ...passwordAuth(SUDOPW_USER, SECRET.sudoPassword), hostKeys: lab.wrongHostKeyFingerprint }),
		credential('wrong password', passwordAuth(SUDOPW_USER, SECRET.wrongPassword)),
		credential('sudo with password', { ...keyAuth(SUDOPW_USER), sudoMode: 'password', sudoPassword: SECRET.sudoPassword }),
		credential('wrong sudo password', { ...keyAuth(SUDOPW_USER), sudoMode: 'password', sudoPassword: SECRET.wrongSudoPassword }),
		credential('sudo without password', { ...keyAuth(SUDO_USER), sudoMode: 'nopasswd' }),
		credential('libvirt group', keyAuth(VIEW_USER)),
		credential('unreachable', { ...passwordAuth(SUDOPW_USER, SECRET.unreachablePassword), port: closedPort }),
	]);
	const [rootSkip, sudoSkip, badSkip, mismatch, badPassword, sudoPw, wrongSudoPw, sudo, view, unreachable] = creds;

	const discover = (c: { id: string; name: string }, onError?: string): NodeSpec => ({ name: 'Discover VMs', type: 'libvirtDiscoverVms', parameters: { names: vm.name }, credential: c, onError });
	const backup = (c: { id: string; name: string }, destination = dest.dest): NodeSpec => ({ name: 'Backup VM Disk', type: 'libvirtBackupVmDisk', parameters: { destination, mode: 'full' }, credential: c });
	const chain = (names: string[]): Array<[string, string]> => names.slice(1).map((to, i) => [names[i], to]);
	const okNodes = sevenNodes(rootSkip, sudoSkip);
	const failNodes = sevenNodes(badSkip, badSkip, 'continueRegularOutput');
	const fileAsDest = `${dest.dest}/not-a-folder`;
	vm.host(`touch ${fileAsDest}`);
	const wf = [
		['skipOk', workflow('skip verification: success', okNodes, [['Start', 'Discover VMs'], ['Discover VMs', 'Backup VM Disk'], ...SEVEN.slice(2).map((n): [string, string] => ['Backup VM Disk', n])])],
		// Every node straight from the trigger: no item carries an upstream node's warning.
		['skipFail', workflow('skip verification: errors', failNodes, SEVEN.map((n): [string, string] => ['Start', n]))],
		['mismatch', workflow('host key mismatch', [discover(mismatch)], [['Start', 'Discover VMs']])],
		['badPassword', workflow('wrong password', [discover(badPassword)], [['Start', 'Discover VMs']])],
		['sudoPw', workflow('sudo with password', [discover(sudoPw), backup(sudoPw)], chain(['Start', 'Discover VMs', 'Backup VM Disk']))],
		['wrongSudoPw', workflow('wrong sudo password', [discover(wrongSudoPw)], [['Start', 'Discover VMs']])],
		['sudo', workflow('sudo without password', [discover(sudo), backup(sudo)], chain(['Start', 'Discover VMs', 'Backup VM Disk']))],
		['view', workflow('libvirt group', [discover(view), backup(view)], chain(['Start', 'Discover VMs', 'Backup VM Disk']))],
		['unreachable', workflow('unreachable', [discover(unreachable)], [['Start', 'Discover VMs']])],
		['failingBackup', workflow('failing backup', [discover(sudoPw), backup(sudoPw, fileAsDest)], chain(['Start', 'Discover VMs', 'Backup VM Disk']))],
	] as const;
	const ids = await n8n.importWorkflows(wf.map(([, w]) => ({ workflow: w as Record<string, unknown> })));
	for (const [i, [key]] of wf.entries()) await execute(key, ids[i]);
});

afterAll(async () => {
	try {
		vm?.destroy();
		if (dest) {
			dest.cleanup();
			sh('rm', ['-rf', `${dest.dest}-restored`]);
		}
	} finally {
		if (work) stopSshdAndUsers();
		await n8n?.cleanup();
		if (work) await fs.rm(work, { recursive: true, force: true });
	}
});

const items = (key: string, node: string, output = 0) => nodeOutput(runs[key].run, node, output);
/** Items on every output of the node (Verify Checksum puts failed items on its second output). */
const allItems = (key: string, node: string) => (runs[key].run?.data?.resultData?.runData?.[node]?.[0]?.data?.main ?? []).flatMap((out) => (out ?? []).map((i) => i.json));

describe('host key', () => {
	test('a mismatch is refused before authentication, naming the key the server presented', () => {
		const r = runs.mismatch;
		const log = sshdSlices.mismatch;
		const auth = /Accepted |Failed |Postponed |authenticating user|Invalid user|Disconnected from user/;
		const ok = r.exitCode !== 0 && errorText(r).includes(lab.hostKeyFingerprint) && /Connection from/.test(log) && !auth.test(log);
		record({ kind: 'hostile', name: 'credential: pinned host key does not match (password auth)', handled: ok, ms: r.ms });
		expect(r.exitCode).not.toBe(0);
		expect(runErrors(r.run)).toContain(lab.hostKeyFingerprint);
		expect(log).toMatch(/Connection from/);
		expect(log).not.toMatch(auth);
		// Control: with the right key a password attempt IS in that log, so its absence above means something.
		expect(sshdSlices.badPassword).toMatch(new RegExp(`Failed password for ${SUDOPW_USER}`));
	});

	test('"Skip Host Key Verification" is in every item of every node, success and error', () => {
		const missing: string[] = [];
		for (const [key, expectError] of [['skipOk', false], ['skipFail', true]] as const) {
			for (const node of SEVEN) {
				const out = allItems(key, node);
				if (out.length === 0) missing.push(`${key}/${node}: no items (${runErrors(runs[key].run).slice(0, 300)})`);
				// Downstream of Backup the nodes use the sudo user's credential: the warning must be their own.
				const user = key === 'skipOk' && SEVEN.indexOf(node) >= 2 ? SUDO_USER : key === 'skipOk' ? 'root' : SUDOPW_USER;
				for (const [i, item] of out.entries()) {
					const w = String(item.hostKeyWarning ?? '');
					if (!w.includes('host key NOT verified') || !w.includes(`as ${user}.`)) missing.push(`${key}/${node}[${i}]: ${w || 'no hostKeyWarning'}`);
					if (expectError !== ('error' in item)) missing.push(`${key}/${node}[${i}]: error=${String(item.error)}`);
				}
			}
		}
		record({ kind: 'hostile', name: 'credential: skip host key verification (7 nodes, success and error items)', handled: missing.length === 0, ms: runs.skipOk.ms + runs.skipFail.ms });
		expect(missing).toEqual([]);
	});
});

describe('least privilege (README) on real users', () => {
	test('root with a restricted key (from=, no-pty, no forwarding) and a passphrase runs all seven nodes', () => {
		expect(runs.skipOk.exitCode).toBe(0);
		expect(items('skipOk', 'Backup VM Disk')[0]).toMatchObject({ vm: vm.name });
		expect(items('skipOk', 'Restore VM Disk')).toHaveLength(1);
	});

	test('a sudo user whose rule allows only /bin/sh, without and with password, discovers and backs up', () => {
		for (const key of ['sudo', 'sudoPw']) {
			expect({ key, exit: runs[key].exitCode, errors: runErrors(runs[key].run).slice(0, 500) }).toEqual({ key, exit: 0, errors: '[]' });
			expect(items(key, 'Backup VM Disk')[0]).toMatchObject({ vm: vm.name });
		}
	});

	test('a wrong sudo password fails at once with a clear error', () => {
		expect(runs.wrongSudoPw.exitCode).not.toBe(0);
		expect(runErrors(runs.wrongSudoPw.run)).toMatch(/refused the sudo password/);
	});

	test('a libvirt-group user discovers VMs, and its backup fails with a permission error (no hang)', () => {
		const r = runs.view;
		expect(items('view', 'Discover VMs').map((i) => i.name)).toEqual([vm.name]);
		expect(r.signal).toBeUndefined(); // not killed by the execute timeout
		expect(r.exitCode).not.toBe(0);
		expect(runErrors(r.run)).toMatch(/permission denied|not permitted|cannot (read|write)/i);
	});
});

describe('secrets', () => {
	test('the failure runs failed as intended (auth, unreachable, failing backup)', () => {
		expect(runErrors(runs.badPassword.run)).toMatch(/auth/i);
		expect(runs.unreachable.exitCode).not.toBe(0);
		expect(runs.failingBackup.exitCode).not.toBe(0);
		expect(items('failingBackup', 'Discover VMs')).toHaveLength(1);
	});

	test('no secret in node outputs, errors, CLI output, n8n debug log or database', () => {
		const report: Record<string, string[]> = {};
		const outputs = Object.entries(runs).map(([k, r]) => `${k}: ${JSON.stringify(r.run?.data?.resultData?.runData ?? {})}`);
		report['node outputs (run JSON of every run)'] = checkPlace('n8n node outputs (10 runs)', outputs.join('\n'));
		report['node errors'] = checkPlace('n8n node errors: message, description, stack (10 runs)', Object.values(runs).map((r) => runErrors(r.run)).join('\n'));
		report['CLI stdout/stderr'] = checkPlace('n8n CLI stdout/stderr (execute)', cliOutput.join('\n'));
		const log = readFileSync(n8nLog, 'utf8');
		report['n8n log'] = checkPlace('n8n log file (N8N_LOG_LEVEL=debug)', log);
		const db = path.join(n8n!.userFolder, '.n8n', 'database.sqlite');
		const executionData = sh('sqlite3', [db, 'SELECT data FROM execution_data']);
		report.execution_data = checkPlace('n8n database: execution_data table', executionData);
		report['database dump'] = checkPlace('n8n database: every table (sqlite3 .dump)', sh('sqlite3', [db, '.dump']));
		const files = sh('find', [path.join(n8n!.userFolder, '.n8n'), '-path', '*/nodes', '-prune', '-o', '-type', 'f', '-print']).split('\n').filter(Boolean);
		const raw = files.map((f) => readFileSync(f).toString('latin1')).join('\n');
		report['files'] = checkPlace(`n8n user folder: raw bytes of ${files.length} files (database.sqlite, wal, logs, config)`, raw);
		report['sshd log'] = checkPlace('sshd log (own sshd, all runs)', readFileSync(sshdLog, 'utf8'));
		// Controls: the search finds a secret in each form, and the places hold the runs' data, so an
		// empty finding is not a blind search or an empty haystack.
		expect(leaks(`x${JSON.stringify({ p: SECRET.sudoPassword })}`)).not.toEqual([]);
		for (const prefix of ['', 'x', 'xy']) expect(leaks(Buffer.from(`${prefix}${SECRET.passphrase}`).toString('base64'))).not.toEqual([]);
		expect(executionData).toContain(vm.name);
		expect(log).toMatch(/debug/i);
		expect(log).toContain('Discover VMs');
		expect(Object.values(report).flat()).toEqual([]);
	});
});
