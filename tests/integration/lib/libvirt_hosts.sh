# Two libvirt hosts on this machine for the tests of libvirt domains: the
# network namespaces A and B of lib/hosts.sh (joined by their veth pair),
# each with a mount and a UTS namespace of its own held by a process the
# test starts (a `sleep`). There the test's own directories are bind-mounted
# over /etc/libvirt, /run/libvirt (= /var/run/libvirt), /var/lib/libvirt,
# /var/log/libvirt and /var/cache/libvirt, on a /run of its own (a tmpfs: no
# systemd, no D-Bus seen from there), and a file over /etc/hosts (rigA<tag>
# and rigB<tag>, the hosts' names, resolve to their addresses); and there a
# libvirtd of the test's (qemu driver as root, security_driver "none", no
# cgroups, no virtlogd, its own host_uuid and host name) listens on TCP
# without auth on its namespace's address, for peer-to-peer migration
# between A and B. Nothing of the machine's own libvirt is used or touched.
#
#   $LV_DIR/A/{etc,run,lib,log,cache}  <- bind ->  /etc/libvirt, /run/libvirt, ...
#   host A: net vmgA<tag>, mnt+uts of holder A; libvirtd qemu+tcp://HOST_A_ADDR/system
#   host B: the same with B
#
# Source lib/hosts.sh, lib/linux_guest.sh and this file; call
# libvirt_hosts_setup after hosts_setup (suite_with_libvirt_hosts does it
# all, for a suite). Teardown (libvirt_hosts_cleanup, on exit through
# libvirt_hosts_traps): every domain destroyed, each host's QEMU processes,
# its libvirtd and its holder killed by PID (and any other process left in
# the host's mount namespace), so that the namespace and its mounts go with
# them; then hosts_cleanup deletes the network namespaces and directories.
#
# Per host X (A or B): virshX ARGS (virsh inside X's namespaces), lv_exec X
# CMD (any command there), LV_URI_X (X's URI as its peer dials it), lv_path
# X PATH (where a path inside X lies from here). The guest (lib/linux_guest.sh)
# as a domain: lv_start_guest, lv_console, lv_wait_line, lv_seq,
# lv_wait_seq, lv_verify, lv_set_rate, lv_corrupt, lv_migrate, lv_jobinfo,
# lv_pmemsave, lv_dump_logs. vmigrated beside X's libvirtd: lv_start_service
# X (hosts_cleanup stops it), its CLI vmA / vmB.

LV_DIR=$HOSTS_DIR/libvirt
LV_HOLDER_A= LV_HOLDER_B=
LV_LIBVIRTD_A= LV_LIBVIRTD_B=
LV_MNTNS_A= LV_MNTNS_B=
LV_URI_A= LV_URI_B=

# the tools the rig needs, or the first one missing (for a SKIP line)
libvirt_hosts_missing() {
	local t
	for t in qemu-system-x86_64 libvirtd virsh nsenter unshare ip python3 sha256sum; do
		command -v "$t" >/dev/null || { echo "$t"; return 0; }
	done
	return 1
}

lv_var() { eval "echo \"\${$1_$2}\""; }

lv_exec() {
	local host=$1 holder
	shift
	holder=$(lv_var LV_HOLDER "$host")
	[ -n "$holder" ] || return 1
	nsenter -t "$holder" -m -u -n -- "$@"
}

# virsh on host A or B; a libvirtd that hangs ends the command after
# LV_VIRSH_TIMEOUT seconds (default 300), not the test run
virshA() { timeout "${LV_VIRSH_TIMEOUT:-300}" nsenter -t "$LV_HOLDER_A" -m -u -n -- virsh -q -c qemu:///system "$@"; }
virshB() { timeout "${LV_VIRSH_TIMEOUT:-300}" nsenter -t "$LV_HOLDER_B" -m -u -n -- virsh -q -c qemu:///system "$@"; }
lv_virsh() { local host=$1; shift; "virsh$host" "$@"; }

# where PATH inside host X's mount namespace is from the root namespace
lv_path() {
	local host=$1 p=$2 d=$LV_DIR/$1
	case $p in
	/etc/libvirt/*) echo "$d/etc/${p#/etc/libvirt/}" ;;
	/run/libvirt/*) echo "$d/run/${p#/run/libvirt/}" ;;
	/var/lib/libvirt/*) echo "$d/lib/${p#/var/lib/libvirt/}" ;;
	/var/log/libvirt/*) echo "$d/log/${p#/var/log/libvirt/}" ;;
	/var/cache/libvirt/*) echo "$d/cache/${p#/var/cache/libvirt/}" ;;
	*) echo "$p" ;;
	esac
}

lv_write_config() {
	local host=$1 addr=$2 d=$LV_DIR/$1
	cat >"$d/etc/libvirtd.conf" <<EOF
# libvirtd of test host $host (lib/libvirt_hosts.sh)
listen_tls = 0
listen_tcp = 1
listen_addr = "$addr"
auth_tcp = "none"
auth_unix_ro = "none"
auth_unix_rw = "none"
unix_sock_rw_perms = "0700"
host_uuid = "$(cat /proc/sys/kernel/random/uuid)"
log_filters = "${LV_LOG_FILTERS:-}"
log_outputs = "${LV_LOG_LEVEL:-3}:file:/var/log/libvirt/libvirtd.log"
EOF
	cat >"$d/etc/qemu.conf" <<EOF
# qemu driver of test host $host (lib/libvirt_hosts.sh): QEMU as root,
# nothing relabelled, no namespaces or cgroups of libvirt's, no virtlogd
user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
namespaces = [ ]
cgroup_controllers = [ ]
stdio_handler = "file"
migration_address = "$addr"
migration_host = "$addr"
migration_port_min = 49152
migration_port_max = 49215
EOF
}

# start host X's holder (mount and UTS namespaces in X's network namespace)
lv_start_holder() {
	local host=$1 ns=$2 d=$LV_DIR/$1 pid
	rm -f "$d/holder.ready"
	# its own /etc/hosts: each host's name resolves to its address
	printf '127.0.0.1 localhost\n%s rigA%s\n%s rigB%s\n' \
		"$HOST_A_ADDR" "$HOSTS_TAG" "$HOST_B_ADDR" "$HOSTS_TAG" >"$d/hosts"
	ip netns exec "$ns" unshare --mount --uts --propagation private -- sh -c '
		d=$1
		mount -t tmpfs -o mode=0755 rig-run /run &&
		mkdir -p /run/libvirt /run/lock && ln -s /dev/shm /run/shm &&
		mount --bind "$d/run" /run/libvirt &&
		mount --bind "$d/etc" /etc/libvirt &&
		mount --bind "$d/lib" /var/lib/libvirt &&
		mount --bind "$d/log" /var/log/libvirt &&
		mount --bind "$d/cache" /var/cache/libvirt &&
		mount --bind "$d/hosts" /etc/hosts &&
		hostname "$2" || exit 1
		: >"$d/holder.ready"
		exec sleep infinity' rig-holder "$d" "rig$host$HOSTS_TAG" >>"$d/holder.log" 2>&1 &
	pid=$!
	eval "LV_HOLDER_$host=$pid"
	for _ in $(seq 100); do
		[ -e "$d/holder.ready" ] && break
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	# the holder is the sleep itself: ip, unshare and sh each exec the next
	[ -e "$d/holder.ready" ] && [ "$(cat /proc/"$pid"/comm 2>/dev/null)" = sleep ] || {
		echo "# libvirt host $host: the namespace holder did not start:"
		sed 's/^/#   /' "$d/holder.log"
		return 1
	}
	eval "LV_MNTNS_$host=$(readlink /proc/"$pid"/ns/mnt)"
}

# start host X's libvirtd (lv_wait_libvirtd waits until it answers)
lv_start_libvirtd() {
	local host=$1 d=$LV_DIR/$1
	# a simple command, so that $! is libvirtd itself (nsenter execs it)
	nsenter -t "$(lv_var LV_HOLDER "$host")" -m -u -n -- \
		libvirtd --listen --config /etc/libvirt/libvirtd.conf >>"$d/log/libvirtd.out" 2>&1 &
	eval "LV_LIBVIRTD_$host=$!"
}

lv_wait_libvirtd() {
	local host=$1 d=$LV_DIR/$1 pid
	pid=$(lv_var LV_LIBVIRTD "$host")
	# the qemu driver probes QEMU's capabilities before it answers (seconds)
	for _ in $(seq 600); do
		lv_virsh "$host" uri >/dev/null 2>&1 && return 0
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	echo "# libvirtd of host $host did not start:"
	tail -n 20 "$d/log/libvirtd.out" "$d/log/libvirtd.log" 2>/dev/null | sed 's/^/#   /'
	return 1
}

lv_stop_libvirtd() {
	local host=$1 pid
	pid=$(lv_var LV_LIBVIRTD "$host")
	[ -n "$pid" ] || return 0
	kill "$pid" 2>/dev/null
	for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
	kill -9 "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null
	eval "LV_LIBVIRTD_$host="
}

libvirt_hosts_setup() {
	local host ns addr
	[ "$USE_NETNS" = 1 ] || { echo "# libvirt hosts need network namespaces"; return 1; }
	for host in A B; do
		if [ $host = A ]; then ns=$NS_A addr=$HOST_A_ADDR; else ns=$NS_B addr=$HOST_B_ADDR; fi
		mkdir -p "$LV_DIR/$host"/{etc,run,lib,cache} "$LV_DIR/$host"/log/qemu || return 1
		lv_write_config $host "$addr"
		eval "LV_URI_$host=qemu+tcp://$addr/system"
		lv_start_holder $host "$ns" || return 1
	done
	lv_start_libvirtd A && lv_start_libvirtd B &&
		lv_wait_libvirtd A && lv_wait_libvirtd B || return 1
	lv_probe_qemu
}

# The qemu driver probes QEMU's capabilities (two QEMU runs, about 4 s
# here) the first time it needs them: a domain's start, an incoming
# migration. Both hosts do it now, at once, so that neither a test's first
# migration nor its first boot pays for it. (Keeping the result between
# runs does not help: libvirt finds its cache outdated whenever the host's
# CPUID differs, which on this machine depends on the core it runs on.)
lv_probe_qemu() {
	local a
	virshA domcapabilities --virttype qemu >/dev/null 2>&1 &
	a=$!
	virshB domcapabilities --virttype qemu >/dev/null 2>&1
	wait $a
	true
}

# every process in host X's mount namespace
lv_ns_pids() {
	local want p
	want=$(lv_var LV_MNTNS "$1")
	[ -n "$want" ] || return 0
	for p in /proc/[0-9]*; do
		[ "$(readlink "$p/ns/mnt" 2>/dev/null)" = "$want" ] && echo "${p#/proc/}"
	done
	true
}

# the processes of host X named COMM (libvirtd, qemu-system-x86)
lv_pids_named() {
	local p
	for p in $(lv_ns_pids "$1"); do
		[ "$(cat /proc/"$p"/comm 2>/dev/null)" = "$2" ] && echo "$p"
	done
	true
}

lv_qemu_pids() { lv_pids_named "$1" qemu-system-x86; }

libvirt_hosts_cleanup() {
	local host dom pids holder
	hosts_stop_services	# a vmigrated beside libvirtd (lv_start_service) first
	for host in A B; do
		holder=$(lv_var LV_HOLDER "$host")
		[ -n "$holder" ] || continue
		if [ -n "$(lv_var LV_LIBVIRTD "$host")" ]; then
			for dom in $(LV_VIRSH_TIMEOUT=20 "virsh$host" list --name 2>/dev/null); do
				LV_VIRSH_TIMEOUT=20 "virsh$host" destroy "$dom" >/dev/null 2>&1
			done
		fi
		pids=$(lv_qemu_pids "$host")
		[ -n "$pids" ] && kill -9 $pids 2>/dev/null
		lv_stop_libvirtd "$host"
		kill "$holder" 2>/dev/null
		wait "$holder" 2>/dev/null
		# whatever else is left in the namespace came from this test
		pids=$(lv_ns_pids "$host")
		[ -n "$pids" ] && kill -9 $pids 2>/dev/null
		eval "LV_HOLDER_$host="
	done
	true
}

# ---- vmigrated beside each libvirtd ----

# vmigrated of host X inside X's namespaces (its libvirt at qemu:///system
# there, /run/vmigrate on X's own /run); PID in SVC_X_PID
lv_start_service() {
	local host=$1 dir=$HOSTS_DIR/$1 addr port pid
	if [ "$host" = A ]; then addr=$HOST_A_ADDR port=$HOST_A_PORT; else addr=$HOST_B_ADDR port=$HOST_B_PORT; fi
	rm -f "$dir/vmigrated.sock"
	# nsenter without -p execs vmigrated: $! is the service itself
	nsenter -t "$(lv_var LV_HOLDER "$host")" -m -u -n -- "$VMIGRATED" --state-dir "$dir" \
		--listen "$addr:$port" --tls-dir "$HOSTS_DIR/pki/host$host" \
		--libvirt qemu:///system >>"$dir/service.log" 2>&1 &
	pid=$!
	eval "SVC_${host}_PID=$pid"
	for _ in $(seq 50); do [ -S "$dir/vmigrated.sock" ] && return 0; sleep 0.1; done
	echo "# service $host did not start:"; sed 's/^/#   /' "$dir/service.log"
	return 1
}
# the CLI of host A or B
vmA() { VMIGRATE_CONTROL="$HOSTS_DIR/A/vmigrated.sock" "$VMIGRATE" "$@"; }
vmB() { VMIGRATE_CONTROL="$HOSTS_DIR/B/vmigrated.sock" "$VMIGRATE" "$@"; }
# ---- the guest as a libvirt domain ----

# lv_domain_xml NAME MEM_MIB CMDLINE: a TCG domain booting the Linux guest
# directly (kernel, initrd), no disks; its console (ttyS0) appended to
# /var/log/libvirt/qemu/NAME-console.log and its control tty (ttyS1) on
# the socket /var/lib/libvirt/qemu/NAME-ctl.sock, both inside the host it
# runs on, so that after a migration each host has its own
lv_domain_xml() {
	cat <<EOF
<domain type='qemu'>
  <name>$1</name>
  <memory unit='MiB'>$2</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>$LINUX_GUEST_KERNEL</kernel>
    <initrd>$LINUX_GUEST_INITRD</initrd>
    <cmdline>$3</cmdline>
  </os>
  <features><acpi/></features>
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>$(command -v qemu-system-x86_64)</emulator>
    <serial type='file'>
      <source path='/var/log/libvirt/qemu/$1-console.log' append='on'/>
      <target port='0'/>
    </serial>
    <serial type='unix'>
      <source mode='bind' path='/var/lib/libvirt/qemu/$1-ctl.sock'/>
      <target port='1'/>
    </serial>
    <controller type='usb' model='none'/>
    <memballoon model='none'/>
  </devices>
</domain>
EOF
}

# lv_start_guest HOST NAME MEM_MIB CMDLINE: a transient domain on HOST
lv_start_guest() {
	local host=$1 xml=$LV_DIR/$2.xml
	lv_domain_xml "$2" "$3" "$4" >"$xml"
	lv_virsh "$host" create "$xml" >/dev/null
}

lv_console() { lv_path "$1" "/var/log/libvirt/qemu/$2-console.log"; }

# lv_request HOST NAME LINE ERE: send LINE to the guest's rigmem (its ttyS1)
# and wait (up to 60 s) for its answer, the console line matching ERE, which
# it prints. The connection stays open until the answer is there: QEMU's
# socket chardev drops what it has not yet passed to the guest's UART when
# the client hangs up.
lv_request() {
	python3 - "$(lv_path "$1" "/var/lib/libvirt/qemu/$2-ctl.sock")" "$3" \
		"$(lv_console "$1" "$2")" "$4" <<'PY'
import re, socket, sys, time
sock, line, console, want = sys.argv[1:5]
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(sock)
    s.sendall(line.encode() + b'\n')
except OSError as e:
    print('cannot reach the guest at %s: %s' % (sock, e))
    sys.exit(1)
pat = re.compile(want)
for _ in range(600):
    with open(console, 'rb') as f:
        hits = [l for l in f.read().decode('ascii', 'replace').splitlines() if pat.search(l)]
    if hits:
        print(hits[-1])
        sys.exit(0)
    time.sleep(0.1)
print('no answer to "%s" from the guest' % line)
sys.exit(1)
PY
}

# lv_wait_line HOST NAME ERE [TENTHS]: wait (up to TENTHS/10 s, default
# 60 s) for a console line of the guest on HOST matching ERE; prints the last
lv_wait_line() {
	local f l
	f=$(lv_console "$1" "$2")
	for _ in $(seq "${4:-600}"); do
		l=$(grep -aE "$3" "$f" 2>/dev/null | tail -n 1)
		[ -n "$l" ] && { echo "$l"; return 0; }
		sleep 0.1
	done
	return 1
}

# the guest's last progress seq on HOST (0 before the first)
lv_seq() {
	local s
	s=$(grep -aoE 'RIG progress seq=[0-9]+' "$(lv_console "$1" "$2")" 2>/dev/null |
		tail -n 1 | sed 's/.*=//')
	echo "${s:-0}"
}

# lv_wait_seq HOST NAME N: wait until the guest on HOST printed a seq above N
lv_wait_seq() {
	local s
	for _ in $(seq 600); do
		s=$(lv_seq "$1" "$2")
		[ "$s" -gt "$3" ] && return 0
		sleep 0.1
	done
	return 1
}

# a request id not used before (callers run in $(...), so no counter)
lv_req_id() { echo "$1$(date +%s%N).$BASHPID"; }

# lv_verify HOST NAME: the guest checks all its data; prints its verdict
# line, status 0 if it says ok
lv_verify() {
	local id l
	id=$(lv_req_id v)
	l=$(lv_request "$1" "$2" "verify $id" "^RIG verify id=$id ") || { echo "$l"; return 1; }
	echo "$l"
	case $l in *" result=ok "*) return 0 ;; esac
	return 1
}

# lv_set_rate HOST NAME MIB: the guest's dirty rate, in MiB/s, from now on
lv_set_rate() {
	local id
	id=$(lv_req_id r)
	lv_request "$1" "$2" "rate $id $3" "^RIG rate id=$id " >/dev/null
}

# lv_corrupt HOST NAME: the guest spoils one page and one file on purpose
lv_corrupt() {
	local id
	id=$(lv_req_id c)
	lv_request "$1" "$2" "corrupt $id" "^RIG corrupt id=$id "
}

# lv_migrate FROM TO NAME [virsh migrate options]: libvirt's own
# peer-to-peer live migration, FROM's libvirtd dialling TO's
lv_migrate() {
	local from=$1 to=$2 name=$3 addr
	shift 3
	if [ "$to" = A ]; then addr=$HOST_A_ADDR; else addr=$HOST_B_ADDR; fi
	lv_virsh "$from" migrate --live --p2p "$name" "qemu+tcp://$addr/system" \
		--migrateuri "tcp://$addr" "$@"
}

# lv_jobinfo HOST NAME: the last completed job's statistics, raw (key=value)
lv_jobinfo() {
	lv_virsh "$1" domjobinfo "$2" --completed --keep-completed --rawstats |
		sed -n 's/^\([a-z_.]*\): *\(.*\)$/\1=\2/p'
}

# lv_pmemsave HOST NAME FILE MEM_MIB: the guest's physical memory into FILE
# (a path seen alike from every namespace)
lv_pmemsave() {
	lv_virsh "$1" qemu-monitor-command "$2" \
		"{\"execute\":\"pmemsave\",\"arguments\":{\"val\":0,\"size\":$(($4 * 1024 * 1024)),\"filename\":\"$3\"}}" \
		>/dev/null
}

# lv_dump_logs NAME: the end of each host's logs of the domain, for a failure's story
lv_dump_logs() {
	local host f
	for host in A B; do
		for f in "$(lv_console $host "$1")" "$(lv_path $host "/var/log/libvirt/qemu/$1.log")" \
				"$LV_DIR/$host/log/libvirtd.log"; do
			[ -s "$f" ] || continue
			echo "== host $host: ${f#"$LV_DIR"/}"
			tail -n "${LV_DUMP_LINES:-8}" "$f"
		done
	done
}

# the teardown on exit, also when the test is interrupted or killed with
# SIGTERM (bash runs no EXIT trap for a signal it does not trap)
libvirt_hosts_traps() {
	trap 'libvirt_hosts_cleanup; hosts_cleanup' EXIT
	trap 'exit 129' HUP
	trap 'exit 130' INT
	trap 'exit 143' TERM
}

# for a suite: the rig's checks (SKIP with the reason where it cannot be
# built here), the trap, the hosts, the guest; FAIL where setup breaks
suite_with_libvirt_hosts() {
	local missing
	SUITE=$1
	FAILS=0
	libvirt_hosts_traps	# first: hosts.sh made HOSTS_DIR already
	# a suite that runs vmigrate's own code (LV_RUNS_VMIGRATE=1) runs in the
	# sanitized runs too: only the rig's plain-libvirt suites skip there
	if [ -n "${VMIGRATE_SKIP_LIBVIRT_RIG:-}" ] && [ "${LV_RUNS_VMIGRATE:-0}" != 1 ]; then
		echo "SKIP $SUITE: $VMIGRATE_SKIP_LIBVIRT_RIG (VMIGRATE_SKIP_LIBVIRT_RIG)"
		exit 0
	fi
	if missing=$(libvirt_hosts_missing); then
		echo "SKIP $SUITE: $missing is missing (tools/install-deps.sh)"
		exit 0
	fi
	if [ "$(id -u)" != 0 ]; then
		echo "SKIP $SUITE: needs root (namespaces, libvirtd's qemu driver)"
		exit 0
	fi
	linux_guest_build
	case $? in
	0) ;;
	1) echo "SKIP $SUITE: no Linux guest: $LINUX_GUEST_WHY"; exit 0 ;;
	*) echo "FAIL $SUITE.guest: $LINUX_GUEST_WHY"; exit 1 ;;
	esac
	hosts_setup || { echo "FAIL $SUITE.setup: cannot create the test hosts"; exit 1; }
	if [ "$USE_NETNS" != 1 ]; then
		echo "SKIP $SUITE: network namespaces cannot be made here"
		exit 0
	fi
	libvirt_hosts_setup || { echo "FAIL $SUITE.setup: cannot start the libvirt hosts"; exit 1; }
}
