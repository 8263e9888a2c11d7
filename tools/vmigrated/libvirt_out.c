/*
 * The source's job for a libvirt domain (lvd_run_outgoing, in a child of
 * the service): our unix socket for QEMU's stream, the session to the
 * destination's service, libvirt's peer-to-peer migration in one thread
 * and its figures in another, the relay (libvirt_out_relay.c), and the
 * job's end: where the domain is, and why.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "migrate.h"
#include "libvirt_out.h"
#include "log.h"

static struct json_object *outgoing_json(struct outgoing *g)
{
	struct json_object *o = json_object_new_object(), *st = json_object_new_object();
	double elapsed = lvd_now() - g->started;

	json_object_object_add(o, "job", json_object_new_string(g->o->job));
	json_object_object_add(o, "guest", json_object_new_string(g->o->name));
	json_object_object_add(o, "kind", json_object_new_string("libvirt"));
	json_object_object_add(o, "direction", json_object_new_string("outgoing"));
	json_object_object_add(o, "peer", json_object_new_string(g->o->dest));
	json_object_object_add(o, "pid", json_object_new_int(getpid()));
	json_object_object_add(o, "done", json_object_new_boolean(g->done));
	json_object_object_add(o, "round", json_object_new_int64((int64_t)g->lv.memory_iteration));
	json_object_object_add(o, "percent", json_object_new_double(g->done ? 100.0 :
		g->lv.data_total ? 100.0 * (double)g->lv.data_processed /
		(double)(g->lv.data_processed + g->lv.data_remaining + 1) : 0));
	json_object_object_add(st, "status", json_object_new_string(g->status));
	json_object_object_add(st, "error", json_object_new_string(g->error));
	json_object_object_add(st, "total_time_ms", json_object_new_int64(
		g->lv.elapsed_ms ? (int64_t)g->lv.elapsed_ms : (int64_t)(elapsed * 1000)));
	json_object_object_add(st, "downtime_ms", json_object_new_int64((int64_t)g->lv.downtime_ms));
	json_object_object_add(st, "rounds", json_object_new_int64((int64_t)g->lv.memory_iteration));
	json_object_object_add(st, "transferred_bytes", json_object_new_int64(
		(int64_t)g->wire_bytes));
	json_object_object_add(st, "remaining_bytes", json_object_new_int64(
		(int64_t)g->lv.data_remaining));
	json_object_object_add(st, "ram_total_bytes", json_object_new_int64(
		(int64_t)g->lv.data_total));
	json_object_object_add(st, "dirty_pages_rate", json_object_new_int64(
		(int64_t)g->lv.dirty_rate));
	json_object_object_add(st, "mbps", json_object_new_double(
		g->done ? (elapsed > 0 ? (double)g->wire_bytes * 8 / 1e6 / elapsed : 0) :
		(double)g->lv.memory_bps * 8 / 1e6));
	json_object_object_add(st, "qemu_stream_bytes", json_object_new_int64(
		(int64_t)g->stream_bytes));
	json_object_object_add(st, "return_path_bytes", json_object_new_int64(
		(int64_t)g->rp_bytes));
	json_object_object_add(st, "normal_pages", json_object_new_int64((int64_t)g->pages));
	json_object_object_add(st, "zero_pages", json_object_new_int64((int64_t)g->zero_pages));
	json_object_object_add(st, "device_bytes", json_object_new_int64((int64_t)g->device_bytes));
	json_object_object_add(st, "record_bytes", json_object_new_int64((int64_t)g->record_bytes));
	json_object_object_add(st, "compressed_pages", json_object_new_int64((int64_t)g->lz4_pages));
	json_object_object_add(st, "raw_pages", json_object_new_int64((int64_t)g->raw_pages));
	json_object_object_add(st, "compress", json_object_new_string(g->compress));
	json_object_object_add(st, "libvirt_data_processed", json_object_new_int64(
		(int64_t)g->lv.data_processed));
	json_object_object_add(o, "stats", st);
	return o;
}

static void outgoing_publish(struct outgoing *g)
{
	struct json_object *o;

	pthread_mutex_lock(&g->lock);
	o = outgoing_json(g);
	pthread_mutex_unlock(&g->lock);
	lvd_write_status(g->c->jobs_dir, g->o->job, o);
	json_object_put(o);
}

void lvd_announce(const struct lvd_config *c, const struct lvd_outgoing *o)
{
	struct outgoing g = { .c = c, .o = o, .started = lvd_now() };
	struct json_object *j;

	snprintf(g.status, sizeof(g.status), "setup");
	j = outgoing_json(&g);
	lvd_write_status(c->jobs_dir, o->job, j);
	json_object_put(j);
}

static void *migrate_thread(void *opaque)
{
	struct outgoing *g = opaque;
	struct lv_host *h;
	char uri[420];
	/* no bandwidth for libvirt: the cap is vmigrate's, on the wire (the
	 * records, compressed), not on QEMU's stream before them */
	struct lv_migrate_params p = { .dest_uri = g->o->dest_uri, .migrate_uri = uri };

	snprintf(uri, sizeof(uri), "unix://%s", g->o->sock);
	h = lv_open(g->c->uri, g->mig_err, sizeof(g->mig_err));
	g->mig_ret = h ? lv_migrate(h, g->o->name, &p, g->mig_err, sizeof(g->mig_err)) : -EIO;
	lv_close(h);
	atomic_store(&g->mig_done, true);
	return NULL;
}

/* QEMU's downtime limit before the job: the ramp's floor, the ceiling
 * being --max-downtime, else the domain's own limit (downtime_ramp.h). */
static int downtime_floor(struct outgoing *g)
{
	char err[512];
	struct lv_host *h = lv_open(g->c->uri, err, sizeof(err));
	int ret = h ? lv_max_downtime(h, g->o->name, &g->downtime_before, err, sizeof(err)) : -EIO;

	if (!ret) {
		lvd_ramp_init(&g->ramp, g->o->max_downtime_ms ? g->o->max_downtime_ms :
			      g->downtime_before);
		ret = lv_set_max_downtime(h, g->o->name, g->ramp.floor_ms, err, sizeof(err));
		g->downtime_set = ret == 0;
	}
	lv_close(h);
	if (ret)
		outgoing_fail(g, "%s", err);
	return ret;
}

/* The ramp's next limit onto QEMU, or again at the next sample. */
static void downtime_follow(struct outgoing *g, struct lv_host *h, const struct lv_job_stats *s,
			    uint64_t *pending_ms)
{
	uint64_t ms = lvd_ramp_sample(&g->ramp, s->memory_iteration, s->data_remaining);
	char err[512];

	if (ms)
		*pending_ms = ms;
	if (!*pending_ms)
		return;
	if (lv_set_max_downtime(h, g->o->name, *pending_ms, err, sizeof(err))) {
		log_write(LOG_INFO, g->o->name, g->o->job, "job %s: %s", g->o->job, err);
		return;
	}
	log_write(LOG_INFO, g->o->name, g->o->job, "job %s: at QEMU's round %llu (%s) its "
		  "downtime limit goes up from %llu to %llu ms", g->o->job,
		  (unsigned long long)g->ramp.round, g->ramp.round > LVD_RAMP_ROUNDS ?
		  "the rounds at the floor are over" : "the rounds stopped shrinking",
		  (unsigned long long)g->ramp.floor_ms, (unsigned long long)*pending_ms);
	*pending_ms = 0;
}

/* libvirt's figures ten times a second for the downtime ramp, twice a
 * second into the job's file. */
static void *stats_thread(void *opaque)
{
	struct outgoing *g = opaque;
	struct lv_host *h = NULL;
	uint64_t pending_ms = 0;

	for (unsigned tick = 0; !atomic_load(&g->mig_done); tick++) {
		struct lv_job_stats s;
		char err[256];

		if (!h)	/* again at the next sample: the ramp needs it */
			h = lv_open(g->c->uri, err, sizeof(err));
		if (h && lv_job_stats(h, g->o->name, false, &s, err, sizeof(err)) == 0 && s.active) {
			pthread_mutex_lock(&g->lock);
			g->lv = s;
			if (!strcmp(g->status, "setup") && s.data_processed)
				snprintf(g->status, sizeof(g->status), "active");
			pthread_mutex_unlock(&g->lock);
			downtime_follow(g, h, &s, &pending_ms);
		}
		if (tick % 5 == 0)
			outgoing_publish(g);
		/* the job's end is not kept waiting for the next sample */
		for (int i = 0; i < 2 && !atomic_load(&g->mig_done); i++)
			usleep(50000);
	}
	lv_close(h);
	return NULL;
}

void outgoing_fail(struct outgoing *g, const char *fmt, ...)
{
	va_list ap;

	pthread_mutex_lock(&g->lock);
	if (!g->error[0]) {
		va_start(ap, fmt);
		vsnprintf(g->error, sizeof(g->error), fmt, ap);
		va_end(ap);
	}
	pthread_mutex_unlock(&g->lock);
}

bool outgoing_failed(struct outgoing *g)
{
	bool f;

	pthread_mutex_lock(&g->lock);
	f = g->error[0] != 0;
	pthread_mutex_unlock(&g->lock);
	return f;
}

/* Wait for the source QEMU on the listening socket, as long as libvirt's
 * job runs (its Prepare on the destination comes first). */
static int accept_qemu(struct outgoing *g, int l)
{
	while (!atomic_load(&g->mig_done)) {
		struct pollfd p = { .fd = l, .events = POLLIN };
		int n = poll(&p, 1, 200);

		if (n < 0 && errno != EINTR)
			return -errno;
		if (n == 1)
			return accept4(l, NULL, NULL, SOCK_CLOEXEC);
	}
	return -ECANCELED;
}

/* What the destination's welcome said it reads decides the compressor,
 * as for micro-VM guests (mig_compress_fit_peer). */
static void fit_compress_to_peer(struct outgoing *g, unsigned peer_minor)
{
	enum mig_compress c;
	char why[160];

	if (mig_compress_parse(g->compress, &c) == 0 &&
	    mig_compress_fit_peer(&c, peer_minor, why, sizeof(why))) {
		log_write(LOG_WARNING, g->o->name, g->o->job, "job %s: %s", g->o->job, why);
		snprintf(g->compress, sizeof(g->compress), "%s", mig_compress_name(c));
	}
}

_Noreturn void lvd_run_outgoing(const struct lvd_config *c, const struct lvd_outgoing *o)
{
	static struct outgoing g;
	struct peer_session ps;
	struct sockaddr_un a;
	pthread_t mt, stt;
	char err[512], host[256], title[16];
	int l = -1, q = -1, fd;
	bool have_mt = false, have_stt = false, cancelled;

	setsid();
	snprintf(title, sizeof(title), "vmg:lv:%.8s", o->name);
	prctl(PR_SET_NAME, title);
	signal(SIGPIPE, SIG_IGN);
	g.c = c;
	g.o = o;
	snprintf(g.compress, sizeof(g.compress), "%s", o->compress);
	pthread_mutex_init(&g.lock, NULL);
	g.started = lvd_now();
	snprintf(g.status, sizeof(g.status), "setup");
	outgoing_publish(&g);

	/* our socket first: QEMU dials it as soon as libvirt says so */
	if (lvd_unix_addr(&a, o->sock)) {
		outgoing_fail(&g, "socket path too long: %s", o->sock);
		goto end;
	}
	l = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	unlink(o->sock);
	if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof(a)) || listen(l, 1)) {
		outgoing_fail(&g, "%s: %s", o->sock, strerror(errno));
		goto end;
	}
	chmod(o->sock, 0600);
	/* then the destination's service learns of the job */
	fd = peer_connect(o->dest, o->io_timeout_ms, host, sizeof(host), err, sizeof(err));
	if (fd < 0 || peer_dial(&o->peer, fd, host, "libvirt-in", o->name, o->job, NULL,
				o->channels, o->rdma, false, &ps, err, sizeof(err))) {
		outgoing_fail(&g, "%s", err);
		goto end;
	}
	fit_compress_to_peer(&g, ps.peer_minor);
	ps.control->idle_ok = true;	/* libvirt's Prepare may take a while */
	if (o->bandwidth) {
		static struct xport_bucket bucket;

		xport_bucket_init(&bucket, o->bandwidth);
		ps.control->bucket = &bucket;
		for (unsigned i = 0; i < ps.nr_data; i++)
			ps.data[i]->bucket = &bucket;
	}
	log_write(LOG_INFO, o->name, o->job, "migrating libvirt domain %s to %s (libvirt at %s) "
		"as job %s, QEMU's stream through %s, its pages over %u data channel%s%s", o->name,
		o->dest, o->dest_uri, o->job, o->sock, ps.nr_data, ps.nr_data == 1 ? "" : "s",
		o->rdma ? " (RDMA)" : "");
	/* the figures' thread first: the ramp lifts the floor, which
	 * without it would hold a dirtying domain in pre-copy */
	if (downtime_floor(&g) ||
	    !(have_stt = pthread_create(&stt, NULL, stats_thread, &g) == 0) ||
	    pthread_create(&mt, NULL, migrate_thread, &g)) {
		if (!outgoing_failed(&g))
			outgoing_fail(&g, "pthread_create: %s", strerror(errno));
		peer_session_close(&ps);
		goto end;
	}
	have_mt = true;
	q = accept_qemu(&g, l);
	close(l);
	l = -1;
	unlink(o->sock);
	/* the waiting is over: a frame begun is bounded by the io timeout */
	ps.control->idle_ok = false;
	if (q >= 0) {
		lvd_relay_out(&g, q, &ps);
		close(q);	/* a failed relay: QEMU's migration fails, the domain stays */
	}
	peer_session_close(&ps);
end:
	if (l >= 0) {
		close(l);
		unlink(o->sock);
	}
	if (have_mt)
		pthread_join(mt, NULL);
	else
		atomic_store(&g.mig_done, true);
	if (have_stt)
		pthread_join(stt, NULL);
	{
		/* libvirt's final figures: where the domain is now (a transient
		 * domain that moved is gone from here, and its job with it) */
		bool moved = have_mt && !g.mig_ret;
		struct lv_host *h = lv_open(moved ? o->dest_uri : c->uri, err, sizeof(err));
		struct lv_job_stats s;

		if (h && lv_job_stats(h, o->name, true, &s, err, sizeof(err)) == 0 && s.active) {
			pthread_mutex_lock(&g.lock);
			g.lv = s;
			pthread_mutex_unlock(&g.lock);
		}
		/* a domain that stays keeps the limit it had (the ramp has
		 * ended: both threads are joined) */
		if (h && !moved && g.downtime_set &&
		    lv_set_max_downtime(h, o->name, g.downtime_before, err, sizeof(err)))
			log_write(LOG_INFO, o->name, o->job, "job %s: %s", o->job, err);
		lv_close(h);
	}
	pthread_mutex_lock(&g.lock);
	{
		char path[1024];

		lvd_cancel_path(c->jobs_dir, o->job, path, sizeof(path));
		cancelled = unlink(path) == 0;
	}
	if (have_mt && g.mig_ret && !g.stalled && (cancelled || strstr(g.mig_err, "cancel")))
		snprintf(g.status, sizeof(g.status), "cancelled");
	else
		snprintf(g.status, sizeof(g.status), have_mt && !g.mig_ret ? "completed" : "failed");
	if (have_mt && g.mig_ret && !g.error[0])
		snprintf(g.error, sizeof(g.error), "%s", g.mig_err);
	else if (have_mt && g.mig_ret && strlen(g.error) + 3 < sizeof(g.error))
		snprintf(g.error + strlen(g.error), sizeof(g.error) - strlen(g.error), " (%s)",
			 g.mig_err);
	g.done = true;
	pthread_mutex_unlock(&g.lock);
	outgoing_publish(&g);
	if (!strcmp(g.status, "completed"))
		log_write(LOG_INFO, o->name, o->job, "libvirt domain %s runs on %s now (job %s, "
			"%llu bytes of QEMU's stream, %llu on the wire)", o->name, o->dest, o->job,
			(unsigned long long)g.stream_bytes, (unsigned long long)g.wire_bytes);
	else
		log_write(LOG_WARNING, o->name, o->job, "job %s %s: %s; the domain stays here",
			o->job, g.status, g.error);
	_exit(strcmp(g.status, "completed") ? 1 : 0);
}
