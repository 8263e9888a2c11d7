#!/bin/bash
# What an operator sees of a migration between two hosts (network
# namespaces), with `vmigrate migrate` on a terminal (a pty): the progress
# line of a capped migration (live rates from round 1, a share done that
# never goes back and stays under 100 until the switchover, an ETA that
# counts down), the destination listing the incoming job and the guest's
# real size, Ctrl-C (cancels: the guest stays on the source) and --detach
# (the job goes on; with --json, the envelope names it), a downtime limit
# that can never be met, and the finished jobs both ends keep with their
# final figures.
# Prints one PASS/FAIL/SKIP line per case.
set -u
BUILD=${1:-build}
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/lib/hosts.sh"
. "$HERE/lib/suite.sh"
suite_with_hosts progress
BG_PID=
# a pty run left in the background by a failed case goes too
trap '[ -n "$BG_PID" ] && kill "$BG_PID" 2>/dev/null; hosts_cleanup' EXIT

PTY_RUN="python3 $HERE/lib/pty_run.py"
DEST=$HOST_B_ADDR:$HOST_B_PORT
note() { echo "#   $*"; }
state_on() { $1 info "$2" --json 2>/dev/null | json_field state; }

# the CLI on a terminal against host A's service; the log in $1
pty_migrate() {
	local log=$1
	shift
	VMIGRATE_CONTROL="$HOSTS_DIR/A/vmigrated.sock" $PTY_RUN "$log" "$@"
}

# the JSON of one job (by id) from `jobs --completed --json` on host $1
completed_job() {
	$1 jobs --completed --json | python3 -c '
import json, sys
for j in json.load(sys.stdin)["jobs"]:
    if j.get("job") == sys.argv[1]:
        print(json.dumps(j))' "$2"
}

# a job's record has these fields: "key=value" (stats fields) or "key>0"
record_has() {
	python3 -c '
import json, sys
j = json.loads(sys.argv[1]); st = j.get("stats", {})
for want in sys.argv[2:]:
    if ">" in want:
        k, v = want.split(">")
        ok = float(st.get(k, 0)) > float(v)
    else:
        k, v = want.split("=")
        ok = str(j.get(k, st.get(k))) == v
    if not ok:
        print("%s: %s" % (want, j.get(k, st.get(k)))); sys.exit(1)' "$@"
}

hosts_start_service A && hosts_start_service B ||
	{ echo "FAIL progress.setup: the services did not start"; exit 1; }

# a guest past the first fill of its working set (32768 pages), which
# dirties at full speed, so the rates seen are the paced 8 MiB/s
start_guest() {
	vmA start "$1" --mem 256M --vcpus 2 --working-set 128M --dirty-rate 8M >/dev/null &&
		wait_counter vmA "$1" 40000
}

# ---- a capped migration on a terminal, watched from both ends ------------------

G=web1
start_guest $G || { echo "FAIL progress.setup: guest $G did not start"; exit 1; }
# a job log that does not parse is set aside, not overwritten
echo 'not json {' >"$HOSTS_DIR/B/guests/completed-jobs.json"

pty_migrate "$HOSTS_DIR/mig1.log" --timeout 120 -- \
	"$VMIGRATE" migrate $G "$DEST" --bandwidth 24M &
BG_PID=$!
seen_job=1 seen_size=1
for _ in $(seq 200); do
	if [ $seen_job != 0 ] && vmB jobs --json 2>/dev/null | grep -q '"direction":"incoming"'; then
		vmB jobs --json | grep -q '"status":"active"' && seen_job=0
	fi
	if [ $seen_size != 0 ] && [ "$(state_on vmB $G)" = incoming ]; then
		info=$(vmB info $G --json)
		[ "$(echo "$info" | json_field mem)" = 268435456 ] &&
			[ "$(echo "$info" | json_field vcpus)" = 2 ] && seen_size=0
		vmB list | grep -q "^$G .*incoming *256 *2 " || seen_size=1
	fi
	[ $seen_job = 0 ] && [ $seen_size = 0 ] && break
	kill -0 $BG_PID 2>/dev/null || break
	sleep 0.1
done
wait $BG_PID
rc=$?
BG_PID=
sed 's/^/#   /' "$HOSTS_DIR/mig1.log" | tail -3
check migrate_on_a_terminal "$([ $rc = 0 ] && grep -q "$G: completed" "$HOSTS_DIR/mig1.log" &&
	echo 0)" "exit status $rc"
check destination_lists_incoming_job $seen_job "vmigrate jobs on B never showed the job"
check incoming_guest_real_size $seen_size "list/info on B did not show 256 MiB and 2 vCPUs"
while read -r name st why; do
	case $name in
	\#*) echo "$name $st $why" ;;
	*) check "$name" "$st" "$why" ;;
	esac
done < <(python3 "$HERE/lib/progress_check.py" "$HOSTS_DIR/mig1.log")

# ---- the finished job on both ends, after the source's process is gone ---------

JOB=$(sed -n 's/.*vmigrate: job \([^:]*\): .*/\1/p' "$HOSTS_DIR/mig1.log" | head -1)
gone=1
for _ in $(seq 100); do vmA info $G >/dev/null 2>&1 || { gone=0; break; }; sleep 0.1; done
check source_process_left $gone "guest $G still answers on A after it moved"
rec=$(completed_job vmA "$JOB")
why=$(record_has "$rec" direction=outgoing status=completed "peer=$DEST" \
	transferred_bytes\>100000000 total_time_ms\>0 downtime_ms\>0 rounds\>1 mbps\>0 \
	ram_total_bytes=268435456 remaining_bytes=0 2>&1)
check completed_on_source $? "job '$JOB' on A: ${why:-not listed}"
rec=$(completed_job vmB "$JOB")
why=$(record_has "$rec" direction=incoming status=completed "peer=$HOST_A_ADDR" \
	transferred_bytes\>100000000 total_time_ms\>0 ram_total_bytes=268435456 2>&1)
check completed_on_destination $? "job '$JOB' on B: ${why:-not listed}"
vmA jobs --completed >"$HOSTS_DIR/jobsA" 2>&1
vmB jobs --all >"$HOSTS_DIR/jobsB" 2>&1
sed 's/^/#   A: /' "$HOSTS_DIR/jobsA"
sed 's/^/#   B: /' "$HOSTS_DIR/jobsB"
grep -q "^$JOB .*outgoing *completed" "$HOSTS_DIR/jobsA" &&
	grep -q "^$JOB .*incoming *completed" "$HOSTS_DIR/jobsB"
check completed_in_the_tables $? "the text tables do not show job $JOB"
grep -q 'not json {' "$HOSTS_DIR/B/guests/completed-jobs.json.bad" 2>/dev/null
check bad_job_log_set_aside $? "B's unreadable job log was not kept as .bad"
vmB stop $G >/dev/null

# ---- Ctrl-C cancels; the guest stays on the source ------------------------------

G=web2
start_guest $G || { echo "FAIL progress.setup: guest $G did not start"; exit 1; }
pty_migrate "$HOSTS_DIR/mig2.log" --timeout 120 --interrupt-when '^active +round 1 ' -- \
	"$VMIGRATE" migrate $G "$DEST" --bandwidth 8M
rc=$?
JOB=$(sed -n 's/.*vmigrate: job \([^:]*\): .*/\1/p' "$HOSTS_DIR/mig2.log" | head -1)
sed 's/^/#   /' "$HOSTS_DIR/mig2.log" | tail -3
for _ in $(seq 60); do [ -z "$(state_on vmB $G)" ] && break; sleep 0.1; done
ok=1
if [ $rc != 1 ]; then note "exit status $rc, not 1"
elif ! grep -q "cancelling job $JOB" "$HOSTS_DIR/mig2.log"; then note "no word of the cancel"
elif ! grep -q "$G: cancelled" "$HOSTS_DIR/mig2.log"; then note "the job did not end cancelled"
elif [ "$(state_on vmA $G)" != running ]; then note "guest is '$(state_on vmA $G)' on A"
elif [ -n "$(state_on vmB $G)" ]; then note "guest also on B ($(state_on vmB $G))"
elif ! vmA verify $G >/dev/null; then note "verify failed on A"
else ok=0; fi
check ctrl_c_cancels $ok "see above"
rec=$(completed_job vmA "$JOB")
why=$(record_has "$rec" direction=outgoing status=cancelled 2>&1)
check cancelled_job_kept $? "job '$JOB' on A: ${why:-not listed}"

# ---- --detach: Ctrl-C leaves the job running -----------------------------------

# with --json, what it printed last is the envelope naming the job that goes on
detached_json() {
	python3 -c '
import json, sys
for line in open(sys.argv[1], encoding="utf-8"):
    text = line.rstrip("\n").partition("\t")[2]
    if text.startswith("{"):
        o = json.loads(text)
        sys.exit(0 if o.get("ok") is True and o.get("detached") is True and
                 o.get("job") == sys.argv[2] else 1)
sys.exit(1)' "$@"
}
pty_migrate "$HOSTS_DIR/mig3.log" --timeout 120 --interrupt-when '^active +round 1 ' -- \
	"$VMIGRATE" migrate $G "$DEST" --bandwidth 8M --detach --json
rc=$?
JOB=$(sed -n 's/.*vmigrate: job \([^:]*\): .*/\1/p' "$HOSTS_DIR/mig3.log" | head -1)
sed 's/^/#   /' "$HOSTS_DIR/mig3.log" | tail -2
ok=1
if [ $rc != 0 ]; then note "exit status $rc, not 0"
elif ! grep -q "continues as job $JOB; vmigrate cancel $JOB" "$HOSTS_DIR/mig3.log"; then
	note "it did not say how the job goes on"
elif ! detached_json "$HOSTS_DIR/mig3.log" "$JOB"; then
	note "--json printed no envelope with ok, detached and job $JOB"
elif ! vmA jobs --json | grep -q "\"job\":\"$JOB\".*\"status\":\"active\""; then
	note "job $JOB is not running: $(vmA jobs --json)"
else ok=0; fi
check detach_leaves_the_job $ok "see above"
vmA cancel "$JOB" >/dev/null
for _ in $(seq 100); do
	vmA jobs --json | grep -q "\"job\":\"$JOB\".*\"done\":true" && break
	sleep 0.1
done
for _ in $(seq 60); do [ -z "$(state_on vmB $G)" ] && break; sleep 0.1; done
[ "$(state_on vmA $G)" = running ] && [ -z "$(state_on vmB $G)" ] && vmA verify $G >/dev/null
check detached_job_cancelled_later $? "after 'vmigrate cancel $JOB': A '$(state_on vmA $G)', B '$(state_on vmB $G)'"

# ---- a downtime limit that can never be met --------------------------------------

contacted() { grep -c "refused an incoming\|receiving guest" "$HOSTS_DIR/B/service.log"; }
before=$(contacted)
out=$(vmA migrate $G "$DEST" --max-downtime 0 2>&1)
rc=$?
ok=1
if [ $rc != 1 ]; then note "exit status $rc, not 1"
elif ! echo "$out" | grep -q -- "--max-downtime 0 ms can never be met"; then note "said: $out"
elif [ "$(state_on vmA $G)" != running ]; then note "guest is '$(state_on vmA $G)' on A"
elif [ "$(contacted)" != "$before" ]; then note "B was contacted"
else ok=0; fi
check max_downtime_zero_refused $ok "see above"

suite_end
