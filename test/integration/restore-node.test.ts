/**
 * The Restore VM Disk node file against the lab host, through a minimal IExecuteFunctions: a List
 * Backups-like item in, the restored disks out, paired; refusals as error items with Continue On
 * Fail; the original-disks target refused when an AI agent calls the node as a tool.
 */
import type { IDataObject, IExecuteFunctions, INodeExecutionData } from 'n8n-workflow';
import { LibvirtRestoreVmDisk } from '../../nodes/LibvirtRestoreVmDisk/LibvirtRestoreVmDisk.node';
import { makeBackups, makeDest, onHost, removeDest } from '../support/backupFixtures';
import { loadLab, shq } from '../support/lab';

jest.setTimeout(120_000);

function run(input: IDataObject[], params: Record<string, unknown>, options: { continueOnFail?: boolean; nodeType?: string } = {}): Promise<INodeExecutionData[][]> {
	const lab = loadLab();
	const context = {
		getInputData: () => input.map((json) => ({ json })),
		getNodeParameter: (name: string, itemIndex: number, fallback?: unknown) => {
			const value = name === 'backupPath' ? input[itemIndex].path : params[name];
			return value === undefined ? fallback : value;
		},
		getCredentials: async () => ({ host: lab.host, port: lab.port, username: 'root', authMethod: 'privateKey', privateKey: lab.users.root.privateKey, hostKeys: lab.knownHostsLine, sudoMode: 'none', libvirtUri: lab.systemUri }),
		getExecutionCancelSignal: () => undefined,
		continueOnFail: () => options.continueOnFail === true,
		getNode: () => ({ id: 'n1', name: 'Restore VM Disk', type: options.nodeType ?? 'n8n-nodes-libvirt-backup.libvirtRestoreVmDisk', typeVersion: 1, position: [0, 0], parameters: {} }),
		addExecutionHints: () => undefined,
		getWorkflow: () => ({ id: 'wf1', name: 'test', active: false }),
		getExecutionId: () => 'ex1',
	} as unknown as IExecuteFunctions;
	return new LibvirtRestoreVmDisk().execute.call(context);
}

describe('Restore VM Disk node', () => {
	let dest: string;
	beforeEach(() => {
		dest = makeDest();
	});
	afterEach(() => removeDest(dest));

	test('an incremental into a folder: one item per input item with the restored disk, its size and hash; a refusal is an error item', async () => {
		const [, inc] = makeBackups(dest, [
			{ vm: 'web01', id: '20261120T010000Z' },
			{ vm: 'web01', id: '20261121T010000Z', kind: 'incremental', parent: '20261120T010000Z', disks: [{ target: 'vda', pattern: 0x22 }] },
		]);
		const folder = `${dest}-restored`;
		try {
			const [items] = await run([{ path: inc.path }, { path: `${dest}/web01/20991231T000000Z` }], { operation: 'restore', target: 'folder', folder, disks: '', force: false, timeoutMinutes: 10 }, { continueOnFail: true });
			expect(items.map((item) => item.pairedItem)).toEqual([{ item: 0 }, { item: 1 }]);
			const restored = items[0].json as { target: string; disks: { path: string; sha256: string; bytes: number }[]; backupId: string; durationMs: number };
			expect(restored).toMatchObject({ target: 'folder', backupId: inc.manifest.id, disks: [{ target: 'vda', path: `${folder}/vda.qcow2`, format: 'qcow2' }] });
			expect(restored.disks[0].sha256).toBe(onHost(`sha256sum ${shq(`${folder}/vda.qcow2`)}`).split(' ')[0]);
			onHost(`qemu-io -r -f qcow2 -c ${shq('read -P 0x11 0 64k')} -c ${shq('read -P 0x22 64k 64k')} ${shq(`${folder}/vda.qcow2`)}`);
			expect(items[1].json.error).toMatch(/is not a backup/);
		} finally {
			onHost(`rm -rf -- ${shq(folder)}`);
		}
	});

	test('as an AI agent tool, the original disks are never a target', async () => {
		const [full] = makeBackups(dest, [{ vm: 'web01', id: '20261120T010000Z' }]);
		await expect(run([{ path: full.path }], { operation: 'restore', target: 'original', shutdownFirst: 'no', force: false, timeoutMinutes: 10 }, { nodeType: 'n8n-nodes-libvirt-backup.libvirtRestoreVmDiskTool' })).rejects.toThrow(/only restores into a folder/);
	});
});
