#!/bin/bash
# QEMU 7.2's own migration stream through vm/libvirt/qemu_stream: a QEMU
# under TCG, its RAM filled with known bytes, migrates into qstream-relay,
# which parses the stream into events and writes the stream they make into a
# second QEMU started with -incoming (the return path goes back the same
# way). The second QEMU must finish loading with RAM identical to the
# first's (pmemsave on both), the relay's page counts must be QEMU's
# (query-migrate), and the stream written must be the one read, byte for
# byte. A capability that alters the stream is refused by name, and the
# source keeps its guest and migrates again once it is off.
# KEEP=1 keeps the scratch folder (logs, stats, memory dumps).
set -u
BUILD=${1:-build}
. "$(dirname "$0")/lib/suite.sh"
# TCG needs no /dev/kvm: suite_begin's skip does not apply
SUITE=qemu_stream
FAILS=0
if ! command -v qemu-system-x86_64 >/dev/null; then
	echo "SKIP $SUITE: qemu-system-x86_64 is missing (Debian package qemu-system-x86)"
	exit 0
fi
RELAY=$BUILD/tools/qstream-relay
QMP="python3 $(dirname "$0")/lib/qmp.py"
if [ ! -x "$RELAY" ]; then
	echo "FAIL $SUITE.setup: $RELAY is not built"
	exit 1
fi
dir=$(mktemp -d)
pids=
cleanup() {
	for p in $pids; do kill "$p" 2>/dev/null; done
	wait 2>/dev/null
	if [ -n "${KEEP:-}" ]; then echo "kept $dir" >&2; else rm -rf "$dir"; fi
}
trap cleanup EXIT
MIB=1048576

# 64 MiB of guest RAM: 6 MiB random, 2 MiB of text, the rest zero pages
ram=$dir/ram.img
{ head -c $((6 * MIB)) /dev/urandom; yes 'vmigrate qemu stream' | head -c $((2 * MIB)); } >"$ram"
truncate -s $((64 * MIB)) "$ram"

# jget FILE EXPR: EXPR (Python, over the JSON in FILE as d) printed
jget() {
	python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2"
}

# start_qemu NAME MACHINE [ARGS...]: a paused QEMU with QMP at $dir/NAME.qmp
start_qemu() {
	local name=$1 machine=$2
	shift 2
	qemu-system-x86_64 -accel tcg -machine "$machine" -m 64 -nodefaults -display none -S \
		-qmp "unix:$dir/$name.qmp,server=on,wait=off" "$@" </dev/null >"$dir/$name.log" 2>&1 &
	pids="$pids $!"
}

# start_source NAME MACHINE [ARGS...]: its RAM is the file $ram (private)
start_source() {
	local name=$1 machine=$2
	shift 2
	start_qemu "$name" "$machine,memory-backend=pc.ram" \
		-object "memory-backend-file,id=pc.ram,size=64M,mem-path=$ram,share=off" "$@"
}

# start_relay CASE MACHINE [ARGS...]: a destination QEMU listening, and the
# relay in front of it
start_relay() {
	local c=$1 machine=$2 i
	shift 2
	start_qemu "$c-dst" "$machine" -incoming "unix:$dir/$c-dst.sock" "$@"
	for i in $(seq 100); do [ -S "$dir/$c-dst.sock" ] && break; sleep 0.1; done
	"$RELAY" --listen "$dir/$c-relay.sock" --connect "$dir/$c-dst.sock" \
		--stats "$dir/$c.stats" --idle-s 60 2>"$dir/$c-relay.log" &
	relay=$!
	pids="$pids $relay"
	for i in $(seq 100); do [ -S "$dir/$c-relay.sock" ] && break; sleep 0.1; done
}

# migrate CASE SOURCE [COMMAND-JSON...]: the commands, then migrate into the
# relay and wait for the outcome (query-migrate in $dir/CASE.src.json)
migrate() {
	local c=$1 src=$2
	shift 2
	$QMP "$dir/$src.qmp" --wait-migration 120 "$@" \
		"{\"execute\":\"migrate\",\"arguments\":{\"uri\":\"unix:$dir/$c-relay.sock\"}}" \
		>"$dir/$c.src.json" 2>>"$dir/$c-qmp.log"
	wait "$relay"
	relay_rc=$?
}

# same_ram CASE SRC DST: both QEMUs' first 64 MiB of guest memory, equal,
# and the source's from 1 to 8 MiB (the random and text part, where SeaBIOS
# writes nothing) is the file it was started from
same_ram() {
	local c=$1 s=$2 d=$3 why=
	$QMP "$dir/$s.qmp" "{\"execute\":\"pmemsave\",\"arguments\":{\"val\":0,\"size\":$((64 * MIB)),\"filename\":\"$dir/$c.s.mem\"}}" >/dev/null &&
	$QMP "$dir/$d.qmp" "{\"execute\":\"pmemsave\",\"arguments\":{\"val\":0,\"size\":$((64 * MIB)),\"filename\":\"$dir/$c.d.mem\"}}" >/dev/null ||
		why="pmemsave failed"
	if [ -z "$why" ] && ! cmp -s "$dir/$c.s.mem" "$dir/$c.d.mem"; then
		why="destination RAM differs: $(cmp "$dir/$c.s.mem" "$dir/$c.d.mem" 2>&1 | head -c 200)"
	fi
	if [ -z "$why" ] && ! cmp -s -i $MIB -n $((7 * MIB)) "$dir/$c.s.mem" "$ram"; then
		why="the source's RAM is not the file it was given"
	fi
	[ -z "$why" ]
	check "$c.ram_identical" $? "$why"
}

# check_counts CASE: the relay saw what QEMU says it sent, and wrote it back
check_counts() {
	local c=$1 s=$dir/$1.stats q=$dir/$1.src.json
	[ "$(jget "$s" 'd["pages"]')" = "$(jget "$q" 'd[-1]["ram"]["normal"]')" ] &&
	[ "$(jget "$s" 'd["zero_pages"]')" = "$(jget "$q" 'd[-1]["ram"]["duplicate"]')" ] &&
	[ "$(jget "$s" 'd["page_bytes"]')" = "$(jget "$q" 'd[-1]["ram"]["normal-bytes"]')" ]
	check "$c.page_counts_match_query_migrate" $? \
		"relay $(cat "$s" 2>&1 | head -c 300); qemu $(jget "$q" 'd[-1]["ram"]' 2>&1)"
	[ "$(jget "$s" 'd["identical"]')" = True ] && [ "$(jget "$s" 'd["blocks"]')" -ge 1 ] &&
		[ "$(jget "$s" 'd["device_bytes"]')" -gt 0 ]
	check "$c.stream_rewritten_byte_for_byte" $? "$(cat "$s" 2>&1 | head -c 300)"
}

# migrated CASE SRC DST DEST-STATUS: both ends completed, the relay too
migrated() {
	local c=$1 s=$2 d=$3 want=$4 st
	st=$($QMP "$dir/$d.qmp" '{"execute":"query-migrate"}' '{"execute":"query-status"}' 2>&1)
	[ "$relay_rc" = 0 ] && [ "$(jget "$dir/$c.src.json" 'd[-1]["status"]')" = completed ] &&
		echo "$st" | grep -q '"status": "completed"' &&
		echo "$st" | grep -q "\"status\": \"$want\"" &&
		echo "$st" | grep -q '"running": false'
	check "$c.migrated" $? "relay rc $relay_rc ($(cat "$dir/$c-relay.log")); source \
$(jget "$dir/$c.src.json" 'd[-1]' 2>&1 | head -c 300); destination $st"
}

# 1. pc, paused (never started): one pass over RAM, no return path
start_source pc-src pc
start_relay pc pc
migrate pc pc-src
migrated pc pc-src pc-dst prelaunch
check_counts pc
same_ram pc pc-src pc-dst
[ "$(jget "$dir/pc.stats" 'd["machine"]')" = pc-i440fx-7.2 ] &&
	[ "$(jget "$dir/pc.stats" 'd["return_path"]')" = False ]
check pc.configuration_read "$?" "$(cat "$dir/pc.stats")"

# 1b. validate-uuid: the configuration/uuid subsection goes over (the
# destination, of the same UUID, checks it)
uuid=0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0
start_source uuid-src "pc" -uuid $uuid
start_relay uuid pc -uuid $uuid
migrate uuid uuid-src \
	'{"execute":"migrate-set-capabilities","arguments":{"capabilities":[{"capability":"validate-uuid","state":true}]}}'
migrated uuid uuid-src uuid-dst prelaunch
check_counts uuid
[ "$(jget "$dir/uuid.stats" 'd["uuid"]')" = $uuid ]
check uuid.uuid_read $? "$(cat "$dir/uuid.stats")"

# 2. q35, running, capped at 8 MiB/s so RAM goes over in many sections while
# SeaBIOS dirties pages; the return path is open (PING/PONG, SHUT)
start_source q35-src q35
start_relay q35 q35
migrate q35 q35-src '{"execute":"cont"}' \
	'{"execute":"migrate-set-capabilities","arguments":{"capabilities":[{"capability":"return-path","state":true}]}}' \
	'{"execute":"migrate-set-parameters","arguments":{"max-bandwidth":8388608}}'
migrated q35 q35-src q35-dst paused
check_counts q35
same_ram q35 q35-src q35-dst
s=$dir/q35.stats
[ "$(jget "$s" 'd["machine"]')" = pc-q35-7.2 ] && [ "$(jget "$s" 'd["return_path"]')" = True ] &&
	[ "$(jget "$s" 'd["pings"]')" = 1 ] && [ "$(jget "$s" 'd["pongs"]')" = 1 ] &&
	[ "$(jget "$s" 'd["shuts"]')" = 1 ] && [ "$(jget "$s" 'd["shut_value"]')" = 0 ]
check q35.return_path_relayed $? "$(cat "$s")"
# 8.6 MB at 8 MiB/s: QEMU's rate limit (a tenth of it per window) ends an
# iteration after each ~0.8 MiB, so there are many PART sections
[ "$(jget "$s" 'd["ram_sections"]')" -gt 3 ]
check q35.many_ram_sections $? "$(cat "$s")"

# 3. capabilities that alter the stream: refused by name; the source stays
# as it was and migrates once the capability is off (after the postcopy-ram
# attempt QEMU 7.2 opens the return path again but no longer reads it: the
# relay's answers to a source that has gone are dropped, see rp_dropped)
for cap in compress postcopy-ram; do
	c=cap-$cap
	start_source "$c-src" pc
	start_relay "$c" pc
	migrate "$c" "$c-src" \
		"{\"execute\":\"migrate-set-capabilities\",\"arguments\":{\"capabilities\":[{\"capability\":\"$cap\",\"state\":true}]}}"
	[ "$relay_rc" = 1 ] && grep -q "capability '$cap' must be off" "$dir/$c-relay.log" &&
		[ "$(jget "$dir/$c.src.json" 'd[-1]["status"]')" = failed ]
	check "$c.refused_by_name" $? "relay rc $relay_rc: $(cat "$dir/$c-relay.log"); \
source $(jget "$dir/$c.src.json" 'd[-1]' 2>&1 | head -c 300)"
	c2=$c-again
	start_relay "$c2" pc
	migrate "$c2" "$c-src" \
		"{\"execute\":\"migrate-set-capabilities\",\"arguments\":{\"capabilities\":[{\"capability\":\"$cap\",\"state\":false}]}}"
	migrated "$c2" "$c-src" "$c2-dst" prelaunch
	same_ram "$c2" "$c-src" "$c2-dst"
done

suite_end
