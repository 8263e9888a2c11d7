#!/bin/bash
# vmigrate run as an operator uses it: any flat binary given by path runs,
# Ctrl-C stops the guest cleanly (verified, exit 0), and bad options are
# refused with a clear message and exit status 2.
set -u
BUILD=${1:-build}
VMIGRATE=$BUILD/vmigrate
. "$(dirname "$0")/lib/suite.sh"
suite_begin cli_run

out=$("$VMIGRATE" run --guest "$BUILD/guests/memtouch.bin" --mem 128M --working-set 8M \
	--duration 0.5 --verify --json --quiet 2>&1)
[ $? = 0 ] && echo "$out" | grep -q '"verified":true'
check guest_from_a_file $? "$out"

# --json: stdout is the one JSON object, the guest's console goes to stderr
out=$("$VMIGRATE" run --guest "$BUILD/guests/memtouch.bin" --mem 128M --working-set 8M \
	--duration 0.5 --json 2>/dev/null)
echo "$out" | python3 -c 'import json, sys; json.loads(sys.stdin.read())'
check json_alone_on_stdout $? "stdout: $out"

"$VMIGRATE" run --mem 128M --working-set 8M --verify >"${TMPDIR:-/tmp}/cli_run.$$" 2>&1 &
pid=$!
sleep 1
kill -INT $pid
wait $pid
rc=$?
out=$(cat "${TMPDIR:-/tmp}/cli_run.$$"); rm -f "${TMPDIR:-/tmp}/cli_run.$$"
[ $rc = 0 ] && echo "$out" | grep -q "verified"
check ctrl_c_stops_cleanly $? "rc=$rc: $out"

out=$("$VMIGRATE" run --mem 12Q 2>&1); rc=$?
[ $rc = 2 ] && echo "$out" | grep -q "bad value '12Q' for --mem"
check bad_option_refused $? "rc=$rc: $out"

out=$("$VMIGRATE" run --guest /nonexistent/payload --duration 0.1 2>&1); rc=$?
[ $rc = 1 ] && echo "$out" | grep -q "No such file"
check missing_payload_refused $? "rc=$rc: $out"
suite_end
