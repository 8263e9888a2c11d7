#!/bin/bash
# Checkpoint files survive what goes wrong while they are written: a writer
# killed at several points leaves the previous checkpoint intact and no file
# that looks complete; a full disk (a small tmpfs) fails the checkpoint with
# a clear error while the guest keeps running. Removes its mount on exit.
set -u
BUILD=${1:-build}
. "$(dirname "$0")/lib/hosts.sh"
MNT=
cleanup() {
	[ -n "$MNT" ] && umount "$MNT" 2>/dev/null && rmdir "$MNT"
	hosts_cleanup
}
trap cleanup EXIT

. "$(dirname "$0")/lib/suite.sh"
suite_begin ckpt_safety
d=$HOSTS_DIR/ck
mkdir -p "$d"

# a good checkpoint, then writers of the same name killed while they write
# (after their temporary file appeared), at several points
head -c 256M /dev/urandom >"$d/ram.img"
"$VMIGRATE" run --mem 256M --working-set 16M --duration 0.2 --save "$d/g.ckpt" --quiet >/dev/null 2>&1
sum=$(sha256sum <"$d/g.ckpt")
ok=0 killed=0
for delay in 0 0.05 0.15 0.3; do
	"$VMIGRATE" run --mem 512M --working-set 16M --prefill "$d/ram.img" --duration 0.2 \
		--save "$d/g.ckpt" --quiet >/dev/null 2>&1 &
	pid=$!
	for _ in $(seq 200); do ls "$d"/g.ckpt.tmp.* >/dev/null 2>&1 && break; sleep 0.02; done
	sleep "$delay"
	kill -9 $pid 2>/dev/null && killed=$((killed + 1))
	wait $pid 2>/dev/null
	now=$(sha256sum <"$d/g.ckpt")
	# the old file, or (if the writer won the race) a new one that verifies
	if [ "$now" != "$sum" ] && ! "$VMIGRATE" ckpt verify "$d/g.ckpt" >/dev/null 2>&1; then
		ok=1; break
	fi
	sum=$now
	for t in "$d"/g.ckpt.tmp.*; do
		[ -e "$t" ] || continue
		"$VMIGRATE" ckpt verify "$t" >/dev/null 2>&1 && { ok=1; echo "# $t looks complete"; }
		rm -f "$t"
	done
done
echo "#   $killed of 4 writers killed mid-write"
[ $killed -ge 2 ] || ok=1
"$VMIGRATE" ckpt verify "$d/g.ckpt" >/dev/null 2>&1 || ok=1
rm -f "$d/ram.img"
check killed_writer_leaves_previous_intact $ok "the checkpoint under its name did not verify"

if ! command -v mount >/dev/null || [ "$(id -u)" != 0 ]; then
	echo "SKIP ckpt_safety.full_disk_fails_cleanly: needs root to mount a tmpfs"
else
	MNT=$(mktemp -d)
	mount -t tmpfs -o size=16m vmigrate-test "$MNT" || { echo "SKIP ckpt_safety.full_disk_fails_cleanly: tmpfs mount refused"; MNT=; }
fi
if [ -n "$MNT" ]; then
	hosts_setup >/dev/null && hosts_start_service A || exit 1
	vmA start g --mem 256M --working-set 128M --content random >/dev/null
	wait_counter vmA g 32768
	out=$(vmA snapshot g "$MNT/g.ckpt" 2>&1); rc=$?
	c1=$(vmA info g --json | json_field counter); sleep 0.3
	c2=$(vmA info g --json | json_field counter)
	[ $rc = 1 ] && echo "$out" | grep -q "No space left on device" && [ ! -e "$MNT/g.ckpt" ] &&
		[ -z "$(ls "$MNT")" ] && [ "$c2" -gt "$c1" ] && vmA verify g >/dev/null
	check full_disk_fails_cleanly $? "rc=$rc: $out; files: $(ls "$MNT")"
fi
suite_end
