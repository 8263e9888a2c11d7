#!/bin/bash
# Post-copy against pre-copy between two namespaced hosts (TLS, default
# channels): a 1 GiB guest, 2 vCPUs, 256 MiB working set dirtied at 200 and
# at 1000 MiB/s (asked: two shared cores give it less), over a veth shaped
# to 1 Gbit/s (tbf). Contenders, alternated within each repetition: pre-copy
# (default downtime limit, --timeout 40), pre-copy with auto-converge,
# hybrid (--postcopy-after auto) and pure post-copy (--postcopy); then pure
# post-copy on the unshaped link, for the fault latency. One JSON line per
# run, then one per contender: completed runs, median and range of total
# time, downtime, the guest's own progress rate while it moved (pages
# written per second, from its counter), fault latency p50/p99, bytes on
# the wire over RAM size. Memory is touched and freed before every run
# (../shared/PERF-FACTS.md).
set -u
BUILD=${1:-build}
. "$(dirname "$0")/../integration/lib/hosts.sh"
trap hosts_cleanup EXIT

if [ ! -e /dev/kvm ]; then
	echo "# bench_postcopy skipped: /dev/kvm is missing"
	exit 0
fi
hosts_setup || { echo "bench_postcopy: cannot set up the hosts" >&2; exit 1; }
[ "$USE_NETNS" = 1 ] || { echo "# bench_postcopy skipped: needs network namespaces"; exit 0; }
hosts_start_service A && hosts_start_service B || exit 1
REPEAT=${BENCH_POSTCOPY_REPEAT:-3}
RESULTS=$HOSTS_DIR/results
: >"$RESULTS"
B_AT="$HOST_B_ADDR:$HOST_B_PORT"
DEV=va$HOSTS_TAG

shape() {
	ip netns exec "$NS_A" tc qdisc del dev "$DEV" root 2>/dev/null
	[ "$1" = off ] && return 0
	ip netns exec "$NS_A" tc qdisc add dev "$DEV" root tbf rate "$1" burst 256kb latency 50ms
}

counter() { $1 info bench --json 2>/dev/null | json_field counter; }

# run NAME RATE LINK MIGRATE-OPTIONS...: one migration, one JSON line
run() {
	local name=$1 rate=$2 link=$3 out c0 c1 t0 t1 status host=vmB
	shift 3
	shape "$link"
	python3 -c "b = bytes([1]) * (3 << 30)"
	vmA start bench --mem 1G --vcpus 2 --working-set 256M --dirty-rate "$rate" >/dev/null || return 1
	wait_counter vmA bench 65536 || { echo "# $name: the guest did not fill"; vmA stop bench; return 1; }
	c0=$(counter vmA)
	t0=$(date +%s.%N)
	out=$(vmA migrate bench "$B_AT" --quiet --json "$@" 2>&1)
	t1=$(date +%s.%N)
	status=$(echo "$out" | json_field status)
	[ "$status" = completed ] || host=vmA
	c1=$(counter $host)
	# B holds the guest a moment after the source is done (its last page in)
	for _ in $(seq 30); do
		vmB info bench --json 2>/dev/null | grep -q '"memory":"loaded"' && break
		sleep 0.1
	done
	if [ "$status" = completed ] && ! vmB verify bench >/dev/null; then
		status=verify-failed
	fi
	vmB stop bench >/dev/null 2>&1
	vmA stop bench >/dev/null 2>&1
	echo "$out" | tail -n 1 | awk -v name="$name" -v rate="$rate" -v link="$link" -v st="$status" \
		-v c0="${c0:-0}" -v c1="${c1:-0}" -v t0="$t0" -v t1="$t1" '
	function num(k,   v) { if (match($0, "\"" k "\":[0-9.]+")) { v = substr($0, RSTART + length(k) + 3, RLENGTH - length(k) - 3); return v + 0 } return 0 }
	{ printf "{\"bench\":\"postcopy\",\"contender\":\"%s\",\"dirty_rate\":\"%s\",\"link\":\"%s\",\"status\":\"%s\",\"total_time_ms\":%d,\"downtime_ms\":%d,\"guest_pages_per_s\":%.0f,\"fault_p50_ms\":%.3f,\"fault_p99_ms\":%.3f,\"postcopy_requests\":%d,\"wire_over_ram\":%.3f}\n",
		name, rate, link, st, num("total_time_ms"), num("downtime_ms"),
		(t1 > t0 ? (c1 - c0) / (t1 - t0) : 0), num("postcopy_fault_p50_ms"),
		num("postcopy_fault_p99_ms"), num("postcopy_requests"),
		(num("ram_total_bytes") > 0 ? num("transferred_bytes") / num("ram_total_bytes") : 0) }' |
		tee -a "$RESULTS"
}

echo "# post-copy benchmark: 1 GiB guest, 256 MiB working set, $REPEAT repetitions, contenders alternated"
for r in $(seq "$REPEAT"); do
	for rate in 200M 1000M; do
		run precopy "$rate" 1gbit --timeout 40
		run precopy-autoconverge "$rate" 1gbit --timeout 40 --auto-converge
		run hybrid "$rate" 1gbit --postcopy-after auto
		run pure "$rate" 1gbit --postcopy
	done
	run pure-loopback 200M off --postcopy
done
shape off

# medians and ranges per contender, from the completed runs
python3 - "$RESULTS" <<'EOF'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
keys = []
for r in runs:
    k = (r["contender"], r["dirty_rate"], r["link"])
    if k not in keys:
        keys.append(k)
for k in keys:
    mine = [r for r in runs if (r["contender"], r["dirty_rate"], r["link"]) == k]
    done = [r for r in mine if r["status"] == "completed"]
    out = {"bench": "postcopy-summary", "contender": k[0], "dirty_rate": k[1], "link": k[2],
           "runs": len(mine), "completed": len(done)}
    for f in ("total_time_ms", "downtime_ms", "guest_pages_per_s", "fault_p50_ms",
              "fault_p99_ms", "wire_over_ram"):
        v = [r[f] for r in done]
        if v:
            out[f] = {"median": statistics.median(v), "min": min(v), "max": max(v)}
    print(json.dumps(out))
EOF
