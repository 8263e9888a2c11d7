#!/bin/bash
# Peer authentication with a shared key: services that share it migrate;
# a destination with another key, or a source without one where the
# destination requires it, is refused with a clear error and the guest
# stays where it was. Prints one PASS/FAIL/SKIP line per case.
set -u
BUILD=${1:-build}
. "$(dirname "$0")/lib/hosts.sh"
. "$(dirname "$0")/lib/suite.sh"
suite_with_hosts peer_auth
KEY1=$HOSTS_DIR/key1 KEY2=$HOSTS_DIR/key2
head -c 32 /dev/urandom >"$KEY1"; head -c 32 /dev/urandom >"$KEY2"; chmod 600 "$KEY1" "$KEY2"

restart() {
	hosts_stop_services
	hosts_start_service A "" "$1" && hosts_start_service B "" "$2"
}
guest_on() { $1 info g --json 2>/dev/null | json_field state; }

restart "--peer-key $KEY1" "--peer-key $KEY2" || exit 1
vmA start g --mem 128M --working-set 16M --dirty-rate 10M >/dev/null
out=$(vmA migrate g "$HOST_B_ADDR:$HOST_B_PORT" --quiet 2>&1); rc=$?
[ $rc = 1 ] && echo "$out" | grep -q -i "authentication" && [ "$(guest_on vmA)" = running ] &&
	[ -z "$(guest_on vmB)" ]
check other_key_refused $? "rc=$rc: $out"

restart "" "--peer-key $KEY1" || exit 1
out=$(vmA migrate g "$HOST_B_ADDR:$HOST_B_PORT" --quiet 2>&1); rc=$?
[ $rc = 1 ] && echo "$out" | grep -q -i "requires peer authentication" &&
	[ "$(guest_on vmA)" = running ]
check source_without_key_refused $? "rc=$rc: $out"

restart "--peer-key $KEY1" "" || exit 1
out=$(vmA migrate g "$HOST_B_ADDR:$HOST_B_PORT" --quiet 2>&1); rc=$?
sleep 0.5
[ $rc = 1 ] && echo "$out" | grep -q -i "did not authenticate" &&
	[ "$(guest_on vmA)" = running ] && [ -z "$(guest_on vmB)" ]
check unauthenticated_destination_refused $? "rc=$rc: $out"

out=$(vmA list 2>&1); chmod 644 "$KEY2"
out=$("$VMIGRATED" --state-dir "$HOSTS_DIR/C" --peer-key "$KEY2" 2>&1); rc=$?
chmod 600 "$KEY2"
[ $rc = 2 ] && echo "$out" | grep -q "chmod 600"
check readable_key_file_refused $? "rc=$rc: $out"

restart "--peer-key $KEY1" "--peer-key $KEY1" || exit 1
out=$(vmA migrate g "$HOST_B_ADDR:$HOST_B_PORT" --quiet 2>&1); rc=$?
[ $rc = 0 ] && [ "$(guest_on vmB)" = running ] && vmB verify g >/dev/null
check same_key_migrates $? "rc=$rc: $out"
suite_end
