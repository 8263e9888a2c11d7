#!/bin/bash
# Scale benchmark: live migration of an idle guest of 256 MiB, 1, 4 and
# 8 GiB, each with the same share (40 %) of random data and the rest zero,
# between two namespaced hosts (TLS, default channels). Sizes are
# alternated, BENCH_SCALE_REPEAT times each (default 3): total time, bytes
# moved, milliseconds per moved GiB (should stay flat as guests grow), and
# the peak memory of the source and destination services and guest
# processes that is not guest RAM (RssAnon + RssFile; guest RAM is shared memory,
# RssShmem), sampled every 20 ms during the migration
# (tests/bench/rss_sampler.py). A table, then one JSON line a size.
# A size whose two guests do not fit in the available memory is skipped
# with the reason. BENCH_SCALE_SIZES overrides the list (MiB).
set -u
BUILD=${1:-build}
HERE=$(dirname "$0")
. "$HERE/../integration/lib/hosts.sh"
trap 'rm -f "$HOSTS_DIR"/stop.*; hosts_cleanup' EXIT

if [ ! -e /dev/kvm ]; then
	echo "# bench_scale skipped: /dev/kvm is missing"
	exit 0
fi
if ! command -v python3 >/dev/null; then
	echo "# bench_scale skipped: python3 (the memory sampler) is missing"
	exit 0
fi
hosts_setup >/dev/null || { echo "bench_scale: cannot set up the hosts" >&2; exit 1; }
hosts_start_service A && hosts_start_service B || exit 1
REPEAT=${BENCH_SCALE_REPEAT:-3}
SIZES=${BENCH_SCALE_SIZES:-256 1024 4096 8192}
VCPUS=2
echo "# scale benchmark: idle guests, 2 vCPUs, 40 % random data, TLS, sizes alternated, $REPEAT runs each"

avail_mib() { awk '/^MemAvailable:/ { print int($2 / 1024) }' /proc/meminfo; }

# Freed memory is slow to touch again on this machine (PERF-FACTS.md):
# touch and free some right before each timed run, the same for each size,
# sized to what the destination will write.
warm_up() {
	local mib=$1
	[ "$(avail_mib)" -gt $((mib + 1024)) ] || mib=$(( $(avail_mib) - 1024 ))
	[ "$mib" -gt 0 ] && python3 -c "b = bytes([1]) * ($mib << 20)"
}

# The working set lives below the guest's 3 GiB hole: past WS_MAX the rest
# of the 40 % comes from a file of random bytes (--prefill) above it.
WS_MAX_PAGES=$(( 2560 * 256 ))
PREFILL=$HOSTS_DIR/prefill.random

declare -A T BYTES MEM
# one_run SIZE_MIB: appends "total_ms bytes" to T/BYTES, the peaks to MEM
one_run() {
	local mib=$1 ws_pages per_vcpu out pid stop samp random_pages prefill=()
	random_pages=$(( mib * 256 * 2 / 5 / VCPUS * VCPUS ))
	ws_pages=$random_pages
	if [ $ws_pages -gt $WS_MAX_PAGES ]; then
		ws_pages=$WS_MAX_PAGES
		head -c $(( (random_pages - ws_pages) * 4096 )) /dev/urandom >"$PREFILL"
		prefill=(--prefill "$PREFILL")
	fi
	per_vcpu=$(( ws_pages / VCPUS ))
	vmA start scale --mem "${mib}M" --vcpus $VCPUS --working-set "$(( ws_pages * 4 ))K" \
		--stop-after $per_vcpu "${prefill[@]}" >/dev/null ||
		{ echo "# ${mib} MiB: guest did not start"; return 1; }
	wait_counter vmA scale $ws_pages || { echo "# ${mib} MiB: guest did not fill"; vmA stop scale >/dev/null; return 1; }
	pid=$(vmA info scale --json | json_field pid)
	warm_up $(( mib * 2 / 5 + 1024 ))
	stop=$HOSTS_DIR/stop.$mib
	rm -f "$stop"
	python3 "$HERE/rss_sampler.py" --stop-file "$stop" src_service="$SVC_A_PID" \
		src_guest="$pid" dst_service+children="$SVC_B_PID" >"$HOSTS_DIR/mem.$mib" &
	samp=$!
	out=$(vmA migrate scale "$HOST_B_ADDR:$HOST_B_PORT" --quiet --json)
	touch "$stop"
	wait $samp
	if ! echo "$out" | grep -q '"status":"completed"'; then
		echo "# ${mib} MiB: migration failed: $out"
		vmA stop scale >/dev/null 2>&1
		return 1
	fi
	vmB verify scale >/dev/null || echo "# ${mib} MiB: verify FAILED on B"
	vmB stop scale >/dev/null
	rm -f "$PREFILL"
	T[$mib]+="$(echo "$out" | json_field total_time_ms) "
	BYTES[$mib]+="$(echo "$out" | json_field transferred_bytes) "
	MEM[$mib]+="$(cat "$HOSTS_DIR/mem.$mib")
"
	sleep 0.5	# the guests' memory goes back before the next size
}

# median and range of a list of numbers: "median min max"
stats() { tr ' ' '\n' | sort -n | awk 'NF { v[++n] = $1 } END {
	if (!n) { print "0 0 0"; exit }
	print v[int((n + 1) / 2)], v[1], v[n] }'; }
# the largest value of one field over the JSON lines of the sampler
peak() { json_field "$1" | sort -n | tail -1; }

runnable=()
for mib in $SIZES; do
	need=$(( mib * 2 * 2 / 5 + mib / 4 + 1536 ))	# both guests' data, page tables, headroom
	if [ "$(avail_mib)" -lt "$need" ]; then
		echo "# ${mib} MiB skipped: two such guests need about $need MiB, $(avail_mib) MiB are available"
		continue
	fi
	runnable+=("$mib")
done
for i in $(seq "$REPEAT"); do
	for mib in "${runnable[@]}"; do
		one_run "$mib"
	done
done

printf '# %-8s %4s %-18s %10s %13s %9s %9s %9s %9s\n' size runs "total ms (range)" "moved MiB" "ms/moved GiB" \
	"src svc" "src vm" "dst svc" "dst vm"
for mib in "${runnable[@]}"; do
	[ -n "${T[$mib]:-}" ] || continue
	read -r tmed tmin tmax < <(echo "${T[$mib]}" | stats)
	read -r bmed _ _ < <(echo "${BYTES[$mib]}" | stats)
	runs=$(echo "${T[$mib]}" | wc -w)
	ss=$(echo "${MEM[$mib]}" | peak src_service_kib)
	sg=$(echo "${MEM[$mib]}" | peak src_guest_kib)
	ds=$(echo "${MEM[$mib]}" | peak dst_service_kib)
	dg=$(echo "${MEM[$mib]}" | peak dst_service_child_kib)
	per_gib=$(echo "$tmed * 1073741824 / $bmed" | bc -l)
	printf '# %-8s %4d %-18s %10.0f %13.0f %8.1fM %8.1fM %8.1fM %8.1fM\n' "${mib}MiB" "$runs" \
		"$tmed ($tmin-$tmax)" "$(echo "$bmed / 1048576" | bc -l)" "$per_gib" \
		"$(echo "${ss:-0} / 1024" | bc -l)" "$(echo "${sg:-0} / 1024" | bc -l)" \
		"$(echo "${ds:-0} / 1024" | bc -l)" "$(echo "${dg:-0} / 1024" | bc -l)"
	printf '{"bench":"scale","guest_mib":%d,"runs":%d,"median_total_time_ms":%d,"min_total_time_ms":%d,"max_total_time_ms":%d,"median_transferred_bytes":%d,"ms_per_moved_gib":%.1f,"peak_src_service_kib":%d,"peak_src_guest_kib":%d,"peak_dst_service_kib":%d,"peak_dst_guest_kib":%d}\n' \
		"$mib" "$runs" "$tmed" "$tmin" "$tmax" "$bmed" "$per_gib" "${ss:-0}" "${sg:-0}" "${ds:-0}" "${dg:-0}"
done
echo "# peaks: RssAnon+RssFile of each process over all runs of a size (guest RAM is shared memory:" \
	"RssShmem, not counted); a forked guest process starts sharing its service's pages"
