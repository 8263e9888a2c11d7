#!/bin/bash
# The etcd clusters the arbiter's tests (build/tests/test_arbiter) and the
# HA tests run on (lib/etcd.sh): three healthy members with a leader; a
# member killed and restarted; leadership moved; two clusters of one
# suite on different ports; members inside a network namespace, listening
# on exactly the ports etcd_ports names; and nothing left running when a
# suite fails, exits or is killed with SIGKILL.
set -u
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib/suite.sh
. "$here/lib/suite.sh"
# shellcheck source=lib/etcd.sh
. "$here/lib/etcd.sh"

SUITE=arbiter
FAILS=0
if ! etcd_available; then
	echo "SKIP $SUITE: etcd is missing (Debian package etcd-server: tools/install-deps.sh)"
	exit 0
fi
TMP=$(mktemp -d /tmp/vmigrate-arbiter.XXXXXX)
NS=vmgE$$
trap 'etcd_cleanup; ip netns del "$NS" 2>/dev/null; rm -rf "$TMP"' EXIT

# no process of cluster DIR runs
none_left() {
	local dir=$1 pid
	for pid in $(cat "$dir"/m*.pid 2>/dev/null); do
		[ -r "/proc/$pid/cmdline" ] &&
			tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -qF -- "--data-dir $dir/" && return 1
	done
	return 0
}

# wait up to SECS for none_left
gone_within() {
	local dir=$1 secs=$2 t
	for ((t = 0; t < secs * 10; t++)); do
		none_left "$dir" && return 0
		sleep 0.1
	done
	return 1
}

# 1. three members, healthy, with a leader
D1=$TMP/c1
etcd_cluster_start "$D1"
rc=$?
eps=$(etcd_endpoints "$D1")
leader=$(etcd_leader "$D1")
[ "$rc" = 0 ] && [ "$(etcd_running "$D1" | wc -l)" = 3 ] &&
	[[ $eps =~ ^127\.0\.0\.1:[0-9]+,127\.0\.0\.1:[0-9]+,127\.0\.0\.1:[0-9]+$ ]] &&
	[ -n "$leader" ]
check start $? "rc $rc, endpoints '$eps', leader '$leader'"

# 2. kill the leader: two left, healthy, a new leader; restart it: three
etcd_kill "$D1" "$leader"
running=$(etcd_running "$D1" | tr '\n' ' ')
etcd_wait_healthy "$D1" 10
rc=$?
nl=$(etcd_leader "$D1")
[ "$(wc -w <<<"$running")" = 2 ] && [ "$rc" = 0 ] && [ -n "$nl" ] && [ "$nl" != "$leader" ]
check kill_leader $? "running '$running', healthy $rc, old leader $leader, new '$nl'"
etcd_restart "$D1" "$leader"
etcd_wait_healthy "$D1" 10 && [ "$(etcd_running "$D1" | wc -l)" = 3 ]
check restart $? "member $leader did not come back: $(tail -n 3 "$D1/m$leader.log")"

# 2a. leadership handed to a member of our choosing
to=$(((leader + 1) % 3))
etcd_move_leader "$D1" "$to" && [ "$(etcd_leader "$D1")" = "$to" ]
check move_leader $? "member $to does not lead after etcd_move_leader: '$(etcd_leader "$D1")'"

# 2b. every member killed (a host's namespace emptied): health fails at
# once, restart_all brings the cluster back on its data
for i in 0 1 2; do etcd_kill "$D1" $i; done
t0=$(date +%s)
etcd_wait_healthy "$D1" 10 2>/dev/null
rc=$?
etcd_restart_all "$D1" && etcd_wait_healthy "$D1" 10 && [ "$(etcd_running "$D1" | wc -l)" = 3 ] &&
	[ "$rc" != 0 ] && [ $(($(date +%s) - t0)) -lt 8 ]
check restart_all $? "health with no member: $rc; or the cluster did not come back"

# 2c. a guest owned on a 2 s lease: etcd_wait_free waits until it ran out
key=$(printf 'vmigrate/owner/g' | base64 -w0)
lease=$(_etcd_http "$D1" 0 POST /v3/lease/grant '{"TTL":2}' | sed -n 's/.*"ID":"\([0-9]*\)".*/\1/p')
_etcd_http "$D1" 0 POST /v3/kv/put "{\"key\":\"$key\",\"value\":\"eA==\",\"lease\":\"$lease\"}" >/dev/null
etcd_wait_free "$D1" g 1
held=$?
etcd_wait_free "$D1" g 5 && [ -n "$lease" ] && [ "$held" = 1 ] && etcd_wait_free "$D1" other 1
check wait_free $? "lease '$lease'; free while held: $held"

# 3. a second cluster of the same suite: other ports, both healthy
D2=$TMP/c2
etcd_cluster_start "$D2" && etcd_wait_healthy "$D1" 5 &&
	[ -z "$(comm -12 <(tr ',' '\n' <<<"$eps" | sort) <(etcd_endpoints "$D2" | tr ',' '\n' | sort))" ]
check second_cluster $? "endpoints '$eps' and '$(etcd_endpoints "$D2")'"
etcd_stop "$D2"
gone_within "$D2" 3
check stop $? "members of $D2 still run after etcd_stop"

# 4. a suite that fails: its EXIT trap (set by etcd_cluster_start) stops the members
D3=$TMP/c3
bash -c '. "$1"; etcd_cluster_start "$2" || exit 9; exit 1' _ "$here/lib/etcd.sh" "$D3"
rc=$?
[ "$rc" = 1 ] && gone_within "$D3" 2
check cleanup_on_exit $? "rc $rc, or members left running"

# 4b. the same with a trap of the suite's own: both run
D4=$TMP/c4
out=$(bash -c 'trap "echo own-trap" EXIT; . "$1"; etcd_cluster_start "$2" || exit 9; exit 1' \
	_ "$here/lib/etcd.sh" "$D4")
rc=$?
[ "$rc" = 1 ] && [ "$out" = own-trap ] && gone_within "$D4" 2
check cleanup_beside_own_trap $? "rc $rc, output '$out', or members left running"

# 5. a suite killed with SIGKILL (no trap runs): the watchdog stops them
D5=$TMP/c5
bash -c '. "$1"; etcd_cluster_start "$2" || exit 9; touch "$2/up"; exec sleep 60' \
	_ "$here/lib/etcd.sh" "$D5" &
owner=$!
for ((t = 0; t < 200; t++)); do
	[ -e "$D5/up" ] && break
	sleep 0.1
done
up=$(etcd_running "$D5" | wc -l)
{
	kill -9 "$owner"
	wait "$owner"
} 2>/dev/null
[ "$up" = 3 ] && gone_within "$D5" 3
check cleanup_on_sigkill $? "$up members came up; or members left running after SIGKILL"

# 6. members in a network namespace (as the HA tests put one on each host)
if [ "$(id -u)" = 0 ] && ip netns add "$NS" 2>/dev/null; then
	ip -n "$NS" link set lo up
	D6=$TMP/c6
	etcd_cluster_start "$D6" "$NS@127.0.0.1" "$NS@127.0.0.1" "$NS@127.0.0.1" &&
		[ "$(ip netns pids "$NS" | wc -l)" = 3 ] && [ -n "$(etcd_leader "$D6")" ]
	check netns $? "no healthy cluster in namespace $NS"
	# etcd_ports names every port the members listen on, no other (the
	# failover tests cut exactly these)
	ports=$(etcd_ports "$D6" | tr ',' '\n' | sort -n | tr '\n' ' ')
	heard=$(ip netns exec "$NS" ss -Htln | awk '{ n = split($4, a, ":"); print a[n] }' |
		sort -nu | tr '\n' ' ')
	[ "$(wc -w <<<"$ports")" = 6 ] && [ "$ports" = "$heard" ]
	check ports $? "etcd_ports '$ports', listening in $NS: '$heard'"
	etcd_stop "$D6"
	[ -z "$(ip netns pids "$NS")" ]
	check netns_stop $? "processes left in namespace $NS"
else
	echo "SKIP $SUITE.netns: network namespaces need root and ip(8)"
fi

etcd_stop "$D1"
gone_within "$D1" 3
check stop_all $? "members of $D1 still run"
suite_end
