/**
 * The hostile input corpus, as data: one row per case, run by hostile.test.ts through the real n8n
 * engine against the lab. Each row names the node, the parameters (built from the case's own
 * fixture, so every case has its own canary path and folders), what to plant on the host first, and
 * what a correct run looks like: a clear error (a pattern for its message) or a check of the items.
 * Whatever the row says, the runner also asserts that no canary appeared and that nothing in the
 * case's folder outside the paths the row lets the run change was read, written, added or removed.
 */
import type { IDataObject } from 'n8n-workflow';
import { quoteArg as q } from '../../lib/shell';

export type NodeKey = 'discover' | 'backup' | 'list' | 'verify' | 'prune' | 'export' | 'restore';

export const NODES: Record<NodeKey, { type: string; name: string }> = {
	discover: { type: 'libvirtDiscoverVms', name: 'Discover VMs' },
	backup: { type: 'libvirtBackupVmDisk', name: 'Backup VM Disk' },
	list: { type: 'libvirtListBackups', name: 'List Backups' },
	verify: { type: 'libvirtVerifyChecksum', name: 'Verify Checksum' },
	prune: { type: 'libvirtPruneBackups', name: 'Prune Old Backups' },
	export: { type: 'libvirtExportArchive', name: 'Export Archive' },
	restore: { type: 'libvirtRestoreVmDisk', name: 'Restore VM Disk' },
};

export type Category = 'vm name' | 'path' | 'planted file' | 'number' | 'regex' | 'manifest';

/** One case's world on the lab host. Everything under `root` except `writable` is "outside". */
export interface Ctx {
	/** Random folder of this case; removed afterwards. */
	root: string;
	/** The backup destination: web01 (two backups) and db01 (one), made as our writer makes them. */
	dest: string;
	/** web01's older and newer backup, db01's backup. */
	old: string;
	newest: string;
	db: string;
	/** A file outside the destination with a known content and an atime older than its mtime (a read moves it). */
	sentinel: string;
	/** A second store outside the destination (web01, three backups) that no run may touch. */
	outsideStore: string;
	outsideBackup: string;
	/** Empty folders for Export and Restore to write into. */
	exports: string;
	restores: string;
	/** Must never exist: every injected command touches it. */
	canary: string;
	/** The canary's file name, for values that may not hold a '/': `touch NAME` lands in the shell's folder (checked too). */
	canaryName: string;
	/** The suite's test VM (shut off), a real backup of it made once, and where a case copies it to. */
	vm: string;
	realSource: string;
	realBackup: string;
	/** Marks every VM a case may define, for clean-up. */
	marker: string;
	/** Lab VMs with hostile names (lab.json hostileVms). */
	labHostile: readonly string[];
}

/** `items`: every item the node put out, on all its outputs (Verify sends invalid backups to a second one). */
export type Expect = { error: RegExp } | { items: (items: IDataObject[], ctx: Ctx) => void };

export interface HostileCase {
	/** Unique, short, [a-z0-9-]: names the canary. */
	id: string;
	category: Category;
	node: NodeKey;
	label: string;
	params: (ctx: Ctx) => Record<string, unknown>;
	/** Shell run as root on the host before the node runs (quote data with q). */
	plant?: (ctx: Ctx) => string;
	/** Overrides of the lab credential (e.g. a libvirt URI). */
	credential?: (ctx: Ctx) => Record<string, string>;
	/** Paths the run may change (added, removed, written), besides nothing. Default: the destination. */
	writable?: (ctx: Ctx) => string[];
	expect: Expect;
}

const rl = (value: string) => ({ __rl: true, mode: 'name', value });
const id = (path: string) => path.slice(path.lastIndexOf('/') + 1);

/** Ways to smuggle `touch CANARY` into a value that reaches a shell. */
export const injections = (c: Ctx): Record<string, string> => ({
	subshell: `$(touch ${c.canary})`,
	backtick: `\`touch ${c.canary}\``,
	semicolon: `x; touch ${c.canary}`,
	and: `x && touch ${c.canary}`,
	pipe: `x | touch ${c.canary}`,
	newline: `x\ntouch ${c.canary}`,
	quotes: `x'"; touch ${c.canary}; echo '"`,
});

const expectItems = (check: (items: IDataObject[], ctx: Ctx) => void): Expect => ({ items: check });
const noItems = expectItems((items) => expect(items).toEqual([]));
const invalid = expectItems((items) => expect(items).toEqual([expect.objectContaining({ valid: false })]));
const NOT_FOUND = /^VM not found: /;
const BAD_DEST = /^Destination (must|cannot)/;
const NOT_BACKUP_PATH = /is not a backup folder \(expected <destination>\/<vm>\/<backup id>\)/;

// A backup's image (vda.qcow2) swapped for something else; the manifest still names it.
// Plant scripts run with $S set to the sentinel's path.
const swapImage = (command: string) => (c: Ctx) => `f=${q(`${c.newest}/vda.qcow2`)}; rm -f -- "$f" && ${command}`;
const imageLink = swapImage('ln -s -- "$S" "$f"');
const writeManifest = (path: string, edit: string) =>
	`m=${q(`${path}/manifest.json`)}; node -e ${q(`const fs=require('fs');const m=JSON.parse(fs.readFileSync(process.argv[1],'utf8'));${edit};fs.writeFileSync(process.argv[1],JSON.stringify(m))`)} "$m"`;

/** The newest backup of web01 (the item List gives for it). */
const newestItem = (items: IDataObject[], c: Ctx) => items.find((item) => item.path === c.newest);

export const CORPUS: HostileCase[] = [
	// ---- VM names: Backup VM Disk's VM, Discover's names, the VM Names filters, disk targets ----
	...(['subshell', 'backtick', 'semicolon', 'and', 'pipe', 'newline', 'quotes'] as const).map(
		(kind): HostileCase => ({
			id: `backup-vm-${kind}`,
			category: 'vm name',
			node: 'backup',
			label: `VM name with ${kind === 'subshell' ? '$(...)' : kind}`,
			params: (c) => ({ vm: rl(injections(c)[kind]), destination: c.dest }),
			expect: { error: NOT_FOUND },
		}),
	),
	{ id: 'backup-vm-tab', category: 'vm name', node: 'backup', label: 'VM name with a tab (no such VM)', params: (c) => ({ vm: rl(`x\ttouch ${c.canary}`), destination: c.dest }), expect: { error: NOT_FOUND } },
	{ id: 'backup-vm-cr', category: 'vm name', node: 'backup', label: 'VM name with CR', params: (c) => ({ vm: rl(`x\rtouch ${c.canary}`), destination: c.dest }), expect: { error: NOT_FOUND } },
	{ id: 'backup-vm-nul', category: 'vm name', node: 'backup', label: 'VM name with NUL', params: (c) => ({ vm: rl(`x\0; touch ${c.canary}`), destination: c.dest }), expect: { error: /NUL|VM not found/ } },
	{ id: 'backup-vm-dotdot', category: 'vm name', node: 'backup', label: 'VM name "../.."', params: (c) => ({ vm: rl('../..'), destination: c.dest }), expect: { error: NOT_FOUND } },
	{ id: 'backup-vm-long', category: 'vm name', node: 'backup', label: 'VM name of 5000 characters', params: (c) => ({ vm: rl(`${'v'.repeat(5000)}$(touch ${c.canary})`), destination: c.dest }), expect: { error: NOT_FOUND } },
	{
		id: 'backup-vm-lab-evil',
		category: 'vm name',
		node: 'backup',
		label: 'lab VM named with quotes, $(touch pwned), |, &, backslash, backtick, $HOME, *',
		params: (c) => ({ vm: rl(c.labHostile[0]), destination: c.dest }),
		expect: expectItems((items, c) => expect(items).toEqual([expect.objectContaining({ vm: c.labHostile[0], kind: 'full', path: expect.stringMatching(new RegExp(`^${escapeRe(c.dest)}/lvb-evil%20%27%22%3B%20%24%28touch%20pwned%29%20%7C%26%5C%60%24HOME%2A/\\d{8}T\\d{6}Z$`)) })])),
	},
	{
		id: 'backup-vm-lab-dash',
		category: 'vm name',
		node: 'backup',
		label: 'lab VM named "--help" (leading -)',
		params: (c) => ({ vm: rl('--help'), destination: c.dest }),
		expect: expectItems((items, c) => expect(items).toEqual([expect.objectContaining({ vm: '--help', path: expect.stringMatching(new RegExp(`^${escapeRe(c.dest)}/--help/\\d{8}T\\d{6}Z$`)) })])),
	},
	{
		id: 'backup-vm-lab-unicode',
		category: 'vm name',
		node: 'backup',
		label: 'lab VM with a unicode name',
		params: (c) => ({ vm: rl('lvb-ünï-€'), destination: c.dest }),
		expect: expectItems((items, c) => expect(items).toEqual([expect.objectContaining({ vm: 'lvb-ünï-€', path: expect.stringMatching(new RegExp(`^${escapeRe(c.dest)}/lvb-%C3%BCn%C3%AF-%E2%82%AC/`)) })])),
	},
	{
		id: 'backup-vm-lab-space',
		category: 'vm name',
		node: 'backup',
		label: 'lab VM whose name starts with a space, given exactly',
		params: (c) => ({ vm: rl(' lvb-lead-space'), destination: c.dest }),
		expect: expectItems((items, c) => expect(items).toEqual([expect.objectContaining({ vm: ' lvb-lead-space', path: expect.stringMatching(new RegExp(`^${escapeRe(c.dest)}/%20lvb-lead-space/`)) })])),
	},
	{
		id: 'discover-names-inject',
		category: 'vm name',
		node: 'discover',
		label: 'names filter with $(...), ; and a newline',
		params: (c) => ({ names: `$(touch ${c.canary}); touch ${c.canary}\nlvb-nope\`touch ${c.canary}\`` }),
		expect: noItems,
	},
	{
		id: 'discover-names-space',
		category: 'vm name',
		node: 'discover',
		label: 'names filter: one name with a leading space is taken exactly',
		params: () => ({ names: ' lvb-lead-space' }),
		expect: expectItems((items) => expect(items.map((item) => item.name)).toEqual([' lvb-lead-space'])),
	},
	{ id: 'list-vmnames-dotdot', category: 'vm name', node: 'list', label: 'VM Names ".." and "../outside/store/web01"', params: (c) => ({ destination: c.dest, vmNames: rl('..,../outside/store/web01') }), expect: noItems },
	{ id: 'list-vmnames-inject', category: 'vm name', node: 'list', label: 'VM Names with $(...) and backticks', params: (c) => ({ destination: c.dest, vmNames: rl(`$(touch ${c.canary})\n\`touch ${c.canary}\``) }), expect: noItems },
	{
		id: 'prune-vmnames-dotdot',
		category: 'vm name',
		node: 'prune',
		label: 'VM Names ".." and "../outside/store/web01", Keep Last 1, for real',
		params: (c) => ({ destination: c.dest, vmNames: rl('..\n../outside/store/web01\n/'), dryRun: false, keepLast: 1 }),
		expect: noItems,
	},
	{
		id: 'prune-vmnames-long',
		category: 'vm name',
		node: 'prune',
		label: 'VM Names: a 4096-byte name next to web01, for real',
		params: (c) => ({ destination: c.dest, vmNames: rl(`web01,${'w'.repeat(4096)}`), dryRun: false, keepLast: 1 }),
		expect: expectItems((items, c) => expect(items.map((item) => [item.path, item.action])).toEqual([[c.newest, 'keep'], [c.old, 'prune']])),
	},
	{ id: 'backup-disks-inject', category: 'vm name', node: 'backup', label: 'Disks "vda; touch" and "$(...)"', params: (c) => ({ vm: rl(c.vm), destination: c.dest, disks: [`vda; touch ${c.canary}`, `$(touch ${c.canary})`] }), expect: { error: /is not a disk target name/ } },
	{ id: 'backup-disks-dash', category: 'vm name', node: 'backup', label: 'Disks "--help"', params: (c) => ({ vm: rl(c.vm), destination: c.dest, disks: ['--help'] }), expect: { error: /has no disk "--help"/ } },
	{
		id: 'restore-disks-inject',
		category: 'vm name',
		node: 'restore',
		label: 'Restore Disks "vda$(...)"',
		params: (c) => ({ backupPath: c.newest, target: 'folder', folder: c.restores, disks: `vda$(touch ${c.canary})` }),
		expect: { error: /has no disk vda\$\(touch/ },
	},

	// ---- Paths: destinations, backup paths, export folder and file names, restore folders ----
	{ id: 'backup-dest-relative', category: 'path', node: 'backup', label: 'Destination relative', params: (c) => ({ vm: rl(c.vm), destination: 'backups/vm' }), expect: { error: BAD_DEST } },
	{ id: 'backup-dest-dotdot', category: 'path', node: 'backup', label: 'Destination <dest>/../outside', params: (c) => ({ vm: rl(c.vm), destination: `${c.dest}/../outside` }), expect: { error: /must not contain "\.\."/ } },
	{ id: 'backup-dest-root', category: 'path', node: 'backup', label: 'Destination "/"', params: (c) => ({ vm: rl(c.vm), destination: '/' }), expect: { error: /cannot be the root directory/ } },
	{ id: 'backup-dest-newline', category: 'path', node: 'backup', label: 'Destination with a newline', params: (c) => ({ vm: rl(c.vm), destination: `${c.dest}\ntouch ${c.canary}` }), expect: { error: /NUL or line breaks/ } },
	{ id: 'backup-dest-cr', category: 'path', node: 'backup', label: 'Destination with CR', params: (c) => ({ vm: rl(c.vm), destination: `${c.dest}\r` }), expect: { error: /NUL or line breaks/ } },
	{ id: 'backup-dest-nul', category: 'path', node: 'backup', label: 'Destination with NUL', params: (c) => ({ vm: rl(c.vm), destination: `${c.dest}\0/x` }), expect: { error: /NUL or line breaks/ } },
	{ id: 'backup-dest-lead-space', category: 'path', node: 'backup', label: 'Destination with a leading space', params: (c) => ({ vm: rl(c.vm), destination: ` ${c.dest}` }), expect: { error: BAD_DEST } },
	{ id: 'backup-dest-dash', category: 'path', node: 'backup', label: 'Destination "-rf" (leading -)', params: (c) => ({ vm: rl(c.vm), destination: '-rf' }), expect: { error: BAD_DEST } },
	{
		id: 'backup-dest-subshell',
		category: 'path',
		node: 'backup',
		label: 'Destination folder named "$(touch ...); x" is a literal folder',
		params: (c) => ({ vm: rl(c.vm), destination: `${c.dest}/$(touch ${c.canary}); x` }),
		expect: expectItems((items, c) => expect(items).toEqual([expect.objectContaining({ path: expect.stringMatching(new RegExp(`^${escapeRe(`${c.dest}/$(touch ${c.canary}); x/${c.vm}/`)}`)) })])),
	},
	{
		id: 'backup-dest-trail-space',
		category: 'path',
		node: 'backup',
		label: 'Destination with a trailing space is that literal folder',
		params: (c) => ({ vm: rl(c.vm), destination: `${c.dest} ` }),
		writable: (c) => [`${c.dest} `],
		expect: expectItems((items, c) => expect(items).toEqual([expect.objectContaining({ path: expect.stringMatching(new RegExp(`^${escapeRe(`${c.dest} /${c.vm}/`)}`)) })])),
	},
	{ id: 'backup-dest-long', category: 'path', node: 'backup', label: 'Destination of 4200 characters', params: (c) => ({ vm: rl(c.vm), destination: `${c.dest}/${'d'.repeat(200)}`.padEnd(4200, '/e') }), expect: { error: /./ } },
	{ id: 'list-dest-dotdot', category: 'path', node: 'list', label: 'Destination <dest>/..', params: (c) => ({ destination: `${c.dest}/..` }), expect: { error: /must not contain "\.\."/ } },
	{ id: 'list-dest-file', category: 'path', node: 'list', label: 'Destination is a file outside (the sentinel)', params: (c) => ({ destination: c.sentinel }), expect: { error: /does not exist on the host or is not a readable directory/ } },
	{ id: 'list-dest-subshell', category: 'path', node: 'list', label: 'Destination "$(touch ...)" (missing)', params: (c) => ({ destination: `${c.root}/$(touch ${c.canary})` }), expect: { error: /does not exist on the host or is not a readable directory/ } },
	{ id: 'prune-dest-relative', category: 'path', node: 'prune', label: 'Destination "..", for real', params: () => ({ destination: '..', dryRun: false, keepLast: 1 }), expect: { error: BAD_DEST } },
	{ id: 'verify-path-etc', category: 'path', node: 'verify', label: 'Backup path /etc/passwd', params: () => ({ backupPath: '/etc/passwd' }), expect: { error: NOT_BACKUP_PATH } },
	{ id: 'verify-path-dotdot', category: 'path', node: 'verify', label: 'Backup path through .. to a store outside', params: (c) => ({ backupPath: `${c.dest}/web01/../../outside/store/web01/${id(c.outsideBackup)}` }), expect: { error: /must not contain "\.\."/ } },
	{ id: 'verify-path-subshell', category: 'path', node: 'verify', label: 'Backup path with a $(...) VM folder', params: (c) => ({ backupPath: `${c.dest}/$(touch ${c.canary})/${id(c.newest)}` }), expect: { error: NOT_BACKUP_PATH } },
	{ id: 'verify-path-dash', category: 'path', node: 'verify', label: 'Backup path "-rf"', params: () => ({ backupPath: '-rf' }), expect: { error: NOT_BACKUP_PATH } },
	{ id: 'export-path-dotdot', category: 'path', node: 'export', label: 'Backup path through .. (binary)', params: (c) => ({ backupPath: `${c.dest}/../outside/store/web01/${id(c.outsideBackup)}`, target: 'binary' }), expect: { error: /must not contain "\.\."/ } },
	{ id: 'export-name-dotdot', category: 'path', node: 'export', label: 'File Name "../../outside/x"', params: (c) => ({ backupPath: c.newest, target: 'hostFile', folder: c.exports, fileName: '../../outside/x' }), expect: { error: /File Name must be a plain file name/ } },
	{ id: 'export-name-newline', category: 'path', node: 'export', label: 'File Name with a newline', params: (c) => ({ backupPath: c.newest, target: 'hostFile', folder: c.exports, fileName: `a\ntouch ${c.canary}` }), expect: { error: /File Name must be a plain file name/ } },
	{
		id: 'export-name-subshell',
		category: 'path',
		node: 'export',
		label: 'File Name "-$(touch ...)`x`" is a literal file',
		params: (c) => ({ backupPath: c.newest, target: 'hostFile', folder: c.exports, fileName: `-$(touch ${c.canaryName})\`touch ${c.canaryName}\`;x` }),
		writable: (c) => [c.exports, c.dest],
		expect: expectItems((items, c) => expect(items).toEqual([expect.objectContaining({ path: `${c.exports}/-$(touch ${c.canaryName})\`touch ${c.canaryName}\`;x.tar.gz` })])),
	},
	{ id: 'export-folder-relative', category: 'path', node: 'export', label: 'Folder on Host relative', params: (c) => ({ backupPath: c.newest, target: 'hostFile', folder: 'exports' }), expect: { error: /must be an absolute path/ } },
	{
		id: 'export-folder-link',
		category: 'path',
		node: 'export',
		label: 'Folder on Host is a symlink to a folder outside',
		plant: (c) => `ln -s -- ${q(`${c.root}/outside`)} ${q(`${c.exports}/out`)}`,
		params: (c) => ({ backupPath: c.newest, target: 'hostFile', folder: `${c.exports}/out`, fileName: 'x' }),
		expect: { error: /its folder does not exist or is a symbolic link/ },
	},
	{
		id: 'export-final-link',
		category: 'planted file',
		node: 'export',
		label: 'archive name planted as a symlink to the sentinel, Overwrite on',
		plant: (c) => `ln -s -- ${q(c.sentinel)} ${q(`${c.exports}/x.tar.gz`)}`,
		params: (c) => ({ backupPath: c.newest, target: 'hostFile', folder: c.exports, fileName: 'x', overwrite: true }),
		expect: { error: /it is a symbolic link; nothing was followed or changed/ },
	},
	{
		id: 'export-final-fifo',
		category: 'planted file',
		node: 'export',
		label: 'archive name planted as a FIFO, Overwrite on',
		plant: (c) => `mkfifo -- ${q(`${c.exports}/x.tar.gz`)}`,
		params: (c) => ({ backupPath: c.newest, target: 'hostFile', folder: c.exports, fileName: 'x', overwrite: true }),
		expect: { error: /something that is not a regular file is there/ },
	},
	{ id: 'restore-folder-dotdot', category: 'path', node: 'restore', label: 'Restore folder <restores>/../outside', params: (c) => ({ backupPath: c.newest, target: 'folder', folder: `${c.restores}/../outside` }), expect: { error: /Restore folder .* must not contain "\.\."/ } },
	{ id: 'restore-folder-relative', category: 'path', node: 'restore', label: 'Restore folder relative', params: (c) => ({ backupPath: c.newest, target: 'folder', folder: 'restores' }), expect: { error: /Restore folder must be an absolute path/ } },
	{
		id: 'restore-file-link',
		category: 'planted file',
		node: 'restore',
		label: 'restored file name planted as a symlink to the sentinel',
		plant: (c) => `ln -s -- ${q(c.sentinel)} ${q(`${c.restores}/vda.qcow2`)}; ln -s -- ${q(c.sentinel)} ${q(`${c.restores}/vda.qcow2.lvb-restore.partial`)}`,
		params: (c) => ({ backupPath: c.newest, target: 'folder', folder: c.restores }),
		expect: { error: /./ },
	},
	{
		id: 'restore-newvm-subshell',
		category: 'vm name',
		node: 'restore',
		label: 'New VM name with $(...), quotes and a leading -',
		plant: (c) => realBackupPlant(c),
		params: (c) => ({ backupPath: c.realBackup, target: 'folder', folder: c.restores, defineNewVm: true, newVmName: `-${c.marker}'"$(touch ${c.canaryName})` }),
		writable: (c) => [c.restores, c.dest],
		expect: expectItems((items, c) => expect(items).toEqual([expect.objectContaining({ domain: expect.objectContaining({ name: `-${c.marker}'"$(touch ${c.canaryName})` }) })])),
	},
	{ id: 'restore-newvm-newline', category: 'vm name', node: 'restore', label: 'New VM name with a newline', params: (c) => ({ backupPath: c.newest, target: 'folder', folder: c.restores, defineNewVm: true, newVmName: `${c.marker}\ntouch ${c.canaryName}` }), expect: { error: /contains a control character/ } },
	{ id: 'restore-newvm-long', category: 'vm name', node: 'restore', label: 'New VM name of 4096 characters', params: (c) => ({ backupPath: c.newest, target: 'folder', folder: c.restores, defineNewVm: true, newVmName: c.marker.padEnd(4096, 'n') }), expect: { error: /longer than 200 bytes/ } },
	{
		id: 'restore-newvm-exists',
		category: 'vm name',
		node: 'restore',
		label: 'New VM name "--help" (a VM of that name exists)',
		plant: (c) => realBackupPlant(c),
		params: (c) => ({ backupPath: c.realBackup, target: 'folder', folder: c.restores, defineNewVm: true, newVmName: '--help' }),
		writable: (c) => [c.restores, c.dest],
		expect: { error: /A VM named "--help" already exists/ },
	},
	{ id: 'instant-folder-dotdot', category: 'path', node: 'restore', label: 'Instant recovery overlay folder with ..', params: (c) => ({ operation: 'instantRecover', instantBackupPath: c.newest, instantVmName: `${c.marker}-i`, instantOverlayFolder: `${c.restores}/../outside`, instantStart: false }), expect: { error: /\.\./ } },
	{ id: 'instant-name-newline', category: 'vm name', node: 'restore', label: 'Instant recovery VM name with a newline', plant: (c) => realBackupPlant(c), writable: (c) => [c.restores, c.dest], params: (c) => ({ operation: 'instantRecover', instantBackupPath: c.realBackup, instantVmName: `${c.marker}\n$(touch ${c.canaryName})`, instantOverlayFolder: c.restores, instantStart: false }), expect: { error: /control character|line break/ } },

	// ---- Planted symlinks, FIFOs and device nodes in the destination and backup folders ----
	...(
		[
			['link', 'a symlink to the sentinel', imageLink],
			['fifo', 'a FIFO', swapImage('mkfifo -- "$f"')],
			['dev', 'a device node (/dev/zero)', swapImage('mknod -m 0644 -- "$f" c 1 5')],
		] as const
	).flatMap(([kind, what, plant]): HostileCase[] => [
		{ id: `list-image-${kind}`, category: 'planted file', node: 'list', label: `image swapped for ${what}`, plant, params: (c) => ({ destination: c.dest, vmNames: rl('web01') }), expect: expectItems((items, c) => expect(items.map((item) => item.path)).toEqual([c.newest, c.old])) },
		{ id: `verify-image-${kind}`, category: 'planted file', node: 'verify', label: `image swapped for ${what}`, plant, params: (c) => ({ backupPath: c.newest }), expect: invalid },
		{ id: `export-image-${kind}`, category: 'planted file', node: 'export', label: `image swapped for ${what}`, plant, params: (c) => ({ backupPath: c.newest, target: 'binary' }), expect: { error: /cannot be exported/ } },
		{ id: `restore-image-${kind}`, category: 'planted file', node: 'restore', label: `image swapped for ${what}`, plant, params: (c) => ({ backupPath: c.newest, target: 'folder', folder: c.restores }), expect: { error: /missing or not regular files|not a backup/ } },
	]),
	{
		id: 'verify-delete-link',
		category: 'planted file',
		node: 'verify',
		label: 'On Invalid: Delete, image a symlink to the sentinel',
		plant: imageLink,
		params: (c) => ({ backupPath: c.newest, onInvalid: 'delete' }),
		expect: invalid,
	},
	{
		id: 'prune-image-link',
		category: 'planted file',
		node: 'prune',
		label: 'an old backup whose image is a symlink to the sentinel, pruned for real',
		plant: (c) => `f=${q(`${c.old}/vda.qcow2`)}; rm -f -- "$f" && ln -s -- "$S" "$f"`,
		params: (c) => ({ destination: c.dest, vmNames: rl('web01'), dryRun: false, keepLast: 1 }),
		expect: expectItems((items, c) => expect(items.map((item) => [item.path, item.action])).toEqual([[c.newest, 'keep'], [c.old, 'prune']])),
	},
	{
		id: 'prune-vmdir-link',
		category: 'planted file',
		node: 'prune',
		label: 'a VM folder that is a symlink to the store outside, pruned for real',
		plant: (c) => `ln -s -- ${q(`${c.outsideStore}/web01`)} ${q(`${c.dest}/web02`)}`,
		params: (c) => ({ destination: c.dest, dryRun: false, keepLast: 1 }),
		expect: expectItems((items) => expect(items.every((item) => item.vm !== 'web02')).toBe(true)),
	},
	{
		id: 'prune-backup-link',
		category: 'planted file',
		node: 'prune',
		label: 'a backup folder that is a symlink to a backup outside, pruned for real',
		plant: (c) => `ln -s -- ${q(c.outsideBackup)} ${q(`${c.dest}/web01/20200101T000000Z`)}`,
		params: (c) => ({ destination: c.dest, vmNames: rl('web01'), dryRun: false, keepLast: 1 }),
		expect: expectItems((items, c) => expect(items.map((item) => item.path)).toEqual(expect.arrayContaining([c.newest, c.old]))),
	},
	{
		id: 'list-vmdir-link',
		category: 'planted file',
		node: 'list',
		label: 'a VM folder that is a symlink to the store outside',
		plant: (c) => `ln -s -- ${q(`${c.outsideStore}/web01`)} ${q(`${c.dest}/web02`)}`,
		params: (c) => ({ destination: c.dest }),
		expect: expectItems((items) => expect(items.map((item) => item.vm).sort()).toEqual(['db01', 'web01', 'web01'])),
	},
	{
		id: 'export-domainxml-link',
		category: 'planted file',
		node: 'export',
		label: 'domain.xml swapped for a symlink to the sentinel',
		plant: (c) => `f=${q(`${c.newest}/domain.xml`)}; rm -f -- "$f" && ln -s -- ${q(c.sentinel)} "$f"`,
		params: (c) => ({ backupPath: c.newest, target: 'binary' }),
		expect: { error: /cannot be exported/ },
	},
	{
		id: 'list-verification-link',
		category: 'planted file',
		node: 'list',
		label: 'verification.json a symlink to the sentinel',
		plant: (c) => `ln -s -- ${q(c.sentinel)} ${q(`${c.newest}/verification.json`)}`,
		params: (c) => ({ destination: c.dest, vmNames: rl('web01') }),
		expect: expectItems((items) => expect(items).toHaveLength(2)),
	},

	// ---- Numbers ----
	...(
		[
			['backup-timeout-neg', 'backup', 'Timeout (Minutes) -5', { timeoutMinutes: -5 }, /timeout must be a positive number of minutes; got -5/],
			['backup-timeout-zero', 'backup', 'Timeout (Minutes) 0', { timeoutMinutes: 0 }, /timeout must be a positive number/],
			['backup-timeout-nan', 'backup', 'Timeout (Minutes) NaN', { timeoutMinutes: '={{ Number("x") }}' }, /timeout must be a positive number of minutes; got NaN/],
			['backup-timeout-huge', 'backup', 'Timeout (Minutes) 1e308', { timeoutMinutes: 1e308 }, /timeout \(minutes\) must be at most 10080/],
			['backup-timeout-text', 'backup', 'Timeout (Minutes) "soon"', { timeoutMinutes: "={{ 'soon' }}" }, /timeout must be a positive number/],
			['backup-fullafter-neg', 'backup', 'New Full After (Incrementals) -1', { newFullAfterIncrementals: -1 }, /incrementals must be a whole number from 0/],
			['backup-fullafter-frac', 'backup', 'New Full After (Days) 2.5', { newFullAfterDays: 2.5 }, /days must be a whole number from 0/],
			['backup-fullafter-huge', 'backup', 'New Full After (Days) 1e308', { newFullAfterDays: 1e308 }, /days must be a whole number from 0/],
			['export-level-zero', 'export', 'Compression Level 0', { compressionLevel: 0 }, /level must be a whole number from 1 to 9, got 0/],
			['export-level-huge', 'export', 'Compression Level 99 (zstd)', { compression: 'zstd', compressionLevel: 99 }, /level must be a whole number from 1 to 19, got 99/],
			['export-level-nan', 'export', 'Compression Level NaN', { compressionLevel: '={{ Number("x") }}' }, /level must be a whole number from 1 to 9, got NaN/],
			['prune-keeplast-neg', 'prune', 'Keep Last -1', { keepLast: -1 }, /Keep Last must be a whole number from 0/],
			['prune-keepweekly-frac', 'prune', 'Keep Weekly 2.5', { keepWeekly: 2.5 }, /Keep Weekly must be a whole number/],
			['prune-keepyearly-inf', 'prune', 'Keep Yearly Infinity', { keepYearly: '={{ Infinity }}' }, /Keep Yearly must be a whole number/],
			['prune-keepwithin-neg', 'prune', 'Keep Within "-5d"', { keepWithin: '-5d' }, /keepWithin/],
			['prune-keepwithin-text', 'prune', 'Keep Within "$(touch)"', { keepWithin: '$(touch /tmp/x)' }, /keepWithin/],
			['prune-timezone', 'prune', 'Time Zone "Mars/Olympus"', { options: { timeZone: 'Mars/Olympus' } }, /Mars\/Olympus/],
			['list-newer-text', 'list', 'Newer Than (Days) "soon"', { options: { newerThanDays: "={{ 'soon' }}" } }, /Newer Than \(Days\) must be a number from 0 to 365242, got "soon"/],
			['restore-timeout-neg', 'restore', 'Timeout (Minutes) -1', { timeoutMinutes: -1 }, /Timeout \(Minutes\) must be a number from 1 to 10080, got -1/],
		] as const
	).map(
		([caseId, node, label, params, error]): HostileCase => ({
			id: caseId,
			category: 'number',
			node,
			label,
			params: (c) => ({ ...baseParams(node, c), ...params }),
			expect: { error },
		}),
	),

	// ---- Regular expressions (Discover's name regex; RE2, linear time) ----
	{
		id: 'regex-catastrophic',
		category: 'regex',
		node: 'discover',
		label: '(a+)+$ on a 5000-character name',
		plant: (c) => testDriverXml(c, `${'a'.repeat(5000)}!`),
		credential: (c) => ({ libvirtUri: `test://${c.root}/node.xml` }),
		writable: (c) => [c.dest, `${c.root}/node.xml`],
		params: () => ({ nameRegex: '(a+)+$' }),
		expect: noItems,
	},
	{
		id: 'regex-catastrophic2',
		category: 'regex',
		node: 'discover',
		label: '(x+x+)+y and ^(a|a?)+$ on long names',
		plant: (c) => testDriverXml(c, `${'x'.repeat(3000)}`, `${'a'.repeat(3000)}b`),
		credential: (c) => ({ libvirtUri: `test://${c.root}/node.xml` }),
		writable: (c) => [c.dest, `${c.root}/node.xml`],
		params: () => ({ nameRegex: '(x+x+)+y|^(a|a?)+$' }),
		expect: noItems,
	},
	{ id: 'regex-invalid', category: 'regex', node: 'discover', label: 'unbalanced "(lvb"', params: () => ({ nameRegex: '(lvb' }), expect: { error: /^Invalid name regex "\(lvb"/ } },
	{ id: 'regex-backref', category: 'regex', node: 'discover', label: 'backreference "(a)\\1"', params: () => ({ nameRegex: '(a)\\1' }), expect: { error: /^Invalid name regex/ } },
	{ id: 'regex-lookbehind', category: 'regex', node: 'discover', label: 'lookbehind "(?<=x)lvb"', params: () => ({ nameRegex: '(?<=x)lvb' }), expect: { error: /^Invalid name regex/ } },
	{ id: 'regex-repeat', category: 'regex', node: 'discover', label: 'repeat count "(a{1000}){1000}"', params: () => ({ nameRegex: '(a{1000}){1000}' }), expect: { error: /^Invalid name regex/ } },
	{ id: 'regex-subshell', category: 'regex', node: 'discover', label: 'a regex "$(touch ...)" matches nothing, runs nothing', params: (c) => ({ nameRegex: `$(touch ${c.canary})` }), expect: noItems },

	// ---- Manifests: not JSON, paths escaping their folder, a future version ----
	...(
		[
			['notjson', 'not JSON', (c: Ctx) => `printf '{"format": "n8n' > ${q(`${c.newest}/manifest.json`)}`],
			['file-dotdot', 'a disk file "../../../outside/sentinel"', (c: Ctx) => writeManifest(c.newest, `m.disks[0].file='../../../outside/sentinel'`)],
			['file-abs', 'a disk file that is an absolute path outside', (c: Ctx) => writeManifest(c.newest, `m.disks[0].file=${JSON.stringify(c.sentinel)}`)],
			['backing-dotdot', 'a backing file "../../outside/store/..."', (c: Ctx) => writeManifest(c.newest, `m.kind='incremental';m.parent=${JSON.stringify(id(c.old))};m.disks[0].backingFile='../../../outside/store/web01/x.qcow2'`)],
			['future', 'format version 2', (c: Ctx) => writeManifest(c.newest, 'm.version=2')],
		] as const
	).flatMap(([kind, what, plant]): HostileCase[] => [
		{ id: `list-manifest-${kind}`, category: 'manifest', node: 'list', label: `manifest with ${what}`, plant, params: (c) => ({ destination: c.dest, vmNames: rl('web01') }), expect: expectItems((items, c) => expect(newestItem(items, c)).toBeUndefined()) },
		{ id: `verify-manifest-${kind}`, category: 'manifest', node: 'verify', label: `manifest with ${what}`, plant, params: (c) => ({ backupPath: c.newest }), expect: { error: /./ } },
		{ id: `export-manifest-${kind}`, category: 'manifest', node: 'export', label: `manifest with ${what}`, plant, params: (c) => ({ backupPath: c.newest, target: 'binary' }), expect: { error: /./ } },
		{ id: `restore-manifest-${kind}`, category: 'manifest', node: 'restore', label: `manifest with ${what}`, plant, params: (c) => ({ backupPath: c.newest, target: 'folder', folder: c.restores }), expect: { error: /./ } },
		{
			id: `prune-manifest-${kind}`,
			category: 'manifest',
			node: 'prune',
			label: `manifest with ${what} (newest), Keep Last 1, for real`,
			plant,
			params: (c) => ({ destination: c.dest, vmNames: rl('web01'), dryRun: false, keepLast: 1 }),
			// Both stay: the folder with the bad manifest is not ours to remove, and the valid one is the newest good backup.
			expect: expectItems((items, c) => expect(items.map((item) => [item.path, item.action])).toEqual([[c.old, 'keep'], [c.newest, 'keep']])),
		},
	]),
	{
		id: 'restore-manifest-uuid',
		category: 'manifest',
		node: 'restore',
		label: 'manifest VM uuid "$(touch ...)", restore over the original',
		plant: (c) => writeManifest(c.newest, `m.vm.uuid=${JSON.stringify(`$(touch ${c.canary})\`touch ${c.canary}\``)}`),
		params: (c) => ({ backupPath: c.newest, target: 'original' }),
		expect: { error: /is not defined on this host/ },
	},
	{
		id: 'list-manifest-huge',
		category: 'manifest',
		node: 'list',
		label: 'a 64 MiB manifest.json',
		plant: (c) => `head -c 67108864 /dev/zero | tr '\\0' ' ' > ${q(`${c.newest}/manifest.json`)}`,
		params: (c) => ({ destination: c.dest, vmNames: rl('web01') }),
		expect: expectItems((items, c) => expect(newestItem(items, c)).toBeUndefined()),
	},
];

function baseParams(node: NodeKey, c: Ctx): Record<string, unknown> {
	switch (node) {
		case 'backup':
			return { vm: rl(c.vm), destination: c.dest };
		case 'export':
			return { backupPath: c.newest, target: 'binary' };
		case 'prune':
			return { destination: c.dest, dryRun: false, keepLast: 1 };
		case 'list':
			return { destination: c.dest };
		case 'restore':
			return { backupPath: c.newest, target: 'folder', folder: c.restores };
		default:
			return {};
	}
}

/** Copies the suite's real backup of its test VM into the destination (a backup whose domain.xml defines a VM). */
function realBackupPlant(c: Ctx): string {
	const vmDir = c.realBackup.slice(0, c.realBackup.lastIndexOf('/'));
	return `mkdir -p -- ${q(vmDir)} && cp -a -- ${q(c.realSource)} ${q(vmDir)}/`;
}

/** A libvirt test-driver node (no daemon) with domains of these names, at <root>/node.xml. */
function testDriverXml(c: Ctx, ...names: string[]): string {
	const domains = names.map((name, index) => `<domain type='test'><name>${name}</name><uuid>6f1c7d0e-0000-4000-8000-00000000000${index}</uuid><memory>1024</memory><os><type>hvm</type></os></domain>`).join('');
	return `printf '%s' ${q(`<node>${domains}</node>`)} > ${q(`${c.root}/node.xml`)}`;
}

export function escapeRe(text: string): string {
	return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
