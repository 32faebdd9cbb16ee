// e2e: the packed npm tarball, installed into a REAL n8n 2.41.1 (Node 24) the way the Community Nodes
// installer does it, runs the shipped workflows/discover-vms.json against the lab host over SSH.
// `npm run test:e2e` builds dist first; this file only packs it.
import * as path from 'node:path';
import { loadLab, type Lab, type LabVmState } from '../support/lab';
import {
	createUserFolder,
	ensureN8n,
	formatTimings,
	nodeOutput,
	packPackage,
	REPO_ROOT,
	type ExecuteResult,
	type N8nInstance,
} from '../support/n8n';
import { promises as fs } from 'node:fs';

// Each n8n CLI call takes ~4-7 s; the first createUserFolder runs `npm install` of ssh2 & co.
jest.setTimeout(240_000);

const NODE_TYPE = 'n8n-nodes-libvirt-backup.libvirtDiscoverVms';
const WORKFLOW = path.join(REPO_ROOT, 'workflows', 'discover-vms.json');
const CREDENTIAL_NAME = 'Libvirt lab host'; // the name the shipped workflow references
/** lab.json uses `virsh domstate` words, the node its own enum. */
const NODE_STATE: Record<LabVmState, string> = { running: 'running', paused: 'paused', 'shut off': 'shutoff' };
/** Devices the node leaves out by default (excludeDeviceTypes default). */
const EXCLUDED_BY_DEFAULT = new Set(['cdrom', 'floppy']);

let lab: Lab;
let n8n: N8nInstance | undefined;
let tgzDir: string | undefined;
let okWorkflowId: string;
let badWorkflowId: string;
const started = Date.now();
const phases: string[] = [];

async function phase<T>(name: string, fn: () => Promise<T>): Promise<T> {
	const t = Date.now();
	try {
		return await fn();
	} finally {
		phases.push(`${String(Date.now() - t).padStart(6)} ms  ${name}`);
	}
}

function credential(name: string, knownHostsLine: string) {
	const root = lab.users.root;
	return {
		name,
		type: 'libvirtSshApi',
		data: {
			host: lab.host,
			port: lab.port,
			username: root.username,
			authMethod: 'privateKey',
			privateKey: root.privateKey,
			hostKeys: knownHostsLine,
			skipHostKeyVerification: false,
			sudoMode: 'none',
			libvirtUri: lab.systemUri,
		},
	};
}

/** One output item of Discover VMs (the fields asserted here). */
interface VmItem {
	host: string;
	name: string;
	uuid: string;
	state: string;
	disks: unknown[];
	backupable: boolean;
	reasons: unknown[];
}

const discoverItems = (run: ExecuteResult['run']) => nodeOutput(run, 'Discover VMs') as unknown as VmItem[];

// The first run on a fresh machine installs Node 24 + n8n (scripts/n8n/install.sh, ~7 min, cached
// afterwards), hence the long beforeAll timeout.
beforeAll(async () => {
	lab = loadLab();
	await phase('ensureN8n (scripts/n8n/install.sh)', ensureN8n);
	const tgz = await phase('npm pack', packPackage);
	tgzDir = path.dirname(tgz);
	const instance = (n8n = await phase('createUserFolder (unpack + npm install deps)', () => createUserFolder(tgz)));
	const [good, wrong] = await phase('import:credentials (2)', () =>
		instance.importCredentials([
			credential(CREDENTIAL_NAME, lab.knownHostsLine),
			credential('Libvirt lab host (wrong pinned key)', lab.wrongHostKeyLine),
		]),
	);
	[okWorkflowId, badWorkflowId] = await phase('import:workflow (2)', () =>
		instance.importWorkflows([
			{ workflow: WORKFLOW, replace: { REPLACE_CREDENTIAL_ID: good.id } },
			{
				workflow: WORKFLOW,
				replace: { REPLACE_CREDENTIAL_ID: wrong.id, [`"${CREDENTIAL_NAME}"`]: JSON.stringify(wrong.name) },
				name: 'Libvirt: discover VMs (wrong host key)',
			},
		]),
	);
}, 20 * 60_000);

afterAll(async () => {
	if (n8n) {
		console.info(
			`n8n CLI calls:\n${formatTimings(n8n.timings)}\nphases:\n${phases.join('\n')}\n` +
				`total e2e (discover): ${Date.now() - started} ms`,
		);
		await n8n.cleanup();
	}
	if (tgzDir) await fs.rm(tgzDir, { recursive: true, force: true });
});

test('n8n loads the package as a community node (export:nodes)', async () => {
	const nodes = await phase('export:nodes', () => n8n!.exportNodes());
	expect(nodes).toContain(NODE_TYPE);
});

test('the shipped workflow discovers every lab VM with its state and disks', async () => {
	const okRun: ExecuteResult = await phase('execute (pinned key)', () => n8n!.execute(okWorkflowId));
	if (okRun.exitCode !== 0) throw new Error(`n8n execute failed (${okRun.exitCode}):\n${okRun.stdout.slice(-4000)}\n${okRun.stderr.slice(-2000)}`);
	expect(okRun.run?.status).toBe('success');
	const items = discoverItems(okRun.run);
	const byName = new Map(items.map((i) => [i.name, i]));
	for (const vm of lab.vms) {
		const item = byName.get(vm.name);
		expect({ vm: vm.name, found: !!item }).toEqual({ vm: vm.name, found: true });
		if (!item) continue;
		const expectedDisks = vm.disks.filter((d) => !EXCLUDED_BY_DEFAULT.has(d.device)).length;
		expect({ vm: vm.name, uuid: item.uuid, state: item.state, disks: item.disks.length, host: item.host }).toEqual({
			vm: vm.name,
			uuid: vm.uuid,
			state: NODE_STATE[vm.state],
			disks: expectedDisks,
			host: lab.host,
		});
		expect(typeof item.backupable).toBe('boolean');
		expect(Array.isArray(item.reasons)).toBe(true);
	}
});

test('a credential pinning the wrong host key fails the run, naming the presented fingerprint', async () => {
	const badRun: ExecuteResult = await phase('execute (wrong key)', () => n8n!.execute(badWorkflowId));
	expect(badRun.exitCode).not.toBe(0);
	expect(badRun.signal).toBeUndefined();
	const error = badRun.run?.data?.resultData?.error;
	phases.push(`        wrong-key error: ${error?.message}`);
	expect(error?.node?.name).toBe('Discover VMs');
	expect(error?.message).toMatch(/host key/i);
	expect(error?.message).toContain(lab.hostKeyFingerprint);
	expect(discoverItems(badRun.run)).toEqual([]);
	// The CLI's own error output says the same (what a user running `n8n execute` sees).
	expect(badRun.stdout + badRun.stderr).toContain(lab.hostKeyFingerprint);
});
