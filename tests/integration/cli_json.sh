#!/bin/bash
# The one JSON envelope of every command (vmigrate(1), JSON OUTPUT), on two
# namespaced hosts: each command's failure with --json prints exactly one
# object on stdout, {"ok":false,"error":...,"code":...}, with the code the
# cause calls for, from the set the man page lists (which is the set the
# code defines); usage errors too; and successes say "ok":true. Every
# command of `vmigrate --help` but help is made to fail at least once.
set -u
BUILD=${1:-build}
HERE=$(cd "$(dirname "$0")" && pwd)
SRC=$(cd "$HERE/../.." && pwd)
. "$HERE/lib/hosts.sh"
. "$HERE/lib/suite.sh"
suite_with_hosts cli_json
MAN=$SRC/tools/man/vmigrate.1.scd
ENV="python3 $HERE/lib/envelope.py"
DEST=$HOST_B_ADDR:$HOST_B_PORT
COVERED=" "
# one line, whatever the output: never a line a test runner would count
flat() { tr '\n' ' ' | cut -c1-600; }

# the man page's codes are the code's (tools/common/ipc.h), no more, no less
man=$($ENV codes "$MAN" | sort)
code=$(sed -n 's/^#define IPC_E_[A-Z_]*[[:space:]]*"\([a-z-]*\)".*/\1/p' "$SRC/tools/common/ipc.h" | sort)
[ -n "$man" ] && [ "$man" = "$code" ]
check codes_documented_are_the_codes $? "man: $(echo $man) / ipc.h: $(echo $code)"

# fails CASE CODE CLI ARGS...: the command fails with exactly one envelope
# carrying CODE on stdout, and a non-zero exit status
fails() {
	local name=$1 want=$2 cli=$3 out rc why
	shift 3
	COVERED="$COVERED$1 "
	out=$($cli "$@" --json 2>"$HOSTS_DIR/err"); rc=$?
	why=$(printf '%s' "$out" | $ENV check "$MAN" false "$want")
	[ $rc != 0 ] && [ -z "$why" ]
	check "fails.$name" $? "rc=$rc: ${why:-exit status 0}; stderr: $(flat <"$HOSTS_DIR/err")"
}

# succeeds CASE CLI ARGS...: exit status 0 and one envelope with ok true
succeeds() {
	local name=$1 cli=$2 out rc why
	shift 2
	out=$($cli "$@" --json 2>"$HOSTS_DIR/err"); rc=$?
	why=$(printf '%s' "$out" | $ENV check "$MAN" true)
	[ $rc = 0 ] && [ -z "$why" ]
	check "succeeds.$name" $? "rc=$rc: $why; stderr: $(flat <"$HOSTS_DIR/err")"
}

none() { VMIGRATE_CONTROL="$HOSTS_DIR/no-such.sock" "$VMIGRATE" "$@"; }
local_cli() { "$VMIGRATE" "$@"; }

# ---- without a service, and the command line's own errors ---------------------
fails list_without_service no-service none list
fails jobs_without_service no-service none jobs
fails metrics_without_service no-service none metrics
fails check_without_service check-failed none check
fails unknown_command bad-argument none frobnicate
fails migrate_without_destination bad-argument none migrate g
fails migrate_bad_value bad-argument none migrate g "$DEST" --max-downtime soon
fails run_bad_value bad-argument local_cli run --mem 12Q
fails run_missing_payload bad-argument local_cli run --guest /nonexistent/payload --duration 0.1
fails jobs_unknown_option bad-argument none jobs --bogus
fails set_bandwidth_bad_rate bad-argument none set-bandwidth job-1 fast
fails ckpt_info_missing_file not-found local_cli ckpt info "$HOSTS_DIR/none.ckpt"
fails ckpt_merge_missing_file not-found local_cli ckpt merge "$HOSTS_DIR/none.ckpt" "$HOSTS_DIR/m.ckpt"
fails restore_missing_file not-found none restore "$HOSTS_DIR/none.ckpt"
fails snapshot_into_a_directory bad-argument none snapshot g "$HOSTS_DIR"
fails backup_without_dir bad-argument none backup g --keep 2

"$VMIGRATE" run --mem 64M --working-set 4M --duration 0.2 --save "$HOSTS_DIR/r.ckpt" \
	--quiet >/dev/null 2>&1
cp "$HOSTS_DIR/r.ckpt" "$HOSTS_DIR/bad.ckpt"
size=$(stat -c %s "$HOSTS_DIR/bad.ckpt")
flip_byte "$HOSTS_DIR/bad.ckpt" $((size / 2))
fails ckpt_verify_damaged_file integrity local_cli ckpt verify "$HOSTS_DIR/bad.ckpt"
succeeds ckpt_info local_cli ckpt info "$HOSTS_DIR/r.ckpt"
succeeds ckpt_verify local_cli ckpt verify "$HOSTS_DIR/r.ckpt"

# ---- against the services --------------------------------------------------------
hosts_start_service A && hosts_start_service B ||
	{ echo "FAIL cli_json.setup: the services did not start"; exit 1; }
vmA start g --mem 128M --working-set 8M --dirty-rate 4M >/dev/null &&
	vmA start x --mem 64M --working-set 4M >/dev/null &&
	vmB start x --mem 64M --working-set 4M >/dev/null ||
	{ echo "FAIL cli_json.setup: the guests did not start"; exit 1; }

fails start_name_taken exists vmA start g --mem 64M
fails info_no_guest not-found vmA info nope
fails stop_no_guest not-found vmA stop nope
fails verify_no_guest not-found vmA verify nope
fails migrate_no_guest not-found vmA migrate nope "$DEST"
fails migrate_closed_port peer-unreachable vmA migrate g "$HOST_B_ADDR:1"
fails migrate_downtime_never_met bad-argument vmA migrate g "$DEST" --max-downtime 0
# the destination refuses: a guest of that name runs there (the job's code)
fails migrate_refused_by_destination refused vmA migrate x "$DEST" --quiet
fails replicate_no_guest not-found vmA replicate nope "$DEST"
fails replicate_status_not_replicated wrong-state vmA replicate status g
fails replicate_stop_not_replicated wrong-state vmA replicate stop g
fails failover_not_replicated wrong-state vmA failover g
fails resume_not_uncertain wrong-state vmA resume g
fails snapshot_incremental_without_base wrong-state vmA snapshot g "$HOSTS_DIR/i.ckpt" --incremental
fails backup_no_guest not-found vmA backup nope --dir "$HOSTS_DIR/bk" --keep 1
fails cancel_no_job not-found vmA cancel no-such-job
fails set_bandwidth_no_job not-found vmA set-bandwidth no-such-job 10M
fails migrate_postcopy_no_job not-found vmA migrate-postcopy no-such-job
fails migrate_recover_no_job not-found vmA migrate-recover no-such-job

# a job that ended without completing is in the finished jobs with its code
out=$(vmA jobs --completed --json | python3 -c '
import json, sys
print(" ".join(j.get("code", "-") for j in json.load(sys.stdin)["jobs"]
               if j.get("guest") == "x" and j["stats"]["status"] != "completed"))')
[ "$out" = refused ]
check failed_job_kept_with_its_code $? "codes of x's failed jobs: '$out'"

succeeds list vmA list
succeeds info vmA info g
succeeds jobs vmA jobs --all
succeeds metrics vmA metrics
succeeds snapshot vmA snapshot g "$HOSTS_DIR/s.ckpt"
out=$(vmA migrate g "$DEST" --quiet --json 2>/dev/null); rc=$?
why=$(printf '%s' "$out" | $ENV check "$MAN" true)
[ $rc = 0 ] && [ -z "$why" ] && echo "$out" | grep -q '"job":"g-[0-9]*"' &&
	echo "$out" | grep -q '"status":"completed"'
check succeeds.migrate_with_its_job $? "rc=$rc: $why: $(echo "$out" | flat)"

# every command but help failed once above
missing=""
for c in $("$VMIGRATE" --help | sed -n '/^commands:/,/^$/s/^  \([a-z][a-z-]*\) .*/\1/p'); do
	[ "$c" = help ] && continue
	case "$COVERED" in *" $c "*) ;; *) missing="$missing $c" ;; esac
done
[ -z "$missing" ]
check every_command_fails_in_the_envelope $? "not made to fail:$missing"
suite_end
