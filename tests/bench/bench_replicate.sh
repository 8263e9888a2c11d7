#!/bin/bash
# Replication benchmark between two namespaced hosts (TLS, no arbiter): a
# 1 GiB guest with a 400 MiB working set dirtying 10, 50 and 200 MiB/s.
# For each rate, alternating runs with and without replication (memory
# touched and freed before each, PERF-FACTS.md): the guest's own progress
# rate over the same window both ways (slowdown), and, replicated, epochs
# per second, pause per epoch p50/p99, bytes per epoch and lag, as JSON
# lines. BENCH_REPL_SECONDS (default 5) per run, BENCH_REPL_REPEAT runs
# of each (default 3); medians and ranges are printed.
set -u
BUILD=${1:-build}
. "$(dirname "$0")/../integration/lib/hosts.sh"
trap hosts_cleanup EXIT

if [ ! -e /dev/kvm ]; then
	echo "# bench_replicate skipped: /dev/kvm is missing"
	exit 0
fi
hosts_setup || { echo "bench_replicate: cannot set up the hosts" >&2; exit 1; }
hosts_start_service A && hosts_start_service B || exit 1
SECS=${BENCH_REPL_SECONDS:-5}
REPEAT=${BENCH_REPL_REPEAT:-3}
echo "# replication benchmark: 1 GiB guest, 2 vCPUs, 400 MiB working set, $SECS s a run, $REPEAT runs each way"

even_out_memory() { python3 -c "b = bytes([1]) * (3 << 30)"; }

# the guest's page writes per second over SECS, optionally replicated
run_once() {
	local rate=$1 repl=$2 c1 c2 t1 t2 st=
	vmA start bench --mem 1G --vcpus 2 --working-set 400M --dirty-rate "$rate" >/dev/null || return 1
	wait_counter vmA bench 102400 || return 1
	if [ "$repl" = 1 ]; then
		vmA replicate bench "$HOST_B_ADDR:$HOST_B_PORT" >/dev/null 2>&1 || {
			echo "# replicate failed at $rate"; vmA stop bench >/dev/null; return 1; }
		sleep 1	# past the first epochs after the sync
	fi
	c1=$(vmA info bench --json | json_field counter); t1=$(date +%s.%N)
	sleep "$SECS"
	c2=$(vmA info bench --json | json_field counter); t2=$(date +%s.%N)
	if [ "$repl" = 1 ]; then
		st=$(vmA replicate status bench --json)
		vmB verify bench >/dev/null || echo "# verify of the standby FAILED at $rate"
		vmA replicate stop bench >/dev/null
	fi
	vmA stop bench >/dev/null
	echo "$(echo "($c2 - $c1) / ($t2 - $t1)" | bc -l) $st"
}

median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
range() { sort -n | awk 'NR == 1 { lo = $1 } { hi = $1 } END { printf "%s-%s", lo, hi }'; }
field() { json_field "$1"; }

for rate in 10M 50M 200M; do
	plain=() repl=() eps=() p50=() p99=() bpe=() lag=()
	for i in $(seq "$REPEAT"); do
		even_out_memory
		r=$(run_once $rate 0) && plain+=("${r%% *}")
		even_out_memory
		r=$(run_once $rate 1) || continue
		repl+=("${r%% *}")
		s=${r#* }
		eps+=("$(echo "$s" | field epoch_rate)") p50+=("$(echo "$s" | field pause_p50_ms)")
		p99+=("$(echo "$s" | field pause_p99_ms)") bpe+=("$(echo "$s" | field bytes_per_epoch)")
		lag+=("$(echo "$s" | field lag_ms)")
	done
	mp=$(printf '%s\n' "${plain[@]}" | median) mr=$(printf '%s\n' "${repl[@]}" | median)
	printf '{"bench":"replicate","dirty_rate":"%s","runs":%d,"writes_per_s_plain":%.0f,"writes_per_s_replicated":%.0f,"slowdown_pct":%.1f,"epochs_per_s":%s,"epochs_per_s_range":"%s","pause_p50_ms":%s,"pause_p99_ms":%s,"pause_p99_ms_range":"%s","bytes_per_epoch":%s,"lag_ms":%s}\n' \
		"$rate" "${#repl[@]}" "$mp" "$mr" "$(echo "100 * (1 - $mr / $mp)" | bc -l)" \
		"$(printf '%s\n' "${eps[@]}" | median)" "$(printf '%s\n' "${eps[@]}" | range)" \
		"$(printf '%s\n' "${p50[@]}" | median)" "$(printf '%s\n' "${p99[@]}" | median)" \
		"$(printf '%s\n' "${p99[@]}" | range)" "$(printf '%s\n' "${bpe[@]}" | median)" \
		"$(printf '%s\n' "${lag[@]}" | median)"
done
