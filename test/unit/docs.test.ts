import * as fs from 'fs';
import * as path from 'path';
import type { ICredentialType, INodeType } from 'n8n-workflow';
import { LibvirtSshApi } from '../../credentials/LibvirtSshApi.credentials';
import { LibvirtSshTargetApi } from '../../credentials/LibvirtSshTargetApi.credentials';
import { LibvirtBackupVmDisk } from '../../nodes/LibvirtBackupVmDisk/LibvirtBackupVmDisk.node';
import { LibvirtDiscoverVms } from '../../nodes/LibvirtDiscoverVms/LibvirtDiscoverVms.node';
import { LibvirtExportArchive } from '../../nodes/LibvirtExportArchive/LibvirtExportArchive.node';
import { LibvirtListBackups } from '../../nodes/LibvirtListBackups/LibvirtListBackups.node';
import { LibvirtPruneBackups } from '../../nodes/LibvirtPruneBackups/LibvirtPruneBackups.node';
import { LibvirtRestoreVmDisk } from '../../nodes/LibvirtRestoreVmDisk/LibvirtRestoreVmDisk.node';
import { LibvirtVerifyChecksum } from '../../nodes/LibvirtVerifyChecksum/LibvirtVerifyChecksum.node';

// n8n appends ?utm_... to a documentation URL, which garbles any #fragment: every node and every
// credential links to a page of its own (docs/nodes/, docs/credentials/), and that page must exist
// in this repository. n8n 2.41 opens a node's description.documentationUrl as it is when it is an
// http(s) URL, else the codex's primaryDocumentation (with ?utm_...): both point at the same page.
const ROOT = path.resolve(__dirname, '../..');
const REPO_DOCS = 'https://github.com/n8n-nodes-libvirt-backup/n8n-nodes-libvirt-backup/blob/main/';

function docPath(url: string): string {
	expect(url.startsWith(REPO_DOCS)).toBe(true);
	expect(url).not.toContain('#');
	return path.join(ROOT, url.slice(REPO_DOCS.length));
}

const CLASSES: Record<string, new () => INodeType | ICredentialType> = {
	LibvirtDiscoverVms,
	LibvirtBackupVmDisk,
	LibvirtListBackups,
	LibvirtVerifyChecksum,
	LibvirtPruneBackups,
	LibvirtRestoreVmDisk,
	LibvirtExportArchive,
	LibvirtSshApi,
	LibvirtSshTargetApi,
};

/** The node or credential a compiled-path entry of package.json names. */
function load<T>(file: string): T {
	const type = CLASSES[path.basename(file).split('.')[0]];
	expect(type).toBeDefined();
	return new type() as T;
}

const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { n8n: { nodes: string[]; credentials: string[] } };

describe('documentation links', () => {
	it.each(pkg.n8n.nodes)('%s: description and codex link the same page of its own, which exists', (file) => {
		const node = load<INodeType>(file);
		const codexFile = path.join(ROOT, file.replace(/^dist\//, '').replace(/\.js$/, '.json'));
		const codex = JSON.parse(fs.readFileSync(codexFile, 'utf8')) as { resources: { primaryDocumentation: { url: string }[] } };
		const urls = codex.resources.primaryDocumentation.map((doc) => doc.url);
		expect(urls).toEqual([node.description.documentationUrl]);
		expect(urls[0]).toMatch(/\/docs\/nodes\/[a-z-]+\.md$/);
		expect(fs.existsSync(docPath(urls[0]))).toBe(true);
	});

	it.each(pkg.n8n.credentials)('%s: a page of its own, which exists', (file) => {
		const credential = load<ICredentialType>(file);
		const url = credential.documentationUrl ?? '';
		expect(url).toBe(`${REPO_DOCS}docs/credentials/${credential.name}.md`);
		expect(fs.existsSync(docPath(url))).toBe(true);
	});

	it('no two nodes or credentials share a page', () => {
		const urls = [
			...pkg.n8n.nodes.map((file) => load<INodeType>(file).description.documentationUrl),
			...pkg.n8n.credentials.map((file) => load<ICredentialType>(file).documentationUrl),
		];
		expect(new Set(urls).size).toBe(urls.length);
	});

	it('links between the pages resolve', () => {
		for (const dir of ['nodes', 'credentials']) {
			for (const page of fs.readdirSync(path.join(ROOT, 'docs', dir))) {
				const text = fs.readFileSync(path.join(ROOT, 'docs', dir, page), 'utf8');
				for (const [, target] of text.matchAll(/\]\(([^)#\s]+\.md)(?:#[^)]*)?\)/g)) {
					if (!/^https?:/.test(target)) expect([page, fs.existsSync(path.resolve(ROOT, 'docs', dir, target))]).toEqual([page, true]);
				}
			}
		}
	});

	it('README links to every node and credential page', () => {
		const readme = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8');
		for (const dir of ['nodes', 'credentials']) {
			for (const page of fs.readdirSync(path.join(ROOT, 'docs', dir))) expect(readme).toContain(`docs/${dir}/${page}`);
		}
	});
});
