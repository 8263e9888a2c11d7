#!/bin/bash
# --data-ports: a receiving guest offers its data channels on the first free
# port of the service's range, so a firewall can let exactly those through;
# with every port of the range taken the migration is refused with a clear
# error and the guest keeps running where it was. A bad range stops the
# service at start.
set -u
BUILD=${1:-build}
. "$(dirname "$0")/lib/hosts.sh"
. "$(dirname "$0")/lib/suite.sh"
suite_with_hosts data_ports
guest_on() { $1 info g --json 2>/dev/null | json_field state; }
LO=$((HOST_B_PORT + 200))
HI=$((LO + 3))

out=$("$VMIGRATED" --state-dir "$HOSTS_DIR/C" --insecure --data-ports 9000-8000 2>&1); rc=$?
[ $rc = 2 ] && echo "$out" | grep -q "data-ports wants LO-HI"
check bad_range_refuses_to_start $? "rc=$rc: $out"

hosts_start_service A && hosts_start_service B "" "--data-ports $LO-$HI" || exit 1
vmA start g --mem 128M --working-set 16M --dirty-rate 10M >/dev/null || exit 1
out=$(vmA migrate g "$HOST_B_ADDR:$HOST_B_PORT" --channels 2 --quiet 2>&1); rc=$?
port=$(sed -n 's/.*incoming guest g: 2 data channel(s) on port \([0-9]*\).*/\1/p' \
	"$HOSTS_DIR/B/service.log" | tail -1)
[ $rc = 0 ] && [ "$(guest_on vmB)" = running ] && vmB verify g >/dev/null &&
	[ -n "$port" ] && [ "$port" -ge $LO ] && [ "$port" -le $HI ]
check channels_use_a_port_in_the_range $? "rc=$rc port=$port: $out"

# back to A, then make B's range a single port its own service holds
vmB stop g >/dev/null
vmA start g --mem 128M --working-set 16M --dirty-rate 10M >/dev/null || exit 1
hosts_stop_services
hosts_start_service A && hosts_start_service B "" "--data-ports $HOST_B_PORT" || exit 1
out=$(vmA migrate g "$HOST_B_ADDR:$HOST_B_PORT" --channels 2 --quiet 2>&1); rc=$?
sleep 0.3
[ $rc = 1 ] && echo "$out" | grep -q "no free data port in $HOST_B_PORT-$HOST_B_PORT" &&
	[ "$(guest_on vmA)" = running ] && [ -z "$(guest_on vmB)" ] && vmA verify g >/dev/null
check taken_range_is_refused_and_the_guest_stays $? "rc=$rc: $out"
suite_end
