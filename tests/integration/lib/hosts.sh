# Two "hosts" on this machine for the demo and the integration tests:
# network namespaces joined by a veth pair, each running its own vmigrated
# with TLS certificates from tools/mkcerts.sh, with every process, namespace
# and rule removed again on exit (trap).
# Where namespaces cannot be made, two services on loopback ports instead.
# Source this file; set BUILD first. Sets HOST_A_ADDR, HOST_B_ADDR, NS_A,
# NS_B (and HOST_C_ADDR, NS_C, see below), and provides vmA/vmB (the CLI
# against each host's service).
#
# A suite that needs a third host, the witness C (an etcd member's host: no
# vmigrated, no certificates), sets HOSTS_WITNESS=1 before suite_with_hosts
# (or hosts_setup). Then C is a namespace NS_C on the same subnet, holding
# the three hosts' switch: a bridge with a veth to A and one to B, C's own
# address HOST_C_ADDR on the bridge. A and B keep their interface names
# (va$HOSTS_TAG, vb$HOSTS_TAG), so rules and qdiscs on them act alike in
# both layouts; A's traffic to B crosses C's bridge. Without namespaces
# HOST_C_ADDR is 127.0.0.1 and NS_C is not made.
#
#        two hosts                      with the witness
#   A va ------------ vb B      A va --- ca [br C 10.N.0.3] cb --- vb B
#   10.N.0.1    10.N.0.2        10.N.0.1                           10.N.0.2
# (interfaces are named with $HOSTS_TAG appended; N = HOSTS_TAG % 200 + 20)

: "${BUILD:=build}"
MKCERTS=$(realpath "$(dirname "${BASH_SOURCE[0]}")/../../../tools/mkcerts.sh")
VMIGRATE=$(realpath "$BUILD/vmigrate")
VMIGRATED=$(realpath "$BUILD/vmigrated")
HOSTS_DIR=$(mktemp -d /tmp/vmigrate-hosts.XXXXXX)
HOSTS_TAG=$$
NS_A=vmgA$HOSTS_TAG
NS_B=vmgB$HOSTS_TAG
NS_C=vmgC$HOSTS_TAG
: "${HOSTS_WITNESS:=0}"
HOST_C_ADDR=
USE_NETNS=0
PORT=7480
SVC_A_PID=
SVC_B_PID=

hosts_can_netns() {
	[ "$(id -u)" = 0 ] && command -v ip >/dev/null &&
		ip netns add "vmgprobe$HOSTS_TAG" 2>/dev/null &&
		ip netns del "vmgprobe$HOSTS_TAG"
}

# kill every process of a host: in its namespace, or under its state dir
hosts_kill_host() {
	local ns=$1 dir=$2 pids
	if [ "$USE_NETNS" = 1 ]; then
		pids=$(ip netns pids "$ns" 2>/dev/null)
	else
		pids=$(for s in "$dir"/guests/*.sock; do [ -e "$s" ] &&
			VMIGRATE_CONTROL="$dir/vmigrated.sock" "$VMIGRATE" info \
				"$(basename "$s" .sock)" --json 2>/dev/null |
			sed -n 's/.*"pid":\([0-9]*\).*/\1/p'; done)
	fi
	[ -n "$pids" ] && kill -9 $pids 2>/dev/null
	true
}

hosts_cleanup() {
	hosts_stop_services
	hosts_kill_host "$NS_A" "$HOSTS_DIR/A"
	hosts_kill_host "$NS_B" "$HOSTS_DIR/B"
	if [ "$USE_NETNS" = 1 ]; then
		[ "$HOSTS_WITNESS" = 1 ] && hosts_kill_host "$NS_C" "$HOSTS_DIR/C"
		ip netns del "$NS_A" 2>/dev/null
		ip netns del "$NS_B" 2>/dev/null
		[ "$HOSTS_WITNESS" = 1 ] && ip netns del "$NS_C" 2>/dev/null
	fi
	rm -rf "$HOSTS_DIR"
}

# A's and B's interfaces: the two ends of one veth pair, or (with the
# witness) each the end of a veth whose other end is a port of C's bridge
hosts_wire() {
	if [ "$HOSTS_WITNESS" != 1 ]; then
		ip link add "va$HOSTS_TAG" netns "$NS_A" type veth peer name "vb$HOSTS_TAG" netns "$NS_B"
		return
	fi
	ip netns add "$NS_C" &&
	ip -n "$NS_C" link add "br$HOSTS_TAG" type bridge &&
	ip link add "va$HOSTS_TAG" netns "$NS_A" type veth peer name "ca$HOSTS_TAG" netns "$NS_C" &&
	ip link add "vb$HOSTS_TAG" netns "$NS_B" type veth peer name "cb$HOSTS_TAG" netns "$NS_C" &&
	ip -n "$NS_C" link set "ca$HOSTS_TAG" master "br$HOSTS_TAG" &&
	ip -n "$NS_C" link set "cb$HOSTS_TAG" master "br$HOSTS_TAG" &&
	ip -n "$NS_C" addr add "10.$1.0.3/24" dev "br$HOSTS_TAG" &&
	ip -n "$NS_C" link set lo up &&
	ip -n "$NS_C" link set "ca$HOSTS_TAG" up && ip -n "$NS_C" link set "cb$HOSTS_TAG" up &&
	ip -n "$NS_C" link set "br$HOSTS_TAG" up
}

hosts_setup() {
	local net=$((HOSTS_TAG % 200 + 20))
	mkdir -p "$HOSTS_DIR/A" "$HOSTS_DIR/B"
	if hosts_can_netns; then
		USE_NETNS=1
		ip netns add "$NS_A" && ip netns add "$NS_B" &&
		hosts_wire "$net" &&
		ip -n "$NS_A" addr add "10.$net.0.1/24" dev "va$HOSTS_TAG" &&
		ip -n "$NS_B" addr add "10.$net.0.2/24" dev "vb$HOSTS_TAG" &&
		ip -n "$NS_A" link set lo up && ip -n "$NS_B" link set lo up &&
		ip -n "$NS_A" link set "va$HOSTS_TAG" up && ip -n "$NS_B" link set "vb$HOSTS_TAG" up ||
			return 1
		HOST_A_ADDR=10.$net.0.1
		HOST_B_ADDR=10.$net.0.2
		HOST_A_PORT=$PORT
		HOST_B_PORT=$PORT
		[ "$HOSTS_WITNESS" = 1 ] && HOST_C_ADDR=10.$net.0.3
	else
		echo "# network namespaces unavailable: two services on loopback ports instead"
		HOST_A_ADDR=127.0.0.1
		HOST_B_ADDR=127.0.0.1
		HOST_A_PORT=$((17000 + HOSTS_TAG % 1000 * 2))
		HOST_B_PORT=$((HOST_A_PORT + 1))
		[ "$HOSTS_WITNESS" = 1 ] && HOST_C_ADDR=127.0.0.1
	fi
	"$MKCERTS" "$HOSTS_DIR/pki" hostA "$HOST_A_ADDR" &&
		"$MKCERTS" "$HOSTS_DIR/pki" hostB "$HOST_B_ADDR"
}

# start (or restart) a host's service; extra env such as VMIGRATE_FAULT=x
# in $2, extra service options in $3
hosts_start_service() {
	local host=$1 env=${2:-} opts=${3:-} dir addr port ns log
	if [ "$host" = A ]; then dir=$HOSTS_DIR/A addr=$HOST_A_ADDR port=$HOST_A_PORT ns=$NS_A
	else dir=$HOSTS_DIR/B addr=$HOST_B_ADDR port=$HOST_B_PORT ns=$NS_B; fi
	log=$dir/service.log
	rm -f "$dir/vmigrated.sock"	# a killed service's: not a sign of this one
	case " $opts " in
	*" --insecure "*|*" --tls-dir "*) ;;
	*) opts="$opts --tls-dir $HOSTS_DIR/pki/host$host" ;;
	esac
	# the machine's own libvirt is none of the tests' business
	case " $opts " in
	*" --libvirt "*) ;;
	*) opts="$opts --libvirt none" ;;
	esac
	if [ "$USE_NETNS" = 1 ]; then
		env $env ip netns exec "$ns" "$VMIGRATED" --state-dir "$dir" \
			--listen "$addr:$port" $opts >>"$log" 2>&1 &
	else
		env $env "$VMIGRATED" --state-dir "$dir" --listen "$addr:$port" $opts >>"$log" 2>&1 &
	fi
	if [ "$host" = A ]; then SVC_A_PID=$!; else SVC_B_PID=$!; fi
	for _ in $(seq 50); do [ -S "$dir/vmigrated.sock" ] && return 0; sleep 0.1; done
	echo "# service $host did not start:"; cat "$log"
	return 1
}

hosts_stop_services() {
	for p in $SVC_A_PID $SVC_B_PID; do kill "$p" 2>/dev/null; done
	for p in $SVC_A_PID $SVC_B_PID; do wait "$p" 2>/dev/null; done
	rm -f "$HOSTS_DIR/A/vmigrated.sock" "$HOSTS_DIR/B/vmigrated.sock"
	SVC_A_PID= SVC_B_PID=
}

# the namespace of host A, B or C
hosts_ns() {
	case $1 in
	A) echo "$NS_A" ;;
	B) echo "$NS_B" ;;
	C) echo "$NS_C" ;;
	*) return 1 ;;
	esac
}

# the pids of processes named COMM (vmg:NAME) on host A, B or C; without
# namespaces, on this machine
hosts_pids() {
	local ns p
	ns=$(hosts_ns "$1") || return 1
	if [ "$USE_NETNS" != 1 ]; then pgrep -x "$2"; return 0; fi
	for p in $(ip netns pids "$ns" 2>/dev/null); do
		[ "$(cat /proc/"$p"/comm 2>/dev/null)" = "$2" ] && echo "$p"
	done
	true
}
hosts_count_procs() { hosts_pids "$@" | wc -l; }

vmA() { VMIGRATE_CONTROL="$HOSTS_DIR/A/vmigrated.sock" "$VMIGRATE" "$@"; }
vmB() { VMIGRATE_CONTROL="$HOSTS_DIR/B/vmigrated.sock" "$VMIGRATE" "$@"; }

# field of a one-line JSON object
json_field() { sed -n "s/.*\"$1\":\"\{0,1\}\([^,\"}]*\).*/\1/p"; }

# wait until guest NAME on host (vmA/vmB) has written at least N pages
wait_counter() {
	local cli=$1 name=$2 want=$3 c
	for _ in $(seq 600); do
		c=$($cli info "$name" --json 2>/dev/null | json_field counter)
		[ -n "$c" ] && [ "$c" -ge "$want" ] && return 0
		sleep 0.1
	done
	return 1
}
