#!/bin/bash
# Live-migration benchmark between two namespaced hosts (TLS and the
# default channels unless a scenario says otherwise): a 1 GiB guest with
# 400 MiB of random data (rest zero), idle and dirtying at 50, 200 and
# 1000 MiB/s; a compressible guest; the transport table (TCP/TLS, 1/2/4
# channels, compression auto/LZ4/zstd/off) over loopback and over a veth shaped
# to 1 Gbit/s (tbf). One JSON line per scenario: total time, downtime, bytes sent,
# rounds, and the effective rate in GB/s of guest RAM.
# BENCH_PART=scenarios|matrix|shaped runs one part only (default: all).
set -u
BUILD=${1:-build}
. "$(dirname "$0")/../integration/lib/hosts.sh"
trap hosts_cleanup EXIT

if [ ! -e /dev/kvm ]; then
	echo "# bench_migrate skipped: /dev/kvm is missing"
	exit 0
fi
hosts_setup || { echo "bench_migrate: cannot set up the hosts" >&2; exit 1; }
hosts_start_service A && hosts_start_service B || exit 1
REPEAT=${BENCH_MIGRATE_REPEAT:-3}
echo "# migration benchmark: 1 GiB guest, 2 vCPUs, 400 MiB working set, best of $REPEAT by total time"

# scenario NAME START-OPTIONS... -- MIGRATE-OPTIONS...
scenario() {
	local name=$1; shift
	local start=() mig=() best="" best_t=999999999 times=()
	while [ $# -gt 0 ] && [ "$1" != -- ]; do start+=("$1"); shift; done
	[ $# -gt 0 ] && shift
	mig=("$@")
	for i in $(seq "$REPEAT"); do
		vmA start bench --mem 1G --vcpus 2 --working-set 400M "${start[@]}" >/dev/null || return 1
		wait_counter vmA bench 102400 || { echo "# $name: guest did not fill"; return 1; }
		local out t
		out=$(vmA migrate bench "$HOST_B_ADDR:$HOST_B_PORT" --quiet --json "${mig[@]}")
		t=$(echo "$out" | json_field total_time_ms)
		if echo "$out" | grep -q '"status":"completed"'; then
			vmB verify bench >/dev/null || echo "# $name: verify FAILED on B"
			vmB stop bench >/dev/null
		else
			echo "# $name run $i: $out"
			vmA stop bench >/dev/null
		fi
		[ -n "$t" ] && times+=("$t")
		[ -n "$t" ] && [ "$t" -lt "$best_t" ] && { best_t=$t; best=$out; }
		sleep 0.3
	done
	# the best run's figures, with the median total of all runs beside them
	local median
	median=$(printf '%s\n' "${times[@]}" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }')
	echo "$best" | awk -v name="$name" -v median="${median:-0}" -v runs="${#times[@]}" '{
		match($0, /"total_time_ms":[0-9]+/); tt = substr($0, RSTART + 16, RLENGTH - 16);
		match($0, /"ram_total_bytes":[0-9]+/); ram = substr($0, RSTART + 18, RLENGTH - 18);
		sub(/^\{/, "");
		printf "{\"bench\":\"migrate\",\"scenario\":\"%s\",\"effective_gbs\":%.2f,\"runs\":%d,\"median_total_time_ms\":%d,%s\n",
			name, (tt > 0 ? ram / (tt / 1000) / 1e9 : 0), runs, median, $0 }'
}

scenarios_part() {
	scenario idle-random --stop-after 51200
	[ -n "${BENCH_QUICK:-}" ] && return
	scenario idle-random-1ch --stop-after 51200 -- --channels 1
	scenario dirty-50M --dirty-rate 50M
	scenario dirty-200M --dirty-rate 200M
	scenario dirty-1000M --dirty-rate 1000M -- --auto-converge --timeout 60 --on-timeout force
	scenario idle-text --content text --stop-after 51200
}

# The transport table: TCP against TLS, 1, 2 and 4 channels, compression
# auto (the default), always LZ4, zstd and off, random and compressible guests;
# side by side, one run each unless BENCH_MATRIX_REPEAT says more. $1 is
# the link, as a suffix of the scenario names ("" for plain loopback).
transport_table() {
	local link=${1:-} REPEAT=${BENCH_MATRIX_REPEAT:-1} sec content ch

	echo "# transport matrix${link:+ over ${link#-}} (idle guests, best of $REPEAT)"
	for sec in tls tcp; do
		if [ $sec = tcp ]; then
			hosts_stop_services
			hosts_start_service A "" --insecure && hosts_start_service B "" --insecure || return 1
		fi
		for content in random text; do
			for ch in 1 2 4; do
				scenario "$sec-$content-${ch}ch$link" --content $content --stop-after 51200 -- --channels $ch
			done
			scenario "$sec-$content-2ch-lz4$link" --content $content --stop-after 51200 -- --channels 2 --compress lz4
			scenario "$sec-$content-2ch-zstd$link" --content $content --stop-after 51200 -- --channels 2 --compress zstd
			scenario "$sec-$content-2ch-nolz4$link" --content $content --stop-after 51200 -- --channels 2 --compress off
		done
	done
	hosts_stop_services
	hosts_start_service A && hosts_start_service B
}

matrix_part() {
	transport_table ""
}

# The same table over a veth shaped to 1 Gbit/s (tbf).
shaped_part() {
	local ret

	if [ "$USE_NETNS" != 1 ] || ! command -v tc >/dev/null; then
		echo "# shaped-link scenarios skipped: need network namespaces and tc"
		return
	fi
	ip netns exec "$NS_A" tc qdisc add dev "va$HOSTS_TAG" root tbf rate 1gbit burst 256kb latency 50ms
	transport_table -1gbit
	ret=$?
	ip netns exec "$NS_A" tc qdisc del dev "va$HOSTS_TAG" root
	return $ret
}

PART=${BENCH_PART:-all}
for p in scenarios matrix shaped; do
	if [ "$PART" = all ] || [ "$PART" = $p ]; then
		${p}_part || exit 1
	fi
	if [ -n "${BENCH_QUICK:-}" ]; then
		break
	fi
done
