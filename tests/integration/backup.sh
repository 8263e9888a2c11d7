#!/bin/bash
# Backup rotation: nine runs of `vmigrate backup --keep 4 --full-every 3`
# on a dirtying guest. After every run each kept incremental's parent is
# kept too, at least four checkpoints remain, and the newest restores into
# a guest whose memory verifies. Also checks the systemd units parse, and
# backups with zstd pages (format 1.2).
set -u
BUILD=${1:-build}
. "$(dirname "$0")/lib/hosts.sh"
. "$(dirname "$0")/lib/suite.sh"
suite_with_hosts backup
hosts_start_service A || exit 1
d=$HOSTS_DIR/backups
mkdir -p "$d"
vmA start web --mem 256M --working-set 32M --dirty-rate 20M >/dev/null || exit 1
wait_counter vmA web 8192

# every incremental's parent is in the directory
chains_complete() {
	local f uuids parents
	uuids=$(for f in "$d"/*.ckpt; do "$VMIGRATE" ckpt info "$f" --json | json_field image_uuid; done)
	for f in "$d"/*.ckpt; do
		p=$("$VMIGRATE" ckpt info "$f" --json | json_field parent_uuid)
		[ -z "$p" ] || echo "$uuids" | grep -q "$p" || { echo "parent of $f missing"; return 1; }
	done
}

ok=0 fulls=0
for i in $(seq 9); do
	out=$(vmA backup web --dir "$d" --keep 4 --full-every 3 --json) || { ok=1; break; }
	echo "$out" | grep -q '"full":true' && fulls=$((fulls + 1))
	n=$(ls "$d"/*.ckpt | wc -l)
	want=$((i < 4 ? i : 4))
	[ "$n" -ge "$want" ] || { ok=1; out="only $n files after run $i"; break; }
	msg=$(chains_complete) || { ok=1; out="$msg"; break; }
	sleep 0.2
done
check rotation_keeps_chains_restorable $ok "$out"
[ $fulls = 3 ]
check a_full_one_every_third_run $? "$fulls full checkpoints in 9 runs"
n=$(ls "$d"/*.ckpt | wc -l)
[ "$n" -le 6 ]
check old_chains_pruned $? "$n files kept"

newest=$(ls "$d"/*.ckpt | tail -1)
vmA restore "$newest" --name web-restored >/dev/null && vmA verify web-restored >/dev/null
check newest_restores $? "restore of $newest failed"

# --compress zstd: a full run and an incremental one of format 1.2, which
# restore; a compressor vmigrate lacks is refused before anything is taken
z=$HOSTS_DIR/backups-zstd
out=$(vmA backup web --dir "$z" --keep 2 --compress zstd --json) &&
	out=$(vmA backup web --dir "$z" --keep 2 --compress zstd --json) &&
	echo "$out" | grep -q '"full":false'
rc=$?
formats=$(for f in "$z"/*.ckpt; do "$VMIGRATE" ckpt info "$f" --json | json_field format; done | sort -u)
newest=$(ls "$z"/*.ckpt | tail -1)
[ $rc = 0 ] && [ "$formats" = 1.2 ] && vmA restore "$newest" --name web-z >/dev/null &&
	vmA verify web-z >/dev/null
check zstd_backups_restore $? "rc=$rc, formats '$formats': $out"
out=$(vmA backup web --dir "$z" --keep 2 --compress lz5 2>&1); rc=$?
[ $rc = 2 ] && echo "$out" | grep -q "bad value 'lz5' for --compress (lz4, zstd or off)" &&
	[ "$(ls "$z"/*.ckpt | wc -l)" = 2 ]
check unknown_compressor_refused $? "rc=$rc: $out"

if command -v systemd-analyze >/dev/null; then
	# instances of the templates, beside the service they need
	u=$HOSTS_DIR/units
	mkdir -p "$u"
	src=$(dirname "$0")/../../tools/systemd
	cp "$src/vmigrated.service" "$u/"
	cp "$src/vmigrate-backup@.service" "$u/vmigrate-backup@web.service"
	cp "$src/vmigrate-backup@.timer" "$u/vmigrate-backup@web.timer"
	out=$(cd "$u" && systemd-analyze verify vmigrated.service vmigrate-backup@web.service \
		vmigrate-backup@web.timer 2>&1 | grep -v "is not executable: No such file")
	[ -z "$out" ]
	check systemd_units_parse $? "$out"
else
	echo "SKIP backup.systemd_units_parse: systemd-analyze is not installed"
fi
suite_end
