#!/bin/bash
# The operator's first contact: every command's --help and -h (without a
# service), --version of both binaries, bad values named with the option,
# `make install` / `make uninstall` into a DESTDIR, the man pages it
# installs, and the bash completion. Needs no /dev/kvm except for the
# completion of guest names, which runs a service and a small guest.
set -u
BUILD=${1:-build}
here=$(cd "$(dirname "$0")" && pwd)
SRC=${VMIGRATE_SRCDIR:-$(cd "$here/../.." && pwd)}
BUILD_ABS=$(cd "$BUILD" && pwd)
VMIGRATE=$BUILD_ABS/vmigrate
VMIGRATED=$BUILD_ABS/vmigrated
. "$here/lib/suite.sh"
SUITE=cli_help FAILS=0		# suite_begin would skip without /dev/kvm

dir=$(mktemp -d)
svc_pid="" guest_pid=""
cleanup() {
	if [ -n "$guest_pid" ]; then
		VMIGRATE_CONTROL=$dir/state/vmigrated.sock "$VMIGRATE" stop web1 >/dev/null 2>&1
		kill "$guest_pid" 2>/dev/null
	fi
	[ -n "$svc_pid" ] && kill "$svc_pid" 2>/dev/null && wait "$svc_pid" 2>/dev/null
	rm -rf "$dir"
}
trap cleanup EXIT
# no service: a command that tried to reach one would say so
export VMIGRATE_CONTROL=$dir/no-such.sock

# ---- help ---------------------------------------------------------------------
out=$("$VMIGRATE" --help 2>&1); rc=$?
cmds=$(echo "$out" | sed -n '/^commands:/,/^$/s/^  \([a-z][a-z-]*\) .*/\1/p')
missing=""
for c in run ckpt start list info stop verify migrate replicate failover resume snapshot \
	restore backup jobs cancel set-bandwidth metrics check; do
	echo "$cmds" | grep -qx "$c" || missing="$missing $c"
done
[ $rc = 0 ] && [ -z "$missing" ] && echo "$out" | grep -q "ckpt .*merge" &&
	echo "$out" | grep -q "COMMAND --help"
check top_level_help_lists_every_command $? "rc=$rc, missing:$missing: $out"

out=$("$VMIGRATE" 2>&1 >/dev/null); rc=$?
[ $rc = 2 ] && echo "$out" | grep -q "^usage: vmigrate COMMAND"
check no_command_is_a_usage_error $? "rc=$rc: $out"

for c in $cmds; do
	bad=""
	for h in --help -h; do
		out=$("$VMIGRATE" "$c" $h 2>"$dir/err"); rc=$?
		if [ $rc != 0 ] || ! echo "$out" | grep -q "^usage: vmigrate $c\b" ||
		   [ -s "$dir/err" ]; then
			bad="$bad [$h rc=$rc: $(head -c 300 "$dir/err") $(echo "$out" | head -n 2)]"
		fi
	done
	# with other arguments around it, and as `vmigrate help CMD`
	out=$("$VMIGRATE" "$c" some-arg -h 2>&1); rc=$?
	[ $rc = 0 ] && echo "$out" | grep -q "^usage: vmigrate $c\b" || bad="$bad [ARG -h rc=$rc]"
	[ "$("$VMIGRATE" help "$c" 2>&1)" = "$("$VMIGRATE" "$c" --help 2>&1)" ] ||
		bad="$bad [help $c differs]"
	check "help.$c" "$([ -z "$bad" ] && echo 0 || echo 1)" "$bad"
done

# every option with a value says its default (or that it is required),
# on its line or the lines that continue it; a file's default is none
out=""
for c in migrate replicate backup run start snapshot restore; do
	out="$out$("$VMIGRATE" "$c" --help | awk -v c="$c" '
		function flush() { if (pend != "" && !ok) print c ":" pend " |"; pend = "" }
		/^  --/ { flush()
			if ($0 ~ /^  --[a-z-]+ [^ ]/ && $2 !~ /FILE|DIR/) {
				pend = $0; ok = $0 ~ /default|required/ }
			next }
		/^                        / { if ($0 ~ /default|required/) ok = 1; next }
		{ flush() }
		END { flush() }')"
done
[ -z "$out" ]
check options_with_values_name_their_defaults $? "$out"

# the subcommand forms and the cases that used to run instead
out=$("$VMIGRATE" restore --help 2>&1); rc=$?
[ $rc = 0 ] && echo "$out" | grep -q "^usage: vmigrate restore FILE"
check restore_help_is_not_a_file $? "rc=$rc: $out"
out=$("$VMIGRATE" cancel --help 2>&1); rc=$?
[ $rc = 0 ] && ! echo "$out" | grep -q "cannot reach"
check cancel_help_does_not_call_the_service $? "rc=$rc: $out"
out=$("$VMIGRATE" ckpt merge -h 2>&1); rc=$?
[ $rc = 0 ] && echo "$out" | grep -q "vmigrate ckpt merge FILE OUT"
check ckpt_subcommand_help $? "rc=$rc: $out"
out=$("$VMIGRATE" replicate status --help 2>&1); rc=$?
[ $rc = 0 ] && echo "$out" | grep -q "vmigrate replicate status NAME"
check replicate_subcommand_help $? "rc=$rc: $out"

bad=""
for h in --help -h; do
	out=$("$VMIGRATED" $h 2>&1); rc=$?
	[ $rc = 0 ] && echo "$out" | grep -q "^usage: vmigrated" &&
		echo "$out" | grep -q -- "--version" || bad="$bad [$h rc=$rc: $out]"
done
[ -z "$bad" ]
check vmigrated_help $? "$bad"

# ---- version ------------------------------------------------------------------
stamp=$(cat "$BUILD_ABS/version.stamp" 2>/dev/null)
v1=$("$VMIGRATE" --version 2>&1); r1=$?
v2=$("$VMIGRATED" --version 2>&1); r2=$?
[ $r1 = 0 ] && [ $r2 = 0 ] && [ -n "$stamp" ] && [ "$v1" = "vmigrate $stamp" ] &&
	[ "$v2" = "vmigrated $stamp" ]
check version_of_both_binaries $? "stamp '$stamp'; '$v1' ($r1); '$v2' ($r2)"
if git -C "$SRC" rev-parse --git-dir >/dev/null 2>&1; then
	# the commit's hash, or the vX.Y tag on it
	head=$(git -C "$SRC" rev-parse --short HEAD)
	tag=$(git -C "$SRC" describe --tags --match 'v[0-9]*' --exact-match 2>/dev/null)
	echo "$stamp" | grep -q "$head" || { [ -n "$tag" ] && [ "v${stamp%-dirty}" = "$tag" ]; }
	check version_names_the_commit $? "'$stamp' names neither commit $head nor its tag '$tag'"
else
	echo "SKIP cli_help.version_names_the_commit: $SRC is not a git checkout"
fi

# ---- bad values and unknown options ------------------------------------------
# CASE WANT ARGS...: exit status 2 and WANT in the message, and the service
# never asked
bad_value() {
	local name=$1 want=$2 out rc
	shift 2
	out=$("$VMIGRATE" "$@" 2>&1); rc=$?
	[ $rc = 2 ] && echo "$out" | grep -qF -- "$want" && ! echo "$out" | grep -q "cannot reach"
	check "$name" $? "rc=$rc, wanted \"$want\": $out"
}
bad_value bad_max_downtime "bad value 'abc' for --max-downtime" migrate web1 hostb --max-downtime abc
bad_value bad_compress_lists_choices "bad value 'gzip' for --compress (auto, lz4, zstd or off)" \
	migrate web1 hostb --compress gzip
bad_value bad_snapshot_compress "bad value 'auto' for --compress (lz4, zstd or off)" \
	snapshot web1 /tmp/f.ckpt --compress auto
bad_value bad_backup_compress "bad value 'gzip' for --compress (lz4, zstd or off)" \
	backup web1 --dir /tmp --keep 2 --compress gzip
bad_value bad_transport_lists_choices "bad value 'udp' for --transport (tls or rdma)" \
	migrate web1 hostb --transport udp
bad_value bad_mem "bad value '12Q' for --mem" start web1 --mem 12Q
bad_value bad_dirty_mode "bad value 'fast' for --dirty-mode (bitmap or ring)" run --dirty-mode fast
bad_value bad_keep "bad value 'none' for --keep" backup web1 --dir /tmp --keep none
bad_value bad_ttl "bad value '1' for --ttl (2 to 3600 seconds)" replicate web1 hostb --ttl 1
bad_value bad_replicate_compress "bad value 'gzip' for --compress (lz4 or off)" \
	replicate web1 hostb --compress gzip
bad_value bad_rate "bad value 'fast' for RATE" set-bandwidth job1 fast
bad_value unknown_option_named "unknown option '--bogus'" migrate web1 hostb --bogus
bad_value unknown_option_in_restore "unknown option '--bogus'" restore --bogus f.ckpt
bad_value unknown_option_in_cancel "unknown option '--now'" cancel --now
bad_value missing_value_named "option '--bandwidth' needs a value" migrate web1 hostb --bandwidth
bad_value missing_key_value "option '--key' needs a value" ckpt verify f.ckpt --key

# ---- make install / uninstall -------------------------------------------------
dest=$dir/dest
out=$(make -s -C "$SRC" BUILD="$BUILD_ABS" DESTDIR="$dest" PREFIX=/usr install 2>&1); rc=$?
want="usr/bin/vmigrate usr/bin/vmigrated usr/share/man/man1/vmigrate.1
usr/share/man/man8/vmigrated.8 usr/share/man/man5/vmigrated.conf.5
usr/share/bash-completion/completions/vmigrate usr/lib/systemd/system/vmigrated.service
usr/lib/systemd/system/vmigrate-backup@.service usr/lib/systemd/system/vmigrate-backup@.timer"
missing=""
for f in $want; do [ -f "$dest/$f" ] || missing="$missing $f"; done
[ $rc = 0 ] && [ -z "$missing" ] && [ -x "$dest/usr/bin/vmigrate" ] &&
	[ "$("$dest/usr/bin/vmigrated" --version)" = "vmigrated $stamp" ]
check install_puts_every_file $? "rc=$rc, missing:$missing: $out"

u=$dest/usr/lib/systemd/system
grep -q '^ExecStart=/usr/bin/vmigrated\( \|$\)' "$u/vmigrated.service" 2>/dev/null &&
	grep -q '^ExecStart=/usr/bin/vmigrate backup ' "$u/vmigrate-backup@.service" 2>/dev/null &&
	! grep -q /usr/local "$u"/* 2>/dev/null
check installed_units_name_the_installed_binaries $? "$(grep -h Exec "$u"/* 2>&1)"

cmp -s "$SRC/tools/completion/vmigrate.bash" \
	"$dest/usr/share/bash-completion/completions/vmigrate"
check completion_installed $? "differs from tools/completion/vmigrate.bash"

m=$dest/usr/share/man
lint=""
if command -v groff >/dev/null; then
	lint="groff -man -z -ww"
elif command -v mandoc >/dev/null; then
	lint="mandoc -T lint -W warning"
fi
if [ -n "$lint" ]; then
	out=""
	for p in "$m"/man1/vmigrate.1 "$m"/man8/vmigrated.8 "$m"/man5/vmigrated.conf.5; do
		o=$($lint "$p" 2>&1) || o="$o (exit $?)"
		[ -n "$o" ] && out="$out $p: $o"
	done
	[ -z "$out" ]
	check man_pages_read_cleanly $? "$lint:$out"
else
	echo "SKIP cli_help.man_pages_read_cleanly: neither groff nor mandoc is installed"
fi
# the pages have a section for each command and every option of both
# binaries, as a term in bold
missing=""
for c in $cmds; do grep -q "^\.SS $c\b" "$m/man1/vmigrate.1" || missing="$missing $c"; done
for c in $cmds; do
	for o in $("$VMIGRATE" "$c" --help | sed -n 's/^  \(-h, \)\{0,1\}\(--[a-z-]*\).*/\2/p'); do
		grep -qF "\\fB$o\\fR" "$m/man1/vmigrate.1" || missing="$missing $c$o"
	done
done
for o in $("$VMIGRATED" --help | sed -n 's/^  \(-h, \)\{0,1\}\(--[a-z-]*\).*/\2/p'); do
	grep -qF "\\fB$o\\fR" "$m/man8/vmigrated.8" || missing="$missing vmigrated$o"
done
[ -z "$missing" ]
check man_pages_cover_every_command_and_option $? "not in the man pages:$missing"

out=$(make -s -C "$SRC" BUILD="$BUILD_ABS" DESTDIR="$dest" PREFIX=/usr uninstall 2>&1); rc=$?
left=$(find "$dest" -type f 2>/dev/null)
[ $rc = 0 ] && [ -z "$left" ]
check uninstall_removes_them $? "rc=$rc, left: $left $out"

out=$(make -s -C "$SRC" BUILD="$BUILD_ABS" DESTDIR="$dir/dest2" install 2>&1); rc=$?
[ $rc = 0 ] && [ -x "$dir/dest2/usr/local/bin/vmigrate" ] &&
	grep -q '^ExecStart=/usr/local/bin/vmigrated\( \|$\)' \
		"$dir/dest2/usr/local/lib/systemd/system/vmigrated.service"
check install_prefix_defaults_to_usr_local $? "rc=$rc: $out"

# ---- bash completion ----------------------------------------------------------
# complete WORDS...: what the completion offers for the last word
complete_words() {
	bash -c '. "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _vmigrate
		printf "%s\n" "${COMPREPLY[@]}"' _ "$SRC/tools/completion/vmigrate.bash" "$@" |
		sort | tr '\n' ' ' | sed 's/ $//'
}
comp_case() {
	local name=$1 want=$2 got
	shift 2
	got=$(complete_words "$VMIGRATE" "$@")
	[ "$got" = "$want" ]
	check "$name" $? "completing '$*': got '$got', wanted '$want'"
}
comp_case completes_a_command metrics me
comp_case completes_an_option --compress migrate web1 hostb --comp
comp_case completes_an_options_choices "auto lz4 off zstd" migrate web1 hostb --compress ""
comp_case completes_snapshots_compressors "lz4 off zstd" snapshot web1 f.ckpt --compress ""
comp_case completes_subcommands "info merge verify" ckpt ""
comp_case completes_files_for_a_file_argument "$SRC/Makefile" ckpt info "$SRC/Makef"

if [ -e /dev/kvm ]; then
	mkdir -p "$dir/state"
	"$VMIGRATED" --insecure --listen 127.0.0.1:0 --state-dir "$dir/state" \
		>"$dir/service.log" 2>&1 &
	svc_pid=$!
	for _ in $(seq 50); do [ -S "$dir/state/vmigrated.sock" ] && break; sleep 0.1; done
	export VMIGRATE_CONTROL=$dir/state/vmigrated.sock
	out=$("$VMIGRATE" start web1 --mem 64M --working-set 4M --json 2>&1)
	guest_pid=$(echo "$out" | sed -n 's/.*"pid":\([0-9]*\).*/\1/p')
	got=$(complete_words "$VMIGRATE" migrate w)
	got2=$(complete_words "$VMIGRATE" replicate status "")
	[ -n "$guest_pid" ] && [ "$got" = web1 ] && [ "$got2" = web1 ]
	check completes_guest_names $? "got '$got' and '$got2'; start: $out; $(tail -5 "$dir/service.log")"
else
	echo "SKIP cli_help.completes_guest_names: /dev/kvm is missing (no guest to name)"
fi
suite_end
