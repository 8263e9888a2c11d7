#!/bin/bash
# Checkpoints and restores of a libvirt domain through vmigrate, on the rig
# of lib/libvirt_hosts.sh (host A: libvirtd, vmigrated, the TCG Linux
# guest): a full checkpoint of the running domain (it runs on), ckpt info
# and verify, a live incremental a few seconds later that is much smaller
# than the full one, merge of the chain, a checkpoint of the paused domain
# whose restore (virDomainRestoreFlags from vmigrate's save image) gives
# back the same RAM (pmemsave) and a guest whose own check passes and that
# goes on, a corrupted file refused with a clear error, a checkpoint that
# fails (its file system full, QEMU's stream given up) leaving the domain
# running, QEMU's migration settings as they were and no file, and a
# domain with a stream-altering capability refused naming it (plain
# requests: QEMU's migration into a pipe). Then libvirt's own memory
# snapshot into a FIFO, asked for by name (full, an
# incremental on it, its restore), the migration into a pipe asked for by
# name, and that path failing half-way (the reader giving up, the FIFO's
# directory removed, the reader killed; libvirt compressing its images):
# a clean error, the domain running, no file, no snapshot metadata, no FIFO.
# Needs QEMU and libvirtd, not /dev/kvm.
# VMIGRATE_SKIP_LIBVIRT_RIG=REASON skips it, saying why.
set -u
BUILD=${1:-build}
. "$(dirname "$0")/lib/hosts.sh"
. "$(dirname "$0")/lib/suite.sh"
. "$(dirname "$0")/lib/linux_guest.sh"
. "$(dirname "$0")/lib/libvirt_hosts.sh"
t_start=$SECONDS
LV_RUNS_VMIGRATE=1	# not skipped by VMIGRATE_SKIP_LIBVIRT_RIG: this is vmigrate's code
suite_with_libvirt_hosts libvirt_snapshot
echo "# rig up in $((SECONDS - t_start)) s"

MEM=256
G=lvs
D=$HOSTS_DIR/ckpt
mkdir -p "$D" && chmod 700 "$D"

dump() { tail -n 12 "$HOSTS_DIR/A/service.log"; lv_dump_logs $G; }
# a field of a JSON reply (its last line)
jf() { echo "$1" | tail -n 1 | python3 -c 'import json,sys; print(json.load(sys.stdin).get(sys.argv[1], ""))' "$2" 2>/dev/null; }
max_bw() { virshA qemu-monitor-command $G '{"execute":"query-migrate-parameters"}' |
	python3 -c 'import json,sys; print(json.load(sys.stdin)["return"]["max-bandwidth"])'; }

lv_start_service A
check service_starts $? "$(tail -n 5 "$HOSTS_DIR/A/service.log")"
lv_start_guest A $G $MEM "$(linux_guest_cmdline 16 16 24 8)"
rc=$?
filled=$(lv_wait_line A $G '^RIG (filled|fatal)')
[ $rc = 0 ] && echo "$filled" | grep -q '^RIG filled ' && lv_wait_seq A $G 1
check guest_boots $? "create rc=$rc; '${filled:-no RIG filled line}'"
bw0=$(max_bw)
lv_set_rate A $G 1	# 1 MiB/s from now on: a few MiB change between checkpoints

# ---- a full checkpoint of the running domain; it runs on ----
seq0=$(lv_seq A $G)
t0=$(date +%s%N)
out=$(vmA snapshot $G "$D/$G-1.ckpt" --json 2>&1); rc=$?
t1=$(date +%s%N)
full=$(stat -c %s "$D/$G-1.ckpt" 2>/dev/null || echo 0)
[ $rc = 0 ] && [ "$(jf "$out" kind)" = libvirt ] && [ "$(jf "$out" file_bytes)" = "$full" ] &&
	[ "$full" -gt $((8 << 20)) ] && [ "$(virshA domstate $G)" = running ] &&
	[ "$(max_bw)" = "$bw0" ] && lv_wait_seq A $G "$seq0"
check full_snapshot_runs_on $? "rc=$rc: $out; state $(virshA domstate $G 2>&1); max-bandwidth $(max_bw) (was $bw0); $(dump)"
echo "# full: $full bytes, paused $(jf "$out" pause_ms) ms, $(( (t1 - t0) / 1000000 )) ms in all"

out=$(vmA ckpt verify "$D/$G-1.ckpt" 2>&1); rc=$?
info=$(vmA ckpt info "$D/$G-1.ckpt" --json 2>&1)
[ $rc = 0 ] && echo "$out" | grep -q "intact" && [ "$(jf "$info" guest)" = $G ] &&
	[ "$(jf "$info" incremental)" = False ] && [ "$(jf "$info" mem_bytes)" -gt $((MEM << 20)) ]
check ckpt_verify_and_info $? "rc=$rc: $out; $info"

# ---- a live incremental a few seconds later: only what changed ----
sleep 3
out=$(vmA snapshot $G "$D/$G-2.ckpt" --live --incremental --json 2>&1); rc=$?
inc=$(stat -c %s "$D/$G-2.ckpt" 2>/dev/null || echo 0)
[ $rc = 0 ] && [ "$(jf "$out" incremental)" = True ] && [ "$inc" -gt 0 ] &&
	[ $((inc * 4)) -lt "$full" ] && [ "$(jf "$out" pages_unchanged)" -gt 0 ] &&
	[ "$(virshA domstate $G)" = running ]
check incremental_much_smaller $? "rc=$rc: incremental $inc bytes, full $full: $out; $(dump)"
echo "# live incremental: $inc bytes ($(jf "$out" method), paused $(jf "$out" pause_ms) ms); $(jf "$out" note)"
out=$(vmA ckpt verify "$D/$G-2.ckpt" 2>&1)
check incremental_verifies_with_parent $? "$out"

# QEMU's background-snapshot where QEMU may use userfaultfd (asked for: a
# failed one blocks QEMU 7.2's vCPUs); else the reason, naming the sysctl
seq0=$(lv_seq A $G)
out=$(vmA snapshot $G "$D/$G-2b.ckpt" --live --background-snapshot --incremental --json 2>&1); rc=$?
method=$(jf "$out" method)
[ $rc = 0 ] && { [ "$method" = background-snapshot ] ||
	jf "$out" note | grep -q "vm.unprivileged_userfaultfd"; } &&
	[ "$(virshA domstate $G)" = running ] && lv_wait_seq A $G "$seq0" &&
	vmA ckpt verify "$D/$G-2b.ckpt" >/dev/null
check background_snapshot_or_reason $? "rc=$rc: $out; $(dump)"
echo "# $method incremental: $(jf "$out" file_bytes) bytes, paused $(jf "$out" pause_ms) ms; $(jf "$out" note)"

# ---- merge: one full checkpoint of the chain ----
out=$(vmA ckpt merge "$D/$G-2.ckpt" "$D/merged.ckpt" 2>&1); rc=$?
info=$(vmA ckpt info "$D/merged.ckpt" --json 2>&1)
[ $rc = 0 ] && [ "$(jf "$info" incremental)" = False ] && vmA ckpt verify "$D/merged.ckpt" >/dev/null
check merge_gives_full_checkpoint $? "rc=$rc: $out; $info"

# ---- the paused domain's checkpoint restores to the same RAM ----
mem1=$HOSTS_DIR/mem-1.bin mem2=$HOSTS_DIR/mem-2.bin
virshA suspend $G >/dev/null && lv_pmemsave A $G "$mem1" $MEM &&
	sum1=$(sha256sum <"$mem1" | cut -d' ' -f1) && rm -f "$mem1"
out=$(vmA snapshot $G "$D/$G-3.ckpt" --incremental --json 2>&1); rc=$?
state=$(virshA domstate $G)
[ $rc = 0 ] && [ "$state" = paused ]
check paused_snapshot_stays_paused $? "rc=$rc: $out; state $state"
seq_before=$(lv_seq A $G)
virshA destroy $G >/dev/null
t0=$(date +%s%N)
out=$(vmA restore "$D/$G-3.ckpt" --json 2>&1); rc=$?
t1=$(date +%s%N)
state=$(virshA domstate $G 2>&1)
lv_pmemsave A $G "$mem2" $MEM && sum2=$(sha256sum <"$mem2" | cut -d' ' -f1)
[ $rc = 0 ] && [ "$state" = paused ] && [ "$(jf "$out" files)" = 4 ] &&
	[ "$(stat -c %s "$mem2")" = $((MEM << 20)) ] && [ -n "${sum1:-}" ] && [ "$sum1" = "${sum2:-}" ]
check restore_ram_identical $? "rc=$rc: $out; state $state; RAM ${sum1:-?} then ${sum2:-?}; $(dump)"
rm -f "$mem2"
echo "# restore of a 4-file chain: $(( (t1 - t0) / 1000000 )) ms"
virshA resume $G >/dev/null && lv_wait_seq A $G "$seq_before" && v=$(lv_verify A $G)
check restored_guest_goes_on $? "${v:-no progress past seq $seq_before}; $(dump)"

# a restore while the domain runs would make a second copy: refused
out=$(vmA restore "$D/$G-3.ckpt" 2>&1); rc=$?
[ $rc != 0 ] && echo "$out" | grep -q "is running here" && [ "$(virshA domstate $G)" = running ]
check restore_over_running_refused $? "rc=$rc: $out"

# ---- keys: the file carries a MAC that verify checks ----
key=$HOSTS_DIR/ckpt.key other=$HOSTS_DIR/other.key
head -c 32 /dev/urandom >"$key" && head -c 32 /dev/urandom >"$other" && chmod 600 "$key" "$other"
out=$(vmA snapshot $G "$D/keyed.ckpt" --live --key "$key" 2>&1); rc=$?
out2=$(vmA ckpt verify "$D/keyed.ckpt" --key "$key" 2>&1); rc2=$?
out3=$(vmA ckpt verify "$D/keyed.ckpt" --key "$other" 2>&1); rc3=$?
[ $rc = 0 ] && [ $rc2 = 0 ] && echo "$out2" | grep -q "the MAC" && [ $rc3 != 0 ] &&
	echo "$out3" | grep -qi "mac"
check keyed_snapshot_verifies $? "snapshot rc=$rc: $out; right key rc=$rc2: $out2; other key rc=$rc3: $out3"

# ---- backup rotation: chains of a full and an incremental, the oldest pruned ----
bk=$D/backup
for i in 1 2 3 4; do
	out=$(vmA backup $G --dir "$bk" --keep 2 --full-every 2 2>&1) || break
done
n=$(ls "$bk" | grep -c "^$G-.*\.ckpt$")
newest=$(ls "$bk" | grep "^$G-.*\.ckpt$" | sort | tail -n 1)
info=$(vmA ckpt info "$bk/$newest" --json 2>&1)
[ "$n" = 2 ] && [ "$(jf "$info" incremental)" = True ] && vmA ckpt verify "$bk/$newest" >/dev/null
check backup_rotation $? "$n files ($(ls "$bk" | tr '\n' ' ')): $out; $info"

# ---- a corrupted file is refused, saying why ----
cp "$D/$G-1.ckpt" "$D/bad.ckpt"
python3 - "$D/bad.ckpt" <<'PY'
import os, sys
f = open(sys.argv[1], "r+b")
f.seek(os.path.getsize(sys.argv[1]) // 2)
b = f.read(1)
f.seek(-1, 1)
f.write(bytes([b[0] ^ 0x40]))
PY
out=$(vmA ckpt verify "$D/bad.ckpt" 2>&1); rc=$?
out2=$(vmA restore "$D/bad.ckpt" 2>&1); rc2=$?
[ $rc != 0 ] && echo "$out" | grep -q "checksum" && [ $rc2 != 0 ] &&
	echo "$out2" | grep -q "refused: .*checksum" && [ "$(virshA domstate $G)" = running ]
check corrupted_file_refused $? "verify rc=$rc: $out; restore rc=$rc2: $out2"

# ---- a checkpoint that fails leaves the domain running and no file ----
small=$D/small
mkdir -p "$small" && lv_exec A mount -t tmpfs -o size=4m,mode=0700 vmg-small "$small"
for mode in --live ""; do
	seq0=$(lv_seq A $G)
	out=$(vmA snapshot $G "$small/$G.ckpt" $mode 2>&1); rc=$?
	left=$(lv_exec A ls -A "$small")
	[ $rc != 0 ] && echo "$out" | grep -q "No space left" && echo "$out" | grep -q "runs on" &&
		[ -z "$left" ] && [ "$(virshA domstate $G)" = running ] && [ "$(max_bw)" = "$bw0" ] &&
		lv_wait_seq A $G "$seq0"
	check "failed_snapshot${mode:+_live}_domain_runs_no_file" $? "rc=$rc: $out; left: '$left'; state $(virshA domstate $G 2>&1); max-bandwidth $(max_bw) (was $bw0)"
done
lv_exec A umount "$small"

# ---- a capability that alters QEMU's stream: refused by name ----
virshA qemu-monitor-command $G '{"execute":"migrate-set-capabilities","arguments":{"capabilities":[{"capability":"xbzrle","state":true}]}}' >/dev/null
out=$(vmA snapshot $G "$D/$G-x.ckpt" 2>&1); rc=$?
[ $rc != 0 ] && echo "$out" | grep -q "xbzrle" && [ ! -e "$D/$G-x.ckpt" ] &&
	[ "$(virshA domstate $G)" = running ]
check refuses_xbzrle $? "rc=$rc: $out"
virshA qemu-monitor-command $G '{"execute":"migrate-set-capabilities","arguments":{"capabilities":[{"capability":"xbzrle","state":false}]}}' >/dev/null

# ---- libvirt's own live external memory snapshot (into a FIFO of the
# service's), asked for by name; an incremental on it; its restore ----
lvsnap_left() { lv_exec A sh -c 'ls -d /run/vmigrate/lvsnap-* 2>/dev/null' | tr '\n' ' '; }
lvsnap_metadata() { virshA snapshot-list $G --name 2>&1 | grep -c .; }
seq0=$(lv_seq A $G)
out=$(vmA snapshot $G "$D/$G-lv1.ckpt" --live --method libvirt-snapshot --json 2>&1); rc=$?
lvfull=$(stat -c %s "$D/$G-lv1.ckpt" 2>/dev/null || echo 0)
[ $rc = 0 ] && [ "$(jf "$out" method)" = libvirt-snapshot ] && [ "$(jf "$out" file_bytes)" = "$lvfull" ] &&
	[ "$(virshA domstate $G)" = running ] && lv_wait_seq A $G "$seq0" && [ "$(max_bw)" = "$bw0" ] &&
	[ "$(lvsnap_metadata)" = 0 ] && [ -z "$(lvsnap_left)" ] && vmA ckpt verify "$D/$G-lv1.ckpt" >/dev/null
check libvirt_memory_snapshot $? "rc=$rc: $out; snapshots kept: $(lvsnap_metadata); left: '$(lvsnap_left)'; max-bandwidth $(max_bw) (was $bw0); $(dump)"
echo "# libvirt-snapshot, full, live: $lvfull bytes, paused $(jf "$out" pause_ms) ms, $(jf "$out" seconds) s"
sleep 2
seq_snap=$(lv_seq A $G)
out=$(vmA snapshot $G "$D/$G-lv2.ckpt" --live --incremental --method libvirt-snapshot --json 2>&1); rc=$?
inc=$(stat -c %s "$D/$G-lv2.ckpt" 2>/dev/null || echo 0)
[ $rc = 0 ] && [ "$(jf "$out" method)" = libvirt-snapshot ] && [ "$(jf "$out" incremental)" = True ] &&
	[ $((inc * 4)) -lt "$lvfull" ] && [ "$(jf "$out" pages_unchanged)" -gt 0 ] &&
	[ "$(lvsnap_metadata)" = 0 ] && vmA ckpt verify "$D/$G-lv2.ckpt" >/dev/null
check libvirt_memory_snapshot_incremental $? "rc=$rc: incremental $inc bytes, full $lvfull: $out; $(dump)"
echo "# libvirt-snapshot, incremental, live: $inc bytes, paused $(jf "$out" pause_ms) ms"
virshA destroy $G >/dev/null
out=$(vmA restore "$D/$G-lv2.ckpt" --json 2>&1); rc=$?
[ $rc = 0 ] && [ "$(virshA domstate $G)" = running ] && [ "$(jf "$out" files)" = 2 ] &&
	lv_wait_seq A $G "$seq_snap" && v=$(lv_verify A $G)
check libvirt_memory_snapshot_restores $? "rc=$rc: $out; ${v:-no progress past seq $seq_snap}; $(dump)"

# the migration into a pipe asked for by name
out=$(vmA snapshot $G "$D/$G-mig.ckpt" --live --method migration --json 2>&1); rc=$?
[ $rc = 0 ] && [ "$(jf "$out" method)" = live-migration ] && vmA ckpt verify "$D/$G-mig.ckpt" >/dev/null &&
	[ "$(virshA domstate $G)" = running ]
check migration_method_by_name $? "rc=$rc: $out"

# ---- libvirt's memory snapshot failing half-way: a clean error, the
# domain runs on, no file, no snapshot metadata, no FIFO left ----
# CASE FILE OUT RC SEQ ERE [BW]: the checks after a failure saying ERE; QEMU's
# max-bandwidth as it was, or BW=any where no one of ours was left to put it back
lvsnap_failed() {
	local left
	left=$(ls -A "$D" | grep -F "$(basename "$2")")
	[ "$4" != 0 ] && echo "$3" | grep -Eq "$6" && [ -z "$left" ] &&
		[ "$(virshA domstate $G)" = running ] && lv_wait_seq A $G "$5" &&
		[ "$(lvsnap_metadata)" = 0 ] && [ -z "$(lvsnap_left)" ] &&
		{ [ "${7:-}" = any ] || [ "$(max_bw)" = "$bw0" ]; }
	local st=$?
	check "$1" $st "rc=$4: $3; files: '$left'; state $(virshA domstate $G 2>&1); snapshots kept: $(lvsnap_metadata); FIFOs left: '$(lvsnap_left)'; max-bandwidth $(max_bw) (was $bw0)"
	return $st
}
restart_service() { kill "$SVC_A_PID" && wait "$SVC_A_PID" 2>/dev/null; lv_start_service A; }
# the reader gives up on the FIFO mid-stream (a fault point)
VMIGRATE_FAULT=lvsnap-reader-dies restart_service
seq0=$(lv_seq A $G)
out=$(vmA snapshot $G "$D/$G-f1.ckpt" --live --method libvirt-snapshot 2>&1); rc=$?
lvsnap_failed libvirt_snapshot_reader_gives_up "$D/$G-f1.ckpt" "$out" "$rc" "$seq0" \
	"runs on: .*lvsnap-reader-dies"
VMIGRATE_FAULT= restart_service
if case_wanted libvirt_snapshot_fifo_dir_removed; then
	# the FIFO's directory removed while libvirt writes into it
	seq0=$(lv_seq A $G)
	lv_exec A sh -c 'for i in $(seq 1000); do for d in /run/vmigrate/lvsnap-*; do
		[ -d "$d" ] && { sleep 0.2; rm -rf "$d"; exit 0; }; done; sleep 0.005; done' &
	rmpid=$!
	out=$(vmA snapshot $G "$D/$G-f2.ckpt" --live --method libvirt-snapshot 2>&1); rc=$?
	wait $rmpid
	lvsnap_failed libvirt_snapshot_fifo_dir_removed "$D/$G-f2.ckpt" "$out" "$rc" "$seq0" \
		"runs on: .*(FIFO|libvirt's memory snapshot)"
fi
# the process reading the FIFO killed mid-stream: its guard drains what
# libvirt still writes (libvirt's job ends, the domain resumes), then
# removes the FIFOs; the checkpoint's file was never named
seq0=$(lv_seq A $G)
lv_exec A sh -c 'for i in $(seq 1000); do for d in /run/vmigrate/lvsnap-*; do
	[ -d "$d" ] && { sleep 0.2; p=${d#*/lvsnap-}; kill -9 "${p%%-*}"; exit 0; }; done; sleep 0.005; done' &
killpid=$!
out=$(vmA snapshot $G "$D/$G-f3.ckpt" --live --method libvirt-snapshot 2>&1); rc=$?
wait $killpid
for _ in $(seq 100); do [ -z "$(lvsnap_left)" ] && break; sleep 0.1; done
lvsnap_failed libvirt_snapshot_reader_killed "$D/$G-f3.ckpt" "$out" "$rc" "$seq0" \
	"ended without an answer" any || { lv_exec A sh -c 'ls -la /run/vmigrate/lvsnap-*; ls -l /proc/[0-9]*/fd 2>/dev/null | grep lvsnap'; virshA domjobinfo $G; tail -n 5 "$HOSTS_DIR/A/service.log"; }
# libvirt 9.0 left QEMU's max-bandwidth unlimited after memory snapshots
# whose reader failed (the service puts it back); the killed one could not
echo "# after the killed reader: QEMU's max-bandwidth $(max_bw) (was $bw0)"
virshA qemu-monitor-command $G "{\"execute\":\"migrate-set-parameters\",\"arguments\":{\"max-bandwidth\":$bw0}}" >/dev/null

# ---- libvirt compressing its memory snapshots (qemu.conf's
# snapshot_image_format): refused by name ----
if case_wanted libvirt_compressed_image_refused; then
	conf=$LV_DIR/A/etc/qemu.conf
	lv_stop_libvirtd A && echo 'snapshot_image_format = "gzip"' >>"$conf" && lv_start_libvirtd A && lv_wait_libvirtd A
	seq0=$(lv_seq A $G)
	out=$(vmA snapshot $G "$D/$G-gz.ckpt" --live --method libvirt-snapshot 2>&1); rc=$?
	lvsnap_failed libvirt_compressed_image_refused "$D/$G-gz.ckpt" "$out" "$rc" "$seq0" \
		"runs on: .*gzip.*snapshot_image_format"
	lv_stop_libvirtd A && sed -i '/^snapshot_image_format/d' "$conf" && lv_start_libvirtd A && lv_wait_libvirtd A
fi

# ---- a domain with a disk: libvirt's memory snapshot leaves the disk
# out (snapshot='no'), as the other ways do; memory only ----
if case_wanted libvirt_memory_snapshot_leaves_disks_out; then
	G2=lvsdisk
	truncate -s 16M "$HOSTS_DIR/disk.img"
	lv_domain_xml $G2 128 "$(linux_guest_cmdline 8 8 8 1)" | sed "s|</devices>|<disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='$HOSTS_DIR/disk.img'/><target dev='vda' bus='virtio'/></disk></devices>|" >"$LV_DIR/$G2.xml"
	virshA create "$LV_DIR/$G2.xml" >/dev/null && lv_wait_line A $G2 '^RIG filled ' >/dev/null
	out=$(vmA snapshot $G2 "$D/$G2.ckpt" --live --method libvirt-snapshot --json 2>&1); rc=$?
	[ $rc = 0 ] && [ "$(jf "$out" method)" = libvirt-snapshot ] && vmA ckpt verify "$D/$G2.ckpt" >/dev/null &&
		[ "$(virshA snapshot-list $G2 --name 2>&1 | grep -c .)" = 0 ] && [ "$(virshA domstate $G2)" = running ] &&
		[ "$(virshA domblklist $G2 | grep -c disk.img)" = 1 ]
	check libvirt_memory_snapshot_leaves_disks_out $? "rc=$rc: $out; $(virshA domblklist $G2 2>&1)"
	virshA destroy $G2 >/dev/null
fi

v=$(lv_verify A $G)
check data_intact_at_end $? "$v"

echo "# libvirt_snapshot took $((SECONDS - t_start)) s"
suite_end
