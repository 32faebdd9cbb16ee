# shellcheck shell=bash
# Shared by up.sh and down.sh: lab layout, logging, pid-file helpers, daemon start/stop.
# Everything the lab starts is tracked by a pid file under $LAB/run and stopped only by that pid.

LAB="${LVB_LAB_DIR:-/var/lib/lvb-lab}"
SSH_PORT="${LVB_LAB_SSH_PORT:-2222}"
SSH_HOST=127.0.0.1
# A second sshd (own host key, same users): the "other host" a replica is written to.
REPLICA_SSH_PORT="${LVB_LAB_REPLICA_SSH_PORT:-2223}"
REPLICA_SSH_HOST=127.0.0.2
LAB_SCRIPTS="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
RUN="$LAB/run"
LOG="$LAB/log"
SYSTEM_URI="qemu:///system"
# Unix group that may use the qemu:///system socket (like Debian's "libvirt" group). Members of it
# (lvbpass) get full libvirt access; everyone else except root gets "Permission denied".
LIBVIRT_GROUP=libvirt
LAB_USERS=(lvbpass lvbnovirsh lvbnoperm lvbsudo lvbsudopw)

log() { printf '[lab] %s\n' "$*" >&2; }
die() { printf '[lab] ERROR: %s\n' "$*" >&2; exit 1; }

# pid_alive PIDFILE EXE -> prints the pid and succeeds if the pid file names a live process whose
# executable is EXE (guards against a stale pid file whose pid was reused by something else).
pid_alive() {
	local pidfile=$1 exe=$2 pid
	[[ -s $pidfile ]] || return 1
	pid=$(tr -dc '0-9' <"$pidfile")
	[[ -n $pid ]] || return 1
	kill -0 "$pid" 2>/dev/null || return 1
	[[ "$(readlink "/proc/$pid/exe" 2>/dev/null)" == "$exe" ]] || return 1
	printf '%s' "$pid"
}

# A daemon's parent is PID 1, which may reap late: a zombie counts as stopped.
pid_running() {
	local st
	st=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
	[[ -n $st && $st != Z && $st != X ]]
}

# stop_pidfile NAME PIDFILE EXE: SIGTERM the recorded pid, wait up to 10 s, then SIGKILL.
stop_pidfile() {
	local name=$1 pidfile=$2 exe=$3 pid i
	if pid=$(pid_alive "$pidfile" "$exe"); then
		log "stopping $name (pid $pid)"
		kill -TERM "$pid" 2>/dev/null || true
		for ((i = 0; i < 100; i++)); do
			pid_running "$pid" || break
			sleep 0.1
		done
		if pid_running "$pid"; then
			log "$name (pid $pid) ignored SIGTERM, sending SIGKILL"
			kill -KILL "$pid" 2>/dev/null || true
			sleep 0.2
		fi
	fi
	rm -f "$pidfile"
}

libvirt_answers() { virsh -c "$SYSTEM_URI" version >/dev/null 2>&1; }

# Start virtlogd then libvirtd (order matters: without virtlogd `virsh start` fails) with the lab's
# own config files; both daemonize and write their pid files under $RUN. fd 9 (the lab lock) is
# closed for them so a daemon never keeps the lock.
start_libvirt() {
	local i
	mkdir -p /var/log/libvirt/qemu /var/lib/libvirt /run/libvirt "$RUN" "$LOG"
	if ! pid_alive "$RUN/virtlogd.pid" /usr/sbin/virtlogd >/dev/null; then
		rm -f "$RUN/virtlogd.pid"
		log "starting virtlogd"
		/usr/sbin/virtlogd --daemon --config "$LAB/libvirt/virtlogd.conf" --pid-file "$RUN/virtlogd.pid" 9>&- ||
			die "virtlogd failed to start (see $LOG/virtlogd.log)"
		for ((i = 0; i < 50; i++)); do
			pid_alive "$RUN/virtlogd.pid" /usr/sbin/virtlogd >/dev/null && break
			sleep 0.1
		done
	fi
	if ! pid_alive "$RUN/libvirtd.pid" /usr/sbin/libvirtd >/dev/null; then
		rm -f "$RUN/libvirtd.pid"
		if libvirt_answers; then
			die "a libvirtd that the lab did not start already answers on $SYSTEM_URI; stop it first"
		fi
		log "starting libvirtd"
		/usr/sbin/libvirtd --daemon --config "$LAB/libvirt/libvirtd.conf" --pid-file "$RUN/libvirtd.pid" 9>&- ||
			die "libvirtd failed to start (see $LOG/libvirtd.log)"
	fi
	for ((i = 0; i < 150; i++)); do
		libvirt_answers && return 0
		sleep 0.1
	done
	die "libvirtd did not answer '$SYSTEM_URI' within 15 s (see $LOG/libvirtd.log)"
}

stop_libvirt() {
	stop_pidfile libvirtd "$RUN/libvirtd.pid" /usr/sbin/libvirtd
	stop_pidfile virtlogd "$RUN/virtlogd.pid" /usr/sbin/virtlogd
}

stop_sshd() {
	stop_pidfile sshd "$RUN/sshd.pid" /usr/sbin/sshd
}

stop_replica_sshd() {
	stop_pidfile "replica sshd" "$RUN/sshd-replica.pid" /usr/sbin/sshd
}
