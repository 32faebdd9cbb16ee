import * as fs from 'fs';
import * as path from 'path';

// n8n appends ?utm_... to a documentation URL, which garbles any #fragment: every node and the
// credential link to a page of their own, and that page must exist in this repository.
const ROOT = path.resolve(__dirname, '../..');
const REPO_DOCS = 'https://github.com/n8n-nodes-libvirt-backup/n8n-nodes-libvirt-backup/blob/main/';

function docPath(url: string): string {
	expect(url.startsWith(REPO_DOCS)).toBe(true);
	expect(url).not.toContain('#');
	return path.join(ROOT, url.slice(REPO_DOCS.length));
}

describe('documentation links', () => {
	const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { n8n: { nodes: string[] } };
	const codexFiles = pkg.n8n.nodes.map((file) => path.join(ROOT, file.replace(/^dist\//, '').replace(/\.js$/, '.json')));

	it.each(codexFiles)('every node listed in package.json has a codex whose documentation page exists: %s', (codexFile) => {
		const codex = JSON.parse(fs.readFileSync(codexFile, 'utf8')) as { resources: { primaryDocumentation: { url: string }[] } };
		const urls = codex.resources.primaryDocumentation.map((doc) => doc.url);
		expect(urls.length).toBeGreaterThan(0);
		for (const url of urls) expect(fs.existsSync(docPath(url))).toBe(true);
	});

	it('the credential documentation page exists', () => {
		const source = fs.readFileSync(path.join(ROOT, 'credentials/LibvirtSshApi.credentials.ts'), 'utf8');
		const url = /documentationUrl = '([^']+)'/.exec(source)?.[1] ?? '';
		expect(fs.existsSync(docPath(url))).toBe(true);
	});

	it('README links to every documentation page', () => {
		const readme = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8');
		for (const page of fs.readdirSync(path.join(ROOT, 'docs'))) expect(readme).toContain(`docs/${page}`);
	});
});
