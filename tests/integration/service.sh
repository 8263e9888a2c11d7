#!/bin/bash
# vmigrated as a supervisor: guests live in processes of their own, so a
# crashed guest takes nothing else down, a restarted service finds its
# running guests again, and only root (or the configured group) may use
# the control socket. Prints one PASS/FAIL/SKIP line per case.
set -u
BUILD=${1:-build}
. "$(dirname "$0")/lib/hosts.sh"
. "$(dirname "$0")/lib/suite.sh"
suite_with_hosts service
hosts_start_service A || { echo "FAIL service.setup: service did not start"; exit 1; }

vmA start one --mem 128M --working-set 16M --dirty-rate 20M >/dev/null &&
vmA start two --mem 128M --working-set 16M --dirty-rate 20M >/dev/null
check start_two_guests $? "start failed"

out=$(vmA start one --mem 128M 2>&1)
[ $? = 1 ] && echo "$out" | grep -q "already runs"
check duplicate_name_refused $? "a second guest 'one' was accepted: $out"

out=$(vmA start bad --mem 16M 2>&1)
[ $? = 1 ] && echo "$out" | grep -q "64 MiB"
check bad_config_refused_clearly $? "$out"

pid=$(vmA info one --json | json_field pid)
kill -9 "$pid"
sleep 0.3
list=$(vmA list)
echo "$list" | grep -q '^two .*running' && ! echo "$list" | grep -q '^one '
c1=$(vmA info two --json | json_field counter); sleep 0.3; c2=$(vmA info two --json | json_field counter)
[ "$c2" -gt "$c1" ]
check crashed_guest_takes_nothing_down $? "list after the crash: $list"

c1=$(vmA info two --json | json_field counter)
kill "$SVC_A_PID"; wait "$SVC_A_PID" 2>/dev/null; SVC_A_PID=
sleep 0.5
hosts_start_service A >/dev/null
out=$(vmA list --json)
c2=$(vmA info two --json | json_field counter)
echo "$out" | grep -q '"name":"two"' && [ "$c2" -gt "$c1" ] && vmA verify two >/dev/null
check restarted_service_finds_running_guest $? "after restart: $out"

# one envelope: "ok" once, at the top, never inside the items
python3 -c 'import json, sys
o = json.loads(sys.argv[1])
assert o["ok"] is True and o["guests"]
assert all("ok" not in g for g in o["guests"]), "an item carries its own ok"' "$out"
check json_has_one_envelope $? "$out"

if id nobody >/dev/null 2>&1 && command -v setpriv >/dev/null; then
	out=$(VMIGRATE_CONTROL="$HOSTS_DIR/A/vmigrated.sock" setpriv --reuid=nobody --regid=nogroup \
		--clear-groups "$VMIGRATE" list 2>&1)
	[ $? != 0 ] && echo "$out" | grep -q -i "denied"
	check control_socket_refuses_other_users $? "as nobody: $out"
else
	echo "SKIP service.control_socket_refuses_other_users: no 'nobody' user or setpriv"
fi

# A guest that does not answer still holds its name: a second start is
# refused, saying so, and list shows it instead of leaving it out.
pid=$(vmA info two --json | json_field pid)
kill -STOP "$pid"
out=$(vmA start two --mem 128M --working-set 16M 2>&1); rc=$?
list=$(vmA list 2>&1)
kill -CONT "$pid"
sleep 0.2
[ $rc = 1 ] && echo "$out" | grep -q "not answering" &&
	echo "$list" | grep -q "^two  *kvm  *not answering" &&
	[ "$(vmA info two --json | json_field pid)" = "$pid" ] &&
	[ "$(hosts_count_procs A vmg:two)" = 1 ] && vmA verify two >/dev/null
check stopped_guest_keeps_its_name $? "rc=$rc: $out; list: $list; vmg:two processes: $(hosts_count_procs A vmg:two)"

vmA stop two >/dev/null
sleep 0.3
! vmA list | grep -q '^two '
check stop_removes_guest $? "two still listed"
suite_end
