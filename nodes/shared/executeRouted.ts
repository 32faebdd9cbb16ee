/**
 * The per-item loop every node shares (executePerItem is its one-output case): one engine call per
 * item, each result on the output it names, `continueOnFail` and `pairedItem` handled once, here.
 * With continueOnFail a failed item goes to `errorOutput`, so a backup that could not be verified
 * never lands on an output that means "good".
 *
 * Fleets: an item's host is the node's Host parameter (an expression per item; empty: the
 * credential's host). One SSH connection per distinct host for the run, opened when its first item
 * comes and closed in finally; the items of one host run in their input order on it; up to "Hosts in
 * Parallel" hosts run at once. Outputs keep input order whatever finished first. A host that cannot
 * be reached, or whose key is not pinned, fails its own items only. Without continueOnFail the first
 * failure stops new items from starting (on every host), lets the running ones finish, and fails the
 * run with it.
 *
 * A credential that skips host key verification is never silent: every item (error items too)
 * carries `hostKeyWarning` for its host, the run gets a warning hint, and an error that stops the run
 * says it in its description. The field always speaks for this node's own connection: one inherited
 * from an upstream node's item is dropped when this node verified its host.
 */
import { NodeOperationError, type IDataObject, type IExecuteFunctions, type INodeExecutionData } from 'n8n-workflow';
import { withSsh, type SshConnection, type SshTarget } from '../../lib/ssh';
import { toNodeError } from './errors';
import { hostForItem, hostFromCredentials, type LibvirtHost } from './target';

export interface RoutedResult {
	output: number;
	json: IDataObject;
}

export type RoutedItemWork = (ssh: SshConnection, host: LibvirtHost, itemIndex: number, signal?: AbortSignal) => Promise<RoutedResult[]>;

export interface RoutedOptions {
	/** The json of an error item (continueOnFail); by default the input item's json plus `error`. */
	errorJson?: (input: IDataObject, message: string, itemIndex: number) => IDataObject;
}

/** Default of the Hosts in Parallel option (nodes/shared/fleetParameters.ts). */
export const DEFAULT_HOSTS_IN_PARALLEL = 3;

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

/** What became of one item: its results, or its error; with the warning of the host it ran on. */
type Outcome = { warning?: string } & ({ results: RoutedResult[] } | { error: unknown });

interface HostGroup {
	host: LibvirtHost;
	items: number[];
}

export async function executeRouted(
	context: IExecuteFunctions,
	outputCount: number,
	errorOutput: number,
	work: RoutedItemWork,
	{ errorJson = (input, message) => ({ ...input, error: message }) }: RoutedOptions = {},
): Promise<INodeExecutionData[][]> {
	const items = context.getInputData();
	const signal = context.getExecutionCancelSignal();
	const continueOnFail = context.continueOnFail();
	const outcomes = new Map<number, Outcome>();
	/** Without continueOnFail: set by the first failure, so no further item starts. */
	let stopped = false;
	const record = (itemIndex: number, outcome: Outcome) => {
		outcomes.set(itemIndex, outcome);
		if ('error' in outcome && !continueOnFail) stopped = true;
	};

	const groups = new Map<string, HostGroup>();
	try {
		const credentialHost = hostFromCredentials(await context.getCredentials('libvirtSshApi'));
		for (let itemIndex = 0; itemIndex < items.length; itemIndex++) {
			let host: LibvirtHost;
			try {
				host = hostForItem(credentialHost, context.getNodeParameter('host', itemIndex, ''));
			} catch (error) {
				record(itemIndex, { error, warning: hostKeyWarning(credentialHost.target) });
				continue;
			}
			const key = `${host.target.host.toLowerCase()}\0${host.target.port}`;
			const group = groups.get(key) ?? { host, items: [] };
			group.items.push(itemIndex);
			groups.set(key, group);
		}
	} catch (error) {
		// The credential itself is unusable: every item fails with it.
		for (let itemIndex = 0; itemIndex < items.length; itemIndex++) record(itemIndex, { error });
	}

	const runHost = async ({ host, items: hostItems }: HostGroup) => {
		if (stopped) return;
		let warning = hostKeyWarning(host.target);
		try {
			await withSsh(
				host.target,
				async (ssh) => {
					warning = hostKeyWarning(host.target, ssh.hostKeyFingerprint);
					for (const itemIndex of hostItems) {
						if (stopped) return;
						try {
							record(itemIndex, { results: await work(ssh, host, itemIndex, signal), warning });
						} catch (error) {
							record(itemIndex, { error, warning });
						}
					}
				},
				signal,
			);
		} catch (error) {
			// The connection itself failed: this host's items that have no outcome yet fail with it.
			for (const itemIndex of hostItems) if (!outcomes.has(itemIndex)) record(itemIndex, { error, warning });
		}
	};
	const hostsInParallel = Math.max(1, Math.floor(Number(context.getNodeParameter('hostsInParallel', 0, DEFAULT_HOSTS_IN_PARALLEL)) || 1));
	await inParallel([...groups.values()], hostsInParallel, runHost);

	const outputs: INodeExecutionData[][] = Array.from({ length: outputCount }, () => []);
	const toErrorOutput = context.getNode().onError === 'continueErrorOutput';
	const warnings = new Set<string>();
	let firstError: { itemIndex: number; error: unknown; warning?: string } | undefined;
	for (let itemIndex = 0; itemIndex < items.length; itemIndex++) {
		const outcome = outcomes.get(itemIndex);
		if (!outcome) continue; // not started: the run fails with an earlier error
		if (outcome.warning) warnings.add(outcome.warning);
		if ('results' in outcome) {
			for (const { output, json } of outcome.results) outputs[output].push({ json: withHostKeyWarning(json, outcome.warning), pairedItem: { item: itemIndex } });
			continue;
		}
		if (!continueOnFail) {
			firstError ??= { itemIndex, error: outcome.error, warning: outcome.warning };
			continue;
		}
		const nodeError = toNodeError(context.getNode(), outcome.error, itemIndex);
		const json = withHostKeyWarning(errorJson(items[itemIndex].json, nodeError.message, itemIndex), outcome.warning);
		outputs[errorOutput].push({ json: toErrorOutput ? forErrorOutput(json, items[itemIndex].json) : json, pairedItem: { item: itemIndex } });
	}
	if (firstError) throw withWarningDescription(toNodeError(context.getNode(), firstError.error, firstError.itemIndex), firstError.warning);
	for (const message of warnings) context.addExecutionHints({ message, type: 'warning', location: 'outputPane' });
	return outputs;
}

/** Runs `task` for each entry, at most `limit` at once, starting them in order. */
export async function inParallel<T>(entries: readonly T[], limit: number, task: (entry: T) => Promise<void>): Promise<void> {
	let next = 0;
	const runner = async () => {
		while (next < entries.length) await task(entries[next++]);
	};
	await Promise.all(Array.from({ length: Math.min(limit, entries.length) }, runner));
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
