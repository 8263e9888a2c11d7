#!/bin/bash
# libvirt guests side by side: libvirt's own peer-to-peer live migration
# (path plain-libvirt) and the same migration through vmigrate (path
# vmigrate: libvirt runs the job, QEMU's stream goes through a vmigrated on
# each host over TLS) of the rig's Linux guest under TCG (lib/libvirt_hosts.sh,
# lib/linux_guest.sh) between the two namespaced hosts, over the plain veth
# and over the veth shaped to 1 Gbit/s (tbf on both ends), the guest idle
# and dirtying. Through vmigrate QEMU's pages cross as vmigrate's records
# (LZ4 chosen by measurement: --compress auto). The paths alternate run by
# run, and a few GiB are touched before each run (PERF-FACTS.md). The guest has realistic
# memory: real files in its page cache, text, random bytes, a working set.
# One JSON line per scenario: total time and downtime as libvirt reports
# them (domjobinfo --completed), QEMU's bytes sent (data_processed), the
# bytes that crossed the veth, and the wall time of `virsh migrate`, each
# as median, min and max over BENCH_LIBVIRT_REPEAT runs (default 3). The
# guest checks all its data after every run; a failed run or check fails
# the benchmark.
# Knobs: BENCH_LIBVIRT_MEM (MiB, default 512), BENCH_LIBVIRT_DIRTY (MiB/s,
# default 16), BENCH_LIBVIRT_REPEAT, BENCH_LIBVIRT_PATHS (default
# "plain-libvirt vmigrate vmigrate-tcp"; a vmigrate path is "vmigrate"
# and any of these suffixes in this order: "-tcp" for plain TCP between
# the services (a second vmigrated on each host, started --insecure, beside
# the TLS one), "-lz4", "-zstd" or "-off" for --compress lz4, zstd or off,
# "-chN" for --channels N; e.g. vmigrate-tcp-zstd-ch0), BENCH_LIBVIRT_WARM_MIB (memory touched before
# each run, default 2048), BENCH_LIBVIRT_LINKS (default "veth veth-1gbit"),
# BENCH_LIBVIRT_RANDOM_MIB (the guest's random bytes, default a quarter of
# its memory; 0 for a compressible guest).
set -u
BUILD=${1:-build}
here=$(dirname "$0")/../integration/lib
. "$here/hosts.sh"
. "$here/linux_guest.sh"
. "$here/libvirt_hosts.sh"

MEM=${BENCH_LIBVIRT_MEM:-512}
DIRTY=${BENCH_LIBVIRT_DIRTY:-16}
REPEAT=${BENCH_LIBVIRT_REPEAT:-3}
PATHS=${BENCH_LIBVIRT_PATHS:-plain-libvirt vmigrate vmigrate-tcp}
WARM_MIB=${BENCH_LIBVIRT_WARM_MIB:-2048}
LINKS=${BENCH_LIBVIRT_LINKS:-veth veth-1gbit}
RANDOM_MIB=${BENCH_LIBVIRT_RANDOM_MIB:-$((MEM / 4))}
G=bench
libvirt_hosts_traps	# first: hosts.sh made HOSTS_DIR already
if missing=$(libvirt_hosts_missing); then
	echo "# bench_libvirt skipped: $missing is missing (tools/install-deps.sh)"
	exit 0
fi
linux_guest_build
case $? in
0) ;;
1) echo "# bench_libvirt skipped: no Linux guest: $LINUX_GUEST_WHY"; exit 0 ;;
*) echo "bench_libvirt: $LINUX_GUEST_WHY" >&2; exit 1 ;;
esac
hosts_setup && [ "$USE_NETNS" = 1 ] && libvirt_hosts_setup ||
	{ echo "bench_libvirt: cannot set up the libvirt hosts" >&2; exit 1; }
case " $PATHS " in
*" vmigrate"*) lv_start_service A && lv_start_service B ||
	{ echo "bench_libvirt: cannot start vmigrated beside libvirtd" >&2; exit 1; } ;;
esac
# plain TCP: a second service on each host, on the next port, --insecure
TCP_PIDS=
start_tcp_service() {
	local host=$1 dir=$HOSTS_DIR/$1-tcp addr port
	if [ "$host" = A ]; then addr=$HOST_A_ADDR port=$((HOST_A_PORT + 1))
	else addr=$HOST_B_ADDR port=$((HOST_B_PORT + 1)); fi
	mkdir -p "$dir"
	nsenter -t "$(lv_var LV_HOLDER "$host")" -m -u -n -- "$VMIGRATED" --state-dir "$dir" \
		--listen "$addr:$port" --insecure --libvirt qemu:///system >>"$dir/service.log" 2>&1 &
	TCP_PIDS="$TCP_PIDS $!"
	for _ in $(seq 50); do [ -S "$dir/vmigrated.sock" ] && return 0; sleep 0.1; done
	echo "# plain-TCP service $host did not start:"; sed 's/^/#   /' "$dir/service.log"
	return 1
}
stop_tcp_services() {
	local p
	for p in $TCP_PIDS; do kill "$p" 2>/dev/null; done
	for p in $TCP_PIDS; do wait "$p" 2>/dev/null; done
	TCP_PIDS=
}
trap 'stop_tcp_services; libvirt_hosts_cleanup; hosts_cleanup' EXIT
case " $PATHS " in
*" vmigrate-tcp"*) start_tcp_service A && start_tcp_service B ||
	{ echo "bench_libvirt: cannot start the plain-TCP vmigrated" >&2; exit 1; } ;;
esac

# a quarter of the guest random, a quarter text, an eighth the working set
# (and the initramfs's $LINUX_GUEST_FILES_MIB MiB of real files)
lv_start_guest A $G "$MEM" "$(linux_guest_cmdline "$RANDOM_MIB" $((MEM / 4)) $((MEM / 8)) 0)" &&
	filled=$(lv_wait_line A $G '^RIG (filled|fatal)' 1800) && lv_wait_seq A $G 1 ||
	{ echo "bench_libvirt: the guest did not come up: ${filled:-}" >&2; exit 1; }
echo "# libvirt p2p live migration ($PATHS), ${MEM} MiB TCG guest ($filled), $REPEAT runs a scenario, back and forth"

AT=A
failed=0

# rx+tx bytes of host X's veth end
veth_bytes() {
	local ns dev
	if [ "$1" = A ]; then ns=$NS_A dev=va$HOSTS_TAG; else ns=$NS_B dev=vb$HOSTS_TAG; fi
	ip -n "$ns" -s -j link show "$dev" |
		python3 -c 'import json,sys; s=json.load(sys.stdin)[0]["stats64"]; print(s["tx"]["bytes"] + s["rx"]["bytes"])'
}

# median min max of the numbers on stdin, as JSON
stats() {
	sort -n | awk '{ v[NR] = $1 } END {
		if (NR == 0) { printf "null"; exit }
		printf "{\"median\":%d,\"min\":%d,\"max\":%d}", v[int((NR + 1) / 2)], v[1], v[NR] }'
}

# one migration FROM -> TO by PATH
migrate_by() {
	local path=$1 from=$2 to=$3 addr port uri
	if [ "$path" = plain-libvirt ]; then
		lv_migrate "$from" "$to" $G
		return
	fi
	local ctl=$HOSTS_DIR/$from/vmigrated.sock opts=() rest=${path#vmigrate}
	if [ "$to" = A ]; then addr=$HOST_A_ADDR port=$HOST_A_PORT uri=$LV_URI_A
	else addr=$HOST_B_ADDR port=$HOST_B_PORT uri=$LV_URI_B; fi
	case $rest in -tcp*) ctl=$HOSTS_DIR/$from-tcp/vmigrated.sock port=$((port + 1)) rest=${rest#-tcp} ;; esac
	case $rest in -zstd*) opts+=(--compress zstd) rest=${rest#-zstd} ;;
		-lz4*|-off*) opts+=(--compress "${rest:1:3}") rest=${rest:4} ;; esac
	case $rest in -ch[0-9]*) opts+=(--channels "${rest#-ch}") rest= ;; esac
	[ -z "$rest" ] || { echo "bench_libvirt: no such path: $path" >&2; return 1; }
	VMIGRATE_CONTROL=$ctl "$VMIGRATE" migrate $G "$addr:$port" --libvirt-dest "$uri" "${opts[@]}" --quiet
}

# memory freed a while ago is slow to touch again (PERF-FACTS.md): touch
# and free some before every timed run, for every contender alike
warm_memory() {
	python3 -c "b = bytes([1]) * ($WARM_MIB << 20)"
}

# scenario LINK NAME RATE: REPEAT alternations of the paths (each run from
# where the guest is to the other host), then a JSON line a path
scenario() {
	local link=$1 name=$2 rate=$3 path to i t0 t1 w0 job out v
	declare -A tt=() dt=() db=() wb=() wall=()
	lv_set_rate $AT $G "$rate" || { echo "# $name: cannot set the dirty rate"; failed=1; return; }
	lv_wait_seq $AT $G $(($(lv_seq $AT $G) + 1))
	for i in $(seq "$REPEAT"); do
		for path in $PATHS; do
			if [ $AT = A ]; then to=B; else to=A; fi
			warm_memory
			w0=$(veth_bytes $AT)
			t0=$(date +%s%N)
			out=$(migrate_by "$path" $AT $to 2>&1) ||
				{ echo "# $path/$link/$name run $i: $out"; failed=1; return; }
			t1=$(date +%s%N)
			wb[$path]+=" $(($(veth_bytes $AT) - w0))"
			AT=$to
			job=$(lv_jobinfo $AT $G)
			tt[$path]+=" $(echo "$job" | sed -n 's/^time_elapsed=//p')"
			dt[$path]+=" $(echo "$job" | sed -n 's/^downtime=//p')"
			db[$path]+=" $(echo "$job" | sed -n 's/^data_processed=//p')"
			wall[$path]+=" $(((t1 - t0) / 1000000))"
			if ! v=$(lv_verify $AT $G); then
				echo "# $link/$name run $i: check on $AT FAILED: $v"
				lv_dump_logs "$G" | sed 's/^/#   /'
				failed=1
				return
			fi
			echo "# $path/$link/$name run $i -> $AT: total ${tt[$path]##* } ms, downtime ${dt[$path]##* } ms, data ${db[$path]##* } B, wire ${wb[$path]##* } B, wall ${wall[$path]##* } ms"
		done
	done
	for path in $PATHS; do
		printf '{"bench":"libvirt","path":"%s","link":"%s","scenario":"%s","mem_mib":%d,"dirty_mib_s":%d,"runs":%d,"total_time_ms":%s,"downtime_ms":%s,"data_bytes":%s,"wire_bytes":%s,"wall_ms":%s}\n' \
			"$path" "$link" "$name" "$MEM" "$rate" "$REPEAT" \
			"$(printf '%s\n' ${tt[$path]} | stats)" "$(printf '%s\n' ${dt[$path]} | stats)" \
			"$(printf '%s\n' ${db[$path]} | stats)" "$(printf '%s\n' ${wb[$path]} | stats)" \
			"$(printf '%s\n' ${wall[$path]} | stats)"
	done
}

link_part() {
	scenario "$1" idle 0
	scenario "$1" "dirty-${DIRTY}M" "$DIRTY"
}

case " $LINKS " in *" veth "*) link_part veth ;; esac
case " $LINKS " in *" veth-1gbit "*) ;; *) exit $failed ;; esac
if command -v tc >/dev/null &&
		ip netns exec "$NS_A" tc qdisc add dev "va$HOSTS_TAG" root tbf rate 1gbit burst 256kb latency 50ms &&
		ip netns exec "$NS_B" tc qdisc add dev "vb$HOSTS_TAG" root tbf rate 1gbit burst 256kb latency 50ms; then
	link_part veth-1gbit
	ip netns exec "$NS_A" tc qdisc del dev "va$HOSTS_TAG" root
	ip netns exec "$NS_B" tc qdisc del dev "vb$HOSTS_TAG" root
else
	echo "# shaped-link scenarios skipped: tc cannot add a tbf qdisc here"
fi
exit $failed
