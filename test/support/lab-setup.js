// jest globalSetup for the integration and e2e projects: brings the lab up (scripts/lab/up.sh is
// idempotent and takes ~1 s when the lab is already up). LVB_LAB_SKIP_UP=1 skips it (lab managed
// by hand). Runs once per jest process even when both projects are selected.
const path = require('path');
const { spawnSync } = require('child_process');

module.exports = async function labSetup() {
	if (process.env.LVB_LAB_SKIP_UP === '1' || globalThis.__LVB_LAB_UP_DONE__) return;
	const script = path.join(__dirname, '..', '..', 'scripts', 'lab', 'up.sh');
	const r = spawnSync('bash', [script], { stdio: 'inherit' });
	if (r.error) throw new Error(`lab setup: could not run ${script}: ${r.error.message}`);
	if (r.status !== 0) {
		throw new Error(`lab setup: ${script} exited with ${r.status ?? r.signal} (see its output above)`);
	}
	globalThis.__LVB_LAB_UP_DONE__ = true;
};
