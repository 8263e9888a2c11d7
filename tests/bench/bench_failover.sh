#!/bin/bash
# Failover with etcd deciding (TTL 3 s), timed by the failover suite's own
# cases; one JSON line per kind, with the median and the range:
#   failover          the primary's guest process killed, until the guest
#                     runs on the standby (BENCH_FAILOVER_RUNS, default 5)
#   failover_host     every process of the primary's host killed (3 runs)
#   planned_failover  'vmigrate failover' until it returns with the guest
#                     running on the standby, then back (3 runs), on a
#                     1 GiB guest (256 MiB working set dirtied at 10 MiB/s):
#                     the pages of the first sync, and of the old primary's
#                     resync (sent, and skipped because it had them)
# Every run also passes the suite's output checker, or the benchmark says
# so and fails.
set -u
BUILD=${1:-build}
here=$(dirname "$0")
RUNS=${BENCH_FAILOVER_RUNS:-5}
failed=0

# run CASE N times in one suite; its output in $out
run_case() {
	local cases
	cases=$(for _ in $(seq "$2"); do printf '%s ' "$1"; done)
	out=$(FAILOVER_CASES=$cases bash "$here/../integration/failover.sh" "$BUILD" 2>&1)
	if echo "$out" | grep -q '^SKIP'; then
		echo "# bench_failover skipped: $(echo "$out" | grep '^SKIP' | head -1)"
		exit 0
	fi
	if echo "$out" | grep -q '^FAIL'; then
		echo "$out" | grep -B5 -A3 '^FAIL' | sed 's/^/# /'
		failed=$((failed + $(echo "$out" | grep -c '^FAIL')))
	fi
}

# median, min and max of the numbers on stdin as JSON fields PREFIX_p50...
stats() {
	sort -n | awk -v p="$1" '{ v[NR] = $1 }
		END { if (!NR) { printf "\"%s_p50\":null", p; exit }
		      printf "\"%s_p50\":%d,\"%s_min\":%d,\"%s_max\":%d", p, v[int((NR + 1) / 2)],
			p, v[1], p, v[NR] }'
}

takeover_ms() { sed -n 's/.*B runs the guest \([0-9]*\) ms after the fault.*/\1/p'; }

run_case primary_guest_killed "$RUNS"
echo "{\"bench\":\"failover\",\"fault\":\"primary guest process killed\",\"ttl_s\":3,\"runs\":$RUNS,$(echo "$out" | takeover_ms | stats failover_ms)}"

run_case primary_host_killed 3
echo "{\"bench\":\"failover_host\",\"fault\":\"every process of the primary's host killed\",\"ttl_s\":3,\"runs\":3,$(echo "$out" | takeover_ms | stats failover_ms)}"

FAILOVER_GUEST="--mem 1G --vcpus 2 --working-set 256M --dirty-rate 10M" run_case planned_failover_and_back 3
planned=$(echo "$out" | sed -n 's/.*planned failover: the command returned after \([0-9]*\) ms.*/\1/p' | stats planned_ms)
full=$(echo "$out" | sed -n 's/.*first sync (B.s):.*(\([0-9]*\) pages sent.*/\1/p' | stats full_sync_pages)
sent=$(echo "$out" | sed -n 's/.*resync (A.s):.*(\([0-9]*\) pages sent.*/\1/p' | stats resync_pages_sent)
had=$(echo "$out" | sed -n 's/.*resync (A.s):.*, \([0-9]*\) it had already.*/\1/p' | stats resync_pages_matched)
echo "{\"bench\":\"planned_failover\",\"guest\":\"1 GiB, 256 MiB working set, 10 MiB/s\",\"ttl_s\":3,\"runs\":3,$planned,$full,$sent,$had}"
[ "$failed" = 0 ] || { echo "# bench_failover: $failed run(s) failed"; exit 1; }
