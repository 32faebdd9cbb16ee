# shellcheck shell=bash
# The fleet (issue #12): 3 lab hosts lvb-h1..lvb-h3 on this one machine, each with its own sshd, its
# own libvirt and its own VMs. Sourced by up.sh (fleet_up, after its helpers exist) and down.sh
# (fleet_down), after common.sh. Host hN (N = 1..3) is:
#   - network namespace lvb-hN; veth pair lvb-hN (root namespace, 10.231.N.1/30) <-> eth0 (inside,
#     10.231.N.2/30); netem.sh adds delay on both ends;
#   - UTS + mount namespaces of its own (hostname lvb-hN; $FLEET_DEST is a bind mount of
#     $FLEET_DIR/hN/backups there): the same Destination Folder string, a separate store per host;
#   - its own sshd on 10.231.N.2:22 with its own host key;
#   - its own libvirtd: the session daemon (qemu:///session) of user $FLEET_USER, with per-host XDG
#     directories, which the host's sshd sets (SetEnv), so the same URI shows only that host's VMs.
#     qemu.conf stdio_handler = "file": no virtlogd needed.
# One credential reaches all three: user $FLEET_USER, key $LAB/keys/fleet.
# Daemons are tracked by pid files: sshd in $RUN/fleet-hN-sshd.pid, libvirtd in its default session
# pid file ($FLEET_DIR/hN/run/libvirt/libvirtd.pid, the one an autospawned daemon would use too).
# Fast path (fleet already up): daemons alive, sshds accepting and $FLEET_DIR/.stamp naming this
# fleet.sh -> only fleet.js runs (VM states, fleet.json). rm $FLEET_DIR/.stamp to force a full pass
# (e.g. after editing a generated config by hand).

FLEET_HOSTS=(h1 h2 h3)
FLEET_USER=lvbfleet
FLEET_DIR=$LAB/hosts
FLEET_DEST=/srv/lvb-fleet/backups
FLEET_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
FLEET_RELAY_PORT=2200 # netem.sh's delay relay, inside a host's namespace

fleet_addr() { printf '10.231.%s.%s' "${1#h}" "$2"; } # fleet_addr h2 2 -> 10.231.2.2
fleet_sock() { printf '%s/run/libvirt/libvirt-sock' "$FLEET_DIR/$1"; }
# Management URI: the explicit socket never autospawns a daemon (plain qemu:///session would, outside
# the host's namespaces, when the host's libvirtd is down).
fleet_mgmt_uri() { printf 'qemu+unix:///session?socket=%s' "$(fleet_sock "$1")"; }
fleet_xdg() {
	local d=$FLEET_DIR/$1
	printf '%s\n' "XDG_RUNTIME_DIR=$d/run" "XDG_CONFIG_HOME=$d/config" "XDG_DATA_HOME=$d/data" "XDG_CACHE_HOME=$d/cache"
}

# fleet_ns hN CMD...: run CMD (as root) in host hN's network namespace, in new UTS and mount
# namespaces with hostname lvb-hN and $FLEET_DEST bound to the host's own store. Daemons started
# this way (and all their children: ssh sessions, qemu) stay in these namespaces.
fleet_ns() {
	local h=$1
	shift
	# /etc/hosts knows the host's own name and resolv.conf has no server: the namespace has no route
	# to one, and libvirtd's lookup of its hostname waited ~3 s for a DNS timeout otherwise.
	ip netns exec "lvb-$h" unshare --uts /bin/sh -c 'hostname "$1" && mount --bind "$2" "$3" &&
		mount --bind "$4/hosts" /etc/hosts && mount --bind "$4/resolv.conf" /etc/resolv.conf && shift 4 && exec "$@"' \
		sh "lvb-$h" "$FLEET_DIR/$h/backups" "$FLEET_DEST" "$FLEET_DIR/$h/etc" "$@"
}

# root may use the session daemon's socket: a client as root is ~50 ms faster than one through runuser.
fleet_libvirt_answers() { virsh -c "$(fleet_mgmt_uri "$1")" version >/dev/null 2>&1; }

# fleet_healthy: the fast path's check, without forks beyond pid_alive: every host's sshd and
# libvirtd alive by pid file, its sshd accepting on 10.231.N.2:22 (so netns, veth and addresses are
# in place), and the configs written by this very fleet.sh ($FLEET_DIR/.stamp).
fleet_healthy() {
	local h
	[[ -f $FLEET_DIR/.stamp && "$(<"$FLEET_DIR/.stamp")" == "$1" ]] || return 1
	for h in "${FLEET_HOSTS[@]}"; do
		pid_alive "$RUN/fleet-$h-sshd.pid" /usr/sbin/sshd >/dev/null || return 1
		pid_alive "$(fleet_libvirtd_pidfile "$h")" /usr/sbin/libvirtd >/dev/null || return 1
		(exec 3<>"/dev/tcp/$(fleet_addr "$h" 2)/22") 2>/dev/null || return 1
	done
}

fleet_host_net() {
	local h=$1 ns=lvb-$1
	[[ -e /run/netns/$ns ]] || { log "fleet: creating network namespace $ns"; ip netns add "$ns"; }
	if [[ ! -e /sys/class/net/$ns ]]; then
		ip -n "$ns" link del eth0 2>/dev/null || true
		ip link add "$ns" type veth peer name eth0 netns "$ns"
	fi
	if [[ "$(ip -br -4 addr show dev "$ns" 2>/dev/null)" != *" $(fleet_addr "$h" 1)/30"* ]]; then
		ip addr replace "$(fleet_addr "$h" 1)/30" dev "$ns"
	fi
	[[ "$(cat "/sys/class/net/$ns/operstate")" == up ]] || ip link set "$ns" up
	if [[ "$(ip -n "$ns" -br -4 addr show dev eth0)" != *" $(fleet_addr "$h" 2)/30"* ]]; then
		ip -n "$ns" addr replace "$(fleet_addr "$h" 2)/30" dev eth0
	fi
	ip -n "$ns" -br link show | grep -q '^eth0@[^ ]* *UP' || ip -n "$ns" link set eth0 up
	ip -n "$ns" -br link show lo | grep -q UNKNOWN || ip -n "$ns" link set lo up
}

fleet_host_files() {
	local h=$1 d=$FLEET_DIR/$1
	if [[ ! -d $d/cache ]]; then
		install -d -o "$FLEET_USER" -g "$FLEET_USER" -m 0755 "$d" "$d/config" "$d/config/libvirt" "$d/data" "$d/cache" "$d/log" "$d/images"
		install -d -o "$FLEET_USER" -g "$FLEET_USER" -m 0700 "$d/run"
		install -d -o "$FLEET_USER" -g "$FLEET_USER" -m 0750 "$d/backups"
		install -d -o root -g root -m 0700 "$d/ssh"
	fi
	gen_key "$d/ssh/ssh_host_ed25519_key" ed25519 ""
	mkdir -p "$d/etc"
	printf '127.0.0.1\tlocalhost\n%s\tlvb-%s\n' "$(fleet_addr "$h" 2)" "$h" | write_if_changed "$d/etc/hosts" 0644 || true
	printf '# fleet host lvb-%s: no DNS server reachable from its namespace\noptions timeout:1 attempts:1\n' "$h" |
		write_if_changed "$d/etc/resolv.conf" 0644 || true
	{ printf '# Generated by scripts/lab/fleet.sh - session libvirtd of fleet host lvb-%s\n' "$h"
		printf 'log_outputs = "3:file:%s/log/libvirtd.log"\n' "$d"; } |
		write_if_changed "$d/config/libvirt/libvirtd.conf" 0644 && FLEET_LIBVIRT_CHANGED+=("$h") || true
	printf '# Generated by scripts/lab/fleet.sh\nstdio_handler = "file"\n' |
		write_if_changed "$d/config/libvirt/qemu.conf" 0644 && FLEET_LIBVIRT_CHANGED+=("$h") || true
	# shellcheck disable=SC2046
	write_if_changed "$d/ssh/sshd_config" 0600 <<EOF && FLEET_SSHD_CHANGED+=("$h") || true
# Generated by scripts/lab/fleet.sh - sshd of fleet host lvb-$h (network namespace lvb-$h).
Port 22
ListenAddress $(fleet_addr "$h" 2)
HostKey $d/ssh/ssh_host_ed25519_key
PidFile $RUN/fleet-$h-sshd.pid
AuthorizedKeysFile $LAB/authorized_keys/%u
AllowUsers $FLEET_USER
PermitRootLogin no
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes yes
PrintMotd no
PrintLastLog no
X11Forwarding no
MaxStartups 200:30:400
MaxSessions 100
MaxAuthTries 10
LogLevel VERBOSE
Subsystem sftp internal-sftp
# This host's libvirt: qemu:///session with this host's XDG directories (SHLVL=1: see up.sh).
SetEnv $(fleet_xdg "$h" | tr '\n' ' ')LIBVIRT_DEFAULT_URI=qemu:///session SHLVL=1
EOF
}

fleet_start_sshd() {
	local h=$1 pidfile=$RUN/fleet-$1-sshd.pid cfg=$FLEET_DIR/$1/ssh/sshd_config i
	/usr/sbin/sshd -t -f "$cfg" || die "fleet: sshd config test failed ($cfg)"
	stop_pidfile "fleet $h sshd" "$pidfile" /usr/sbin/sshd
	log "fleet: starting sshd of lvb-$h on $(fleet_addr "$h" 2):22"
	fleet_ns "$h" /usr/sbin/sshd -f "$cfg" -E "$FLEET_DIR/$h/log/sshd.log" 9>&- || die "fleet: sshd of lvb-$h failed (see $FLEET_DIR/$h/log/sshd.log)"
	for ((i = 0; i < 100; i++)); do
		pid_alive "$pidfile" /usr/sbin/sshd >/dev/null && (exec 3<>"/dev/tcp/$(fleet_addr "$h" 2)/22") 2>/dev/null && return 0
		sleep 0.05
	done
	die "fleet: sshd of lvb-$h did not come up (see $FLEET_DIR/$h/log/sshd.log)"
}

fleet_libvirtd_pidfile() { printf '%s/run/libvirt/libvirtd.pid' "$FLEET_DIR/$1"; }

fleet_start_libvirtd() {
	local h=$1 d=$FLEET_DIR/$1
	# A fresh daemon probes QEMU's capabilities (~5 s, more on a busy machine) unless its cache has
	# them: the lab's system libvirtd (started before the fleet) has just written the same files
	# (byte-identical, measured); libvirt re-probes by itself when a cached file is stale.
	local caps=$d/cache/libvirt/qemu/cache/capabilities
	if [[ ! -d $caps && -d /var/cache/libvirt/qemu/capabilities ]]; then
		install -d -o "$FLEET_USER" -g "$FLEET_USER" "$d/cache/libvirt" "$d/cache/libvirt/qemu" "$d/cache/libvirt/qemu/cache" "$caps"
		cp /var/cache/libvirt/qemu/capabilities/*.xml "$caps/" 2>/dev/null || true
		chown -R "$FLEET_USER:$FLEET_USER" "$caps"
	fi
	rm -f "$(fleet_libvirtd_pidfile "$h")"
	log "fleet: starting libvirtd (qemu:///session of $FLEET_USER) of lvb-$h"
	# shellcheck disable=SC2046
	fleet_ns "$h" runuser -u "$FLEET_USER" -- env -i HOME="/home/$FLEET_USER" PATH="$FLEET_PATH" $(fleet_xdg "$h") \
		/usr/sbin/libvirtd --daemon --config "$d/config/libvirt/libvirtd.conf" 9>&- ||
		die "fleet: libvirtd of lvb-$h failed (see $d/log/libvirtd.log)"
}

fleet_wait_libvirtd() {
	local h=$1 i
	for ((i = 0; i < 300; i++)); do
		fleet_libvirt_answers "$h" && return 0
		sleep 0.1
	done
	die "fleet: libvirtd of lvb-$h did not answer within 30 s (see $FLEET_DIR/$h/log/libvirtd.log)"
}

# fleet_host_up hN: network, files and daemons of one host (hosts are brought up in parallel).
fleet_host_up() {
	local h=$1
	FLEET_SSHD_CHANGED=()
	FLEET_LIBVIRT_CHANGED=()
	fleet_host_net "$h"
	fleet_host_files "$h"
	if ((${#FLEET_SSHD_CHANGED[@]})) || ! pid_alive "$RUN/fleet-$h-sshd.pid" /usr/sbin/sshd >/dev/null; then
		fleet_start_sshd "$h"
	fi
	if ((${#FLEET_LIBVIRT_CHANGED[@]})); then
		# Running VMs survive a libvirtd restart; the new daemon re-reads the configs.
		stop_pidfile "fleet $h libvirtd" "$(fleet_libvirtd_pidfile "$h")" /usr/sbin/libvirtd
	fi
	if ! pid_alive "$(fleet_libvirtd_pidfile "$h")" /usr/sbin/libvirtd >/dev/null; then
		fleet_start_libvirtd "$h"
		fleet_wait_libvirtd "$h"
	fi
}

fleet_up() {
	local h stamp pids=() failed=0
	stamp="$LAB $(cksum <"$LAB_SCRIPTS/fleet.sh")"
	if fleet_healthy "$stamp"; then
		LVB_LAB_DIR="$LAB" node "$LAB_SCRIPTS/fleet.js" up 9>&-
		return
	fi
	rm -f "$FLEET_DIR/.stamp"
	if ! id -u "$FLEET_USER" >/dev/null 2>&1; then
		log "creating user $FLEET_USER"
		useradd -m -s /bin/bash -p '*' "$FLEET_USER"
	fi
	gen_key "$LAB/keys/fleet" ed25519 ""
	write_if_changed "$LAB/authorized_keys/$FLEET_USER" 0644 <"$LAB/keys/fleet.pub" || true
	mkdir -p "$FLEET_DIR" "$FLEET_DEST" /run/sshd
	# Outside the hosts' mount namespaces the destination is an empty root-only directory.
	chmod 0700 "$FLEET_DEST"
	for h in "${FLEET_HOSTS[@]}"; do
		fleet_host_up "$h" &
		pids+=($!)
	done
	for h in "${pids[@]}"; do wait "$h" || failed=1; done
	((!failed)) || die "fleet: a host did not come up (see the messages above)"
	printf '%s' "$stamp" >"$FLEET_DIR/.stamp"
	# Images, domains, VM states and $FLEET_DIR/fleet.json (vms.js copies it into lab.json: fleet).
	LVB_LAB_DIR="$LAB" node "$LAB_SCRIPTS/fleet.js" up 9>&-
}

# fleet_relay_rule -A|-D|-C hN: the DNAT rule netem.sh uses to send new connections for the host's
# sshd through its delay relay. Deleting it cuts the connections it translated (measured with
# iptables-nft 1.8.9: an open ssh session through the relay stalls), so `off` first puts the bypass
# rule before it (new connections go direct) and deletes both only once the relay has no connection.
fleet_relay_rule() {
	iptables -w -t nat "$1" OUTPUT -d "$(fleet_addr "$2" 2)/32" -p tcp --dport 22 \
		-m comment --comment "lvb-fleet-netem-$2" -j DNAT --to-destination "$(fleet_addr "$2" 2):$FLEET_RELAY_PORT"
}
fleet_bypass_rule() { # fleet_bypass_rule -I|-D|-C hN
	local op=("$1" OUTPUT)
	[[ $1 == -I ]] && op+=(1)
	iptables -w -t nat "${op[@]}" -d "$(fleet_addr "$2" 2)/32" -p tcp --dport 22 -m comment --comment "lvb-fleet-netem-$2-off" -j RETURN
}

# fleet_relay_alive PIDFILE: prints the pid of a live netem-relay.js recorded there.
fleet_relay_alive() {
	local pid
	pid=$(pid_alive "$1" "$(readlink -f "$(command -v node)")") || return 1
	tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q 'netem-relay\.js' || return 1
	printf '%s' "$pid"
}

# fleet_delay_clear hN [--now]: no delay for new connections to the host (netem qdiscs removed, the
# relay bypassed). The relay stops accepting and exits once the connections through it have ended
# (a test's open connection keeps working); after 2 s it is left draining, recorded in
# $RUN/fleet-hN-relay-draining-PID.pid, and its rules stay until a later call finds it gone.
# --now (down.sh) kills relays, draining ones too.
fleet_delay_clear() {
	local h=$1 now=${2:-} pidfile pid i draining=0
	tc qdisc del dev "lvb-$h" root 2>/dev/null || true
	[[ -e /run/netns/lvb-$h ]] && { ip netns exec "lvb-$h" tc qdisc del dev eth0 root 2>/dev/null || true; }
	if fleet_relay_rule -C "$h" 2>/dev/null && ! fleet_bypass_rule -C "$h" 2>/dev/null; then
		fleet_bypass_rule -I "$h"
	fi
	for pidfile in "$RUN/fleet-$h-relay.pid" "$RUN/fleet-$h-relay-draining-"*.pid; do
		[[ -e $pidfile ]] || continue
		if ! pid=$(fleet_relay_alive "$pidfile"); then
			rm -f "$pidfile"
			continue
		fi
		if [[ $now == --now ]]; then
			log "stopping fleet $h delay relay (pid $pid)"
			kill -KILL "$pid" 2>/dev/null || true
			rm -f "$pidfile"
			continue
		fi
		kill -TERM "$pid" 2>/dev/null || true
		for ((i = 0; i < 20; i++)); do
			pid_running "$pid" || break
			sleep 0.1
		done
		if pid_running "$pid"; then
			log "fleet $h delay relay (pid $pid) drains its open connections"
			[[ $pidfile == *-draining-* ]] || mv -f "$pidfile" "$RUN/fleet-$h-relay-draining-$pid.pid"
			draining=1
		else
			log "stopped fleet $h delay relay (pid $pid)"
			rm -f "$pidfile"
		fi
	done
	if ((!draining)); then
		while fleet_relay_rule -C "$h" 2>/dev/null; do fleet_relay_rule -D "$h"; done
		while fleet_bypass_rule -C "$h" 2>/dev/null; do fleet_bypass_rule -D "$h"; done
	fi
}

# fleet_down [--purge]: domains destroyed + undefined, daemons stopped by pid file, namespaces
# removed. Images and keys are kept unless --purge.
fleet_down() {
	local h pidfile pid
	[[ -d $FLEET_DIR ]] || return 0
	if command -v node >/dev/null; then
		LVB_LAB_DIR="$LAB" node "$LAB_SCRIPTS/fleet.js" down 9>&- || log "fleet: domain clean-up reported errors"
	fi
	for h in "${FLEET_HOSTS[@]}"; do
		fleet_delay_clear "$h" --now
		stop_pidfile "fleet $h libvirtd" "$(fleet_libvirtd_pidfile "$h")" /usr/sbin/libvirtd
		stop_pidfile "fleet $h sshd" "$RUN/fleet-$h-sshd.pid" /usr/sbin/sshd
		# Safety net: a qemu of this host that outlived its libvirtd (should not happen).
		for pidfile in "$FLEET_DIR/$h"/run/libvirt/qemu/run/*.pid; do
			[[ -e $pidfile ]] || continue
			pid=$(tr -dc '0-9' <"$pidfile")
			if [[ -n $pid && "$(readlink "/proc/$pid/exe" 2>/dev/null)" == /usr/bin/qemu-system-* ]] &&
				tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$FLEET_DIR/$h/"; then
				log "fleet: killing leftover qemu pid $pid ($pidfile)"
				kill -KILL "$pid" 2>/dev/null || true
			fi
		done
		if [[ -e /run/netns/lvb-$h ]]; then
			log "fleet: removing network namespace lvb-$h"
			ip netns del "lvb-$h" # takes the veth pair with it
		fi
	done
}

fleet_purge() {
	rm -rf "$FLEET_DIR" "$LAB/keys/fleet" "$LAB/keys/fleet.pub" "$LAB/authorized_keys/$FLEET_USER"
	rmdir "$FLEET_DEST" /srv/lvb-fleet 2>/dev/null || true
	if id -u "$FLEET_USER" >/dev/null 2>&1; then
		userdel -r "$FLEET_USER" 2>/dev/null || userdel "$FLEET_USER" || true
	fi
}
