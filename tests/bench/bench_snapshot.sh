#!/bin/bash
# Checkpoint benchmark under vmigrated: full checkpoints of a 1 GiB guest
# (400 MiB random + zero, and compressible), a live one while it dirties
# 100 MiB/s (pause time), an incremental after 1 s of 50 MiB/s dirtying,
# and restore (eager: every page read before the guest runs). One JSON line
# each. Files go to BENCH_SNAPSHOT_DIR (default a temporary directory).
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
	# restore to the guest's first instruction, in one process, eager and lazy
	for mode in eager lazy; do
		out=$("$VMIGRATE" run --restore "$d/full-$content.ckpt" $([ $mode = lazy ] && echo --lazy) \
			--duration 0.5 --verify --json --quiet 2>/dev/null)
		printf '{"bench":"snapshot","scenario":"restore-%s-to-first-instruction-1gib","ms":%s,"verified":%s}\n' \
			$mode "$(echo "$out" | json_field restore_ms)" "$(echo "$out" | json_field verified)"
	done
done

vmA start l --mem 1G --vcpus 2 --working-set 400M --dirty-rate 100M >/dev/null
wait_counter vmA l 102400
line "live-full-dirtying-100M" "$(vmA snapshot l "$d/live.ckpt" --live --json)"
vmA stop l >/dev/null

vmA start i --mem 1G --vcpus 2 --working-set 400M --dirty-rate 50M >/dev/null
wait_counter vmA i 102400
vmA snapshot i "$d/inc-0.ckpt" >/dev/null
sleep 1
line "incremental-after-1s-at-50M" "$(vmA snapshot i "$d/inc-1.ckpt" --incremental --json)"
vmA stop i >/dev/null
rm -rf "$d"
