/** The one-output case of the shared per-item loop (see executeRouted.ts); an error item is `{ error }` unless the node says otherwise. */
import type { IDataObject, IExecuteFunctions, INodeExecutionData } from 'n8n-workflow';
import type { SshConnection } from '../../lib/ssh';
import { executeRouted, type RoutedOptions } from './executeRouted';
import type { LibvirtHost } from './target';

export type ItemWork = (ssh: SshConnection, host: LibvirtHost, itemIndex: number, signal?: AbortSignal) => Promise<IDataObject[]>;

export async function executePerItem(context: IExecuteFunctions, work: ItemWork, { errorJson = (_input, message) => ({ error: message }) }: RoutedOptions = {}): Promise<INodeExecutionData[][]> {
	return await executeRouted(context, 1, 0, async (...args) => (await work(...args)).map((json) => ({ output: 0, json })), { errorJson });
}
