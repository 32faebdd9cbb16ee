/**
 * Read methods and ciphers over ssh2, run by hand: npx tsx bench/read-methods.ts FILE BYTES (FILE on the lab host, BYTES its size).
 * Per cipher (aes128-gcm@openssh.com, chacha20-poly1305@openssh.com): MB/s of exec `dd bs=1M`, exec `cat`, and SFTP
 * createReadStream (first 256 MiB), on one connection with TCP_NODELAY as SshConnection sets it.
 */
import { Client, type SFTPWrapper } from 'ssh2';
import { labTarget } from '../test/support/targets';
import { commandLine } from '../lib/shell';
const file = process.argv[2];
const bytes = Number(process.argv[3]);
function connect(cipher: string): Promise<Client> {
	const t = labTarget();
	const c = new Client();
	return new Promise((res, rej) => {
		c.on('ready', () => { c.setNoDelay(true); res(c); }).on('error', rej).connect({ host: t.host, port: t.port, username: t.username, privateKey: (t.auth as { privateKey: string }).privateKey, algorithms: { cipher: [cipher as never] } });
	});
}
async function execRead(c: Client, argv: string[]): Promise<number> {
	const t0 = performance.now();
	let n = 0;
	await new Promise<void>((res, rej) => c.exec(commandLine(argv), (e, s) => { if (e) return rej(e); s.on('data', (d: Buffer) => { n += d.length; }); s.stderr.resume(); s.on('close', () => res()); }));
	if (n !== bytes) throw new Error(`got ${n}`);
	return bytes / 1e6 / ((performance.now() - t0) / 1000);
}
async function sftpRead(c: Client, limit: number): Promise<number> {
	const sftp = await new Promise<SFTPWrapper>((res, rej) => c.sftp((e, s) => (e ? rej(e) : res(s))));
	const t0 = performance.now();
	let n = 0;
	await new Promise<void>((res, rej) => sftp.createReadStream(file, { end: limit - 1 }).on('data', (d: Buffer) => { n += d.length; }).on('end', () => res()).on('error', rej));
	return n / 1e6 / ((performance.now() - t0) / 1000);
}
(async () => {
	for (const cipher of ['aes128-gcm@openssh.com', 'chacha20-poly1305@openssh.com']) {
		const c = await connect(cipher);
		const r = (x: number) => x.toFixed(0) + ' MB/s';
		console.log(cipher, '| exec dd bs=1M', r(await execRead(c, ['dd', `if=${file}`, 'bs=1M', 'status=none'])), '| exec cat', r(await execRead(c, ['cat', file])), '| exec dd bs=1M again', r(await execRead(c, ['dd', `if=${file}`, 'bs=1M', 'status=none'])), '| sftp createReadStream (first 256 MiB)', r(await sftpRead(c, 256 << 20)));
		c.end();
	}
})();
