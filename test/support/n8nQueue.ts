/**
 * n8n in queue mode for tests and benches: a private redis-server on loopback, one `n8n start` (main)
 * and N `n8n worker` processes sharing one user folder (one SQLite database, one encryption key),
 * each with its own ports. Facts: /work/shared/LAB.md, "Queue mode".
 *
 * Which process ran an execution is in the workers' logs: each worker logs
 * "Worker started execution <id> (job <job>)" when it takes a job (n8n 2.41 scaling/job-processor).
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, promises as fs, readFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { freePort, type N8nInstance, type N8nServer } from './n8n';

/** A redis-server of our own: loopback, no persistence, stopped by its pid file. */
export interface Redis {
	port: number;
	stop(): Promise<void>;
}

export async function startRedis(): Promise<Redis> {
	const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'lvb-redis-'));
	const port = await freePort();
	const pidFile = path.join(dir, 'redis.pid');
	const started = spawnSync(
		'redis-server',
		['--bind', '127.0.0.1', '--port', String(port), '--save', '', '--appendonly', 'no', '--daemonize', 'yes', '--pidfile', pidFile, '--dir', dir, '--logfile', path.join(dir, 'redis.log')],
		{ encoding: 'utf8' },
	);
	if (started.status !== 0) throw new Error(`redis-server did not start (exit ${started.status}): ${started.stderr}${started.stdout}`);
	const deadline = Date.now() + 20_000;
	while (spawnSync('redis-cli', ['-h', '127.0.0.1', '-p', String(port), 'ping'], { encoding: 'utf8' }).stdout.trim() !== 'PONG') {
		if (Date.now() > deadline) throw new Error(`redis-server on 127.0.0.1:${port} did not answer PING within 20 s`);
		await new Promise((resolve) => setTimeout(resolve, 100));
	}
	return {
		port,
		stop: async () => {
			if (existsSync(pidFile)) {
				const pid = Number(readFileSync(pidFile, 'utf8').trim());
				if (pid > 0 && alive(pid)) {
					process.kill(pid, 'SIGTERM');
					const until = Date.now() + 10_000;
					while (alive(pid) && Date.now() < until) await new Promise((resolve) => setTimeout(resolve, 100));
					if (alive(pid)) process.kill(pid, 'SIGKILL');
				}
			}
			await fs.rm(dir, { recursive: true, force: true });
		},
	};
}

export function alive(pid: number): boolean {
	try {
		process.kill(pid, 0);
		return true;
	} catch {
		return false;
	}
}

/** Processes whose parent is `pid` (n8n's task runner). */
export function childPids(pid: number): number[] {
	return spawnSync('pgrep', ['-P', String(pid)], { encoding: 'utf8' })
		.stdout.split('\n')
		.filter(Boolean)
		.map(Number);
}

/** One `n8n worker`. */
export interface N8nWorker {
	label: string;
	pid: number;
	/** Its health server (QUEUE_HEALTH_CHECK_PORT). */
	healthUrl: string;
	/** The last ~200 kB of its stdout and stderr. */
	log(): string;
	/** Ids of the executions it took ("Worker started execution <id>"), in order. */
	executions(): string[];
	/** SIGKILL to the worker and its children (its task runner); resolves when it has exited. */
	kill9(): Promise<void>;
	stop(): Promise<void>;
}

export interface QueueSetup {
	redis: Redis;
	main: N8nServer;
	workers: N8nWorker[];
	/** The worker that logged taking execution `id`, if any. */
	workerOf(executionId: string): N8nWorker | undefined;
	/** Starts one more worker (e.g. after a kill), with its own concurrency or the setup's. */
	addWorker(concurrency?: number): Promise<N8nWorker>;
	/** Stops a worker (SIGTERM) and drops it from `workers`. */
	removeWorker(worker: N8nWorker): Promise<void>;
	stop(): Promise<void>;
}

/** The variables main and workers share to run in queue mode against `redisPort`. */
export function queueEnv(redisPort: number): Record<string, string> {
	return {
		EXECUTIONS_MODE: 'queue',
		QUEUE_BULL_REDIS_HOST: '127.0.0.1',
		QUEUE_BULL_REDIS_PORT: String(redisPort),
		OFFLOAD_MANUAL_EXECUTIONS_TO_WORKERS: 'true',
		N8N_PERSONALIZATION_ENABLED: 'false',
	};
}

const STARTED = /Worker started execution (\S+) \(job/g;

async function startWorker(n8n: N8nInstance, label: string, env: Record<string, string>, concurrency: number, timeoutMs: number): Promise<N8nWorker> {
	const [brokerPort, healthPort] = [await freePort(), await freePort()];
	const child: ChildProcess = spawn(n8n.paths.nodeBin, [n8n.paths.n8nBin, 'worker', `--concurrency=${concurrency}`], {
		cwd: n8n.userFolder,
		env: {
			...n8n.env,
			...env,
			N8N_RUNNERS_BROKER_PORT: String(brokerPort),
			QUEUE_HEALTH_CHECK_ACTIVE: 'true',
			QUEUE_HEALTH_CHECK_PORT: String(healthPort),
			N8N_WORKER_SERVER_ADDRESS: '127.0.0.1',
		},
		stdio: ['ignore', 'pipe', 'pipe'],
	});
	let log = '';
	const seen: string[] = [];
	const keep = (d: Buffer) => {
		const text = d.toString('utf8');
		for (const match of text.matchAll(STARTED)) seen.push(match[1]);
		log = (log + text).slice(-200_000);
	};
	child.stdout?.on('data', keep);
	child.stderr?.on('data', keep);
	const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
	const running = () => child.exitCode === null && child.signalCode === null;
	const pid = child.pid ?? 0;
	const worker: N8nWorker = {
		label,
		pid,
		healthUrl: `http://127.0.0.1:${healthPort}/healthz`,
		log: () => log,
		executions: () => [...seen],
		kill9: async () => {
			const children = childPids(pid);
			if (running()) {
				child.kill('SIGKILL');
				await exited;
			}
			for (const orphan of children) if (alive(orphan)) process.kill(orphan, 'SIGKILL');
		},
		stop: async () => {
			if (running()) {
				child.kill('SIGTERM');
				const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
				await exited;
				clearTimeout(timer);
			}
		},
	};
	// Ready = its health server says the database and redis are connected (/healthz/readiness 200).
	const deadline = Date.now() + timeoutMs;
	for (;;) {
		if (!running() || Date.now() > deadline) {
			await worker.stop();
			throw new Error(`n8n worker ${label} did not come up:\n${log.split('\n').slice(-40).join('\n')}`);
		}
		const status = await fetch(`${worker.healthUrl}/readiness`, { signal: AbortSignal.timeout(5_000) }).then(
			(response) => response.status,
			() => 0,
		);
		if (status === 200) break;
		await new Promise((resolve) => setTimeout(resolve, 250));
	}
	n8n.timings.push({ command: `n8n worker ${label} (until ready)`, ms: timeoutMs - (deadline - Date.now()), exitCode: 0 });
	return worker;
}

/**
 * redis, `n8n start` in queue mode (waiting for `waitForWebhooks` as startServer does) and `workers`
 * `n8n worker --concurrency=<concurrency>` processes, all on `n8n`'s user folder. Everything started is
 * stopped again if a part fails to come up.
 */
export async function startQueue(
	n8n: N8nInstance,
	options: { workers: number; concurrency?: number; waitForWebhooks?: string[]; env?: Record<string, string>; timeoutMs?: number },
): Promise<QueueSetup> {
	const redis = await startRedis();
	const env = { ...queueEnv(redis.port), ...options.env };
	const timeoutMs = options.timeoutMs ?? 180_000;
	const concurrency = options.concurrency ?? 5;
	const workers: N8nWorker[] = [];
	/** Workers ever started (their labels W1, W2, ... stay unique after a remove). */
	let started = options.workers;
	let main: N8nServer | undefined;
	const stop = async () => {
		await Promise.all(workers.map((worker) => worker.stop()));
		workers.length = 0;
		await main?.stop();
		await redis.stop();
	};
	try {
		// The main first: it runs the database migrations the workers expect.
		main = await n8n.startServer({ waitForWebhooks: options.waitForWebhooks, env, timeoutMs });
		const results = await Promise.allSettled(Array.from({ length: options.workers }, (_, i) => startWorker(n8n, `W${i + 1}`, env, concurrency, timeoutMs)));
		for (const result of results) if (result.status === 'fulfilled') workers.push(result.value);
		const failed = results.find((result) => result.status === 'rejected');
		if (failed) throw failed.reason;
	} catch (error) {
		await stop();
		throw error;
	}
	const setup: QueueSetup = {
		redis,
		main,
		workers,
		workerOf: (id) => workers.find((worker) => worker.executions().includes(id)),
		addWorker: async (own = concurrency) => {
			const worker = await startWorker(n8n, `W${++started}`, env, own, timeoutMs);
			workers.push(worker);
			return worker;
		},
		removeWorker: async (worker) => {
			await worker.stop();
			workers.splice(workers.indexOf(worker), 1);
		},
		stop,
	};
	return setup;
}
