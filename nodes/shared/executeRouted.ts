/**
 * The per-item loop every node shares (executePerItem is its one-output case): one SSH connection
 * for the run (reused for all items, closed in finally), one engine call per item, each result on
 * the output it names, `continueOnFail` and `pairedItem` handled once, here. With continueOnFail a
 * failed item goes to `errorOutput`, so a backup that could not be verified never lands on an
 * output that means "good".
 *
 * A credential that skips host key verification is never silent: every item (error items too)
 * carries `hostKeyWarning`, the run gets a warning hint, and an error that stops the run says it in
 * its description. The field always speaks for this node's own connection: one inherited from an
 * upstream node's item is dropped when this node verified its host.
 */
import { NodeOperationError, type IDataObject, type IExecuteFunctions, type INodeExecutionData } from 'n8n-workflow';
import { withSsh, type SshConnection, type SshTarget } from '../../lib/ssh';
import { toNodeError } from './errors';
import { hostFromCredentials, type LibvirtHost } from './target';

export interface RoutedResult {
	output: number;
	json: IDataObject;
}

export type RoutedItemWork = (ssh: SshConnection, host: LibvirtHost, itemIndex: number, signal?: AbortSignal) => Promise<RoutedResult[]>;

export interface RoutedOptions {
	/** The json of an error item (continueOnFail); by default the input item's json plus `error`. */
	errorJson?: (input: IDataObject, message: string, itemIndex: number) => IDataObject;
}

/** The warning for a target whose host key is not verified (undefined when it is). */
export function hostKeyWarning(target: SshTarget, presentedFingerprint?: string): string | undefined {
	if (!('skipVerification' in target.hostKeys)) return undefined;
	const presented = presentedFingerprint ? ` This time it presented ${presentedFingerprint}.` : '';
	return (
		`host key NOT verified: the credential has "Skip Host Key Verification" on, so anyone who can intercept the connection to ` +
		`${target.host}:${target.port} can read the backups and run commands as ${target.username}.${presented} ` +
		'Pin the host key under Host Keys and turn the switch off.'
	);
}

function withHostKeyWarning(json: IDataObject, warning: string | undefined): IDataObject {
	if (warning !== undefined) return { ...json, hostKeyWarning: warning };
	if (!('hostKeyWarning' in json)) return json;
	const own = { ...json };
	delete own.hostKeyWarning;
	return own;
}

export async function executeRouted(
	context: IExecuteFunctions,
	outputCount: number,
	errorOutput: number,
	work: RoutedItemWork,
	{ errorJson = (input, message) => ({ ...input, error: message }) }: RoutedOptions = {},
): Promise<INodeExecutionData[][]> {
	const items = context.getInputData();
	const outputs: INodeExecutionData[][] = Array.from({ length: outputCount }, () => []);
	const done = new Set<number>();
	const signal = context.getExecutionCancelSignal();
	let warning: string | undefined;
	const emit = (output: number, json: IDataObject, itemIndex: number) => {
		outputs[output].push({ json: withHostKeyWarning(json, warning), pairedItem: { item: itemIndex } });
	};
	const toErrorOutput = context.getNode().onError === 'continueErrorOutput';
	const failItem = (error: unknown, itemIndex: number) => {
		const nodeError = toNodeError(context.getNode(), error, itemIndex);
		if (!context.continueOnFail()) throw withWarningDescription(nodeError, warning);
		const json = withHostKeyWarning(errorJson(items[itemIndex].json, nodeError.message, itemIndex), warning);
		outputs[errorOutput].push({ json: toErrorOutput ? forErrorOutput(json, items[itemIndex].json) : json, pairedItem: { item: itemIndex } });
		done.add(itemIndex);
	};

	try {
		const host = hostFromCredentials(await context.getCredentials('libvirtSshApi'));
		warning = hostKeyWarning(host.target);
		await withSsh(
			host.target,
			async (ssh) => {
				warning = hostKeyWarning(host.target, ssh.hostKeyFingerprint);
				for (let itemIndex = 0; itemIndex < items.length; itemIndex++) {
					try {
						for (const { output, json } of await work(ssh, host, itemIndex, signal)) emit(output, json, itemIndex);
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
	if (warning) context.addExecutionHints({ message: warning, type: 'warning', location: 'outputPane' });
	return outputs;
}

/**
 * With "On Error: Continue (using error output)" n8n moves an item to the error output only when its
 * json holds nothing but error, message and details, and then merges the input item's json into it.
 * So the error stays `error`, and what the input does not already say (the VM, hostKeyWarning) goes
 * into `details`.
 */
export function forErrorOutput(json: IDataObject, input: IDataObject): IDataObject {
	const { error, ...rest } = json;
	const details = Object.fromEntries(Object.entries(rest).filter(([key, value]) => input[key] !== value));
	return Object.keys(details).length > 0 ? { error, details } : { error };
}

/** n8n keeps no hints of a run that throws, so the error itself carries the warning. */
export function withWarningDescription(error: NodeOperationError, warning: string | undefined): NodeOperationError {
	if (warning && !error.description?.includes(warning)) error.description = [error.description, warning].filter(Boolean).join('\n\n');
	return error;
}
