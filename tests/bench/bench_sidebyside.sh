#!/bin/bash
# Side by side (issue 15): the same idle 1 GiB guest holding 400 MiB of
# random data (the rest zero) moved between two namespaced hosts by
#   qemu   QEMU with KVM and multifd (2 channels): a paused guest
#          (-S) whose RAM is a private mapping of a file with those bytes,
#          into a second QEMU with -incoming; figures from query-migrate
#   tcp    vmigrate, plain TCP (--insecure services), 2 channels
#   tls    vmigrate, TLS (the default), 2 channels
# alternated BENCH_SBS_REPEAT times (at least 5), each run preceded by the
# same warm-up: 3 GiB touched and freed (this machine is a VM whose freed
# memory goes back to the hypervisor; see PERF-FACTS.md). One JSON line a
# run, then the median and range of each contender and the ratio line.
# Every figure is the contender's own total time (query-migrate total-time,
# vmigrate's total_time_ms), measured here, nothing assumed.
# A/B of a change: BENCH_SBS_BASE=DIR (the build directory of another
# version, with vmigrate and vmigrated) adds "tcp-base", that version on
# plain TCP, alternated with the others; BENCH_SBS_DIRTY=RATE makes every
# vmigrate guest dirty at RATE (downtime); BENCH_SBS_ONLY="tcp tcp-base"
# picks contenders.
set -u
BUILD=${1:-build}
REPEAT=${BENCH_SBS_REPEAT:-5}
[ "$REPEAT" -lt 5 ] && REPEAT=5
CHANNELS=${BENCH_SBS_CHANNELS:-2}
QMP="python3 $(dirname "$0")/../integration/lib/qmp.py"

if [ ! -e /dev/kvm ]; then
	echo "# bench_sidebyside skipped: /dev/kvm is missing"
	exit 0
fi
if ! command -v qemu-system-x86_64 >/dev/null; then
	echo "# bench_sidebyside skipped: qemu-system-x86_64 is missing (Debian package qemu-system-x86, tools/install-deps.sh)"
	exit 0
fi

. "$(dirname "$0")/../integration/lib/hosts.sh"
QEMU_PIDS=()
sbs_cleanup() {
	local p
	for p in "${QEMU_PIDS[@]}" "${TCP_PIDS[@]}"; do kill "$p" 2>/dev/null; done
	for p in "${QEMU_PIDS[@]}" "${TCP_PIDS[@]}"; do wait "$p" 2>/dev/null; done
	if [ -n "${BENCH_SBS_LOGS:-}" ]; then	# keep the services' logs (with VMIGRATE_DEBUG=1: switchovers)
		mkdir -p "$BENCH_SBS_LOGS"
		for d in "$HOSTS_DIR"/*/; do
			[ -e "$d/service.log" ] && cp "$d/service.log" "$BENCH_SBS_LOGS/$(basename "$d").log"
		done
	fi
	hosts_cleanup
}
trap sbs_cleanup EXIT

hosts_setup || { echo "bench_sidebyside: cannot set up the hosts" >&2; exit 1; }
MEM=$HOSTS_DIR/qemu-ram.img
# the same content as the vmigrate guest: 400 MiB random, the rest zero
head -c $((400 << 20)) /dev/urandom >"$MEM" && truncate -s 1G "$MEM" || exit 1
# Written back now, not under the first runs: the destination's handover
# record is fsynced in the downtime, and ext4 makes that wait for this.
sync

warm_up() { python3 -c "b = bytes([1]) * (3 << 30)"; }

in_ns() {	# in_ns A|B CMD...: run in host A's or B's namespace
	local ns
	if [ "$USE_NETNS" = 1 ]; then
		ns=$(hosts_ns "$1"); shift
		ip netns exec "$ns" "$@"
	else
		shift
		"$@"
	fi
}

# Can QEMU run a paused guest under KVM here at all?
qemu_probe() {
	local out
	out=$(timeout 20 qemu-system-x86_64 -accel kvm -m 64 -S -nodefaults -display none \
		-qmp stdio 2>&1 <<<'{"execute":"qmp_capabilities"}
{"execute":"quit"}')
	echo "$out" | grep -q '"return"'
}
QEMU_OK=1
if ! qemu_probe; then
	echo "# bench_sidebyside: qemu contender skipped: qemu-system-x86_64 -accel kvm does not start a paused guest here"
	QEMU_OK=0
fi

QPORT=47600
qemu_run() {	# one QEMU migration; prints its query-migrate reply
	local dir=$HOSTS_DIR/q caps out dpid spid
	mkdir -p "$dir"; rm -f "$dir"/*.qmp
	caps='{"execute":"migrate-set-capabilities","arguments":{"capabilities":[{"capability":"multifd","state":true}]}}'
	in_ns B qemu-system-x86_64 -accel kvm -m 1024 -S -nodefaults -display none \
		-object memory-backend-ram,id=m,size=1G -machine memory-backend=m \
		-qmp "unix:$dir/d.qmp,server=on,wait=off" -incoming defer </dev/null >>"$dir/d.log" 2>&1 &
	dpid=$!
	in_ns A qemu-system-x86_64 -accel kvm -m 1024 -S -nodefaults -display none \
		-object "memory-backend-file,id=m,size=1G,mem-path=$MEM,share=off" -machine memory-backend=m \
		-qmp "unix:$dir/s.qmp,server=on,wait=off" </dev/null >>"$dir/s.log" 2>&1 &
	spid=$!
	QEMU_PIDS=("$dpid" "$spid")
	QPORT=$((QPORT + 1))
	$QMP "$dir/d.qmp" "$caps" \
		"{\"execute\":\"migrate-set-parameters\",\"arguments\":{\"multifd-channels\":$CHANNELS}}" \
		"{\"execute\":\"migrate-incoming\",\"arguments\":{\"uri\":\"tcp:$HOST_B_ADDR:$QPORT\"}}" >/dev/null &&
	$QMP "$dir/s.qmp" "$caps" \
		"{\"execute\":\"migrate-set-parameters\",\"arguments\":{\"multifd-channels\":$CHANNELS,\"max-bandwidth\":1099511627776,\"downtime-limit\":300}}" \
		>/dev/null || { echo '{"status":"setup-failed"}'; return; }
	warm_up
	out=$($QMP "$dir/s.qmp" --wait-migration 120 \
		"{\"execute\":\"migrate\",\"arguments\":{\"uri\":\"tcp:$HOST_B_ADDR:$QPORT\"}}" 2>&1)
	echo "$out" | python3 -c 'import json,sys; r=json.loads(sys.stdin.read())[-1]; print(json.dumps(r, separators=(",", ":")))' 2>/dev/null ||
		echo '{"status":"qmp-failed"}'
	kill "$spid" "$dpid" 2>/dev/null; wait "$spid" "$dpid" 2>/dev/null
	QEMU_PIDS=()
}

# Two pairs of services, started once, so that the contenders alternate
# without restarts: TLS (the default) on the hosts' usual port, plain TCP
# (--insecure) on the next port with state directories of their own.
TCP_PORT=$((HOST_A_PORT + 10))
BASE_PORT=$((HOST_A_PORT + 20))
TCP_PIDS=()
start_tcp_service() {	# start_tcp_service A|B [SUFFIX PORT VMIGRATED]
	local dir=$HOSTS_DIR/$1${2:--tcp} addr
	if [ "$1" = A ]; then addr=$HOST_A_ADDR; else addr=$HOST_B_ADDR; fi
	mkdir -p "$dir"
	in_ns "$1" "${4:-$VMIGRATED}" --state-dir "$dir" --listen "$addr:${3:-$TCP_PORT}" --insecure \
		>>"$dir/service.log" 2>&1 &
	TCP_PIDS+=($!)
	for _ in $(seq 50); do [ -S "$dir/vmigrated.sock" ] && return 0; sleep 0.1; done
	echo "# tcp service $1 did not start:"; cat "$dir/service.log"
	return 1
}
cli() {	# cli A|B|A-tcp|B-tcp|A-base|B-base ARGS
	local bin=$VMIGRATE
	case $1 in *-base) bin=$BASE_VMIGRATE ;; esac
	VMIGRATE_CONTROL="$HOSTS_DIR/$1/vmigrated.sock" "$bin" "${@:2}"
}
CONTENDERS=${BENCH_SBS_ONLY:-qemu tcp tls}
hosts_start_service A && hosts_start_service B || exit 1
start_tcp_service A && start_tcp_service B || exit 1
if [ -n "${BENCH_SBS_BASE:-}" ]; then
	BASE_VMIGRATE=$(realpath "$BENCH_SBS_BASE/vmigrate")
	start_tcp_service A -base "$BASE_PORT" "$(realpath "$BENCH_SBS_BASE/vmigrated")" &&
		start_tcp_service B -base "$BASE_PORT" "$(realpath "$BENCH_SBS_BASE/vmigrated")" || exit 1
	[ -n "${BENCH_SBS_ONLY:-}" ] || CONTENDERS="$CONTENDERS tcp-base"
fi

vmig_run() {	# one vmigrate migration in mode tcp|tls; prints its JSON
	local out sfx="" port=$HOST_B_PORT src dst
	[ "$1" = tcp ] && { sfx=-tcp; port=$TCP_PORT; }
	[ "$1" = tcp-base ] && { sfx=-base; port=$BASE_PORT; }
	src=A$sfx dst=B$sfx
	if [ -n "${BENCH_SBS_DIRTY:-}" ]; then
		set -- --dirty-rate "$BENCH_SBS_DIRTY"
	else
		set -- --stop-after 51200
	fi
	cli "$src" start bench --mem 1G --vcpus 2 --working-set 400M "$@" >/dev/null ||
		{ echo '{"status":"start-failed"}'; return; }
	wait_counter "cli $src" bench 102400 ||
		{ echo '{"status":"fill-failed"}'; cli "$src" stop bench >/dev/null; return; }
	warm_up
	out=$(cli "$src" migrate bench "$HOST_B_ADDR:$port" --quiet --json --channels "$CHANNELS")
	if echo "$out" | grep -q '"status":"completed"'; then
		cli "$dst" verify bench >/dev/null || out="{\"status\":\"verify-failed\"}"
		cli "$dst" stop bench >/dev/null
	else
		cli "$src" stop bench >/dev/null
	fi
	echo "$out"
}

declare -A TIMES DOWNS
echo "# side by side: idle 1 GiB guest, 400 MiB random, $CHANNELS channels, $REPEAT alternations, 3 GiB touched and freed before each run"
for i in $(seq "$REPEAT"); do
	for c in $CONTENDERS; do
		case $c in
		qemu) [ "$QEMU_OK" = 1 ] || continue
		      out=$(qemu_run)
		      t=$(echo "$out" | sed -n 's/.*"total-time":\([0-9]*\).*/\1/p')
		      d=$(echo "$out" | sed -n 's/.*"downtime":\([0-9]*\).*/\1/p')
		      echo "$out" | grep -q '"status":"completed"' || t= ;;
		*)    out=$(vmig_run $c)
		      t=$(echo "$out" | json_field total_time_ms)
		      d=$(echo "$out" | json_field downtime_ms)
		      echo "$out" | grep -q '"status":"completed"' || t= ;;
		esac
		if [ -z "$t" ]; then
			echo "# $c run $i failed: $(echo "$out" | head -c 400)"
			continue
		fi
		TIMES[$c]="${TIMES[$c]:-} $t"
		[ -n "$d" ] && DOWNS[$c]="${DOWNS[$c]:-} $d"
		echo "{\"bench\":\"sidebyside\",\"contender\":\"$c\",\"run\":$i,\"total_time_ms\":$t,\"downtime_ms\":${d:-null}}"
	done
done

stat() {	# stat LIST: "median min max n"
	printf '%s\n' $1 | sort -n | awk '{ v[NR] = $1 } END {
		if (NR == 0) { print "0 0 0 0"; exit }
		m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
		print m, v[1], v[NR], NR }'
}
declare -A MED DT
for c in $CONTENDERS; do
	[ -n "${TIMES[$c]:-}" ] || continue
	read -r m lo hi n <<<"$(stat "${TIMES[$c]}")"
	MED[$c]=$m
	read -r dm dlo dhi _ <<<"$(stat "${DOWNS[$c]:-}")"
	echo "{\"bench\":\"sidebyside\",\"contender\":\"$c\",\"runs\":$n,\"median_ms\":$m,\"min_ms\":$lo,\"max_ms\":$hi,\"downtime_median_ms\":$dm,\"downtime_min_ms\":$dlo,\"downtime_max_ms\":$dhi}"
done
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'; }
line="# ratio:"
[ -n "${MED[qemu]:-}" ] && [ -n "${MED[tcp]:-}" ] && line="$line qemu/tcp $(ratio "${MED[qemu]}" "${MED[tcp]}")x"
[ -n "${MED[qemu]:-}" ] && [ -n "${MED[tls]:-}" ] && line="$line qemu/tls $(ratio "${MED[qemu]}" "${MED[tls]}")x"
[ -n "${MED[tcp]:-}" ] && [ -n "${MED[tls]:-}" ] && line="$line tls-rate/tcp-rate $(ratio "${MED[tcp]}" "${MED[tls]}")"
[ -n "${MED[tcp-base]:-}" ] && [ -n "${MED[tcp]:-}" ] && line="$line tcp-base/tcp $(ratio "${MED[tcp-base]}" "${MED[tcp]}")x"
echo "$line (medians; >1 means the second is faster)"
