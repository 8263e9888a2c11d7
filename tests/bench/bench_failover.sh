#!/bin/bash
# Failover time: from the primary's death (its guest process killed) to
# the guest running on the standby, with etcd deciding (TTL 3 s), over
# BENCH_FAILOVER_RUNS runs (default 5) of the failover suite's case; one
# JSON line with the median and the range. Every run also passes the
# suite's output checker, or the benchmark says so and fails.
set -u
BUILD=${1:-build}
here=$(dirname "$0")
RUNS=${BENCH_FAILOVER_RUNS:-5}
cases=$(for _ in $(seq "$RUNS"); do printf 'primary_guest_killed '; done)
out=$(FAILOVER_CASES=$cases bash "$here/../integration/failover.sh" "$BUILD" 2>&1)
if echo "$out" | grep -q '^SKIP'; then
	echo "# bench_failover skipped: $(echo "$out" | grep '^SKIP' | head -1)"
	exit 0
fi
ms=$(echo "$out" | sed -n 's/.*B runs the guest \([0-9]*\) ms after the fault.*/\1/p')
failed=$(echo "$out" | grep -c '^FAIL')
echo "$ms" | sort -n | awk -v runs="$RUNS" -v failed="$failed" '
	{ v[NR] = $1 }
	END { printf "{\"bench\":\"failover\",\"ttl_s\":3,\"runs\":%d,\"failed\":%d,\"failover_ms_p50\":%d,\"failover_ms_min\":%d,\"failover_ms_max\":%d}\n",
		runs, failed, v[int((NR + 1) / 2)], v[1], v[NR] }'
[ "$failed" = 0 ] || { echo "$out" | grep -A3 '^FAIL'; exit 1; }
