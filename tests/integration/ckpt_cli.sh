#!/bin/bash
# Checkpoint files as operators handle them: `vmigrate run --save` writes
# one with mode 0600, `ckpt info` shows what it holds, `ckpt verify` checks
# it end to end and names what is wrong in a damaged or truncated copy.
set -u
BUILD=${1:-build}
VMIGRATE=$BUILD/vmigrate
. "$(dirname "$0")/lib/suite.sh"
suite_begin ckpt_cli
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
f=$dir/g.ckpt

"$VMIGRATE" run --mem 128M --vcpus 2 --working-set 16M --dirty-rate 20M --duration 0.5 \
	--save "$f" --quiet >/dev/null 2>&1
[ -f "$f" ] && [ "$(stat -c %a "$f")" = 600 ]
check save_writes_a_private_file $? "$(ls -l "$f" 2>&1)"

out=$("$VMIGRATE" ckpt info "$f" --json 2>&1)
echo "$out" | grep -q '"vcpus":2' && echo "$out" | grep -q '"mem_bytes":134217728' &&
	echo "$out" | grep -q '"incremental":false' && echo "$out" | grep -q '"indexed":true'
check info_shows_the_image $? "$out"

out=$("$VMIGRATE" ckpt verify "$f" 2>&1)
[ $? = 0 ] && echo "$out" | grep -q "intact"
check verify_accepts_a_good_file $? "$out"

cp "$f" "$dir/bad.ckpt"
size=$(stat -c %s "$f")
flip_byte "$dir/bad.ckpt" $((size / 2))
out=$("$VMIGRATE" ckpt verify "$dir/bad.ckpt" 2>&1); rc=$?
[ $rc = 1 ] && echo "$out" | grep -q "checksum mismatch"
check verify_names_a_damaged_byte $? "rc=$rc: $out"

head -c $((size - 100)) "$f" >"$dir/short.ckpt"
out=$("$VMIGRATE" ckpt verify "$dir/short.ckpt" 2>&1); rc=$?
[ $rc = 1 ] && echo "$out" | grep -q "truncated"
check verify_names_a_truncated_file $? "rc=$rc: $out"

ln -s "$f" "$dir/link.ckpt"
out=$("$VMIGRATE" ckpt verify "$dir/link.ckpt" 2>&1); rc=$?
[ $rc = 1 ]
check symlinks_are_not_followed $? "rc=$rc: $out"
# lazy restore: the guest runs first and memory follows; a damaged page
# stops it with an error instead of reaching the guest
out=$("$VMIGRATE" run --restore "$f" --lazy --duration 0.3 --verify --json --quiet 2>&1)
[ $? = 0 ] && echo "$out" | grep -q '"verified":true'
check lazy_restore_verifies $? "$out"
# without --duration: the failure itself must end the run, at once, before
# the guest gets any further (not when the run ends: it never would)
out=$(timeout 30 "$VMIGRATE" run --restore "$dir/bad.ckpt" --lazy --quiet 2>&1); rc=$?
[ $rc = 1 ] && echo "$out" | grep -q "page [0-9]* of .* could not be read back intact" &&
	! echo "$out" | grep -q "self-check FAILED"	# the guest never saw a zero page
check lazy_restore_stops_on_a_damaged_page $? "rc=$rc (124: it ran on): $out"

# files signed with a key: verified with it, refused with another or if altered
head -c 32 /dev/urandom >"$dir/key"; chmod 600 "$dir/key"
head -c 32 /dev/urandom >"$dir/key2"; chmod 600 "$dir/key2"
"$VMIGRATE" run --mem 128M --working-set 16M --duration 0.3 --save "$dir/s.ckpt" \
	--key "$dir/key" --quiet >/dev/null 2>&1
out=$("$VMIGRATE" ckpt verify "$dir/s.ckpt" --key "$dir/key" 2>&1)
[ $? = 0 ] && echo "$out" | grep -q "the MAC"
check signed_file_verifies_with_its_key $? "$out"
out=$("$VMIGRATE" ckpt verify "$dir/s.ckpt" --key "$dir/key2" 2>&1); rc=$?
[ $rc = 1 ] && echo "$out" | grep -q "authentication failed"
check another_key_is_refused $? "rc=$rc: $out"
out=$("$VMIGRATE" run --restore "$dir/s.ckpt" --key "$dir/key2" --duration 0.1 2>&1); rc=$?
[ $rc = 1 ] && echo "$out" | grep -q "authentication failed"
check restore_refuses_without_the_right_key $? "rc=$rc: $out"
out=$("$VMIGRATE" run --restore "$dir/s.ckpt" --key "$dir/key" --duration 0.2 --verify --quiet 2>&1)
check restore_with_the_key $? "$out"
suite_end
