#!/bin/bash
# Fault safety of live migration between two hosts (network namespaces):
# whatever fails, the guest runs on exactly one host, its memory verifies,
# its counter never goes back, and a second migration then succeeds.
# Prints one PASS/FAIL/SKIP line per case.
set -u
BUILD=${1:-build}
. "$(dirname "$0")/lib/hosts.sh"
. "$(dirname "$0")/lib/suite.sh"
suite_with_hosts migrate_faults

G=guest1
note() { echo "#   $*"; }

# Fresh services (with optional fault points) and a fresh guest on A
# (with more start options in $3).
prepare() {
	hosts_stop_services
	hosts_kill_host "$NS_A" "$HOSTS_DIR/A"
	hosts_kill_host "$NS_B" "$HOSTS_DIR/B"
	rm -f "$HOSTS_DIR"/A/guests/*.sock "$HOSTS_DIR"/B/guests/*.sock
	hosts_start_service A "${1:-}" && hosts_start_service B "${2:-}" || return 1
	vmA start $G --mem 256M --vcpus 2 --working-set 64M --dirty-rate 40M ${3:-} >/dev/null ||
		return 1
	wait_counter vmA $G 20000
}

counter_on() { $1 info $G --json 2>/dev/null | json_field counter; }
state_on() { $1 info $G --json 2>/dev/null | json_field state; }

# The guest runs on $1 only, verifies there, and its counter is >= $2.
one_copy_on() {
	local here=$1 min=$2 other c
	[ "$here" = vmA ] && other=vmB || other=vmA
	if [ "$(state_on $here)" != running ]; then
		note "guest is '$(state_on $here)' on $here, not running"; return 1; fi
	# a refused receiver may linger a moment to drain; it must never run
	for _ in $(seq 60); do [ -z "$(state_on $other)" ] && break; sleep 0.1; done
	if [ -n "$(state_on $other)" ]; then
		note "guest also exists on $other ($(state_on $other))"; return 1; fi
	if ! $here verify $G >/dev/null; then note "verify failed on $here"; return 1; fi
	c=$(counter_on $here)
	if [ "$c" -lt "$min" ]; then note "counter went back: $c < $min"; return 1; fi
	local c2
	sleep 0.3
	c2=$(counter_on $here)
	if [ "$c2" -le "$c" ]; then note "guest does not progress on $here"; return 1; fi
}

# After a failure: the guest is still on A, and moving it now works.
second_migration_works() {
	local before out rec
	before=$(counter_on vmA)
	if ! out=$(vmA migrate $G "$HOST_B_ADDR:$HOST_B_PORT" --quiet --json); then
		note "the second migration failed"; return 1; fi
	# B decided in place, in the sector its record was armed as
	rec=$HOSTS_DIR/B/guests/$G.handover
	python3 - "$rec" "$(echo "$out" | json_field job)" <<'PY' || { note "B's record: $(cat "$rec" 2>&1)"; return 1; }
import json, os, sys
path, job = sys.argv[1:3]
r = json.load(open(path))
sys.exit(0 if os.path.getsize(path) == 512 and r["job"] == job and job and
         r["decision"] == "runs" else 1)
PY
	one_copy_on vmB "$before"
}

# Start a migration in the background, slowed down so it can be hit mid-round.
migrate_bg() {
	vmA migrate $G "$HOST_B_ADDR:$HOST_B_PORT" --quiet "$@" >"$HOSTS_DIR/mig.out" 2>&1 &
	MIG_PID=$!
}

wait_round_progress() {
	for _ in $(seq 100); do
		vmA jobs --json 2>/dev/null | grep -q '"status":"active"' &&
			vmA jobs --json | grep -q '"round_done":[1-9]' && return 0
		sleep 0.05
	done
	return 1
}

result() {
	if [ "$2" = 0 ]; then echo "PASS migrate_faults.$1"
	else echo "FAIL migrate_faults.$1"; sed 's/^/#   /' "$HOSTS_DIR/mig.out" 2>/dev/null
		FAILS=$((FAILS + 1)); fi
}

case_destination_not_listening() {
	local before rc
	prepare || return 1
	before=$(counter_on vmA)
	vmA migrate $G "$HOST_B_ADDR:7999" --quiet >"$HOSTS_DIR/mig.out" 2>&1
	rc=$?
	[ $rc = 1 ] || { note "exit status $rc, expected 1"; return 1; }
	grep -q -i "refused\|connect" "$HOSTS_DIR/mig.out" || { note "no clear error"; return 1; }
	one_copy_on vmA "$before" && second_migration_works
}

case_destination_killed_mid_round() {
	local before rc pid
	prepare || return 1
	before=$(counter_on vmA)
	migrate_bg --bandwidth 20M
	wait_round_progress || { note "migration never got under way"; return 1; }
	pid=$(vmB info $G --json | json_field pid)
	[ -n "$pid" ] || { note "no receiving process on B"; return 1; }
	kill -9 "$pid"
	wait $MIG_PID; rc=$?
	[ $rc = 1 ] || { note "exit status $rc, expected 1"; return 1; }
	one_copy_on vmA "$before" && second_migration_works
}

case_destination_killed_after_source_paused() {
	local before rc
	prepare "" "VMIGRATE_FAULT=dst-exit-before-loaded" || return 1
	before=$(counter_on vmA)
	vmA migrate $G "$HOST_B_ADDR:$HOST_B_PORT" --quiet >"$HOSTS_DIR/mig.out" 2>&1
	rc=$?
	[ $rc = 1 ] || { note "exit status $rc, expected 1"; return 1; }
	one_copy_on vmA "$before" || return 1
	hosts_stop_services; hosts_start_service A && hosts_start_service B || return 1
	second_migration_works
}

case_connection_cut_by_firewall() {
	local before rc t0 t1
	[ "$USE_NETNS" = 1 ] || { echo "SKIP migrate_faults.connection_cut_by_firewall: needs network namespaces"; return 2; }
	command -v iptables >/dev/null || { echo "SKIP migrate_faults.connection_cut_by_firewall: iptables missing"; return 2; }
	prepare || return 1
	before=$(counter_on vmA)
	migrate_bg --bandwidth 20M
	wait_round_progress || { note "migration never got under way"; return 1; }
	t0=$(date +%s)
	ip netns exec "$NS_B" iptables -I INPUT -p tcp --dport "$HOST_B_PORT" -j DROP
	wait $MIG_PID; rc=$?
	t1=$(date +%s)
	ip netns exec "$NS_B" iptables -D INPUT -p tcp --dport "$HOST_B_PORT" -j DROP
	[ $rc = 1 ] || { note "exit status $rc, expected 1"; return 1; }
	note "the cut was noticed after $((t1 - t0)) s"
	[ $((t1 - t0)) -le 20 ] || { note "too slow to notice the cut"; return 1; }
	# B's receiving process notices too, within its own timeout
	for _ in $(seq 100); do [ -z "$(state_on vmB)" ] && break; sleep 0.1; done
	one_copy_on vmA "$before" && second_migration_works
}

case_corrupted_byte_in_stream() {
	local before rc
	prepare "VMIGRATE_FAULT=src-corrupt-stream" || return 1
	before=$(counter_on vmA)
	vmA migrate $G "$HOST_B_ADDR:$HOST_B_PORT" --quiet >"$HOSTS_DIR/mig.out" 2>&1
	rc=$?
	[ $rc = 1 ] || { note "exit status $rc, expected 1"; return 1; }
	grep -q "checksum" "$HOSTS_DIR/mig.out" || { note "the error does not name the checksum"; return 1; }
	one_copy_on vmA "$before" || return 1
	hosts_stop_services; hosts_start_service A && hosts_start_service B || return 1
	second_migration_works
}

cancel_and_check() {
	local before=$1 rc job
	job=$(vmA jobs --json | sed -n 's/.*"job":"\([^"]*\)".*/\1/p' | head -1)
	[ -n "$job" ] || { note "no job to cancel"; return 1; }
	vmA cancel "$job" >/dev/null || { note "cancel refused"; return 1; }
	wait $MIG_PID; rc=$?
	[ $rc = 1 ] || { note "exit status $rc, expected 1"; return 1; }
	grep -q "cancelled" "$HOSTS_DIR/mig.out" || vmA jobs --json | grep -q cancelled ||
		{ note "job not reported cancelled"; return 1; }
	for _ in $(seq 50); do [ -z "$(state_on vmB)" ] && break; sleep 0.1; done
	one_copy_on vmA "$before"
}

case_cancel_while_setting_up() {
	local before
	prepare || return 1
	before=$(counter_on vmA)
	migrate_bg --bandwidth 10M
	for _ in $(seq 100); do vmA jobs --json | grep -q '"job"' && break; sleep 0.02; done
	cancel_and_check "$before" && second_migration_works
}

case_cancel_mid_round() {
	local before
	prepare || return 1
	before=$(counter_on vmA)
	migrate_bg --bandwidth 20M
	wait_round_progress || { note "migration never got under way"; return 1; }
	cancel_and_check "$before" && second_migration_works
}

case_cancel_after_source_paused() {
	local before
	prepare "VMIGRATE_FAULT=src-stall-before-go" || return 1
	before=$(counter_on vmA)
	migrate_bg
	for _ in $(seq 200); do vmA jobs --json | grep -q '"status":"device"' && break; sleep 0.05; done
	vmA jobs --json | grep -q '"status":"device"' || { note "never reached the switchover"; return 1; }
	cancel_and_check "$before" || return 1
	hosts_stop_services; hosts_start_service A && hosts_start_service B || return 1
	second_migration_works
}

case_lost_answer_after_handover_is_uncertain() {
	local rc
	prepare "" "VMIGRATE_FAULT=dst-exit-before-running" || return 1
	vmA migrate $G "$HOST_B_ADDR:$HOST_B_PORT" --quiet >"$HOSTS_DIR/mig.out" 2>&1
	rc=$?
	[ $rc = 3 ] || { note "exit status $rc, expected 3 (uncertain)"; return 1; }
	[ "$(state_on vmA)" = uncertain ] || { note "A says '$(state_on vmA)'"; return 1; }
	# never two copies: B's process died before resuming, A stays paused
	[ -z "$(state_on vmB)" ] || { note "B has the guest too"; return 1; }
	local c1 c2
	c1=$(counter_on vmA); sleep 0.3; c2=$(counter_on vmA)
	[ "$c1" = "$c2" ] || { note "A runs the guest after handing it over"; return 1; }
	# the operator checked B and resumes the guest on A
	vmA resume $G >/dev/null || { note "resume refused"; return 1; }
	one_copy_on vmA "$c1"
}

# The source's service dies during a migration (kill -9) and comes back:
# the migration finishes on its own, the process left holding the moved
# guest is reaped, and the guest can come back at once.
case_source_service_killed_mid_migration() {
	local before
	prepare || return 1
	before=$(counter_on vmA)
	migrate_bg --bandwidth 100M	# above the dirty rate: it converges alone
	wait_round_progress || { note "migration never got under way"; return 1; }
	kill -9 "$SVC_A_PID"; wait "$SVC_A_PID" 2>/dev/null; SVC_A_PID=
	wait $MIG_PID
	for _ in $(seq 300); do [ "$(state_on vmB)" = running ] && break; sleep 0.1; done
	[ "$(state_on vmB)" = running ] || { note "the guest never arrived on B"; return 1; }
	hosts_start_service A || return 1
	[ -z "$(state_on vmA)" ] || { note "A still lists the guest as '$(state_on vmA)'"; return 1; }
	vmB migrate $G "$HOST_A_ADDR:$HOST_A_PORT" --quiet >"$HOSTS_DIR/mig.out" 2>&1 ||
		{ note "migrating it back was refused"; return 1; }
	one_copy_on vmA "$before"
}

# pid of the process holding the guest's name on B (answering or not)
holder_on_b() { hosts_pids B "vmg:$G" | head -1; }
wait_gone() { for _ in $(seq 100); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done; return 1; }

# The destination is stopped (SIGSTOP) right after LOADED: GO reaches it
# only past the handover bound. The source cannot know whether it runs:
# resume is refused while the destination does not answer, and refused
# with --destination-lost until the bound has passed; once continued, the
# destination discards itself, says so when asked, and resume goes on.
case_destination_stopped_after_loaded() {
	local before rc pid out
	prepare "" "VMIGRATE_FAULT=dst-stop-after-loaded" || return 1
	before=$(counter_on vmA)
	vmA migrate $G "$HOST_B_ADDR:$HOST_B_PORT" --quiet >"$HOSTS_DIR/mig.out" 2>&1
	rc=$?
	pid=$(holder_on_b)
	[ $rc = 3 ] || { note "exit status $rc, expected 3 (uncertain)"; kill -CONT "$pid"; return 1; }
	[ "$(state_on vmA)" = uncertain ] || { note "A says '$(state_on vmA)'"; kill -CONT "$pid"; return 1; }
	vmB list | grep -q "^$G  *kvm  *not answering" || { note "B's list: $(vmB list)"; kill -CONT "$pid"; return 1; }
	out=$(vmA resume $G 2>&1) && { note "resumed while B does not answer: $out"; kill -CONT "$pid"; return 1; }
	note "resume refused: $out"
	out=$(vmA resume $G --destination-lost 2>&1) &&
		{ note "resumed as lost within the bound: $out"; kill -CONT "$pid"; return 1; }
	note "resume --destination-lost refused: $out"
	kill -CONT "$pid"
	wait_gone "$pid" || { note "B's process stays after GO came late"; return 1; }
	grep -q "is discarded here" "$HOSTS_DIR/B/service.log" || { note "B does not say why it discarded"; return 1; }
	out=$(vmA resume $G 2>&1) || { note "resume refused after B discarded: $out"; return 1; }
	echo "$out" | grep -q discarded || { note "resume without B's word: $out"; return 1; }
	one_copy_on vmA "$before" || return 1
	hosts_stop_services; hosts_start_service A && hosts_start_service B || return 1
	second_migration_works
}

# The issue's way in: the source stalls between LOADED and GO and the
# destination is stopped in that window. Past half the bound the source
# does not hand over: it resumes, and the destination discards itself.
case_stalled_source_and_stopped_destination() {
	local before rc pid
	prepare "VMIGRATE_FAULT=src-stall-before-go" || return 1
	before=$(counter_on vmA)
	migrate_bg
	for _ in $(seq 200); do vmA jobs --json | grep -q '"status":"device"' && break; sleep 0.05; done
	sleep 0.5
	pid=$(holder_on_b)
	[ -n "$pid" ] || { note "no receiving process on B"; return 1; }
	kill -STOP "$pid"
	wait $MIG_PID; rc=$?
	kill -CONT "$pid"
	[ $rc = 1 ] || { note "exit status $rc, expected 1 (the guest stays here)"; return 1; }
	grep -q "resumes here" "$HOSTS_DIR/mig.out" || { note "no reason given"; return 1; }
	wait_gone "$pid" || { note "B's process stays"; return 1; }
	one_copy_on vmA "$before" || return 1
	hosts_stop_services; hosts_start_service A && hosts_start_service B || return 1
	second_migration_works
}

# The destination got GO in time but cannot make its decision durable: it
# must not run the guest, and it says so (ERROR) so the source resumes at
# once instead of staying uncertain.
case_destination_cannot_record_decision() {
	local before rc
	prepare "" "VMIGRATE_FAULT=dst-decision-unrecorded" || return 1
	before=$(counter_on vmA)
	vmA migrate $G "$HOST_B_ADDR:$HOST_B_PORT" --quiet >"$HOSTS_DIR/mig.out" 2>&1
	rc=$?
	[ $rc = 1 ] || { note "exit status $rc, expected 1"; return 1; }
	grep -q "cannot record the decision" "$HOSTS_DIR/mig.out" || { note "no reason given"; return 1; }
	one_copy_on vmA "$before" || return 1
	hosts_stop_services; hosts_start_service A && hosts_start_service B || return 1
	second_migration_works
}

# A destination of an earlier version reads format 1.0 only and does not
# say which minor it reads: it must be sent a 1.0 stream (no LIVE records,
# which it would refuse as "unsupported version"), and the guest moves.
case_destination_of_format_1_0() {
	local before
	prepare "" "VMIGRATE_FAULT=dst-reads-1.0" || return 1
	before=$(counter_on vmA)
	vmA migrate $G "$HOST_B_ADDR:$HOST_B_PORT" --quiet >"$HOSTS_DIR/mig.out" 2>&1 ||
		{ note "the migration failed"; return 1; }
	one_copy_on vmB "$before"
}

# A migration's final figures (--json) on stdin: "compress zstd_pages
# compressed_pages normal_pages".
mig_figures() {
	python3 -c '
import json, sys
s = json.load(sys.stdin)
print(s["compress"], s["zstd_pages"], s["compressed_pages"], s["normal_pages"])'
}

# A text guest moved with --compress zstd to a destination started with
# the environment $1: its counter before in BEFORE, the job's final figures
# in FIG ("compress zstd_pages compressed_pages normal_pages").
migrate_with_zstd() {
	local out
	prepare "" "$1" "--content text" || return 1
	BEFORE=$(counter_on vmA)
	out=$(vmA migrate $G "$HOST_B_ADDR:$HOST_B_PORT" --compress zstd --quiet --json \
		2>"$HOSTS_DIR/mig.out") || { note "the migration failed: $out"; return 1; }
	FIG=$(echo "$out" | mig_figures) || { note "no figures: $out"; return 1; }
}

# Asked for zstd (format 1.2), a destination that reads it gets zstd pages
# and the guest verifies there.
case_zstd_pages_to_a_destination_of_this_version() {
	migrate_with_zstd "" || return 1
	set -- $FIG
	[ "$1" = zstd ] && [ "$2" -gt 1000 ] && [ "$3" -ge "$2" ] ||
		{ note "figures (compress zstd_pages compressed normal): $FIG"; return 1; }
	one_copy_on vmB "$BEFORE"
}

# Asked for zstd, a destination of an earlier version (1.1: LIVE records
# but no zstd pages; 1.0: neither) gets LZ4 instead, the source says so
# in its log and the job's figures, and the guest moves.
zstd_falls_back_to_lz4_for() {
	local fault=$1 minor=$2
	migrate_with_zstd "VMIGRATE_FAULT=$fault" || return 1
	set -- $FIG
	[ "$1" = lz4 ] && [ "$2" = 0 ] && [ "$3" -gt 1000 ] ||
		{ note "figures (compress zstd_pages compressed normal): $FIG"; return 1; }
	grep -rqs "reads record format 1.$minor, zstd pages need 1.2: compressing with lz4" \
		"$HOSTS_DIR/A" || { note "no warning in A's log"; return 1; }
	one_copy_on vmB "$BEFORE"
}

case_zstd_to_a_destination_of_format_1_1_goes_as_lz4() {
	zstd_falls_back_to_lz4_for dst-reads-1.1 1
}

case_zstd_to_a_destination_of_format_1_0_goes_as_lz4() {
	zstd_falls_back_to_lz4_for dst-reads-1.0 0
}

ALL_CASES="destination_of_format_1_0 zstd_pages_to_a_destination_of_this_version zstd_to_a_destination_of_format_1_1_goes_as_lz4 zstd_to_a_destination_of_format_1_0_goes_as_lz4 destination_not_listening destination_killed_mid_round destination_killed_after_source_paused connection_cut_by_firewall corrupted_byte_in_stream cancel_while_setting_up cancel_mid_round cancel_after_source_paused lost_answer_after_handover_is_uncertain source_service_killed_mid_migration destination_stopped_after_loaded stalled_source_and_stopped_destination destination_cannot_record_decision"
# MIGRATE_FAULTS_CASES="a b" runs only those (while working on one)
for c in ${MIGRATE_FAULTS_CASES:-$ALL_CASES}; do
	case_wanted "$c" || continue
	: >"$HOSTS_DIR/mig.out"
	"case_$c"
	rc=$?
	[ $rc = 2 ] && continue
	result "$c" $rc
done
[ $FAILS = 0 ]
