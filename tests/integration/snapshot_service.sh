#!/bin/bash
# Checkpoints of a running guest under vmigrated: a full one, then five
# incrementals that hold only what changed, each with a short pause; the
# newest restores (following its parents) into a guest whose memory
# verifies and which continues; an incremental with no base is refused;
# checkpoints with zstd pages (format 1.2) verify and restore.
set -u
BUILD=${1:-build}
. "$(dirname "$0")/lib/hosts.sh"
. "$(dirname "$0")/lib/suite.sh"
suite_with_hosts snapshot_service
hosts_start_service A || exit 1
d=$HOSTS_DIR/backups
mkdir -p "$d"
vmA start g --mem 256M --vcpus 2 --working-set 64M --dirty-rate 20M >/dev/null || exit 1
wait_counter vmA g 16384

out=$(vmA snapshot g "$d/g-1.ckpt" --incremental 2>&1); rc=$?
[ $rc = 1 ] && echo "$out" | grep -q "take a full one first"
check incremental_without_base_refused $? "rc=$rc: $out"

out=$(vmA snapshot g "$d/g-0.ckpt" --json 2>&1); rc=$?
full=$(echo "$out" | json_field file_bytes)
[ $rc = 0 ] && [ -n "$full" ]
check full_checkpoint $? "rc=$rc: $out"

ok=0
for i in 1 2 3 4 5; do
	sleep 0.3
	out=$(vmA snapshot g "$d/g-$i.ckpt" --incremental --json 2>&1) || { ok=1; break; }
	size=$(echo "$out" | json_field file_bytes)
	[ "$size" -lt $((full / 2)) ] || { ok=1; out="incremental $i: $size bytes, full $full"; break; }
done
check five_small_incrementals $ok "$out"

vmA verify g >/dev/null
c_before=$(vmA info g --json | json_field counter)
vmA stop g >/dev/null
sleep 0.3
out=$(vmA restore "$d/g-5.ckpt" --name g2 --json 2>&1); rc=$?
c_after=$(echo "$out" | json_field counter)	# where the restored guest starts
[ $rc = 0 ] && vmA verify g2 >/dev/null && [ -n "$c_after" ]
check restore_follows_the_chain $? "rc=$rc: $out"

sleep 0.3
c2=$(vmA info g2 --json | json_field counter)
[ "$c2" -gt "$c_after" ] && [ "$c_after" -le "$c_before" ]
check restored_guest_continues $? "counters: before stop $c_before, at restore $c_after, later $c2"

# lazy restore: the guest runs at once, pages fault in from the chain
out=$(vmA restore "$d/g-5.ckpt" --name gl --lazy 2>&1); rc=$?
sleep 0.3
[ $rc = 0 ] && vmA verify gl >/dev/null
check lazy_restore_through_the_service $? "rc=$rc: $out"

out=$("$VMIGRATE" ckpt verify "$d/g-3.ckpt" 2>&1)
check chain_link_verifies $? "$out"

# live: pre-copy rounds into the file while the guest dirties, a short pause
out=$(vmA snapshot g2 "$d/live-0.ckpt" --live --json 2>&1) &&
	out2=$(vmA snapshot g2 "$d/live-1.ckpt" --live --incremental --json 2>&1)
rc=$?
echo "#   live full: $(echo "$out" | json_field pause_ms) ms paused, $(echo "$out" | json_field rounds) rounds;" \
	"live incremental: $(echo "$out2" | json_field pause_ms) ms paused"
c_live=$(vmA info g2 --json | json_field counter)
vmA stop g2 >/dev/null
sleep 0.3
# the restored guest starts from the checkpoint (its counter then at most
# what the source had after it) and its memory verifies
vmA restore "$d/live-1.ckpt" --name g3 --json >"$d/r.out" 2>&1 &&
	[ "$(json_field counter <"$d/r.out")" -le "$c_live" ] &&
	vmA verify g3 >"$d/v.out" 2>&1
check live_checkpoints_restore $? "rc=$rc: $(cat "$d/r.out" "$d/v.out" 2>/dev/null), source counter $c_live"
# keyed checkpoints under the service: signed, checked on restore
head -c 32 /dev/urandom >"$d/k1"; head -c 32 /dev/urandom >"$d/k2"; chmod 600 "$d/k1" "$d/k2"
vmA snapshot g3 "$d/signed.ckpt" --key "$d/k1" >/dev/null &&
	"$VMIGRATE" ckpt verify "$d/signed.ckpt" --key "$d/k1" >/dev/null
check keyed_snapshot_verifies $? "signed checkpoint did not verify"
out=$(vmA restore "$d/signed.ckpt" --name g4 --key "$d/k2" 2>&1); rc=$?
[ $rc = 1 ] && echo "$out" | grep -q "authentication failed" && [ -z "$(vmA info g4 --json 2>/dev/null | json_field state)" ]
check restore_with_another_key_refused $? "rc=$rc: $out"
out=$(vmA restore "$d/signed.ckpt" --name g4 --key "$d/k1" 2>&1) && vmA verify g4 >/dev/null
check restore_with_the_key $? "$out"

# zstd pages (format 1.2): a full checkpoint and an incremental on it, both
# smaller than LZ4's, verify, and restore (eagerly and lazily) into guests
# whose memory verifies; a compressor vmigrate lacks is refused by name
vmA start gz --mem 128M --working-set 32M --dirty-rate 8M --content text >/dev/null &&
	wait_counter vmA gz 8192
vmA snapshot gz "$d/gz-lz4.ckpt" >/dev/null &&
	vmA snapshot gz "$d/gz-0.ckpt" --compress zstd >/dev/null &&
	vmA snapshot gz "$d/gz-1.ckpt" --compress zstd --incremental >/dev/null
rc=$?
info=$("$VMIGRATE" ckpt info "$d/gz-0.ckpt" --json 2>&1)
zinfo=$(echo "$info" | python3 -c '
import json, os, sys
i = json.load(sys.stdin)
print(i["format"], i["zstd_pages"], i["lz4_pages"], i["file_bytes"],
      os.path.getsize(sys.argv[1]))' "$d/gz-lz4.ckpt")
set -- $zinfo
[ $rc = 0 ] && [ "$1" = 1.2 ] && [ "$2" -gt 1000 ] && [ "$3" = 0 ] && [ "$4" -lt "$5" ] &&
	"$VMIGRATE" ckpt verify "$d/gz-1.ckpt" >/dev/null
check zstd_checkpoints_verify $? "rc=$rc; format, zstd pages, lz4 pages, bytes, lz4's bytes: $zinfo"
vmA stop gz >/dev/null
sleep 0.3
out=$(vmA restore "$d/gz-1.ckpt" --name gz2 2>&1) && vmA verify gz2 >/dev/null &&
	out=$(vmA restore "$d/gz-1.ckpt" --name gz3 --lazy 2>&1) && sleep 0.3 &&
	vmA verify gz3 >/dev/null
check zstd_checkpoints_restore $? "$out"
out=$(vmA snapshot gz2 "$d/gz-x.ckpt" --compress gzip 2>&1); rc=$?
[ $rc = 2 ] && echo "$out" | grep -q "bad value 'gzip' for --compress (lz4, zstd or off)" &&
	[ ! -e "$d/gz-x.ckpt" ]
check unknown_compressor_refused $? "rc=$rc: $out"
suite_end
