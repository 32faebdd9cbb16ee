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
import { makeBackups, makeDest, onHost, removeDest } from '../support/backupFixtures';
import { loadLab } from '../support/lab';
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
let base: string;
let realSource: string;

beforeAll(async () => {
	n8n = await InProcessN8n.create();
	vm = createTestVm('hcorpus', [{ target: 'vda', format: 'qcow2', virtualMiB: 16, writes: [{ pattern: 0x3c, offsetMiB: 0, lengthMiB: 1 }] }], 'shutoff');
	base = makeDest('base');
	const made = await withSsh(labTarget(), (ssh) =>
		backupVm(ssh, { uri: lab.systemUri, vm: vm.name, dest: base, mode: 'full', compression: 'none', quiesce: 'off', holder: 'hostile corpus', host: 'lab' }),
	);
	realSource = made.path;
});

afterAll(async () => {
	await n8n?.shutdown();
	vm?.destroy();
	if (base) removeDest(base);
});

afterEach(() => {
	// Restore may define a VM (named with the marker) on the shared libvirtd: remove it, by UUID.
	onHost(
		`virsh -q list --all --uuid | while read -r u; do [ -n "$u" ] || continue; case "$(virsh -q domname "$u")" in *${MARKER}*) virsh -q destroy "$u" >/dev/null 2>&1; virsh -q undefine "$u" >/dev/null;; esac; done`,
	);
});

/** A fresh world for one case (see Ctx), with the plant done. */
function setUp(kase: HostileCase): Ctx {
	const dest = makeDest();
	const root = dest.slice(0, dest.lastIndexOf('/'));
	const outsideStore = `${root}/outside/store`;
	const [old, newest, db] = makeBackups(dest, [
		{ vm: 'web01', id: '20261120T010000Z' },
		{ vm: 'web01', id: '20261121T010000Z' },
		{ vm: 'db01', id: '20261121T010000Z' },
	]).map((made) => made.path);
	const outside = makeBackups(outsideStore, [
		{ vm: 'web01', id: '20261110T010000Z' },
		{ vm: 'web01', id: '20261111T010000Z' },
		{ vm: 'web01', id: '20261112T010000Z' },
	]);
	const realId = realSource.slice(realSource.lastIndexOf('/') + 1);
	const ctx: Ctx = {
		root,
		dest,
		old,
		newest,
		db,
		sentinel: `${root}/outside/sentinel`,
		outsideStore,
		outsideBackup: outside[0].path,
		exports: `${root}/exports`,
		restores: `${root}/restores`,
		canary: `/tmp/lvb-canary-${process.pid}-${kase.id}`,
		vm: vm.name,
		realSource,
		realBackup: `${dest}/${vmDirName(vm.name)}/${realId}`,
		marker: MARKER,
		labHostile: lab.hostileVms,
	};
	onHost(
		[
			`mkdir -p -- ${q(ctx.exports)} ${q(ctx.restores)}`,
			`printf '%s' ${q(SENTINEL_TEXT)} > ${q(ctx.sentinel)}`,
			`S=${q(ctx.sentinel)}`,
			kase.plant?.(ctx) ?? 'true',
			// Every file outside: atime before mtime, so that a read (relatime) moves it.
			`find ${q(root)} -path ${q(dest)} -prune -o -type f -exec touch -a -d '2020-01-01 00:00:00' {} +`,
		].join('\n'),
	);
	return ctx;
}

/** Every entry under the case's folder outside `writable`: type, and for non-folders size, mtime, ctime (and atime for files). */
function outsideState(ctx: Ctx, writable: string[]): Map<string, string> {
	const out = onHost(`find ${q(ctx.root)} -printf '%y %s %T@ %C@ %A@ %p\\0'`);
	const state = new Map<string, string>();
	for (const entry of out.split('\0').filter(Boolean)) {
		const [type, size, mtime, ctime, atime] = entry.split(' ', 5);
		const path = entry.split(' ').slice(5).join(' ');
		if (writable.some((allowed) => path === allowed || path.startsWith(`${allowed}/`))) continue;
		state.set(path, type === 'd' ? 'd' : `${type} ${size} m${mtime} c${ctime}${type === 'f' ? ` a${atime}` : ''}`);
	}
	return state;
}

/** The canary and the `pwned` files: a line per one that exists. */
function commandTraces(ctx: Ctx): string {
	return onHost(`for f in ${[ctx.canary, ...PWNED].map(q).join(' ')}; do if [ -e "$f" ] || [ -L "$f" ]; then stat -c '%n %Y' -- "$f"; fi; done`);
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
	const ctx = setUp(kase);
	let handled = false;
	let ms = 0;
	try {
		const writable = kase.writable?.(ctx) ?? [ctx.dest];
		const before = outsideState(ctx, writable);
		const tracesBefore = commandTraces(ctx);
		expect(tracesBefore.includes(ctx.canary)).toBe(false);

		const started = Date.now();
		const result = await n8n.run(workflow(kase, ctx), { credentials: { [CREDENTIAL_ID]: { type: 'libvirtSshApi', data: labCredentialData(kase.credential?.(ctx) ?? {}) } } });
		ms = Date.now() - started;

		const items: IDataObject[] = result.output('Node');
		if ('error' in kase.expect) {
			expect({ status: result.run.status, items }).toMatchObject({ status: 'error', items: [] });
			expect(result.error?.message).toMatch(kase.expect.error);
		} else {
			expect(result.error).toBeUndefined();
			kase.expect.items(items, ctx);
		}
		expect(commandTraces(ctx)).toBe(tracesBefore);
		expect(outsideState(ctx, writable)).toEqual(before);
		expect(onHost(`cat -- ${q(ctx.sentinel)}`)).toBe(SENTINEL_TEXT);
		handled = true;
	} finally {
		record({ kind: 'hostile', name, handled, ms });
		onHost(`rm -f -- ${q(ctx.canary)}`);
		removeDest(ctx.dest);
	}
});
