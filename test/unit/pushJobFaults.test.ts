/**
 * The push job's clean-up when its channel dies in the middle of a virsh call. A lab VM has no guest
 * agent (domfsfreeze fails at once) and backup-begin returns within milliseconds, so a real host
 * cannot be stopped exactly inside those calls: here a fake `virsh` on PATH logs its arguments and
 * hangs in the call, the real watchdog runs the real script, and the channel's stdin is closed as
 * the SSH client does on cancel.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { pushJobArgv, type PushJob } from '../../lib/libvirt/jobs';
import { commandLine } from '../../lib/shell';

const FAKE_VIRSH = `#!/bin/sh
printf '%s\\n' "$*" >>"$LVB_FAKE_LOG"
case " $* " in *" $LVB_FAKE_HANG "*) sleep 600;; esac
# The first call of LVB_FAKE_UNREACHABLE fails as while libvirtd restarts.
case " $* " in *" $LVB_FAKE_UNREACHABLE "*)
  [ -e "$LVB_FAKE_LOG.down" ] || { : >"$LVB_FAKE_LOG.down"; echo 'error: failed to connect to the hypervisor' >&2; exit 1; };;
esac
exit 0
`;

let root: string;
beforeEach(() => {
	root = fs.mkdtempSync(path.join(os.tmpdir(), 'lvb-push-faults-'));
	fs.mkdirSync(path.join(root, 'bin'));
	fs.writeFileSync(path.join(root, 'bin', 'virsh'), FAKE_VIRSH, { mode: 0o755 });
});
afterEach(() => fs.rmSync(root, { recursive: true, force: true }));

function log(): string[] {
	const file = path.join(root, 'virsh.log');
	return fs.existsSync(file) ? fs.readFileSync(file, 'utf8').split('\n').filter(Boolean) : [];
}

/** Runs the job until virsh enters `hang`, then closes stdin; resolves with every virsh call made. */
async function cancelDuring(hang: string, quiesce: PushJob['quiesce'], checkpoint?: PushJob['checkpoint'], unreachable = 'none'): Promise<string[]> {
	const job: PushJob = { uri: 'qemu:///system', uuid: 'uuid-1', dir: path.join(root, 'backup'), markerFile: '.lvb-incomplete', backupXml: '<domainbackup/>', checkpoint, quiesce };
	const child = spawn('/bin/sh', ['-c', commandLine(pushJobArgv(job, '@@LVB-test'))], {
		stdio: ['pipe', 'ignore', 'ignore'],
		env: { ...process.env, PATH: `${root}/bin:${process.env.PATH}`, LVB_FAKE_LOG: path.join(root, 'virsh.log'), LVB_FAKE_HANG: hang, LVB_FAKE_UNREACHABLE: unreachable },
	});
	const closed = new Promise<void>((resolve) => child.on('close', () => resolve()));
	while (!log().some((line) => line.includes(` ${hang} `))) await new Promise((resolve) => setTimeout(resolve, 20));
	child.stdin.end();
	await closed;
	return log();
}

test('a cancel while domfsfreeze runs thaws the guest', async () => {
	const calls = await cancelDuring('domfsfreeze', 'auto');
	expect(calls.map((line) => line.split(' ')[3])).toEqual(['domfsfreeze', 'domfsthaw']);
});

test('a cancel while backup-begin runs aborts the job', async () => {
	const calls = await cancelDuring('backup-begin', 'off');
	expect(calls.map((line) => line.split(' ')[3])).toEqual(['backup-begin', 'domjobabort']);
});

test('a cancel of a job that creates a checkpoint aborts the job, then deletes that checkpoint (its client may be gone)', async () => {
	const calls = await cancelDuring('backup-begin', 'off', { name: 'lvb-0a1b2c3d-20261204T192247Z', xml: '<domaincheckpoint/>' });
	expect(calls.map((line) => line.replace(/^(-q )?-c \S+ /, '').split(' ')[0])).toEqual(['backup-begin', 'domjobabort', 'domjobinfo', 'checkpoint-delete']);
	expect(calls.at(-1)).toBe('-q -c qemu:///system checkpoint-delete --domain uuid-1 --checkpointname lvb-0a1b2c3d-20261204T192247Z');
});

test('a libvirtd that cannot be reached for a moment (restarting) does not stop the clean-up: each call is retried', async () => {
	const calls = await cancelDuring('backup-begin', 'off', { name: 'lvb-0a1b2c3d-20261204T192247Z', xml: '<domaincheckpoint/>' }, 'checkpoint-delete');
	expect(calls.map((line) => line.replace(/^(-q )?-c \S+ /, '').split(' ')[0])).toEqual(['backup-begin', 'domjobabort', 'domjobinfo', 'checkpoint-delete', 'checkpoint-delete']);
});
