#!/bin/bash
# Runs every test suite: the C unit and integration binaries in BUILD/tests
# and the shell tests in tests/integration. Prints each suite's lines and,
# last, the summary of all: "N passed, N failed[, N skipped]".
# Exits non-zero when any test failed, and when none ran at all (a runner
# that could not work must not look like an empty success).
set -u
build=${1:-build}
here=$(cd "$(dirname "$0")" && pwd)
passed=0 failed=0 skipped=0
if ! log=$(mktemp) || [ ! -w "$log" ]; then
	echo "FAIL run-tests: cannot make a temporary file (mktemp), so no test ran"
	echo "0 passed, 1 failed"
	exit 1
fi
trap 'rm -f "$log"' EXIT

run_suite() {
	local name=$1; shift
	local t0=$SECONDS
	"$@" >"$log" 2>&1
	local rc=$?
	cat "$log"
	echo "# $name took $((SECONDS - t0)) s"
	local p f s
	p=$(grep -c '^PASS ' "$log")
	f=$(grep -c '^FAIL ' "$log")
	s=$(grep -c '^SKIP ' "$log")
	# A suite that died without saying so counts as one failure.
	if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
		echo "FAIL $name: exited with status $rc"
		f=1
	fi
	passed=$((passed + p)) failed=$((failed + f)) skipped=$((skipped + s))
}

for t in "$build"/tests/test_*; do
	[ -x "$t" ] || continue
	run_suite "$(basename "$t")" "$t"
done
if [ -d "$here/integration" ]; then
	for t in "$here"/integration/*.sh; do
		[ -e "$t" ] || continue
		run_suite "$(basename "$t" .sh)" bash "$t" "$build"
	done
fi

if [ $((passed + failed + skipped)) -eq 0 ]; then
	echo "FAIL run-tests: no test ran (nothing in $build/tests or tests/integration printed a result)"
	failed=1
fi
summary="$passed passed, $failed failed"
[ "$skipped" -gt 0 ] && summary="$summary, $skipped skipped"
echo "$summary"
[ "$failed" -eq 0 ]
