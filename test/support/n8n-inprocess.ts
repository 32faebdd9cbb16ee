// Runs workflows through the REAL n8n execution engine (n8n-core's WorkflowExecute), in the jest process,
// without an n8n server or database — the way n8n's own NodeTestHarness (packages/core/nodes-testing,
// not published) does it. Our package is loaded from dist/ by n8n-core's PackageDirectoryLoader (the
// loader n8n uses for community packages), so node type names are `n8n-nodes-libvirt-backup.<name>`.
//
// What is real: n8n-core's engine (execution order, parameter defaults and expressions, getCredentials()
// incl. the "credential usable by node" and displayOptions checks, NodeOperationError handling, pairedItem,
// continueOnFail), n8n-workflow's Workflow, our compiled node and credential classes.
// What is a stand-in: the credential store (decrypted data given by the test; type defaults applied as
// n8n's CredentialsHelper.applyDefaultsAndOverwrites does, but no expression resolution in credential
// values), and `n8n-nodes-base.manualTrigger` / `.stickyNote` (n8n-nodes-base is not a dependency; see
// the classes below). Works on Node 20 (n8n-core 2.41.1 declares no engines field; measured).
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type {
	ICredentialDataDecryptedObject,
	ICredentialType,
	ICredentials,
	IConnections,
	INode,
	INodeCredentialsDetails,
	INodeProperties,
	INodeType,
	INodeTypeDescription,
	INodeTypes,
	IRun,
	ITriggerFunctions,
	ITriggerResponse,
	IVersionedNodeType,
	IWorkflowExecuteAdditionalData,
	IWorkflowSettings,
	INodeExecutionData,
	IDataObject,
	IHttpRequestOptions,
	ILoadOptionsFunctions,
} from 'n8n-workflow';

export const REPO_ROOT = path.resolve(__dirname, '..', '..');

/** A workflow as stored in an n8n export (only the fields the engine needs). */
export interface WorkflowJson {
	name?: string;
	nodes: INode[];
	connections: IConnections;
	settings?: IWorkflowSettings;
}

/** Credentials by id (as referenced from node.credentials[type].id) or, as a fallback, by type name. */
export type CredentialStore = Record<string, { type?: string; data: ICredentialDataDecryptedObject }>;

export interface InProcessRun {
	run: IRun;
	/** Node names in the order they finished. */
	nodeExecutionOrder: string[];
	/** The workflow-level error (first failing node), if any. */
	error?: { message: string; description?: string | null; node?: string; name?: string };
	/** json of every item on output `outputIndex` of the node's first run. */
	output(nodeName: string, outputIndex?: number): IDataObject[];
}

// The n8n modules are required lazily: n8n-core's InstanceSettings reads N8N_USER_FOLDER (and writes
// <folder>/.n8n/config) when first used, so the env must be set before.
/* eslint-disable @typescript-eslint/no-require-imports */
function core(): typeof import('n8n-core') {
	return require('n8n-core');
}
function wf(): typeof import('n8n-workflow') {
	return require('n8n-workflow');
}
/* eslint-enable @typescript-eslint/no-require-imports */

/**
 * Stand-in for n8n-nodes-base.manualTrigger (n8n-nodes-base is not installed in this repo). Same
 * type name, version, I/O and the same trigger contract as the real node: in manual mode the engine
 * calls manualTriggerFunction, which emits one empty item.
 */
class ManualTrigger implements INodeType {
	description: INodeTypeDescription = {
		displayName: 'Manual Trigger',
		name: 'manualTrigger',
		icon: 'fa:mouse-pointer',
		group: ['trigger', 'input'],
		version: 1,
		description: 'Runs the flow on clicking a button in n8n',
		eventTriggerDescription: '',
		maxNodes: 1,
		defaults: { name: 'When clicking ‘Execute workflow’', color: '#909298' },
		inputs: [],
		outputs: ['main' as never],
		properties: [],
	};

	async trigger(this: ITriggerFunctions): Promise<ITriggerResponse> {
		const manualTriggerFunction = async () => {
			this.emit([this.helpers.returnJsonArray([{}])]);
		};
		return { manualTriggerFunction };
	}
}

/** Stand-in for n8n-nodes-base.stickyNote (exported workflows carry notes; they never execute). */
// eslint-disable-next-line @n8n/community-nodes/node-usable-as-tool -- stand-in for a core node, not ours
class StickyNote implements INodeType {
	description: INodeTypeDescription = {
		displayName: 'Sticky Note',
		name: 'stickyNote',
		icon: 'fa:sticky-note',
		group: ['input'],
		version: 1,
		description: 'Make your workflow easier to understand',
		defaults: { name: 'Sticky Note', color: '#FFD233' },
		inputs: [],
		outputs: [],
		properties: [
			{ displayName: 'Content', name: 'content', type: 'string', default: '' },
			{ displayName: 'Height', name: 'height', type: 'number', required: true, default: 160 },
			{ displayName: 'Width', name: 'width', type: 'number', required: true, default: 240 },
			{ displayName: 'Color', name: 'color', type: 'number', required: true, default: 1 },
		],
	};
}

/**
 * A test-only source of items (type `lvb-test.items`, parameter `items`: a JSON array of objects),
 * where a real workflow would have a Code, Set or sheet node: e.g. a list of hosts for a fleet.
 */
// eslint-disable-next-line @n8n/community-nodes/node-usable-as-tool -- test stand-in, not a node we ship
class TestItems implements INodeType {
	description: INodeTypeDescription = {
		displayName: 'Test Items',
		name: 'items',
		group: ['transform'],
		version: 1,
		description: 'Outputs the items given as JSON',
		defaults: { name: 'Items' },
		inputs: ['main' as never],
		outputs: ['main' as never],
		properties: [{ displayName: 'Items', name: 'items', type: 'string', default: '[]' }],
	};

	async execute(this: import('n8n-workflow').IExecuteFunctions): Promise<INodeExecutionData[][]> {
		const items = JSON.parse(String(this.getNodeParameter('items', 0))) as IDataObject[];
		return [items.map((json) => ({ json }))];
	}
}

type Loader = InstanceType<typeof import('n8n-core').PackageDirectoryLoader>;

class NodeTypes implements INodeTypes {
	constructor(
		private readonly loaders: Loader[],
		private readonly builtins: Record<string, INodeType>,
	) {}

	private find(type: string): INodeType | IVersionedNodeType {
		if (type in this.builtins) return this.builtins[type];
		const dot = type.lastIndexOf('.');
		const pkg = type.slice(0, dot);
		const name = type.slice(dot + 1);
		const loader = this.loaders.find((l) => l.packageName === pkg);
		if (!loader) throw new Error(`Unrecognized node type: ${type} (no package "${pkg}" loaded)`);
		return loader.getNode(name).type;
	}

	getByName(type: string) {
		return this.find(type);
	}

	getByNameAndVersion(type: string, version?: number): INodeType {
		return wf().NodeHelpers.getVersionedNodeType(this.find(type), version);
	}

	getKnownTypes() {
		const known: Record<string, { className: string; sourcePath: string }> = {};
		for (const l of this.loaders) {
			for (const [name, info] of Object.entries(l.known.nodes)) known[`${l.packageName}.${name}`] = info;
		}
		return known;
	}
}

function makeCredentialsHelper(loaders: Loader[], store: () => CredentialStore) {
	const { ICredentialsHelper, NodeHelpers } = wf();
	const credentialType = (name: string): ICredentialType => {
		for (const l of loaders) {
			if (name in l.known.credentials || name in l.credentialTypes) return l.getCredential(name).type;
		}
		throw new Error(`Unknown credential type "${name}"`);
	};

	class CredentialsHelper extends ICredentialsHelper {
		getParentTypes(name: string): string[] {
			const ext = credentialType(name).extends ?? [];
			return ext.flatMap((p) => [p, ...this.getParentTypes(p)]);
		}

		isCredentialUsableByNode(type: string, nodeType: string): boolean {
			try {
				const def = credentialType(type);
				if (!(def as { restrictToSupportedNodes?: boolean }).restrictToSupportedNodes) return true;
				return (def.supportedNodes ?? []).some((n) => nodeType === n || nodeType.endsWith(`.${n}`));
			} catch {
				return true;
			}
		}

		async authenticate(_c: ICredentialDataDecryptedObject, _t: string, requestOptions: IHttpRequestOptions) {
			return requestOptions;
		}

		async preAuthentication() {
			return undefined;
		}

		async runPreAuthentication() {
			return undefined;
		}

		async getCredentials(): Promise<ICredentials> {
			return new (core().Credentials)({ id: null, name: '' }, '', '') as unknown as ICredentials;
		}

		getCredentialsProperties(type: string): INodeProperties[] {
			const own = credentialType(type).properties;
			const inherited = this.getParentTypes(type).flatMap((p) => credentialType(p).properties);
			return [...inherited, ...own];
		}

		async getDecrypted(
			_additionalData: IWorkflowExecuteAdditionalData,
			nodeCredentials: INodeCredentialsDetails,
			type: string,
			_mode?: unknown,
			_executeData?: unknown,
			raw?: boolean,
		): Promise<ICredentialDataDecryptedObject> {
			const all = store();
			const entry =
				(nodeCredentials.id && all[nodeCredentials.id]) ||
				all[type] ||
				Object.values(all).find((c) => c.type === type && !nodeCredentials.id);
			if (!entry || (entry.type && entry.type !== type)) {
				// Same wording as n8n's CredentialsHelper/CredentialNotFoundError.
				throw new Error(`Credential with ID "${nodeCredentials.id}" does not exist for type "${type}".`);
			}
			if (raw) return { ...entry.data };
			// As n8n's applyDefaultsAndOverwrites: fill defaults of the credential type's properties.
			return NodeHelpers.getNodeParameters(
				this.getCredentialsProperties(type),
				entry.data as never,
				true,
				false,
				null,
				null,
			) as ICredentialDataDecryptedObject;
		}

		async updateCredentials() {}

		async updateCredentialsOauthTokenData() {}
	}
	return new CredentialsHelper();
}

export interface InProcessOptions {
	/** Package dirs to load (package.json with an "n8n" block, built dist/). Default: this repo. */
	packageDirs?: string[];
}

export class InProcessN8n {
	private credentials: CredentialStore = {};
	private executionCounter = 0;

	private constructor(
		readonly nodeTypes: NodeTypes,
		private readonly loaders: Loader[],
		private readonly ownedUserFolder: string | undefined,
	) {}

	/** Loads the package(s) with n8n-core's PackageDirectoryLoader (which also validates descriptions). */
	static async create(options: InProcessOptions = {}): Promise<InProcessN8n> {
		let owned: string | undefined;
		if (!process.env.N8N_USER_FOLDER) {
			owned = fs.mkdtempSync(path.join(os.tmpdir(), 'lvb-n8n-inproc-'));
			process.env.N8N_USER_FOLDER = owned;
		}
		process.env.N8N_ENCRYPTION_KEY ??= 'lvb-inprocess-test-key';
		const loaders: Loader[] = [];
		for (const dir of options.packageDirs ?? [REPO_ROOT]) {
			const pkg = JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8'));
			for (const f of [...(pkg.n8n?.nodes ?? []), ...(pkg.n8n?.credentials ?? [])]) {
				if (!fs.existsSync(path.join(dir, f))) throw new Error(`${dir}: ${f} is missing (run \`npm run build\`)`);
			}
			const loader = new (core().PackageDirectoryLoader)(dir);
			await loader.loadAll();
			loaders.push(loader);
		}
		const nodeTypes = new NodeTypes(loaders, {
			'n8n-nodes-base.manualTrigger': new ManualTrigger(),
			'n8n-nodes-base.stickyNote': new StickyNote(),
			'lvb-test.items': new TestItems(),
		});
		return new InProcessN8n(nodeTypes, loaders, owned);
	}

	/** Full node type names loaded from our package(s), e.g. n8n-nodes-libvirt-backup.libvirtDiscoverVms. */
	get loadedNodeTypes(): string[] {
		return this.loaders.flatMap((l) => Object.keys(l.known.nodes).map((n) => `${l.packageName}.${n}`));
	}

	get loadedCredentialTypes(): string[] {
		return this.loaders.flatMap((l) => Object.keys(l.known.credentials));
	}

	/** Replaces the credential store: key = credential id used in the workflow (or the type name). */
	setCredentials(store: CredentialStore): void {
		this.credentials = store;
	}

	/** Runs the workflow from its (first) trigger, as a manual execution. Never throws for node errors. */
	async run(workflow: WorkflowJson | string, opts: { credentials?: CredentialStore } = {}): Promise<InProcessRun> {
		const { Workflow, createRunExecutionData } = wf();
		const { WorkflowExecute, ExecutionLifecycleHooks } = core();
		const data: WorkflowJson = typeof workflow === 'string' ? JSON.parse(fs.readFileSync(workflow, 'utf8')) : workflow;
		const store = opts.credentials ?? this.credentials;

		const instance = new Workflow({
			id: 'inprocess',
			name: data.name ?? 'in-process test',
			nodes: data.nodes,
			connections: data.connections,
			nodeTypes: this.nodeTypes,
			settings: { executionOrder: 'v1', ...(data.settings ?? {}) },
			active: false,
		});
		const start = instance.getStartNode();
		if (!start) throw new Error('workflow has no start node');

		const executionId = String(++this.executionCounter);
		const hooks = new ExecutionLifecycleHooks('manual', executionId, {
			id: 'inprocess',
			name: data.name ?? 'in-process test',
			nodes: data.nodes,
			connections: data.connections,
			active: false,
			settings: data.settings ?? {},
			createdAt: new Date(),
			updatedAt: new Date(),
			isArchived: false,
			activeVersionId: null,
		} as never);
		const nodeExecutionOrder: string[] = [];
		hooks.addHandler('nodeExecuteAfter', (nodeName: string) => {
			nodeExecutionOrder.push(nodeName);
		});
		let resolveRun!: (r: IRun) => void;
		const finished = new Promise<IRun>((resolve) => (resolveRun = resolve));
		hooks.addHandler('workflowExecuteAfter', (fullRunData: IRun) => resolveRun(fullRunData));

		// Only what n8n-core reads for a plain node run; everything else stays undefined on purpose
		// (a catch-all mock would make optional features such as `otel` look enabled).
		const additionalData = {
			hooks,
			credentialsHelper: makeCredentialsHelper(this.loaders, () => store),
			executionId,
			userId: 'inprocess-user',
			currentNodeParameters: undefined,
			variables: {},
			restApiUrl: 'http://localhost:5678/rest',
			instanceBaseUrl: 'http://localhost:5678/',
			webhookBaseUrl: 'http://localhost:5678/webhook',
			webhookWaitingBaseUrl: 'http://localhost:5678/webhook-waiting',
			webhookTestBaseUrl: 'http://localhost:5678/webhook-test',
			formWaitingBaseUrl: 'http://localhost:5678/form-waiting',
			executionTimeoutTimestamp: undefined,
			setExecutionStatus: () => {},
			sendDataToUI: () => {},
		} as unknown as IWorkflowExecuteAdditionalData;

		const runExecutionData = createRunExecutionData({
			executionData: {
				nodeExecutionStack: [{ node: start, data: { main: [[{ json: {} }]] }, source: null }],
			},
		});
		const workflowExecute = new WorkflowExecute(additionalData, 'manual', runExecutionData);
		await workflowExecute.processRunExecutionData(instance);
		const run = await finished;

		const err = run.data.resultData.error as
			| { message: string; description?: string | null; node?: { name: string }; name?: string }
			| undefined;
		return {
			run,
			nodeExecutionOrder,
			error: err
				? { message: err.message, description: err.description, node: err.node?.name, name: err.name }
				: undefined,
			output(nodeName: string, outputIndex = 0) {
				const taskData = run.data.resultData.runData[nodeName]?.[0];
				const items: INodeExecutionData[] = taskData?.data?.main?.[outputIndex] ?? [];
				return items.map((i) => i.json);
			},
		};
	}

	/**
	 * A real n8n-core LoadOptionsContext for one node, built as n8n's DynamicNodeParametersService
	 * builds it when the editor asks for a list (listSearch) or options (loadOptions): the node alone
	 * in a workflow, its current parameters in additionalData, its credential from the store.
	 */
	loadOptionsContext(node: INode, path: string, opts: { credentials?: CredentialStore } = {}): ILoadOptionsFunctions {
		const { Workflow } = wf();
		const store = opts.credentials ?? this.credentials;
		const workflow = new Workflow({ nodes: [node], connections: {}, active: false, nodeTypes: this.nodeTypes });
		const additionalData = {
			credentialsHelper: makeCredentialsHelper(this.loaders, () => store),
			currentNodeParameters: node.parameters,
			userId: 'inprocess-user',
			variables: {},
			restApiUrl: 'http://localhost:5678/rest',
			instanceBaseUrl: 'http://localhost:5678/',
			webhookBaseUrl: 'http://localhost:5678/webhook',
		} as unknown as IWorkflowExecuteAdditionalData;
		return new (core().LoadOptionsContext)(workflow, node, additionalData, path);
	}

	/** Ends n8n-core's background work (SSH tunnel client pool) and removes the temp user folder. */
	async shutdown(): Promise<void> {
		try {
			// Not exported from n8n-core's index. Its 60 s cleanup interval is unref()'d in 2.41.1, but it
			// also holds a process 'exit' listener and any pooled SSH tunnel clients: release them.
			/* eslint-disable @typescript-eslint/no-require-imports */
			const { Container } = require('@n8n/di') as { Container: { get(t: unknown): { onShutdown(): void } } };
			const { SSHClientsManager } = require('n8n-core/dist/execution-engine/ssh-clients-manager');
			/* eslint-enable @typescript-eslint/no-require-imports */
			Container.get(SSHClientsManager).onShutdown();
		} catch {
			/* layout changed in another n8n-core version: nothing to stop */
		}
		if (this.ownedUserFolder) {
			fs.rmSync(this.ownedUserFolder, { recursive: true, force: true });
			if (process.env.N8N_USER_FOLDER === this.ownedUserFolder) delete process.env.N8N_USER_FOLDER;
		}
	}
}
