import { checkpointPrefix, isDestinationCheckpoint, planBackup, type HostState, type PlanInput, type PlanRequest, type StoredBackup } from '../../../lib/backup/plan';
import type { DiscoveredDisk, DiscoveredVm } from '../../../lib/libvirt';
import type { BackupKind, Manifest } from '../../../lib/store';

// One VM, one fixed store history, many requests: each row says what the planner must choose and why.
const UUID = '0f8fad5b-d9cb-469f-a165-70867728950e';
const NOW = new Date('2026-12-10T02:00:00Z');
const ID = '20261210T020000Z';
const PREFIX = checkpointPrefix('/backups');

function disk(target: string, format = 'qcow2', extra: Partial<DiscoveredDisk> = {}): DiscoveredDisk {
	return {
		target,
		device: 'disk',
		type: 'file',
		format,
		source: { path: `/var/lib/libvirt/images/${target}.${format}` },
		readonly: false,
		shareable: false,
		backingStore: [],
		virtualBytes: 10 * 2 ** 30,
		allocatedBytes: 2 * 2 ** 30,
		backingChain: [],
		backupable: true,
		...extra,
	};
}

function vm(state: DiscoveredVm['state'] = 'running', disks = [disk('vda')]): DiscoveredVm {
	return { name: 'web01', uuid: UUID, state, persistent: true, autostart: false, hypervisor: 'kvm', disks, totalVirtualBytes: 0, totalAllocatedBytes: 0, backupable: true, reasons: [] };
}

function backup(id: string, kind: BackupKind, extra: Partial<Manifest> = {}, stored: Partial<StoredBackup> = {}): StoredBackup {
	const day = `${id.slice(0, 4)}-${id.slice(4, 6)}-${id.slice(6, 8)}T02:00:00Z`;
	const manifest: Manifest = {
		format: 'n8n-nodes-libvirt-backup/manifest',
		version: 1,
		vm: { name: 'web01', uuid: UUID },
		host: 'kvm01',
		id,
		startedAt: day,
		finishedAt: day,
		kind,
		method: 'push',
		consistency: 'crash',
		...(kind === 'copy' ? {} : { checkpoint: `lvb-${id}` }),
		disks: [{ target: 'vda', source: '/var/lib/libvirt/images/vda.qcow2', file: 'vda.qcow2', format: 'qcow2', virtualBytes: 10 * 2 ** 30, bytes: 1, sha256: 'a'.repeat(64), compressed: false }],
		warnings: [],
		...extra,
	};
	return { manifest, missingFiles: [], ...stored };
}

const FULL = backup('20261205T020000Z', 'full');
const INC1 = backup('20261206T020000Z', 'incremental', { parent: FULL.manifest.id });
const INC2 = backup('20261207T020000Z', 'incremental', { parent: INC1.manifest.id });
const COPY = backup('20261208T020000Z', 'copy');

function hostWith(checkpoint: string, sizes: Record<string, number> = { vda: 4096 }): HostState {
	return { pushBackupSupported: true, checkpoints: [checkpoint], dirtyBytes: new Map([[checkpoint, new Map(Object.entries(sizes))]]) };
}

function input(overrides: Partial<Omit<PlanInput, 'request'>> & { request?: Partial<PlanRequest> } = {}): PlanInput {
	const { request, ...rest } = overrides;
	return {
		request: { mode: 'auto', compression: 'none', ...request },
		vm: vm(),
		host: hostWith(INC2.manifest.checkpoint!),
		store: { backups: [FULL, INC1, INC2] },
		id: ID,
		checkpointPrefix: PREFIX,
		now: NOW,
		fullBytes: new Map([['vda', 2 * 2 ** 30], ['vdb', 2 ** 30]]),
		...rest,
	};
}

interface Row {
	name: string;
	input: PlanInput;
	kind: BackupKind;
	parent?: string;
	reason?: RegExp;
	warning?: RegExp;
}

const rows: Row[] = [
	{ name: 'auto continues a usable chain from its newest member', input: input(), kind: 'incremental', parent: INC2.manifest.id, reason: /incremental on 20261207T020000Z/ },
	{ name: 'auto with no backup yet is a full, without a warning', input: input({ store: { backups: [] } }), kind: 'full', reason: /no previous backup/ },
	{ name: 'full mode is a full even with a usable chain', input: input({ request: { mode: 'full' } }), kind: 'full', reason: /requested/ },
	{ name: 'a shut-off VM is backed up in full', input: input({ vm: vm('shutoff'), host: undefined }), kind: 'full', reason: /not running/ },
	{
		name: 'a copy leaves the chain alone: auto after a copy continues from the newest incremental',
		input: input({ store: { backups: [FULL, INC1, INC2, COPY] } }),
		kind: 'incremental',
		parent: INC2.manifest.id,
	},
	{ name: 'copy mode writes a copy, not an incremental', input: input({ request: { mode: 'copy' } }), kind: 'copy', reason: /leaves the chain alone/ },
	{
		name: 'a chain member that failed verification makes a new full, with a warning',
		input: input({ store: { backups: [FULL, { ...INC1, verification: 'invalid' }, INC2] } }),
		kind: 'full',
		warning: /20261206T020000Z of the chain failed verification/,
	},
	{
		name: 'an unverifiable member (a read error) does not break the chain',
		input: input({ store: { backups: [FULL, { ...INC1, verification: 'unverifiable' }, INC2] } }),
		kind: 'incremental',
		parent: INC2.manifest.id,
	},
	{
		name: 'a newest backup that failed verification is not a parent',
		input: input({ store: { backups: [FULL, INC1, { ...INC2, verification: 'invalid' }] } }),
		kind: 'full',
		warning: /failed verification/,
	},
	{
		name: 'a missing ancestor breaks the chain',
		input: input({ store: { backups: [INC1, INC2] } }),
		kind: 'full',
		warning: /parent backup 20261205T020000Z of 20261206T020000Z is not in the store/,
	},
	{
		name: 'a missing image in an ancestor breaks the chain',
		input: input({ store: { backups: [{ ...FULL, missingFiles: ['vda.qcow2'] }, INC1, INC2] } }),
		kind: 'full',
		warning: /20261205T020000Z of the chain is missing vda.qcow2/,
	},
	{
		name: 'a checkpoint libvirt no longer has makes a full',
		input: input({ host: hostWith('lvb-other') }),
		kind: 'full',
		warning: /checkpoint lvb-20261207T020000Z no longer exists/,
	},
	{
		name: 'a checkpoint whose bitmap is broken (no size for the disk) makes a full',
		input: input({ host: { pushBackupSupported: true, checkpoints: [INC2.manifest.checkpoint!], dirtyBytes: new Map([[INC2.manifest.checkpoint!, new Map()]]) } }),
		kind: 'full',
		warning: /missing or broken bitmap for vda/,
	},
	{
		name: 'a disk added since the previous backup makes a full',
		input: input({ vm: vm('running', [disk('vda'), disk('vdb')]), host: hostWith(INC2.manifest.checkpoint!, { vda: 1, vdb: 1 }) }),
		kind: 'full',
		warning: /has no vdb/,
	},
	{
		name: 'backups of another VM with the same name are never a parent',
		input: input({ store: { backups: [FULL, INC1, INC2].map((b) => ({ ...b, manifest: { ...b.manifest, vm: { name: 'web01', uuid: '11111111-2222-3333-4444-555555555555' } } })) } }),
		kind: 'full',
		warning: /belong to another VM of the same name/,
	},
	{
		name: 'New Full Backup After N incrementals starts a new chain when the chain holds N',
		input: input({ request: { newFull: { incrementals: 2 } } }),
		kind: 'full',
		reason: /already holds 2 incremental\(s\)/,
	},
	{
		name: 'New Full Backup After N incrementals continues while the chain holds fewer',
		input: input({ request: { newFull: { incrementals: 3 } } }),
		kind: 'incremental',
		parent: INC2.manifest.id,
	},
	{
		name: 'New Full Backup After D days starts a new chain when the full is D days old',
		input: input({ request: { newFull: { days: 5 } } }),
		kind: 'full',
		reason: /is 5 day\(s\) old/,
	},
	{
		name: 'New Full Backup After D days continues a younger chain',
		input: input({ request: { newFull: { days: 6 } } }),
		kind: 'incremental',
		parent: INC2.manifest.id,
	},
	{
		name: 'incremental mode falls back to a full with a warning',
		input: input({ request: { mode: 'incremental' }, store: { backups: [] } }),
		kind: 'full',
		warning: /incremental not possible \(no previous backup\)/,
	},
	{
		name: 'a host without backup-begin gets a snapshot full',
		input: input({ host: { ...hostWith(INC2.manifest.checkpoint!), pushBackupSupported: false } }),
		kind: 'full',
		reason: /snapshot backups are always full/,
	},
	{
		name: 'an unreadable manifest is reported and skipped, the chain goes on',
		input: input({ store: { backups: [FULL, INC1, INC2], unreadable: [{ id: '20261209T020000Z', reason: 'unsupported version 2' }] } }),
		kind: 'incremental',
		parent: INC2.manifest.id,
		warning: /20261209T020000Z was skipped: unsupported version 2/,
	},
];

describe('planBackup', () => {
	it.each(rows)('$name', (row) => {
		const plan = planBackup(row.input);
		expect(plan.kind).toBe(row.kind);
		expect(plan.parent?.id).toBe(row.parent);
		if (row.reason) expect(plan.reason).toMatch(row.reason);
		if (row.warning) expect(plan.warnings.join('\n')).toMatch(row.warning);
		if (row.kind === 'full' && !row.warning && row.input.request.mode === 'auto') expect(plan.warnings.filter((w) => w.startsWith('full backup:'))).toEqual([]);
	});

	it('an incremental disk names its parent image as backing file and is estimated by its changed bytes', () => {
		const plan = planBackup(input());
		expect(plan.disks).toEqual([expect.objectContaining({ file: 'vda.qcow2', incrementalFrom: 'lvb-20261207T020000Z', backingFile: '../20261207T020000Z/vda.qcow2', estimatedBytes: 4096 })]);
		expect(plan.checkpoint).toBe(`${PREFIX}${ID}`);
		expect(plan.neededBytes).toBe(Math.ceil(4096 * 1.02));
	});

	it('a raw disk of a live VM is copied in full every time and gets no bitmap', () => {
		const plan = planBackup(input({ vm: vm('running', [disk('vda', 'raw')]), store: { backups: [] } }));
		expect(plan.checkpoint).toBeUndefined();
		expect(plan.disks[0]).toEqual(expect.objectContaining({ estimatedBytes: 2 * 2 ** 30 }));
		expect(plan.disks[0].incrementalFrom).toBeUndefined();
	});

	it('a copy creates no checkpoint, so the chain stays where it was', () => {
		expect(planBackup(input({ request: { mode: 'copy' } })).checkpoint).toBeUndefined();
	});

	it('push method on a host without backup-begin is refused', () => {
		expect(() => planBackup(input({ request: { method: 'push' }, host: { ...hostWith('x'), pushBackupSupported: false } }))).toThrow(/no push-mode backup-begin/);
	});

	it('an unknown disk target is refused with the disks the VM has', () => {
		expect(() => planBackup(input({ request: { disks: ['vdz'] } }))).toThrow(/has no disk "vdz" \(it has: vda\)/);
	});

	it('compression is not applied to incrementals, with a warning', () => {
		const plan = planBackup(input({ request: { compression: 'qcow2-compressed' } }));
		expect(plan.compress).toBe(false);
		expect(plan.warnings).toContain('incremental images are not compressed');
	});

	it('checkpoints are named per destination; a backup may delete those of its own destination and the old unnamed ones only', () => {
		const here = checkpointPrefix('/backups');
		const there = checkpointPrefix('/mnt/offsite');
		expect(here).toMatch(/^lvb-[0-9a-f]{8}-$/);
		expect(here).not.toBe(there);
		expect(isDestinationCheckpoint(`${here}${ID}`, here)).toBe(true);
		expect(isDestinationCheckpoint(`lvb-${ID}`, here)).toBe(true);
		expect(isDestinationCheckpoint(`${there}${ID}`, here)).toBe(false);
		expect(isDestinationCheckpoint('nightly-by-someone-else', here)).toBe(false);
	});
});
