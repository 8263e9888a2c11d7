#!/bin/bash
# Continuous replication between two hosts (network namespaces), without
# an arbiter: the initial sync makes a standby on B, epochs follow and are
# acknowledged, the standby's image verifies at any point and never gets
# ahead of the primary, output is released only for acknowledged epochs,
# a migration is refused while replicated, a clean stop frees the standby,
# and a lost standby leaves the guest running, unprotected, saying so. A
# standby whose primary gave it up gives way to that primary's next sync
# (its copy the base), whether it noticed the loss or not, and to no other.
set -u
BUILD=${1:-build}
. "$(dirname "$0")/lib/hosts.sh"
. "$(dirname "$0")/lib/suite.sh"
suite_with_hosts replicate
hosts_start_service A && hosts_start_service B || exit 1
G=g1
B_AT="$HOST_B_ADDR:$HOST_B_PORT"
status_field() { $1 replicate status $G --json 2>/dev/null | json_field "$2"; }
OUT=$HOSTS_DIR/A/guests/$G.output

vmA start $G --mem 256M --vcpus 2 --working-set 64M --dirty-rate 20M >/dev/null &&
	wait_counter vmA $G 20000 || { echo "FAIL replicate.setup: no guest"; exit 1; }

out=$(vmA replicate $G "$B_AT" 2>&1); rc=$?
# B's process turns standby just after the primary's epochs begin
for _ in $(seq 50); do [ "$(vmB info $G --json | json_field state)" = standby ] && break; sleep 0.1; done
[ $rc = 0 ] && echo "$out" | grep -q "protected\|degraded" &&
	[ "$(vmB info $G --json | json_field state)" = standby ]
check initial_sync_makes_a_standby $? "rc=$rc: $out; B: $(vmB list 2>&1)"

sleep 2
st=$(vmA replicate status $G --json)
epochs=$(echo "$st" | json_field epochs) acked=$(echo "$st" | json_field acked_epoch)
echo "# $(vmA replicate status $G)"
[ "${epochs:-0}" -ge 20 ] && [ "$((epochs - acked))" -le 4 ] &&
	echo "$st" | grep -q '"arbiter":"none: no automatic failover'
check epochs_are_acknowledged $? "$st"

ca=$(vmA info $G --json | json_field counter)
vb=$(vmB verify $G 2>&1); rcv=$?
cb=$(vmB info $G --json | json_field counter)
[ $rcv = 0 ] && [ "$cb" -le "$(vmA info $G --json | json_field counter)" ] && [ "$cb" -gt 20000 ]
check standby_image_verifies $? "verify: $vb; counters A $ca B $cb"

# released lines carry the epoch that covered them; none is ahead of the
# acknowledged epochs, and their counters never go back (a pass takes the
# guest a few seconds: wait for one released under replication)
epoch_max() { sed -n 's/^[0-9.]* token [0-9]* epoch \([0-9]*\): .*/\1/p' "$OUT" | sort -n | tail -1; }
for _ in $(seq 200); do [ "$(epoch_max)" -gt 0 ] 2>/dev/null && break; sleep 0.1; done
max_epoch=$(epoch_max)
acked=$(status_field vmA acked_epoch)	# read after: it only grows
last=$(grep -c 'pass, counter' "$OUT")
sorted=$(grep -o 'counter [0-9]*' "$OUT" | awk '{print $2}' | sort -n -c 2>&1 && echo ok)
[ "$last" -ge 1 ] && [ "${max_epoch:-0}" -le "$acked" ] && [ "${max_epoch:-0}" -gt 0 ] &&
	[ "${sorted##*$'\n'}" = ok ]
check output_waits_for_its_epoch $? "lines $last, max epoch $max_epoch, acked $acked, $sorted"

out=$(vmA migrate $G "$B_AT" --quiet 2>&1); rc=$?
[ $rc = 1 ] && echo "$out" | grep -q "replicated"
check migration_refused_while_replicated $? "rc=$rc: $out"

out=$(vmA replicate stop $G 2>&1); rc=$?
sleep 0.5
[ $rc = 0 ] && echo "$out" | grep -q stopped && [ -z "$(vmB info $G --json 2>/dev/null | json_field state)" ] &&
	[ "$(status_field vmA held_output_bytes)" = 0 ]
check clean_stop_frees_the_standby $? "rc=$rc: $out; B: $(vmB list 2>&1)"

# protected again, then the standby's process dies: the guest runs on,
# unprotected, says so, and a new standby is synchronised on the same host
vmA replicate $G "$B_AT" >/dev/null 2>&1
pid=$(vmB info $G --json | json_field pid)
[ -n "$pid" ] && kill -9 "$pid"
for _ in $(seq 100); do [ "$(status_field vmA state)" = unprotected ] && break; sleep 0.1; done
c1=$(vmA info $G --json | json_field counter); sleep 0.3; c2=$(vmA info $G --json | json_field counter)
st=$(vmA replicate status $G 2>&1)
[ "$(status_field vmA state)" = unprotected ] && [ "$c2" -gt "$c1" ] &&
	[ "$(status_field vmA held_output_bytes)" = 0 ]
check lost_standby_leaves_the_guest_running $? "$st; counters $c1 $c2"

# in sync again: epochs flow (protected, or degraded on a loaded machine)
in_sync() { case $(status_field vmA state) in protected|degraded) return 0 ;; esac; return 1; }
for _ in $(seq 600); do in_sync && break; sleep 0.1; done
st=$(vmA replicate status $G 2>&1)
in_sync && [ "$(vmB info $G --json | json_field state)" = standby ] &&
	[ "$(vmB info $G --json | json_field pid)" != "$pid" ] && vmB verify $G >/dev/null
check a_new_standby_replaces_the_lost_one $? "$st; B: $(vmB list 2>&1)"

before=$(vmA info $G --json | json_field counter)
vmA replicate stop $G >/dev/null && sleep 0.5 &&
	vmA migrate $G "$B_AT" --quiet >/dev/null && vmB verify $G >/dev/null &&
	[ "$(vmB info $G --json | json_field counter)" -ge "$before" ]
check migrates_after_replication $? "$(vmB list 2>&1)"

# A link slower than the guest dirties memory (5 MB/s against 20 MiB/s):
# epochs lengthen, the status says degraded and why, and protection goes on
# (epochs still acknowledged); with the link back, protected again.
if [ "$USE_NETNS" != 1 ] || ! command -v tc >/dev/null; then
	echo "SKIP replicate.slow_link_lengthens_epochs: needs network namespaces and tc (iproute2)"
else
	field() { vmA replicate status g2 --json 2>/dev/null | sed -n "s/.*\"$1\":\"\{0,1\}\([^,\"}]*\).*/\1/p"; }
	vmA start g2 --mem 128M --working-set 8M --dirty-rate 20M >/dev/null &&
		wait_counter vmA g2 2048 && vmA replicate g2 "$B_AT" >/dev/null 2>&1 &&
		ip netns exec "$NS_A" tc qdisc add dev "va$HOSTS_TAG" root tbf rate 40mbit burst 64kb \
			latency 3s
	shaped=$?
	for _ in $(seq 200); do [ "$(field state)" = degraded ] && break; sleep 0.1; done
	a1=$(field acked_epoch); sleep 6; a2=$(field acked_epoch)
	st=$(vmA replicate status g2 2>&1)
	[ $shaped = 0 ] && [ "$(field state)" = degraded ] && [ "${a2:-0}" -gt "${a1:-0}" ] &&
		echo "$st" | grep -q "epochs lengthened to" &&
		[ "$(field epoch_ms | cut -d. -f1)" -gt 100 ]
	check slow_link_lengthens_epochs $? "acked $a1 -> $a2: $st"

	ip netns exec "$NS_A" tc qdisc del dev "va$HOSTS_TAG" root 2>/dev/null
	# One status read decides: a loaded machine may dip to degraded again
	# between two reads (the status once said protected, the check then not).
	ok=1
	for _ in $(seq 300); do
		st=$(vmA replicate status g2 2>&1)
		case $st in *": protected,"*) ok=0; break ;; esac
		sleep 0.1
	done
	check protected_again_on_a_fast_link $ok "$st"
	vmA replicate stop g2 >/dev/null 2>&1
fi
# The primary gives its standby up (the link cut for longer than it waits
# for acknowledgements) and, without an arbiter, that standby stays paused
# at its last epoch. Once the link is back the primary's next sync, proven
# to come from the same guest, takes that copy as its base (only the pages
# that differ cross): protection resumes by itself, the guest never stops
# on A. A guest of the same name that is not that primary (a new g3 on A,
# the first one gone) never gets the copy: it may be the only one left.
if [ "$USE_NETNS" != 1 ] || ! command -v iptables >/dev/null; then
	echo "SKIP replicate.standby_of_a_lost_primary_gives_way_to_its_new_sync: needs network namespaces and iptables"
	echo "SKIP replicate.stale_standby_refused_to_another_guest: needs network namespaces and iptables"
else
	cut_link() {	# -I cuts A off from B, -D heals
		ip netns exec "$NS_A" iptables "$1" OUTPUT -d "$HOST_B_ADDR" -j DROP &&
			ip netns exec "$NS_A" iptables "$1" INPUT -s "$HOST_B_ADDR" -j DROP
	}
	heal_link() { while cut_link -D 2>/dev/null; do :; done; }
	trap 'heal_link; hosts_cleanup' EXIT
	logs() {	# what both services said of g3 (a refusal once), for a failed case
		local h
		for h in A B; do
			grep -h "g3" "$HOSTS_DIR/$h/service.log" 2>/dev/null |
				awk '!/refused: a guest named|refused an incoming/ || !seen++' |
				tail -n 15 | sed "s/^/#   $h: /"
		done
	}
	g3() { $1 replicate status g3 --json 2>/dev/null | json_field "$2"; }
	g3_in_sync() { case $(g3 vmA state) in protected|degraded) return 0 ;; esac; return 1; }
	vmA start g3 --mem 128M --working-set 8M --dirty-rate 5M >/dev/null &&
		wait_counter vmA g3 2048 && vmA replicate g3 "$B_AT" >/dev/null 2>&1
	for _ in $(seq 50); do [ "$(vmB info g3 --json | json_field state)" = standby ] && break; sleep 0.1; done
	old_pid=$(vmB info g3 --json | json_field pid)
	cut_link -I
	for _ in $(seq 200); do [ "$(g3 vmA state)" = unprotected ] && break; sleep 0.1; done
	lost=$(g3 vmA state)
	heal_link
	for _ in $(seq 300); do g3_in_sync && break; sleep 0.1; done
	st=$(vmA replicate status g3 2>&1)
	c1=$(vmA info g3 --json | json_field counter); sleep 0.3
	c2=$(vmA info g3 --json | json_field counter)
	# the last sync's line: "... (N pages sent, M it had already)"
	had=$(grep "guest g3 job .*standby in sync" "$HOSTS_DIR/A/service.log" | tail -1 |
		sed -n 's/.*sent, \([0-9]*\) it had already.*/\1/p')
	[ "$lost" = unprotected ] && g3_in_sync &&
		[ "$(vmA info g3 --json | json_field state)" = running ] && [ "$c2" -gt "$c1" ] &&
		[ "$(vmB info g3 --json | json_field state)" = standby ] &&
		[ "$(vmB info g3 --json | json_field pid)" != "$old_pid" ] &&
		vmB verify g3 >/dev/null && [ "${had:-0}" -gt 0 ]
	rc=$?
	check standby_of_a_lost_primary_gives_way_to_its_new_sync $rc \
		"state while cut: $lost; $st; counters $c1 $c2; pages B had: ${had:-none}; B: $(vmB list 2>&1)"
	[ $rc = 0 ] || logs

	# the primary's guest dies; a new guest of that name on A is another
	# guest: B's copy of the first stays where it is
	stale_pid=$(vmB info g3 --json | json_field pid)
	kill -9 "$(vmA info g3 --json | json_field pid)"
	# gone once list leaves it out: info fails at once on a killed guest
	# that still holds its name, and a start then finds the name taken
	for _ in $(seq 50); do vmA list 2>/dev/null | awk '$1 == "g3" { f = 1 } END { exit !f }' || break; sleep 0.1; done
	if vmA start g3 --mem 128M --working-set 8M --dirty-rate 5M >/dev/null && wait_counter vmA g3 2048; then
		out=$(vmA replicate g3 "$B_AT" 2>&1); rc=$?
	else
		out="the new g3 did not start: $(vmA list 2>&1)"; rc=0
	fi
	[ $rc != 0 ] && echo "$out" | grep -q "keeps it" &&
		[ "$(vmB info g3 --json | json_field pid)" = "$stale_pid" ] &&
		[ "$(vmB info g3 --json | json_field state)" = standby ]
	rc2=$?
	check stale_standby_refused_to_another_guest $rc2 "rc=$rc: $out; B: $(vmB list 2>&1)"
	[ $rc2 = 0 ] || logs
	vmA replicate stop g3 >/dev/null 2>&1
	vmA stop g3 >/dev/null 2>&1
	vmB stop g3 >/dev/null 2>&1
fi
# The primary gives its standby up but its end never reaches the standby
# (fault point repl-abandon-standby: the connection is left open, as behind
# a stalled link), so the standby still waits for epochs when the primary's
# next sync comes: that sync, proven its primary's, ends the wait and takes
# the copy all the same.
kill "$SVC_A_PID" && wait "$SVC_A_PID" 2>/dev/null; SVC_A_PID=
hosts_start_service A "VMIGRATE_FAULT=repl-abandon-standby" || exit 1
g4() { $1 replicate status g4 --json 2>/dev/null | json_field "$2"; }
vmA start g4 --mem 128M --working-set 8M --dirty-rate 5M >/dev/null &&
	wait_counter vmA g4 2048 && vmA replicate g4 "$B_AT" >/dev/null 2>&1
for _ in $(seq 50); do [ "$(vmB info g4 --json | json_field state)" = standby ] && break; sleep 0.1; done
old_pid=$(vmB info g4 --json | json_field pid)
for _ in $(seq 100); do grep -q "g4: this standby of a lost primary" "$HOSTS_DIR/B/service.log" && break; sleep 0.1; done
for _ in $(seq 300); do case $(g4 vmA state) in protected|degraded) break ;; esac; sleep 0.1; done
st=$(vmA replicate status g4 2>&1)
case $(g4 vmA state) in protected|degraded) synced=0 ;; *) synced=1 ;; esac
[ $synced = 0 ] && grep -q "g4 UNPROTECTED: fault point repl-abandon-standby" "$HOSTS_DIR/A/service.log" &&
	[ "$(vmB info g4 --json | json_field state)" = standby ] &&
	[ "$(vmB info g4 --json | json_field pid)" != "$old_pid" ] && vmB verify g4 >/dev/null
rc=$?
check unnoticed_end_of_the_old_stream_gives_way_too $rc "$st; B: $(vmB list 2>&1)"
[ $rc = 0 ] || grep -h "g4" "$HOSTS_DIR/A/service.log" "$HOSTS_DIR/B/service.log" |
	grep -v "vcpu 0 pass" | awk '!/refused/ || !seen++' | tail -n 20 | sed 's/^/#   /'
vmA replicate stop g4 >/dev/null 2>&1
vmA stop g4 >/dev/null 2>&1
vmB stop g4 >/dev/null 2>&1
suite_end
