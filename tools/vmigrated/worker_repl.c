/*
 * Replication jobs of a guest process.
 *
 * Primary: own the guest on the arbiter, synchronise a standby, run
 * epochs. A standby lost once protection held is replaced: it is marked
 * stale (it can never take the guest over), and a new one is synchronised
 * under a new token, every RETRY_S until it works or the job is stopped;
 * meanwhile the guest runs on unprotected ("unprotected", then "syncing").
 * A planned failover ends with a SWITCH epoch, gives the key up, and waits
 * for the standby to own the guest, or takes it back.
 *
 * Standby: apply epochs; take the guest over when the primary's lease ran
 * out or it handed the guest over; then protect the guest in turn on the
 * old primary's host. There a copy of the guest still holding the name
 * (fenced, or failed over) gives its RAM to the new standby's process as
 * the base of the sync (only pages that differ cross) and ends. Without an
 * arbiter a standby whose primary is lost stays paused; it gives its copy
 * the same way, but only to a new sync of that same primary (its lineage,
 * repl_give_copy).
 */
#include "worker_internal.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/random.h>
#include <sys/socket.h>

#include <openssl/crypto.h>

#include "ipc.h"
#include "log.h"

#define RETRY_S		3

static void protect_back(void);
static struct json_object *repl_stats_object(const struct repl_stats *rs);

static struct repl_arbiter *new_arbiter(char *err, size_t errlen)
{
	return repl_arbiter_etcd_new(W.arb.endpoints, W.arb.ttl_s * 1000 / 3 + 100, err, errlen);
}

/* The job's state and what the operator should know of it. */
static void set_repl_state(enum repl_state st, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void set_repl_state(enum repl_state st, const char *fmt, ...)
{
	va_list ap;

	pthread_mutex_lock(&W.rprog.lock);
	W.rprog.stats.state = st;
	va_start(ap, fmt);
	vsnprintf(W.rprog.stats.error, sizeof(W.rprog.stats.error), fmt, ap);
	va_end(ap);
	pthread_mutex_unlock(&W.rprog.lock);
}

/* The job failed (ret: a negative errno): state, code and reason. */
static void repl_failed(int ret, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void repl_failed(int ret, const char *fmt, ...)
{
	va_list ap;

	pthread_mutex_lock(&W.rprog.lock);
	W.rprog.stats.state = REPL_FAILED;
	W.repl_code = ipc_errno_code(ret);
	va_start(ap, fmt);
	vsnprintf(W.rprog.stats.error, sizeof(W.rprog.stats.error), fmt, ap);
	va_end(ap);
	pthread_mutex_unlock(&W.rprog.lock);
}

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000 };

	nanosleep(&ts, NULL);
}

/* ---- primary ---------------------------------------------------------------- */

static void on_fence(void *opaque, const char *why)
{
	repl_fence(&W.rprog, W.vm, why);
	pthread_mutex_lock(&W.lock);
	W.state = W_FENCED;
	pthread_mutex_unlock(&W.lock);
	log_write(LOG_WARNING, W.spec.name, W.job, "guest %s FENCED (%s): it stays paused here "
		"and releases nothing more; another host may own it now", W.spec.name, why);
}

/* repl_params.standby_lost: our standby's epochs fall behind from now on;
 * the arbiter must refuse it the guest before any more output leaves. */
static int mark_standby_stale(void *opaque)
{
	struct repl_lease *l = atomic_load(&W.rprog.lease);
	char err[256];
	int ret;

	if (l && repl_lease_skips_fence(l))
		return 0;	/* the broken owner of the fault point */
	ret = repl_arbiter_mark_stale(W.arbiter, W.spec.name, W.rparams.token, err, sizeof(err));

	if (ret)
		log_write(LOG_WARNING, W.spec.name, W.job, "guest %s: cannot yet mark its standby "
			"stale (%s); output stays held", W.spec.name, err);
	else
		W.stale_marked = true;	/* a new standby needs a new token */
	return ret;
}

/* An owner id the operator can place: which guest process on which host. */
static void owner_id(char *out, size_t len, const char *role)
{
	char host[64] = "?";

	gethostname(host, sizeof(host) - 1);
	snprintf(out, len, "%s of %s on %s, pid %d", role, W.spec.name, host, (int)getpid());
}

/* With an arbiter, before a standby is synchronised: own the guest (the
 * token goes into every epoch), or, when the last standby was marked
 * stale, take a new token without letting go. */
static int own_for_new_standby(void)
{
	struct repl_lease *lease = atomic_load(&W.rprog.lease);
	char err[512] = "", owner[160];
	uint64_t token = W.rparams.token;
	int ret = 0;

	if (!W.arbiter && !(W.arbiter = new_arbiter(err, sizeof(err))))
		ret = -EINVAL;
	owner_id(owner, sizeof(owner), "primary");
	if (!ret && !lease) {
		ret = repl_lease_take(W.arbiter, W.spec.name, owner, W.arb.ttl_s, 0, on_fence,
				      NULL, &lease, &token, err, sizeof(err));
		if (!ret) {
			atomic_store(&W.rprog.lease, lease);
			log_write(LOG_INFO, W.spec.name, W.job, "guest %s owned through %s: token "
				"%llu, lease %d s", W.spec.name, W.arb.endpoints,
				(unsigned long long)token, repl_lease_ttl(lease));
		}
	} else if (!ret && W.stale_marked) {
		ret = repl_arbiter_reissue(W.arbiter, W.spec.name, owner, &token, err, sizeof(err));
		if (!ret)
			log_write(LOG_INFO, W.spec.name, W.job, "guest %s: token %llu for a new "
				"standby (the last one, of token %llu, is stale)", W.spec.name,
				(unsigned long long)token, (unsigned long long)W.rparams.token);
	}
	if (ret) {
		repl_failed(ret, "arbiter: %.230s", err);
		return ret;
	}
	W.rparams.token = token;
	W.rparams.standby_lost = mark_standby_stale;
	W.stale_marked = false;
	pthread_mutex_lock(&W.rprog.lock);
	W.rprog.stats.token = token;
	pthread_mutex_unlock(&W.rprog.lock);
	return 0;
}

/* One standby: ownership, the connection, the initial sync (a live
 * pre-copy that leaves the guest running here), then epochs on the same
 * control channel until stopped, handed over or lost. */
static int protect_once(void)
{
	char err[512] = "", host[256];
	struct mig_stats st;
	double t0;
	int ret = W.arb.endpoints[0] ? own_for_new_standby() : 0;

	mig_progress_init(&W.prog);
	if (!ret && W.mig_fd < 0) {
		W.mig_fd = peer_connect(W.dest, W.spec.io_timeout_ms, host, sizeof(host), err,
					sizeof(err));
		if (W.mig_fd >= 0)
			snprintf(W.dest_host, sizeof(W.dest_host), "%s", host);
		else
			ret = W.mig_fd;
	}
	if (!ret)
		ret = worker_dial_job("replicate-in");	/* takes W.mig_fd */
	W.mig_fd = -1;
	if (ret) {
		mig_progress_get(&W.prog, &st);
		repl_failed(ret, "standby %s: %.200s", W.dest,
			       err[0] ? err : st.error[0] ? st.error : strerror(-ret));
		return ret;
	}
	t0 = worker_now();
	W.params.standby = true;
	W.params.run_lock = &W.rprog.run_lock;	/* a verify meanwhile pauses it too */
	repl_output_hold(&W.rprog);
	ret = mig_source_run(W.vm, W.mig_session.control, &W.params, &W.prog);
	/* fenced meanwhile: the sync's end must not have resumed it */
	pthread_mutex_lock(&W.rprog.run_lock);
	if (atomic_load(&W.rprog.fenced))
		vm_pause(W.vm);
	pthread_mutex_unlock(&W.rprog.run_lock);
	pthread_mutex_lock(&W.rprog.lock);
	W.rprog.stats.sync_s = worker_now() - t0;
	pthread_mutex_unlock(&W.rprog.lock);
	mig_progress_get(&W.prog, &st);
	if (ret) {
		repl_failed(ret, "initial sync: %.200s",
			       st.error[0] ? st.error : strerror(-ret));
		repl_output_release_all(&W.rprog);	/* no standby holds any epoch */
	} else {
		log_write(LOG_INFO, W.spec.name, W.job, "guest %s job %s: standby in sync after "
			"%.2f s (%llu pages sent, %llu it had already); epochs begin", W.spec.name,
			W.job, worker_now() - t0, (unsigned long long)st.normal_pages,
			(unsigned long long)st.matched_pages);
		W.repl_keep_trying = true;	/* protected once: replace a lost standby */
		W.rprog.abandoned = false;
		ret = repl_primary_run(W.vm, W.mig_session.control, &W.rparams, &W.rprog);
	}
	if (W.rprog.abandoned)		/* the fault point: left open for good */
		memset(&W.mig_session, 0, sizeof(W.mig_session));
	else
		peer_session_close(&W.mig_session);
	return ret;
}

/* Until the job is stopped or secs pass; true when stopped. */
static bool wait_for_stop(int secs)
{
	for (int i = 0; i < secs * 10; i++) {
		if (atomic_load(&W.rprog.stop))
			return true;
		sleep_ms(100);
	}
	return atomic_load(&W.rprog.stop);
}

/* The standby did not take the guest over after a planned failover: take
 * it back. The arbiter gives it to exactly one of us: the standby's later
 * takeover, if any, is refused (its token is no longer the last owner's). */
static void take_back(uint64_t ours)
{
	char err[512] = "", owner[160];
	struct repl_lease *lease;
	uint64_t token;
	int ret;

	owner_id(owner, sizeof(owner), "primary, taken back");
	ret = repl_lease_take(W.arbiter, W.spec.name, owner, W.arb.ttl_s, ours, on_fence, NULL,
			      &lease, &token, err, sizeof(err));
	if (ret) {
		snprintf(W.handover, sizeof(W.handover), "the standby did not take the guest, and "
			 "it cannot be taken back (%.150s): it stays fenced here", err);
		set_repl_state(REPL_FENCED, "%s", W.handover);
		return;
	}
	atomic_store(&W.rprog.lease, lease);
	W.rparams.token = token;
	pthread_mutex_lock(&W.lock);
	pthread_mutex_lock(&W.rprog.run_lock);
	atomic_store(&W.rprog.fenced, false);
	vm_resume(W.vm);
	pthread_mutex_unlock(&W.rprog.run_lock);
	W.state = W_RUNNING;
	pthread_mutex_unlock(&W.lock);
	snprintf(W.handover, sizeof(W.handover), "the standby did not take the guest over: it "
		 "was taken back and runs here (token %llu), unprotected",
		 (unsigned long long)token);
	set_repl_state(REPL_FAILED, "%s", W.handover);
}

/* After the SWITCH epoch was acknowledged: give the key up and wait for
 * the standby to own the guest (within two TTLs), else take it back. */
static void hand_over(void)
{
	uint64_t ours = W.rparams.token, token = 0;
	double until = worker_now() + 2.0 * W.arb.ttl_s + 2;
	char err[512] = "", owner[200] = "";

	pthread_mutex_lock(&W.lock);
	W.state = W_FENCED;
	pthread_mutex_unlock(&W.lock);
	if (repl_drop_lease(&W.rprog, err, sizeof(err))) {
		log_write(LOG_WARNING, W.spec.name, W.job, "guest %s: revoking its lease: %s; the "
			"standby takes over once it runs out", W.spec.name, err);
		until += W.arb.ttl_s;
	}
	for (; worker_now() < until; sleep_ms(100)) {
		if (!repl_arbiter_owner(W.arbiter, W.spec.name, owner, sizeof(owner), &token, err,
					sizeof(err)) && token > ours)
			break;
		token = 0;
	}
	if (!token) {
		take_back(ours);
	} else {
		snprintf(W.handover, sizeof(W.handover), "%.190s", owner);
		W.handover_token = token;
		set_repl_state(REPL_SWITCHED, "handed over: %.200s runs it (token %llu)", owner,
			       (unsigned long long)token);
	}
	log_write(LOG_NOTICE, W.spec.name, W.job, "guest %s planned failover: %s", W.spec.name,
		W.handover_token ? W.rprog.stats.error : W.handover);
}

/* What names a replication job's record in the completed log; st (its
 * figures) goes into it. */
static void name_job(struct json_object *rec, const char *job, const char *direction,
		     const char *peer, struct json_object *st)
{
	json_object_object_add(rec, "job", json_object_new_string(job));
	json_object_object_add(rec, "guest", json_object_new_string(W.spec.name));
	json_object_object_add(rec, "direction", json_object_new_string(direction));
	json_object_object_add(rec, "kind", json_object_new_string("replication"));
	json_object_object_add(rec, "peer", json_object_new_string(peer));
	json_object_object_add(rec, "stats", st);
}

/* The primary's record of a replication job that ended, for `vmigrate
 * jobs --completed`: its final state, what the last standby's sync and the
 * epochs sent, how long it ran, and the replication figures as `replicate
 * status` shows them. */
static void keep_primary_job(const struct repl_stats *rs)
{
	struct json_object *rec = json_object_new_object(), *st = json_object_new_object();
	struct mig_stats sync;
	const char *code = NULL;

	mig_progress_get(&W.prog, &sync);
	if (rs->state == REPL_FAILED)
		code = W.repl_code ? W.repl_code : IPC_E_INTERNAL;
	else if (rs->state == REPL_FENCED)
		code = IPC_E_TIMEOUT;	/* its lease ran out: another host may own it */
	json_object_object_add(st, "status", json_object_new_string(repl_state_name(rs->state)));
	json_object_object_add(st, "rounds", json_object_new_int((int)sync.round));
	json_object_object_add(st, "transferred_bytes", json_object_new_int64(
		(int64_t)(sync.transferred_bytes + rs->bytes_sent)));
	json_object_object_add(st, "sync_bytes", json_object_new_int64(
		(int64_t)sync.transferred_bytes));
	json_object_object_add(st, "total_time_ms", json_object_new_int64(
		(int64_t)((worker_now() - W.repl_t0) * 1000)));
	json_object_object_add(st, "epochs", json_object_new_int64((int64_t)rs->epochs));
	json_object_object_add(st, "acked_epoch", json_object_new_int64((int64_t)rs->acked_epoch));
	if (rs->error[0])
		json_object_object_add(st, "error", json_object_new_string(rs->error));
	name_job(rec, W.job, "outgoing", W.dest, st);
	json_object_object_add(rec, "replication", repl_stats_object(rs));
	worker_keep_job(rec, code);
}

/* The standby's record of the job, once it ends here: how (stopped by the
 * primary, taken over, or the primary lost), the epochs it applied, the
 * bytes it received (sync and epochs). */
static void keep_standby_job(const char *status, const char *code, uint64_t received)
{
	struct json_object *rec = json_object_new_object(), *st = json_object_new_object();

	json_object_object_add(st, "status", json_object_new_string(status));
	json_object_object_add(st, "transferred_bytes", json_object_new_int64((int64_t)received));
	json_object_object_add(st, "total_time_ms", json_object_new_int64(
		(int64_t)((worker_now() - W.in_started) * 1000)));
	json_object_object_add(st, "epochs", json_object_new_int64(
		(int64_t)W.standby.applied_epoch));
	json_object_object_add(st, "applied_pages", json_object_new_int64(
		(int64_t)W.standby.applied_pages));
	json_object_object_add(st, "token", json_object_new_int64((int64_t)W.standby.token));
	if (W.standby.error[0])
		json_object_object_add(st, "error", json_object_new_string(W.standby.error));
	name_job(rec, W.incoming_job, "incoming", W.incoming_from, st);
	worker_keep_job(rec, code);
}

static void *replication_main(void *arg)
{
	struct repl_stats rs;
	unsigned attempt;

	for (attempt = 1;; attempt++) {
		protect_once();
		repl_progress_get(&W.rprog, &rs);
		if (rs.state == REPL_STOPPED || rs.state == REPL_SWITCHED ||
		    atomic_load(&W.rprog.fenced) || atomic_load(&W.rprog.stop) ||
		    !W.repl_keep_trying)
			break;
		set_repl_state(REPL_UNPROTECTED, "%.180s; a new standby on %s in %d s (attempt %u)",
			       rs.error, W.dest, RETRY_S, attempt + 1);
		log_write(LOG_WARNING, W.spec.name, W.job, "guest %s UNPROTECTED: %s", W.spec.name,
			W.rprog.stats.error);
		if (wait_for_stop(RETRY_S)) {
			set_repl_state(REPL_STOPPED, "stopped while unprotected");
			break;
		}
		pthread_mutex_lock(&W.rprog.lock);
		W.rprog.stats.state = REPL_SYNCING;
		pthread_mutex_unlock(&W.rprog.lock);
	}
	if (rs.state == REPL_SWITCHED)
		hand_over();
	W.vm->ops->dirty_stop(W.vm);
	repl_output_release_all(&W.rprog);	/* no standby follows it any more */
	if (!atomic_load(&W.rprog.fenced)) {
		char err[256];

		/* the guest is on its own here now: nobody else may take it */
		if (repl_drop_lease(&W.rprog, err, sizeof(err)))
			log_write(LOG_WARNING, W.spec.name, W.job, "guest %s: revoking its lease: "
				"%s", W.spec.name, err);
	}
	repl_progress_get(&W.rprog, &rs);
	keep_primary_job(&rs);		/* before the job reads as over */
	pthread_mutex_lock(&W.lock);
	W.repl_active = false;
	pthread_mutex_unlock(&W.lock);
	log_write(LOG_INFO, W.spec.name, W.job, "guest %s replication %s: %s after %llu epochs%s%s",
		W.spec.name, W.job, repl_state_name(rs.state), (unsigned long long)rs.epochs,
		rs.error[0] ? ": " : "", rs.error);
	return NULL;
}

/* What this guest process's standbys know it by (repl_give_copy): made
 * once, kept for the process's life. Without one (no randomness), a lost
 * standby of it stays in the way of the next, as it would anyway. */
static void make_lineage(void)
{
	uint8_t raw[PEER_LINEAGE_LEN / 2];

	if (!W.repl_lineage[0] && getrandom(raw, sizeof(raw), 0) == sizeof(raw))
		for (size_t i = 0; i < sizeof(raw); i++)
			snprintf(W.repl_lineage + 2 * i, 3, "%02x", raw[i]);
	snprintf(W.arb.lineage, sizeof(W.arb.lineage), "%s", W.repl_lineage);
}

int repl_job_start(void)
{
	make_lineage();
	pthread_mutex_lock(&W.rprog.lock);
	memset(&W.rprog.stats, 0, sizeof(W.rprog.stats));
	W.repl_code = NULL;
	W.repl_t0 = worker_now();
	W.rprog.stats.state = REPL_SYNCING;
	W.rprog.stats.token = W.rparams.token;
	pthread_mutex_unlock(&W.rprog.lock);
	atomic_store(&W.rprog.stop, false);
	atomic_store(&W.rprog.switch_over, false);
	W.handover[0] = 0;
	W.handover_token = 0;
	W.repl_active = true;
	if (pthread_create(&W.repl_thread, NULL, replication_main, NULL)) {
		W.repl_active = false;
		return -EAGAIN;
	}
	W.repl_started = true;
	W.repl_ran = true;
	return 0;
}

/* vmigrate failover: a planned switch to the standby, losing nothing. */
struct json_object *repl_job_failover(void)
{
	struct json_object *o;
	struct repl_stats rs;
	bool active;

	pthread_mutex_lock(&W.lock);
	active = W.repl_active;
	pthread_mutex_unlock(&W.lock);
	if (!active)
		return ipc_error(IPC_E_WRONG_STATE, "guest %s is not replicated from this host",
				 W.spec.name);
	if (!W.arb.endpoints[0])
		return ipc_error(IPC_E_WRONG_STATE, "guest %s is replicated without an arbiter: a "
				 "planned failover "
				 "moves its ownership there. Without one: 'vmigrate replicate stop "
				 "%s', then 'vmigrate migrate %s HOST'", W.spec.name, W.spec.name,
				 W.spec.name);
	repl_progress_get(&W.rprog, &rs);
	if (rs.state != REPL_PROTECTED && rs.state != REPL_DEGRADED)
		return ipc_error(IPC_E_WRONG_STATE, "guest %s: its replication is %s, the standby "
				 "not in sync: no "
				 "failover now", W.spec.name, repl_state_name(rs.state));
	atomic_store(&W.rprog.switch_over, true);
	pthread_join(W.repl_thread, NULL);
	W.repl_started = false;
	repl_progress_get(&W.rprog, &rs);
	if (!W.handover_token)
		return ipc_error(IPC_E_REFUSED, "guest %s was not handed over: %s", W.spec.name,
				 W.handover[0] ? W.handover : rs.error);
	o = ipc_ok();
	json_object_object_add(o, "runs_on", json_object_new_string(W.handover));
	json_object_object_add(o, "standby", json_object_new_string(W.dest));
	json_object_object_add(o, "token", json_object_new_int64((int64_t)W.handover_token));
	json_object_object_add(o, "last_epoch", json_object_new_int64((int64_t)rs.acked_epoch));
	return o;
}

/*
 * Does a new sync (its hello's lineage) come from this standby's primary?
 * Without an arbiter, a standby whose primary is lost may hold the only
 * copy left of the guest (the primary's host may have died): it gives way
 * to nobody but that primary. The lineage proves it: random, made by the
 * primary's guest process and handed over in the first sync's hello,
 * inside the peers' TLS session; nobody else knows it. The address or the
 * certificate would not do: a new guest of the same name on the same host
 * has both and is another guest. (With an arbiter the standby takes over
 * or ends on its own.) Under W.lock.
 */
static bool same_primary(const char *lineage)
{
	size_t n = strlen(W.arb.lineage);

	return !W.arb.endpoints[0] && n && strlen(lineage) == n &&
	       !CRYPTO_memcmp(lineage, W.arb.lineage, n);
}

/* A new sync of our primary proves it dropped our stream (one standby at
 * a time), though we may not have noticed yet (its end behind a slow
 * link): end the run, within 2 s. Called and returns under W.lock. */
static bool end_standby_run(void)
{
	for (int i = 0; i < 200 && !W.standby_orphaned; i++) {
		if (W.standby_link)
			shutdown(xport_fd(W.standby_link), SHUT_RDWR);
		pthread_mutex_unlock(&W.lock);
		sleep_ms(10);
		pthread_mutex_lock(&W.lock);
	}
	return W.standby_orphaned;
}

/* A copy that may never run again, or the standby of a lost primary asked
 * by that primary's new sync (req's lineage), gives its RAM to the new
 * standby on this host as the base of its sync, and this process ends. */
struct json_object *repl_give_copy(struct json_object *req)
{
	bool ours, orphan;
	struct json_object *o;

	pthread_mutex_lock(&W.lock);
	ours = W.state == W_STANDBY && W.vm && !W.repl_active &&
	       same_primary(ipc_str(req, "lineage", ""));
	orphan = ours && end_standby_run();
	if (!orphan && (W.state != W_FENCED || !W.vm || W.repl_active)) {
		o = ipc_error(IPC_E_WRONG_STATE, "guest %s is %s here%s: its copy is not to be "
			      "given away", W.spec.name, worker_state_names[W.state],
			      ours ? ", its epochs not yet ended" :
			      W.state == W_STANDBY && !W.arb.endpoints[0] && W.arb.lineage[0] ?
			      ", of another primary" : "");
		pthread_mutex_unlock(&W.lock);
		return o;
	}
	W.reply_fd = W.vm->regions[0].memfd;	/* one memfd holds all of RAM */
	W.exit_requested = true;
	pthread_mutex_unlock(&W.lock);
	log_write(LOG_INFO, W.spec.name, NULL, "guest %s: this %s is the base of a new standby "
		"(only the pages that differ cross); its process ends", W.spec.name, orphan ?
		"standby of a lost primary, asked by that primary's new sync," : "stopped copy");
	return ipc_ok();
}

int repl_take_fenced_copy(const struct worker_spec *s, const char *lineage, int *base_fd,
			  char *err, size_t errlen)
{
	struct json_object *req = json_object_new_object(), *rep = NULL;
	char path[600], why[256] = "no answer";
	int sock, fd = -1, ret = -EBUSY;

	worker_sock_path(s->dir, s->name, path, sizeof(path));
	json_object_object_add(req, "cmd", json_object_new_string("give-copy"));
	if (lineage[0])
		json_object_object_add(req, "lineage", json_object_new_string(lineage));
	sock = ipc_connect(path, why, sizeof(why));
	if (sock >= 0 && ipc_send(sock, req, -1) == 0)
		rep = ipc_recv(sock, &fd, 5000);
	if (sock >= 0)
		close(sock);
	json_object_put(req);
	if (!rep || !ipc_bool(rep, "ok", false) || fd < 0) {
		snprintf(err, errlen, "a guest named '%s' already runs on this host and keeps it "
			 "(%s)", s->name, rep ? ipc_str(rep, "error", "no copy came") : why);
		json_object_put(rep);
		if (fd >= 0)
			close(fd);
		return -EBUSY;
	}
	json_object_put(rep);
	for (int i = 0; i < 100 && ret == -EBUSY; i++) {	/* until that process ended */
		ret = worker_setup(s, err, errlen);
		if (ret == -EBUSY)
			sleep_ms(50);
	}
	if (ret)
		close(fd);
	else
		*base_fd = fd;
	return ret;
}

static struct json_object *repl_stats_object(const struct repl_stats *rs)
{
	struct json_object *o = json_object_new_object();

	json_object_object_add(o, "state", json_object_new_string(repl_state_name(rs->state)));
	if (W.arb.endpoints[0]) {
		char a[300];

		snprintf(a, sizeof(a), "%s, lease %d s", W.arb.endpoints, W.arb.ttl_s);
		json_object_object_add(o, "arbiter", json_object_new_string(a));
	} else {
		json_object_object_add(o, "arbiter", json_object_new_string(
			"none: no automatic failover, no protection against split brain"));
	}
	json_object_object_add(o, "token", json_object_new_int64((int64_t)rs->token));
	json_object_object_add(o, "epochs", json_object_new_int64((int64_t)rs->epochs));
	json_object_object_add(o, "acked_epoch", json_object_new_int64((int64_t)rs->acked_epoch));
	json_object_object_add(o, "epoch_rate", json_object_new_double(rs->epoch_rate));
	/* how long epochs are now: longer than asked when the standby lags */
	json_object_object_add(o, "epoch_ms", json_object_new_double(
		rs->epoch_rate > 0 ? 1e3 / rs->epoch_rate : 0));
	json_object_object_add(o, "pause_p50_ms", json_object_new_double(rs->pause_p50_ms));
	json_object_object_add(o, "pause_p99_ms", json_object_new_double(rs->pause_p99_ms));
	json_object_object_add(o, "bytes_per_epoch",
			       json_object_new_int64((int64_t)rs->bytes_per_epoch));
	json_object_object_add(o, "bytes_sent", json_object_new_int64((int64_t)rs->bytes_sent));
	json_object_object_add(o, "lag_ms", json_object_new_double(rs->lag_ms));
	json_object_object_add(o, "held_output_bytes",
			       json_object_new_int64((int64_t)rs->held_output_bytes));
	json_object_object_add(o, "released_output_bytes",
			       json_object_new_int64((int64_t)rs->released_output_bytes));
	json_object_object_add(o, "sync_s", json_object_new_double(rs->sync_s));
	if (rs->error[0])
		json_object_object_add(o, "error", json_object_new_string(rs->error));
	return o;
}

/* replicate status: the primary's figures, or what the standby applied. */
struct json_object *repl_job_status(void)
{
	struct json_object *o = ipc_ok();
	struct repl_stats rs;

	pthread_mutex_lock(&W.lock);
	json_object_object_add(o, "name", json_object_new_string(W.spec.name));
	if (W.state == W_STANDBY) {
		json_object_object_add(o, "role", json_object_new_string("standby"));
		json_object_object_add(o, "applied_epoch",
				       json_object_new_int64((int64_t)W.standby.applied_epoch));
		json_object_object_add(o, "token", json_object_new_int64((int64_t)W.standby.token));
		json_object_object_add(o, "applied_pages",
				       json_object_new_int64((int64_t)W.standby.applied_pages));
		json_object_object_add(o, "last_apply_ms",
				       json_object_new_double(W.standby.last_apply_ms));
		if (W.standby.error[0])
			json_object_object_add(o, "error", json_object_new_string(W.standby.error));
		pthread_mutex_unlock(&W.lock);
		return o;
	}
	if (!W.repl_ran) {
		pthread_mutex_unlock(&W.lock);
		json_object_put(o);
		return ipc_error(IPC_E_WRONG_STATE, "guest %s is not replicated", W.spec.name);
	}
	json_object_object_add(o, "role", json_object_new_string("primary"));
	json_object_object_add(o, "job", json_object_new_string(W.job));
	json_object_object_add(o, "standby", json_object_new_string(W.dest));
	json_object_object_add(o, "active", json_object_new_boolean(W.repl_active));
	pthread_mutex_unlock(&W.lock);
	repl_progress_get(&W.rprog, &rs);
	json_object_object_add(o, "replication", repl_stats_object(&rs));
	pthread_mutex_lock(&W.rprog.lock);
	if (rs.state == REPL_FAILED && W.repl_code)
		json_object_object_add(o, "code", json_object_new_string(W.repl_code));
	pthread_mutex_unlock(&W.rprog.lock);
	return o;
}

/* replicate stop: a last epoch, then the end on both sides. */
struct json_object *repl_job_stop(void)
{
	bool active;

	pthread_mutex_lock(&W.lock);
	active = W.repl_active;
	pthread_mutex_unlock(&W.lock);
	if (!active)
		return ipc_error(IPC_E_WRONG_STATE, "guest %s is not replicated here (a standby is "
				 "stopped from its "
				 "primary)", W.spec.name);
	atomic_store(&W.rprog.stop, true);
	pthread_join(W.repl_thread, NULL);
	W.repl_started = false;
	return repl_job_status();
}

/* ---- standby ---------------------------------------------------------------- */

static bool take_over(struct vm *vm)
{
	double give_up = worker_now() + 3.0 * W.arb.ttl_s + 2;
	char err[512] = "", owner[160];
	struct repl_lease *lease;
	uint64_t token;
	int ret = -EAGAIN;

	if (!W.arbiter)
		W.arbiter = new_arbiter(err, sizeof(err));
	if (!W.arbiter)
		goto out;
	owner_id(owner, sizeof(owner), "standby taken over");
	while (worker_now() < give_up) {
		ret = repl_arbiter_wait_free(W.arbiter, W.spec.name, 1000, err, sizeof(err));
		if (ret)
			continue;	/* still held, or the store is out of reach */
		ret = repl_lease_take(W.arbiter, W.spec.name, owner, W.arb.ttl_s, W.standby.token,
				      on_fence, NULL, &lease, &token, err, sizeof(err));
		if (ret != -EAGAIN && ret != -ETIMEDOUT && ret != -ECONNREFUSED &&
		    ret != -EHOSTUNREACH && ret != -ENETUNREACH && ret != -ECONNRESET)
			break;
	}
	if (ret)
		goto out;
	pthread_mutex_lock(&W.rprog.lock);
	W.rprog.stats.token = token;
	pthread_mutex_unlock(&W.rprog.lock);
	W.rparams.token = token;	/* the epochs of its own standby carry it */
	atomic_store(&W.rprog.lease, lease);
	pthread_mutex_lock(&W.lock);
	atomic_store(&W.events_vm, vm);
	pthread_mutex_lock(&W.rprog.run_lock);
	if (repl_may_run(&W.rprog) && vm_resume(vm) == 0)
		W.state = W_RUNNING;
	pthread_mutex_unlock(&W.rprog.run_lock);
	pthread_mutex_unlock(&W.lock);
	log_write(LOG_NOTICE, W.spec.name, W.incoming_job, "guest %s TAKEN OVER from epoch %llu "
		"(token %llu -> %llu): it runs here now", W.spec.name,
		(unsigned long long)W.standby.applied_epoch, (unsigned long long)W.standby.token,
		(unsigned long long)token);
	return true;
out:
	log_write(LOG_WARNING, W.spec.name, W.incoming_job, "guest %s: the standby gives up (%s)",
		W.spec.name, ret == -ESTALE ? "its primary went on without it" : ret == -EBUSY ?
		"another host owns the guest" : err[0] ? err : "the primary keeps its lease");
	return false;
}

/* After a takeover: protect the guest in turn on the old primary's host
 * (its service, as the hello said), trying until it works or is stopped. */
static void protect_back(void)
{
	long cores = sysconf(_SC_NPROCESSORS_ONLN);

	if (!W.arb.primary[0]) {
		log_write(LOG_WARNING, W.spec.name, NULL, "guest %s: the old primary's address is "
			"unknown: 'vmigrate replicate' protects it again", W.spec.name);
		return;
	}
	pthread_mutex_lock(&W.lock);
	mig_params_default(&W.params);
	W.params.io_timeout_ms = W.spec.io_timeout_ms;
	W.rparams = (struct repl_params){ .epoch_ms = W.arb.epoch_ms, .token = W.rparams.token };
	snprintf(W.job, sizeof(W.job), "%.40s-repl-%ld", W.spec.name, (long)time(NULL));
	snprintf(W.dest, sizeof(W.dest), "%s", W.arb.primary);
	W.mig_peer = W.spec.peer;
	W.mig_fd = -1;
	W.mig_channels = cores < 1 ? 1 : cores > 4 ? 4 : (unsigned)cores;
	W.mig_rdma = false;
	W.arb.home_port = W.spec.home_port;
	W.repl_keep_trying = true;
	if (repl_job_start())
		log_write(LOG_ERR, W.spec.name, W.job, "guest %s: cannot start protecting it",
			W.spec.name);
	else
		log_write(LOG_INFO, W.spec.name, W.job, "guest %s: protecting it on %s (the old "
			"primary's host), job %s", W.spec.name, W.dest, W.job);
	pthread_mutex_unlock(&W.lock);
}

/* A standby, in sync: apply epochs until the primary ends it (then this
 * process ends: the standby is freed), hands the guest over, or is lost
 * (with an arbiter, it may then take the guest over and protects it in
 * turn; without one the copy stays at its last epoch: replication alone
 * never runs it). */
void repl_follow_epochs(struct incoming *in, struct vm *vm)
{
	int silence = W.arb.endpoints[0] ?
		      (W.arb.epoch_ms * 3 > 1000 ? (int)W.arb.epoch_ms * 3 : 1000) : 0;
	int ret;

	pthread_mutex_lock(&W.lock);
	W.vm = vm;
	W.state = W_STANDBY;
	W.standby_link = in->session.control;
	W.spec.mem = 0;
	for (unsigned i = 0; i < vm->nr_regions; i++)
		W.spec.mem += vm->regions[i].size;
	W.spec.vcpus = vm->nr_vcpus;
	pthread_mutex_unlock(&W.lock);
	log_write(LOG_INFO, W.spec.name, W.incoming_job, "guest %s: standby in sync (job %s); "
		"applying epochs", W.spec.name, W.incoming_job);
	uint64_t received;

	ret = repl_standby_run(vm, in->session.control, &W.lock, silence, &W.standby);
	received = in->session.control->bytes_received;
	for (unsigned i = 0; i < in->session.nr_data; i++)
		received += in->session.data[i]->bytes_received;
	pthread_mutex_lock(&W.lock);
	W.standby_link = NULL;		/* before it closes */
	pthread_mutex_unlock(&W.lock);
	peer_session_close(&in->session);
	if (W.standby.damaged) {
		/* neither the last epoch nor the one before: never to run */
		log_write(LOG_ERR, W.spec.name, W.incoming_job, "guest %s: %s; this copy never "
			"takes the guest over and is freed", W.spec.name, W.standby.error);
		keep_standby_job("lost", IPC_E_INTEGRITY, received);
		pthread_mutex_lock(&W.lock);
		W.exit_requested = true;
		pthread_mutex_unlock(&W.lock);
		return;
	}
	if ((W.standby.handed_over || !W.standby.stopped_by_primary) && W.arb.endpoints[0] &&
	    W.standby.applied_epoch) {
		if (W.standby.handed_over)
			log_write(LOG_NOTICE, W.spec.name, W.incoming_job, "guest %s: the primary "
				"handed it over with epoch %llu (planned failover)", W.spec.name,
				(unsigned long long)W.standby.applied_epoch);
		else
			log_write(LOG_WARNING, W.spec.name, W.incoming_job, "guest %s: the "
				"primary is lost (%s); asking the arbiter", W.spec.name,
				W.standby.error);
		if (take_over(vm)) {
			keep_standby_job("taken-over", NULL, received);
			protect_back();
			return;
		}
		keep_standby_job("lost", W.standby.handed_over ? IPC_E_REFUSED : IPC_E_PEER_LOST,
				 received);
		pthread_mutex_lock(&W.lock);
		W.exit_requested = true;	/* a stale copy: of no use to anyone */
		pthread_mutex_unlock(&W.lock);
		return;
	}
	keep_standby_job(W.standby.stopped_by_primary ? "stopped" : "lost",
			 W.standby.stopped_by_primary ? NULL : IPC_E_PEER_LOST, received);
	pthread_mutex_lock(&W.lock);
	if (W.standby.stopped_by_primary) {
		log_write(LOG_INFO, W.spec.name, W.incoming_job, "guest %s: replication stopped "
			"by the primary after epoch %llu; the standby is freed", W.spec.name,
			(unsigned long long)W.standby.applied_epoch);
		W.exit_requested = true;
	} else {
		log_write(LOG_WARNING, W.spec.name, W.incoming_job, "guest %s: the primary is "
			"lost (%s); the standby holds epoch %llu (token %llu) and stays paused",
			W.spec.name, W.standby.error[0] ? W.standby.error : strerror(-ret),
			(unsigned long long)W.standby.applied_epoch,
			(unsigned long long)W.standby.token);
		W.standby_orphaned = true;	/* for a new sync of that primary */
	}
	pthread_mutex_unlock(&W.lock);
}
