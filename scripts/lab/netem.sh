#!/usr/bin/env bash
# Delay on the link of fleet hosts (benchmarks): DELAY per direction, so RTT = 2 x DELAY.
#
#   bash scripts/lab/netem.sh <h1|h2|h3|lvb-h1|...|all> <DELAY e.g. 25ms | off>
#
# With netem in the kernel: `tc qdisc replace ... netem delay DELAY` on both ends of the host's veth
# (lvb-hN here, eth0 in the namespace). Kernels built without netem (CONFIG_NET_SCH_NETEM unset, as
# on this project's Firecracker machines: "Specified qdisc kind is unknown") get a userspace stand-in:
# netem-relay.js inside the host's namespace on 10.231.N.2:2200, and a DNAT rule in this namespace
# sending new TCP connections for 10.231.N.2:22 to it (see netem-relay.js for what it models).
# LVB_NETEM_MODE=netem|relay forces one. With the relay only NEW connections see a change (DNAT is
# per connection; `off` lets open ones finish through the draining relay). `off` removes both
# kinds. The relay is tracked by $RUN/fleet-hN-relay.pid.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
source "$(dirname "${BASH_SOURCE[0]}")/fleet.sh"

[[ $# == 2 ]] || { sed -n '2,13p' "$0"; exit 2; }
[[ $(id -u) == 0 ]] || die "netem.sh must run as root"
target=${1#lvb-}
delay=$2
if [[ $target == all ]]; then
	hosts=("${FLEET_HOSTS[@]}")
elif [[ " ${FLEET_HOSTS[*]} " == *" $target "* ]]; then
	hosts=("$target")
else
	die "unknown fleet host: $1 (one of: ${FLEET_HOSTS[*]} all)"
fi
delay_ms=
if [[ $delay != off ]]; then
	[[ $delay =~ ^([0-9]+)ms$ ]] || die "delay must look like 25ms (or off): $delay"
	delay_ms=${BASH_REMATCH[1]}
fi

netem_available() {
	case ${LVB_NETEM_MODE:-auto} in
	netem) return 0 ;;
	relay) return 1 ;;
	esac
	# Probe on this very link (replaced or removed right after).
	if tc qdisc replace dev "lvb-$1" root netem delay 0ms 2>/dev/null; then
		return 0
	fi
	return 1
}

for h in "${hosts[@]}"; do
	[[ -e /sys/class/net/lvb-$h ]] || die "fleet host lvb-$h is not up (run scripts/lab/up.sh)"
	fleet_delay_clear "$h"
	[[ -n $delay_ms ]] || { log "lvb-$h: no delay"; continue; }
	if netem_available "$h"; then
		tc qdisc replace dev "lvb-$h" root netem delay "${delay_ms}ms"
		ip netns exec "lvb-$h" tc qdisc replace dev eth0 root netem delay "${delay_ms}ms"
		log "lvb-$h: netem delay ${delay_ms}ms on lvb-$h and (in lvb-$h) eth0"
	else
		tc qdisc del dev "lvb-$h" root 2>/dev/null || true
		pidfile=$RUN/fleet-$h-relay.pid
		ip netns exec "lvb-$h" node "$LAB_SCRIPTS/netem-relay.js" "$(fleet_addr "$h" 2)" "$FLEET_RELAY_PORT" \
			"$(fleet_addr "$h" 2)" 22 "$delay_ms" "$pidfile" </dev/null >>"$FLEET_DIR/$h/log/netem-relay.log" 2>&1 &
		for ((i = 0; i < 100; i++)); do
			[[ -s $pidfile ]] && break
			sleep 0.05
		done
		[[ -s $pidfile ]] || die "delay relay of lvb-$h did not start (see $FLEET_DIR/$h/log/netem-relay.log)"
		fleet_relay_rule -C "$h" 2>/dev/null || fleet_relay_rule -A "$h"
		while fleet_bypass_rule -C "$h" 2>/dev/null; do fleet_bypass_rule -D "$h"; done
		log "lvb-$h: no netem in this kernel; delay relay ${delay_ms}ms per direction ($(fleet_addr "$h" 2):22 -> :$FLEET_RELAY_PORT, pid $(<"$pidfile"))"
	fi
done
