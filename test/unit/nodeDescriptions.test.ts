// What the n8n editor shows of each node before it runs: the picker line, what its search finds,
// and Prune's subtitle, evaluated by n8n-workflow's own expression engine as the editor does.
import * as fs from 'fs';
import * as path from 'path';
import { Workflow, type INode, type INodeType, type INodeTypes } from 'n8n-workflow';
import { LibvirtBackupVmDisk } from '../../nodes/LibvirtBackupVmDisk/LibvirtBackupVmDisk.node';
import { LibvirtDiscoverVms } from '../../nodes/LibvirtDiscoverVms/LibvirtDiscoverVms.node';
import { LibvirtExportArchive } from '../../nodes/LibvirtExportArchive/LibvirtExportArchive.node';
import { LibvirtListBackups } from '../../nodes/LibvirtListBackups/LibvirtListBackups.node';
import { LibvirtPruneBackups } from '../../nodes/LibvirtPruneBackups/LibvirtPruneBackups.node';
import { LibvirtRestoreVmDisk } from '../../nodes/LibvirtRestoreVmDisk/LibvirtRestoreVmDisk.node';
import { LibvirtVerifyChecksum } from '../../nodes/LibvirtVerifyChecksum/LibvirtVerifyChecksum.node';

const ROOT = path.resolve(__dirname, '../..');
const NODES: INodeType[] = [
	new LibvirtDiscoverVms(),
	new LibvirtBackupVmDisk(),
	new LibvirtListBackups(),
	new LibvirtVerifyChecksum(),
	new LibvirtPruneBackups(),
	new LibvirtRestoreVmDisk(),
	new LibvirtExportArchive(),
];

function codexOf(node: INodeType): { alias: string[] } {
	const dir = `L${node.description.name.slice(1)}`;
	return JSON.parse(fs.readFileSync(path.join(ROOT, 'nodes', dir, `${dir}.node.json`), 'utf8')) as { alias: string[] };
}

test('package.json lists exactly these nodes', () => {
	const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { n8n: { nodes: string[] } };
	expect(pkg.n8n.nodes.map((file) => path.basename(file, '.node.js')).sort()).toEqual(NODES.map((node) => `L${node.description.name.slice(1)}`).sort());
});

describe.each(NODES.map((node) => [node.description.displayName, node] as const))('%s', (_name, node) => {
	test('a one-line picker description, short like n8n\'s own nodes', () => {
		const { description } = node.description;
		expect(description).not.toMatch(/[\n\r]/);
		expect(description.length).toBeLessThanOrEqual(100);
		expect(description).not.toMatch(/\.$/);
	});

	// The node picker searches displayName and the codex aliases: none of our names says "Libvirt".
	test('searching "libvirt" or "ssh" finds it (codex aliases)', () => {
		expect(codexOf(node).alias.map((alias) => alias.toLowerCase())).toEqual(expect.arrayContaining(['libvirt', 'ssh']));
	});
});

describe('Prune Old Backups subtitle: the policy at a glance', () => {
	const prune = new LibvirtPruneBackups();
	const nodeTypes: INodeTypes = {
		getByName: () => prune,
		getByNameAndVersion: () => prune,
		getKnownTypes: () => ({}),
	};

	function subtitle(parameters: Record<string, unknown>): unknown {
		const node: INode = { id: '1', name: 'Prune', type: 'n8n-nodes-libvirt-backup.libvirtPruneBackups', typeVersion: 1, position: [0, 0], parameters: parameters as INode['parameters'] };
		const workflow = new Workflow({ nodes: [node], connections: {}, active: false, nodeTypes });
		return workflow.expression.getSimpleParameterValue(node, prune.description.subtitle, 'internal', {});
	}

	test.each([
		[{ keepDaily: 7, keepWeekly: 4, keepMonthly: 6, dryRun: true }, '7d 4w 6m, dry run'],
		[{ keepLast: 3, keepHourly: 24, keepYearly: 2, dryRun: false }, 'last 3 24h 2y, prune'],
		[{ keepWithin: '36h' }, 'within 36h, dry run'],
		[{ retentionDays: 14, dryRun: false }, 'within 14d, prune'],
		[{ keepDaily: 0, keepWithin: '' }, 'no rules, dry run'],
		[{}, 'no rules, dry run'],
	])('%j -> %s', (parameters, expected) => expect(subtitle(parameters)).toBe(expected));
});
