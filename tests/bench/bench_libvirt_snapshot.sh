#!/bin/bash
# Checkpoints and restores of a libvirt domain through vmigrate, on the rig
# of lib/libvirt_hosts.sh (host A), the rig's Linux guest under TCG with
# realistic memory (real files in its page cache, text, random bytes, a
# working set) dirtying BENCH_LVSNAP_DIRTY MiB/s. Per run: a full checkpoint
# with the domain paused for it, a live full one (QEMU's live migration into
# vmigrate, paused at its end), a live incremental BENCH_LVSNAP_INTERVAL
# seconds later, the same with QEMU's background-snapshot where QEMU may use
# userfaultfd, and the restore of the chain (virDomainRestoreFlags from
# vmigrate's save image, to the domain running). One JSON line per
# scenario: the guest's pause (ms), the file's bytes, the command's wall
# time, each as median, min and max over BENCH_LVSNAP_REPEAT runs (default
# 3). The guest checks all its data after every restore; a failed run or
# check fails the benchmark. The live full and incremental scenarios run
# (and the paused full one) once per method of BENCH_LVSNAP_METHODS (default "libvirt-snapshot
# migration": libvirt's own memory snapshot into a FIFO, QEMU's migration
# into a pipe), alternating within each run; each scenario's name ends in
# its method.
# Knobs: BENCH_LVSNAP_MEM (MiB, default 512), BENCH_LVSNAP_DIRTY (default 8),
# BENCH_LVSNAP_INTERVAL (default 5), BENCH_LVSNAP_REPEAT, BENCH_LVSNAP_METHODS.
set -u
BUILD=${1:-build}
here=$(dirname "$0")/../integration/lib
. "$here/hosts.sh"
. "$here/linux_guest.sh"
. "$here/libvirt_hosts.sh"

MEM=${BENCH_LVSNAP_MEM:-512}
DIRTY=${BENCH_LVSNAP_DIRTY:-8}
INTERVAL=${BENCH_LVSNAP_INTERVAL:-5}
REPEAT=${BENCH_LVSNAP_REPEAT:-3}
METHODS=${BENCH_LVSNAP_METHODS:-libvirt-snapshot migration}
G=bsnap
libvirt_hosts_traps	# first: hosts.sh made HOSTS_DIR already
if missing=$(libvirt_hosts_missing); then
	echo "# bench_libvirt_snapshot skipped: $missing is missing (tools/install-deps.sh)"
	exit 0
fi
linux_guest_build
case $? in
0) ;;
1) echo "# bench_libvirt_snapshot skipped: no Linux guest: $LINUX_GUEST_WHY"; exit 0 ;;
*) echo "bench_libvirt_snapshot: $LINUX_GUEST_WHY" >&2; exit 1 ;;
esac
hosts_setup && [ "$USE_NETNS" = 1 ] && libvirt_hosts_setup && lv_start_service A ||
	{ echo "bench_libvirt_snapshot: cannot set up the libvirt host" >&2; exit 1; }
lv_start_guest A $G "$MEM" "$(linux_guest_cmdline $((MEM / 4)) $((MEM / 4)) $((MEM / 8)) "$DIRTY")" &&
	lv_wait_line A $G '^RIG filled ' >/dev/null && lv_wait_seq A $G 1 ||
	{ echo "bench_libvirt_snapshot: the guest did not come up" >&2; exit 1; }
D=$HOSTS_DIR/ckpt
R=$HOSTS_DIR/runs.jsonl
mkdir -p "$D" && chmod 700 "$D" && : >"$R"

# snap SCENARIO FILE ARGS...: one checkpoint, its reply and wall time into R
snap() {
	local scen=$1 file=$2 t0 t1 out
	shift 2
	t0=$(date +%s%N)
	out=$(vmA snapshot $G "$file" --json "$@" 2>&1) || { echo "bench_libvirt_snapshot: $scen: $out" >&2; exit 1; }
	t1=$(date +%s%N)
	echo "$out" | tail -n 1 | python3 -c 'import json,sys; r=json.load(sys.stdin); r["scenario"]=sys.argv[1]; r["wall_ms"]=int(sys.argv[2])/1e6; print(json.dumps(r))' "$scen" $((t1 - t0)) >>"$R"
}

for run in $(seq "$REPEAT"); do
	rm -f "$D"/*.ckpt
	# the methods alternate: which goes first changes from run to run
	order=$METHODS
	[ $((run % 2)) = 0 ] && order=$(echo "$METHODS" | tr ' ' '\n' | tac | tr '\n' ' ')
	for m in $order; do
		snap "full-paused-$m" "$D/$G-$run-0-$m.ckpt" --method "$m"
		snap "full-live-$m" "$D/$G-$run-1-$m.ckpt" --live --method "$m"
		sleep "$INTERVAL"
		snap "incremental-live-$m" "$D/$G-$run-2-$m.ckpt" --live --incremental --method "$m"
	done
	sleep "$INTERVAL"
	snap incremental-background "$D/$G-$run-3.ckpt" --live --incremental --background-snapshot
	virshA destroy $G >/dev/null
	t0=$(date +%s%N)
	out=$(vmA restore "$D/$G-$run-3.ckpt" --json 2>&1) || { echo "bench_libvirt_snapshot: restore: $out" >&2; exit 1; }
	t1=$(date +%s%N)
	echo "$out" | tail -n 1 | python3 -c 'import json,sys; r=json.load(sys.stdin); r["scenario"]="restore-chain"; r["wall_ms"]=int(sys.argv[1])/1e6; print(json.dumps(r))' $((t1 - t0)) >>"$R"
	seq=$(lv_seq A $G)
	lv_wait_seq A $G "$seq" && v=$(lv_verify A $G) ||
		{ echo "bench_libvirt_snapshot: the restored guest: ${v:-no progress}" >&2; exit 1; }
done

python3 - "$R" "$MEM" "$DIRTY" "$INTERVAL" <<'PY'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
mem, dirty, interval = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
def agg(v):
    return {"median": statistics.median(v), "min": min(v), "max": max(v)}
for scen in dict.fromkeys(r["scenario"] for r in runs):
    rs = [r for r in runs if r["scenario"] == scen]
    o = {"bench": "libvirt_snapshot", "scenario": scen, "mem_mib": mem, "dirty_mib_s": dirty,
         "runs": len(rs), "wall_ms": agg([r["wall_ms"] for r in rs])}
    if scen.startswith("restore"):
        o["files"] = rs[0]["files"]
        o["load_ms"] = agg([r["load_seconds"] * 1e3 for r in rs])
    else:
        o["method"] = rs[0]["method"]
        o["pause_ms"] = agg([r["pause_ms"] for r in rs])
        o["file_bytes"] = agg([r["file_bytes"] for r in rs])
        o["stream_bytes"] = agg([r["stream_bytes"] for r in rs])
        if scen.startswith("incremental"):
            o["interval_s"] = interval
            o["pages_written"] = agg([r["pages_written"] for r in rs])
        if rs[0].get("note"):
            o["note"] = rs[0]["note"]
    print(json.dumps(o))
PY
