#!/bin/bash
# Post-copy between two hosts (network namespaces), through the CLI and the
# services: a guest dirtying faster than a shaped link drains, which
# pre-copy with a tight downtime limit cannot move, moves with --postcopy,
# --postcopy-after auto and a manual migrate-postcopy; the guest then runs
# on B only, its memory verifies and its counter never went back. Cancel
# during post-copy is refused with the reason; a destination killed during
# post-copy leaves the source's stale copy paused (lost-in-flight), never
# resumed. Prints one PASS/FAIL/SKIP line per case.
set -u
BUILD=${1:-build}
. "$(dirname "$0")/lib/hosts.sh"
. "$(dirname "$0")/lib/suite.sh"
suite_with_hosts postcopy
hosts_start_service A && hosts_start_service B ||
	{ echo "FAIL postcopy.setup: the services did not start"; exit 1; }

G=pc1
B_AT="$HOST_B_ADDR:$HOST_B_PORT"
note() { echo "#   $*"; }
counter_on() { $1 info $G --json 2>/dev/null | json_field counter; }
state_on() { $1 info $G --json 2>/dev/null | json_field state; }
settled_on() {
	local i
	i=$($1 info $G --json 2>/dev/null)
	echo "$(echo "$i" | json_field state)/$(echo "$i" | json_field memory)"
}

# the job (on A) once its status is $1, in JOB; 1 when it never was
job_in() {
	JOB=
	for _ in $(seq 200); do
		JOB=$(vmA jobs --json 2>/dev/null | sed -n "s/.*\"job\":\"\([^\"]*\)\".*\"status\":\"$1\".*/\1/p")
		[ -n "$JOB" ] && return 0
		sleep 0.05
	done
	return 1
}

# B gave up what it received: a refused receiver lingers a moment to drain
# (never running the guest), then it is gone
b_gave_up() {
	for _ in $(seq 60); do
		[ "$(state_on vmB)" = running ] && return 1
		[ -z "$(state_on vmB)" ] && return 0
		sleep 0.1
	done
	return 1
}

# A fresh guest on A: 512 MiB dirtying 200 MiB/s of a 128 MiB working set,
# or (big) 1 GiB dirtying 1000 MiB/s (asked: the vCPUs share two cores).
fresh_guest() {
	vmB stop $G >/dev/null 2>&1
	vmA stop $G >/dev/null 2>&1
	for _ in $(seq 50); do [ -z "$(state_on vmA)$(state_on vmB)" ] && break; sleep 0.1; done
	local opts="--mem 512M --vcpus 2 --working-set 128M --dirty-rate 200M" want=40000
	[ "${1:-}" = big ] && opts="--mem 1G --vcpus 2 --working-set 256M --dirty-rate 1000M" want=65536
	# a guest just stopped may hold its name a moment longer
	for _ in $(seq 50); do
		# shellcheck disable=SC2086
		vmA start $G $opts >/dev/null 2>&1 && break
		sleep 0.1
	done
	wait_counter vmA $G $want
}

# The guest runs on B only, verifies there, its counter >= $1 and moving.
on_b_only() {
	local min=$1 c c2
	# B says ALL_IN, then finishes taking the guest: a moment after A ends
	# (while pages still come it is running too, its memory postcopy-*)
	for _ in $(seq 30); do [ "$(settled_on vmB)" = running/loaded ] && break; sleep 0.1; done
	[ "$(settled_on vmB)" = running/loaded ] || { note "on B: '$(settled_on vmB)'"; return 1; }
	for _ in $(seq 60); do [ -z "$(state_on vmA)" ] && break; sleep 0.1; done
	[ -z "$(state_on vmA)" ] || { note "still on A: $(state_on vmA)"; return 1; }
	vmB verify $G >/dev/null || { note "verify failed on B"; return 1; }
	c=$(counter_on vmB)
	[ "$c" -ge "$min" ] || { note "counter went back: $c < $min"; return 1; }
	sleep 0.3
	c2=$(counter_on vmB)
	[ "$c2" -gt "$c" ] || { note "the guest does not go on at B"; return 1; }
}

# migrate the big guest with the default downtime limit and the given
# options; $1 names the case, $2 says whether it must have switched
# ("switched"), or may have converged in pre-copy ("either": auto switches
# only once rounds stop shrinking, and a starved guest dirties less)
moves_with() {
	local name=$1 must=$2 before out rc
	shift 2
	fresh_guest big || { check "$name" 1 "no guest"; return; }
	before=$(counter_on vmA)
	out=$(vmA migrate $G "$B_AT" --timeout 60 --json "$@" 2>&1)
	rc=$?
	[ $rc = 0 ] && { [ "$must" = either ] || echo "$out" | grep -q '"postcopy_bytes":[1-9]'; } &&
		on_b_only "$before"
	check "$name" $? "rc $rc: $(echo "$out" | tail -n 1)"
	echo "$out" | grep -q '"postcopy_bytes":[1-9]' || note "$name: converged in pre-copy"
}

shape() {
	[ "$USE_NETNS" = 1 ] && command -v tc >/dev/null || return 0
	ip netns exec "$NS_A" tc qdisc del dev "va$HOSTS_TAG" root 2>/dev/null
	ip netns exec "$NS_A" tc qdisc add dev "va$HOSTS_TAG" root tbf rate "$1" burst 256kb \
		latency 2s || echo "# cannot shape the link: cases run unshaped"
}

# 1 Gbit/s against 1000 MiB/s of dirtying: pre-copy does not get there
shape 1gbit
fresh_guest big
out=$(vmA migrate $G "$B_AT" --timeout 12 --json 2>&1)
rc=$?
[ $rc = 1 ] && [ "$(state_on vmA)" = running ] && b_gave_up
check precopy_alone_does_not_converge $? "rc $rc, A '$(state_on vmA)', B '$(state_on vmB)': $out"
moves_with pure_postcopy switched --postcopy
moves_with hybrid_auto either --postcopy-after auto
moves_with hybrid_after_one_round switched --postcopy-after 1 --channels 2

# the smaller guest from here on, on a link that drains 25 MiB/s
shape 200mbit
G=pc2

# cancel before the switch: the guest stays on A
fresh_guest
before=$(counter_on vmA)
vmA migrate $G "$B_AT" --postcopy-after manual --quiet >"$HOSTS_DIR/mig.out" 2>&1 &
mig=$!
job_in active
job=$JOB
vmA cancel "$job" >/dev/null 2>&1
wait $mig
rc=$?
c=$(counter_on vmA)
b_gave_up
sa=$(state_on vmA) sb=$(state_on vmB)
vA=$(vmA verify $G 2>&1)
[ -n "$job" ] && [ $rc = 1 ] && [ "$sa" = running ] && [ -z "$sb" ] &&
	vmA verify $G >/dev/null && [ "${c:-0}" -ge "$before" ]
check cancel_before_the_switch_keeps_the_guest $? "job '$job', rc $rc, A '$sa', B '$sb', counter $before -> $c, verify: $vA: $(cat "$HOSTS_DIR/mig.out")"

# manual: the operator switches a job that pre-copy cannot finish
fresh_guest
before=$(counter_on vmA)
vmA migrate $G "$B_AT" --max-downtime 20 --postcopy-after manual --quiet \
	>"$HOSTS_DIR/mig.out" 2>&1 &
mig=$!
job_in active
job=$JOB
sleep 1
sw=$(vmA migrate-postcopy "$job" 2>&1)
wait $mig
rc=$?
[ -n "$job" ] && [ $rc = 0 ] && on_b_only "$before"
check manual_switch $? "job '$job', switch: $sw, rc $rc: $(cat "$HOSTS_DIR/mig.out"); B: $(tail -n 5 "$HOSTS_DIR/B/service.log")"

# cancel during post-copy: refused, the job finishes; slow push for time
fresh_guest
before=$(counter_on vmA)
vmA migrate $G "$B_AT" --postcopy --bandwidth 20M --quiet >"$HOSTS_DIR/mig.out" 2>&1 &
mig=$!
job_in postcopy-active
job=$JOB
cancel=$(vmA cancel "$job" 2>&1)
crc=$?
# meanwhile the destination says the guest runs there, its pages still
# coming, and keeps it (stopped only once every page is in)
binfo=$(vmB info $G --json 2>&1)
bstop=$(vmB stop $G 2>&1)
bsrc=$?
wait $mig
rc=$?
[ -n "$job" ] && [ $crc != 0 ] && echo "$cancel" | grep -q "post-copy" && [ $rc = 0 ] &&
	on_b_only "$before"
check cancel_during_postcopy_is_refused $? "job '$job', cancel rc $crc: $cancel; rc $rc: $(cat "$HOSTS_DIR/mig.out"); B: $(tail -n 5 "$HOSTS_DIR/B/service.log")"
echo "$binfo" | grep -q '"state":"running"' && echo "$binfo" | grep -q '"memory":"postcopy-active"' &&
	[ $bsrc != 0 ] && echo "$bstop" | grep -q "migrating"
check destination_shows_postcopy $? "info on B: $binfo; stop on B (rc $bsrc): $bstop"

# the link cut (every packet dropped) during post-copy, then back: both
# ends wait, the source reconnects by itself, the job completes
if ! case_wanted link_cut_pauses_then_recovers; then
	:	# said why
elif [ "$USE_NETNS" = 1 ] && command -v iptables >/dev/null; then
	fresh_guest
	before=$(counter_on vmA)
	vmA migrate $G "$B_AT" --postcopy --bandwidth 20M --json >"$HOSTS_DIR/mig.out" 2>&1 &
	mig=$!
	job_in postcopy-active
	sleep 0.5
	ip netns exec "$NS_A" iptables -I OUTPUT -d "$HOST_B_ADDR" -j DROP
	ip netns exec "$NS_A" iptables -I INPUT -s "$HOST_B_ADDR" -j DROP
	paused=
	for _ in $(seq 150); do
		vmA jobs --json 2>/dev/null | grep -q '"status":"postcopy-paused"' && paused=1 && break
		sleep 0.1
	done
	sleep 2
	ip netns exec "$NS_A" iptables -D OUTPUT -d "$HOST_B_ADDR" -j DROP
	ip netns exec "$NS_A" iptables -D INPUT -s "$HOST_B_ADDR" -j DROP
	wait $mig
	rc=$?
	[ -n "$paused" ] && [ $rc = 0 ] && grep -q '"postcopy_recoveries":[1-9]' "$HOSTS_DIR/mig.out" &&
		on_b_only "$before"
	check link_cut_pauses_then_recovers $? "paused '$paused', rc $rc: $(tail -n 1 "$HOSTS_DIR/mig.out"); B: $(grep -v pass "$HOSTS_DIR/B/service.log" | tail -n 6)"
else
	echo "SKIP postcopy.link_cut_pauses_then_recovers: needs network namespaces and iptables"
fi

# the destination's guest process killed during post-copy: the source's
# copy is stale (B ran the guest) and stays paused, said so
fresh_guest
vmA migrate $G "$B_AT" --postcopy --bandwidth 20M --quiet >"$HOSTS_DIR/mig.out" 2>&1 &
mig=$!
job_in postcopy-active
sleep 0.5
for p in $(hosts_pids B "vmg:$G"); do kill -9 "$p"; done
wait $mig
rc=$?
st=$(state_on vmA)
c1=$(counter_on vmA); sleep 0.5; c2=$(counter_on vmA)
[ $rc != 0 ] && [ "$st" = lost-in-flight ] && [ "$c1" = "$c2" ] &&
	grep -q "lost in flight" "$HOSTS_DIR/mig.out"
check destination_killed_leaves_the_source_paused $? \
	"rc $rc, state '$st', counter $c1 -> $c2: $(cat "$HOSTS_DIR/mig.out")"
vmA stop $G >/dev/null 2>&1

# plain TCP (both services --insecure), no data channels: pages and first
# touches on their own connections all the same
hosts_stop_services
if hosts_start_service A "" --insecure && hosts_start_service B "" --insecure; then
	G=pc3
	fresh_guest
	before=$(counter_on vmA)
	out=$(vmA migrate $G "$B_AT" --postcopy --channels 0 --json 2>&1)
	rc=$?
	[ $rc = 0 ] && echo "$out" | grep -q '"postcopy_requests":[1-9]' && on_b_only "$before"
	check pure_over_plain_tcp_without_data_channels $? "rc $rc: $out"
else
	check pure_over_plain_tcp_without_data_channels 1 "the services did not start --insecure"
fi

suite_end
