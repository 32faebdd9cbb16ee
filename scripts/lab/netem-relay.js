#!/usr/bin/env node
// Delaying TCP relay: netem.sh's stand-in for `tc ... netem` on kernels built without it
// (CONFIG_NET_SCH_NETEM unset, e.g. this project's Firecracker machines).
//   node netem-relay.js LISTEN_HOST LISTEN_PORT TARGET_HOST TARGET_PORT DELAY_MS PIDFILE
// Every byte is held DELAY_MS in each direction (one round trip of the protocol inside costs
// 2 x DELAY_MS, as with netem on both ends of a link), and the upstream connection is opened
// 2 x DELAY_MS after accept (the TCP handshake's round trip). Unlike netem it does not slow TCP's own
// ACKs, so bulk throughput is not limited by the window / RTT; round-trip-bound work (SSH
// handshakes, command round trips) is delayed as on a real link.
'use strict';

const net = require('net');
const fs = require('fs');

const [listenHost, listenPort, targetHost, targetPort, delayArg, pidFile] = process.argv.slice(2);
const delay = Number(delayArg);
if (!pidFile || !Number.isFinite(delay) || delay < 0) {
	process.stderr.write('usage: netem-relay.js LISTEN_HOST LISTEN_PORT TARGET_HOST TARGET_PORT DELAY_MS PIDFILE\n');
	process.exit(2);
}

/** from -> to, each chunk and the end held `delay` ms; timers of one duration fire in order. */
function delayed(from, to) {
	from.on('data', (chunk) => setTimeout(() => to.destroyed || to.write(chunk), delay));
	from.on('end', () => setTimeout(() => to.destroyed || to.end(), delay));
}

const server = net.createServer((client) => {
	client.setNoDelay(true);
	client.pause();
	client.on('error', () => undefined);
	setTimeout(() => {
		if (client.destroyed) return;
		const upstream = net.connect({ host: targetHost, port: Number(targetPort) });
		upstream.setNoDelay(true);
		upstream.on('error', () => client.destroy());
		client.on('close', () => setTimeout(() => upstream.destroy(), delay));
		upstream.on('close', () => setTimeout(() => client.destroy(), delay));
		delayed(client, upstream);
		delayed(upstream, client);
		client.resume();
	}, 2 * delay);
});
server.on('error', (e) => {
	process.stderr.write(`netem-relay: ${e.message}\n`);
	process.exit(1);
});
server.listen(Number(listenPort), listenHost, () => {
	fs.writeFileSync(pidFile, `${process.pid}\n`);
});
// SIGTERM: stop accepting, exit when the connections through the relay have ended (netem.sh off
// removes the DNAT rule first: new connections go direct, open ones keep their path until closed).
process.on('SIGTERM', () => server.close(() => process.exit(0)));
