#!/bin/bash
# The operator's instruments, on two namespaced hosts: the services'
# Prometheus metrics (scraped over HTTP and parsed strictly, counters moved
# by exactly what was done, the downtime histogram holding the migration's
# downtime, `vmigrate metrics` the same text, bytes counted as a job runs
# and never backwards, reports from outside the service refused), a
# replication job kept with its figures among both ends' finished jobs,
# `vmigrate check` of this host and of the path to the other one and back
# (and a FAIL that fails it, either way), and
# checkpoint chains kept whole: a parent is not overwritten unless forced,
# a directory is no file name, backup makes its directory, and ckpt verify
# checks a file's parents too.
set -u
BUILD=${1:-build}
. "$(dirname "$0")/lib/hosts.sh"
. "$(dirname "$0")/lib/suite.sh"
suite_with_hosts metrics_check
PROM=$(realpath "$(dirname "$0")/lib/prom.py")
M=$HOSTS_DIR/metrics
mkdir -p "$M"
if [ "$USE_NETNS" = 1 ]; then MPORT_A=9480 MPORT_B=9480
else MPORT_A=$((HOST_A_PORT + 3000)) MPORT_B=$((HOST_B_PORT + 3000)); fi
hosts_start_service A "" "--metrics $HOST_A_ADDR:$MPORT_A" &&
	hosts_start_service B "" "--metrics $HOST_B_ADDR:$MPORT_B" ||
	{ echo "FAIL metrics_check.setup: the services did not start"; exit 1; }

# a command on host A or B (in its namespace)
on() { local h=$1; shift; if [ "$USE_NETNS" = 1 ]; then ip netns exec "$(hosts_ns "$h")" "$@"; else "$@"; fi; }
# scrape HOST FILE: GET /metrics of that host's service, checked as it is read
scrape() {
	local url
	if [ "$1" = A ]; then url=http://$HOST_A_ADDR:$MPORT_A/metrics
	else url=http://$HOST_B_ADDR:$MPORT_B/metrics; fi
	on "$1" python3 "$PROM" scrape "$url" "$2" && python3 "$PROM" check "$2" >/dev/null
}
prom() { python3 "$PROM" "$@"; }
# one line, whatever the output: never a line a test runner would count
flat() { tr '\n' ' ' | cut -c1-1500; }
# jget JSON KEY...: a field of a JSON object (nested keys), "" when absent
jget() { python3 -c '
import json, sys
o = json.loads(sys.argv[1])
for k in sys.argv[2:]:
    o = o.get(k, "") if isinstance(o, dict) else ""
print(o)' "$@" 2>/dev/null; }
# scrape HOST into FILE until `prom expect OLD FILE ARGS...` holds (5 s at most)
scrape_until() {
	local host=$1 old=$2 new=$3; shift 3
	for _ in $(seq 50); do
		scrape "$host" "$new" && prom expect "$old" "$new" "$@" >/dev/null && return 0
		sleep 0.1
	done
	prom expect "$old" "$new" "$@"
}

# ---- metrics ------------------------------------------------------------------
out=$(scrape A "$M/a0" 2>&1 && scrape B "$M/b0" 2>&1)
check scrape_parses $? "$(echo "$out" | flat)"

vmA start g --mem 256M --working-set 32M --dirty-rate 10M >/dev/null &&
	wait_counter vmA g 8192 || { echo "FAIL metrics_check.setup: no guest"; exit 1; }
d=$HOSTS_DIR/ck
mkdir -p "$d"
snap=$(vmA snapshot g "$d/m-0.ckpt" --json 2>&1)
fbytes=$(echo "$snap" | json_field file_bytes)

# a directory is refused before anything is written, and costs nothing
before=$(ls -A "$d" | sort)
out=$(vmA snapshot g "$d" 2>&1); rc=$?
out2=$(vmA snapshot g "$d/" --incremental 2>&1); rc2=$?
[ $rc = 1 ] && [ $rc2 = 1 ] && echo "$out" | grep -q "is a directory" &&
	[ "$(ls -A "$d" | sort)" = "$before" ]
check directory_refused $? "rc=$rc/$rc2: $out / $out2; files: $(ls -A "$d" | flat)"

mig=$(vmA migrate g "$HOST_B_ADDR:$HOST_B_PORT" --json 2>/dev/null); rc=$?
down_ms=$(echo "$mig" | json_field downtime_ms) sent=$(echo "$mig" | json_field transferred_bytes)
[ $rc = 0 ] && [ -n "$down_ms" ] && [ -n "$sent" ] && [ -n "$fbytes" ]
check migration_for_the_counters $? "rc=$rc: $(echo "$mig" | flat); snapshot: $(echo "$snap" | flat)"

out=$(scrape_until A "$M/a0" "$M/a1" \
	'vmigrate_migrations_total{direction="out",result="completed"}=1' 2>&1 &&
	prom expect "$M/a0" "$M/a1" \
	'vmigrate_migrations_total{direction="out",result="failed"}=0' \
	'vmigrate_migrations_total{direction="in",result="completed"}=0' \
	"vmigrate_bytes_sent_total=$sent" \
	'vmigrate_checkpoints_total{kind="full",result="ok"}=1' \
	'vmigrate_checkpoints_total{kind="full",result="failed"}=0' \
	'vmigrate_checkpoints_total{kind="incremental",result="failed"}=0' \
	"vmigrate_checkpoint_bytes_total=$fbytes" 2>&1)
check counters_moved_by_what_was_done $? "$(echo "$out" | flat)"

out=$(prom histogram "$M/a0" "$M/a1" vmigrate_migration_downtime_seconds \
	"$(echo "$down_ms" | awk '{ print $1 / 1000 }')" 2>&1)
check downtime_histogram_holds_the_migration $? "downtime ${down_ms} ms: $(echo "$out" | flat)"

out=$(scrape_until B "$M/b0" "$M/b1" \
	'vmigrate_migrations_total{direction="in",result="completed"}=1' \
	'vmigrate_migrations_total{direction="out",result="completed"}=0' 2>&1 &&
	[ "$(prom value "$M/b1" 'vmigrate_guests{state="running"}')" = 1 ] &&
	prom expect "$M/b0" "$M/b1" "vmigrate_bytes_received_total=$sent" 2>&1)
check destination_counts_the_incoming_one $? "$(echo "$out" | flat)"

# the moved guest's process on A is gone: what it did stays counted, and
# `vmigrate metrics` says the same as the listener
for _ in $(seq 100); do [ "$(hosts_count_procs A vmg:g)" = 0 ] && break; sleep 0.1; done
vmA metrics >"$M/cli" 2>&1 && scrape A "$M/a2"
out=$( (prom check "$M/cli" && prom same "$M/cli" "$M/a2" &&
	[ "$(hosts_count_procs A vmg:g)" = 0 ] && prom expect "$M/a1" "$M/a2" \
	'vmigrate_migrations_total{direction="out",result="completed"}=0') 2>&1)
check cli_metrics_match_and_outlive_the_guest_process $? "$(echo "$out" | flat)"

# a migration the destination refuses (the name is taken there) failed
vmA start x --mem 128M --working-set 8M >/dev/null && vmB start x --mem 128M --working-set 8M >/dev/null
out=$(vmA migrate x "$HOST_B_ADDR:$HOST_B_PORT" --quiet 2>&1); rc=$?
out2=$(scrape_until A "$M/a2" "$M/a3" \
	'vmigrate_migrations_total{direction="out",result="failed"}=1' \
	'vmigrate_migrations_total{direction="out",result="completed"}=0' 2>&1); rc2=$?
[ $rc = 1 ] && [ $rc2 = 0 ]
check refused_migration_counts_as_failed $? "rc=$rc: $(echo "$out $out2" | flat)"
vmA stop x >/dev/null 2>&1; vmB stop x >/dev/null 2>&1

# ---- reports from outside the service are refused ----------------------------------
# a client of the control socket (root here) cannot make the counters move:
# the control socket refuses job and backup reports, and the guests' reports
# socket is the service's user's alone (its directory 0700, itself 0600)
send_on() {	# SOCKET JSON: the one-line reply, or the error of connecting
	python3 -c '
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    s.connect(sys.argv[1])
except OSError as e:
    print("connect: %s" % e.strerror); sys.exit(0)
s.sendall(sys.argv[2].encode() + b"\n")
print(s.makefile().readline().strip())' "$@"
}
fake_job='{"cmd":"job-result","id":"fake-1","direction":"out","name":"g","job":"fake-job","stats":{"status":"completed","transferred_bytes":123456789,"downtime_ms":5}}'
fake_backup='{"cmd":"backup-result","name":"g","ok":true,"removed":7}'
scrape A "$M/fake0"
r1=$(send_on "$HOSTS_DIR/A/vmigrated.sock" "$fake_job")
r2=$(send_on "$HOSTS_DIR/A/vmigrated.sock" "$fake_backup")
r3=$(stat -c '%a %U %F' "$HOSTS_DIR/A/guests" "$HOSTS_DIR/A/guests/reports.socket" | flat)
scrape A "$M/fake1"
out=$(prom expect "$M/fake0" "$M/fake1" \
	'vmigrate_migrations_total{direction="out",result="completed"}=0' \
	vmigrate_bytes_sent_total=0 'vmigrate_backups_total{result="ok"}=0' \
	vmigrate_backup_files_removed_total=0 2>&1)
echo "$r1" | grep -q '"ok":false.*"code":"permission"' &&
	echo "$r2" | grep -q '"ok":false.*"code":"permission"' &&
	[ "$r3" = "700 $(id -un) directory 600 $(id -un) socket " ] && [ -z "$out" ]
check outside_reports_refused $? "control: $r1 / $r2; guests dir and reports socket: $r3; $(echo "$out" | flat)"

# ---- bytes counted while a job runs -----------------------------------------------
# a capped migration, scraped on both ends as it goes: the bytes counters
# move during the job (not only at its end), never go back, and end where
# the job's figures say
vmA start slow --mem 128M --working-set 32M --dirty-rate 2M >/dev/null && wait_counter vmA slow 8192 ||
	{ echo "FAIL metrics_check.setup: guest slow did not start"; exit 1; }
scrape A "$M/live-a0" && scrape B "$M/live-b0"
vmA migrate slow "$HOST_B_ADDR:$HOST_B_PORT" --bandwidth 6M --quiet --json >"$M/live-mig" 2>&1 &
mig_pid=$!
: >"$M/live-series"
# one series of one host's /metrics, fetched with curl (quick, for the loop)
series_of() {
	local url
	if [ "$1" = A ]; then url=http://$HOST_A_ADDR:$MPORT_A/metrics
	else url=http://$HOST_B_ADDR:$MPORT_B/metrics; fi
	on "$1" curl -sf "$url" | sed -n "s/^$2 //p"
}
while kill -0 $mig_pid 2>/dev/null; do
	echo "$(series_of A vmigrate_bytes_sent_total) $(series_of B vmigrate_bytes_received_total)" >>"$M/live-series"
	sleep 0.1
done
wait $mig_pid
rc=$?
echo "#   $(wc -l <"$M/live-series") scrapes of both ends during the job"
scrape A "$M/live-a1" && scrape B "$M/live-b1"
sent=$(json_field transferred_bytes <"$M/live-mig")
out=$(python3 -c '
import sys
a0, b0, a1, b1, sent = (float(x) for x in sys.argv[1:6])
rows = [tuple(float(v) for v in l.split()) for l in open(sys.argv[6]) if len(l.split()) == 2]
why = []
for col, name, start, end in ((0, "sent", a0, a1), (1, "received", b0, b1)):
    vals = [start] + [r[col] for r in rows] + [end]
    back = [(x, y) for x, y in zip(vals, vals[1:]) if y < x]
    mid = sorted(set(v for v in vals if start < v < end))
    if back:
        why.append("%s went back: %s" % (name, back[:3]))
    if len(mid) < 2:
        why.append("%s moved only at the end: %d values between %d and %d in %d scrapes" %
                   (name, len(mid), start, end, len(rows)))
    if end - start != sent:
        why.append("%s grew by %d, the job moved %d" % (name, end - start, sent))
print("; ".join(why))' "$(prom value "$M/live-a0" vmigrate_bytes_sent_total)" \
	"$(prom value "$M/live-b0" vmigrate_bytes_received_total)" \
	"$(prom value "$M/live-a1" vmigrate_bytes_sent_total)" \
	"$(prom value "$M/live-b1" vmigrate_bytes_received_total)" "${sent:-0}" "$M/live-series" 2>&1)
[ $rc = 0 ] && [ -n "$sent" ] && [ -z "$out" ]
check bytes_counted_while_the_job_runs $? "rc=$rc, sent ${sent:-?}: $out"

# ---- checkpoint chains (the guest now runs on B) ---------------------------------
c=$HOSTS_DIR/chain
mkdir -p "$c"
vmB snapshot g "$c/c0.ckpt" >/dev/null && vmB snapshot g "$c/c1.ckpt" --incremental >/dev/null &&
	vmB snapshot g "$c/c2.ckpt" --incremental >/dev/null
check chain_written $? "$(ls -l "$c" | flat)"

out=$("$VMIGRATE" ckpt info "$c/c2.ckpt" 2>&1)
p1=$("$VMIGRATE" ckpt info "$c/c1.ckpt" --json | json_field image_uuid)
echo "$out" | grep -q "parent: image $p1, digest [0-9a-f]*, file $c/c1.ckpt"
check info_shows_the_parent $? "$(echo "$out" | flat)"

sum0=$(sha256sum "$c/c0.ckpt")
out=$(vmB snapshot g "$c/c0.ckpt" 2>&1); rc=$?
[ $rc = 1 ] && echo "$out" | grep -q "is the parent of $c/c1.ckpt" &&
	[ "$(sha256sum "$c/c0.ckpt")" = "$sum0" ] && [ -z "$(ls "$c" | grep tmp)" ]
check parent_overwrite_refused $? "rc=$rc: $(echo "$out" | flat)"

# the refusal cost nothing: the next incremental still builds on c2
out=$(vmB snapshot g "$c/c3.ckpt" --incremental 2>&1) &&
	info=$("$VMIGRATE" ckpt info "$c/c3.ckpt" --json 2>&1) &&
	[ "$(jget "$info" parent_file)" = "$c/c2.ckpt" ]
check refusal_keeps_the_chain_going $? "$(echo "$out" | flat); $(echo "${info:-}" | flat)"

out=$(vmB snapshot g "$c/c3.ckpt" --incremental --force 2>&1); rc=$?
[ $rc = 1 ] && echo "$out" | grep -q "holds the parent of this incremental"
check own_parent_never_overwritten $? "rc=$rc: $(echo "$out" | flat)"

out=$("$VMIGRATE" ckpt verify "$c/c3.ckpt" 2>&1); rc=$?
[ $rc = 0 ] && echo "$out" | grep -q "intact, with its 3 parent(s)"
check verify_checks_the_chain $? "rc=$rc: $(echo "$out" | flat)"

size=$(stat -c %s "$c/c1.ckpt")
flip_byte "$c/c1.ckpt" $((size / 2))
out=$("$VMIGRATE" ckpt verify "$c/c3.ckpt" 2>&1); rc=$?
out2=$("$VMIGRATE" ckpt verify "$c/c3.ckpt" --file-only 2>&1); rc2=$?
[ $rc = 1 ] && echo "$out" | grep -q "its parent $c/c1.ckpt is damaged" &&
	[ $rc2 = 0 ] && echo "$out2" | grep -q "intact"
check damaged_parent_fails_verify_file_only_passes $? "rc=$rc: $(echo "$out" | flat); --file-only rc=$rc2: $(echo "$out2" | flat)"

out=$(vmB snapshot g "$c/c0.ckpt" --force 2>&1); rc=$?
[ $rc = 0 ] && [ "$(sha256sum "$c/c0.ckpt")" != "$sum0" ]
check force_replaces_a_parent $? "rc=$rc: $(echo "$out" | flat)"

scrape B "$M/b2"
bk=$HOSTS_DIR/backups/new/g
out=$(vmB backup g --dir "$bk" --keep 2 2>&1); rc=$?
[ $rc = 0 ] && [ -d "$bk" ] && [ "$(stat -c %a "$bk")" = 700 ] && [ "$(ls "$bk" | wc -l)" = 1 ]
check backup_makes_its_directory $? "rc=$rc: $(echo "$out" | flat); $(ls -la "$bk" 2>&1 | flat)"
out=$(scrape B "$M/b3" && prom expect "$M/b2" "$M/b3" 'vmigrate_backups_total{result="ok"}=1' \
	'vmigrate_backups_total{result="failed"}=0' \
	'vmigrate_checkpoints_total{kind="full",result="ok"}=1' 2>&1)
check backup_counted $? "$(echo "$out" | flat)"

# ---- replication figures, from the guest's replicate-status --------------------------
vmA start r --mem 128M --working-set 8M --dirty-rate 5M >/dev/null && wait_counter vmA r 2048 &&
	vmA replicate r "$HOST_B_ADDR:$HOST_B_PORT" >/dev/null 2>&1
rc=$?
sleep 1
scrape A "$M/a4" && scrape B "$M/b4"
ep=$(prom value "$M/a4" 'vmigrate_replication_epochs_total{guest="r"}' 2>&1)
# one state is 1, the one the guest is in (protected, or degraded on a busy machine)
now=$(grep '^vmigrate_replication_state{guest="r",role="primary",' "$M/a4" | grep ' 1$' |
	sed 's/.*state="\([a-z]*\)".*/\1/')
[ $rc = 0 ] && { [ "$now" = protected ] || [ "$now" = degraded ]; } &&
	[ "${ep%.*}" -gt 0 ] 2>/dev/null &&
	prom value "$M/a4" 'vmigrate_replication_lag_seconds{guest="r"}' >/dev/null &&
	prom value "$M/a4" 'vmigrate_replication_pause_p99_seconds{guest="r"}' >/dev/null &&
	prom value "$M/a4" 'vmigrate_replication_held_output_bytes{guest="r"}' >/dev/null &&
	[ "$(prom value "$M/b4" 'vmigrate_replication_state{guest="r",role="standby",state="standby"}')" = 1 ]
check replication_figures $? "rc=$rc, epochs $ep: $(grep -h replication "$M/a4" "$M/b4" 2>&1 | grep -v '^#' | flat)"
vmA replicate stop r >/dev/null 2>&1

# the replication job, once stopped, is among both ends' finished jobs with
# its final figures (the standby's process writes its record as it ends)
repl_record() {	# HOST DIRECTION: the record's status, epochs and bytes, or ""
	$1 jobs --completed --json 2>/dev/null | python3 -c '
import json, sys
for j in json.load(sys.stdin)["jobs"]:
    if j.get("guest") == "r" and j.get("kind") == "replication" and j.get("direction") == sys.argv[1]:
        st = j["stats"]
        print(st["status"], st.get("epochs", 0), st.get("transferred_bytes", 0), st.get("total_time_ms", 0))' "$2"
}
for _ in $(seq 50); do [ -n "$(repl_record vmB incoming)" ] && break; sleep 0.1; done
ra=$(repl_record vmA outgoing) rb=$(repl_record vmB incoming)
echo "$ra" | awk '$1 == "stopped" && $2 > 0 && $3 > 1000000 && $4 > 0 { ok = 1 } END { exit !ok }' &&
	echo "$rb" | awk '$1 == "stopped" && $2 > 0 && $3 > 1000000 && $4 > 0 { ok = 1 } END { exit !ok }' &&
	vmA jobs --completed | grep -q '^r-repl-[0-9]* .*outgoing *stopped'
check replication_job_kept_on_both_ends $? "A: '$ra'; B: '$rb' (status epochs bytes ms)"

# ---- vmigrate check --------------------------------------------------------------
result_of() { echo "$1" | python3 -c '
import json, sys
for c in json.load(sys.stdin)["checks"]:
    if c["check"] == sys.argv[1]: print(c["result"])' "$2"; }
out=$(vmA check --json 2>&1); rc=$?
bad=
for k in kvm kvm.capabilities memfd userfaultfd control tls.ca tls.cert tls.key; do
	[ "$(result_of "$out" $k)" = PASS ] || bad="$bad $k"
done
[ "$(result_of "$out" rdma)" = WARN ] || [ "$(result_of "$out" rdma)" = PASS ] || bad="$bad rdma"
nfail=$(echo "$out" | json_field failed)
[ -z "$bad" ] && [ "$nfail" = 0 ] && [ $rc = 0 ]
check check_passes_this_host $? "rc=$rc, not as expected:$bad: $(echo "$out" | flat)"

bad_dir=$HOSTS_DIR/badpki
cp -r "$HOSTS_DIR/pki/hostA" "$bad_dir" && chmod 644 "$bad_dir/key.pem"
out=$(vmA check --tls-dir "$bad_dir" --json 2>&1); rc=$?
[ $rc = 1 ] && [ "$(result_of "$out" tls.key)" = FAIL ] && echo "$out" | grep -q "chmod 600"
check check_fails_a_readable_key $? "rc=$rc: $(echo "$out" | flat)"

# an expired certificate, signed by the hosts' CA
x=$HOSTS_DIR/expired
mkdir -p "$x/db/new" && touch "$x/db/index.txt" && echo 01 >"$x/db/serial"
printf '[ca]\ndefault_ca=c\n[c]\ndir=%s/db\ndatabase=$dir/index.txt\nnew_certs_dir=$dir/new\nserial=$dir/serial\ndefault_md=sha256\npolicy=p\n[p]\ncommonName=supplied\n' "$x" >"$x/ca.cnf"
cp "$HOSTS_DIR/pki/ca.crt" "$x/ca.crt"
(umask 077 && openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
	-keyout "$x/key.pem" -out "$x/req.csr" -subj /CN=hostA 2>/dev/null) &&
	openssl ca -batch -config "$x/ca.cnf" -cert "$HOSTS_DIR/pki/ca.crt" -keyfile "$HOSTS_DIR/pki/ca.key" \
		-in "$x/req.csr" -out "$x/cert.pem" -startdate 20200101000000Z -enddate 20200201000000Z \
		-notext >/dev/null 2>&1
out=$(vmA check --tls-dir "$x" 2>&1); rc=$?
[ $rc = 1 ] && echo "$out" | grep -q "^FAIL  tls.cert .*expired on 2020-02-01" &&
	echo "$out" | grep -q "^PASS  tls.key"
check check_fails_an_expired_certificate $? "rc=$rc: $(echo "$out" | flat)"

out=$(vmA check "$HOST_B_ADDR:$HOST_B_PORT" --json 2>&1); rc=$?
bad=
for k in peer.reach peer.tls peer.data_port peer.bandwidth; do
	[ "$(result_of "$out" $k)" = PASS ] || bad="$bad $k"
done
detail=$(echo "$out" | python3 -c '
import json, sys
print(" | ".join(c["detail"] for c in json.load(sys.stdin)["checks"] if c["check"].startswith("peer")))')
[ -z "$bad" ] && [ $rc = 0 ] && echo "$detail" | grep -q "with 'hostB'" &&
	echo "$detail" | grep -q '[1-9][0-9.]* MiB/s on one data channel ('
check check_host_reaches_the_peer $? "rc=$rc, not PASS:$bad: $(echo "$out" | flat)"

# and the way back, as B tries it to A's service: B's certificates, B's view
bad=
for k in peer.back.reach peer.back.tls peer.back.data_port peer.back.bandwidth; do
	[ "$(result_of "$out" $k)" = PASS ] || bad="$bad $k"
done
[ -z "$bad" ] && [ $rc = 0 ] &&
	echo "$detail" | grep -q "reaches this host's service at $HOST_A_ADDR:$HOST_A_PORT" &&
	echo "$detail" | grep -q "TLS 1.3 session from .* with 'hostA'" &&
	echo "$detail" | grep -q '[1-9][0-9.]* MiB/s on one data channel from '
check check_host_both_ways $? "rc=$rc, not PASS:$bad: $(echo "$detail" | flat)"

# B cannot open a connection to A's service: the way there passes, the way
# back fails, and so does the check
if [ "$USE_NETNS" = 1 ]; then
	rule="OUTPUT -d $HOST_A_ADDR -p tcp --dport $HOST_A_PORT -j REJECT --reject-with tcp-reset"
	ip netns exec "$NS_B" iptables -A $rule
	out=$(vmA check "$HOST_B_ADDR:$HOST_B_PORT" 2>&1); rc=$?
	ip netns exec "$NS_B" iptables -D $rule
	[ $rc = 1 ] && echo "$out" | grep -q "^PASS  peer.bandwidth" &&
		echo "$out" | grep -q "^FAIL  peer.back.reach .*cannot reach this host's service at $HOST_A_ADDR:$HOST_A_PORT"
	check check_host_fails_the_way_back $? "rc=$rc: $(echo "$out" | grep peer | flat)"
else
	echo "SKIP metrics_check.check_host_fails_the_way_back: no network namespaces, so no firewall rule of one host alone"
fi

out=$(vmA check "$HOST_B_ADDR:1" 2>&1); rc=$?
[ $rc = 1 ] && echo "$out" | grep -q "^FAIL  peer.reach"
check check_host_fails_a_closed_port $? "rc=$rc: $(echo "$out" | flat)"
suite_end
