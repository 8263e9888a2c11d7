/*
 * The source's job for a libvirt domain (lvd_run_outgoing, in a child of
 * the service): libvirt's peer-to-peer migration in one thread, QEMU's
 * stream from our unix socket through the QEMU stream parser and the
 * record encoder onto the peer session, the destination QEMU's return
 * path back into the source QEMU, and the job's figures.
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

#include "libvirt_host.h"
#include "libvirt_jobs_int.h"
#include "log.h"
#include "qemu_stream.h"
#include "qemu_stream_records.h"

struct outgoing {
	const struct lvd_config *c;
	const struct lvd_outgoing *o;
	pthread_mutex_t lock;
	/* under lock */
	uint64_t stream_bytes, wire_bytes, rp_bytes;
	uint64_t pages, zero_pages, device_bytes;
	uint64_t record_bytes, lz4_pages, raw_pages;	/* the encoder's */
	struct lv_job_stats lv;		/* libvirt's, while it runs */
	char status[16];
	char error[700];
	double started;
	bool done;
	bool stalled;			/* the watchdog gave the job up */
	/* the migration thread's result */
	atomic_bool mig_done;
	int mig_ret;
	char mig_err[600];
};

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
	json_object_object_add(st, "compress", json_object_new_string(g->o->compress));
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
	struct lv_migrate_params p = { .dest_uri = g->o->dest_uri, .migrate_uri = uri,
				       .max_downtime_ms = g->o->max_downtime_ms };

	snprintf(uri, sizeof(uri), "unix://%s", g->o->sock);
	h = lv_open(g->c->uri, g->mig_err, sizeof(g->mig_err));
	g->mig_ret = h ? lv_migrate(h, g->o->name, &p, g->mig_err, sizeof(g->mig_err)) : -EIO;
	lv_close(h);
	atomic_store(&g->mig_done, true);
	return NULL;
}

/* libvirt's figures twice a second, into the job's file. */
static void *stats_thread(void *opaque)
{
	struct outgoing *g = opaque;
	struct lv_host *h = lv_open(g->c->uri, (char[256]){ 0 }, 256);

	while (!atomic_load(&g->mig_done)) {
		struct lv_job_stats s;
		char err[256];

		if (h && lv_job_stats(h, g->o->name, false, &s, err, sizeof(err)) == 0 && s.active) {
			pthread_mutex_lock(&g->lock);
			g->lv = s;
			if (!strcmp(g->status, "setup") && s.data_processed)
				snprintf(g->status, sizeof(g->status), "active");
			pthread_mutex_unlock(&g->lock);
		}
		outgoing_publish(g);
		/* half a second, but the job's end is not kept waiting for it */
		for (int i = 0; i < 10 && !atomic_load(&g->mig_done); i++)
			usleep(50000);
	}
	lv_close(h);
	return NULL;
}

static void outgoing_fail(struct outgoing *g, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static void outgoing_fail(struct outgoing *g, const char *fmt, ...)
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

static bool outgoing_failed(struct outgoing *g)
{
	bool f;

	pthread_mutex_lock(&g->lock);
	f = g->error[0] != 0;
	pthread_mutex_unlock(&g->lock);
	return f;
}

/*
 * The hold point. QEMU 7.2's source, with its return path open (libvirt
 * turns return-path on for every migration that is not tunnelled), waits
 * in migration_completion for its return-path thread to end before it
 * reports "completed": that thread ends on the destination's SHUT, or on
 * an error, and a return path that closes without SHUT is an error
 * (mark_source_rp_bad), after which the source QEMU fails the migration
 * and runs the guest again. libvirt kills the source QEMU only after
 * "completed". So the destination QEMU's SHUT is held here until the
 * destination's service acknowledged (ACK) that every record arrived with
 * its checksum, the COMMIT matched and its QEMU took the whole stream;
 * without the ACK QEMU's socket closes and the domain stays here.
 *
 *   dest QEMU --SHUT--> dest service --DATA(SHUT), ACK--> here --SHUT--> QEMU
 *                                                     (held until ACK)
 */
struct shut_hold {
	bool seen;			/* the return path's SHUT came */
	uint32_t value;			/* its value: 0 = the destination loaded */
	uint8_t held[QSTREAM_RP_MSG_LEN];	/* its bytes not yet given to QEMU */
	size_t n_held;
	bool acked;			/* the ACK matched: the SHUT went to QEMU */
};

static int src_rp(void *opaque, const struct qstream_rp_msg *m)
{
	struct shut_hold *sh = opaque;

	if (m->type == QSTREAM_RP_SHUT) {
		sh->seen = true;
		sh->value = m->value;
	}
	return 0;
}

/* The bytes of a DATA frame the source QEMU may have now: all but the
 * SHUT's when this frame completed it (nothing may follow SHUT, so those
 * are its last bytes). Bytes of a SHUT split over two frames that went
 * before are harmless: QEMU cannot finish reading it without the rest. */
static size_t shut_hold_take(struct shut_hold *sh, bool seen_before, const uint8_t *buf,
			     size_t len)
{
	size_t tail;

	if (!sh->seen || seen_before)
		return len;
	tail = len < QSTREAM_RP_MSG_LEN ? len : QSTREAM_RP_MSG_LEN;
	memcpy(sh->held, buf + len - tail, tail);
	sh->n_held = tail;
	return len - tail;
}

static uint64_t le64_at(const uint8_t *b)
{
	uint64_t v = 0;

	for (int i = 7; i >= 0; i--)
		v = v << 8 | b[i];
	return v;
}

/* The destination's ACK (le64 record bytes it checked, le64 device state
 * bytes its QEMU took) against what was sent: 0, or -EPROTO with the
 * failure set. */
static int shut_hold_ack(struct outgoing *g, struct shut_hold *sh, const uint8_t *buf,
			 const struct qstream_parser *p, const struct qsrec_encoder *enc)
{
	struct qsrec_enc_stats es;
	uint64_t records = le64_at(buf), device = le64_at(buf + 8);
	uint64_t sent_device = qstream_parser_stats(p)->device_bytes;

	qsrec_encoder_stats(enc, &es);
	if (!sh->seen || sh->value || sh->acked) {
		outgoing_fail(g, "the destination's service: an acknowledgement %s",
			      sh->acked ? "twice" : sh->seen ? "of a QEMU that failed to load" :
			      "before its QEMU's SHUT");
		return -EPROTO;
	}
	if (records != es.record_bytes || device != sent_device) {
		outgoing_fail(g, "the destination acknowledged %llu bytes of records and %llu of "
			      "device state, %llu and %llu were sent",
			      (unsigned long long)records, (unsigned long long)device,
			      (unsigned long long)es.record_bytes, (unsigned long long)sent_device);
		return -EPROTO;
	}
	sh->acked = true;
	return 0;
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

/* What a failed send on the session says: a peer that went away, by name. */
static void session_failed(struct outgoing *g, int err)
{
	if (err == -EPIPE || err == -ECONNRESET)
		outgoing_fail(g, "the destination's service: it closed the session (%s)",
			      strerror(-err));
	else
		outgoing_fail(g, "the session to %s: %s", g->o->dest, strerror(-err));
}

/* The parser stopped: QEMU's stream was refused, or the encoder (or the
 * session under it) failed. */
static void stream_failed(struct outgoing *g, struct qstream_parser *p,
			  struct qsrec_encoder *enc, struct xport *x)
{
	if (qstream_parser_error(p) != QSTREAM_E_CONSUMER)
		outgoing_fail(g, "QEMU's stream: %s", qstream_parser_errmsg(p));
	else if (x->err)
		session_failed(g, x->err);
	else
		outgoing_fail(g, "QEMU's stream: %s", qsrec_encoder_errmsg(enc));
}

static void outgoing_count(struct outgoing *g, struct qstream_parser *p,
			   struct qsrec_encoder *enc, struct xport *x, size_t len)
{
	const struct qstream_stats *s = qstream_parser_stats(p);
	struct qsrec_enc_stats es;

	qsrec_encoder_stats(enc, &es);
	pthread_mutex_lock(&g->lock);
	g->stream_bytes += (uint64_t)len;
	g->wire_bytes = x->bytes_sent;
	g->pages = s->pages;
	g->zero_pages = s->zero_pages;
	g->device_bytes = s->device_bytes;
	g->record_bytes = es.record_bytes;
	g->lz4_pages = es.pages[CKPT_ENC_LZ4];
	g->raw_pages = es.pages[CKPT_ENC_RAW];
	pthread_mutex_unlock(&g->lock);
}

/* What the parser hands the encoder, with one check of ours first: a
 * stream without OPEN_RETURN_PATH has no hold point (shut_hold), so its
 * device state, which lets the destination run, never leaves. */
struct stream_check {
	struct outgoing *g;
	struct qsrec_encoder *enc;
	bool rp_open;
};

static int checked_event(void *opaque, const struct qstream_event *ev)
{
	struct stream_check *sc = opaque;

	if (ev->type == QSTREAM_EV_COMMAND && ev->u.command.cmd == QSTREAM_CMD_OPEN_RETURN_PATH)
		sc->rp_open = true;
	if (ev->type == QSTREAM_EV_DEVICE && !sc->rp_open) {
		outgoing_fail(sc->g, "QEMU's stream has no return path (capability return-path "
			      "off): the source could not be held until the destination "
			      "acknowledged");
		return -EPROTO;
	}
	return qsrec_encoder_event(sc->enc, ev);
}

/* The watchdog's bound: no byte from QEMU and no frame from the
 * destination for this long, and the job is given up (a paused source
 * waiting for a stalled destination must not hang). */
static int stall_limit_ms(const struct lvd_outgoing *o)
{
	return o->io_timeout_ms > 0 ? o->io_timeout_ms : 30000;
}

/* The watchdog fired: QEMU's socket closes first (the source QEMU, even
 * one paused in its completion, sees its return path end and runs the
 * guest again), then libvirt aborts its job wherever it waits. */
static void stalled_abort(struct outgoing *g, int q)
{
	struct lv_host *h;
	char err[512];

	shutdown(q, SHUT_RDWR);
	h = lv_open(g->c->uri, err, sizeof(err));
	if (!h || lv_abort_job(h, g->o->name, err, sizeof(err)))
		log_write(LOG_INFO, g->o->name, g->o->job, "after the stall: %s", err);
	lv_close(h);
}

/* QEMU's stream to the session as records and events, and the return path
 * back, until both QEMU closed its end and the destination said END, or
 * something failed. */
static void relay_out(struct outgoing *g, int q, struct xport *x)
{
	static uint8_t buf[LVD_FRAME_MAX];
	struct qsrec_out out = { lvd_send_message, x };
	struct qsrec_enc_opts eo = {
		.guest_name = g->o->name,
		.lz4 = strcmp(g->o->compress, "off") != 0,
		.lz4_auto = strcmp(g->o->compress, "auto") == 0,
	};
	struct stream_check sc = { .g = g, .enc = qsrec_encoder_new(&out, &eo) };
	struct qsrec_encoder *enc = sc.enc;
	struct qstream_parser *p = enc ? qstream_parser_new(checked_event, &sc) : NULL;
	struct shut_hold sh = { 0 };
	struct qstream_rp_parser *rp = qstream_rp_parser_new(src_rp, &sh);
	bool q_eof = false, dest_end = false;
	double last_progress = lvd_now();

	if (!p || !rp) {
		outgoing_fail(g, "out of memory");
		goto out;
	}
	while (!(q_eof && dest_end) && !outgoing_failed(g)) {
		struct pollfd pfd[2] = {
			{ .fd = q_eof ? -1 : q, .events = POLLIN },
			{ .fd = xport_fd(x), .events = POLLIN },
		};
		int n;

		if (xport_poll_in(x, 0) > 0) {
			uint32_t type, len;
			int ret = lvd_frame_head(x, false, &type, &len);
			bool seen_before = sh.seen;
			size_t give;

			if (!ret && len)
				ret = xport_recv_exact(x, buf, len);
			if (ret) {
				outgoing_fail(g, "the destination's service: %s",
					      lvd_frame_error(ret, "it closed the session"));
				break;
			}
			last_progress = lvd_now();
			if (type == LVD_FRAME_ABORT) {
				outgoing_fail(g, "the destination gave up: %.*s", (int)len, buf);
				break;
			}
			if (type == LVD_FRAME_END) {
				dest_end = true;
				continue;
			}
			if (type == LVD_FRAME_ACK) {
				if (shut_hold_ack(g, &sh, buf, p, enc))
					break;
				give = sh.n_held;
				memcpy(buf, sh.held, give);
			} else {
				pthread_mutex_lock(&g->lock);
				g->rp_bytes += len;
				pthread_mutex_unlock(&g->lock);
				if (qstream_rp_parser_feed(rp, buf, len)) {
					outgoing_fail(g, "the destination QEMU's return path: %s",
						      qstream_rp_parser_errmsg(rp));
					break;
				}
				give = shut_hold_take(&sh, seen_before, buf, len);
			}
			/* a source QEMU that closed needs no more answers */
			if (!q_eof && give) {
				ret = lvd_write_all(q, buf, give);
				if (ret && ret != -EPIPE && ret != -ECONNRESET) {
					outgoing_fail(g, "writing QEMU's return path: %s",
						      strerror(-ret));
					break;
				}
			}
			continue;
		}
		if (lvd_now() - last_progress > stall_limit_ms(g->o) / 1000.0) {
			/* after the ACK the domain is the destination's: only stop waiting */
			if (sh.acked)
				break;
			outgoing_fail(g, "no progress for %d ms: the destination stalls (%s); "
				      "the migration is aborted", stall_limit_ms(g->o),
				      sh.seen ? "its QEMU loaded the stream, its service never "
				      "acknowledged" : "QEMU's stream or its return path stands still");
			pthread_mutex_lock(&g->lock);
			g->stalled = true;
			pthread_mutex_unlock(&g->lock);
			stalled_abort(g, q);
			break;
		}
		n = poll(pfd, 2, 200);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			outgoing_fail(g, "poll: %s", strerror(errno));
			break;
		}
		if (n == 0) {
			/* libvirt ended its job with QEMU's stream still open */
			if (atomic_load(&g->mig_done) && g->mig_ret && !q_eof)
				break;
			continue;
		}
		if (!q_eof && pfd[0].revents) {
			ssize_t len = read(q, buf, sizeof(buf));

			if (len < 0 && errno == EINTR)
				continue;
			if (len < 0 && errno != ECONNRESET) {
				outgoing_fail(g, "reading QEMU's stream: %s", strerror(errno));
				break;
			}
			last_progress = lvd_now();
			if (len <= 0) {
				q_eof = true;
				if (qstream_parser_finish(p)) {
					stream_failed(g, p, enc, x);
					break;
				}
				if (lvd_frame_send(x, LVD_FRAME_END, NULL, 0)) {
					session_failed(g, x->err);
					break;
				}
				continue;
			}
			/* the encoder sends what the parser hands it */
			if (qstream_parser_feed(p, buf, (size_t)len)) {
				stream_failed(g, p, enc, x);
				break;
			}
			outgoing_count(g, p, enc, x, (size_t)len);
		}
	}
	if (outgoing_failed(g)) {
		char why[LVD_WHY_MAX];

		/* QEMU first: its migration fails now, not after the ABORT's send */
		shutdown(q, SHUT_RDWR);
		pthread_mutex_lock(&g->lock);
		snprintf(why, sizeof(why), "%.500s", g->error);
		pthread_mutex_unlock(&g->lock);
		lvd_frame_send(x, LVD_FRAME_ABORT, why, (uint32_t)strlen(why));
	}
	pthread_mutex_lock(&g->lock);
	g->wire_bytes = x->bytes_sent;
	pthread_mutex_unlock(&g->lock);
out:
	qstream_parser_free(p);
	qsrec_encoder_free(enc);
	qstream_rp_parser_free(rp);
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
	if (fd < 0 || peer_dial(&o->peer, fd, host, "libvirt-in", o->name, o->job, NULL, 0, false,
				false, &ps, err, sizeof(err))) {
		outgoing_fail(&g, "%s", err);
		goto end;
	}
	ps.control->idle_ok = true;	/* libvirt's Prepare may take a while */
	if (o->bandwidth) {
		static struct xport_bucket bucket;

		xport_bucket_init(&bucket, o->bandwidth);
		ps.control->bucket = &bucket;
	}
	log_write(LOG_INFO, o->name, o->job, "migrating libvirt domain %s to %s (libvirt at %s) "
		"as job %s, QEMU's stream through %s", o->name, o->dest, o->dest_uri, o->job,
		o->sock);
	if (pthread_create(&mt, NULL, migrate_thread, &g)) {
		outgoing_fail(&g, "pthread_create: %s", strerror(errno));
		peer_session_close(&ps);
		goto end;
	}
	have_mt = true;
	have_stt = pthread_create(&stt, NULL, stats_thread, &g) == 0;
	q = accept_qemu(&g, l);
	close(l);
	l = -1;
	unlink(o->sock);
	/* the waiting is over: a frame begun is bounded by the io timeout */
	ps.control->idle_ok = false;
	if (q >= 0) {
		relay_out(&g, q, ps.control);
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
