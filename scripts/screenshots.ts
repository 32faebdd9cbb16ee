/**
 * `npm run screenshots`: docs/img/workflow-<name>.png for every workflows/*.json, as the n8n editor
 * shows it (headless Debian chromium + playwright-core) on the demo's n8n
 * (test/support/demoN8n.ts), zoomed to fit, with the shipped destinations and chat hook.
 */
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { REPO_ROOT } from '../test/support/n8n';
import { createDemoN8n } from '../test/support/demoN8n';
import { openEditor, showWorkflow } from '../test/support/editorPage';

const OUT = path.join(REPO_ROOT, 'docs', 'img');

async function main(): Promise<void> {
	const demo = await createDemoN8n({ shippedText: true });
	try {
		const server = await demo.serve();
		const editor = await openEditor(server.url, { width: 1440, height: 900 });
		try {
			await fs.mkdir(OUT, { recursive: true });
			for (const workflow of demo.workflows) {
				await showWorkflow(editor.page, workflow.id);
				const file = path.join(OUT, `workflow-${workflow.name}.png`);
				await editor.page.screenshot({ path: file });
				console.log(path.relative(REPO_ROOT, file));
			}
		} finally {
			await editor.close();
		}
	} finally {
		await demo.close();
	}
}

main().catch((error: unknown) => {
	console.error(error instanceof Error ? error.message : error);
	process.exit(1);
});
