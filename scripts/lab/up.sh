#!/usr/bin/env bash
# Bring the integration lab up: sshd on 127.0.0.1:$LVB_LAB_SSH_PORT, a hand-started virtlogd +
# libvirtd (qemu:///system), real tiny VMs, libvirt test-driver node files, the fleet of 3 lab hosts
# (fleet.sh), and $LAB/lab.json.
#
#   bash scripts/lab/up.sh            idempotent; ~1 s when everything is already up
#   bash scripts/lab/up.sh --reset    destroy/undefine lab domains, recreate their disk images
#
# Must run as root (it installs packages, creates users, starts daemons). State lives in
# ${LVB_LAB_DIR:-/var/lib/lvb-lab}; every daemon it starts is recorded by a pid file in $LAB/run.
set -euo pipefail
T0=$(date +%s%N)
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
source "$(dirname "${BASH_SOURCE[0]}")/fleet.sh"

RESET=0
for arg in "$@"; do
	case $arg in
	--reset) RESET=1 ;;
	-h | --help) sed -n '2,9p' "$0"; exit 0 ;;
	*) die "unknown argument: $arg" ;;
	esac
done
[[ $(id -u) == 0 ]] || die "up.sh must run as root"
[[ $SSH_PORT =~ ^[0-9]+$ ]] || die "LVB_LAB_SSH_PORT must be a number"
[[ $REPLICA_SSH_PORT =~ ^[0-9]+$ ]] || die "LVB_LAB_REPLICA_SSH_PORT must be a number"
command -v node >/dev/null || die "node is required (it generates the domain XML and lab.json)"

mkdir -p "$LAB"
chmod 0755 "$LAB"
# One up/down at a time (several jest runs may call up.sh concurrently).
exec 9>"$LAB/.lock"
flock -w 600 9 || die "timed out waiting for $LAB/.lock"

# write_if_changed FILE MODE: stdin -> FILE, only when the content differs. Succeeds (0) when the
# file was (re)written, 1 when unchanged.
write_if_changed() {
	local file=$1 mode=$2 tmp
	tmp=$(mktemp "$file.XXXXXX")
	cat >"$tmp"
	chmod "$mode" "$tmp"
	if [[ -f $file ]] && cmp -s "$tmp" "$file"; then
		rm -f "$tmp"
		[[ "$(stat -c %a "$file")" == "${mode#0}" ]] || chmod "$mode" "$file"
		return 1
	fi
	mv -f "$tmp" "$file"
	return 0
}

# ---------------------------------------------------------------------------------------------
# 1. Packages (fast no-op when installed). Never libvirt-daemon-system (drags systemd upgrades).
PKGS=(openssh-server openssh-client libvirt-clients libvirt-daemon libvirt-daemon-driver-qemu
	qemu-utils qemu-system-x86 iproute2 openssl sudo util-linux mount iptables curl zstd chromium redis-server)
installed=$(dpkg-query -W -f='${Package} ${db:Status-Status}\n' "${PKGS[@]}" 2>/dev/null || true)
missing=()
for p in "${PKGS[@]}"; do
	grep -qx "$p installed" <<<"$installed" || missing+=("$p")
done
if ((${#missing[@]})); then
	log "installing: ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	# Keep package postinst scripts from starting system daemons (sshd on :22, libvirtd) that the
	# lab would not track: a policy-rc.d that denies every service action, only during the install.
	policy_added=0
	if [[ ! -e /usr/sbin/policy-rc.d ]]; then
		printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
		chmod 0755 /usr/sbin/policy-rc.d
		policy_added=1
	fi
	apt_install() { apt-get install -y -q --no-install-recommends "${missing[@]}"; }
	if ! apt_install; then
		apt-get update -q
		apt_install || { ((policy_added)) && rm -f /usr/sbin/policy-rc.d; die "apt-get install failed"; }
	fi
	((policy_added)) && rm -f /usr/sbin/policy-rc.d
fi

mkdir -p "$RUN" "$LOG" "$LAB/ssh" "$LAB/keys" "$LAB/secrets" "$LAB/authorized_keys" "$LAB/libvirt" "$LAB/state"
chmod 0700 "$LAB/keys" "$LAB/secrets" "$LAB/ssh"
chmod 0755 "$LAB/authorized_keys"

# ---------------------------------------------------------------------------------------------
# 2. Users and groups.
# libvirtd looks up its built-in default qemu user even when qemu.conf says root.
getent group libvirt-qemu >/dev/null || groupadd -r libvirt-qemu
id -u libvirt-qemu >/dev/null 2>&1 ||
	useradd -r -g libvirt-qemu -d /var/lib/libvirt -s /usr/sbin/nologin libvirt-qemu
getent group "$LIBVIRT_GROUP" >/dev/null || groupadd -r "$LIBVIRT_GROUP"
for u in "${LAB_USERS[@]}"; do
	# -p '*': no usable password but not "locked" ('!'), which sshd with UsePAM no would refuse.
	id -u "$u" >/dev/null 2>&1 || { log "creating user $u"; useradd -m -s /bin/bash -p '*' "$u"; }
done
# lvbpass is in the libvirt socket group (full libvirt access without sudo); the others are not.
id -nG lvbpass | tr ' ' '\n' | grep -qx "$LIBVIRT_GROUP" || usermod -aG "$LIBVIRT_GROUP" lvbpass

# lvbsudo: passwordless sudo; lvbsudopw: sudo that asks for its password, every time (no cached
# credentials, no first-use lecture: a wrong password must be asked and refused on each run).
# Neither account has libvirt access of its own.
if printf '%s\n' 'lvbsudo ALL=(root) NOPASSWD: ALL' 'Defaults:lvbsudopw timestamp_timeout=0, lecture=never' 'lvbsudopw ALL=(root) ALL' |
	write_if_changed "$LAB/state/sudoers" 0440 ||
	! cmp -s "$LAB/state/sudoers" /etc/sudoers.d/lvb-lab; then
	visudo -cqf "$LAB/state/sudoers" >/dev/null || die "generated sudoers file is invalid"
	install -m 0440 -o root -g root "$LAB/state/sudoers" /etc/sudoers.d/lvb-lab
fi

# Secrets (generated once): lvbpass password and the encrypted key's passphrase. Both contain
# space, quotes and $ on purpose: code must pass them through without a shell.
gen_secret() {
	local f="$LAB/secrets/$1"
	if [[ ! -s $f ]]; then
		umask 077
		printf '%s %s $x'"'"'"!' "$2" "$(openssl rand -hex 12)" >"$f"
		umask 022
	fi
}
gen_secret lvbpass.password lvb-pw
gen_secret lvbsudopw.password lvb-sudo-pw
gen_secret encrypted.passphrase lvb-pp
PASSPHRASE=$(<"$LAB/secrets/encrypted.passphrase")
# set_password USER: the user's password is its secret; set when the shadow hash does not match it
# (fresh user or new secret).
set_password() {
	local user=$1 password hash salt
	password=$(<"$LAB/secrets/$user.password")
	hash=$(getent shadow "$user" | cut -d: -f2)
	salt=$(cut -d'$' -f3 <<<"$hash")
	if [[ $hash != \$6\$* ]] || [[ "$(printf '%s\n' "$password" | openssl passwd -6 -salt "$salt" -stdin)" != "$hash" ]]; then
		log "setting $user password"
		usermod -p "$(printf '%s\n' "$password" | openssl passwd -6 -stdin)" "$user"
	fi
}
set_password lvbpass
set_password lvbsudopw

# ---------------------------------------------------------------------------------------------
# 3. Keys (generated once). Client keys are OpenSSH-format ed25519 unless noted.
gen_key() { # gen_key FILE TYPE PASSPHRASE [extra ssh-keygen args]
	local f=$1 t=$2 pp=$3
	shift 3
	[[ -s $f && -s $f.pub ]] && return 0
	rm -f "$f" "$f.pub"
	ssh-keygen -q -t "$t" -N "$pp" -C "lvb-lab-$(basename "$f")" "$@" -f "$f" </dev/null
}
gen_key "$LAB/ssh/ssh_host_ed25519_key" ed25519 ""
gen_key "$LAB/ssh/wrong_host_ed25519_key" ed25519 "" # never served: for host-key mismatch tests
gen_key "$LAB/ssh/replica_host_ed25519_key" ed25519 ""
for k in root lvbpass lvbnovirsh lvbnoperm lvbsudo lvbsudopw unauthorized; do
	gen_key "$LAB/keys/$k" ed25519 ""
done
gen_key "$LAB/keys/encrypted" ed25519 "$PASSPHRASE"
gen_key "$LAB/keys/rsa" rsa "" -b 3072 -m PEM # "-----BEGIN RSA PRIVATE KEY-----" (PKCS#1)

# authorized_keys live in the lab dir (sshd's AuthorizedKeysFile), not in the users' homes.
printf '%s\n' "$(<"$LAB/keys/root.pub")" "$(<"$LAB/keys/encrypted.pub")" "$(<"$LAB/keys/rsa.pub")" |
	write_if_changed "$LAB/authorized_keys/root" 0644 || true
for u in "${LAB_USERS[@]}"; do
	write_if_changed "$LAB/authorized_keys/$u" 0644 <"$LAB/keys/$u.pub" || true
done

# ---------------------------------------------------------------------------------------------
# 4. lvbnovirsh's PATH: a directory of symlinks to every executable on the usual PATH except virsh.
# Applied by sshd (SetEnv PATH=...) and again by ~/.profile for login shells (Debian's /etc/profile
# resets PATH).
NOVIRSH_BIN="$LAB/novirsh-bin"
novirsh_src=(/usr/local/sbin /usr/local/bin /usr/sbin /usr/bin /sbin /bin)
stamp="$LAB/state/novirsh-bin.stamp"
need=0
[[ -d $NOVIRSH_BIN && -f $stamp ]] || need=1
if ((!need)); then
	for d in "${novirsh_src[@]}"; do
		[[ -d $d && $d -nt $stamp ]] && need=1
	done
fi
if ((need)); then
	tmpd=$(mktemp -d "$LAB/novirsh-bin.XXXXXX")
	declare -A seen=()
	for d in "${novirsh_src[@]}"; do
		[[ -d $d ]] || continue
		real=$(readlink -f "$d")
		[[ -n ${seen[$real]:-} ]] && continue
		seen[$real]=1
		find "$real" -maxdepth 1 \( -type f -o -type l \) -perm /111 ! -name virsh -print0 |
			xargs -0 -r ln -s -t "$tmpd" 2>/dev/null || true # first directory wins on duplicates
	done
	chmod 0755 "$tmpd"
	rm -rf "$NOVIRSH_BIN"
	mv "$tmpd" "$NOVIRSH_BIN"
	touch "$stamp"
fi
[[ ! -e $NOVIRSH_BIN/virsh ]] || die "virsh leaked into $NOVIRSH_BIN"
printf '# lvb-lab: this user must not find virsh on PATH\nPATH=%s\nexport PATH\n' "$NOVIRSH_BIN" |
	write_if_changed /home/lvbnovirsh/.profile 0644 && chown lvbnovirsh: /home/lvbnovirsh/.profile || true

# ---------------------------------------------------------------------------------------------
# 5. sshd (own config, own host key, loopback only).
SSHD_CONFIG="$LAB/ssh/sshd_config"
sshd_changed=0
write_if_changed "$SSHD_CONFIG" 0600 <<EOF && sshd_changed=1 || true
# Generated by scripts/lab/up.sh - lab sshd, loopback only.
Port $SSH_PORT
ListenAddress $SSH_HOST
HostKey $LAB/ssh/ssh_host_ed25519_key
PidFile $RUN/sshd.pid
AuthorizedKeysFile $LAB/authorized_keys/%u
AllowUsers root ${LAB_USERS[*]}
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication yes
KbdInteractiveAuthentication yes
UsePAM no
StrictModes yes
PrintMotd no
PrintLastLog no
X11Forwarding no
AcceptEnv LANG LC_*
# Tests open many connections and channels in parallel.
MaxStartups 200:30:400
MaxSessions 100
MaxAuthTries 10
LogLevel VERBOSE
Subsystem sftp internal-sftp
# Non-root lab users get qemu:///system as default URI: without it, a plain \`virsh\` would spawn a
# private qemu:///session daemon per user (which the lab would not track). SetEnv: the first
# matching line wins per session, so lvbnovirsh's line must come first and carry both variables.
# SHLVL=1: Debian's bash sources ~/.bashrc for every command sshd starts; on this machine root's
# runs pyenv (~150 ms per command, measured by bench/backup.ts). A typical hypervisor's root has no
# such rc file; with SHLVL=1 bash counts itself nested and skips it, so the lab measures our code.
Match User lvbnovirsh
	SetEnv PATH=$NOVIRSH_BIN LIBVIRT_DEFAULT_URI=$SYSTEM_URI SHLVL=1
Match User lvbpass,lvbnoperm,lvbsudo,lvbsudopw
	SetEnv LIBVIRT_DEFAULT_URI=$SYSTEM_URI SHLVL=1
Match User root
	SetEnv SHLVL=1
EOF
mkdir -p /run/sshd
chmod 0755 /run/sshd
if ((sshd_changed)) || ! pid_alive "$RUN/sshd.pid" /usr/sbin/sshd >/dev/null; then
	/usr/sbin/sshd -t -f "$SSHD_CONFIG" || die "sshd config test failed"
	stop_sshd
	log "starting sshd on $SSH_HOST:$SSH_PORT"
	/usr/sbin/sshd -f "$SSHD_CONFIG" -E "$LOG/sshd.log" 9>&- || die "sshd failed to start (see $LOG/sshd.log)"
	for ((i = 0; i < 100; i++)); do
		pid_alive "$RUN/sshd.pid" /usr/sbin/sshd >/dev/null && (exec 3<>"/dev/tcp/$SSH_HOST/$SSH_PORT") 2>/dev/null && break
		sleep 0.05
	done
	pid_alive "$RUN/sshd.pid" /usr/sbin/sshd >/dev/null || die "sshd did not come up (see $LOG/sshd.log)"
fi

# 5b. The replica host: a second sshd with the same config but its own address, port, host key and
# pid file (lab.json: replicaHost). Started or restarted on its own; the first sshd is not touched.
REPLICA_CONFIG="$LAB/ssh/sshd_replica_config"
replica_changed=0
sed -e "s|^Port .*|Port $REPLICA_SSH_PORT|" -e "s|^ListenAddress .*|ListenAddress $REPLICA_SSH_HOST|" \
	-e "s|^HostKey .*|HostKey $LAB/ssh/replica_host_ed25519_key|" -e "s|^PidFile .*|PidFile $RUN/sshd-replica.pid|" \
	-e "s|^# Generated by scripts/lab/up.sh - lab sshd|# Generated by scripts/lab/up.sh - lab replica sshd|" "$SSHD_CONFIG" |
	write_if_changed "$REPLICA_CONFIG" 0600 && replica_changed=1 || true
if ((replica_changed)) || ! pid_alive "$RUN/sshd-replica.pid" /usr/sbin/sshd >/dev/null; then
	/usr/sbin/sshd -t -f "$REPLICA_CONFIG" || die "replica sshd config test failed"
	stop_replica_sshd
	log "starting the replica sshd on $REPLICA_SSH_HOST:$REPLICA_SSH_PORT"
	/usr/sbin/sshd -f "$REPLICA_CONFIG" -E "$LOG/sshd-replica.log" 9>&- || die "replica sshd failed to start (see $LOG/sshd-replica.log)"
	for ((i = 0; i < 100; i++)); do
		pid_alive "$RUN/sshd-replica.pid" /usr/sbin/sshd >/dev/null && (exec 3<>"/dev/tcp/$REPLICA_SSH_HOST/$REPLICA_SSH_PORT") 2>/dev/null && break
		sleep 0.05
	done
	pid_alive "$RUN/sshd-replica.pid" /usr/sbin/sshd >/dev/null || die "replica sshd did not come up (see $LOG/sshd-replica.log)"
fi

# ---------------------------------------------------------------------------------------------
# 6. libvirt: qemu.conf (system-wide; libvirtd has no flag for it), own libvirtd/virtlogd configs.
libvirt_restart=0
virtlogd_restart=0
QEMU_CONF=/etc/libvirt/qemu.conf
mkdir -p /etc/libvirt
if ! grep -q '^# lvb-lab begin' "$QEMU_CONF" 2>/dev/null; then
	if grep -qE '^\s*(user|group)\s*=' "$QEMU_CONF" 2>/dev/null; then
		die "$QEMU_CONF already sets user/group; refusing to edit it"
	fi
	log "configuring $QEMU_CONF (qemu runs as root)"
	printf '# lvb-lab begin (scripts/lab/up.sh)\nuser = "root"\ngroup = "root"\n# lvb-lab end\n' >>"$QEMU_CONF"
	libvirt_restart=1
fi
# Socket permissions: root and members of $LIBVIRT_GROUP only. Any other user gets (libvirt 9.0):
#   error: failed to connect to the hypervisor
#   error: Failed to connect socket to '/var/run/libvirt/libvirt-sock': Permission denied
write_if_changed "$LAB/libvirt/libvirtd.conf" 0644 <<EOF && libvirt_restart=1 || true
# Generated by scripts/lab/up.sh
unix_sock_group = "$LIBVIRT_GROUP"
unix_sock_ro_perms = "0770"
unix_sock_rw_perms = "0770"
auth_unix_ro = "none"
auth_unix_rw = "none"
log_outputs = "3:file:$LOG/libvirtd.log"
EOF
write_if_changed "$LAB/libvirt/virtlogd.conf" 0644 <<EOF && virtlogd_restart=1 || true
# Generated by scripts/lab/up.sh
log_outputs = "3:file:$LOG/virtlogd.log"
EOF
if ((virtlogd_restart)) && pid_alive "$RUN/virtlogd.pid" /usr/sbin/virtlogd >/dev/null; then
	stop_libvirt # running VMs log through virtlogd: restart both, VM states are re-established below
elif ((libvirt_restart)); then
	stop_pidfile libvirtd "$RUN/libvirtd.pid" /usr/sbin/libvirtd # running VMs survive this
fi
start_libvirt

# ---------------------------------------------------------------------------------------------
# 6b. The fleet: 3 lab hosts, each its own network namespace, sshd, libvirt and VMs (fleet.sh).
T_FLEET=$(date +%s%N)
fleet_up
log "fleet is up ($((($(date +%s%N) - T_FLEET) / 1000000)) ms)"

# ---------------------------------------------------------------------------------------------
# 7. Disk images, domains, VM states, test-driver node files and lab.json (node: no shell quoting
# of hostile names anywhere).
vms_args=(up)
((RESET)) && vms_args+=(--reset)
LVB_LAB_DIR="$LAB" LVB_LAB_SSH_PORT="$SSH_PORT" LVB_LAB_REPLICA_SSH_PORT="$REPLICA_SSH_PORT" LVB_LAB_REPLICA_SSH_HOST="$REPLICA_SSH_HOST" node "$LAB_SCRIPTS/vms.js" "${vms_args[@]}" 9>&-

T1=$(date +%s%N)
log "lab is up: $LAB/lab.json ($(((T1 - T0) / 1000000)) ms)"
