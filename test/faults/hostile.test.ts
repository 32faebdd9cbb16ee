/**
 * The hostile input corpus (hostileCorpus.ts) through the REAL n8n engine in-process (n8n-core's
 * WorkflowExecute, our nodes loaded from dist/) against the lab: every case runs Manual Trigger ->
 * one of our nodes with hostile parameters, after planting what it needs on the host. For each:
 * - the outcome the corpus names: a clear error (its message), or items that are right;
 * - no command ran from data: the case's canary (/tmp/lvb-canary-<pid>-<case>) never appears, nor
 *   the `pwned` files the lab's hostile VM names would make;
 * - nothing outside the destination (or the folder the case writes to) was read or written: every
 *   entry of the case's folder outside it keeps its type, size, mtime, ctime and, for files, atime
 *   (their atime is set before their mtime, so with relatime any read moves it), and none appears
 *   or goes away;
 * - the run ended: within the jest timeout, its time recorded in the safety ledger.
 * Needs `npm run build` and the lab.
 */
import type { IDataObject, INode } from 'n8n-workflow';
import { backupVm } from '../../lib/backup';
import { quoteArg as q } from '../../lib/shell';
import { withSsh } from '../../lib/ssh';
import { vmDirName } from '../../lib/store/layout';
import { randomBytes } from 'crypto';
import { makeBackups, makeDest, onHost, removeDest } from '../support/backupFixtures';
import { labDir, loadLab } from '../support/lab';
import { InProcessN8n, type WorkflowJson } from '../support/n8n-inprocess';
import { labCredentialData, labTarget } from '../support/targets';
import { createTestVm, type TestVm } from '../support/testVm';
import { record } from './ledger';
import { CORPUS, NODES, type Ctx, type HostileCase } from './hostileCorpus';

jest.setTimeout(180_000);

const lab = loadLab();
const PACKAGE = 'n8n-nodes-libvirt-backup';
const TRIGGER = 'When clicking ‘Execute workflow’';
const CREDENTIAL_ID = 'labHostileCred01';
const MARKER = `lvb-hx-${process.pid}`;
const SENTINEL_TEXT = 'sentinel: outside the destination 7c21e9\n';
/** What `touch pwned` in the lab's hostile VM names would create, relative to a process's folder. */
const PWNED = ['/root/pwned', '/pwned', '/tmp/pwned', `${lab.labDir}/pwned`];

let n8n: InProcessN8n;
let vm: TestVm;
/** The world every case starts from (see Ctx), made once and copied; the real backup of the test VM. */
let template: string;
let realSource: string;

beforeAll(async () => {
	n8n = await InProcessN8n.create();
	vm = createTestVm('hcorpus', [{ target: 'vda', format: 'qcow2', virtualMiB: 16, writes: [{ pattern: 0x3c, offsetMiB: 0, lengthMiB: 1 }] }], 'shutoff');
	const dest = makeDest();
	template = dest.slice(0, dest.lastIndexOf('/'));
	makeBackups(dest, [
		{ vm: 'web01', id: '20261120T010000Z' },
		{ vm: 'web01', id: '20261121T010000Z' },
		{ vm: 'db01', id: '20261121T010000Z' },
	]);
	makeBackups(`${template}/outside/store`, [
		{ vm: 'web01', id: '20261110T010000Z' },
		{ vm: 'web01', id: '20261111T010000Z' },
		{ vm: 'web01', id: '20261112T010000Z' },
	]);
	onHost(`mkdir -p -- ${q(`${template}/exports`)} ${q(`${template}/restores`)} && printf '%s' ${q(SENTINEL_TEXT)} > ${q(`${template}/outside/sentinel`)}`);
	const made = await withSsh(labTarget(), (ssh) =>
		backupVm(ssh, { uri: lab.systemUri, vm: vm.name, dest: `${template}/real`, mode: 'full', compression: 'none', quiesce: 'off', holder: 'hostile corpus', host: 'lab' }),
	);
	realSource = made.path;
});

afterAll(async () => {
	await n8n?.shutdown();
	vm?.destroy();
	if (template) removeDest(`${template}/dest`);
});

function contextFor(kase: HostileCase): Ctx {
	const root = `${labDir()}/test-dest/${randomBytes(6).toString('hex')}`;
	const dest = `${root}/dest`;
	return {
		root,
		dest,
		old: `${dest}/web01/20261120T010000Z`,
		newest: `${dest}/web01/20261121T010000Z`,
		db: `${dest}/db01/20261121T010000Z`,
		sentinel: `${root}/outside/sentinel`,
		outsideStore: `${root}/outside/store`,
		outsideBackup: `${root}/outside/store/web01/20261110T010000Z`,
		exports: `${root}/exports`,
		restores: `${root}/restores`,
		canary: `/tmp/lvb-canary-${process.pid}-${kase.id}`,
		canaryName: `lvb-canary-${process.pid}-${kase.id}`,
		vm: vm.name,
		realSource,
		realBackup: `${dest}/${vmDirName(vm.name)}/${realSource.slice(realSource.lastIndexOf('/') + 1)}`,
		marker: MARKER,
		labHostile: lab.hostileVms,
	};
}

/** The case's world from the template, with its plant, in one host command; then what is outside it and the traces. */
function setUp(kase: HostileCase, ctx: Ctx, writable: string[]): Observed {
	return observe(
		ctx,
		writable,
		[
			`mkdir -p -- ${q(ctx.root)} && cp -a -- ${['dest', 'outside', 'exports', 'restores'].map((entry) => q(`${template}/${entry}`)).join(' ')} ${q(ctx.root)}/`,
			`S=${q(ctx.sentinel)}`,
			kase.plant?.(ctx) ?? 'true',
			// Every file outside: atime before mtime, so that a read (relatime) moves it.
			`find ${q(ctx.root)} -path ${q(ctx.dest)} -prune -o -type f -exec touch -a -d '2020-01-01 00:00:00' {} +`,
		].join('\n'),
	);
}

interface Observed {
	/** Every entry under the case's folder outside `writable`: type, and for non-folders size, mtime, ctime (and atime for files). */
	outside: Map<string, string>;
	/** The canary and the `pwned` files that exist. */
	traces: string[];
}

function observe(ctx: Ctx, writable: string[], before = 'true'): Observed {
	const traces = [ctx.canary, ...PWNED, ...['/root', '', '/tmp', lab.labDir].map((folder) => `${folder}/${ctx.canaryName}`)].map(q).join(' ');
	const out = onHost(
		`${before}\nfind ${q(ctx.root)} -printf '%y %s %T@ %C@ %A@ %p\\0'\nfor f in ${traces}; do if [ -e "$f" ] || [ -L "$f" ]; then printf 'trace %s\\0' "$f"; fi; done`,
	);
	const outside = new Map<string, string>();
	const found: string[] = [];
	for (const entry of out.split('\0').filter(Boolean)) {
		if (entry.startsWith('trace ')) {
			found.push(entry.slice('trace '.length));
			continue;
		}
		const [type, size, mtime, ctime, atime] = entry.split(' ', 5);
		const path = entry.split(' ').slice(5).join(' ');
		if (writable.some((allowed) => path === allowed || path.startsWith(`${allowed}/`))) continue;
		outside.set(path, type === 'd' ? 'd' : `${type} ${size} m${mtime} c${ctime}${type === 'f' ? ` a${atime}` : ''}`);
	}
	return { outside, traces: found };
}

function workflow(kase: HostileCase, ctx: Ctx): WorkflowJson {
	const node: INode = {
		id: 'node',
		name: 'Node',
		type: `${PACKAGE}.${NODES[kase.node].type}`,
		typeVersion: 1,
		position: [200, 0],
		parameters: kase.params(ctx) as INode['parameters'],
		credentials: { libvirtSshApi: { id: CREDENTIAL_ID, name: 'lab' } },
	};
	return {
		nodes: [{ id: 'trigger', name: TRIGGER, type: 'n8n-nodes-base.manualTrigger', typeVersion: 1, position: [0, 0], parameters: {} }, node],
		connections: { [TRIGGER]: { main: [[{ node: 'Node', type: 'main', index: 0 }]] } },
	};
}

test('the corpus has at least 60 cases, unique ids, and covers every node', () => {
	expect(CORPUS.length).toBeGreaterThanOrEqual(60);
	expect(new Set(CORPUS.map((kase) => kase.id)).size).toBe(CORPUS.length);
	expect(new Set(CORPUS.map((kase) => kase.node))).toEqual(new Set(Object.keys(NODES)));
});

test.each(CORPUS.map((kase) => [`${kase.category} | ${NODES[kase.node].name} | ${kase.label} [${kase.id}]`, kase] as const))('%s', async (name, kase) => {
	const ctx = contextFor(kase);
	const writable = kase.writable?.(ctx) ?? [ctx.dest];
	let handled = false;
	let ms = 0;
	try {
		const before = setUp(kase, ctx, writable);
		expect(before.traces.filter((trace) => trace.includes(ctx.canaryName))).toEqual([]);

		const started = Date.now();
		const result = await n8n.run(workflow(kase, ctx), { credentials: { [CREDENTIAL_ID]: { type: 'libvirtSshApi', data: labCredentialData(kase.credential?.(ctx) ?? {}) } } });
		ms = Date.now() - started;

		const items: IDataObject[] = (result.run.data.resultData.runData.Node?.[0]?.data?.main ?? []).flatMap((output) => (output ?? []).map((item) => item.json));
		if ('error' in kase.expect) {
			expect({ status: result.run.status, items, message: result.error?.message }).toMatchObject({ status: 'error', items: [], message: expect.stringMatching(kase.expect.error) });
		} else {
			expect(result.error).toBeUndefined();
			kase.expect.items(items, ctx);
		}
		const after = observe(ctx, writable);
		expect(after.traces).toEqual(before.traces);
		expect(after.outside).toEqual(before.outside);
		handled = true;
	} finally {
		record({ kind: 'hostile', name, handled, ms });
		// Restore may have defined a VM (its name holds the marker) on the shared libvirtd.
		const undefine = kase.node === 'restore' ? `virsh -q list --all --name | grep -F -- ${q(MARKER)} | while IFS= read -r n; do virsh -q destroy -- "$n" >/dev/null 2>&1; virsh -q undefine -- "$n" >/dev/null; done; ` : '';
		onHost(`${undefine}rm -rf -- ${q(ctx.root)}`);
	}
});
