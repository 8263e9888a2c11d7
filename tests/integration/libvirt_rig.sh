#!/bin/bash
# The libvirt test rig on its own (lib/libvirt_hosts.sh, lib/linux_guest.sh),
# before vmigrate takes part: two libvirtd hosts in namespaces, a small
# Linux guest under TCG that fills 256 MiB and dirties 8 MiB/s, libvirt's
# own peer-to-peer live migration A -> B (the guest goes on at B and its own
# check of every page and file passes there), a paused migration B -> A
# whose RAM (pmemsave) is identical on both ends, the guest's check caught
# out by a spoiled page, and a teardown that leaves no process, namespace
# or mount behind. Needs QEMU and libvirtd, not /dev/kvm.
# VMIGRATE_SKIP_LIBVIRT_RIG=REASON skips it, saying why.
set -u
BUILD=${1:-build}
. "$(dirname "$0")/lib/hosts.sh"
. "$(dirname "$0")/lib/suite.sh"
. "$(dirname "$0")/lib/linux_guest.sh"
. "$(dirname "$0")/lib/libvirt_hosts.sh"
t_start=$SECONDS
suite_with_libvirt_hosts libvirt_rig
echo "# rig up in $((SECONDS - t_start)) s (guest built or found, two libvirtd started)"

MEM=256
G=rig
QEMU_PIDS=

# ---- the guest boots on A and fills its memory ----
t0=$SECONDS
lv_start_guest A $G $MEM "$(linux_guest_cmdline 24 24 32 8)"
rc=$?
filled=$(lv_wait_line A $G '^RIG (filled|fatal)')
echo "# guest up (memory filled) $((SECONDS - t0)) s after virsh create"
QEMU_PIDS="$QEMU_PIDS $(lv_qemu_pids A)"
[ $rc = 0 ] && echo "$filled" | grep -q '^RIG filled files=[1-9][0-9]* .*random_mib=24 text_mib=24 work_mib=32 rate_mib=8' &&
	lv_wait_seq A $G 1 && v=$(lv_verify A $G)
check boots_and_fills $? "create rc=$rc; '${filled:-no RIG filled line}'; ${v:-}; console: $(tail -n 3 "$(lv_console A $G)" 2>/dev/null | tr '\n' '|')"

# ---- libvirt's plain live migration A -> B ----
seq_before=$(lv_seq A $G)
out=$(lv_migrate A B $G 2>&1)
rc=$?
stateB=$(virshB domstate $G 2>&1)
listA=$(virshA list --all --name 2>&1)
QEMU_PIDS="$QEMU_PIDS $(lv_qemu_pids B)"
[ $rc = 0 ] && [ "$stateB" = running ] && ! echo "$listA" | grep -qx $G
check live_migration_a_to_b $? "rc=$rc: $out; on B: $stateB; A lists: $listA"
job=$(lv_jobinfo B $G)
echo "# A -> B: $(echo "$job" | grep -E '^(time_elapsed|downtime|data_processed|memory_iteration)=' | tr '\n' ' ')"

# the guest goes on at B: its progress counts on past what A last printed
seq_a=$(lv_seq A $G)
lv_wait_seq B $G "$seq_a" && [ "$seq_a" -ge "$seq_before" ]
check goes_on_at_b $? "B's last progress seq $(lv_seq B $G), A's last $seq_a"

v=$(lv_verify B $G)
check data_intact_at_b $? "$v"

# ---- a paused migration B -> A: the RAM is the same on both ends ----
memB=$HOSTS_DIR/mem-B.bin memA=$HOSTS_DIR/mem-A.bin
virshB suspend $G >/dev/null && lv_pmemsave B $G "$memB" $MEM &&
	sumB=$(sha256sum <"$memB" | cut -d' ' -f1) && rm -f "$memB" &&
	out=$(lv_migrate B A $G 2>&1) &&
	stateA=$(virshA domstate $G) && [ "$stateA" = paused ] &&
	lv_pmemsave A $G "$memA" $MEM && sumA=$(sha256sum <"$memA" | cut -d' ' -f1) &&
	[ "$(stat -c %s "$memA")" = $((MEM * 1024 * 1024)) ] && [ "$sumA" = "$sumB" ]
check paused_migration_ram_identical $? "B ${sumB:-?} A ${sumA:-?} state on A ${stateA:-?}: ${out:-}"
rm -f "$memA" "$memB"

seq_a=$(lv_seq A $G)
virshA resume $G >/dev/null && lv_wait_seq A $G "$(lv_seq B $G)" && v=$(lv_verify A $G)
check resumes_intact_at_a $? "${v:-resume failed or no progress past seq $(lv_seq B $G)}"

# ---- the guest's check is not blind: a spoiled page and file are caught ----
c=$(lv_corrupt A $G)
v=$(lv_verify A $G)
[ $? != 0 ] && echo "$v" | grep -q ' result=BAD ' && echo "$v" | grep -qE 'pages_ok=([0-9]+)/[0-9]+' &&
	pages=$(echo "$v" | sed -n 's/.*pages_ok=\([0-9]*\)\/\([0-9]*\).*/\1 \2/p') &&
	[ $(( ${pages#* } - ${pages% *} )) = 1 ]
check check_catches_corruption $? "after '$c' the guest said: $v"

# ---- teardown leaves nothing behind ----
holders="$LV_HOLDER_A $LV_HOLDER_B" daemons="$LV_LIBVIRTD_A $LV_LIBVIRTD_B"
mntns="$LV_MNTNS_A $LV_MNTNS_B"
libvirt_hosts_cleanup
hosts_cleanup
left=
for p in $holders $daemons $QEMU_PIDS; do
	[ -e /proc/"$p" ] && case $(readlink /proc/"$p"/ns/mnt) in
	${LV_MNTNS_A:-none}|${LV_MNTNS_B:-none}) left="$left pid $p ($(cat /proc/"$p"/comm))" ;;
	esac
done
for p in /proc/[0-9]*; do
	n=$(readlink "$p/ns/mnt" 2>/dev/null) || continue
	for m in $mntns; do [ "$n" = "$m" ] && left="$left ${p#/proc/} in $m"; done
done
ip netns list | grep -qE "^($NS_A|$NS_B)( |$)" && left="$left namespaces $(ip netns list | tr '\n' ' ')"
grep -q "$HOSTS_DIR" /proc/self/mountinfo && left="$left mounts under $HOSTS_DIR"
[ -e "$HOSTS_DIR" ] && left="$left $HOSTS_DIR"
[ -z "$left" ]
check cleanup_leaves_nothing $? "left behind:$left"

echo "# libvirt_rig took $((SECONDS - t_start)) s"
suite_end
