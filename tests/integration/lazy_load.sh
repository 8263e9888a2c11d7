#!/bin/bash
# Copying memory while a lazy restore still loads it: pages not yet in are
# holes that read as zero, so a checkpoint waits until every page is in
# (and then holds the guest's real memory), and a migration is refused
# with a clear error (the destination would wait on its handshake) and
# succeeds once the memory is loaded. The prefetch is slowed
# (VMIGRATE_FAULT=lazy-slow-prefetch) so that the load is surely running.
set -u
BUILD=${1:-build}
. "$(dirname "$0")/lib/hosts.sh"
. "$(dirname "$0")/lib/suite.sh"
suite_with_hosts lazy_load
hosts_start_service A "VMIGRATE_FAULT=lazy-slow-prefetch" && hosts_start_service B || exit 1
d=$HOSTS_DIR/ckpt
mkdir -p "$d"
memory_on_a() { vmA info "$1" --json 2>/dev/null | json_field memory; }

vmA start g --mem 512M --vcpus 2 --working-set 256M --stop-after 32768 >/dev/null &&
	wait_counter vmA g 65536 && vmA snapshot g "$d/full.ckpt" >/dev/null &&
	vmA stop g >/dev/null || { echo "FAIL lazy_load.setup: no checkpoint to restore"; exit 1; }
sleep 0.3

vmA restore "$d/full.ckpt" --name gl --lazy >/dev/null || exit 1
loading=$(memory_on_a gl)
out=$(vmA migrate gl "$HOST_B_ADDR:$HOST_B_PORT" --quiet 2>&1); rc=$?
sleep 0.3
[ "$loading" = loading ] && [ $rc = 1 ] && echo "$out" | grep -q "still loading its memory" &&
	[ "$(vmA info gl --json | json_field state)" = running ] &&
	[ -z "$(vmB info gl --json 2>/dev/null | json_field state)" ]
check migration_refused_while_loading $? "memory was '$loading'; rc=$rc: $out"

out=$(vmA snapshot gl "$d/during.ckpt" 2>&1); rc=$?
[ $rc = 0 ] && [ "$(memory_on_a gl)" = loaded ] &&
	vmA restore "$d/during.ckpt" --name g3 >/dev/null && vmA verify g3 >"$d/v.out" 2>&1
check checkpoint_waits_for_the_load $? "rc=$rc: $out $(cat "$d/v.out" 2>/dev/null)"
vmA stop g3 >/dev/null

out=$(vmA migrate gl "$HOST_B_ADDR:$HOST_B_PORT" --quiet 2>&1); rc=$?
[ $rc = 0 ] && vmB verify gl >/dev/null
check migration_once_loaded $? "rc=$rc: $out"
suite_end
