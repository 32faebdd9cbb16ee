#!/usr/bin/env bash
# Tear the integration lab down: destroy + undefine every lab domain (by the names recorded in
# $LAB/state/domains.json and lab.json), detach loop devices, stop libvirtd, virtlogd and sshd by
# their pid files (the replica sshd too), and the fleet hosts (fleet.sh). Keys, images and users
# are kept unless --purge. Idempotent.
#
#   bash scripts/lab/down.sh [--purge]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
source "$(dirname "${BASH_SOURCE[0]}")/fleet.sh"

PURGE=0
for arg in "$@"; do
	case $arg in
	--purge) PURGE=1 ;;
	-h | --help) sed -n '2,6p' "$0"; exit 0 ;;
	*) die "unknown argument: $arg" ;;
	esac
done
[[ $(id -u) == 0 ]] || die "down.sh must run as root"

if [[ ! -d $LAB ]]; then
	log "nothing to do ($LAB does not exist)"
	exit 0
fi
exec 9>"$LAB/.lock"
flock -w 600 9 || die "timed out waiting for $LAB/.lock"

# Domains: libvirtd is needed to undefine them. If the lab's libvirtd is down but lab domains are
# still defined, start it briefly (it is stopped again below).
names_file="$LAB/state/domains.json"
if [[ -s $names_file ]] && [[ "$(tr -d ' \n' <"$names_file")" != "[]" ]] && command -v libvirtd >/dev/null; then
	[[ -f $LAB/libvirt/libvirtd.conf ]] && start_libvirt
fi
if command -v node >/dev/null && command -v virsh >/dev/null; then
	LVB_LAB_DIR="$LAB" node "$LAB_SCRIPTS/vms.js" down 9>&- || log "domain clean-up reported errors"
fi

fleet_down
stop_libvirt
stop_sshd
stop_replica_sshd

# Safety net: a qemu process of a lab domain that outlived libvirtd (should not happen).
for pidfile in /run/libvirt/qemu/*.pid; do
	[[ -e $pidfile ]] || continue
	pid=$(tr -dc '0-9' <"$pidfile")
	[[ -n $pid ]] || continue
	if [[ "$(readlink "/proc/$pid/exe" 2>/dev/null)" == /usr/bin/qemu-system-* ]] &&
		tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "guest=lvb-\|$LAB/images"; then
		log "killing leftover qemu pid $pid ($pidfile)"
		kill -KILL "$pid" 2>/dev/null || true
	fi
done

if ((PURGE)); then
	log "purging $LAB, lab users and sudoers entry"
	for u in "${LAB_USERS[@]}"; do
		if id -u "$u" >/dev/null 2>&1; then
			userdel -r "$u" 2>/dev/null || userdel "$u" || true
		fi
	done
	rm -f /etc/sudoers.d/lvb-lab
	fleet_purge
	exec 9>&-
	rm -rf "$LAB"
fi
log "lab is down"
