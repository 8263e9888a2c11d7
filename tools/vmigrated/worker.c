/*
 * The per-guest process. Its main thread serves one request per
 * connection on guests/NAME.sock; the vCPUs and, while it migrates, the
 * migration run on threads of their own.
 *
 * States: running <-> paused; running -> migrating -> gone (moved) or
 * back to running (failed, guest still here) or uncertain (handed over,
 * no answer: kept paused for the operator); incoming -> running;
 * incoming -> standby (a replica, never run here by replication itself)
 * -> running (taken over, through the arbiter); running -> fenced (its
 * lease ran out, or it was handed to its standby: stopped for good, its
 * RAM kept as the base of a new standby). A running guest may be
 * replicated (repl_active, worker_repl.c): it stays running.
 *
 * What the guest emits (console, and a line with its counter at each of
 * its self-check passes) goes out through repl_output(): at once, or, while
 * replicated, once the standby holds the epoch that produced it. It is
 * written to the service's log and to guests/NAME.output.
 *
 * The process holds the guest's name (guest_lock.h) from before it binds
 * the socket until the guest is gone from here: a moved-away process
 * gives the name up at once and lingers only to hand its job's result to
 * the service, for at most GONE_LINGER_S.
 */
#include "worker_internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>
#ifdef __SANITIZE_ADDRESS__
#include <sanitizer/lsan_interface.h>
#endif

#include "ckpt_wire.h"
#include "fault.h"
#include "guest_lock.h"
#include "handover.h"
#include "ipc.h"
#include "job_report.h"
#include "joblog.h"
#include "log.h"
#include "migrate.h"
#include "replicate.h"
#include "snapshot.h"
#include "libvirt_jobs.h"

#define GONE_LINGER_S	30

const char *const worker_state_names[] = {
	[W_INCOMING] = "incoming", [W_RUNNING] = "running", [W_PAUSED] = "paused",
	[W_MIGRATING] = "migrating", [W_UNCERTAIN] = "uncertain", [W_GONE] = "migrated",
	[W_STANDBY] = "standby", [W_FENCED] = "fenced", [W_LOST] = "lost-in-flight",
};

struct worker W;

double worker_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

void worker_sock_path(const char *dir, const char *name, char *out, size_t len)
{
	snprintf(out, len, "%s/%s.sock", dir, name);
}

int worker_spec_from_json(struct json_object *req, struct worker_spec *s,
			  char *err, size_t errlen)
{
	const char *name = ipc_str(req, "name", NULL), *content = ipc_str(req, "content", "random");
	const char *mode = ipc_str(req, "dirty_mode", "bitmap");

	memset(s, 0, sizeof(*s));
	if (!name || !*name || strlen(name) >= sizeof(s->name) || strchr(name, '/') ||
	    name[0] == '.') {
		snprintf(err, errlen, "a guest needs a name of 1 to 63 characters without '/'");
		return -EINVAL;
	}
	strcpy(s->name, name);
	s->mem = (uint64_t)ipc_int(req, "mem", 1ll << 30);
	s->vcpus = (unsigned)ipc_int(req, "vcpus", 1);
	snprintf(s->guest, sizeof(s->guest), "%s", ipc_str(req, "guest", "memtouch"));
	s->mt.working_set = (uint64_t)ipc_int(req, "working_set", 64ll << 20);
	s->mt.dirty_rate = (uint64_t)ipc_int(req, "dirty_rate", 0);
	s->mt.seed = (uint64_t)ipc_int(req, "seed", 1);
	s->mt.fill_first = ipc_bool(req, "fill_first", true);
	s->mt.stop_after = (uint64_t)ipc_int(req, "stop_after", 0);
	snprintf(s->prefill, sizeof(s->prefill), "%s", ipc_str(req, "prefill", ""));
	if (vm_memtouch_parse_content(content, &s->mt.content)) {
		snprintf(err, errlen, "content must be random, text or zero-heavy");
		return -EINVAL;
	}
	if (!strcmp(mode, "ring"))
		s->dirty_mode = VM_DIRTY_RING;
	else if (strcmp(mode, "bitmap")) {
		snprintf(err, errlen, "dirty_mode must be bitmap or ring");
		return -EINVAL;
	}
	return 0;
}

int worker_mig_params(struct json_object *req, int io_timeout_ms, struct mig_params *p,
		      char *err, size_t errlen)
{
	mig_params_default(p);
	if (mig_compress_parse(ipc_str(req, "compress", "auto"), &p->compress)) {
		snprintf(err, errlen, "compress must be " MIG_COMPRESS_CHOICES);
		return -EINVAL;
	}
	p->max_downtime_ms = (uint64_t)ipc_int(req, "max_downtime_ms", 300);
	p->bandwidth = (uint64_t)ipc_int(req, "bandwidth", 0);
	p->auto_converge = ipc_bool(req, "auto_converge", false);
	p->timeout_s = ipc_double(req, "timeout_s", 0);
	p->force_on_timeout = !strcmp(ipc_str(req, "on_timeout", "cancel"), "force");
	p->io_timeout_ms = (int)ipc_int(req, "io_timeout_ms", io_timeout_ms);
	/* "manual": a fault channel, and the switch only on migrate-postcopy */
	if (ipc_str(req, "postcopy", NULL) && strcmp(ipc_str(req, "postcopy", ""), "manual") &&
	    mig_postcopy_parse(ipc_str(req, "postcopy", ""), p)) {
		snprintf(err, errlen, "postcopy must be pure, auto, manual or a number of rounds");
		return -EINVAL;
	}
	return mig_params_check(p, err, errlen);
}

/* Output the outside may see now (replicate.h's release callback). */
static void release_output(void *opaque, uint64_t token, uint64_t epoch, const char *buf,
			   size_t len)
{
	char head[128];
	struct timespec ts;
	int n;

	/* the shared clock, so a checker can order two hosts' releases */
	clock_gettime(CLOCK_REALTIME, &ts);
	n = snprintf(head, sizeof(head), "%lld.%06ld token %llu epoch %llu: ",
		     (long long)ts.tv_sec, ts.tv_nsec / 1000, (unsigned long long)token,
		     (unsigned long long)epoch);
	bool nl = len && buf[len - 1] == '\n';
	struct iovec iov[3] = { { head, (size_t)n }, { (void *)buf, len }, { "\n", nl ? 0 : 1 } };

	log_write(LOG_INFO, W.spec.name, NULL, "[guest %s] %.*s", W.spec.name,
		(int)(nl ? len - 1 : len), buf);
	if (W.output_fd >= 0 && writev(W.output_fd, iov, 3) < 0)
		log_write(LOG_WARNING, W.spec.name, NULL, "guest %s: writing its output: %s",
			W.spec.name, strerror(errno));
}

static void on_console(void *opaque, const char *buf, size_t len)
{
	repl_output(&W.rprog, buf, len);
}

static void on_event(void *opaque, unsigned vcpu, uint32_t code, uint32_t arg)
{
	if (code == VMG_EV_CHECK_BAD)
		log_write(LOG_ERR, W.spec.name, NULL, "guest %s vCPU %u self-check FAILED",
			W.spec.name, vcpu);
	if (code == VMG_EV_CHECK_OK) {
		/* two vCPUs' lines leave in the order their counters were read */
		static pthread_mutex_t order = PTHREAD_MUTEX_INITIALIZER;
		struct vm *vm = atomic_load(&W.events_vm);
		char line[96];
		int n;

		pthread_mutex_lock(&order);
		n = vm ? snprintf(line, sizeof(line), "vcpu %u pass, counter %llu\n", vcpu,
				  (unsigned long long)vm_memtouch_total(vm)) :
			 snprintf(line, sizeof(line), "vcpu %u pass\n", vcpu);
		repl_output(&W.rprog, line, (size_t)n);
		pthread_mutex_unlock(&order);
	}
}

static void on_stopped(void *opaque, unsigned vcpu, int err, const char *why)
{
	if (err)
		log_write(LOG_ERR, W.spec.name, NULL, "guest %s vCPU %u stopped: %s", W.spec.name,
			vcpu, why);
}

static const struct vm_events events = { on_console, on_event, on_stopped, NULL };

/* Tell the parent how the start went, then never use the pipe again. */
static void report_ready(int ready_fd, struct json_object *o)
{
	const char *s = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);

	if (ready_fd < 0) {
		json_object_put(o);
		return;
	}
	if (write(ready_fd, s, strlen(s)) < 0 || write(ready_fd, "\n", 1) < 0)
		log_write(LOG_ERR, W.spec.name, NULL, "guest %s: cannot report to the service",
			W.spec.name);
	close(ready_fd);
	json_object_put(o);
}

/* A failed worker_setup(): its name is held by another process, or else. */
static const char *setup_code(int ret)
{
	return ret == -EBUSY ? IPC_E_EXISTS : ipc_errno_code(ret);
}

static _Noreturn void die_early(int ready_fd, const char *code, const char *msg)
{
	report_ready(ready_fd, ipc_error(code, "%s", msg));
	if (W.listen_fd >= 0)
		unlink(W.sock_path);
	_exit(1);
}

/* The guest left this host: free its name for whoever comes next (the
 * guest migrating back, say). Called under W.lock. */
static void give_up_name(void)
{
	W.state = W_GONE;
	W.gone_at = worker_now();
	if (W.name_fd >= 0)
		close(W.name_fd);
	W.name_fd = -1;
}

/* ---- requests -------------------------------------------------------------- */

static struct json_object *stats_object(const struct mig_stats *st)
{
	char buf[2048];

	mig_stats_json(st, buf, sizeof(buf));
	return json_tokener_parse(buf);
}

/* The code of a job that ended without completing (ipc.h), from its status
 * and what its run returned (ret, a negative errno; 0 when unknown). */
static const char *job_code(const struct mig_stats *st, int ret)
{
	switch (st->status) {
	case MIG_CANCELLED:
		return IPC_E_CANCELLED;
	case MIG_UNCERTAIN:
		return IPC_E_UNCERTAIN;
	case MIG_FAILED:
		return ret ? ipc_errno_code(ret) : IPC_E_INTERNAL;
	case MIG_LOST:		/* post-copy's link never came back */
		return IPC_E_PEER_LOST;
	default:
		return NULL;	/* running, or completed */
	}
}

/* A job as `vmigrate jobs` lists it: which, which way, with whom, figures. */
static struct json_object *job_object(struct json_object *o, const char *job, bool outgoing,
				      const struct mig_stats *st)
{
	json_object_object_add(o, "job", json_object_new_string(job));
	json_object_object_add(o, "guest", json_object_new_string(W.spec.name));
	json_object_object_add(o, "direction", json_object_new_string(
		outgoing ? "outgoing" : "incoming"));
	json_object_object_add(o, "peer", json_object_new_string(
		outgoing ? W.dest : W.incoming_from));
	json_object_object_add(o, "stats", stats_object(st));
	return o;
}

void worker_keep_job(struct json_object *rec, const char *code)
{
	char when[32];
	time_t t = time(NULL);
	struct tm tm;

	strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&t, &tm));
	json_object_object_add(rec, "finished_at", json_object_new_string(when));
	json_object_object_add(rec, "done", json_object_new_boolean(true));
	if (code)
		json_object_object_add(rec, "code", json_object_new_string(code));
	joblog_add(W.spec.dir, rec);
	json_object_put(rec);
}

/* A finished migration's final figures, kept after this process is gone
 * (joblog.h); a failure to keep them is logged there and costs nothing. */
static void record_job(const char *job, bool outgoing, const struct mig_stats *st, int ret)
{
	struct json_object *rec = job_object(json_object_new_object(), job, outgoing, st);

	json_object_object_add(rec, "kind", json_object_new_string("migration"));
	worker_keep_job(rec, job_code(st, ret));
}

/* An incoming guest that runs here already, its pages still coming
 * (post-copy); *st says how. */
static bool running_postcopy_in(enum mig_status *st)
{
	struct mig_stats in;

	if (W.state != W_INCOMING)
		return false;
	mig_progress_get(&W.inprog, &in);
	*st = in.status;
	return in.status == MIG_POSTCOPY_ACTIVE || in.status == MIG_POSTCOPY_PAUSED;
}

static struct json_object *do_info(void)
{
	struct json_object *o = ipc_ok();
	enum mig_status pcst = MIG_SETUP;
	bool pc;

	pthread_mutex_lock(&W.lock);
	pc = running_postcopy_in(&pcst);
	json_object_object_add(o, "name", json_object_new_string(W.spec.name));
	/* post-copy: it runs here while the job still owns it (no stop yet) */
	json_object_object_add(o, "state", json_object_new_string(
		pc ? worker_state_names[W_RUNNING] : worker_state_names[W.state]));
	json_object_object_add(o, "pid", json_object_new_int(getpid()));
	json_object_object_add(o, "mem", json_object_new_int64((int64_t)W.spec.mem));
	json_object_object_add(o, "vcpus", json_object_new_int((int)W.spec.vcpus));
	json_object_object_add(o, "uptime_s", json_object_new_double(worker_now() - W.started));
	if (W.vm)
		json_object_object_add(o, "counter", json_object_new_int64((int64_t)vm_memtouch_total(W.vm)));
	json_object_object_add(o, "memory", json_object_new_string(
		pc ? mig_status_name(pcst) : W.lazy ? "loading" : W.lazy_failed ? "incomplete" :
		"loaded"));
	if (W.job[0])
		json_object_object_add(o, "job", json_object_new_string(W.job));
	if (W.incoming_job[0])
		json_object_object_add(o, "incoming_job", json_object_new_string(W.incoming_job));
	if (W.repl_active) {
		struct repl_stats rs;

		repl_progress_get(&W.rprog, &rs);
		json_object_object_add(o, "replication", json_object_new_string(
			repl_state_name(rs.state)));
	}
	if (W.state == W_UNCERTAIN)	/* where to ask before resuming */
		json_object_object_add(o, "dest", json_object_new_string(W.dest));
	pthread_mutex_unlock(&W.lock);
	return o;
}

static struct json_object *do_verify(void)
{
	struct vm_verify_report rep;
	struct json_object *o;
	int ret;

	pthread_mutex_lock(&W.lock);
	if (!W.vm || (W.state != W_RUNNING && W.state != W_PAUSED && W.state != W_STANDBY)) {
		o = ipc_error(IPC_E_WRONG_STATE, "guest %s is %s: nothing to verify here", W.spec.name,
			      worker_state_names[W.state]);
		pthread_mutex_unlock(&W.lock);
		return o;
	}
	/* a standby never ran and is not paused: W.lock keeps epochs out; a
	 * replicated guest's epochs wait on run_lock (they pause and resume it) */
	pthread_mutex_lock(&W.rprog.run_lock);
	vm_pause(W.vm);
	ret = vm_memtouch_verify(W.vm, &(struct vm_verify_opts){
		.prefill = W.spec.prefill[0] ? W.spec.prefill : NULL }, &rep);
	if (W.state == W_RUNNING && !atomic_load(&W.rprog.fenced))
		vm_resume(W.vm);
	pthread_mutex_unlock(&W.rprog.run_lock);
	pthread_mutex_unlock(&W.lock);
	o = ret ? ipc_error(IPC_E_INTEGRITY, "verify failed: %s", rep.msg) : ipc_ok();
	json_object_object_add(o, "pages_checked", json_object_new_int64((int64_t)rep.pages_checked));
	json_object_object_add(o, "in_flight", json_object_new_int64((int64_t)rep.in_flight));
	json_object_object_add(o, "bad_pages", json_object_new_int64((int64_t)rep.bad_pages));
	json_object_object_add(o, "prefill_checked", json_object_new_int64((int64_t)rep.prefill_checked));
	json_object_object_add(o, "counter", json_object_new_int64((int64_t)rep.total));
	json_object_object_add(o, "guest_self_checks", json_object_new_int64((int64_t)rep.passes));
	json_object_object_add(o, "guest_check_errors",
			       json_object_new_int64((int64_t)rep.guest_check_errors));
	return o;
}

/* Pages dirtied since the last checkpoint, re-armed for the next one. */
static int take_dirty(struct vm *vm, uint64_t **bm)
{
	for (unsigned r = 0; r < vm->nr_regions; r++) {
		int ret;

		memset(bm[r], 0, vm_bitmap_bytes(&vm->regions[r]));
		ret = vm->ops->dirty_sync(vm, r, bm[r]);
		if (!ret)
			ret = vm->ops->dirty_clear(vm, r, 0, vm->regions[r].size / VM_PAGE_SIZE, bm[r]);
		if (ret)
			return ret;
	}
	return 0;
}

/* Before a checkpoint copies memory: let a lazy restore finish loading it. */
static void wait_memory_loaded(void)
{
	if (W.lazy_started) {
		pthread_join(W.lazy_thread, NULL);
		W.lazy_started = false;
	}
}

static struct json_object *do_snapshot(struct json_object *req)
{
	const char *file = ipc_str(req, "file", NULL);
	bool incremental = ipc_bool(req, "incremental", false);
	bool live = ipc_bool(req, "live", false);
	uint64_t *bm[VM_MAX_REGIONS] = { 0 };
	struct snap_save_opts o = { 0 };
	struct snap_result res;
	struct json_object *rep;
	char err[512];
	double t0;
	int ret = 0;

	const char *key_file = ipc_str(req, "key_file", NULL);
	uint8_t key[64];
	int key_len = 0;

	if (!file || file[0] != '/')
		return ipc_error(IPC_E_BAD_ARGUMENT, "snapshot needs an absolute file name");
	if (ckpt_compressor_parse(ipc_str(req, "compress", "lz4"), &o.compress))
		return ipc_error(IPC_E_BAD_ARGUMENT, "compress must be " CKPT_COMPRESSOR_CHOICES);
	if (key_file && (key_len = snap_key_load(key_file, key, err, sizeof(err))) < 0)
		return ipc_error(ipc_errno_code(key_len), "%s", err);
	wait_memory_loaded();
	pthread_mutex_lock(&W.lock);
	if (!W.vm || (W.state != W_RUNNING && W.state != W_PAUSED)) {
		rep = ipc_error(IPC_E_WRONG_STATE, "guest %s is %s", W.spec.name,
				worker_state_names[W.state]);
		goto out;
	}
	if (W.lazy_failed) {
		rep = ipc_error(IPC_E_WRONG_STATE, "guest %s did not finish loading its memory: "
				"nothing to save",
				W.spec.name);
		goto out;
	}
	if (W.repl_active) {
		rep = ipc_error(IPC_E_WRONG_STATE, "guest %s is replicated: stop the replication "
				"first", W.spec.name);
		goto out;
	}
	if (incremental && !W.snap_base_valid) {
		rep = ipc_error(IPC_E_WRONG_STATE, "no checkpoint of guest %s to build on: take a "
				"full one first",
				W.spec.name);
		/* nothing was tried: a full one would do (vmigrate backup) */
		json_object_object_add(rep, "retry_full", json_object_new_boolean(true));
		goto out;
	}
	if (incremental && ipc_str(req, "expect_parent", NULL)) {
		char have[33];

		for (int i = 0; i < 16; i++)
			sprintf(have + 2 * i, "%02x", W.snap_base.image_uuid[i]);
		if (strcmp(have, ipc_str(req, "expect_parent", ""))) {
			rep = ipc_error(IPC_E_WRONG_STATE, "the last checkpoint of guest %s is not the "
					"one expected: "
					"take a full one first", W.spec.name);
			json_object_object_add(rep, "retry_full", json_object_new_boolean(true));
			goto out;
		}
	}
	/* before the dirty set is taken: a refusal costs the next incremental nothing */
	ret = snap_check_target(file, incremental ? W.snap_base.image_uuid : NULL,
				ipc_bool(req, "force", false), err, sizeof(err));
	if (ret) {
		rep = ipc_error(ipc_errno_code(ret), "%s", err);
		goto out;
	}
	for (unsigned r = 0; r < W.vm->nr_regions; r++)
		if (!(bm[r] = calloc(1, vm_bitmap_bytes(&W.vm->regions[r])))) {
			rep = ipc_error(IPC_E_INTERNAL, "out of memory");
			goto out;
		}
	t0 = worker_now();
	live = live && W.state == W_RUNNING;
	if (!live)
		vm_pause(W.vm);
	/* From a full checkpoint on, tracking stays on for the next one. */
	ret = W.vm->ops->dirty_start(W.vm);
	if (ret == -EALREADY)
		ret = 0;
	if (!ret)
		ret = take_dirty(W.vm, bm);
	if (incremental) {
		memcpy(o.parent_uuid, W.snap_base.image_uuid, 16);
		memcpy(o.parent_digest, W.snap_base.digest, 16);
		o.dirty = bm;
	}
	o.live = live;
	o.force = ipc_bool(req, "force", false);
	o.mac_key = key_len > 0 ? key : NULL;
	o.mac_key_len = key_len > 0 ? (size_t)key_len : 0;
	if (!ret)
		ret = snap_save_paused(W.vm, file, &o, &res, err, sizeof(err));
	else
		snprintf(err, sizeof(err), "dirty tracking: %s", strerror(-ret));
	if (W.state == W_RUNNING && !live)
		vm_resume(W.vm);
	/* a failed one lost the dirty set: the next must be full */
	W.snap_base_valid = !ret;
	if (ret) {
		rep = ipc_error(ipc_errno_code(ret), "checkpoint failed, the guest runs on: %s", err);
		/* tried and failed, not refused: the service counts it (metrics.c) */
		json_object_object_add(rep, "attempted", json_object_new_boolean(true));
		goto out;
	}
	W.snap_base = res;
	rep = ipc_ok();
	json_object_object_add(rep, "file", json_object_new_string(file));
	json_object_object_add(rep, "incremental", json_object_new_boolean(incremental));
	json_object_object_add(rep, "file_bytes", json_object_new_int64((int64_t)res.file_bytes));
	json_object_object_add(rep, "pause_ms", json_object_new_double(
		live ? res.pause_ms : (worker_now() - t0) * 1e3));
	json_object_object_add(rep, "live", json_object_new_boolean(live));
	json_object_object_add(rep, "rounds", json_object_new_int((int)res.rounds));
	json_object_object_add(rep, "seconds", json_object_new_double(worker_now() - t0));
	json_object_object_add(rep, "pages_written", json_object_new_int64((int64_t)
		ckpt_enc_content_pages(res.pages)));
	log_write(LOG_INFO, W.spec.name, NULL, "guest %s: %s checkpoint %s (%llu bytes)",
		W.spec.name, incremental ? "incremental" : "full", file,
		(unsigned long long)res.file_bytes);
out:
	pthread_mutex_unlock(&W.lock);
	for (unsigned r = 0; r < VM_MAX_REGIONS; r++)
		free(bm[r]);
	return rep;
}

/* What the destination's welcome said it reads decides the compressor
 * (mig_compress_fit_peer); the job's figures then say what was used. */
static void fit_compress_to_peer(unsigned peer_minor)
{
	char why[160];

	if (mig_compress_fit_peer(&W.params.compress, peer_minor, why, sizeof(why)))
		log_write(LOG_WARNING, W.spec.name, W.job, "guest %s job %s: %s", W.spec.name,
			  W.job, why);
}

int worker_dial_job(const char *op)
{
	char err[512];
	int ret = peer_dial(&W.mig_peer, W.mig_fd, W.dest_host, op, W.spec.name, W.job, &W.arb,
			    W.mig_channels + W.mig_postcopy, W.mig_rdma, W.mig_postcopy,
			    &W.mig_session, err, sizeof(err));

	if (!ret) {
		W.params.data_channels = W.mig_session.data;
		W.params.nr_data_channels = W.mig_session.nr_data - W.mig_postcopy;
		W.params.fault_channel = W.mig_postcopy ?
			W.mig_session.data[W.mig_session.nr_data - 1] : NULL;
		W.params.reconnect = W.mig_postcopy ? worker_postcopy_redial : NULL;
		W.params.peer_reads_live = W.mig_session.peer_minor >= CKPT_MINOR_LIVE;
		fit_compress_to_peer(W.mig_session.peer_minor);
		return 0;
	}
	pthread_mutex_lock(&W.prog.lock);
	W.prog.stats.status = MIG_FAILED;
	snprintf(W.prog.stats.error, sizeof(W.prog.stats.error), "%.250s", err);
	pthread_mutex_unlock(&W.prog.lock);
	log_write(LOG_ERR, W.spec.name, W.job, "guest %s job %s: %s", W.spec.name, W.job, err);
	return ret;
}

/* The job's outcome with its figures, one line; the reason when it is
 * more than the status's name ("cancelled"). */
static void log_migration_end(const struct mig_stats *st)
{
	const char *status = mig_status_name(st->status);
	const char *why = st->error[0] && strcmp(st->error, status) ? st->error : "";
	int level = st->status == MIG_COMPLETED ? LOG_INFO :
		    st->status == MIG_CANCELLED ? LOG_NOTICE : LOG_ERR;

	log_write(level, W.spec.name, W.job, "guest %s migration %s: %s in %llu ms, downtime "
		"%llu ms, %u rounds, %.1f MiB sent, %.0f Mbit/s, %llu normal and %llu zero "
		"pages%s%s", W.spec.name, W.job, status, (unsigned long long)st->total_time_ms,
		(unsigned long long)st->downtime_ms, st->round, st->transferred_bytes / 1048576.0,
		st->mbps, (unsigned long long)st->normal_pages, (unsigned long long)st->zero_pages,
		why[0] ? ": " : "", why);
}

/* The job's end, for the service's counters. A guest that moved reports
 * once its name is given up, so a service that is down (for up to
 * JOB_REPORT_S) holds nothing up; a process told to exit then waits for
 * the report (it joins the job). A guest that stayed reports before it is
 * runnable again, so a new job never waits for the old one's report (its
 * join holds W.lock while the service waits on this process). */
static void report_end(void)
{
	struct mig_stats st;

	mig_progress_get(&W.prog, &st);
	job_report(W.spec.control, "out", W.spec.name, W.job, &st);
}

static void *migration_main(void *arg)
{
	struct mig_stats st;
	int ret;

	if ((ret = worker_dial_job("migrate-in"))) {
		mig_progress_get(&W.prog, &st);
		record_job(W.job, true, &st, ret);
		report_end();
		pthread_mutex_lock(&W.lock);
		W.mig_result = ret;
		W.mig_done = true;
		W.state = W_RUNNING;
		pthread_mutex_unlock(&W.lock);
		return NULL;
	}
	ret = mig_source_run(W.vm, W.mig_session.control, &W.params, &W.prog);
	mig_progress_get(&W.prog, &st);
	record_job(W.job, true, &st, ret);	/* before the watcher can see it done */
	if (ret)
		report_end();

	pthread_mutex_lock(&W.lock);
	W.mig_result = ret;
	W.mig_done = true;
	if (ret == 0) {
		vm_destroy(W.vm);	/* it runs on the destination now */
		W.vm = NULL;
		give_up_name();
	} else if (ret == -ENOLINK) {
		W.state = W_LOST;	/* post-copy: its memory is split, never resumed here */
	} else if (ret == -EINPROGRESS) {
		W.state = W_UNCERTAIN;
		W.uncertain_since = worker_now();	/* GO went out before this */
	} else {
		W.state = W_RUNNING;
	}
	pthread_mutex_unlock(&W.lock);
	peer_session_close(&W.mig_session);
	worker_postcopy_close();
	log_migration_end(&st);
	if (!ret)
		report_end();
	return NULL;
}

static struct json_object *do_migrate(struct json_object *req, int fd)
{
	struct json_object *o, *peer = NULL;
	struct mig_params params;
	struct peer_config pc;
	char err[512];

	if (fd < 0)
		return ipc_error(IPC_E_BAD_ARGUMENT, "migrate needs the connection to the destination");
	json_object_object_get_ex(req, "peer", &peer);
	if (peer_config_from_json(peer, &pc)) {
		close(fd);
		return ipc_error(IPC_E_INTERNAL, "the service's peer key did not reach the guest "
				 "intact");
	}
	if (worker_mig_params(req, W.spec.io_timeout_ms, &params, err, sizeof(err))) {
		close(fd);
		return ipc_error(IPC_E_BAD_ARGUMENT, "%s", err);
	}
	pthread_mutex_lock(&W.lock);
	if (W.state != W_RUNNING || !W.vm) {
		o = ipc_error(IPC_E_WRONG_STATE, "guest %s is %s, not running", W.spec.name,
			      worker_state_names[W.state]);
		pthread_mutex_unlock(&W.lock);
		close(fd);
		return o;
	}
	if (W.repl_active) {
		o = ipc_error(IPC_E_WRONG_STATE, "guest %s is replicated (job %s): 'vmigrate "
			      "replicate stop %s' "
			      "first", W.spec.name, W.job, W.spec.name);
		pthread_mutex_unlock(&W.lock);
		close(fd);
		return o;
	}
	if (W.lazy) {
		/* The destination waits for its handshake meanwhile: do not make
		 * it wait for a load of unknown length too. */
		o = ipc_error(IPC_E_BUSY, "guest %s is still loading its memory (lazy restore): "
			      "migrate it "
			      "once 'vmigrate info' shows its memory loaded", W.spec.name);
		pthread_mutex_unlock(&W.lock);
		close(fd);
		return o;
	}
	if (W.mig_started && W.mig_done) {
		pthread_join(W.mig_thread, NULL);
		W.mig_started = false;
	}
	if (W.repl_started) {
		pthread_join(W.repl_thread, NULL);	/* over: repl_active is false */
		W.repl_started = false;
	}
	W.params = params;
	snprintf(W.job, sizeof(W.job), "%s", ipc_str(req, "job", "job"));
	snprintf(W.dest_host, sizeof(W.dest_host), "%s", ipc_str(req, "dest_host", ""));
	snprintf(W.dest, sizeof(W.dest), "%s", ipc_str(req, "dest", ""));
	W.mig_peer = pc;
	mig_progress_init(&W.prog);
	W.mig_fd = fd;
	W.mig_channels = (unsigned)ipc_int(req, "channels", 0);
	W.mig_rdma = !strcmp(ipc_str(req, "transport", "tcp"), "rdma");
	W.mig_postcopy = ipc_str(req, "postcopy", NULL) != NULL &&
			 strcmp(ipc_str(req, "cmd", ""), "replicate");
	if (W.mig_rdma && !W.mig_channels)
		W.mig_channels = 1;	/* pages need a data channel to ride RDMA */
	W.snap_base_valid = false;	/* the job ends dirty tracking */
	if (!strcmp(ipc_str(req, "cmd", ""), "replicate")) {
		W.rparams = (struct repl_params){
			.epoch_ms = (unsigned)ipc_int(req, "epoch_ms", 0),
			.compress = params.compress == MIG_COMPRESS_LZ4,
		};
		memset(&W.arb, 0, sizeof(W.arb));
		snprintf(W.arb.endpoints, sizeof(W.arb.endpoints), "%s",
			 ipc_str(req, "arbiter", ""));
		W.arb.ttl_s = (int)ipc_int(req, "ttl", 5);
		W.arb.epoch_ms = W.rparams.epoch_ms;
		W.arb.home_port = W.spec.home_port;
		W.repl_keep_trying = false;	/* until protected once */
		if (repl_job_start()) {
			pthread_mutex_unlock(&W.lock);
			close(fd);
			return ipc_error(IPC_E_INTERNAL, "cannot start the replication");
		}
	} else {
		W.mig_done = false;
		W.state = W_MIGRATING;
		if (pthread_create(&W.mig_thread, NULL, migration_main, NULL)) {
			W.state = W_RUNNING;
			pthread_mutex_unlock(&W.lock);
			close(fd);
			return ipc_error(IPC_E_INTERNAL, "cannot start the migration");
		}
		W.mig_started = true;
	}
	pthread_mutex_unlock(&W.lock);
	o = ipc_ok();
	json_object_object_add(o, "job", json_object_new_string(W.job));
	return o;
}

/* True when req names the job that brought the guest here (or names none
 * and this process only received one). */
static bool names_incoming(struct json_object *req)
{
	const char *job = ipc_str(req, "job", NULL);

	if (job && *job)
		return W.incoming_job[0] && !strcmp(job, W.incoming_job) && strcmp(job, W.job);
	return !W.job[0] && W.incoming_job[0];
}

/* The receiving side's figures, bytes counted live while it receives. */
static struct json_object *incoming_progress(void)
{
	struct json_object *o = ipc_ok();
	struct mig_stats st;
	bool done;

	mig_progress_get(&W.inprog, &st);
	pthread_mutex_lock(&W.lock);
	done = W.state != W_INCOMING;
	if (W.in_session && !done) {
		const struct peer_session *ps = W.in_session;

		st.transferred_bytes = ps->control->bytes_received;
		for (unsigned i = 0; i < ps->nr_data; i++)
			st.transferred_bytes += ps->data[i]->bytes_received;
		st.total_time_ms = (uint64_t)((worker_now() - W.in_started) * 1000);
	}
	pthread_mutex_unlock(&W.lock);
	job_object(o, W.incoming_job, false, &st);
	json_object_object_add(o, "round", json_object_new_int((int)st.round));
	json_object_object_add(o, "done", json_object_new_boolean(done));
	return o;
}

static struct json_object *do_progress(struct json_object *req)
{
	struct mig_stats st;
	struct json_object *o;

	if (names_incoming(req))
		return incoming_progress();
	if (!W.job[0])
		return ipc_error(IPC_E_NOT_FOUND, "guest %s has no migration", W.spec.name);
	mig_progress_get(&W.prog, &st);
	o = job_object(ipc_ok(), W.job, true, &st);
	json_object_object_add(o, "round", json_object_new_int((int)st.round));
	json_object_object_add(o, "round_pages", json_object_new_int64((int64_t)st.round_pages));
	json_object_object_add(o, "round_done", json_object_new_int64((int64_t)st.round_done));
	json_object_object_add(o, "remaining_pages", json_object_new_int64((int64_t)st.remaining_pages));
	json_object_object_add(o, "eta_s", json_object_new_double(st.eta_s));
	json_object_object_add(o, "percent", json_object_new_double(st.percent));
	pthread_mutex_lock(&W.lock);
	json_object_object_add(o, "done", json_object_new_boolean(W.mig_done));
	if (W.mig_done && job_code(&st, W.mig_result))
		json_object_object_add(o, "code", json_object_new_string(
			job_code(&st, W.mig_result)));
	pthread_mutex_unlock(&W.lock);
	return o;
}

/*
 * The operator's resume after an uncertain handover, rule 4 of
 * migrate/protocol.c: only on the destination's word that it does not and
 * will not run the guest (fd: a connection to its service, opened by ours),
 * or, where that host is lost for good, on the operator's word once the
 * handover bound has surely passed.
 */
static struct json_object *do_resume(struct json_object *req, int fd)
{
	const double wait_s = MIG_GO_BOUND_MS / 1e3 + 1;
	bool lost = ipc_bool(req, "destination_lost", false);
	char decision[32] = "", detail[256] = "", err[512] = "";
	struct json_object *o = NULL;
	double since;

	pthread_mutex_lock(&W.lock);
	since = worker_now() - W.uncertain_since;
	if (W.state != W_UNCERTAIN || !W.vm)
		o = ipc_error(IPC_E_WRONG_STATE, "guest %s is %s: only an uncertain guest is resumed "
			      "by hand",
			      W.spec.name, worker_state_names[W.state]);
	pthread_mutex_unlock(&W.lock);
	if (!o && lost && since < wait_s)
		o = ipc_error(IPC_E_BUSY, "guest %s: wait %.0f s more: until then the destination "
			      "may still "
			      "take the guest over", W.spec.name, wait_s - since);
	if (!o && !lost && fd < 0)
		o = ipc_error(IPC_E_PEER_UNREACHABLE, "guest %s: cannot ask the destination %s "
			      "whether it runs the guest "
			      "(%s); it stays paused. Try again, or if that host is lost for good, "
			      "'vmigrate resume %s --destination-lost'", W.spec.name, W.dest,
			      ipc_str(req, "dial_error", "no connection"), W.spec.name);
	if (!o && !lost && fd >= 0) {
		int ret = peer_ask_handover(&W.mig_peer, fd, W.dest_host, "handover", W.spec.name, W.job,
					    decision, sizeof(decision), detail, sizeof(detail),
					    err, sizeof(err));

		fd = -1;	/* the query owns it */
		if (ret)
			o = ipc_error(ipc_errno_code(ret), "guest %s: the destination did not say "
				      "whether it runs the "
				      "guest (%s); it stays paused", W.spec.name, err);
		else if (!strcmp(decision, PEER_HANDOVER_RUNS))
			o = ipc_error(IPC_E_WRONG_STATE, "guest %s runs on the destination (%s): it "
				      "stays paused here; "
				      "'vmigrate stop %s' frees this host", W.spec.name, detail,
				      W.spec.name);
		else if (strcmp(decision, PEER_HANDOVER_DISCARDED) &&
			 strcmp(decision, PEER_HANDOVER_NEVER))
			o = ipc_error(IPC_E_BUSY, "guest %s: the destination has not decided (%s: %s); "
				      "it stays "
				      "paused, try again in a few seconds", W.spec.name, decision,
				      detail);
	}
	if (fd >= 0)
		close(fd);
	if (o)
		return o;
	pthread_mutex_lock(&W.lock);
	if (W.state == W_UNCERTAIN && W.vm) {
		W.vm->ops->dirty_stop(W.vm);
		vm_resume(W.vm);
		W.state = W_RUNNING;
		o = ipc_ok();
		json_object_object_add(o, "destination", json_object_new_string(
			lost ? "declared lost by the operator" : decision));
		log_write(LOG_NOTICE, W.spec.name, W.job, "guest %s resumed here by the operator "
			"(destination: %s%s%s)", W.spec.name, lost ? "declared lost" : decision,
			detail[0] ? ", " : "", detail);
	} else {
		o = ipc_error(IPC_E_WRONG_STATE, "guest %s is %s now", W.spec.name,
			      worker_state_names[W.state]);
	}
	pthread_mutex_unlock(&W.lock);
	return o;
}

static struct json_object *handle(struct json_object *req, int fd)
{
	const char *cmd = ipc_str(req, "cmd", "");

	if (fd >= 0 && strcmp(cmd, "migrate") && strcmp(cmd, "replicate") &&
	    strcmp(cmd, "resume")) {
		close(fd);	/* nothing else takes one */
		fd = -1;
	}

	if (!strcmp(cmd, "info"))
		return do_info();
	if (!strcmp(cmd, "verify"))
		return do_verify();
	if (!strcmp(cmd, "migrate") || !strcmp(cmd, "replicate"))
		return do_migrate(req, fd);
	if (!strcmp(cmd, "replicate-status"))
		return repl_job_status();
	if (!strcmp(cmd, "replicate-stop"))
		return repl_job_stop();
	if (!strcmp(cmd, "failover"))
		return repl_job_failover();
	if (!strcmp(cmd, "give-copy"))
		return repl_give_copy(req);
	if (!strcmp(cmd, "progress"))
		return do_progress(req);
	if ((!strcmp(cmd, "cancel") || !strcmp(cmd, "set-bandwidth")) && names_incoming(req))
		return ipc_error(IPC_E_WRONG_STATE, "job %s comes in to this host: %s it on the "
				 "source host (%s)",
				 W.incoming_job, cmd, W.incoming_from);
	if (!strcmp(cmd, "snapshot"))
		return do_snapshot(req);
	if (!strcmp(cmd, "cancel") || !strcmp(cmd, "migrate-postcopy")) {
		struct mig_stats st;

		mig_progress_get(&W.prog, &st);
		if (st.status == MIG_POSTCOPY_ACTIVE || st.status == MIG_POSTCOPY_PAUSED)
			return ipc_error(IPC_E_WRONG_STATE, "job %s is in post-copy: guest %s runs "
					 "on the destination "
					 "already and part of its memory is only there, so it cannot "
					 "come back; the job ends when every page has moved", W.job,
					 W.spec.name);
		if (!strcmp(cmd, "cancel")) {
			atomic_store(&W.prog.cancel, true);
			return ipc_ok();
		}
		if (W.state != W_MIGRATING || (st.status != MIG_SETUP && st.status != MIG_ACTIVE))
			return ipc_error(IPC_E_WRONG_STATE, "guest %s has no pre-copy running to "
					 "switch", W.spec.name);
		if (!W.mig_postcopy)
			return ipc_error(IPC_E_WRONG_STATE, "job %s has no fault channel: start the "
					 "migration with "
					 "--postcopy-after manual (or auto, or N) to switch it by hand",
					 W.job);
		atomic_store(&W.prog.postcopy_now, true);
		return ipc_ok();
	}
	if (!strcmp(cmd, "resume"))
		return do_resume(req, fd);
	if (!strcmp(cmd, "migrate-recover"))
		return worker_postcopy_recover(req);
	if (!strcmp(cmd, "set-bandwidth")) {
		atomic_store(&W.prog.bandwidth.rate, (uint64_t)ipc_int(req, "bandwidth", 0));
		return ipc_ok();
	}
	if (!strcmp(cmd, "stop") || !strcmp(cmd, "exit")) {
		pthread_mutex_lock(&W.lock);
		enum mig_status pcst;

		if (running_postcopy_in(&pcst)) {
			pthread_mutex_unlock(&W.lock);
			return ipc_error(IPC_E_BUSY, "guest %s is migrating: it runs here while its "
					 "pages still come from the source (%s); stop it once "
					 "every page is in", W.spec.name, mig_status_name(pcst));
		}
		if (W.state == W_MIGRATING || W.state == W_INCOMING) {
			pthread_mutex_unlock(&W.lock);
			return ipc_error(IPC_E_BUSY, "guest %s is migrating: cancel the job first",
					 W.spec.name);
		}
		if (W.repl_active) {
			pthread_mutex_unlock(&W.lock);
			return ipc_error(IPC_E_WRONG_STATE, "guest %s is replicated: 'vmigrate replicate "
					 "stop %s' first",
					 W.spec.name, W.spec.name);
		}
		W.exit_requested = true;
		pthread_mutex_unlock(&W.lock);
		return ipc_ok();
	}
	return ipc_error(IPC_E_NOT_FOUND, "unknown request '%s'", cmd);
}

static _Noreturn void serve(void)
{
	for (;;) {
		struct pollfd p = { .fd = W.listen_fd, .events = POLLIN };
		struct json_object *req, *rep;
		int conn, fd;
		bool leave;

		pthread_mutex_lock(&W.lock);
		leave = W.exit_requested ||
			(W.state == W_GONE && worker_now() - W.gone_at > GONE_LINGER_S);
		pthread_mutex_unlock(&W.lock);
		if (leave)
			break;
		if (poll(&p, 1, 200) <= 0)
			continue;
		conn = accept4(W.listen_fd, NULL, NULL, SOCK_CLOEXEC);
		if (conn < 0)
			continue;
		req = ipc_recv(conn, &fd, 5000);
		if (req) {
			rep = handle(req, fd);
			ipc_send(conn, rep, W.reply_fd);
			W.reply_fd = -1;
			json_object_put(rep);
			json_object_put(req);
		}
		close(conn);
	}
	if (W.mig_started)
		pthread_join(W.mig_thread, NULL);
	if (W.repl_started)
		pthread_join(W.repl_thread, NULL);
	if (W.lazy_started)
		pthread_join(W.lazy_thread, NULL);	/* its pages must be in first */
	unlink(W.sock_path);
	if (W.vm)
		vm_destroy(W.vm);
	log_write(LOG_INFO, W.spec.name, NULL, "guest %s process exits", W.spec.name);
#ifdef __SANITIZE_ADDRESS__
	__lsan_do_leak_check();		/* _exit skips it; a report fails the run */
#endif
	_exit(0);
}

/* A process that moved the guest away may still serve the socket (to hand
 * over its result): we hold the name now, so it must go. */
static void evict_leftover(void)
{
	struct json_object *req = json_object_new_object(), *rep;
	char err[256];

	json_object_object_add(req, "cmd", json_object_new_string("exit"));
	rep = ipc_call(W.sock_path, req, -1, 2000, err, sizeof(err));
	json_object_put(req);
	json_object_put(rep);
}

/* Take the guest's name, then its socket. */
static int hold_name_and_socket(char *err, size_t errlen)
{
	pid_t holder;

	worker_sock_path(W.spec.dir, W.spec.name, W.sock_path, sizeof(W.sock_path));
	W.name_fd = guest_lock_take(W.spec.dir, W.spec.name, &holder, err, errlen);
	if (W.name_fd == -EBUSY) {
		snprintf(err, errlen, "a guest named '%s' already runs on this host (process %d "
			 "holds the name)", W.spec.name, (int)holder);
		return -EBUSY;
	}
	if (W.name_fd < 0)
		return W.name_fd;
	evict_leftover();
	{
		char out[600];

		snprintf(out, sizeof(out), "%s/%s.output", W.spec.dir, W.spec.name);
		W.output_fd = open(out, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
		if (W.output_fd < 0)
			log_write(LOG_WARNING, W.spec.name, NULL, "guest %s: %s: %s (output goes "
				"to the log only)", W.spec.name, out, strerror(errno));
	}
	W.listen_fd = ipc_listen(W.sock_path, 0600, err, errlen);
	return W.listen_fd < 0 ? W.listen_fd : 0;
}

int worker_setup(const struct worker_spec *s, char *err, size_t errlen)
{
	memset(&W, 0, sizeof(W));
	W.spec = *s;
	W.listen_fd = -1;
	W.name_fd = -1;
	W.output_fd = -1;
	W.reply_fd = -1;
	W.handover_fd = -1;
	W.started = worker_now();
	pthread_mutex_init(&W.lock, NULL);
	mig_progress_init(&W.prog);
	mig_progress_init(&W.inprog);
	repl_progress_init(&W.rprog, release_output, NULL);
	signal(SIGPIPE, SIG_IGN);
	signal(SIGINT, SIG_IGN);	/* the service's Ctrl-C is not ours */
	setsid();
	{
		char comm[16];

		snprintf(comm, sizeof(comm), "vmg:%.11s", s->name);
		prctl(PR_SET_NAME, comm);	/* so `pkill vmigrated` spares guests */
	}
	return hold_name_and_socket(err, errlen);
}

void worker_run_boot(const struct worker_spec *s, int ready_fd)
{
	struct vm_kvm_config cfg = {
		.name = s->name, .mem_bytes = s->mem, .nr_vcpus = s->vcpus,
		.dirty_mode = s->dirty_mode, .events = events,
	};
	char err[512];
	void *owned;	/* a payload read from a file lives as long as the guest */
	int ret = worker_setup(s, err, sizeof(err));

	if (ret)
		die_early(ready_fd, setup_code(ret), err);
	cfg.payload = vm_payload_load(s->guest, &cfg.payload_size, &owned, err, sizeof(err));
	if (!cfg.payload)
		die_early(ready_fd, IPC_E_BAD_ARGUMENT, err);
	if (vm_memtouch_args(&s->mt, s->mem, cfg.args, err, sizeof(err)))
		die_early(ready_fd, IPC_E_BAD_ARGUMENT, err);
	W.vm = vm_kvm_create(&cfg, err, sizeof(err));
	if (!W.vm)
		die_early(ready_fd, IPC_E_INTERNAL, err);
	atomic_store(&W.events_vm, W.vm);
	if (s->prefill[0] && vm_memtouch_prefill(W.vm, s->prefill, NULL, err, sizeof(err)))
		die_early(ready_fd, IPC_E_IO, err);
	if (vm_start(W.vm))
		die_early(ready_fd, IPC_E_INTERNAL, "cannot start the vCPUs");
	W.state = W_RUNNING;
	log_write(LOG_INFO, s->name, NULL, "guest %s started (pid %d, %llu MiB, %u vCPUs)",
		s->name, getpid(), (unsigned long long)(s->mem >> 20), s->vcpus);
	{
		struct json_object *o = ipc_ok();

		json_object_object_add(o, "pid", json_object_new_int(getpid()));
		report_ready(ready_fd, o);
	}
	serve();
}


/* migrate/dest.c's decide hook: durable before it takes effect. */
static int record_decision(void *opaque, bool run, const char *why)
{
	return handover_record(W.spec.dir, W.spec.name, W.handover_fd, W.incoming_job, run, why);
}

/* A source's question after an uncertain handover; then this process ends. */
static _Noreturn void answer_handover(const struct worker_spec *s, const struct peer_hello *h,
				      struct xport *x)
{
	char decision[32], detail[256];

	prctl(PR_SET_NAME, "vmg:handover");
	handover_answer(s->dir, h->name, h->job, decision, sizeof(decision), detail,
			sizeof(detail));
	peer_answer_handover(x, decision, detail);
	log_write(LOG_INFO, h->name, h->job, "asked about guest %s, job %s: %s (%s)", h->name,
		h->job, decision, detail);
	xport_close(x);
	_exit(0);
}

/* migrate/dest.c's admit hook: from the configuration on, `list` shows
 * the arriving guest's real size. */
static int admit_incoming(void *opaque, const struct ckpt_image_info *info,
			  const struct vm_kvm_config *cfg, char *err, size_t errlen)
{
	pthread_mutex_lock(&W.lock);
	W.spec.mem = cfg->mem_bytes;
	W.spec.vcpus = cfg->nr_vcpus;
	pthread_mutex_unlock(&W.lock);
	return 0;
}

static void *incoming_main(void *arg)
{
	struct incoming *in = arg;
	struct mig_stats st;
	char err[512];
	struct vm *vm = mig_dest_run(in->session.control, &in->opts, &st, err, sizeof(err));

	worker_postcopy_unwatch();

	pthread_mutex_lock(&W.lock);
	W.in_session = NULL;	/* figures from st now; the channels may go */
	pthread_mutex_unlock(&W.lock);
	if (in->opts.has_base)
		close(in->opts.base_memfd);	/* the guest maps its own */

	if (vm && in->opts.standby) {
		repl_follow_epochs(in, vm);
		return NULL;
	}
	peer_session_close(&in->session);
	worker_postcopy_close();
	record_job(W.incoming_job, false, &st, vm ? 0 : -ECONNRESET);
	if (!vm)	/* before this process ends */
		job_report(W.spec.control, "in", W.spec.name, W.incoming_job, &st);
	pthread_mutex_lock(&W.lock);
	if (!vm) {
		log_write(LOG_ERR, W.spec.name, W.incoming_job, "incoming guest %s refused or "
			"lost: %s", W.spec.name, err);
		W.state = W_GONE;
		W.exit_requested = true;
	} else {
		W.vm = vm;
		atomic_store(&W.events_vm, vm);
		W.state = W_RUNNING;
		W.spec.mem = 0;
		for (unsigned i = 0; i < vm->nr_regions; i++)
			W.spec.mem += vm->regions[i].size;
		W.spec.vcpus = vm->nr_vcpus;
		log_write(LOG_INFO, W.spec.name, W.incoming_job, "guest %s arrived and runs (pid "
			"%d; job %s: %.1f MiB received in %llu ms)", W.spec.name, getpid(),
			W.incoming_job, st.transferred_bytes / 1048576.0,
			(unsigned long long)st.total_time_ms);
	}
	pthread_mutex_unlock(&W.lock);
	if (vm)
		job_report(W.spec.control, "in", W.spec.name, W.incoming_job, &st);
	return NULL;
}

void worker_run_incoming(const struct worker_spec *base, int peer_fd)
{
	static struct incoming in;
	struct worker_spec s = *base;
	struct peer_hello h;
	const char *name = h.name;
	char err[512];
	int ret, base_fd = -1;
	pthread_t t;

	struct sockaddr_storage from;
	socklen_t from_len = sizeof(from);
	char from_host[INET6_ADDRSTRLEN] = "";

	setsid();
	prctl(PR_SET_NAME, "vmg:incoming");
	signal(SIGPIPE, SIG_IGN);
	if (getpeername(peer_fd, (struct sockaddr *)&from, &from_len) == 0)
		inet_ntop(from.ss_family, from.ss_family == AF_INET6 ?
			  (void *)&((struct sockaddr_in6 *)&from)->sin6_addr :
			  (void *)&((struct sockaddr_in *)&from)->sin_addr,
			  from_host, sizeof(from_host));
	struct xport *x = peer_accept(&s.peer, peer_fd, &h, err, sizeof(err));

	if (!x) {
		log_write(LOG_WARNING, NULL, NULL, "refused an incoming migration: %s", err);
		_exit(1);
	}
	if (!strcmp(h.op, "handover"))
		answer_handover(&s, &h, x);
	if (!strcmp(h.op, "postcopy-ask"))
		worker_postcopy_answer(&s, &h, x);
	if (!strcmp(h.op, "libvirt-in"))	/* a libvirt domain's stream (libvirt_in.c) */
		lvd_run_incoming(s.lv_sock_dir, s.lv_jobs_dir, &s.peer, x, &h);
	if (!strcmp(h.op, "probe")) {	/* `vmigrate check` on another host */
		prctl(PR_SET_NAME, "vmg:probe");
		if (peer_answer_probe(&s.peer, x, h.check_back ? h.arb.primary : "", err,
				      sizeof(err)))
			log_write(LOG_WARNING, NULL, NULL, "a check from another host failed: %s",
				err);
		_exit(0);
	}
	snprintf(s.name, sizeof(s.name), "%s", name);
	ret = worker_setup(&s, err, sizeof(err));
	if (ret == -EBUSY && !strcmp(h.op, "replicate-in"))
		ret = repl_take_fenced_copy(&s, h.arb.lineage, &base_fd, err, sizeof(err));
	if (ret) {
		peer_answer(x, false, err);
		log_write(LOG_WARNING, s.name, h.job, "refused an incoming migration: %s", err);
		if (W.listen_fd >= 0)
			unlink(W.sock_path);
		_exit(1);
	}
	W.state = W_INCOMING;
	snprintf(W.incoming_job, sizeof(W.incoming_job), "%s", h.job);
	/* now, not in the downtime: the decision is then one write in place */
	W.handover_fd = handover_arm(s.dir, s.name);
	if (W.handover_fd < 0)
		log_write(LOG_WARNING, s.name, h.job, "guest %s: the handover record is not "
			"ready (%s); the decision will replace it", s.name, strerror(-W.handover_fd));
	snprintf(W.incoming_from, sizeof(W.incoming_from), "%s", from_host);
	W.in_started = worker_now();
	W.arb = h.arb;
	in.opts = (struct mig_dest_opts){ .dirty_mode = s.dirty_mode, .events = events,
					  .io_timeout_ms = s.io_timeout_ms,
					  .decide = record_decision,
					  .standby = !strcmp(h.op, "replicate-in"),
					  .has_base = base_fd >= 0, .base_memfd = base_fd,
					  .admit = admit_incoming, .progress = &W.inprog };
	in.peer = s.peer;
	in.opts.only_1_0 = fault_point("dst-reads-1.0");
	in.opts.only_1_1 = !in.opts.only_1_0 && fault_point("dst-reads-1.1");
	if (peer_welcome(&s.peer, x, h.channels, h.rdma, h.postcopy,
			 in.opts.only_1_0 ? 0 : in.opts.only_1_1 ? CKPT_MINOR_LIVE : CKPT_VERSION_MINOR,
			 &in.session, err, sizeof(err))) {
		log_write(LOG_ERR, name, h.job, "incoming guest %s: %s", name, err);
		unlink(W.sock_path);
		_exit(1);
	}
	in.opts.data_channels = in.session.data;
	in.opts.nr_data_channels = in.session.nr_data;
	if (h.postcopy && in.session.nr_data) {
		in.opts.nr_data_channels--;	/* the last one is post-copy's */
		in.opts.fault_channel = in.session.data[in.session.nr_data - 1];
		in.opts.reconnect = worker_postcopy_accept;
		in.opts.opaque = &in;
		if (worker_postcopy_watch(&in))
			log_write(LOG_WARNING, name, h.job, "incoming guest %s: no watcher for "
				"post-copy recoveries", name);
	}
	pthread_mutex_lock(&W.lock);
	W.in_session = &in.session;
	pthread_mutex_unlock(&W.lock);
	if (in.session.nr_data)
		log_write(LOG_INFO, name, h.job, "incoming guest %s: %u data channel(s) on port %d",
			name, in.session.nr_data, in.session.data_port);
	if (pthread_create(&t, NULL, incoming_main, &in)) {
		unlink(W.sock_path);
		_exit(1);
	}
	log_write(LOG_INFO, name, h.job, "receiving guest %s, job %s (%s, %u data channels%s)",
		name, h.job, s.peer.insecure ? "plain TCP" : "TLS", h.channels,
		h.rdma ? " over RDMA" : "");
	pthread_detach(t);
	serve();
}

/* Wait for a lazy restore to have every page in; a page that does not
 * read back intact stops the guest (it never gets another page instead). */
static void *lazy_main(void *arg)
{
	uint64_t served = 0, prefetched = 0;
	int ret = snap_lazy_wait(W.lazy, &served, &prefetched);

	pthread_mutex_lock(&W.lock);
	if (ret) {
		vm_pause(W.vm);
		snap_lazy_abort(W.lazy);
		W.state = W_PAUSED;
		W.exit_requested = true;
		log_write(LOG_ERR, W.spec.name, NULL, "guest %s: lazy restore FAILED, %s did not "
			"read back intact; the guest is stopped", W.spec.name,
			snap_lazy_error(W.lazy));
	} else {
		log_write(LOG_INFO, W.spec.name, NULL, "guest %s: all memory in (%llu pages on "
			"first touch, %llu prefetched)", W.spec.name, (unsigned long long)served,
			(unsigned long long)prefetched);
	}
	snap_lazy_free(W.lazy);
	W.lazy = NULL;
	W.lazy_failed = ret != 0;
	pthread_mutex_unlock(&W.lock);
	return NULL;
}


void worker_run_restore(const struct worker_spec *s, const char *file, const char *key_file,
			bool lazy, int ready_fd)
{
	struct snap_restore_opts ro = { .dirty_mode = s->dirty_mode, .events = events };
	uint8_t key[64];
	uint64_t restored_counter;
	char err[512];
	int ret = worker_setup(s, err, sizeof(err));

	if (ret)
		die_early(ready_fd, setup_code(ret), err);
	if (key_file) {
		int n = snap_key_load(key_file, key, err, sizeof(err));

		if (n < 0)
			die_early(ready_fd, ipc_errno_code(n), err);
		ro.mac_key = key;
		ro.mac_key_len = (size_t)n;
	}
	W.vm = lazy ? snap_restore_lazy(file, &ro, &W.lazy, err, sizeof(err)) :
		      snap_restore(file, &ro, err, sizeof(err));
	if (!W.vm)
		die_early(ready_fd, IPC_E_INTEGRITY, err);
	atomic_store(&W.events_vm, W.vm);
	W.spec.mem = 0;
	for (unsigned i = 0; i < W.vm->nr_regions; i++)
		W.spec.mem += W.vm->regions[i].size;
	W.spec.vcpus = W.vm->nr_vcpus;
	restored_counter = vm_memtouch_total(W.vm);	/* where it starts again */
	if (vm_resume(W.vm))
		die_early(ready_fd, IPC_E_INTERNAL, "cannot start the restored guest");
	W.state = W_RUNNING;
	if (lazy) {
		if (pthread_create(&W.lazy_thread, NULL, lazy_main, NULL))
			die_early(ready_fd, IPC_E_INTERNAL, "cannot follow the lazy restore");
		W.lazy_started = true;
	}
	log_write(LOG_INFO, s->name, NULL, "guest %s restored from %s (pid %d%s)", s->name, file,
		getpid(), lazy ? ", memory loading behind it" : "");
	{
		struct json_object *o = ipc_ok();

		json_object_object_add(o, "pid", json_object_new_int(getpid()));
		json_object_object_add(o, "counter", json_object_new_int64((int64_t)restored_counter));
		report_ready(ready_fd, o);
	}
	serve();
}
