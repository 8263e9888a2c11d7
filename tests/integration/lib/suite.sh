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

# suite_begin for a suite on two hosts (lib/hosts.sh sourced first): the
# hosts are made now, removed on exit whatever happens, and a suite whose
# hosts cannot be made fails.
suite_with_hosts() {
	trap hosts_cleanup EXIT
	suite_begin "$1"
	hosts_setup || { echo "FAIL $1.setup: cannot create the test hosts"; exit 1; }
}

# case_wanted CASE: whether this run takes $SUITE.CASE. The sanitized run
# (tests/run-sanitized.sh) leaves some cases to the plain run, naming them
# in VMIGRATE_SKIP_CASES ("suite.case ...") with the reason in
# VMIGRATE_SKIP_CASES_WHY; each left out prints its SKIP line here.
case_wanted() {
	# shellcheck disable=SC2086
	case " $(echo ${VMIGRATE_SKIP_CASES:-}) " in
	*" $SUITE.$1 "*)
		echo "SKIP $SUITE.$1: ${VMIGRATE_SKIP_CASES_WHY:-named in VMIGRATE_SKIP_CASES}"
		return 1 ;;
	esac
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

# flip_byte FILE OFFSET: invert the byte at OFFSET, so that the file surely
# changes (writing a fixed byte leaves it as it was where that byte was)
flip_byte() {
	local b
	b=$(od -An -tu1 -j "$2" -N1 "$1" | tr -d ' ')
	# shellcheck disable=SC2059
	printf "$(printf '\\%03o' $((b ^ 255)))" | dd of="$1" bs=1 seek="$2" conv=notrunc 2>/dev/null
}
