#!/bin/bash
# Soak: many live migrations between two namespaced hosts (tests/integration/
# lib/hosts.sh), with verify after each, and the services' and guests'
# descriptors, threads, processes and RSS required to stay flat.
#   phase 1: one dirtying guest, SOAK_MIGRATIONS hops A->B->A...
#   phase 2: four guests, two from each host, all moving at once, SOAK_ROUNDS
#   phase 3: services restarted under running jobs (SIGTERM, then kill -9)
# Prints PASS/FAIL lines and, last, a summary line; bounded by
# SOAK_TIMEOUT_S; every process and namespace goes on exit.
# Usage: tests/soak/soak.sh [BUILD]   (make soak)
set -u
BUILD=${1:-build}
SOAK_MIGRATIONS=${SOAK_MIGRATIONS:-200}
SOAK_ROUNDS=${SOAK_ROUNDS:-50}
SOAK_TIMEOUT_S=${SOAK_TIMEOUT_S:-2400}
SOAK_SETTLE_S=${SOAK_SETTLE_S:-60}	# a guest whose source service died may take this long
SOAK_MIGRATE_TIMEOUT_S=${SOAK_MIGRATE_TIMEOUT_S:-180}
SOAK_P3_BANDWIDTH=${SOAK_P3_BANDWIDTH:-30M}	# slow enough to be caught mid-job
SOAK_P3_DOWN_S=${SOAK_P3_DOWN_S:-1}	# a restarted service is away this long: every CLI notices
SOAK_PHASES=${SOAK_PHASES:-1 2 3}
# RSS tolerances (KiB). The service is single-threaded and its RSS did not
# move by one page over 400 migrations (phases 1 and 2, several runs): 128
# KiB leaves room for its heap to take a few pages more under another order
# of requests, while a leak of 1 KiB a migration shows within phase 1. A
# guest process is new after every hop: its RSS (about 40 MiB, the 32 MiB
# working set and the process) varied by at most 280 KiB over 200 fresh
# processes; 1 MiB is four times that, and whatever grows hop by hop (pages
# made resident, state carried along) by two pages a hop passes it in 200.
SOAK_RSS_TOL_SVC=${SOAK_RSS_TOL_SVC:-128}
SOAK_RSS_TOL_GUEST=${SOAK_RSS_TOL_GUEST:-1024}
GUEST_OPTS=${SOAK_GUEST_OPTS:-"--mem 128M --working-set 32M --dirty-rate 20M"}
WARM=2		# hops / rounds before the start figures are taken

here=$(cd "$(dirname "$0")" && pwd)
. "$here/../integration/lib/hosts.sh"
. "$here/../integration/lib/suite.sh"
OUT=$(mkdir -p "$BUILD/soak" && cd "$BUILD/soak" && pwd)
rm -f "$OUT"/*.csv "$OUT"/*.txt "$OUT"/*.log "$OUT"/*.out
TABLE=$OUT/resources.txt
T0=$(date +%s)

note() { echo "#   $*"; }
log() { echo "# [$(( $(date +%s) - T0 )) s] $*"; }

# ---- bounded in time, cleaned up on any exit --------------------------------------

# The watchdog signals this shell, which stops at once where it waits for a
# migration and otherwise after the current command (each is bounded); the
# EXIT trap (cleanup) then removes every process and namespace.
WATCHDOG=
start_watchdog() {
	local main=$$
	(
		trap 'kill "$sp" 2>/dev/null; exit 0' TERM
		sleep "$SOAK_TIMEOUT_S" >/dev/null 2>&1 &
		sp=$!
		wait "$sp" || exit 0
		kill -USR1 "$main"
	) &
	WATCHDOG=$!
}
on_signal() {
	if [ "$1" = USR1 ]; then
		echo "FAIL soak.timeout: still running after $SOAK_TIMEOUT_S s (SOAK_TIMEOUT_S)"
	else
		echo "FAIL soak.interrupted: SIG$1"
	fi
	FAILS=$((FAILS + 1))
	summary
	exit 1
}
summary() {
	echo "soak: $PASSES passed, $FAILS failed, $(( $(date +%s) - T0 )) s; table in $TABLE"
}

soak_cleanup() {
	local j
	trap - EXIT INT TERM USR1
	[ -n "$WATCHDOG" ] && kill "$WATCHDOG" 2>/dev/null
	for j in $(jobs -p); do kill -TERM "$j" 2>/dev/null; done
	cp "$HOSTS_DIR/A/service.log" "$OUT/service-A.log" 2>/dev/null
	cp "$HOSTS_DIR/B/service.log" "$OUT/service-B.log" 2>/dev/null
	hosts_cleanup
	wait 2>/dev/null
}

suite_with_hosts soak
# suite.sh's check, counting passes too for the summary line
PASSES=0
eval "$(declare -f check | sed '1s/^check/suite_check/')"
check() { [ "$2" = 0 ] && PASSES=$((PASSES + 1)); suite_check "$@"; }
trap soak_cleanup EXIT
trap 'on_signal USR1' USR1
trap 'on_signal INT' INT
trap 'on_signal TERM' TERM
start_watchdog
[ "$USE_NETNS" = 1 ] || note "no network namespaces: per-host process counts are skipped"
hosts_start_service A && hosts_start_service B ||
	{ echo "FAIL soak.setup: the services did not start"; exit 1; }

# ---- hosts, guests ---------------------------------------------------------------

other() { [ "$1" = A ] && echo B || echo A; }
addr() { [ "$1" = A ] && echo "$HOST_A_ADDR:$HOST_A_PORT" || echo "$HOST_B_ADDR:$HOST_B_PORT"; }
svc_pid() { [ "$1" = A ] && echo "$SVC_A_PID" || echo "$SVC_B_PID"; }
# the CLI against host $1's service, bounded
cli() {
	local h=$1; shift
	VMIGRATE_CONTROL="$HOSTS_DIR/$h/vmigrated.sock" timeout 60 "$VMIGRATE" "$@"
}
info_of() { cli "$1" info "$2" --json 2>/dev/null; }
state_of() { info_of "$1" "$2" | json_field state; }
counter_of() { info_of "$1" "$2" | json_field counter; }
pid_of() { info_of "$1" "$2" | json_field pid; }

# Every guest pid seen, to look for zombies at the end.
SEEN_PIDS=
seen() { case " $SEEN_PIDS " in *" $1 "*) ;; *) SEEN_PIDS="$SEEN_PIDS $1" ;; esac; }

start_guest() {
	local h=$1 g=$2 p
	cli "$h" start "$g" $GUEST_OPTS >/dev/null || return 1
	p=$(pid_of "$h" "$g"); seen "$p"
	wait_counter "cli $h" "$g" 10000
}

# Stop every guest on both hosts (a phase starts clean).
stop_all() {
	local h g
	for h in A B; do
		for g in $(cli "$h" list --json 2>/dev/null | grep -o '"name":"[^"]*"' | cut -d'"' -f4); do
			cli "$h" stop "$g" >/dev/null 2>&1
		done
	done
	for _ in $(seq 50); do
		[ -z "$(guests_on A)$(guests_on B)" ] && return 0
		sleep 0.1
	done
	return 1
}

guests_on() { cli "$1" list --json 2>/dev/null | grep -o '"name":"[^"]*"' | cut -d'"' -f4 | sort | tr '\n' ' '; }
guest_pids_on() { cli "$1" list --json 2>/dev/null | grep -o '"pid":[0-9]*' | cut -d: -f2 | sort -n | tr '\n' ' '; }

# The processes in host $1's namespace are its service and the guests it
# lists, nothing else (no orphaned vmg: process), and the service has no
# zombie child. Retried for a few seconds: a guest that moved away exits
# a moment after its result is read. Prints what is wrong.
procs_ok() {
	local h=$1 want have svc zomb
	[ "$USE_NETNS" = 1 ] || return 0
	svc=$(svc_pid "$h")
	for _ in $(seq 50); do
		want=$( (echo "$svc"; guest_pids_on "$h" | tr ' ' '\n') | grep . | sort -n | tr '\n' ' ')
		have=$(ip netns pids "$([ "$h" = A ] && echo "$NS_A" || echo "$NS_B")" | sort -n | tr '\n' ' ')
		zomb=$(ps -o pid=,stat= --ppid "$svc" | awk '$2 ~ /^Z/ {print $1}' | tr '\n' ' ')
		[ "$want" = "$have" ] && [ -z "$zomb" ] && return 0
		sleep 0.1
	done
	note "host $h: processes in its namespace: $have; expected service + guests: $want${zomb:+; zombie children: $zomb}"
	for p in $have; do case " $want " in *" $p "*) ;; *)
		note "  extra: $(ps -o pid=,ppid=,stat=,etime=,comm= -p "$p")" ;; esac; done
	return 1
}
# entries in both hosts' guests/ directories (sockets, name locks, handover
# records): one set per guest name, so flat across a phase
nfiles() { echo "$(ls -A "$HOSTS_DIR/A/guests" | wc -l) $(ls -A "$HOSTS_DIR/B/guests" | wc -l)"; }
# files_flat CASE START: one line, one PASS/FAIL
files_flat() {
	local now
	now=$(nfiles)
	echo "# files in guests/ of A / B: start $2, end $now" | tee -a "$TABLE"
	check "$1" "$([ "$now" = "$2" ] && echo 0 || echo 1)" "files in guests/ of A / B: $2 -> $now: $(ls -A "$HOSTS_DIR/A/guests" "$HOSTS_DIR/B/guests" | tr '\n' ' ')"
}
nprocs() {
	[ "$USE_NETNS" = 1 ] || { echo -; return; }
	ip netns pids "$([ "$1" = A ] && echo "$NS_A" || echo "$NS_B")" | wc -l
}

# ---- resources ---------------------------------------------------------------------

# "FDS THREADS RSS_KIB" of a process. Fds and threads are the least of
# three looks 40 ms apart (a request being answered holds a connection, a
# job's thread ends a moment after its result): a leak stays in all three.
sample() {
	local p=$1 f t r bf= bt=
	for _ in 1 2 3; do
		[ -r "/proc/$p/status" ] || return 1
		f=$(ls "/proc/$p/fd" 2>/dev/null | wc -l)
		t=$(awk '/^Threads:/ {print $2}' "/proc/$p/status" 2>/dev/null)
		r=$(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null)
		[ -n "$t" ] || return 1
		{ [ -z "$bf" ] || [ "$f" -lt "$bf" ]; } && bf=$f
		{ [ -z "$bt" ] || [ "$t" -lt "$bt" ]; } && bt=$t
		sleep 0.04
	done
	echo "$bf $bt $r"
}

# one quick look, for the per-hop figures in the CSV files
look() {
	local p=$1
	echo "$(ls "/proc/$p/fd" 2>/dev/null | wc -l),$(awk '/^Threads:/ {t=$2} /^VmRSS:/ {r=$2} END {print t "," r}' "/proc/$p/status" 2>/dev/null)"
}

declare -A RES RESPID
# record KEY PID: remember a process's figures under KEY
record() {
	RES[$1]=$(sample "$2") || RES[$1]="gone"
	RESPID[$1]=$2
}

table_head() {
	printf '# %-34s %-24s %-24s %s\n' "$1" "start: fds thr RSS(KiB)" "end: fds thr RSS(KiB)" "growth" | tee -a "$TABLE"
}
# flat CASE LABEL START_KEY END_KEY RSS_TOL_KIB: fds and threads exactly
# equal, RSS within the tolerance; one table line and one PASS/FAIL line.
flat() {
	local c=$1 label=$2 s=${RES[$3]:-none} e=${RES[$4]:-none} tol=$5 sf st sr ef et er why=
	printf '# %-34s %-24s %-24s' "$label" "$s (pid ${RESPID[$3]:-?})" "$e (pid ${RESPID[$4]:-?})" | tee -a "$TABLE"
	read -r sf st sr <<<"$s"
	read -r ef et er <<<"$e"
	if [ -z "${sr:-}" ] || [ -z "${er:-}" ]; then
		echo " -" | tee -a "$TABLE"
		check "$c" 1 "no figures (start '$s', end '$e')"
		return
	fi
	printf ' fds %+d thr %+d RSS %+d KiB\n' $((ef - sf)) $((et - st)) $((er - sr)) | tee -a "$TABLE"
	[ "$ef" = "$sf" ] || why="fds $sf -> $ef; "
	[ "$et" = "$st" ] || why="${why}threads $st -> $et; "
	[ $((er - sr)) -le "$tol" ] || why="${why}RSS grew $((er - sr)) KiB (tolerance $tol); "
	check "$c" "$([ -z "$why" ] && echo 0 || echo 1)" "$label: ${why%; }"
}

# ---- one migration -------------------------------------------------------------------

# migrate_bg G FROM OUTFILE [OPTS]: start it; its pid in MIG_PID
migrate_bg() {
	local g=$1 from=$2 out=$3; shift 3
	VMIGRATE_CONTROL="$HOSTS_DIR/$from/vmigrated.sock" timeout "$SOAK_MIGRATE_TIMEOUT_S" \
		"$VMIGRATE" migrate "$g" "$(addr "$(other "$from")")" --quiet --json "$@" >"$out" 2>&1 &
	MIG_PID=$!
}

# After guest G moved to TO (its counter was BEFORE on the source): it runs
# there, verifies, its counter did not go back and still grows, and the
# source no longer has it (with LINGER, the source may still show it as
# 'migrated', waiting for a result nobody collected). Prints what is wrong.
arrived_ok() {
	local g=$1 to=$2 before=$3 linger=${4:-} from v c c2 s
	from=$(other "$to")
	s=$(state_of "$to" "$g")
	[ "$s" = running ] || { note "$g is '$s' on $to, not running"; return 1; }
	v=$(cli "$to" verify "$g" --json 2>&1)
	echo "$v" | grep -q '"ok":true' || { note "verify of $g on $to: $v"; return 1; }
	c=$(echo "$v" | json_field counter)
	[ "$c" -ge "$before" ] || { note "$g: counter went back: $c on $to < $before on $from"; return 1; }
	for _ in $(seq 20); do
		c2=$(counter_of "$to" "$g")
		[ -n "$c2" ] && [ "$c2" -gt "$c" ] && break
		sleep 0.1
	done
	[ "${c2:-0}" -gt "$c" ] || { note "$g does not progress on $to (counter $c -> ${c2:-?})"; return 1; }
	for _ in $(seq 50); do
		s=$(state_of "$from" "$g")
		[ -z "$s" ] && break
		[ -n "$linger" ] && [ "$s" = migrated ] && break
		sleep 0.1
	done
	[ -z "$s" ] || { [ -n "$linger" ] && [ "$s" = migrated ]; } ||
		{ note "$g is still on $from ($s) after it moved to $to"; return 1; }
	seen "$(pid_of "$to" "$g")"
}

show_failure() {
	local f
	for f in "$@"; do [ -s "$f" ] && sed 's/^/#     /' "$f"; done
	note "service A log (last lines):"; tail -n 8 "$HOSTS_DIR/A/service.log" | sed 's/^/#     /'
	note "service B log (last lines):"; tail -n 8 "$HOSTS_DIR/B/service.log" | sed 's/^/#     /'
}

# ---- phase 1: one guest, back and forth ------------------------------------------------

phase1() {
	local g=s1 at=A to i before rc ok=0 csv=$OUT/phase1.csv out=$OUT/p1-mig.out t1 t
	log "phase 1: one guest ($GUEST_OPTS), $SOAK_MIGRATIONS migrations, verify after each"
	start_guest A $g || { check p1_start 1 "guest did not start"; return; }
	echo "hop,to,guest_pid,guest_fds,guest_threads,guest_rss_kib,svcA_fds,svcA_threads,svcA_rss_kib,svcB_fds,svcB_threads,svcB_rss_kib,counter,total_time_ms,downtime_ms,rounds,transferred_bytes" >"$csv"
	t1=$(date +%s)
	for i in $(seq "$SOAK_MIGRATIONS"); do
		to=$(other $at)
		before=$(counter_of $at $g)
		migrate_bg $g $at "$out"
		wait "$MIG_PID"; rc=$?
		if [ $rc != 0 ]; then
			note "hop $i ($at -> $to): vmigrate migrate exited $rc"
			show_failure "$out"; ok=1; break
		fi
		if ! arrived_ok $g $to "$before" || ! procs_ok A || ! procs_ok B; then
			note "hop $i ($at -> $to)"; show_failure "$out"; ok=1; break
		fi
		at=$to
		gp=$(pid_of $at $g)
		echo "$i,$at,$gp,$(look "$gp"),$(look "$SVC_A_PID"),$(look "$SVC_B_PID"),$(counter_of $at $g),$(json_field total_time_ms <"$out"),$(json_field downtime_ms <"$out"),$(json_field rounds <"$out"),$(json_field transferred_bytes <"$out")" >>"$csv"
		if [ "$i" = "$WARM" ]; then
			record p1:svcA "$SVC_A_PID"; record p1:svcB "$SVC_B_PID"; record p1:guest "$gp"
			P1_PROCS="$(nprocs A) $(nprocs B)"; P1_FILES=$(nfiles)
		fi
		[ $((i % 25)) = 0 ] && log "phase 1: $i migrations done"
	done
	t=$(( $(date +%s) - t1 ))
	check p1_migrations $ok "stopped at hop $i of $SOAK_MIGRATIONS"
	[ $ok = 0 ] || return
	log "phase 1: $SOAK_MIGRATIONS migrations in $t s; per hop (total ms / downtime ms):" \
		"$(awk -F, 'NR>1 {n++; s+=$14; d+=$15; if ($14>m) m=$14; if ($15>dm) dm=$15}
			END {printf "mean %.0f / %.0f, max %d / %d", s/n, d/n, m, dm}' "$csv")"
	record p1e:svcA "$SVC_A_PID"; record p1e:svcB "$SVC_B_PID"; record p1e:guest "$(pid_of $at $g)"
	echo "# phase 1: hop $WARM -> hop $SOAK_MIGRATIONS ($OUT/phase1.csv has every hop)" | tee -a "$TABLE"
	table_head "process"
	flat p1_flat_vmigrated_A "vmigrated A" p1:svcA p1e:svcA "$SOAK_RSS_TOL_SVC"
	flat p1_flat_vmigrated_B "vmigrated B" p1:svcB p1e:svcB "$SOAK_RSS_TOL_SVC"
	flat p1_flat_guest "guest $g (new process each hop)" p1:guest p1e:guest "$SOAK_RSS_TOL_GUEST"
	echo "# guest process over all hops: $(awk -F, -v warm="$WARM" 'NR > warm {
		if (!n++) {fl=fh=$4; tl=th=$5; rl=rh=$6}
		if ($4<fl) fl=$4; if ($4>fh) fh=$4; if ($5<tl) tl=$5; if ($5>th) th=$5
		if ($6<rl) rl=$6; if ($6>rh) rh=$6}
		END {printf "fds %d-%d, threads %d-%d, RSS %d-%d KiB", fl, fh, tl, th, rl, rh}' "$csv")" | tee -a "$TABLE"
	echo "# processes in namespace A / B: hop $WARM: $P1_PROCS, end: $(nprocs A) $(nprocs B)" | tee -a "$TABLE"
	files_flat p1_state_files_flat "$P1_FILES"
	cli $at stop $g >/dev/null
}

# ---- phase 2: four guests at once, both directions ----------------------------------------

declare -A LOC BEFORE MPID
P_GUESTS="g1 g2 g3 g4"

start_four() {
	local g
	for g in $P_GUESTS; do
		case $g in g1|g2) LOC[$g]=A ;; *) LOC[$g]=B ;; esac
		start_guest "${LOC[$g]}" "$g" || { note "guest $g did not start on ${LOC[$g]}"; return 1; }
	done
}

# One round: every guest moves to the other host at once; OPTS to migrate.
# Sets ROUND_RC per guest; returns non-zero on any failure (notes say why).
declare -A ROUND_RC
round_start() {
	local g
	for g in $P_GUESTS; do
		BEFORE[$g]=$(counter_of "${LOC[$g]}" "$g")
		migrate_bg "$g" "${LOC[$g]}" "$OUT/mig-$g.out" "$@"
		MPID[$g]=$MIG_PID
	done
}
round_wait() {
	local g
	for g in $P_GUESTS; do wait "${MPID[$g]}"; ROUND_RC[$g]=$?; done
}
# after round_wait: each guest arrived (rc 0 required)
round_check() {
	local g bad=0
	for g in $P_GUESTS; do
		if [ "${ROUND_RC[$g]}" != 0 ]; then
			note "$g (${LOC[$g]} -> $(other "${LOC[$g]}")): vmigrate migrate exited ${ROUND_RC[$g]}"
			sed 's/^/#     /' "$OUT/mig-$g.out"; bad=1; continue
		fi
		arrived_ok "$g" "$(other "${LOC[$g]}")" "${BEFORE[$g]}" || bad=1
		LOC[$g]=$(other "${LOC[$g]}")
	done
	procs_ok A || bad=1
	procs_ok B || bad=1
	[ $bad = 0 ] || show_failure
	return $bad
}

phase2() {
	local r ok=0 g t1 t csv=$OUT/phase2.csv
	log "phase 2: four guests, two from each host, $SOAK_ROUNDS rounds of four migrations at once"
	start_four || { check p2_start 1 "guests did not start"; return; }
	echo "round,guest,to,total_time_ms,downtime_ms,rounds,pid,fds,threads,rss_kib" >"$csv"
	t1=$(date +%s)
	for r in $(seq "$SOAK_ROUNDS"); do
		round_start; round_wait
		round_check || { note "round $r"; ok=1; break; }
		for g in $P_GUESTS; do
			echo "$r,$g,${LOC[$g]},$(json_field total_time_ms <"$OUT/mig-$g.out"),$(json_field downtime_ms <"$OUT/mig-$g.out"),$(json_field rounds <"$OUT/mig-$g.out"),$(pid_of "${LOC[$g]}" "$g"),$(look "$(pid_of "${LOC[$g]}" "$g")")" >>"$csv"
		done
		if [ "$r" = "$WARM" ]; then
			record p2:svcA "$SVC_A_PID"; record p2:svcB "$SVC_B_PID"
			for g in $P_GUESTS; do record "p2:$g" "$(pid_of "${LOC[$g]}" "$g")"; done
			P2_PROCS="$(nprocs A) $(nprocs B)"; P2_FILES=$(nfiles)
		fi
		[ $((r % 10)) = 0 ] && log "phase 2: $r rounds done"
	done
	t=$(( $(date +%s) - t1 ))
	check p2_migrations $ok "stopped at round $r of $SOAK_ROUNDS"
	[ $ok = 0 ] || return
	log "phase 2: $SOAK_ROUNDS rounds ($((SOAK_ROUNDS * 4)) migrations) in $t s; per migration (total ms / downtime ms):" \
		"$(awk -F, 'NR>1 {n++; s+=$4; d+=$5; if ($4>m) m=$4; if ($5>dm) dm=$5}
			END {printf "mean %.0f / %.0f, max %d / %d", s/n, d/n, m, dm}' "$csv")"
	record p2e:svcA "$SVC_A_PID"; record p2e:svcB "$SVC_B_PID"
	for g in $P_GUESTS; do record "p2e:$g" "$(pid_of "${LOC[$g]}" "$g")"; done
	echo "# phase 2: round $WARM -> round $SOAK_ROUNDS ($OUT/phase2.csv has every migration)" | tee -a "$TABLE"
	table_head "process"
	flat p2_flat_vmigrated_A "vmigrated A" p2:svcA p2e:svcA "$SOAK_RSS_TOL_SVC"
	flat p2_flat_vmigrated_B "vmigrated B" p2:svcB p2e:svcB "$SOAK_RSS_TOL_SVC"
	for g in $P_GUESTS; do
		flat "p2_flat_guest_$g" "guest $g (new process each hop)" "p2:$g" "p2e:$g" "$SOAK_RSS_TOL_GUEST"
	done
	echo "# processes in namespace A / B: round $WARM: $P2_PROCS, end: $(nprocs A) $(nprocs B)" | tee -a "$TABLE"
	files_flat p2_state_files_flat "$P2_FILES"
	if [ -n "${RES[p1:svcA]:-}" ]; then
		echo "# both phases, same service processes: phase 1 hop $WARM -> phase 2 end" | tee -a "$TABLE"
		table_head "process"
		flat p12_flat_vmigrated_A "vmigrated A" p1:svcA p2e:svcA "$SOAK_RSS_TOL_SVC"
		flat p12_flat_vmigrated_B "vmigrated B" p1:svcB p2e:svcB "$SOAK_RSS_TOL_SVC"
	fi
}

# ---- phase 3: service restarts under running jobs -----------------------------------------

restart_service() {
	local h=$1 sig=$2 p
	p=$(svc_pid "$h")
	kill "-$sig" "$p"
	wait "$p" 2>/dev/null
	if [ "$h" = A ]; then SVC_A_PID=; else SVC_B_PID=; fi
	sleep "$SOAK_P3_DOWN_S"
	hosts_start_service "$h" >/dev/null || return 1
	# after kill -9 the old socket file is still there: wait for an answer
	for _ in $(seq 50); do cli "$h" list >/dev/null 2>&1 && return 0; sleep 0.1; done
	note "restarted service $h does not answer"
	return 1
}

# Each guest runs on exactly one host within SOAK_SETTLE_S; the other host
# has nothing of it, or a 'migrated' process that lingers for its result
# (no_leftovers checks that it goes). Sets LOC, and SETTLED for each guest
# that got there.
declare -A SETTLED
settle() {
	local g sa sb t0 bad=0
	t0=$(date +%s)
	for g in $P_GUESTS; do
		SETTLED[$g]=0
		while :; do
			sa=$(state_of A "$g"); sb=$(state_of B "$g")
			if [ "$sa" = running ] && { [ -z "$sb" ] || [ "$sb" = migrated ]; }; then
				LOC[$g]=A; SETTLED[$g]=1; break; fi
			if [ "$sb" = running ] && { [ -z "$sa" ] || [ "$sa" = migrated ]; }; then
				LOC[$g]=B; SETTLED[$g]=1; break; fi
			if [ $(( $(date +%s) - t0 )) -ge "$SOAK_SETTLE_S" ]; then
				note "$g after $SOAK_SETTLE_S s: A says '${sa:-nothing}', B says '${sb:-nothing}'"
				bad=1; break
			fi
			sleep 0.5
		done
	done
	[ $bad = 0 ] && note "every guest runs on exactly one host, $(( $(date +%s) - t0 )) s after the jobs ended"
	return $bad
}

# Within SOAK_SETTLE_S nothing is left but the four running guests, each
# listed once, and the processes in each namespace are exactly the service
# and those guests.
no_leftovers() {
	local t0 la lb want
	t0=$(date +%s)
	want=$(for g in $P_GUESTS; do echo "$g running"; done)
	while :; do
		la=$(cli A list 2>/dev/null | tail -n +2 | awk '{print $1, $2}')
		lb=$(cli B list 2>/dev/null | tail -n +2 | awk '{print $1, $2}')
		[ "$(printf '%s\n%s\n' "$la" "$lb" | grep . | sort)" = "$want" ] && break
		if [ $(( $(date +%s) - t0 )) -ge "$SOAK_SETTLE_S" ]; then
			note "after $SOAK_SETTLE_S s, A lists: $(echo $la), B lists: $(echo $lb)"
			return 1
		fi
		sleep 0.5
	done
	note "nothing left over after $(( $(date +%s) - t0 )) s"
	procs_ok A && procs_ok B
}

# A guest the test could not bring to one copy: clear the stale copy (what an
# operator would do) so the next case starts clean, and say so.
unstick() {
	local g sa sb
	for g in $P_GUESTS; do
		sa=$(state_of A "$g"); sb=$(state_of B "$g")
		if [ "$sa" = running ] && [ -n "$sb" ]; then
			note "operator clean-up: 'vmigrate stop $g' on B ($sb)"; cli B stop "$g" >/dev/null 2>&1; LOC[$g]=A
		elif [ "$sb" = running ] && [ -n "$sa" ]; then
			note "operator clean-up: 'vmigrate stop $g' on A ($sa)"; cli A stop "$g" >/dev/null 2>&1; LOC[$g]=B
		elif [ "$sa" = running ]; then LOC[$g]=A
		elif [ "$sb" = running ]; then LOC[$g]=B
		fi
	done
	sleep 1
}

# restart_case CASE SIGNAL HOST ORDER: all four guests move with a bandwidth
# cap; while every job runs, HOST's service is stopped with SIGNAL and
# started again. Then: every migration ended, each guest runs on exactly
# one host and verifies, nothing is left over, and the next migration of
# each works. ORDER "wait": nothing may be left over before the next
# migration (a moved-away process nobody asks must go by itself); "now":
# the next migration goes at once, back to where the old process may linger.
restart_case() {
	local c=$1 sig=$2 h=$3 order=$4 g running st bad=0 moved=0 from
	declare -A FROM
	log "phase 3.$c: kill -$sig of service $h while four jobs run (--bandwidth $SOAK_P3_BANDWIDTH)"
	for g in $P_GUESTS; do FROM[$g]=${LOC[$g]}; done
	round_start --bandwidth "$SOAK_P3_BANDWIDTH"
	for _ in $(seq 100); do
		running=0
		for g in $P_GUESTS; do
			[ "$(state_of "${FROM[$g]}" "$g")" = migrating ] && running=$((running + 1))
		done
		[ $running = 4 ] && break
		sleep 0.1
	done
	sleep 0.5	# well inside the first round
	running=0
	for g in $P_GUESTS; do
		[ "$(state_of "${FROM[$g]}" "$g")" = migrating ] && running=$((running + 1))
	done
	note "jobs still running when service $h is stopped: $running of 4"
	[ $running -ge 2 ] || { note "too few jobs were caught running: raise the cap"; bad=1; }
	restart_service "$h" "$sig" || bad=1
	round_wait
	for g in $P_GUESTS; do
		from=${FROM[$g]}
		st=$(json_field status <"$OUT/mig-$g.out")
		note "$g $from -> $(other "$from"): vmigrate migrate exited ${ROUND_RC[$g]} (${st:-no status})$(
			grep -o 'lost track[^;]*' "$OUT/mig-$g.out" | sed 's/^/: /')"
		case ${ROUND_RC[$g]} in
		0) ;;
		3) # a CLI whose service went away cannot know the outcome: uncertain is right
		   [ "$from" = "$h" ] || { note "  uncertain, yet its own service ($from) was not restarted"; bad=1; } ;;
		*) note "  the migration failed:"; sed 's/^/#     /' "$OUT/mig-$g.out"; bad=1 ;;
		esac
	done
	check "p3_${c}_jobs_end" $bad "a job failed or did not end (see above)"
	bad=0
	settle || bad=1
	for g in $P_GUESTS; do
		[ "${SETTLED[$g]}" = 1 ] || continue
		if [ "${LOC[$g]}" != "${FROM[$g]}" ]; then
			moved=$((moved + 1))
		else
			note "$g stayed on ${LOC[$g]}"
		fi
		arrived_ok "$g" "${LOC[$g]}" "${BEFORE[$g]}" linger || bad=1
	done
	procs_ok A || bad=1
	procs_ok B || bad=1
	note "$moved of 4 guests moved and run on one host only"
	[ $bad = 0 ] || show_failure
	check "p3_${c}_one_copy_each" $bad "a guest is not on exactly one host, or does not verify (see above)"
	[ $bad = 0 ] || unstick
	if [ "$order" = wait ]; then
		bad=0
		no_leftovers || bad=1
		check "p3_${c}_nothing_left" $bad "a guest process was left behind (see above)"
		[ $bad = 0 ] || unstick
	fi
	# the next migration of every guest works (and brings it back)
	round_start; round_wait
	bad=0
	round_check || bad=1
	check "p3_${c}_next_migration" $bad "the next migration failed (see above)"
	if [ "$order" = now ]; then
		bad=0
		no_leftovers || bad=1
		check "p3_${c}_nothing_left" $bad "a guest process was left behind (see above)"
		[ $bad = 0 ] || unstick
	fi
}

phase3() {
	local g r
	log "phase 3: service restarts while jobs run"
	stop_all || note "guests of phase 2 did not all stop"
	start_four || { check p3_start 1 "guests did not start"; return; }
	for r in 1 2; do
		round_start; round_wait
		round_check || { check p3_warmup 1 "warm-up round $r failed"; return; }
	done
	record p3:svcA "$SVC_A_PID"; record p3:svcB "$SVC_B_PID"
	for g in $P_GUESTS; do record "p3:$g" "$(pid_of "${LOC[$g]}" "$g")"; done
	P3_PROCS="$(nprocs A) $(nprocs B)"; P3_FILES=$(nfiles)
	restart_case sigterm TERM A wait
	restart_case kill9 KILL A now
	# the same service kind at rest: the restarted A against A before the restarts
	record p3e:svcA "$SVC_A_PID"; record p3e:svcB "$SVC_B_PID"
	for g in $P_GUESTS; do record "p3e:$g" "$(pid_of "${LOC[$g]}" "$g" 2>/dev/null)"; done
	echo "# phase 3: before the restarts -> after both (A is a new process after each restart)" | tee -a "$TABLE"
	table_head "process"
	flat p3_flat_vmigrated_A "vmigrated A (restarted twice)" p3:svcA p3e:svcA "$SOAK_RSS_TOL_SVC"
	flat p3_flat_vmigrated_B "vmigrated B" p3:svcB p3e:svcB "$SOAK_RSS_TOL_SVC"
	for g in $P_GUESTS; do
		flat "p3_flat_guest_$g" "guest $g (new process each hop)" "p3:$g" "p3e:$g" "$SOAK_RSS_TOL_GUEST"
	done
	echo "# processes in namespace A / B: before: $P3_PROCS, end: $(nprocs A) $(nprocs B)" | tee -a "$TABLE"
	files_flat p3_state_files_flat "$P3_FILES"
	if [ -n "${RES[p1:svcB]:-}" ]; then
		echo "# the whole run, B's service never restarted: phase 1 hop $WARM -> phase 3 end" | tee -a "$TABLE"
		table_head "process"
		flat all_flat_vmigrated_B "vmigrated B" p1:svcB p3e:svcB "$SOAK_RSS_TOL_SVC"
	fi
}

# ---- run ---------------------------------------------------------------------------------

log "soak: migrations=$SOAK_MIGRATIONS rounds=$SOAK_ROUNDS phases='$SOAK_PHASES' timeout=${SOAK_TIMEOUT_S}s; figures in $OUT"
for p in $SOAK_PHASES; do "phase$p"; done
stop_all >/dev/null 2>&1
# no guest process of the run is left, as a process or a zombie (whoever its
# parent is now: a restarted service's guests belong to init, which reaps late)
for _ in $(seq 30); do
	left=
	for p in $SEEN_PIDS; do
		case $(cat "/proc/$p/comm" 2>/dev/null) in	# not a pid reused since
		vmg:s1|vmg:g[1-4]|vmg:incoming) left="$left $p" ;;
		esac
	done
	[ -z "$left" ] && break
	sleep 0.5
done
check no_guest_left "$([ -z "$left" ] && echo 0 || echo 1)" "guest processes still there 15 s after the last stop:$(
	for p in $left; do echo -n " [$(ps -o pid=,ppid=,stat=,comm= -p "$p" | tr -s ' ')]"; done)"
log "soak done in $(( $(date +%s) - T0 )) s"
summary
suite_end
