'use strict';
// Small helpers the lab's generators share (vms.js: the main lab; fleet.js: the fleet hosts).
const fs = require('fs');
const crypto = require('crypto');

/** A UUID derived from `seed` (version-5 shaped), so re-generated XML is byte-identical and lab.json does not churn. */
function stableUuid(seed) {
	const h = crypto.createHash('sha1').update(seed).digest('hex');
	return `${h.slice(0, 8)}-${h.slice(8, 12)}-5${h.slice(13, 16)}-a${h.slice(17, 20)}-${h.slice(20, 32)}`;
}

/** Writes `content` to `file` (via a temp file and rename) only when it differs; keeps `mode` right either way. True when written. */
function writeIfChanged(file, content, mode = 0o644) {
	let old = null;
	try {
		old = fs.readFileSync(file, 'utf8');
	} catch {}
	if (old === content) {
		if ((fs.statSync(file).mode & 0o777) !== mode) fs.chmodSync(file, mode);
		return false;
	}
	const tmp = `${file}.tmp${process.pid}`;
	fs.writeFileSync(tmp, content, { mode });
	fs.chmodSync(tmp, mode);
	fs.renameSync(tmp, file);
	return true;
}

module.exports = { stableUuid, writeIfChanged };
