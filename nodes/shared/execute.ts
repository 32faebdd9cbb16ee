/**
 * The loop every node shares: one SSH connection for the whole run (reused for all items, closed
 * in finally), one engine call per item, `continueOnFail` and `pairedItem` handled once, here.
 */
import type { IDataObject, IExecuteFunctions, INodeExecutionData } from 'n8n-workflow';
import { withSsh, type SshConnection } from '../../lib/ssh';
import { toNodeError } from './errors';
import { hostFromCredentials, type LibvirtHost } from './target';

export type ItemWork = (ssh: SshConnection, host: LibvirtHost, itemIndex: number, signal?: AbortSignal) => Promise<IDataObject[]>;

export async function executePerItem(context: IExecuteFunctions, work: ItemWork): Promise<INodeExecutionData[][]> {
	const items = context.getInputData();
	const output: INodeExecutionData[] = [];
	const signal = context.getExecutionCancelSignal();
	const failItem = (error: unknown, itemIndex: number) => {
		const nodeError = toNodeError(context.getNode(), error, itemIndex);
		if (!context.continueOnFail()) throw nodeError;
		output.push({ json: { error: nodeError.message }, pairedItem: { item: itemIndex } });
	};

	let host: LibvirtHost;
	try {
		host = hostFromCredentials(await context.getCredentials('libvirtSshApi'));
		await withSsh(
			host.target,
			async (ssh) => {
				for (let itemIndex = 0; itemIndex < items.length; itemIndex++) {
					try {
						for (const json of await work(ssh, host, itemIndex, signal)) {
							output.push({ json, pairedItem: { item: itemIndex } });
						}
					} catch (error) {
						failItem(error, itemIndex);
					}
				}
			},
			signal,
		);
	} catch (error) {
		// The connection itself failed: every item that has no result yet fails with it.
		const done = new Set(output.map((item) => (item.pairedItem as { item: number }).item));
		for (let itemIndex = 0; itemIndex < items.length; itemIndex++) if (!done.has(itemIndex)) failItem(error, itemIndex);
	}
	return [output];
}
