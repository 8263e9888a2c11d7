#!/bin/bash
# vmigrated as a system service: its configuration file (a key takes
# effect, the command line overrides it, an unknown key or a missing
# --config fails naming the file), one service per state directory,
# readiness, status and watchdog for systemd (a test socket in
# NOTIFY_SOCKET), log levels, timestamps and the journal's priorities, and
# the error texts an operator acts on: a plain TCP peer of a TLS service,
# a CLI without a service. On loopback; a guest only where /dev/kvm is.
# Prints one PASS/FAIL/SKIP line per case.
set -u
BUILD=${1:-build}
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib/suite.sh"
SUITE=daemon
FAILS=0
VMIGRATE=$(realpath "$BUILD/vmigrate")
VMIGRATED=$(realpath "$BUILD/vmigrated")
SINK=$here/lib/dgram_sink.py
D=$(mktemp -d /tmp/vmigrate-daemon.XXXXXX) || { echo "FAIL daemon.setup: mktemp"; exit 1; }
PIDS=

cleanup() {
	local p
	for p in $PIDS; do kill "$p" 2>/dev/null; done
	for p in $PIDS; do wait "$p" 2>/dev/null; done
	# guests started by a case: their processes outlive the service
	for p in $(cat "$D"/*/guests/*.lock 2>/dev/null); do
		[ "$(cat /proc/"$p"/comm 2>/dev/null)" = vmg:g ] && kill -9 "$p"
	done
	rm -rf "$D"
}
trap cleanup EXIT

free_port() {
	python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start NAME [ENV=V ...] -- ARGS...: vmigrated on state dir D/NAME, its
# stderr in D/NAME.log; waits for its control socket
start() {
	local name=$1 env=() i
	shift
	while [ "$1" != -- ]; do env+=("$1"); shift; done
	shift
	env "${env[@]}" "$VMIGRATED" --state-dir "$D/$name" "$@" 2>>"$D/$name.log" &
	LAST=$!
	PIDS="$PIDS $LAST"
	for i in $(seq 50); do
		[ -S "$D/$name/vmigrated.sock" ] && return 0
		kill -0 "$LAST" 2>/dev/null || break
		sleep 0.1
	done
	echo "# vmigrated $name did not start:"; cat "$D/$name.log"
	return 1
}

stop() {
	kill "$1" 2>/dev/null
	wait "$1" 2>/dev/null
}

# wait_for FILE PATTERN [SECS]: until grep finds PATTERN in FILE
wait_for() {
	local i
	for i in $(seq $((${3:-5} * 10))); do
		grep -q -- "$2" "$1" 2>/dev/null && return 0
		sleep 0.1
	done
	return 1
}

# ---- the configuration file -----------------------------------------------------

P1=$(free_port) P2=$(free_port)
cat >"$D/a.conf" <<EOF
# a comment
listen = 127.0.0.1:$P1
insecure = true
log-level = warning
EOF
if start c1 -- --config "$D/a.conf"; then
	# log-level warning from the file: the info line about listening is not there
	! grep -q "listening on" "$D/c1.log" && (exec 3<>"/dev/tcp/127.0.0.1/$P1") 2>/dev/null
	check config_key_takes_effect $? "port $P1 closed or the info line logged: $(cat "$D/c1.log")"
	stop "$LAST"
else
	check config_key_takes_effect 1 "it did not start with $D/a.conf"
fi

if start c2 -- --config "$D/a.conf" --listen "127.0.0.1:$P2" --log-level info; then
	grep -q "listening on 127.0.0.1:$P2 for peers (INSECURE" "$D/c2.log" &&
		! (exec 3<>"/dev/tcp/127.0.0.1/$P1") 2>/dev/null
	check command_line_overrides_config $? "$(cat "$D/c2.log")"
	stop "$LAST"
else
	check command_line_overrides_config 1 "it did not start"
fi

# ---- libvirt: off by the file, or not answering: the service goes on ----------

P8=$(free_port) P9=$(free_port)
printf 'listen = 127.0.0.1:%s\ninsecure = true\nlibvirt = none\n' "$P8" >"$D/lv.conf"
if start lvoff -- --config "$D/lv.conf"; then
	out=$(VMIGRATE_CONTROL="$D/lvoff/vmigrated.sock" "$VMIGRATE" list 2>&1); rc=$?
	[ $rc = 0 ] && grep -q "libvirt: off (--libvirt none)" "$D/lvoff.log" &&
		[ "$(echo "$out" | wc -l)" = 1 ] && [ ! -e "$D/lvoff/libvirt-jobs" ]
	check libvirt_none_from_config $? "rc=$rc: $out; log: $(cat "$D/lvoff.log")"
	stop "$LAST"
else
	check libvirt_none_from_config 1 "it did not start with $D/lv.conf"
fi
# a libvirt that is not there: list and info still answer, the reason is logged once
if start lvdown -- --insecure --listen "127.0.0.1:$P9" \
		--libvirt "qemu+unix:///system?socket=$D/no-libvirt.sock" \
		--libvirt-socket-dir "$D/lvdown-sockets"; then
	l1=$(VMIGRATE_CONTROL="$D/lvdown/vmigrated.sock" "$VMIGRATE" list 2>&1); r1=$?
	l2=$(VMIGRATE_CONTROL="$D/lvdown/vmigrated.sock" "$VMIGRATE" list --json 2>&1); r2=$?
	i=$(VMIGRATE_CONTROL="$D/lvdown/vmigrated.sock" "$VMIGRATE" info dom1 2>&1); r3=$?
	m=$(VMIGRATE_CONTROL="$D/lvdown/vmigrated.sock" "$VMIGRATE" migrate dom1 127.0.0.1:1 2>&1); r4=$?
	n=$(grep -c "libvirt at qemu+unix:///system?socket=$D/no-libvirt.sock: .*not served until it answers" "$D/lvdown.log")
	[ $r1 = 0 ] && [ $r2 = 0 ] && [ "$l2" = '{"ok":true,"guests":[]}' ] && [ "$n" = 1 ] &&
		[ $r3 = 1 ] && echo "$i" | grep -q "no guest named 'dom1'" &&
		[ $r4 = 1 ] && [ -d "$D/lvdown-sockets" ]
	check libvirt_unreachable_is_soft $? "list rc=$r1/$r2 '$l2'; info rc=$r3 '$i'; migrate rc=$r4 '$m'; $n log lines: $(cat "$D/lvdown.log")"
	stop "$LAST"
else
	check libvirt_unreachable_is_soft 1 "it did not start"
fi
out=$("$VMIGRATED" --insecure --libvirt-socket-dir relative/dir --state-dir "$D/c3" 2>&1); rc=$?
[ $rc = 2 ] && echo "$out" | grep -q -- "--libvirt-socket-dir: an absolute path, not 'relative/dir'"
check libvirt_socket_dir_must_be_absolute $? "rc=$rc: $out"

printf 'listen = 127.0.0.1:%s\ninsecure = true\nlisten-on = 127.0.0.1:1\n' "$P1" >"$D/bad.conf"
out=$("$VMIGRATED" --config "$D/bad.conf" --state-dir "$D/c3" 2>&1); rc=$?
[ $rc = 2 ] && echo "$out" | grep -q "$D/bad.conf:3: unknown key 'listen-on'" && [ ! -e "$D/c3" ]
check unknown_key_fails_with_file_and_line $? "rc=$rc: $out"

printf 'insecure = true\nio-timeout = soon\n' >"$D/badval.conf"
out=$("$VMIGRATED" --config "$D/badval.conf" --state-dir "$D/c3" 2>&1); rc=$?
[ $rc = 2 ] && echo "$out" | grep -q "$D/badval.conf:2: io-timeout wants milliseconds"
check bad_value_fails_with_file_and_line $? "rc=$rc: $out"

out=$("$VMIGRATED" --config "$D/missing.conf" --insecure --state-dir "$D/c3" 2>&1); rc=$?
[ $rc = 2 ] && echo "$out" | grep -q "$D/missing.conf: No such file or directory" && [ ! -e "$D/c3" ]
check missing_config_file_fails $? "rc=$rc: $out"

if [ -e /etc/vmigrate/vmigrated.conf ]; then
	echo "SKIP daemon.missing_default_config_is_fine: /etc/vmigrate/vmigrated.conf exists here"
elif start c4 -- --insecure --listen "127.0.0.1:$(free_port)"; then
	check missing_default_config_is_fine 0 ""
	stop "$LAST"
else
	check missing_default_config_is_fine 1 "it did not start without a configuration file"
fi

# ---- one service per state directory ------------------------------------------------

if start lock -- --insecure --listen "127.0.0.1:$(free_port)"; then
	first=$LAST
	ino=$(stat -c %i "$D/lock/vmigrated.sock")
	out=$("$VMIGRATED" --insecure --listen "127.0.0.1:$(free_port)" --state-dir "$D/lock" 2>&1)
	rc=$?
	[ $rc = 1 ] && echo "$out" | grep -q "already running, pid $first" &&
		[ "$(stat -c %i "$D/lock/vmigrated.sock" 2>/dev/null)" = "$ino" ] &&
		VMIGRATE_CONTROL="$D/lock/vmigrated.sock" "$VMIGRATE" list >/dev/null
	check second_service_on_a_state_dir_refused $? "rc=$rc: $out; socket: $(ls -li "$D/lock")"
	stop "$first"
	start lock -- --insecure --listen "127.0.0.1:$(free_port)"
	check state_dir_free_once_the_first_ends $? "$(tail -3 "$D/lock.log")"
	stop "$LAST"
else
	check second_service_on_a_state_dir_refused 1 "the first did not start"
fi

# ---- systemd: READY, STATUS, WATCHDOG ------------------------------------------------

P3=$(free_port)
python3 "$SINK" "$D/notify.sock" "$D/notify.out" --ready-check "$D/n/vmigrated.sock" \
	"127.0.0.1:$P3" --seconds 60 &
PIDS="$PIDS $!"
wait_for "$D/notify.out" listening
if start n NOTIFY_SOCKET="$D/notify.sock" WATCHDOG_USEC=1000000 -- --insecure \
		--listen "127.0.0.1:$P3"; then
	notifier=$LAST
	wait_for "$D/notify.out" "^STATUS=" 3
	grep -q "^READY=1" "$D/notify.out" && grep -q "ready-check control=1 peer=1" "$D/notify.out"
	check notify_ready_once_sockets_are_up $? "$(cat "$D/notify.out")"
	grep -q "^STATUS=0 guests, 0 jobs running" "$D/notify.out"
	check notify_status $? "$(cat "$D/notify.out")"
	sleep 1.5
	[ "$(grep -c '^WATCHDOG=1' "$D/notify.out")" -ge 2 ]
	check notify_watchdog $? "$(grep -c '^WATCHDOG=1' "$D/notify.out") WATCHDOG=1 in 1.5 s"
	if [ -e /dev/kvm ]; then
		VMIGRATE_CONTROL="$D/n/vmigrated.sock" "$VMIGRATE" start g --mem 64M \
			--working-set 8M >/dev/null
		wait_for "$D/notify.out" "^STATUS=1 guest, 0 jobs running" 5
		check notify_status_counts_guests $? "$(grep STATUS "$D/notify.out")"
		# a request to a guest that does not answer keeps the service
		# waiting (10 s); it still gives signs of life meanwhile
		gpid=$(cat "$D/n/guests/g.lock")
		kill -STOP "$gpid"
		VMIGRATE_CONTROL="$D/n/vmigrated.sock" timeout 5 "$VMIGRATE" info g >/dev/null 2>&1 &
		asking=$!
		sleep 0.5
		w0=$(grep -c '^WATCHDOG=1' "$D/notify.out")
		sleep 3
		w1=$(grep -c '^WATCHDOG=1' "$D/notify.out")
		kill -CONT "$gpid"
		wait "$asking"
		[ $((w1 - w0)) -ge 2 ]
		check notify_watchdog_while_waiting_for_a_guest $? "$((w1 - w0)) WATCHDOG=1 in 3 s"
		VMIGRATE_CONTROL="$D/n/vmigrated.sock" "$VMIGRATE" stop g >/dev/null
	else
		echo "SKIP daemon.notify_status_counts_guests: /dev/kvm is missing (no guest)"
	fi
	stop "$notifier"
	grep -q "^STOPPING=1" "$D/notify.out"
	check notify_stopping $? "$(tail -5 "$D/notify.out")"
else
	check notify_ready_once_sockets_are_up 1 "it did not start"
fi

# ---- logs: levels, timestamps, the journal ----------------------------------------------

# a peer that says something that is no hello: a warning, logged
poke() {
	(exec 3<>"/dev/tcp/127.0.0.1/$1" && echo "not a hello" >&3 && sleep 0.3) 2>/dev/null
}

P4=$(free_port)
if start lv -- --insecure --listen "127.0.0.1:$P4" --log-level warning; then
	poke "$P4"
	wait_for "$D/lv.log" "refused an incoming migration" 3
	grep -q "warning: refused an incoming migration" "$D/lv.log" && ! grep -q " info: " "$D/lv.log"
	check log_level_filters $? "$(cat "$D/lv.log")"
	stop "$LAST"
else
	check log_level_filters 1 "it did not start"
fi

# to a file: a timestamp, the pid and the level; to a pipe: no timestamp
stamp='^[0-9]\{4\}-[0-9][0-9]-[0-9][0-9] [0-9][0-9]:[0-9][0-9]:[0-9][0-9]\.[0-9]\{3\} vmigrated\[[0-9]*\] info: listening on'
if start ts -- --insecure --listen "127.0.0.1:$(free_port)"; then
	grep -q "$stamp" "$D/ts.log"
	check log_lines_stamped_in_a_file $? "$(cat "$D/ts.log")"
	stop "$LAST"
fi
P5=$(free_port)
("$VMIGRATED" --insecure --listen "127.0.0.1:$P5" --state-dir "$D/pipe" 2>&1 &
 echo $! >"$D/pipe.pid"; wait) | cat >"$D/pipe.log" &
PIDS="$PIDS $!"
wait_for "$D/pipe.log" "listening on" 3
stop "$(cat "$D/pipe.pid")"
grep -q "^vmigrated\[[0-9]*\] info: listening on" "$D/pipe.log"
check log_lines_to_a_pipe_unstamped $? "$(cat "$D/pipe.log")"

# Under systemd (JOURNAL_STREAM names stderr): native journal entries with
# PRIORITY, GUEST and JOB; where the journal takes none, "<N>" prefixes.
# Run in a mount namespace of its own, over an empty /run, so the journal
# socket is ours (or absent) whatever runs on this machine.
if [ "$(id -u)" = 0 ] && unshare -m true 2>/dev/null; then
	P6=$(free_port)
	: >"$D/jp.log"
	unshare -m bash -c '
		mount -t tmpfs tmpfs /run || exit 1
		exec 2>>"$1"
		export JOURNAL_STREAM=$(stat -c %d:%i "$1")
		exec "$2" --insecure --listen "127.0.0.1:$3" --state-dir "$4"
	' _ "$D/jp.log" "$VMIGRATED" "$P6" "$D/jp" &
	jp=$!
	PIDS="$PIDS $jp"
	wait_for "$D/jp.log" "listening on" 3
	poke "$P6"
	wait_for "$D/jp.log" "refused an incoming" 3
	stop "$jp"
	grep -q "^<6>listening on 127.0.0.1:$P6" "$D/jp.log" &&
		grep -q "^<4>refused an incoming migration" "$D/jp.log" &&
		! grep -q "^[^<]" "$D/jp.log"
	check journal_priority_prefix_without_journald $? "$(cat "$D/jp.log")"

	if [ -e /dev/kvm ]; then
		P7=$(free_port)
		: >"$D/js.log"
		unshare -m bash -c '
			mount -t tmpfs tmpfs /run && mkdir -p /run/systemd/journal || exit 1
			python3 "$5" /run/systemd/journal/socket "$6" --journal --seconds 60 &
			echo $! >"$7"
			for i in $(seq 50); do [ -S /run/systemd/journal/socket ] && break; sleep 0.1; done
			exec 2>>"$1"
			export JOURNAL_STREAM=$(stat -c %d:%i "$1")
			exec "$2" --insecure --listen "127.0.0.1:$3" --state-dir "$4"
		' _ "$D/js.log" "$VMIGRATED" "$P7" "$D/js" "$SINK" "$D/journal.out" \
			"$D/journal-sink.pid" &
		js=$!
		PIDS="$PIDS $js"
		for _ in $(seq 50); do [ -S "$D/js/vmigrated.sock" ] && break; sleep 0.1; done
		VMIGRATE_CONTROL="$D/js/vmigrated.sock" "$VMIGRATE" start g --mem 64M \
			--working-set 8M >/dev/null
		wait_for "$D/journal.out" "^MESSAGE=guest g started" 3
		VMIGRATE_CONTROL="$D/js/vmigrated.sock" "$VMIGRATE" stop g >/dev/null
		stop "$js"
		kill "$(cat "$D/journal-sink.pid")" 2>/dev/null
		# the entry of the guest's start: its message, priority and fields
		entry=$(awk -v RS= '/MESSAGE=guest g started/' "$D/journal.out")
		echo "$entry" | grep -q "^PRIORITY=6$" && echo "$entry" | grep -q "^GUEST=g$" &&
			echo "$entry" | grep -q "^SYSLOG_IDENTIFIER=vmigrated$" &&
			grep -q "^MESSAGE=listening on 127.0.0.1:$P7" "$D/journal.out" &&
			! grep -q "listening on" "$D/js.log"
		check journal_entries_with_fields $? "entry: $entry; stderr: $(cat "$D/js.log")"
	else
		echo "SKIP daemon.journal_entries_with_fields: /dev/kvm is missing (no guest)"
	fi
else
	echo "SKIP daemon.journal_priority_prefix_without_journald: needs root and unshare -m"
	echo "SKIP daemon.journal_entries_with_fields: needs root and unshare -m"
fi

# ---- errors an operator can act on ----------------------------------------------------

if command -v openssl >/dev/null; then
	"$here/../../tools/mkcerts.sh" "$D/pki" hostA 127.0.0.1 >/dev/null 2>&1
	P8=$(free_port)
	if start tls -- --tls-dir "$D/pki/hostA" --listen "127.0.0.1:$P8"; then
		poke "$P8"
		wait_for "$D/tls.log" "refused an incoming" 3
		grep -q "the peer speaks plain TCP (is it --insecure?)" "$D/tls.log" &&
			! grep -q "wrong version number" "$D/tls.log"
		check plain_tcp_peer_of_a_tls_service $? "$(cat "$D/tls.log")"
		stop "$LAST"
	else
		check plain_tcp_peer_of_a_tls_service 1 "the TLS service did not start"
	fi
else
	echo "SKIP daemon.plain_tcp_peer_of_a_tls_service: openssl is missing (no certificates)"
fi

out=$(VMIGRATE_CONTROL="$D/nowhere.sock" "$VMIGRATE" list 2>&1); rc=$?
[ $rc = 1 ] && echo "$out" | grep -q "vmigrated is not running (no socket at $D/nowhere.sock)"
check cli_without_a_service $? "rc=$rc: $out"
: >"$D/plain-file"
out=$(VMIGRATE_CONTROL="$D/plain-file" "$VMIGRATE" list 2>&1); rc=$?
[ $rc = 1 ] && echo "$out" | grep -q "control socket $D/plain-file is not a socket"
check cli_control_path_not_a_socket $? "rc=$rc: $out"
python3 -c 'import socket, sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])' "$D/stale.sock"
out=$(VMIGRATE_CONTROL="$D/stale.sock" "$VMIGRATE" list 2>&1); rc=$?
[ $rc = 1 ] && echo "$out" | grep -q "vmigrated is not running (nothing listens on $D/stale.sock"
check cli_stale_control_socket $? "rc=$rc: $out"

# ---- the unit ----------------------------------------------------------------------------

unit=$here/../../tools/systemd/vmigrated.service
grep -q "^Type=notify$" "$unit" && grep -q "^WatchdogSec=" "$unit" &&
	grep -q "/etc/vmigrate/pki/NAME" "$unit" && grep -q "/etc/vmigrate/pki/" "$here/../../README.md"
check unit_is_notify_and_agrees_with_readme $? "$(grep -n 'Type\|Watchdog\|pki' "$unit")"
if command -v systemd-analyze >/dev/null; then
	mkdir -p "$D/units" && cp "$unit" "$D/units/"
	out=$(cd "$D/units" && systemd-analyze verify vmigrated.service 2>&1 |
		grep -v "is not executable: No such file")
	[ -z "$out" ]
	check unit_verifies $? "$out"
else
	echo "SKIP daemon.unit_verifies: systemd-analyze is not installed"
fi
suite_end
