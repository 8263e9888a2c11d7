# etcd clusters for the tests: N members (3 unless told), one data dir each
# under a directory of the test's, on loopback or on given addresses (each
# member optionally inside a network namespace), on free ports from a base
# derived from $$. Nothing is left running: etcd_cleanup (in the suite's
# EXIT trap, which etcd_cluster_start adds to) kills every member, and a
# watchdog kills them within a second of the owning process dying, even by
# SIGKILL.
#
# Sourced by a shell suite:
#   . tests/integration/lib/etcd.sh
#   etcd_available || { echo "SKIP x: etcd is missing"; exit 0; }
#   etcd_cluster_start DIR [[NETNS@]ADDR ...]  # 3 x 127.0.0.1 by default
#   eps=$(etcd_endpoints DIR)                  # H:P,H:P,H:P (the client URLs)
#   ports=$(etcd_ports DIR) # P,P,... every member's client and peer port
#                          # (for iptables -m multiport: cut etcd, nothing else)
#   etcd_kill DIR I        # SIGKILL member I (0-based)
#   etcd_restart DIR I     # start member I again on its data dir
#   etcd_restart_all DIR   # every member that does not run (after a whole
#                          # host's namespace was killed: hosts_kill_host
#                          # kills the etcd member in it too)
#   etcd_wait_healthy DIR [SECS]   # every member still running answers /health
#                          # (fails at once when none runs)
#   etcd_leader DIR        # prints the leader's index
#   etcd_move_leader DIR I # until member I leads (the leader hands over)
#   etcd_wait_free DIR GUEST [SECS]  # until nobody owns GUEST (the arbiter's
#                          # key vmigrate/owner/GUEST is gone: a lease of an
#                          # earlier case ran out)
#   etcd_stop DIR          # kill every member of that cluster
# or run (for C tests, which then own the members through their process
# group and VMIGRATE_ETCD_OWNER, the pid the watchdog watches):
#   etcd.sh start DIR [SPEC...]   prints the endpoints
#   etcd.sh kill|restart|move_leader DIR I
#   etcd.sh restart_all|leader|stop|endpoints|ports DIR
#
# VMIGRATE_ETCD names the etcd binary (default etcd), VMIGRATE_ETCD_PORT_BASE
# the first port to try. (Never export variables named ETCD_*: etcd reads
# them as its own flags.)
# Files in DIR: members (one line per member: index netns addr client-port
# peer-port), mI/ (data), mI.log, mI.pid, watchdog.pid.

_etcd_bin=${VMIGRATE_ETCD:-etcd}
_etcd_dirs=

etcd_available() {
	command -v "$_etcd_bin" >/dev/null 2>&1
}

# run a command inside member netns $1 ("-" = this one)
_etcd_in() {
	local ns=$1
	shift
	if [ "$ns" = - ]; then
		"$@"
	else
		ip netns exec "$ns" "$@"
	fi
}

# fields of member I: sets _ns _addr _cport _pport; fails if there is none
_etcd_member() {
	local line
	line=$(awk -v i="$2" '$1 == i' "$1/members" 2>/dev/null)
	[ -n "$line" ] || return 1
	read -r _ _ns _addr _cport _pport <<<"$line"
}

_etcd_count() {
	wc -l <"$1/members"
}

# the pid in DIR/mI.pid if that process is alive, not a zombie, and ours
_etcd_live_pid() {
	local dir=$1 i=$2 pid state
	pid=$(cat "$dir/m$i.pid" 2>/dev/null) || return 1
	[ -n "$pid" ] && [ -r "/proc/$pid/stat" ] || return 1
	state=$(sed 's/^.*) \(.\).*/\1/' "/proc/$pid/stat" 2>/dev/null)
	[ "$state" != Z ] || return 1
	tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -qF -- "--data-dir $dir/m$i " || return 1
	echo "$pid"
}

# METHOD PATH [BODY] to member I's client port; prints the reply's body
_etcd_http() {
	local dir=$1 i=$2 method=$3 path=$4 body=${5:-}
	_etcd_member "$dir" "$i" || return 1
	# shellcheck disable=SC2016
	_etcd_in "$_ns" timeout 2 bash -c '
		exec 3<>"/dev/tcp/$0/$1" || exit 1
		printf "%s %s HTTP/1.0\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" \
			"$2" "$3" "$0" "${#4}" "$4" >&3
		sed "1,/^\r\{0,1\}$/d" <&3' "$_addr" "$_cport" "$method" "$path" "$body" 2>/dev/null
}

_etcd_launch() {
	local dir=$1 i=$2 cluster tag pre=()
	_etcd_member "$dir" "$i" || return 1
	cluster=$(cat "$dir/cluster")
	tag=$(basename "$dir")
	# not through a function: $! must be etcd's own pid
	[ "$_ns" = - ] || pre=(ip netns exec "$_ns")
	"${pre[@]}" "$_etcd_bin" --name "m$i" --data-dir "$dir/m$i" \
		--listen-client-urls "http://$_addr:$_cport" \
		--advertise-client-urls "http://$_addr:$_cport" \
		--listen-peer-urls "http://$_addr:$_pport" \
		--initial-advertise-peer-urls "http://$_addr:$_pport" \
		--initial-cluster "$cluster" --initial-cluster-state new \
		--initial-cluster-token "vmigrate-$tag-$$" \
		--logger zap --log-outputs stderr \
		>>"$dir/m$i.log" 2>&1 </dev/null &
	echo $! >"$dir/m$i.pid"
	disown $!	# no "Killed" line from bash when a test kills it
}

# kills the members of DIR when the owner dies or DIR/running goes
_etcd_watchdog() {
	local dir=$1 owner=$2
	(
		while kill -0 "$owner" 2>/dev/null && [ -e "$dir/running" ]; do
			sleep 0.5
		done
		_etcd_kill_all "$dir"
	) >/dev/null 2>&1 </dev/null &
	echo $! >"$dir/watchdog.pid"
	disown $!
}

_etcd_kill_all() {
	local dir=$1 i pid n
	[ -e "$dir/members" ] || return 0
	n=$(_etcd_count "$dir")
	for ((i = 0; i < n; i++)); do
		pid=$(_etcd_live_pid "$dir" "$i") && kill -9 "$pid" 2>/dev/null
	done
	for ((i = 0; i < n; i++)); do
		_etcd_wait_dead "$dir" "$i"
	done
}

_etcd_wait_dead() {
	local t
	for ((t = 0; t < 100; t++)); do
		_etcd_live_pid "$1" "$2" >/dev/null || return 0
		sleep 0.05
	done
	return 1
}

_etcd_add_trap() {
	local cur old
	cur=$(trap -p EXIT)
	case $cur in *etcd_cleanup*) return 0 ;; esac
	if [ -z "$cur" ]; then
		trap etcd_cleanup EXIT
	else
		_etcd_old_trap() { printf '%s' "$2"; }
		old=$(eval "_etcd_old_trap ${cur#trap }")
		trap -- "$old; etcd_cleanup" EXIT
	fi
}

_etcd_port_free() {
	local ns=$1 port=$2
	# awk reads all of ss's output: no broken pipe when the port is found early
	! _etcd_in "$ns" ss -Htan 2>/dev/null |
		awk -v p="$port" '{ n = split($4, a, ":"); if (a[n] == p) f = 1 } END { exit !f }'
}

# etcd_cluster_start DIR [[NETNS@]ADDR ...]: starts the members, waits until
# every one is healthy; tries other ports if one is taken.
etcd_cluster_start() {
	local dir=$1 specs tries base i spec ns addr cluster ok
	shift
	specs=("$@")
	[ ${#specs[@]} -gt 0 ] || specs=(127.0.0.1 127.0.0.1 127.0.0.1)
	mkdir -p "$dir" || return 1
	dir=$(cd "$dir" && pwd)
	if [ "${BASH_SOURCE[0]}" != "$0" ]; then
		_etcd_dirs="$_etcd_dirs $dir"
		_etcd_add_trap
	fi
	base=${VMIGRATE_ETCD_PORT_BASE:-$((20000 + $$ % 600 * 20))}
	for ((tries = 0; tries < 8; tries++)); do
		: >"$dir/members"
		cluster=
		ok=1
		for i in "${!specs[@]}"; do
			spec=${specs[$i]}
			case $spec in
			*@*) ns=${spec%%@*} addr=${spec#*@} ;;
			*) ns=- addr=$spec ;;
			esac
			_etcd_port_free "$ns" $((base + 2 * i)) &&
				_etcd_port_free "$ns" $((base + 2 * i + 1)) || ok=0
			echo "$i $ns $addr $((base + 2 * i)) $((base + 2 * i + 1))" >>"$dir/members"
			cluster="$cluster${cluster:+,}m$i=http://$addr:$((base + 2 * i + 1))"
		done
		if [ "$ok" = 0 ]; then
			base=$((base + 20 > 31980 ? 20000 : base + 20))
			continue
		fi
		echo "$cluster" >"$dir/cluster"
		touch "$dir/running"
		for i in "${!specs[@]}"; do
			rm -rf "$dir/m$i" "$dir/m$i.log"
			_etcd_launch "$dir" "$i" || return 1
		done
		[ -e "$dir/watchdog.pid" ] || _etcd_watchdog "$dir" "${VMIGRATE_ETCD_OWNER:-$_etcd_owner}"
		if etcd_wait_healthy "$dir" 20 &&
			[ "$(etcd_running "$dir" | wc -l)" = "${#specs[@]}" ]; then
			return 0
		fi
		_etcd_kill_all "$dir"
		if ! grep -qs "address already in use" "$dir"/m*.log; then
			echo "etcd_cluster_start: the cluster in $dir did not become healthy:" >&2
			for i in "${!specs[@]}"; do
				tail -n 5 "$dir/m$i.log" | sed "s/^/  m$i: /" >&2
			done
			return 1
		fi
		base=$((base + 20 > 31980 ? 20000 : base + 20))
	done
	echo "etcd_cluster_start: found no free ports" >&2
	return 1
}

etcd_endpoints() {
	awk '{ printf "%s%s:%s", (NR > 1 ? "," : ""), $3, $4 } END { print "" }' "$1/members"
}

etcd_ports() {
	awk '{ printf "%s%s,%s", (NR > 1 ? "," : ""), $4, $5 } END { print "" }' "$1/members"
}

# every member that still runs answers {"health":"true"} within SECS
etcd_wait_healthy() {
	local dir=$1 secs=${2:-20} i n t all
	n=$(_etcd_count "$dir")
	for ((t = 0; t < secs * 10; t++)); do
		if [ -z "$(etcd_running "$dir")" ]; then
			echo "etcd_wait_healthy: no member of $dir runs (etcd_restart_all?)" >&2
			return 1
		fi
		all=1
		for ((i = 0; i < n; i++)); do
			_etcd_live_pid "$dir" "$i" >/dev/null || {
				[ -e "$dir/m$i.pid" ] && grep -qs "address already in use" "$dir/m$i.log" &&
					return 1
				continue
			}
			_etcd_http "$dir" "$i" GET /health | grep -q '"health":"true"' || all=0
		done
		[ "$all" = 1 ] && [ -n "$(etcd_running "$dir")" ] && return 0
		sleep 0.1
	done
	return 1
}

# indexes of the members that run
etcd_running() {
	local dir=$1 i n
	n=$(_etcd_count "$dir")
	for ((i = 0; i < n; i++)); do
		_etcd_live_pid "$dir" "$i" >/dev/null && echo "$i"
	done
}

etcd_kill() {
	local pid
	pid=$(_etcd_live_pid "$1" "$2") || return 0
	kill -9 "$pid" 2>/dev/null
	_etcd_wait_dead "$1" "$2"
}

etcd_restart() {
	_etcd_live_pid "$1" "$2" >/dev/null && return 0
	_etcd_launch "$1" "$2"
}

etcd_restart_all() {
	local dir=$1 i n
	n=$(_etcd_count "$dir")
	for ((i = 0; i < n; i++)); do
		etcd_restart "$dir" "$i" || return 1
	done
}

# the index of the member that leads (asked of each running member)
etcd_leader() {
	local dir=$1 i reply me lead
	for i in $(etcd_running "$dir"); do
		reply=$(_etcd_http "$dir" "$i" POST /v3/maintenance/status '{}') || continue
		me=$(sed -n 's/.*"member_id":"\([0-9]*\)".*/\1/p' <<<"$reply")
		lead=$(sed -n 's/.*"leader":"\([0-9]*\)".*/\1/p' <<<"$reply")
		if [ -n "$me" ] && [ "$me" = "$lead" ]; then
			echo "$i"
			return 0
		fi
	done
	return 1
}

etcd_move_leader() {
	local dir=$1 to=$2 id lead t
	id=$(_etcd_http "$dir" "$to" POST /v3/maintenance/status '{}' |
		sed -n 's/.*"member_id":"\([0-9]*\)".*/\1/p')
	[ -n "$id" ] || return 1
	for ((t = 0; t < 50; t++)); do
		if lead=$(etcd_leader "$dir"); then
			[ "$lead" = "$to" ] && return 0
			_etcd_http "$dir" "$lead" POST /v3/maintenance/transfer-leadership \
				"{\"targetID\":\"$id\"}" >/dev/null
		fi
		sleep 0.1
	done
	return 1
}

etcd_wait_free() {
	local dir=$1 guest=$2 secs=${3:-10} key reply t i
	key=$(printf 'vmigrate/owner/%s' "$guest" | base64 -w0)
	for ((t = 0; t < secs * 10; t++)); do
		for i in $(etcd_running "$dir"); do
			reply=$(_etcd_http "$dir" "$i" POST /v3/kv/range "{\"key\":\"$key\"}") ||
				continue
			case $reply in *'"header"'*) ;; *) continue ;; esac
			case $reply in *'"kvs"'*) break ;; *) return 0 ;; esac
		done
		sleep 0.1
	done
	return 1
}

etcd_stop() {
	local dir=$1 pid
	rm -f "$dir/running"
	_etcd_kill_all "$dir"
	pid=$(cat "$dir/watchdog.pid" 2>/dev/null) && kill "$pid" 2>/dev/null
	rm -f "$dir/watchdog.pid"
	true
}

etcd_cleanup() {
	local d
	for d in $_etcd_dirs; do
		etcd_stop "$d"
	done
	_etcd_dirs=
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
	# run, not sourced: the members outlive this process, owned by the caller
	_etcd_owner=$PPID
	cmd=${1:-}
	shift || true
	case $cmd in
	start) etcd_cluster_start "$@" && etcd_endpoints "$1" ;;
	kill) etcd_kill "$1" "$2" ;;
	restart) etcd_restart "$1" "$2" ;;
	restart_all) etcd_restart_all "$1" ;;
	leader) etcd_leader "$1" ;;
	move_leader) etcd_move_leader "$1" "$2" ;;
	wait_free) etcd_wait_free "$1" "$2" "${3:-10}" ;;
	stop) etcd_stop "$1" ;;
	endpoints) etcd_endpoints "$1" ;;
	ports) etcd_ports "$1" ;;
	healthy) etcd_wait_healthy "$1" "${2:-20}" ;;
	*)
		echo "usage: etcd.sh start DIR [[NETNS@]ADDR...] | kill|restart|move_leader DIR I |" \
			"restart_all|leader|stop|endpoints|ports DIR | healthy DIR [SECS] |" \
			"wait_free DIR GUEST [SECS]" >&2
		exit 2
		;;
	esac
else
	_etcd_owner=$$
fi
