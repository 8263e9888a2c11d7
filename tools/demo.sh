#!/bin/bash
# The demo: two hosts in network namespaces joined by a veth pair, a
# vmigrated in each, a 1 GiB guest holding 400 MiB of random data and
# dirtying it at 50 MiB/s migrated live from one to the other, verified
# there, and the statistics printed as the last line, in JSON.
set -uo pipefail
BUILD=${1:-build}
. "$(dirname "$0")/../tests/integration/lib/hosts.sh"
trap hosts_cleanup EXIT

if [ ! -e /dev/kvm ]; then
	echo "demo: /dev/kvm is missing; the micro-VM needs KVM" >&2
	exit 1
fi
hosts_setup || { echo "demo: cannot set up the two hosts" >&2; exit 1; }
hosts_start_service A && hosts_start_service B || exit 1
echo "== host A $HOST_A_ADDR, host B $HOST_B_ADDR$([ "$USE_NETNS" = 1 ] && echo ' (network namespaces, veth)')"

vmA start demo --mem 1G --vcpus 2 --working-set 400M --dirty-rate 50M --content random || exit 1
echo "== guest 'demo' started on A; waiting until its 400 MiB are written"
wait_counter vmA demo 102400 || { echo "demo: the guest makes no progress" >&2; exit 1; }
vmA info demo
vmA verify demo || exit 1

echo "== migrating live to B while it dirties 50 MiB/s"
stats=$(vmA migrate demo "$HOST_B_ADDR:$HOST_B_PORT" --json) || {
	echo "demo: migration failed: $stats" >&2; exit 1; }
echo "== on B:"
vmB info demo
vmB verify demo || exit 1
echo "== on A:"
vmA list
echo "$stats"
