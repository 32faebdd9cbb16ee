// Helpers that drive a REAL n8n (the npm package, run by its own CLI under Node 24) for e2e tests.
//
// - ensureN8n(): installs/locates Node 24 + n8n via scripts/n8n/install.sh (cached outside the repo).
// - packPackage(): `npm pack` of this repo (dist must be built) into a temp dir.
// - createUserFolder(tgz): a fresh N8N_USER_FOLDER with the tarball installed exactly like n8n's
//   Community Nodes installer does it, and an N8nInstance to import credentials/workflows and run them.
//
// Measured facts and workarounds: /work/shared/LAB.md, "Real n8n on this machine kind".
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, promises as fs } from 'node:fs';
import { createServer } from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';

export const REPO_ROOT = path.resolve(__dirname, '..', '..');
export const PACKAGE_NAME = 'n8n-nodes-libvirt-backup';
export const N8N_VERSION = process.env.N8N_VERSION ?? '2.41.1';
export const NODE_VERSION = process.env.NODE_VERSION ?? '24.22.3';

export interface N8nPaths {
	cacheDir: string;
	/** Directory holding the Node 24 `node` binary; put first on PATH for n8n's child processes. */
	nodeBinDir: string;
	nodeBin: string;
	n8nBin: string;
}

export interface CommandResult {
	exitCode: number;
	/** Set when the process was killed by a signal (exitCode is then 128). */
	signal?: string;
	stdout: string;
	stderr: string;
	ms: number;
}

export interface RunError {
	message?: string;
	description?: string | null;
	name?: string;
	node?: { name?: string; type?: string };
}

/** The run JSON `n8n execute` prints (a serialized IRun); only the parts tests read are typed. */
export interface RunJson {
	status?: string;
	finished?: boolean;
	mode?: string;
	data?: {
		resultData?: {
			runData?: Record<
				string,
				Array<{
					executionStatus?: string;
					error?: RunError;
					data?: { main?: Array<Array<{ json: Record<string, unknown> }> | null> };
				}>
			>;
			error?: RunError;
			lastNodeExecuted?: string;
		};
	};
}

/** A running `n8n start`. */
export interface N8nServer {
	url: string;
	pid: number;
	/** The last ~200 kB of its stdout and stderr. */
	log(): string;
	stop(): Promise<void>;
}

export interface ExecuteResult extends CommandResult {
	/** The parsed run JSON, or undefined when n8n printed none (e.g. it crashed before running). */
	run: RunJson | undefined;
}

/** json of every item on output `outputIndex` of the node's first run (empty when it did not run). */
export function nodeOutput(run: RunJson | undefined, nodeName: string, outputIndex = 0): Array<Record<string, unknown>> {
	const items = run?.data?.resultData?.runData?.[nodeName]?.[0]?.data?.main?.[outputIndex] ?? [];
	return items.map((i) => i.json);
}

export interface CredentialInput {
	/** 16-char alphanumeric like n8n's own ids; generated when absent. */
	id?: string;
	name: string;
	type: string;
	/** Plain (decrypted) data: n8n encrypts it on import with the instance's N8N_ENCRYPTION_KEY. */
	data: Record<string, unknown>;
}

export interface Timing {
	command: string;
	ms: number;
	exitCode: number;
}

// ---------------------------------------------------------------------------------------------
// Process helpers

/** Environment for child processes: no jest/npm-run leftovers that change n8n's or npm's behaviour. */
function cleanEnv(extra: Record<string, string> = {}, nodeBinDir?: string): NodeJS.ProcessEnv {
	const env: NodeJS.ProcessEnv = {};
	for (const [key, value] of Object.entries(process.env)) {
		if (value === undefined) continue;
		// jest sets NODE_ENV=test (n8n treats that as its own test mode); `npm run` exports npm_* config
		// (e.g. npm_config_prefix, npm_lifecycle_*), which must not leak into the nested npm/n8n runs.
		if (key === 'NODE_ENV' || key === 'NODE_OPTIONS' || key.startsWith('JEST_')) continue;
		if (key.startsWith('npm_') && !/^npm_config_(registry|cache|userconfig|https?_proxy|proxy|noproxy|cafile|strict_ssl)$/i.test(key)) continue;
		if (key.startsWith('N8N_') || key.startsWith('DB_')) continue; // never inherit another instance's config
		env[key] = value;
	}
	if (nodeBinDir) env.PATH = `${nodeBinDir}${path.delimiter}${env.PATH ?? ''}`;
	return { ...env, ...extra };
}

function run(
	cmd: string,
	args: string[],
	opts: { cwd?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number } = {},
): Promise<CommandResult> {
	const started = Date.now();
	return new Promise((resolve, reject) => {
		const child = spawn(cmd, args, {
			cwd: opts.cwd,
			env: opts.env ?? cleanEnv(),
			stdio: ['ignore', 'pipe', 'pipe'],
		});
		let stdout = '';
		let stderr = '';
		child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
		child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
		const timer = opts.timeoutMs
			? setTimeout(() => {
					stderr += `\n[test/support/n8n] killed after ${opts.timeoutMs} ms`;
					child.kill('SIGKILL');
				}, opts.timeoutMs)
			: undefined;
		child.on('error', (err) => {
			if (timer) clearTimeout(timer);
			reject(err);
		});
		child.on('close', (code, signal) => {
			if (timer) clearTimeout(timer);
			resolve({ exitCode: code ?? (signal ? 128 : 1), signal: signal ?? undefined, stdout, stderr, ms: Date.now() - started });
		});
	});
}

function failMessage(what: string, r: CommandResult): string {
	const tail = (s: string) => s.split('\n').slice(-40).join('\n');
	return `${what} failed (exit ${r.exitCode}, ${r.ms} ms)\n--- stdout (tail) ---\n${tail(r.stdout)}\n--- stderr (tail) ---\n${tail(r.stderr)}`;
}

async function mustRun(what: string, cmd: string, args: string[], opts: Parameters<typeof run>[2] = {}) {
	const r = await run(cmd, args, opts);
	if (r.exitCode !== 0) throw new Error(failMessage(what, r));
	return r;
}

/** A TCP port that was free a moment ago (for N8N_RUNNERS_BROKER_PORT). */
export function freePort(): Promise<number> {
	return new Promise((resolve, reject) => {
		const srv = createServer();
		srv.unref();
		srv.on('error', reject);
		srv.listen(0, '127.0.0.1', () => {
			const addr = srv.address();
			srv.close(() => (addr && typeof addr === 'object' ? resolve(addr.port) : reject(new Error('no port'))));
		});
	});
}

const ALNUM = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';
/** n8n's ids (workflows, credentials) are 16-char alphanumeric nano ids. */
export function n8nId(length = 16): string {
	const bytes = randomBytes(length);
	let id = '';
	for (let i = 0; i < length; i++) id += ALNUM[bytes[i] % ALNUM.length];
	return id;
}

/**
 * n8n prints the run JSON (JSON.stringify(run, null, 2)) after banner/log lines, on success
 * (`--rawOutput`) and on failure ("Execution was NOT successful ... ====") alike. Parse from the first
 * line that is exactly "{" to the next line that is exactly "}"; fall back to first '{' .. last '}'.
 */
export function parseRunJson(stdout: string): RunJson | undefined {
	const lines = stdout.split('\n');
	const start = lines.findIndex((l) => l === '{');
	if (start >= 0) {
		const end = lines.findIndex((l, i) => i > start && l === '}');
		if (end > start) {
			try {
				return JSON.parse(lines.slice(start, end + 1).join('\n'));
			} catch {
				/* fall through */
			}
		}
	}
	const a = stdout.indexOf('{');
	const b = stdout.lastIndexOf('}');
	if (a >= 0 && b > a) {
		try {
			return JSON.parse(stdout.slice(a, b + 1));
		} catch {
			/* not JSON */
		}
	}
	return undefined;
}

// ---------------------------------------------------------------------------------------------
// Install / pack

let ensured: Promise<N8nPaths> | undefined;

/** Runs scripts/n8n/install.sh (a no-op taking ~10 ms when the cache is complete). */
export function ensureN8n(): Promise<N8nPaths> {
	ensured ??= (async () => {
		const r = await mustRun('scripts/n8n/install.sh', 'bash', [path.join(REPO_ROOT, 'scripts/n8n/install.sh')], {
			cwd: REPO_ROOT,
			env: cleanEnv({
				N8N_VERSION,
				NODE_VERSION,
				...(process.env.N8N_CACHE_DIR ? { N8N_CACHE_DIR: process.env.N8N_CACHE_DIR } : {}),
			}),
		});
		const cacheDir = r.stdout.trim().split('\n').pop()!.trim();
		const nodeBinDir = path.join(cacheDir, `node-${NODE_VERSION}`, 'bin');
		const paths: N8nPaths = {
			cacheDir,
			nodeBinDir,
			nodeBin: path.join(nodeBinDir, 'node'),
			n8nBin: path.join(cacheDir, `n8n-${N8N_VERSION}`, 'node_modules', '.bin', 'n8n'),
		};
		for (const p of [paths.nodeBin, paths.n8nBin, path.join(cacheDir, `n8n-${N8N_VERSION}`, '.complete')]) {
			if (!existsSync(p)) throw new Error(`install.sh finished but ${p} is missing`);
		}
		return paths;
	})();
	ensured.catch(() => (ensured = undefined));
	return ensured;
}

async function mkTemp(prefix: string): Promise<string> {
	return fs.mkdtemp(path.join(os.tmpdir(), prefix));
}

/** `npm pack` of the repo into a fresh temp dir; returns the .tgz path. Assumes `npm run build` ran. */
export async function packPackage(): Promise<string> {
	const pkg = JSON.parse(await fs.readFile(path.join(REPO_ROOT, 'package.json'), 'utf8'));
	const missing = [...(pkg.n8n?.nodes ?? []), ...(pkg.n8n?.credentials ?? [])].filter(
		(f: string) => !existsSync(path.join(REPO_ROOT, f)),
	);
	if (missing.length) throw new Error(`dist is not built (missing ${missing.join(', ')}): run \`npm run build\``);
	const dest = await mkTemp('lvb-pack-');
	const r = await mustRun('npm pack', 'npm', ['pack', '--json', '--pack-destination', dest], {
		cwd: REPO_ROOT,
		env: cleanEnv(),
	});
	const info = JSON.parse(r.stdout.slice(r.stdout.indexOf('[')));
	return path.join(dest, info[0].filename);
}

// ---------------------------------------------------------------------------------------------
// Instance

export class N8nInstance {
	readonly timings: Timing[] = [];
	readonly env: NodeJS.ProcessEnv;
	private readonly workDir: string;

	constructor(
		readonly paths: N8nPaths,
		/** N8N_USER_FOLDER; n8n keeps its data (SQLite, config, nodes/) in `<userFolder>/.n8n`. */
		readonly userFolder: string,
		readonly encryptionKey: string,
		readonly brokerPort: number,
	) {
		this.workDir = path.join(userFolder, 'test-io');
		this.env = cleanEnv(
			{
				N8N_USER_FOLDER: userFolder,
				N8N_ENCRYPTION_KEY: encryptionKey,
				N8N_DIAGNOSTICS_ENABLED: 'false',
				N8N_VERSION_NOTIFICATIONS_ENABLED: 'false',
				N8N_TEMPLATES_ENABLED: 'false',
				N8N_ENFORCE_SETTINGS_FILE_PERMISSIONS: 'true',
				// Two n8n processes at once need distinct task-broker ports (default 5679).
				N8N_RUNNERS_BROKER_PORT: String(brokerPort),
				N8N_LOG_LEVEL: process.env.LVB_N8N_LOG_LEVEL ?? 'info',
				// n8n 2.41's default expression engine 'vm' (isolated-vm) makes `n8n execute` segfault (exit 139)
				// at process.exit in ~1 of 3 runs on Node 24.22.3, AFTER printing a complete run (core dump: a
				// thread still running JS while V8 tears down). 'legacy' ran 16/16 clean. Override to test 'vm'.
				N8N_EXPRESSION_ENGINE: process.env.LVB_N8N_EXPRESSION_ENGINE ?? 'legacy',
			},
			paths.nodeBinDir,
		);
	}

	get nodesDir(): string {
		return path.join(this.userFolder, '.n8n', 'nodes');
	}

	/** Runs `n8n <args>` with Node 24; never throws on a non-zero exit. */
	async n8n(args: string[], timeoutMs = 120_000): Promise<CommandResult> {
		const r = await run(this.paths.nodeBin, [this.paths.n8nBin, ...args], {
			cwd: this.userFolder,
			env: this.env,
			timeoutMs,
		});
		this.timings.push({ command: `n8n ${args.join(' ')}`, ms: r.ms, exitCode: r.exitCode });
		return r;
	}

	private async writeIo(name: string, content: unknown): Promise<string> {
		await fs.mkdir(this.workDir, { recursive: true });
		const file = path.join(this.workDir, name);
		await fs.writeFile(file, JSON.stringify(content, null, 2), { mode: 0o600 });
		return file;
	}

	/** Imports credentials (plain data, encrypted by n8n on import) in ONE CLI call; returns their references. */
	async importCredentials(creds: CredentialInput[]): Promise<Array<{ id: string; name: string }>> {
		const withIds = creds.map((c) => ({ ...c, id: c.id ?? n8nId() }));
		const file = await this.writeIo(`credentials-${n8nId(6)}.json`, withIds);
		const r = await this.n8n(['import:credentials', `--input=${file}`]);
		await fs.rm(file, { force: true }); // it holds private keys in clear text
		const n = withIds.length;
		if (r.exitCode !== 0 || !new RegExp(`Successfully imported ${n} credential`).test(r.stdout + r.stderr)) {
			throw new Error(failMessage(`n8n import:credentials (${withIds.map((c) => c.name).join(', ')})`, r));
		}
		return withIds.map(({ id, name }) => ({ id, name }));
	}

	async importCredential(cred: CredentialInput): Promise<{ id: string; name: string }> {
		return (await this.importCredentials([cred]))[0];
	}

	/**
	 * Imports workflows (file paths or objects) in ONE CLI call (`--separate`). `replace` maps literal
	 * strings (e.g. REPLACE_CREDENTIAL_ID) to values throughout the JSON; `id` forces the workflow id
	 * (else the file's id if it is a valid n8n id, else a fresh 16-char one). Returns the ids in order.
	 */
	async importWorkflows(
		workflows: Array<{ workflow: string | Record<string, unknown>; replace?: Record<string, string>; id?: string; name?: string }>,
	): Promise<string[]> {
		const dir = path.join(this.workDir, `workflows-${n8nId(6)}`);
		await fs.mkdir(dir, { recursive: true });
		const ids: string[] = [];
		for (const [i, w] of workflows.entries()) {
			let text = typeof w.workflow === 'string' ? await fs.readFile(w.workflow, 'utf8') : JSON.stringify(w.workflow);
			for (const [from, to] of Object.entries(w.replace ?? {})) text = text.split(from).join(to);
			const wf = JSON.parse(text);
			if (w.id) wf.id = w.id;
			else if (typeof wf.id !== 'string' || !/^[A-Za-z0-9]{1,21}$/.test(wf.id) || ids.includes(wf.id)) wf.id = n8nId();
			if (w.name) wf.name = w.name;
			ids.push(wf.id);
			await fs.writeFile(path.join(dir, `${String(i).padStart(3, '0')}-${wf.id}.json`), JSON.stringify(wf, null, 2));
		}
		const r = await this.n8n(['import:workflow', '--separate', `--input=${dir}`]);
		const n = workflows.length;
		if (r.exitCode !== 0 || !new RegExp(`Successfully imported ${n} workflow`).test(r.stdout + r.stderr)) {
			throw new Error(failMessage('n8n import:workflow', r));
		}
		return ids;
	}

	async importWorkflow(workflow: string | Record<string, unknown>, replace: Record<string, string> = {}): Promise<string> {
		return (await this.importWorkflows([{ workflow, replace }]))[0];
	}

	/** `n8n execute --id=ID --rawOutput`: exit code 1 when a node throws; `run` is the parsed run JSON. */
	async execute(workflowId: string, timeoutMs = 180_000): Promise<ExecuteResult> {
		const r = await this.n8n(['execute', `--id=${workflowId}`, '--rawOutput'], timeoutMs);
		return { ...r, run: parseRunJson(r.stdout) };
	}

	/** `n8n publish:workflow --id=ID`: n8n 2.x registers the webhooks of published workflows only (at start). */
	async publishWorkflow(workflowId: string): Promise<void> {
		const r = await this.n8n(['publish:workflow', `--id=${workflowId}`]);
		if (r.exitCode !== 0) throw new Error(failMessage(`n8n publish:workflow --id=${workflowId}`, r));
	}

	/**
	 * `n8n start` on a free loopback port, resolved once /healthz answers and every `waitForWebhooks`
	 * path (GET `/webhook/<path>`, or POST for an entry `POST <path>`, without credentials, so only for
	 * webhooks with authentication: the probe must not run the workflow) is registered (refuses the
	 * probe with 401/403). `env` adds or
	 * overrides variables (e.g. N8N_DEFAULT_BINARY_DATA_MODE).
	 */
	async startServer(
		options: {
			/** A fixed port instead of a free one (the demo's editor on 5678). */
			port?: number;
			waitForWebhooks?: string[];
			env?: Record<string, string>;
			/** Flags for the n8n process's Node before n8n's script (e.g. --trace-gc, which NODE_OPTIONS refuses). */
			nodeArgs?: string[];
			timeoutMs?: number;
		} = {},
	): Promise<N8nServer> {
		const port = options.port ?? (await freePort());
		const env = { ...this.env, N8N_PORT: String(port), N8N_LISTEN_ADDRESS: '127.0.0.1', N8N_SECURE_COOKIE: 'false', ...options.env };
		const child = spawn(this.paths.nodeBin, [...(options.nodeArgs ?? []), this.paths.n8nBin, 'start'], { cwd: this.userFolder, env, stdio: ['ignore', 'pipe', 'pipe'] });
		let log = '';
		const keep = (d: Buffer) => {
			log = (log + d.toString('utf8')).slice(-200_000);
		};
		child.stdout.on('data', keep);
		child.stderr.on('data', keep);
		const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
		const server: N8nServer = {
			url: `http://127.0.0.1:${port}`,
			pid: child.pid ?? 0,
			log: () => log,
			stop: async () => {
				if (child.exitCode === null && child.signalCode === null) {
					child.kill('SIGTERM');
					const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
					await exited;
					clearTimeout(timer);
				}
			},
		};
		const started = Date.now();
		const deadline = started + (options.timeoutMs ?? 120_000);
		const answers = async (probe: string, ok: (status: number) => boolean) => {
			const [method, url] = probe.startsWith('POST ') ? ['POST', probe.slice(5)] : ['GET', probe];
			try {
				return ok((await fetch(url, { method, signal: AbortSignal.timeout(5_000) })).status);
			} catch {
				return false;
			}
		};
		const pending = [`${server.url}/healthz`, ...(options.waitForWebhooks ?? []).map((hook) => hook.replace(/^(POST )?/, `$1${server.url}/webhook/`))];
		while (pending.length > 0) {
			if (child.exitCode !== null || child.signalCode !== null || Date.now() > deadline) {
				await server.stop();
				throw new Error(`n8n start did not come up (waiting for ${pending[0]}):\n${log.split('\n').slice(-40).join('\n')}`);
			}
			// A registered webhook with authentication refuses a call without it (401/403); while n8n
			// is still starting, it answers 404 or 503 (/healthz is up before the webhooks are).
			if (await answers(pending[0], (status) => (pending[0].endsWith('/healthz') ? status === 200 : status === 401 || status === 403))) pending.shift();
			else await new Promise((resolve) => setTimeout(resolve, 250));
		}
		this.timings.push({ command: 'n8n start (until ready)', ms: Date.now() - started, exitCode: 0 });
		return server;
	}

	/** `n8n export:nodes`: the node type names this instance loaded. */
	async exportNodes(): Promise<string[]> {
		await fs.mkdir(this.workDir, { recursive: true });
		const file = path.join(this.workDir, 'nodes.json');
		const r = await this.n8n(['export:nodes', `--output=${file}`]);
		if (r.exitCode !== 0 || !existsSync(file)) throw new Error(failMessage('n8n export:nodes', r));
		const nodes: Array<{ name: string }> = JSON.parse(await fs.readFile(file, 'utf8'));
		return [...new Set(nodes.map((n) => n.name))];
	}

	async cleanup(): Promise<void> {
		await fs.rm(this.userFolder, { recursive: true, force: true });
	}
}

/**
 * A fresh N8N_USER_FOLDER with the packed tarball installed as
 * `<userFolder>/.n8n/nodes/node_modules/n8n-nodes-libvirt-backup`, the same way n8n 2.41's
 * CommunityPackagesService.downloadPackage does it: unpack the tarball into that dir, drop
 * dev/peer/optional dependencies from its package.json, `npm install --install-strategy=shallow
 * --ignore-scripts=true --package-lock=false ...` inside it, and list it in `.n8n/nodes/package.json`.
 * (n8n itself resolves `n8n-workflow` for the package through NODE_PATH, so the peer is not installed.)
 */
export async function createUserFolder(tgz: string): Promise<N8nInstance> {
	const paths = await ensureN8n();
	const userFolder = await mkTemp('lvb-n8n-');
	try {
		const nodesDir = path.join(userFolder, '.n8n', 'nodes');
		const pkgDir = path.join(nodesDir, 'node_modules', PACKAGE_NAME);
		await fs.mkdir(pkgDir, { recursive: true });
		await mustRun('tar -xzf', 'tar', ['-xzf', tgz, '-C', pkgDir, '--strip-components=1']);

		const pkgJsonPath = path.join(pkgDir, 'package.json');
		const pkgJson = JSON.parse(await fs.readFile(pkgJsonPath, 'utf8'));
		for (const key of ['devDependencies', 'peerDependencies', 'optionalDependencies']) delete pkgJson[key];
		await fs.writeFile(pkgJsonPath, JSON.stringify(pkgJson, null, 2));

		const npmEnv = cleanEnv({}, paths.nodeBinDir);
		await mustRun(
			'npm install (community package deps)',
			'npm',
			[
				'install',
				'--audit=false',
				'--fund=false',
				'--bin-links=false',
				'--install-strategy=shallow',
				'--ignore-scripts=true',
				'--package-lock=false',
				'--loglevel=error',
			],
			{ cwd: pkgDir, env: npmEnv, timeoutMs: 300_000 },
		);
		for (const dep of Object.keys(pkgJson.dependencies ?? {})) {
			if (!existsSync(path.join(pkgDir, 'node_modules', dep, 'package.json'))) {
				throw new Error(`runtime dependency ${dep} was not installed into ${pkgDir}/node_modules`);
			}
		}
		await fs.writeFile(
			path.join(nodesDir, 'package.json'),
			JSON.stringify(
				{ name: 'installed-nodes', private: true, dependencies: { [PACKAGE_NAME]: pkgJson.version } },
				null,
				2,
			),
		);
		// Fixed per instance; the same key is used by every CLI call against this user folder.
		const key = randomBytes(24).toString('hex');
		return new N8nInstance(paths, userFolder, key, await freePort());
	} catch (err) {
		await fs.rm(userFolder, { recursive: true, force: true });
		throw err;
	}
}

/** One line per CLI call, for test logs. */
export function formatTimings(timings: Timing[]): string {
	return timings.map((t) => `${String(t.ms).padStart(6)} ms  exit ${t.exitCode}  ${t.command.replace(/--input=\S+/, '--input=…')}`).join('\n');
}
