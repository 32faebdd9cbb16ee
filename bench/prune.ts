/**
 * Prune planning over 100 000 synthetic backups, through the path Prune Old Backups takes: the
 * catalog (parsed manifests) -> planPrune -> keep/prune plan with reasons, and from the raw
 * listing output (what the one SSH command prints) -> parseCatalogOutput -> planPrune.
 * Baselines in the same run: planRetention alone on ready-made refs, and the old scripts'
 * `find -mtime +N -delete` as a filter over file mtimes (what it costs to be wrong).
 *
 *   npx tsx bench/prune.ts
 *
 * Exits with status 1 if planning from the catalog takes longer than 1 s.
 */
import { serializeManifest, type Manifest } from '../lib/store/manifest';
import { backupId } from '../lib/store/layout';
import { parseCatalogOutput, planPrune, type Catalog, type CatalogBackup } from '../lib/catalog';
import { planRetention, type BackupRef, type RetentionPolicy } from '../lib/retention';

const VMS = 1000;
const PER_VM = 100;
const RUNS = 5;
const BUDGET_MS = 1000;
const DAY_MS = 86_400_000;
const NOW = new Date('2026-12-01T12:00:00Z');
const POLICY: RetentionPolicy = { keepLast: 3, keepDaily: 7, keepWeekly: 4, keepMonthly: 12, keepYearly: 2, keepWithin: '2d' };
const DEST = '/var/backups/libvirt';
const MARKER = '@@LVB-0123456789abcdef';
const SHA = 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855';

/** Deterministic jitter, so every run plans the same backups. */
function mulberry32(seed: number): () => number {
	return () => {
		seed = (seed + 0x6d2b79f5) | 0;
		let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
		t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
		return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
	};
}

/** One nightly backup per VM for PER_VM days, a full every 7th night and incrementals between. */
function manifests(): Manifest[] {
	const random = mulberry32(42);
	const all: Manifest[] = [];
	for (let vm = 0; vm < VMS; vm++) {
		let parent: string | undefined;
		for (let day = PER_VM; day >= 1; day--) {
			const started = new Date(NOW.getTime() - day * DAY_MS - Math.floor(random() * 3_600_000));
			const id = backupId(started);
			const full = day % 7 === 0 || parent === undefined;
			all.push({
				format: 'n8n-nodes-libvirt-backup/manifest',
				version: 1,
				vm: { name: `vm${vm}`, uuid: `00000000-0000-4000-8000-${String(vm).padStart(12, '0')}` },
				host: 'kvm01',
				id,
				startedAt: started.toISOString(),
				finishedAt: new Date(started.getTime() + 300_000).toISOString(),
				kind: full ? 'full' : 'incremental',
				...(full ? {} : { parent }),
				method: 'push',
				consistency: 'crash',
				disks: [
					{
						target: 'vda',
						source: `/var/lib/libvirt/images/vm${vm}.qcow2`,
						sourceFormat: 'qcow2',
						file: 'vda.qcow2',
						format: 'qcow2',
						virtualBytes: 20 * 2 ** 30,
						bytes: 2 ** 30,
						sha256: SHA,
						...(full ? {} : { backingFile: `../${parent}/vda.qcow2` }),
						compressed: false,
					},
				],
				warnings: [],
			});
			parent = id;
		}
	}
	return all;
}

function catalogOf(all: Manifest[]): Catalog {
	const backups = all.map((manifest): CatalogBackup => {
		const vmDir = manifest.vm.name;
		return { dest: DEST, vmDir, vm: vmDir, id: manifest.id, path: `${DEST}/${vmDir}/${manifest.id}`, manifest, protected: false, diskBytes: manifest.disks[0].bytes, missingFiles: [] };
	});
	return { dest: DEST, backups, incomplete: [], quarantined: [] };
}

/** What LIST_SCRIPT prints for these backups: folder list, stat lines, then every manifest. */
function listingOutput(all: Manifest[]): string {
	const parts = [`${MARKER} dirs\n`, ...all.map((m) => `${m.vm.name}/${m.id}\n`), `${MARKER} files\n`];
	for (const m of all) {
		const dir = `${m.vm.name}/${m.id}`;
		parts.push(`81a4 1073741824 2097152 512 ${dir}/vda.qcow2\n81a4 900 8 512 ${dir}/manifest.json\n81a4 2400 8 512 ${dir}/domain.xml\n`);
	}
	for (const m of all) parts.push(`${MARKER} text ${m.vm.name}/${m.id}/manifest.json\n${serializeManifest(m)}`);
	parts.push(`${MARKER} end\n`);
	return parts.join('');
}

/** The old script's rule, `find DEST -type f -mtime +N -delete`, as a filter over file mtimes. */
function mtimeFilter(files: Array<{ path: string; mtimeMs: number }>, days: number): string[] {
	const cutoff = NOW.getTime() - days * DAY_MS;
	return files.filter((file) => file.mtimeMs < cutoff).map((file) => file.path);
}

function measure(fn: () => unknown): { wallMs: number; cpuMs: number } {
	fn(); // warm-up, not measured
	const wall: number[] = [];
	const cpu: number[] = [];
	for (let run = 0; run < RUNS; run++) {
		const cpuStart = process.cpuUsage();
		const start = process.hrtime.bigint();
		fn();
		wall.push(Number(process.hrtime.bigint() - start) / 1e6);
		const used = process.cpuUsage(cpuStart);
		cpu.push((used.user + used.system) / 1000);
	}
	const median = (values: number[]) => values.sort((a, b) => a - b)[Math.floor(RUNS / 2)];
	return { wallMs: median(wall), cpuMs: median(cpu) };
}

function main(): void {
	const all = manifests();
	const catalog = catalogOf(all);
	const output = listingOutput(all);
	// The refs planPrune hands the planner (catalog positions as ids), built once, outside the timing.
	const position = new Map(catalog.backups.map((b, index) => [`${b.vmDir}/${b.id}`, String(index)]));
	const refs: BackupRef[] = catalog.backups.map((b, index) => ({
		id: String(index),
		vm: b.vmDir,
		time: new Date(b.manifest.finishedAt),
		kind: b.manifest.kind,
		parent: b.manifest.parent && position.get(`${b.vmDir}/${b.manifest.parent}`),
	}));
	const files = catalog.backups.flatMap((b) => ['vda.qcow2', 'manifest.json', 'domain.xml'].map((name) => ({ path: `${b.path}/${name}`, mtimeMs: Date.parse(b.manifest.finishedAt) })));

	const rows: string[][] = [];
	let overBudget = false;
	for (const timeZone of ['UTC', 'Europe/Berlin']) {
		const plan = planPrune(catalog, POLICY, { now: NOW, timeZone });
		const kept = plan.filter((entry) => entry.action === 'keep').length;
		const cases: Array<[string, () => unknown]> = [
			['baseline: `find -mtime +30` over 300 000 files', () => mtimeFilter(files, 30)],
			['baseline: planRetention alone (ready-made refs)', () => planRetention(refs, POLICY, NOW, timeZone)],
			['**planPrune: parsed manifests -> plan**', () => planPrune(catalog, POLICY, { now: NOW, timeZone })],
			[`listing output (${(Buffer.byteLength(output) / 1e6).toFixed(0)} MB) -> parseCatalogOutput -> planPrune`, () => planPrune(parseCatalogOutput(output, MARKER, DEST), POLICY, { now: NOW, timeZone })],
		];
		for (const [name, fn] of cases) {
			if (timeZone !== 'UTC' && name.startsWith('baseline: `find')) continue;
			const { wallMs, cpuMs } = measure(fn);
			if (name.includes('planPrune: parsed') && wallMs > BUDGET_MS) overBudget = true;
			rows.push([name, timeZone, String(all.length), name.startsWith('baseline: `find') ? '-' : String(kept), wallMs.toFixed(0), cpuMs.toFixed(0)]);
		}
	}
	const header = ['path', 'time zone', 'backups', 'kept', 'median ms', 'CPU ms'];
	console.log(`Prune planning, ${VMS} VMs x ${PER_VM} nightly backups (full weekly, incrementals between), policy ${JSON.stringify(POLICY)}, Node ${process.version}, median of ${RUNS} runs after a warm-up.\n`);
	console.log(`| ${header.join(' | ')} |\n| ${header.map((_, i) => (i < 2 ? '---' : '---:')).join(' | ')} |`);
	for (const row of rows) console.log(`| ${row.join(' | ')} |`);
	if (overBudget) {
		console.error(`planPrune took longer than ${BUDGET_MS} ms`);
		process.exitCode = 1;
	}
}

main();
