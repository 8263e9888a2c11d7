#!/bin/bash
# libvirt domains through vmigrate, on the rig of lib/libvirt_hosts.sh: a
# vmigrated beside each libvirtd (in the host's namespaces, so that both
# see the same /run/vmigrate as that host's QEMU), `vmigrate list` and
# `info` showing the domain (kind libvirt), a live migration A -> B driven
# by libvirt peer to peer with QEMU's stream carried by vmigrate over TLS
# (the guest goes on at B and its own check of every page and file passes
# there), a paused migration B -> A whose RAM (pmemsave) is the same on both
# ends, QEMU's stream-altering capabilities and post-copy refused naming
# them with the domain still running, a cancelled migration that leaves the
# domain where it was, zstd pages (format 1.2) there and back, RDMA data
# channels refused where the destination has no device, and a teardown
# that leaves nothing behind.
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
suite_with_libvirt_hosts libvirt_migrate
echo "# rig up in $((SECONDS - t_start)) s"

MEM=256
G=lvm
QEMU_PIDS=

dump_services() {
	local h
	for h in A B; do echo "== service $h"; tail -n 12 "$HOSTS_DIR/$h/service.log"; done
	lv_dump_logs $G
}

lv_start_service A && lv_start_service B
check services_start $? "$(tail -n 5 "$HOSTS_DIR"/[AB]/service.log)"

# ---- a hostile source: B's service gives up on it saying why, and goes on ----
# hostile_peer JOB bad-frame|data|garbage: a TLS peer (A's certificate) that
# says "libvirt-in", then sends a frame the protocol does not have, a DATA
# frame (the return path's, never the source's), or an EVENT frame that is no
# event of QEMU's stream; prints what B answered (its ABORT frame's reason)
hostile_peer() {
	ip netns exec "$NS_A" python3 - "$HOST_B_ADDR" "$HOST_B_PORT" "$HOSTS_DIR/pki/hostA" "$1" "$2" <<'PY'
import json, socket, ssl, struct, sys
host, port, pki, job, kind = sys.argv[1:6]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.load_verify_locations(pki + "/ca.crt")
ctx.load_cert_chain(pki + "/cert.pem", pki + "/key.pem")
s = ctx.wrap_socket(socket.create_connection((host, int(port)), 10), server_hostname=host)
s.sendall((json.dumps({"op": "libvirt-in", "name": "hostile", "job": job, "channels": 0}) + "\n").encode())
rep = b""
while not rep.endswith(b"\n"):
    c = s.recv(1)
    if not c:
        sys.exit("closed before answering the hello")
    rep += c
if not json.loads(rep).get("ok"):
    sys.exit("hello refused: %r" % rep)
if kind == "bad-frame":
    s.sendall(struct.pack("<II", 9, 0))
elif kind == "data":
    s.sendall(struct.pack("<II", 1, 16) + b"not QEMU at all!")
elif kind == "on-data":
    s.sendall(struct.pack("<III", 7, 4, 1))
else:
    s.sendall(struct.pack("<II", 4, 16) + b"not QEMU at all!")
data = b""
try:
    while True:
        d = s.recv(4096)
        if not d:
            break
        data += d
except (OSError, ssl.SSLError):
    pass
t, n = struct.unpack("<II", data[:8]) if len(data) >= 8 else (0, 0)
print("type=%d %s" % (t, data[8:8 + n].decode(errors="replace")))
PY
}
out1=$(hostile_peer hostile-1 bad-frame 2>&1)
out2=$(hostile_peer hostile-2 garbage 2>&1)
out3=$(hostile_peer hostile-3 data 2>&1)
out4=$(hostile_peer hostile-4 on-data 2>&1)
j1=$(cat "$HOSTS_DIR/B/libvirt-jobs/hostile-1.json" 2>&1)
j2=$(cat "$HOSTS_DIR/B/libvirt-jobs/hostile-2.json" 2>&1)
echo "$out1" | grep -q "^type=3 the source's service: a frame this protocol does not have" &&
	echo "$out2" | grep -q "^type=3 the source's stream: unknown event " &&
	echo "$out3" | grep -q "^type=3 the source's service: a frame this protocol does not have" &&
	echo "$out4" | grep -q "^type=3 the source's service: records announced on data channels it did not open" &&
	echo "$j1" | grep -q '"status":"failed","error":"the source.s service: a frame this protocol does not have"' &&
	echo "$j2" | grep -q '"status":"failed","error":"the source.s stream: ' &&
	kill -0 "$SVC_B_PID" && vmB list >/dev/null && ! lv_exec B ls /run/vmigrate | grep -q '^qemu-'
check hostile_source_refused $? "bad frame: $out1 ($j1); garbage: $out2 ($j2); data: $out3; on-data: $out4; B's service alive: $(kill -0 "$SVC_B_PID" 2>&1 && echo yes); B's sockets: $(lv_exec B ls /run/vmigrate 2>&1 | tr '\n' ' ')"

# ---- the guest boots on A; list and info show it ----
lv_start_guest A $G $MEM "$(linux_guest_cmdline 16 16 24 8)"
rc=$?
filled=$(lv_wait_line A $G '^RIG (filled|fatal)')
QEMU_PIDS="$QEMU_PIDS $(lv_qemu_pids A)"
[ $rc = 0 ] && echo "$filled" | grep -q '^RIG filled ' && lv_wait_seq A $G 1
check guest_boots $? "create rc=$rc; '${filled:-no RIG filled line}'"

out=$(vmA list 2>&1)
echo "$out" | grep -qE "^$G +libvirt +running +$MEM +1 " &&
	vmA list --json | python3 -c '
import json, sys
g = [x for x in json.load(sys.stdin)["guests"] if x["name"] == sys.argv[1]]
sys.exit(0 if len(g) == 1 and g[0]["kind"] == "libvirt" and g[0]["mem"] == int(sys.argv[2]) << 20 else 1)' $G $MEM
check list_shows_domain $? "$out"
out=$(vmA info $G 2>&1)
echo "$out" | grep -q "^$G: libvirt domain, running, $MEM MiB .*1 vCPUs, uuid [0-9a-f-]\{36\}$"
check info_shows_domain $? "$out"
out=$(vmB info $G 2>&1); rc=$?
[ $rc = 1 ] && echo "$out" | grep -q "no guest named '$G'"
check info_unknown_domain $? "rc=$rc: $out"

# ---- refused: what would alter QEMU's stream; the domain stays on A ----
virshA qemu-monitor-command $G '{"execute":"migrate-set-capabilities","arguments":{"capabilities":[{"capability":"xbzrle","state":true}]}}' >/dev/null
out=$(vmA migrate $G "$HOST_B_ADDR:$HOST_B_PORT" --libvirt-dest "$LV_URI_B" --quiet 2>&1); rc=$?
[ $rc = 1 ] && echo "$out" | grep -q "capability xbzrle on" && [ "$(virshA domstate $G)" = running ] &&
	[ -z "$(virshB list --name)" ]
check refuses_xbzrle $? "rc=$rc: $out; A: $(virshA domstate $G 2>&1)"
virshA qemu-monitor-command $G '{"execute":"migrate-set-capabilities","arguments":{"capabilities":[{"capability":"xbzrle","state":false}]}}' >/dev/null
out=$(vmA migrate $G "$HOST_B_ADDR:$HOST_B_PORT" --libvirt-dest "$LV_URI_B" --postcopy --quiet 2>&1); rc=$?
[ $rc = 1 ] && echo "$out" | grep -q "postcopy-ram" && [ "$(virshA domstate $G)" = running ]
check refuses_postcopy $? "rc=$rc: $out"

# ---- refused: a disk that only this host has (a file on local storage);
# libvirt's safety check names it, the job fails clearly, the domain stays ----
if case_wanted non_shared_disk_refused_domain_stays; then
	G2=lvmdisk
	truncate -s 16M "$HOSTS_DIR/disk.img"
	lv_domain_xml $G2 128 "$(linux_guest_cmdline 8 8 8 1)" | sed "s|</devices>|<disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='$HOSTS_DIR/disk.img'/><target dev='vda' bus='virtio'/></disk></devices>|" >"$LV_DIR/$G2.xml"
	virshA create "$LV_DIR/$G2.xml" >/dev/null && lv_wait_line A $G2 '^RIG filled ' >/dev/null
	out=$(vmA migrate $G2 "$HOST_B_ADDR:$HOST_B_PORT" --libvirt-dest "$LV_URI_B" --quiet 2>&1); rc=$?
	echo "#   $(echo "$out" | tail -n 1)"
	[ $rc = 1 ] && echo "$out" | grep -qi "shared storage" && [ "$(virshA domstate $G2)" = running ] &&
		[ -z "$(virshB list --name)" ]
	check non_shared_disk_refused_domain_stays $? "rc=$rc: $out; A: $(virshA domstate $G2 2>&1)"
	virshA destroy $G2 >/dev/null
fi

# RDMA data channels: refused before libvirt starts where B has no device;
# where it has one, the pages ride them to B and the domain comes back
if [ -z "$(ls /sys/class/infiniband 2>/dev/null)" ]; then
	out=$(vmA migrate $G "$HOST_B_ADDR:$HOST_B_PORT" --libvirt-dest "$LV_URI_B" --transport rdma \
		--quiet 2>&1); rc=$?
	[ $rc = 1 ] && echo "$out" | grep -q "no RDMA device" &&
		[ "$(virshA domstate $G)" = running ] && [ -z "$(virshB list --name)" ]
	check rdma_without_a_device_refused_domain_stays $? "rc=$rc: $out"
	echo "SKIP libvirt_migrate.rdma_channels_a_to_b: no RDMA device (/sys/class/infiniband is empty)"
else
	echo "SKIP libvirt_migrate.rdma_without_a_device_refused_domain_stays: this machine has an RDMA device"
	out=$(vmA migrate $G "$HOST_B_ADDR:$HOST_B_PORT" --libvirt-dest "$LV_URI_B" --transport rdma \
		--json 2>&1); rc=$?
	job=$(echo "$out" | sed -n 's/^vmigrate: job \([^:]*\): .*/\1/p' | head -n 1)
	[ $rc = 0 ] && [ "$(virshB domstate $G 2>&1)" = running ] &&
		grep -q "job $job, .*its pages over 1 data channel (RDMA)" "$HOSTS_DIR/A/service.log" &&
		v=$(lv_verify B $G) &&
		vmB migrate $G "$HOST_A_ADDR:$HOST_A_PORT" --libvirt-dest "$LV_URI_A" --quiet &&
		[ "$(virshA domstate $G 2>&1)" = running ]
	check rdma_channels_a_to_b $? "rc=$rc job ${job:-?}: $out; ${v:-}; $(dump_services)"
fi

# a destination libvirt that does not answer: libvirt's own error, the domain stays
out=$(vmA migrate $G "$HOST_B_ADDR:$HOST_B_PORT" --libvirt-dest "qemu+tcp://$HOST_B_ADDR:1/system" --quiet 2>&1); rc=$?
[ $rc = 1 ] && echo "$out" | tail -n 1 | grep -q "^$G: failed: libvirt's migration: .*$HOST_B_ADDR" &&
	[ "$(virshA domstate $G)" = running ]
check unreachable_libvirt_dest_fails_clearly $? "rc=$rc: $out"

# ---- live migration A -> B through vmigrate ----
seq_before=$(lv_seq A $G)
out=$(vmA migrate $G "$HOST_B_ADDR:$HOST_B_PORT" --libvirt-dest "$LV_URI_B" --max-downtime 500 \
	--compress lz4 --json 2>&1); rc=$?
stateB=$(virshB domstate $G 2>&1)
listA=$(virshA list --all --name 2>&1)
QEMU_PIDS="$QEMU_PIDS $(lv_qemu_pids B)"
[ $rc = 0 ] && [ "$stateB" = running ] && ! echo "$listA" | grep -qx $G
check live_migration_a_to_b $? "rc=$rc: $out; on B: $stateB; A lists: $listA; $(dump_services)"
echo "# A -> B: $(echo "$out" | tail -n 1)"
# the stream went through vmigrate as records: both ends counted it, the
# same; LZ4 on the guest's text and files made the wire smaller than it
stats=$(echo "$out" | tail -n 1)
in_job=$(echo "$out" | sed -n 's/^vmigrate: job \([^:]*\): .*/\1/p' | head -n 1).json
python3 - "$stats" "$HOSTS_DIR/B/libvirt-jobs/$in_job" <<'PY'
import json, sys
s = json.loads(sys.argv[1])
d = json.load(open(sys.argv[2]))
# libvirt's final figures (the destination's completed job), and ours
ok = (s["status"] == "completed" and s["qemu_stream_bytes"] > 16 << 20 and
      s["remaining_bytes"] == 0 and s["rounds"] >= 1 and
      s["libvirt_data_processed"] > 16 << 20 and
      s["normal_pages"] > 4096 and s["device_bytes"] > 0 and
      s["compress"] == "lz4" and s["compressed_pages"] > 1024 and
      s["record_bytes"] < s["qemu_stream_bytes"] and
      s["transferred_bytes"] < s["qemu_stream_bytes"] and
      d["done"] and d["stats"]["status"] == "completed" and
      d["stats"]["qemu_stream_bytes"] == s["qemu_stream_bytes"] and
      d["stats"]["record_bytes"] == s["record_bytes"])
sys.exit(0 if ok else 1)
PY
check stream_carried_by_vmigrate $? "source: $stats; destination: $(cat "$HOSTS_DIR/B/libvirt-jobs/$in_job" 2>&1)"

seq_a=$(lv_seq A $G)
lv_wait_seq B $G "$seq_a" && [ "$seq_a" -ge "$seq_before" ]
check goes_on_at_b $? "B's last progress seq $(lv_seq B $G), A's last $seq_a"
v=$(lv_verify B $G)
check data_intact_at_b $? "$v"
out=$(vmB list 2>&1)
echo "$out" | grep -qE "^$G +libvirt +running " && ! vmA list | grep -q "^$G "
check list_follows_domain $? "B: $out; A: $(vmA list 2>&1)"

# ---- a paused migration B -> A: the RAM is the same on both ends ----
memB=$HOSTS_DIR/mem-B.bin memA=$HOSTS_DIR/mem-A.bin
virshB suspend $G >/dev/null && lv_pmemsave B $G "$memB" $MEM &&
	sumB=$(sha256sum <"$memB" | cut -d' ' -f1) && rm -f "$memB" &&
	out=$(vmB migrate $G "$HOST_A_ADDR:$HOST_A_PORT" --libvirt-dest "$LV_URI_A" --channels 2 \
		--quiet 2>&1) &&
	stateA=$(virshA domstate $G) && [ "$stateA" = paused ] &&
	lv_pmemsave A $G "$memA" $MEM && sumA=$(sha256sum <"$memA" | cut -d' ' -f1) &&
	[ "$(stat -c %s "$memA")" = $((MEM * 1024 * 1024)) ] && [ "$sumA" = "$sumB" ]
check paused_migration_ram_identical $? "B ${sumB:-?} A ${sumA:-?} state on A ${stateA:-?}: ${out:-}"
rm -f "$memA" "$memB"
virshA resume $G >/dev/null && lv_wait_seq A $G "$(lv_seq B $G)" && v=$(lv_verify A $G)
check resumes_intact_at_a $? "${v:-resume failed or no progress past seq $(lv_seq B $G)}"

# ---- data channels: the pages spread over 3, the guest dirtying 32 MiB/s,
# then back over the session alone (--channels 0) ----
lv_set_rate A $G 32
out=$(vmA migrate $G "$HOST_B_ADDR:$HOST_B_PORT" --libvirt-dest "$LV_URI_B" --channels 3 \
	--compress lz4 --json 2>&1); rc=$?
job=$(echo "$out" | sed -n 's/^vmigrate: job \([^:]*\): .*/\1/p' | head -n 1)
v= stB=$(virshB domstate $G 2>&1)
[ $rc = 0 ] && [ "$stB" = running ] &&
	grep -q "job $job, .*its pages over 3 data channels" "$HOSTS_DIR/A/service.log" &&
	grep -q "(job $job): .*its pages over 3 data channels" "$HOSTS_DIR/B/service.log" &&
	v=$(lv_verify B $G)
check three_channels_dirtying_a_to_b $? "rc=$rc job ${job:-?} state on B ${stB:-?}, B's log of it: \
$(grep -F "job ${job:-?}" "$HOSTS_DIR/B/service.log" | tail -n 3); verify: ${v:-not run}; $out; $(dump_services)"
seq_a=$(lv_seq A $G)
lv_wait_seq B $G "$seq_a"
check goes_on_at_b_after_channels $? "B's last progress seq $(lv_seq B $G), A's last $seq_a"
out=$(vmB migrate $G "$HOST_A_ADDR:$HOST_A_PORT" --libvirt-dest "$LV_URI_A" --channels 0 \
	--json 2>&1); rc=$?
job=$(echo "$out" | sed -n 's/^vmigrate: job \([^:]*\): .*/\1/p' | head -n 1)
[ $rc = 0 ] && [ "$(virshA domstate $G 2>&1)" = running ] &&
	grep -q "job $job, .*its pages over 0 data channels" "$HOSTS_DIR/B/service.log" &&
	lv_wait_seq A $G "$(lv_seq B $G)" && v=$(lv_verify A $G)
check session_alone_b_to_a $? "rc=$rc job ${job:-?}: $out; ${v:-}; $(dump_services)"
lv_set_rate A $G 8

# ---- zstd pages (format 1.2), over 2 data channels to B and back over the
# session: the job says zstd, its records are smaller than QEMU's stream,
# the data intact at each end ----
out=$(vmA migrate $G "$HOST_B_ADDR:$HOST_B_PORT" --libvirt-dest "$LV_URI_B" --channels 2 \
	--compress zstd --json 2>&1) && echo "$out" | tail -n 1 | python3 -c '
import json, sys
s = json.loads(sys.stdin.read())
sys.exit(0 if s["status"] == "completed" and s["compress"] == "zstd" and
         s["record_bytes"] < s["qemu_stream_bytes"] else 1)' &&
	v=$(lv_verify B $G) &&
	out=$(vmB migrate $G "$HOST_A_ADDR:$HOST_A_PORT" --libvirt-dest "$LV_URI_A" --channels 0 \
		--compress zstd --json 2>&1) && [ "$(virshA domstate $G 2>&1)" = running ] &&
	lv_wait_seq A $G "$(lv_seq B $G)" && v=$(lv_verify A $G)
check zstd_pages_there_and_back $? "$(echo "$out" | tail -n 1); ${v:-}; $(dump_services)"

# ---- cancel: libvirt aborts the job, the domain stays on A ----
# 1 MiB/s: the job outlasts the cancel by far
vmA migrate $G "$HOST_B_ADDR:$HOST_B_PORT" --libvirt-dest "$LV_URI_B" --bandwidth 1M \
	--json >"$HOSTS_DIR/cancel.out" 2>&1 &
mig=$!
job=
for _ in $(seq 300); do
	job=$(vmA jobs --json 2>/dev/null | python3 -c '
import json, sys
for j in json.load(sys.stdin)["jobs"]:
    if j.get("kind") == "libvirt" and not j["done"] and j["stats"]["status"] == "active":
        print(j["job"])' 2>/dev/null)
	[ -n "$job" ] && break
	sleep 0.1
done
[ -n "$job" ] && vmA cancel "$job" >/dev/null 2>&1
crc=$?
wait $mig
rc=$?
out=$(cat "$HOSTS_DIR/cancel.out")
[ -n "$job" ] && [ $crc = 0 ] && [ $rc = 1 ] && [ "$(virshA domstate $G)" = running ] &&
	[ -z "$(virshB list --name)" ] && echo "$out" | tail -n 1 | grep -q '"status":"cancelled"'
check cancel_keeps_domain_on_a $? "job '${job:-none seen active}' cancel rc=$crc migrate rc=$rc: $out"
# --bandwidth is vmigrate's cap on the wire: 1 MiB/s (and a 50 ms burst)
echo "$out" | tail -n 1 | python3 -c '
import json, sys
s = json.loads(sys.stdin.read())
t = s["total_time_ms"] / 1000
sys.exit(0 if t > 1 and 0 < s["transferred_bytes"] <= (1 << 20) * (t + 0.5) else 1)'
check bandwidth_caps_the_wire $? "$(echo "$out" | tail -n 1)"
seq_a=$(lv_seq A $G)
lv_wait_seq A $G "$seq_a" && v=$(lv_verify A $G)
check goes_on_at_a_after_cancel $? "${v:-no progress past seq $seq_a}"

# ---- the destination's service dies mid-stream: a clear error, the domain stays on A ----
vmA migrate $G "$HOST_B_ADDR:$HOST_B_PORT" --libvirt-dest "$LV_URI_B" --bandwidth 1M \
	--json >"$HOSTS_DIR/peer.out" 2>&1 &
mig=$!
victim=
for _ in $(seq 300); do
	# the destination's process for this job, a child of the service we started
	victim=$(lv_pids_named B vmg:lv-in)
	[ -n "$victim" ] && [ -n "$(virshB list --name 2>/dev/null)" ] &&
		vmA jobs --json 2>/dev/null | grep -q '"status":"active"' && break
	victim=
	sleep 0.1
done
[ -n "$victim" ] && kill -9 $victim
wait $mig
rc=$?
out=$(cat "$HOSTS_DIR/peer.out")
gone=1
for _ in $(seq 100); do [ -z "$(virshB list --name 2>/dev/null)" ] && gone=0 && break; sleep 0.1; done
# B's service finds its job's process gone: the job failed, its socket file goes
swept=1
for _ in $(seq 100); do
	! lv_exec B ls /run/vmigrate | grep -q '^qemu-' &&
		vmB jobs --completed --json | grep -q '"error":"the job.s process ended before the job did"' &&
		swept=0 && break
	sleep 0.1
done
[ -n "$victim" ] && [ $rc = 1 ] && [ "$(virshA domstate $G)" = running ] && [ $gone = 0 ] &&
	[ $swept = 0 ] &&
	echo "$out" | tail -n 1 | grep -qE '"status":"failed","error":"the destination.s service: (it closed the session|the TLS session broke off \(the service died)'
check peer_lost_keeps_domain_on_a $? "killed '${victim:-nothing}' rc=$rc B lists '$(virshB list --name 2>&1)' swept=$swept ($(lv_exec B ls /run/vmigrate | tr '\n' ' '); $(vmB jobs --completed --json 2>&1)): $out"
seq_a=$(lv_seq A $G)
lv_wait_seq A $G "$seq_a" && v=$(lv_verify A $G)
check goes_on_at_a_after_peer_lost $? "${v:-no progress past seq $seq_a}"

# ---- a record corrupted on the wire: the destination refuses it, the domain stays on A ----
# A's service again, with the fault point that flips a bit of a PAGES record
# once it sent 4 MiB (each job's process is new: each fires once)
kill "$SVC_A_PID" && wait "$SVC_A_PID" 2>/dev/null
SVC_A_PID=
VMIGRATE_FAULT=src-corrupt-stream lv_start_service A
rc=$?
out=$(vmA migrate $G "$HOST_B_ADDR:$HOST_B_PORT" --libvirt-dest "$LV_URI_B" --compress off \
	--json 2>&1); mrc=$?
gone=1
for _ in $(seq 100); do [ -z "$(virshB list --name 2>/dev/null)" ] && gone=0 && break; sleep 0.1; done
[ $rc = 0 ] && [ $mrc = 1 ] && [ "$(virshA domstate $G)" = running ] && [ $gone = 0 ] &&
	echo "$out" | tail -n 1 | grep -q '"status":"failed","error":"the destination gave up: the source.s stream: the records: checksum mismatch' &&
	vmB jobs --completed --json | grep -q '"error":"the source.s stream: the records: checksum mismatch'
check corrupted_record_refused_domain_stays $? "service rc=$rc migrate rc=$mrc B lists '$(virshB list --name 2>&1)': $out; B: $(vmB jobs --completed --json 2>&1 | tail -c 600)"
seq_a=$(lv_seq A $G)
lv_wait_seq A $G "$seq_a" && v=$(lv_verify A $G)
check goes_on_at_a_after_corrupt_record $? "${v:-no progress past seq $seq_a}"

# restart_service A|B [FAULTS]: that host's service again, with these
# fault points (VMIGRATE_FAULT) or none
restart_service() {
	local pid
	pid=$(lv_var SVC "$1_PID")
	[ -n "$pid" ] && kill "$pid" && wait "$pid" 2>/dev/null
	eval "SVC_$1_PID="
	VMIGRATE_FAULT=${2:-} lv_start_service "$1"
}
# wait_b_empty: 0 once B runs no domain (libvirt's rollback killed its QEMU)
# b_record JOB: B's record of the incoming job JOB, once its process wrote
# it: that process may still wait a moment for the source's reason (its
# ABORT) after B's QEMU went
b_record() {
	local r
	for _ in $(seq 100); do
		r=$(vmB jobs --completed --json 2>/dev/null |
			grep -o "{\"job\":\"$1\",[^}]*\"direction\":\"incoming\"[^}]*}")
		[ -n "$r" ] && { echo "$r"; return 0; }
		sleep 0.1
	done
	return 1
}

wait_b_empty() {
	for _ in $(seq 100); do [ -z "$(virshB list --name 2>/dev/null)" ] && return 0; sleep 0.1; done
	return 1
}

# ---- vmigrate's own acknowledgement: B's QEMU loaded the whole stream (its
# SHUT reached A's service), then B's service dies before it acknowledged:
# A's QEMU never gets that SHUT, its migration fails, the domain stays on A ----
# (--max-downtime: QEMU's downtime limit before the job comes back after it)
restart_service A && restart_service B dst-exit-before-ack
rc=$?
dt_before=$(virshA migrate-getmaxdowntime $G)
out=$(VMIGRATE_CONTROL="$HOSTS_DIR/A/vmigrated.sock" timeout 300 "$VMIGRATE" migrate $G \
	"$HOST_B_ADDR:$HOST_B_PORT" --libvirt-dest "$LV_URI_B" --max-downtime 777 --json 2>&1); mrc=$?
wait_b_empty; gone=$?
dt_after=$(virshA migrate-getmaxdowntime $G)
stats=$(echo "$out" | tail -n 1)
[ $rc = 0 ] && [ $mrc = 1 ] && [ "$(virshA domstate $G)" = running ] && [ $gone = 0 ] &&
	[ -n "$dt_before" ] && [ "$dt_before" != 777 ] && [ "$dt_after" = "$dt_before" ] &&
	echo "$stats" | grep -q '"status":"failed","error":"the destination.s service: ' &&
	echo "$stats" | python3 -c '
import json, sys
s = json.loads(sys.stdin.read())
# PONG and SHUT came back: B had loaded everything when its service died
sys.exit(0 if s["return_path_bytes"] >= 16 and s["device_bytes"] > 0 else 1)'
check dest_dies_before_ack_domain_stays $? "service rc=$rc migrate rc=$mrc max downtime $dt_before -> $dt_after, B lists '$(virshB list --name 2>&1)': $out"
seq_a=$(lv_seq A $G)
lv_wait_seq A $G "$seq_a" && v=$(lv_verify A $G)
check goes_on_at_a_after_dest_died_before_ack $? "${v:-no progress past seq $seq_a}"

# ---- the watchdog: B's service stops (SIGSTOP) where it would acknowledge,
# with A's domain paused in QEMU's completion; within the io timeout (5 s)
# without progress A's service gives up, libvirt aborts, the domain runs on A ----
restart_service B dst-stop-before-ack
rc=$?
VMIGRATE_CONTROL="$HOSTS_DIR/A/vmigrated.sock" timeout 300 "$VMIGRATE" migrate $G \
	"$HOST_B_ADDR:$HOST_B_PORT" --libvirt-dest "$LV_URI_B" --json >"$HOSTS_DIR/stall.out" 2>&1 &
mig=$!
paused=
while kill -0 $mig 2>/dev/null; do
	[ "$(virshA domstate $G 2>/dev/null)" = paused ] && paused=1
	sleep 0.2
done
wait $mig
mrc=$?
stopped=$(lv_pids_named B vmg:lv-in)
[ -n "$stopped" ] && kill -CONT $stopped	# it finds its session gone and ends
wait_b_empty; gone=$?
out=$(cat "$HOSTS_DIR/stall.out")
[ $rc = 0 ] && [ $mrc = 1 ] && [ -n "$paused" ] && [ -n "$stopped" ] && [ $gone = 0 ] &&
	[ "$(virshA domstate $G)" = running ] &&
	echo "$out" | tail -n 1 | grep -q '"status":"failed","error":"no progress for 5000 ms: the destination stalls (its QEMU loaded the stream, its service never acknowledged)'
check stalled_dest_while_paused_aborted $? "service rc=$rc migrate rc=$mrc paused seen '${paused:-no}' stopped '${stopped:-none}' B lists '$(virshB list --name 2>&1)': $out"
seq_a=$(lv_seq A $G)
lv_wait_seq A $G "$seq_a" && v=$(lv_verify A $G)
check goes_on_at_a_after_stall $? "${v:-no progress past seq $seq_a}"

# ---- the peer stalls mid-stream (B's job SIGSTOPped while pages flow):
# the migration ends, bounded, and the domain stays on A ----
if case_wanted stopped_dest_mid_stream_fails_bounded; then
	restart_service B
	vmA migrate $G "$HOST_B_ADDR:$HOST_B_PORT" --libvirt-dest "$LV_URI_B" --bandwidth 2M \
		--json >"$HOSTS_DIR/stop.out" 2>&1 &
	mig=$!
	victim=
	for _ in $(seq 300); do
		victim=$(lv_pids_named B vmg:lv-in)
		[ -n "$victim" ] && vmA jobs --json 2>/dev/null | grep -q '"status":"active"' && break
		victim=
		sleep 0.1
	done
	[ -n "$victim" ] && kill -STOP $victim
	# bounded: the watchdog or the session's io timeout, not libvirt's patience
	for _ in $(seq 600); do kill -0 $mig 2>/dev/null || break; sleep 0.1; done
	ended=1; kill -0 $mig 2>/dev/null || ended=0
	[ $ended = 0 ] || kill $mig
	wait $mig
	mrc=$?
	[ -n "$victim" ] && kill -CONT $victim
	wait_b_empty; gone=$?
	out=$(cat "$HOSTS_DIR/stop.out")
	[ -n "$victim" ] && [ $ended = 0 ] && [ $mrc = 1 ] && [ $gone = 0 ] &&
		[ "$(virshA domstate $G)" = running ] &&
		echo "$out" | tail -n 1 | grep -qE '"status":"failed","error":"(no progress for 5000 ms|the session to [^"]*: Connection timed out)'
	check stopped_dest_mid_stream_fails_bounded $? "stopped '${victim:-none}' ended=$ended rc=$mrc B lists '$(virshB list --name 2>&1)': $out"
	seq_a=$(lv_seq A $G)
	lv_wait_seq A $G "$seq_a" && v=$(lv_verify A $G)
	check goes_on_at_a_after_stopped_dest $? "${v:-no progress past seq $seq_a}"
else
	echo "SKIP libvirt_migrate.goes_on_at_a_after_stopped_dest: with the case before it"
fi

# ---- a data channel breaks mid-way (A cuts its last one past 4 MiB):
# the migration fails saying which, the domain stays on A. B's job fails
# too: on the broken channel, or, when libvirt (told by A's failed job)
# removes B's QEMU first, on writing into that QEMU (seen in a sanitized run) ----
restart_service B && restart_service A src-data-channel-cut
rc=$?
out=$(VMIGRATE_CONTROL="$HOSTS_DIR/A/vmigrated.sock" timeout 300 "$VMIGRATE" migrate $G \
	"$HOST_B_ADDR:$HOST_B_PORT" --libvirt-dest "$LV_URI_B" --channels 2 --compress off \
	--json 2>&1); mrc=$?
wait_b_empty; gone=$?
job=$(echo "$out" | tail -n 1 | sed -n 's/.*"job":"\([^"]*\)".*/\1/p')
rec=$(b_record "$job")
[ $rc = 0 ] && [ $mrc = 1 ] && [ "$(virshA domstate $G)" = running ] && [ $gone = 0 ] &&
	echo "$out" | tail -n 1 | grep -q '"status":"failed","error":"[^"]*data channel 2' &&
	echo "$rec" | grep -qE '"error":"[^"]*(data channel 2|the destination QEMU: writing the stream)'
check cut_data_channel_fails_domain_stays $? "service rc=$rc migrate rc=$mrc gone=$gone A: $(virshA domstate $G 2>&1) B lists '$(virshB list --name 2>&1)': $(echo "$out" | tail -n 1); B's record of ${job:-?}: ${rec:-none}; $(grep -v ' pass' "$HOSTS_DIR/B/service.log" | tail -n 8)"
seq_a=$(lv_seq A $G) v=
lv_wait_seq A $G "$seq_a" && v=$(lv_verify A $G)
check goes_on_at_a_after_cut_channel $? "${v:-no progress past seq $seq_a, A: $(virshA domstate $G 2>&1)}; $(dump_services)"

# ---- teardown leaves nothing behind ----
holders="$LV_HOLDER_A $LV_HOLDER_B" daemons="$LV_LIBVIRTD_A $LV_LIBVIRTD_B $SVC_A_PID $SVC_B_PID"
mntns="$LV_MNTNS_A $LV_MNTNS_B"
socks=$(for h in A B; do lv_exec $h ls /run/vmigrate 2>&1 | sed "s/^/$h:/"; done)
libvirt_hosts_cleanup
hosts_cleanup
left=
echo "$socks" | grep -q '^[AB]:qemu-' && left="$left sockets: $socks"
for p in $holders $daemons $QEMU_PIDS; do
	[ -e /proc/"$p" ] && case $(readlink /proc/"$p"/ns/mnt) in
	${LV_MNTNS_A:-none}|${LV_MNTNS_B:-none}) left="$left pid $p ($(cat /proc/"$p"/comm))" ;;
	esac
done
for p in /proc/[0-9]*; do
	n=$(readlink "$p/ns/mnt" 2>/dev/null) || continue
	for m in $mntns; do [ "$n" = "$m" ] && left="$left ${p#/proc/} in $m"; done
done
ip netns list | grep -qE "^($NS_A|$NS_B)( |$)" && left="$left namespaces"
[ -e "$HOSTS_DIR" ] && left="$left $HOSTS_DIR"
[ -z "$left" ]
check cleanup_leaves_nothing $? "left behind:$left"

echo "# libvirt_migrate took $((SECONDS - t_start)) s"
suite_end
