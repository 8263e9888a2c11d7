#!/bin/bash
# Checkpoint benchmark under vmigrated: full checkpoints of a 1 GiB guest
# (400 MiB random + zero, and compressible), live ones while it dirties
# 100 MiB/s (pause time), an incremental after 1 s of 50 MiB/s dirtying,
# and restore (eager: every page read before the guest runs; eager and lazy
# to the guest's first instruction). One JSON line each; the live pause and
# the restores to the first instruction are repeated BENCH_SNAPSHOT_REPEAT
# times (default 5, eager and lazy alternated), as median and range. Files
# go to BENCH_SNAPSHOT_DIR (default a temporary directory).
set -u
BUILD=${1:-build}
. "$(dirname "$0")/../integration/lib/hosts.sh"
trap hosts_cleanup EXIT

if [ ! -e /dev/kvm ]; then
	echo "# bench_snapshot skipped: /dev/kvm is missing"
	exit 0
fi
hosts_setup >/dev/null || exit 1
hosts_start_service A || exit 1
d=${BENCH_SNAPSHOT_DIR:-$HOSTS_DIR/snap}
mkdir -p "$d"
echo "# checkpoint benchmark: 1 GiB guest, 2 vCPUs, 400 MiB working set, files in $d"

REPEAT=${BENCH_SNAPSHOT_REPEAT:-5}
# Freed memory is slow to touch again here (PERF-FACTS.md): touch and free
# some right before each timed run, the same for every contender.
warm_up() { python3 -c "b = bytes([1]) * (1 << 30)" 2>/dev/null; }
# median and range of numbers, one a line: "median min max"
stats() { sort -n | awk 'NF { v[++n] = $1 } END {
	if (!n) { print "0 0 0"; exit }
	print v[int((n + 1) / 2)], v[1], v[n] }'; }

line() { # name, json reply of snapshot
	local size pause secs rounds
	size=$(echo "$2" | json_field file_bytes)
	pause=$(echo "$2" | json_field pause_ms)
	secs=$(echo "$2" | json_field seconds)
	rounds=$(echo "$2" | json_field rounds)
	printf '{"bench":"snapshot","scenario":"%s","seconds":%.3f,"pause_ms":%.1f,"file_mib":%.1f,"rounds":%s}\n' \
		"$1" "$secs" "$pause" "$(echo "$size / 1048576" | bc -l)" "${rounds:-1}"
}

for content in random text; do
	vmA start b --mem 1G --vcpus 2 --working-set 400M --content $content --stop-after 51200 >/dev/null
	wait_counter vmA b 102400
	sync
	line "full-idle-$content" "$(vmA snapshot b "$d/full-$content.ckpt" --json)"
	[ $content = random ] || { vmA stop b >/dev/null; continue; }
	vmA stop b >/dev/null
	sleep 0.3
	t0=$(date +%s.%N)
	out=$(vmA restore "$d/full-$content.ckpt" --name r --json) || echo "# restore failed: $out"
	t1=$(date +%s.%N)
	printf '{"bench":"snapshot","scenario":"restore-eager-1gib","seconds":%.3f}\n' \
		"$(echo "$t1 - $t0" | bc -l)"
	vmA verify r >/dev/null || echo "# verify after restore FAILED"
	vmA stop r >/dev/null
	# restore to the guest's first instruction, in one process, eager and
	# lazy alternated: restore_ms runs until the vCPUs are released, the
	# guest's status page read (a lazy one's first fault served)
	declare -A ms verified
	for _ in $(seq "$REPEAT"); do
		for mode in eager lazy; do
			warm_up
			out=$("$VMIGRATE" run --restore "$d/full-$content.ckpt" \
				$([ $mode = lazy ] && echo --lazy) --duration 0.5 --verify --json --quiet 2>/dev/null)
			ms[$mode]+="$(echo "$out" | json_field restore_ms)
"
			[ "$(echo "$out" | json_field verified)" = true ] || verified[$mode]=false
		done
	done
	for mode in eager lazy; do
		read -r med min max < <(printf '%s' "${ms[$mode]}" | stats)
		printf '{"bench":"snapshot","scenario":"restore-%s-to-first-instruction-1gib","runs":%d,"median_ms":%.2f,"min_ms":%.2f,"max_ms":%.2f,"verified":%s}\n' \
			$mode "$(printf '%s' "${ms[$mode]}" | grep -c .)" "$med" "$min" "$max" "${verified[$mode]:-true}"
	done
done

# live checkpoints while the guest is asked to dirty 100 MiB/s (what it
# really reaches on shared cores is measured from its counter)
vmA start l --mem 1G --vcpus 2 --working-set 400M --dirty-rate 100M >/dev/null
wait_counter vmA l 102400
pauses="" rounds="" secs="" rates=""
for _ in $(seq "$REPEAT"); do
	warm_up
	c0=$(vmA info l --json | json_field counter) t0=$(date +%s.%N)
	out=$(vmA snapshot l "$d/live.ckpt" --live --json)
	c1=$(vmA info l --json | json_field counter) t1=$(date +%s.%N)
	if [ "$(echo "$out" | json_field ok)" != true ]; then
		echo "# live checkpoint failed: $out"
		continue
	fi
	pauses+="$(echo "$out" | json_field pause_ms)
"
	rounds+="$(echo "$out" | json_field rounds)
"
	secs+="$(echo "$out" | json_field seconds)
"
	rates+="$(echo "($c1 - $c0) * 4096 / ($t1 - $t0) / 1048576" | bc -l)
"
	rm -f "$d/live.ckpt"
done
read -r pmed pmin pmax < <(printf '%s' "$pauses" | stats)
read -r rmed _ _ < <(printf '%s' "$rounds" | stats)
read -r smed _ _ < <(printf '%s' "$secs" | stats)
read -r dmed dmin dmax < <(printf '%s' "$rates" | stats)
printf '{"bench":"snapshot","scenario":"live-full-dirtying-100M","runs":%d,"median_pause_ms":%.2f,"min_pause_ms":%.2f,"max_pause_ms":%.2f,"median_rounds":%s,"median_seconds":%.3f,"guest_dirty_mib_s_median":%.0f,"guest_dirty_mib_s_min":%.0f,"guest_dirty_mib_s_max":%.0f}\n' \
	"$(printf '%s' "$pauses" | grep -c .)" "$pmed" "$pmin" "$pmax" "${rmed:-0}" "$smed" "$dmed" "$dmin" "$dmax"
vmA stop l >/dev/null

vmA start i --mem 1G --vcpus 2 --working-set 400M --dirty-rate 50M >/dev/null
wait_counter vmA i 102400
vmA snapshot i "$d/inc-0.ckpt" >/dev/null
sleep 1
line "incremental-after-1s-at-50M" "$(vmA snapshot i "$d/inc-1.ckpt" --incremental --json)"
vmA stop i >/dev/null
rm -rf "$d"
