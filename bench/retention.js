#!/usr/bin/env node
// Times the retention planner on 100 000 synthetic backups against a sort-only baseline.
// Build first: npx tsc -p tsconfig.build.json && node bench/retention.js
'use strict';

const path = require('node:path');
const { planRetention } = require(path.join(__dirname, '..', 'dist', 'lib', 'retention'));

const RUNS = 5;
const BUDGET_MS = 1000;
const HOUR_MS = 3_600_000;
const DAY_MS = 24 * HOUR_MS;
const NOW = new Date('2026-12-01T12:00:00Z');
const POLICY = { keepLast: 3, keepDaily: 7, keepWeekly: 4, keepMonthly: 12, keepYearly: 2, keepWithin: '2d' };

/** Deterministic jitter, so every run and every machine plans the same backups. */
function mulberry32(seed) {
	return () => {
		seed = (seed + 0x6d2b79f5) | 0;
		let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
		t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
		return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
	};
}

/**
 * `vms` VMs with `perVm` backups each, `stepMs` apart going back from NOW plus up to `jitterMs` of
 * random delay. Per VM, in time order, every 7th backup is a full and the others are incrementals
 * on the one before, as a weekly-full schedule produces.
 */
function history(vms, perVm, stepMs, jitterMs) {
	const random = mulberry32(42);
	const backups = [];
	for (let vm = 0; vm < vms; vm++) {
		const times = [];
		for (let n = 1; n <= perVm; n++) times.push(NOW.getTime() - n * stepMs - Math.floor(random() * jitterMs));
		times.sort((a, b) => a - b);
		times.forEach((time, n) => {
			const full = n % 7 === 0;
			backups.push({
				id: `vm${vm}-${n}`,
				vm: `vm${vm}`,
				time: new Date(time),
				kind: full ? 'full' : 'incremental',
				parent: full ? undefined : `vm${vm}-${n - 1}`,
			});
		});
	}
	return backups;
}

/** What any planner must at least do: group per VM and sort newest first. */
function sortOnly(backups) {
	return [...backups].sort(
		(a, b) => (a.vm < b.vm ? -1 : a.vm > b.vm ? 1 : b.time.getTime() - a.time.getTime() || (a.id < b.id ? 1 : -1)),
	);
}

/** Median wall and CPU milliseconds of RUNS calls; CPU time shows the cost on a busy machine. */
function measure(fn) {
	fn(); // warm-up, not measured: the first call also compiles the code
	const wall = [];
	const cpu = [];
	for (let run = 0; run < RUNS; run++) {
		const cpuStart = process.cpuUsage();
		const start = process.hrtime.bigint();
		fn();
		wall.push(Number(process.hrtime.bigint() - start) / 1e6);
		const used = process.cpuUsage(cpuStart);
		cpu.push((used.user + used.system) / 1000);
	}
	const median = (values) => values.sort((a, b) => a - b)[Math.floor(RUNS / 2)];
	return { wallMs: median(wall), cpuMs: median(cpu) };
}

// Built one at a time, so earlier scenarios' backups do not weigh on later ones' garbage collection.
const scenarios = [
	['1000 VMs x 100 daily', 'UTC', () => history(1000, 100, DAY_MS, HOUR_MS)],
	['1000 VMs x 100 daily', 'Europe/Berlin', () => history(1000, 100, DAY_MS, HOUR_MS)],
	['10 VMs x 10000 hourly', 'Europe/Berlin', () => history(10, 10_000, HOUR_MS, 10 * 60_000)],
	['100 VMs x 1000 random in 2 years', 'America/New_York', () => history(100, 1000, 0, 730 * DAY_MS)],
];

const rows = [];
let overBudget = false;
for (const [name, timeZone, build] of scenarios) {
	const backups = build();
	let kept = 0;
	const plan = measure(() => {
		kept = planRetention(backups, POLICY, NOW, timeZone).decisions.filter((d) => d.action === 'keep').length;
	});
	const sort = measure(() => sortOnly(backups));
	overBudget ||= plan.wallMs > BUDGET_MS;
	rows.push({
		scenario: name,
		'time zone': timeZone,
		backups: backups.length,
		kept,
		'plan ms': plan.wallMs.toFixed(1),
		'plan cpu ms': plan.cpuMs.toFixed(1),
		'sort-only ms': sort.wallMs.toFixed(1),
		'plan / sort': (plan.wallMs / sort.wallMs).toFixed(1),
	});
}

console.log(`node ${process.version}, median of ${RUNS} runs after one warm-up, policy ${JSON.stringify(POLICY)}`);
console.table(rows);
console.log(overBudget ? `FAIL: a plan took more than ${BUDGET_MS} ms` : `OK: every plan under ${BUDGET_MS} ms`);
process.exitCode = overBudget ? 1 : 0;
