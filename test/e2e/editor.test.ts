// e2e in a browser: the n8n 2.41 editor (headless Debian chromium) on n8n set up like `npm run demo`
// (test/support/demoN8n.ts): every shipped workflow opens without a node issue or a missing node,
// the nightly one runs green from its Manual Trigger, and every Docs link of the package points at
// a file of this repository.
import { existsSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { createDemoN8n, NIGHTLY_FILE, shippedWorkflowFiles, type DemoN8n } from '../support/demoN8n';
import { openEditor, SELECTORS, showWorkflow, type Editor } from '../support/editorPage';
import { PACKAGE_NAME, REPO_ROOT } from '../support/n8n';
import { createTestVm, testDestination, type TestVm } from '../support/testVm';

jest.setTimeout(600_000);

interface WorkflowNode {
	name: string;
	type: string;
	parameters?: Record<string, unknown>;
}

const MANUAL_TRIGGER = 'n8n-nodes-base.manualTrigger';
const WEBHOOK = 'n8n-nodes-base.webhook';
const DISCOVER = `${PACKAGE_NAME}.libvirtDiscoverVms`;

let vm: TestVm;
let destination: { dest: string; cleanup(): void };
let offsite: { dest: string; cleanup(): void };
let demo: DemoN8n;
let editor: Editor;
const shipped = new Map<string, WorkflowNode[]>();

beforeAll(async () => {
	vm = createTestVm('editor', [{ target: 'vda', format: 'qcow2', virtualMiB: 16, writes: [{ pattern: 0x5a, offsetMiB: 0, lengthMiB: 1 }] }]);
	destination = testDestination('editor');
	offsite = testDestination('editor-offsite');
	demo = await createDemoN8n({
		backupsDir: destination.dest,
		offsiteDir: offsite.dest,
		// The nightly run backs up this test's VM only: the lab's VMs belong to other tests running now.
		edit: (name, workflow) => {
			const nodes = workflow.nodes as WorkflowNode[];
			shipped.set(name, nodes);
			if (`${name}.json` !== NIGHTLY_FILE) return;
			for (const node of nodes.filter((n) => n.type === DISCOVER)) node.parameters = { ...node.parameters, nameRegex: `^${vm.name}$` };
		},
	});
	const server = await demo.serve();
	editor = await openEditor(server.url);
}, 15 * 60_000);

afterAll(async () => {
	await editor?.close();
	await demo?.close();
	vm?.destroy();
	destination?.cleanup();
	offsite?.cleanup();
});

test('the selectors find what they look for: an unknown node and a node without its credential are marked', async () => {
	const response = await editor.context.request.post('/rest/workflows', {
		data: {
			name: 'Control: broken on purpose',
			nodes: [
				{ id: 'a1', name: 'Unknown', type: `${PACKAGE_NAME}.libvirtNoSuchNode`, typeVersion: 1, position: [0, 0], parameters: {} },
				{ id: 'a2', name: 'No credential', type: DISCOVER, typeVersion: 1, position: [300, 0], parameters: {} },
			],
			connections: {},
			settings: { executionOrder: 'v1' },
		},
	});
	expect(response.ok()).toBe(true);
	const { data } = (await response.json()) as { data: { id: string } };
	await showWorkflow(editor.page, data.id);
	await expect(editor.page.locator(`${SELECTORS.nodeIssues}, ${SELECTORS.nodeNotInstalled}`).count()).resolves.toBe(2);
});

describe.each(shippedWorkflowFiles().map((file) => path.basename(file, '.json')))('workflow %s', (name) => {
	test('opens with every node known and no node marked', async () => {
		const workflow = demo.workflows.find((w) => w.name === name)!;
		await showWorkflow(editor.page, workflow.id);
		const page = editor.page;
		const expected = shipped.get(name)!.map((node) => [node.name, node.type]).sort();
		const nodes = page.locator(SELECTORS.node);
		const shown: string[][] = [];
		for (let i = 0; i < (await nodes.count()); i++) {
			shown.push([(await nodes.nth(i).getAttribute('data-node-name')) ?? '', (await nodes.nth(i).getAttribute('data-node-type')) ?? '']);
		}
		// Sticky notes are not canvas nodes.
		expect(shown.sort()).toEqual(expected.filter(([, type]) => type !== 'n8n-nodes-base.stickyNote'));
		const marked = async (selector: string) => {
			const names: string[] = [];
			for (const node of await page.locator(SELECTORS.node).filter({ has: page.locator(selector) }).all()) names.push((await node.getAttribute('data-node-name')) ?? '?');
			return names;
		};
		expect(await marked(SELECTORS.nodeIssues)).toEqual([]);
		expect(await marked(SELECTORS.nodeNotInstalled)).toEqual([]);
	});
});

describe('nightly-backup', () => {
	test('"Execute workflow" starts from the manual trigger, not from a webhook that waits for a call', async () => {
		await showWorkflow(editor.page, demo.nightly.id);
		const label = await editor.page.locator('[data-test-id="execute-workflow-button"]').innerText();
		// With several triggers the button says "from <trigger>", the name cut in the middle ("Backup requeste...(webhook)").
		const from = /from\s+(.+)$/s.exec(label)?.[1].trim();
		if (from === undefined) return;
		const [head, tail = ''] = from.split(/\.\.\.|…/);
		const trigger = shipped.get(demo.nightly.name)!.find((node) => node.name.startsWith(head) && node.name.endsWith(tail));
		expect(trigger?.type).toBeDefined();
		expect(trigger?.type).not.toBe(WEBHOOK);
	});

	test('runs green from its Manual Trigger', async () => {
		const manual = shipped.get(demo.nightly.name)!.find((node) => node.type === MANUAL_TRIGGER);
		expect(manual).toBeDefined();
		const page = editor.page;
		await showWorkflow(page, demo.nightly.id);
		const trigger = page.locator(`${SELECTORS.node}[data-node-name="${manual!.name}"]`);
		await trigger.hover();
		await page.locator(`[data-test-id="execute-workflow-button-${manual!.name}"]`).click();
		const execution = await finishedExecution(demo.nightly.id);
		expect(execution).toMatchObject({ status: 'success', mode: 'manual' });
		await page.locator('[data-test-id="canvas-node-status-success"]').first().waitFor();
		expect(await page.locator(SELECTORS.nodeIssues).count()).toBe(0);
		const summary = await demo.chat.waitFor((post) => JSON.stringify(post.body).includes(vm.name));
		expect(JSON.stringify(summary.body)).toContain(vm.name);
	});
});

test('every node and credential of the package links its docs to a file of this repository', async () => {
	const pkg = JSON.parse(readFileSync(path.join(REPO_ROOT, 'package.json'), 'utf8'));
	const repoUrl = String(pkg.repository.url).replace(/^git\+/, '').replace(/\.git$/, '');
	// What the editor itself loaded: the node types and credentials it serves to the browser.
	const nodes = (await (await editor.context.request.get('/types/nodes.json')).json()) as Array<{
		name: string;
		codex?: { resources?: { primaryDocumentation?: Array<{ url: string }> } };
		documentationUrl?: string;
	}>;
	const credentials = (await (await editor.context.request.get('/types/credentials.json')).json()) as Array<{ name: string; documentationUrl?: string }>;
	// Every node and its tool variant (n8n adds `<name>Tool` for usableAsTool nodes).
	const ours = nodes.filter((node) => node.name.startsWith(`${PACKAGE_NAME}.`));
	const names = new Set(ours.map((node) => node.name));
	expect([...names].filter((name) => !(name.endsWith('Tool') && names.has(name.slice(0, -4)))).length).toBe(pkg.n8n.nodes.length);
	const credentialNames = await credentialTypes(pkg.n8n.credentials);
	const ourCredentials = credentials.filter((credential) => credentialNames.includes(credential.name));
	expect(ourCredentials.map((credential) => credential.name).sort()).toEqual(credentialNames.sort());
	const links = [
		...ours.map((node) => ({ what: node.name, url: node.codex?.resources?.primaryDocumentation?.[0]?.url ?? node.documentationUrl ?? '' })),
		...ourCredentials.map((credential) => ({ what: credential.name, url: credential.documentationUrl ?? '' })),
	];
	const broken = links.filter(({ url }) => {
		const file = url.startsWith(`${repoUrl}/blob/main/`) && !url.includes('#') ? url.slice(`${repoUrl}/blob/main/`.length) : '';
		return file === '' || !existsSync(path.join(REPO_ROOT, file));
	});
	expect(broken).toEqual([]);
});

/** The type names of the built credentials listed in package.json. */
async function credentialTypes(files: string[]): Promise<string[]> {
	const names: string[] = [];
	for (const file of files) {
		const exported = (await import(path.join(REPO_ROOT, file))) as Record<string, new () => { name: string }>;
		names.push(...Object.values(exported).map((Credential) => new Credential().name));
	}
	return names;
}

/** Polls the REST API (as the logged-in owner) until the workflow's newest execution has finished. */
async function finishedExecution(workflowId: string): Promise<{ status: string; mode: string }> {
	for (;;) {
		const response = await editor.context.request.get(`/rest/executions?filter=${encodeURIComponent(JSON.stringify({ workflowId }))}`);
		const { data } = (await response.json()) as { data: { results: Array<{ status: string; mode: string; finished?: boolean }> } };
		const newest = data.results[0];
		if (newest && !['new', 'running', 'waiting'].includes(newest.status)) return newest;
		await editor.page.waitForTimeout(1000);
	}
}
