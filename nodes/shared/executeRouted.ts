/**
 * The per-item loop for nodes with several outputs (Verify Checksum: Valid / Invalid): like
 * executePerItem (one SSH connection for the run, closed in finally; continueOnFail; pairedItem),
 * but each result names its output. With continueOnFail, a failed item goes to `errorOutput`, so a
 * backup that could not be verified never lands on an output that means "good".
 */
import type { IDataObject, IExecuteFunctions, INodeExecutionData } from 'n8n-workflow';
import { withSsh, type SshConnection } from '../../lib/ssh';
import { toNodeError } from './errors';
import { hostFromCredentials, type LibvirtHost } from './target';

export interface RoutedResult {
	output: number;
	json: IDataObject;
}

export type RoutedItemWork = (ssh: SshConnection, host: LibvirtHost, itemIndex: number, signal?: AbortSignal) => Promise<RoutedResult[]>;

export async function executeRouted(context: IExecuteFunctions, outputCount: number, errorOutput: number, work: RoutedItemWork): Promise<INodeExecutionData[][]> {
	const items = context.getInputData();
	const outputs: INodeExecutionData[][] = Array.from({ length: outputCount }, () => []);
	const done = new Set<number>();
	const signal = context.getExecutionCancelSignal();
	const failItem = (error: unknown, itemIndex: number) => {
		const nodeError = toNodeError(context.getNode(), error, itemIndex);
		if (!context.continueOnFail()) throw nodeError;
		outputs[errorOutput].push({ json: { ...items[itemIndex].json, error: nodeError.message }, pairedItem: { item: itemIndex } });
		done.add(itemIndex);
	};

	try {
		const host = hostFromCredentials(await context.getCredentials('libvirtSshApi'));
		await withSsh(
			host.target,
			async (ssh) => {
				for (let itemIndex = 0; itemIndex < items.length; itemIndex++) {
					try {
						for (const { output, json } of await work(ssh, host, itemIndex, signal)) {
							outputs[output].push({ json, pairedItem: { item: itemIndex } });
						}
						done.add(itemIndex);
					} catch (error) {
						failItem(error, itemIndex);
					}
				}
			},
			signal,
		);
	} catch (error) {
		// The connection itself failed: every item that has no result yet fails with it.
		for (let itemIndex = 0; itemIndex < items.length; itemIndex++) if (!done.has(itemIndex)) failItem(error, itemIndex);
	}
	return outputs;
}
