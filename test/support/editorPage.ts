/**
 * The n8n 2.41 editor in headless Chromium (Debian's `chromium` + playwright-core), for the README
 * screenshots and the browser test. Selectors are the editor's own `data-test-id`s.
 */
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { DEMO_OWNER } from './demoN8n';

export const CHROMIUM = process.env.LVB_CHROMIUM ?? '/usr/bin/chromium';

export const SELECTORS = {
	node: '[data-test-id="canvas-node"]',
	/** A node with parameter/credential issues or of an unknown type (n8n's red marker). */
	nodeIssues: '[data-test-id="node-issues"]',
	/** A community node whose package is not installed. */
	nodeNotInstalled: '[data-test-id="node-not-installed"]',
	zoomToFit: '[data-test-id="zoom-to-fit"]',
	zoomOut: '[data-test-id="zoom-out-button"]',
	viewport: '.vue-flow__viewport',
	/** The "Production Checklist" popover n8n opens on a published workflow. */
	checklistClose: '[data-test-id="suggested-actions-close"]',
} as const;

export interface Editor {
	browser: Browser;
	context: BrowserContext;
	page: Page;
	close(): Promise<void>;
}

/** A browser logged in to the demo's n8n as its owner (the login form's REST call, cookie kept by the context). */
export async function openEditor(baseUrl: string, viewport = { width: 1600, height: 900 }): Promise<Editor> {
	const browser = await chromium.launch({ executablePath: CHROMIUM });
	try {
		const context = await browser.newContext({ viewport, baseURL: baseUrl });
		const login = await context.request.post('/rest/login', { data: { emailOrLdapLoginId: DEMO_OWNER.email, password: DEMO_OWNER.password } });
		if (!login.ok()) throw new Error(`login as ${DEMO_OWNER.email} failed: HTTP ${login.status()} ${await login.text()}`);
		const page = await context.newPage();
		return { browser, context, page, close: () => browser.close() };
	} catch (error) {
		await browser.close();
		throw error;
	}
}

/**
 * Opens a workflow on the canvas, closes the checklist popover and zooms to fit (then one step out:
 * the canvas controls and the Execute button float over the fitted view's bottom row), with the
 * mouse parked on the header so that no node shows its hover toolbar.
 */
export async function showWorkflow(page: Page, workflowId: string): Promise<void> {
	// The editor's bundle loads slowly on a busy machine: wait for the DOM, then for the canvas.
	await page.goto(`/workflow/${workflowId}`, { waitUntil: 'domcontentloaded', timeout: 120_000 });
	await page.locator(SELECTORS.node).first().waitFor({ timeout: 60_000 });
	const checklist = page.locator(SELECTORS.checklistClose);
	if (await checklist.isVisible()) await checklist.click();
	await page.locator(SELECTORS.zoomToFit).click();
	await settled(page);
	await page.locator(SELECTORS.zoomOut).click();
	await page.mouse.move((page.viewportSize()?.width ?? 800) / 2, 1);
	await settled(page);
}

/** Waits (up to ~10 s) until the canvas transform stops changing: the zoom animation is over. */
async function settled(page: Page): Promise<void> {
	const viewport = page.locator(SELECTORS.viewport);
	let last = '';
	for (let polls = 0; polls < 50; polls++) {
		await page.waitForTimeout(200);
		const transform = (await viewport.getAttribute('style')) ?? '';
		if (transform === last) return;
		last = transform;
	}
}
