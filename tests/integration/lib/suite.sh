# Bookkeeping every shell suite shares: its name, the skip (with the
# reason) where KVM is missing, and PASS/FAIL lines that the runner counts.
# Source it, then call suite_begin NAME; end with suite_end.

suite_begin() {
	SUITE=$1
	FAILS=0
	if [ ! -e /dev/kvm ]; then
		echo "SKIP $SUITE: /dev/kvm is missing"
		exit 0
	fi
}

# check CASE STATUS WHY: one result line
check() {
	if [ "$2" = 0 ]; then
		echo "PASS $SUITE.$1"
	else
		echo "FAIL $SUITE.$1: $3"
		FAILS=$((FAILS + 1))
	fi
}

suite_end() {
	[ "$FAILS" = 0 ]
}
