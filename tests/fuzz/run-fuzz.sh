#!/bin/sh
# Run each fuzz target for SECONDS on its seed corpus plus what earlier
# runs found (kept in FUZZ_DIR/corpus-TARGET), then print one line per
# target; exits non-zero if any target crashed, leaked or hung.
#   run-fuzz.sh FUZZ_DIR SECONDS TARGET...
set -u
dir=$1 seconds=$2
shift 2
src=$(dirname "$0")
failed= summary=

for t in "$@"; do
	case $t in
	reader)	seeds=$src/corpus max_len=65536 ;;
	peer_*)	seeds=$src/corpus-$t max_len=16384 ;;	# 3 lines of <= 4 KiB are read
	control) seeds=$src/corpus-$t max_len=70000 ;;	# past IPC_MAX_LINE
	mig_msg) seeds=$src/corpus-$t max_len=8192 ;;	# a few messages of <= 1036 bytes
	etcd_reply) seeds=$src/corpus-$t max_len=16384 ;;	# calls and a few replies each
	qemu_stream) seeds=$src/corpus-$t max_len=65536 ;;	# pages are 4 KiB each
	domain_ckpt) seeds=$src/corpus-$t max_len=65536 ;;	# a few pages of 4 KiB
	*)	seeds=$src/corpus-$t max_len=4096 ;;
	esac
	mkdir -p "$dir/corpus-$t"
	log=$dir/fuzz_$t.log
	echo "  FUZZ    $t for ${seconds} s (log: $log)"
	"$dir/fuzz_$t" -max_total_time="$seconds" -timeout=10 -max_len="$max_len" \
		-print_final_stats=1 -artifact_prefix="$dir/$t-" \
		"$dir/corpus-$t" "$seeds" >"$log" 2>&1
	rc=$?
	grep '^stat::' "$log"
	runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
	cov=$(grep -o 'cov: [0-9]* ft: [0-9]*' "$log" | tail -n 1)
	if [ $rc -ne 0 ]; then
		failed="$failed $t"
		tail -n 40 "$log"
		summary="$summary$(printf '%-12s FAILED (rc %s): %s' "$t" "$rc" \
			"$(sed -n 's/.*Test unit written to //p' "$log")")
"
	else
		summary="$summary$(printf '%-12s ok: %s runs, %s' "$t" "${runs:-?}" "$cov")
"
	fi
done
printf '%s' "$summary"
if [ -n "$failed" ]; then
	echo "fuzz: FAILED:$failed"
	exit 1
fi
