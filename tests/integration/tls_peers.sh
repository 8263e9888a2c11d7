#!/bin/bash
# TLS between hosts is the default: two services with certificates from one
# CA migrate; plain TCP on one end only, a destination certified by another
# CA or for another name, and a client off the allow-list are refused with
# a clear error, and the guest stays where it was. A service with neither
# certificates nor --insecure does not start.
set -u
BUILD=${1:-build}
. "$(dirname "$0")/lib/hosts.sh"
. "$(dirname "$0")/lib/suite.sh"
suite_with_hosts tls_peers
guest_on() { $1 info g --json 2>/dev/null | json_field state; }
restart() {
	hosts_stop_services
	hosts_start_service A "" "$1" && hosts_start_service B "" "$2"
}
# migrate and expect a refusal whose text matches $1; the guest stays on A
refused() {
	local out rc
	out=$(vmA migrate g "$HOST_B_ADDR:$HOST_B_PORT" --quiet 2>&1); rc=$?
	sleep 0.3
	[ $rc = 1 ] && echo "$out" | grep -q -i "$1" && [ "$(guest_on vmA)" = running ] &&
		[ -z "$(guest_on vmB)" ] || { echo "rc=$rc: $out"; return 1; }
}

out=$("$VMIGRATED" --state-dir "$HOSTS_DIR/C" 2>&1); rc=$?
[ $rc = 2 ] && echo "$out" | grep -q "give --tls-dir"
check no_tls_and_no_insecure_refuses_to_start $? "rc=$rc: $out"

restart "" "" || exit 1
grep -q "TLS 1.3, mutual certificates" "$HOSTS_DIR/A/service.log"
check tls_is_the_default $? "$(cat "$HOSTS_DIR/A/service.log")"

vmA start g --mem 128M --working-set 16M --dirty-rate 10M >/dev/null || exit 1

restart "--insecure" "" || exit 1
msg=$(refused "closed\|refused") &&
	grep -q "the peer speaks plain TCP (is it --insecure?)" "$HOSTS_DIR/B/service.log"
check plaintext_source_to_tls_destination $? "$msg; B: $(grep refused "$HOSTS_DIR/B/service.log")"

restart "" "--insecure" || exit 1
msg=$(refused "TLS handshake failed: the peer speaks plain TCP (is it --insecure?)")
check tls_source_to_plaintext_destination $? "$msg"

"$MKCERTS" "$HOSTS_DIR/other-pki" hostB "$HOST_B_ADDR"
restart "" "--tls-dir $HOSTS_DIR/other-pki/hostB" || exit 1
msg=$(refused "server certificate refused")
check destination_from_another_ca $? "$msg"

"$MKCERTS" "$HOSTS_DIR/pki" wrongname 10.255.255.254
restart "" "--tls-dir $HOSTS_DIR/pki/wrongname" || exit 1
msg=$(refused "mismatch")
check destination_certified_for_another_address $? "$msg"

restart "" "--tls-allow hostZ" || exit 1
msg=$(refused "closed\|refused") && grep -q "client 'hostA' is not allowed" "$HOSTS_DIR/B/service.log"
check client_off_the_allow_list $? "$msg"

restart "" "" || exit 1
if [ -n "$(ls /sys/class/infiniband 2>/dev/null)" ]; then
	echo "SKIP tls_peers.rdma_without_a_device_refused: this machine has an RDMA device"
else
	out=$(vmA migrate g "$HOST_B_ADDR:$HOST_B_PORT" --transport rdma --quiet 2>&1); rc=$?
	sleep 0.3
	[ $rc = 1 ] && echo "$out" | grep -q "no RDMA device" && [ "$(guest_on vmA)" = running ] &&
		[ -z "$(guest_on vmB)" ]
	check rdma_without_a_device_refused $? "rc=$rc: $out"
fi

restart "" "--tls-allow hostA" || exit 1
out=$(vmA migrate g "$HOST_B_ADDR:$HOST_B_PORT" --quiet 2>&1); rc=$?
[ $rc = 0 ] && [ "$(guest_on vmB)" = running ] && vmB verify g >/dev/null
check allowed_client_migrates $? "rc=$rc: $out"
suite_end
