#!/bin/bash
# Builds everything with SANITIZER=address, undefined or both
# (address,undefined: one build and one run catch what either finds) into
# BUILD (default build-asan, build-ubsan, build-san) and runs the whole
# suite there (make test). Every
# process the tests start, the services and guest processes whose stderr
# goes to log files included, writes its sanitizer reports into one folder
# (log_path); each report found there afterwards counts as one failure, on
# top of what the suite counted. Prints the suite's lines, the reports and,
# last, "N passed, N failed[, N skipped]". Exits non-zero on any failure.
# Usage: tests/run-sanitized.sh address|undefined|address,undefined [BUILD]
set -u
cd "$(dirname "$0")/.."
san=${1:?usage: run-sanitized.sh address|undefined|address,undefined [BUILD]}
case $san in
address) build=${2:-build-asan} ;;
undefined) build=${2:-build-ubsan} ;;
address,undefined) build=${2:-build-san} ;;
*) echo "run-sanitized: unknown sanitizer '$san'" >&2; echo "0 passed, 1 failed"; exit 1 ;;
esac
reports=$(mktemp -d /tmp/vmigrate-san.XXXXXX)
log=$(mktemp)
trap 'rm -rf "$reports" "$log"' EXIT

# A finding stops the process that made it (ASan always does; UBSan only
# with halt_on_error). LeakSanitizer (part of ASan) checks a process that
# leaves through exit() or main's return, not one that calls _exit(): the
# CLI and the service are checked, forked test cases and guest processes not.
export ASAN_OPTIONS="detect_leaks=1:halt_on_error=1:abort_on_error=0:log_path=$reports/asan"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:log_path=$reports/ubsan"
# The libvirt rig's own suite (tests/integration/libvirt_rig.sh) runs only
# Debian's QEMU and libvirtd, which no sanitizer instruments, for half a
# minute; the plain run covers it. libvirt_migrate.sh runs vmigrate's code
# (LV_RUNS_VMIGRATE=1) and is not skipped by this.
# failover.sh's cases differ mostly in which host, link or etcd member
# fails, through the same takeover and fencing code: the sanitized run
# takes one of each path (a takeover, a fence, the planned switch and its
# resync, a replaced standby), the plain run all, and the checker's own
# test (which runs the checker, not a new path of ours).
# Cases of other suites that take a path another case of theirs takes
# too, differing in timing or in where the fault strikes, are left to the
# plain run as well (lib/suite.sh's case_wanted), to keep CI within half
# an hour: a cancel while setting up (cancel_mid_round cancels), a link
# cut by a firewall (the io timeout: destination_killed_mid_round fails
# the same way), a destination of format 1.0 (the welcome's one field), and
# a libvirt destination stopped mid-stream (the watchdog of the stalled
# destination's case, earlier in the stream); of libvirt's memory snapshot
# path, the FIFO's directory removed (the reader's failure, as when it gives
# up), a compressed image (refused by the header check, which
# test_libvirt_snapshot runs) and a domain with a disk (the same snapshot
# XML with one more element, and a second guest to boot under TCG); and
# post-copy's link cut between the services (test_postcopy cuts a link
# during post-copy and recovers, in process).
export FAILOVER_CASES="primary_guest_killed primary_partitioned planned_failover_and_back
	standby_killed_then_replaced"
export FAILOVER_SKIP_WHY="SANITIZER=$san run: the same takeover and fencing code as the cases it runs; the plain run covers it"
export VMIGRATE_SKIP_CASES="migrate_faults.cancel_while_setting_up
	migrate_faults.connection_cut_by_firewall migrate_faults.destination_of_format_1_0
	libvirt_migrate.stopped_dest_mid_stream_fails_bounded
	libvirt_snapshot.libvirt_snapshot_fifo_dir_removed
	libvirt_snapshot.libvirt_compressed_image_refused
	libvirt_snapshot.libvirt_memory_snapshot_leaves_disks_out
	postcopy.link_cut_pauses_then_recovers"
export VMIGRATE_SKIP_CASES_WHY="SANITIZER=$san run: the same code path as another case of its suite; the plain run covers it"
export VMIGRATE_SKIP_LIBVIRT_RIG="SANITIZER=$san run: the rig runs no vmigrate code yet, the plain run covers it"

if ! make -j"$(nproc)" BUILD="$build" SANITIZER="$san" all; then
	echo "FAIL sanitize-$san.build: the $san build failed"
	echo "0 passed, 1 failed"
	exit 1
fi
make test BUILD="$build" SANITIZER="$san" 2>&1 | tee "$log"
summary=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$log" | tail -n 1)
read -r passed failed skipped < <(echo "$summary" |
	sed -n 's/^\([0-9]*\) passed, \([0-9]*\) failed\(, \([0-9]*\) skipped\)\{0,1\}$/\1 \2 \4/p')
if [ -z "${passed:-}" ]; then
	echo "FAIL sanitize-$san.suite: make test printed no summary"
	passed=0 failed=1 skipped=0
fi
skipped=${skipped:-0}

# Processes still exiting write their reports a moment later. The first
# reports are shown (one finding is often reported by many processes).
sleep 1
n=0
for r in "$reports"/*; do
	[ -s "$r" ] || continue
	n=$((n + 1))
	echo "FAIL sanitize-$san.report: $(basename "$r") (process ${r##*.})"
	[ "$n" -le 5 ] && sed 's/^/#   /' "$r" | head -n 40
done
failed=$((failed + n))

summary="$passed passed, $failed failed"
[ "$skipped" -gt 0 ] && summary="$summary, $skipped skipped"
echo "$summary"
[ "$failed" -eq 0 ]
