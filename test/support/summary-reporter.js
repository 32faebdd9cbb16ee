// Prints one plain closing line ("jest: N passed, N failed, N skipped") that CI tooling can read,
// and, when the faults suite ran, its Safety table from the ledger (test/faults/ledger.ts).
const fs = require('fs');
const os = require('os');
const path = require('path');

function safetyTable(entries) {
	const faults = entries.filter((e) => e.kind === 'fault');
	const hostile = entries.filter((e) => e.kind === 'hostile');
	const secrets = entries.filter((e) => e.kind === 'secret');
	const sum = (list, key) => list.reduce((total, e) => total + (Number(e[key]) || 0), 0);
	const longest = hostile.reduce((max, e) => (e.ms > max.ms ? e : max), { ms: 0, name: '-' });
	const rows = [
		['faults injected / survived', `${faults.length} / ${faults.filter((e) => e.survived).length}`],
		['hostile inputs tried / handled', `${hostile.length} / ${hostile.filter((e) => e.handled).length}`],
		['data lost (good backups damaged or removed)', String(sum(faults, 'dataLost'))],
		['VMs left on overlays, frozen or with a block job', String(sum(faults, 'vmsLeftUnclean'))],
		['partial backups listed', String(sum(faults, 'partialBackupsListed'))],
		['foreign files removed', String(sum(faults, 'foreignFilesRemoved'))],
		['secrets leaked (places checked)', `${sum(secrets, 'leaked')} (${secrets.length})`],
		['longest hostile-input run', `${(longest.ms / 1000).toFixed(1)} s (${longest.name})`],
	];
	const width = Math.max(...rows.map((row) => row[0].length));
	const lines = ['', 'Safety (test/faults):', `| ${'what'.padEnd(width)} | result |`, `| ${'-'.repeat(width)} | --- |`];
	for (const [what, result] of rows) lines.push(`| ${what.padEnd(width)} | ${result} |`);
	const failed = [...faults.filter((e) => !e.survived), ...hostile.filter((e) => !e.handled), ...secrets.filter((e) => e.leaked > 0)];
	for (const e of failed) lines.push(`  NOT OK: ${e.kind}: ${e.name}`);
	return `${lines.join('\n')}\n`;
}

class SummaryReporter {
	constructor() {
		// One ledger per jest run, named before the test workers start (they inherit the variable), so
		// that two runs at once never read or clear each other's entries.
		this.ledger = process.env.LVB_SAFETY_LEDGER || path.join(os.tmpdir(), `lvb-safety-ledger-${process.pid}.jsonl`);
		process.env.LVB_SAFETY_LEDGER = this.ledger;
	}

	onRunStart() {
		fs.rmSync(this.ledger, { force: true });
	}

	onRunComplete(_contexts, results) {
		const skipped = results.numPendingTests + results.numTodoTests;
		let entries = [];
		try {
			entries = fs
				.readFileSync(this.ledger, 'utf8')
				.split('\n')
				.filter(Boolean)
				.map((line) => JSON.parse(line));
		} catch {
			// no faults suite in this run
		}
		if (entries.length > 0) process.stdout.write(safetyTable(entries));
		fs.rmSync(this.ledger, { force: true });
		process.stdout.write(`jest: ${results.numPassedTests} passed, ${results.numFailedTests} failed, ${skipped} skipped\n`);
	}
}
module.exports = SummaryReporter;
