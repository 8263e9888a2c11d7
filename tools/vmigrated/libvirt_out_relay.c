/*
 * The source's relay for a libvirt domain (libvirt_out.h): QEMU's stream
 * out as records and events, the destination QEMU's return path back, the
 * hold point and the watchdog. Two threads, so that reading QEMU and
 * encoding overlap with encrypting and sending:
 *
 *   QEMU --socket--> read-ahead --> reader: parser -> checks -> encoder --frame queue-->
 *   sender: frames onto the session (TLS); frames back: return path -> QEMU
 *
 * The reader owns the parser and the encoder, the sender owns the session
 * (TLS allows one thread at a time on it) and writes the return path into
 * QEMU's socket, whose other direction the reader reads. With data
 * channels the reader deals the RECORDS frames over them instead
 * (libvirt_out_channels.c), and tells the destination on the session, in
 * the stream's order, how many records to take from them (ON_DATA).
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "fault.h"
#include "frame_queue.h"
#include "libvirt_out.h"
#include "log.h"
#include "qemu_stream.h"
#include "qemu_stream_records.h"
#include "read_ahead.h"

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
			 uint64_t records_sent, uint64_t device_sent)
{
	uint64_t records = le64_at(buf), device = le64_at(buf + 8);

	if (!sh->seen || sh->value || sh->acked) {
		outgoing_fail(g, "the destination's service: an acknowledgement %s",
			      sh->acked ? "twice" : sh->seen ? "of a QEMU that failed to load" :
			      "before its QEMU's SHUT");
		return -EPROTO;
	}
	if (records != records_sent || device != device_sent) {
		outgoing_fail(g, "the destination acknowledged %llu bytes of records and %llu of "
			      "device state, %llu and %llu were sent",
			      (unsigned long long)records, (unsigned long long)device,
			      (unsigned long long)records_sent, (unsigned long long)device_sent);
		return -EPROTO;
	}
	sh->acked = true;
	return 0;
}

/* The reader's side: QEMU's socket through the parser and the encoder
 * into the frame queue. */
struct reader {
	struct outgoing *g;
	int q;
	struct lvd_fq *fq;
	struct qsrec_encoder *enc;
	struct qstream_parser *p;
	struct lvd_read_ahead *ra;	/* QEMU's socket, read ahead */
	struct lvd_data_out *data;	/* NULL: records go on the session too */
	unsigned not_announced;		/* records dealt since the last ON_DATA */
	bool rp_open;			/* QEMU opened its return path */
	uint64_t queued;		/* bytes queued, for the fault point (reader's) */
	_Atomic uint64_t progress_ns;	/* the last byte read from QEMU */
	atomic_bool eof;		/* QEMU closed its end, the END frame is queued */
	atomic_bool stopped;		/* the reader ended (at eof, or failed) */
	atomic_bool told_to_stop;	/* the sender ended first: what breaks now is no news */
};

static uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ON_DATA onto the session: the records dealt since the last one come
 * here, before whatever the session carries next. */
static int announce_records(struct reader *r)
{
	uint8_t count[4];
	struct iovec iov = { count, sizeof(count) };

	if (!r->not_announced)
		return 0;
	for (int i = 0; i < 4; i++)
		count[i] = (uint8_t)(r->not_announced >> (8 * i));
	r->not_announced = 0;
	return lvd_fq_push(r->fq, LVD_FRAME_ON_DATA, &iov, 1);
}

/* The encoder's messages as frames, into the queues (qsrec_out's send). */
static int queue_message(void *opaque, unsigned kind, const struct iovec *iov, int iovcnt)
{
	struct reader *r = opaque;
	uint32_t type = kind == QSREC_MSG_EVENT ? LVD_FRAME_EVENT : LVD_FRAME_RECORDS;
	int ret;

	if (type == LVD_FRAME_RECORDS)
		fault_corrupt_batch(iov, iovcnt, r->queued, 4u << 20);
	if (type == LVD_FRAME_RECORDS && r->data) {
		ret = lvd_data_out_push(r->data, iov, iovcnt);
		/* announced every few records, not only at the next event: the
		 * destination reads a channel only for announced records, and a
		 * long section would fill every queue before its end */
		if (!ret && ++r->not_announced >= LVD_ON_DATA_EVERY * lvd_data_out_count(r->data))
			ret = announce_records(r);
	} else {
		ret = announce_records(r);
		if (!ret)
			ret = lvd_fq_push(r->fq, type, iov, iovcnt);
	}
	for (int i = 0; !ret && i < iovcnt; i++)
		r->queued += iov[i].iov_len;
	return ret;
}

/* What the parser hands the encoder, with one check of ours first: a
 * stream without OPEN_RETURN_PATH has no hold point (shut_hold), so its
 * device state, which lets the destination run, never leaves. */
static int checked_event(void *opaque, const struct qstream_event *ev)
{
	struct reader *r = opaque;

	if (ev->type == QSTREAM_EV_COMMAND && ev->u.command.cmd == QSTREAM_CMD_OPEN_RETURN_PATH)
		r->rp_open = true;
	if (ev->type == QSTREAM_EV_DEVICE && !r->rp_open) {
		outgoing_fail(r->g, "QEMU's stream has no return path (capability return-path "
			      "off): the source could not be held until the destination "
			      "acknowledged");
		return -EPROTO;
	}
	return qsrec_encoder_event(r->enc, ev);
}

/* The parser stopped: QEMU's stream was refused, or the encoder failed,
 * or the sender gave up (its reason is already the job's). */
static void stream_failed(struct reader *r)
{
	if (atomic_load(&r->told_to_stop))
		return;
	if (qstream_parser_error(r->p) != QSTREAM_E_CONSUMER)
		outgoing_fail(r->g, "QEMU's stream: %s", qstream_parser_errmsg(r->p));
	else
		outgoing_fail(r->g, "QEMU's stream: %s", qsrec_encoder_errmsg(r->enc));
}

static void reader_count(struct reader *r, size_t len)
{
	const struct qstream_stats *s = qstream_parser_stats(r->p);
	struct qsrec_enc_stats es;

	qsrec_encoder_stats(r->enc, &es);
	pthread_mutex_lock(&r->g->lock);
	r->g->stream_bytes += (uint64_t)len;
	r->g->pages = s->pages;
	r->g->zero_pages = s->zero_pages;
	r->g->device_bytes = s->device_bytes;
	r->g->record_bytes = es.record_bytes;
	r->g->lz4_pages = ckpt_enc_compressed_pages(es.pages);	/* LZ4 or zstd */
	r->g->raw_pages = es.pages[CKPT_ENC_RAW];
	pthread_mutex_unlock(&r->g->lock);
}

static void *reader_thread(void *opaque)
{
	struct reader *r = opaque;

	while (!outgoing_failed(r->g)) {
		const uint8_t *buf;
		ssize_t len = lvd_read_ahead_next(r->ra, &buf);

		if (len < 0) {
			if (!atomic_load(&r->told_to_stop))
				outgoing_fail(r->g, "reading QEMU's stream: %s", strerror((int)-len));
			break;
		}
		atomic_store(&r->progress_ns, mono_ns());
		if (len <= 0) {
			if (qstream_parser_finish(r->p)) {
				stream_failed(r);
				break;
			}
			if (announce_records(r) == 0 && lvd_fq_push(r->fq, LVD_FRAME_END, NULL, 0) == 0)
				atomic_store(&r->eof, true);
			break;
		}
		/* the encoder queues what the parser hands it */
		if (qstream_parser_feed(r->p, buf, (size_t)len)) {
			stream_failed(r);
			break;
		}
		reader_count(r, (size_t)len);
	}
	atomic_store(&r->stopped, true);
	lvd_fq_wake(r->fq);
	return NULL;
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

/* The watchdog's bound: no byte from QEMU, no frame sent and none from
 * the destination for this long, and the job is given up (a paused
 * source waiting for a stalled destination must not hang; a send that
 * stands still fails by the session's own io timeout). */
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

/* The sender's state: the session, what it sent, the hold point. */
struct sender {
	struct outgoing *g;
	int q;
	struct xport *x;
	struct qstream_rp_parser *rp;
	struct shut_hold sh;
	struct lvd_data_out *data;
	uint64_t records_sent, device_sent;	/* what an ACK must count (with data's) */
	uint64_t progress_ns;			/* the last frame sent or received */
	bool dest_end;
};

/* One frame from the destination: 0 to go on, -1 when the relay ends
 * (the failure, if any, set). */
static int handle_frame(struct sender *s, uint8_t *buf)
{
	struct outgoing *g = s->g;
	bool seen_before = s->sh.seen;
	uint32_t type, len;
	size_t give;
	int ret = lvd_frame_head(s->x, false, &type, &len);

	if (!ret && len)
		ret = xport_recv_exact(s->x, buf, len);
	if (ret) {
		outgoing_fail(g, "the destination's service: %s",
			      lvd_frame_error(ret, "it closed the session"));
		return -1;
	}
	s->progress_ns = mono_ns();
	switch (type) {
	case LVD_FRAME_ABORT:
		outgoing_fail(g, "the destination gave up: %.*s", (int)len, buf);
		return -1;
	case LVD_FRAME_END:
		s->dest_end = true;
		return 0;
	case LVD_FRAME_ACK:
		if (shut_hold_ack(g, &s->sh, buf, s->records_sent +
				  lvd_data_out_records_sent(s->data), s->device_sent))
			return -1;
		give = s->sh.n_held;
		memcpy(buf, s->sh.held, give);
		break;
	default:	/* DATA */
		pthread_mutex_lock(&g->lock);
		g->rp_bytes += len;
		pthread_mutex_unlock(&g->lock);
		if (qstream_rp_parser_feed(s->rp, buf, len)) {
			outgoing_fail(g, "the destination QEMU's return path: %s",
				      qstream_rp_parser_errmsg(s->rp));
			return -1;
		}
		give = shut_hold_take(&s->sh, seen_before, buf, len);
	}
	/* a source QEMU that closed needs no more answers */
	ret = give ? lvd_write_all(s->q, buf, give) : 0;
	if (ret && ret != -EPIPE && ret != -ECONNRESET) {
		outgoing_fail(g, "writing QEMU's return path: %s", strerror(-ret));
		return -1;
	}
	return 0;
}

/* One queued frame onto the session, counted for the ACK: 0 or -1. */
static int send_frame(struct sender *s, const struct lvd_fq_slot *f)
{
	if (lvd_frame_send(s->x, f->type, f->data, f->len)) {
		session_failed(s->g, s->x->err);
		return -1;
	}
	/* a send held back long by --bandwidth is progress too */
	s->progress_ns = mono_ns();
	if (f->type == LVD_FRAME_RECORDS)
		s->records_sent += f->len;
	else if (f->type == LVD_FRAME_EVENT && f->len >= 4 && f->data[0] == QSREC_EV_DEVICE &&
		 !f->data[1] && !f->data[2] && !f->data[3])
		s->device_sent += f->len - 4;
	return 0;
}

/* Bytes on every connection of the session. */
static void count_wire(struct outgoing *g, struct xport *x, struct lvd_data_out *data)
{
	uint64_t sent = x->bytes_sent + lvd_data_out_bytes_sent(data);

	pthread_mutex_lock(&g->lock);
	g->wire_bytes = sent;
	pthread_mutex_unlock(&g->lock);
}

void lvd_relay_out(struct outgoing *g, int q, struct peer_session *ps)
{
	static uint8_t buf[LVD_FRAME_MAX];
	struct xport *x = ps->control;
	struct lvd_fq fq;
	struct reader r = { .g = g, .q = q, .fq = &fq };
	struct qsrec_out out = { queue_message, &r };
	struct qsrec_enc_opts eo = {
		.guest_name = g->o->name,
		.lz4 = strcmp(g->compress, "off") != 0,
		.lz4_auto = strcmp(g->compress, "auto") == 0,
		.zstd = strcmp(g->compress, "zstd") == 0,
		.queued = true,
	};
	struct sender s = { .g = g, .q = q, .x = x, .progress_ns = mono_ns() };
	uint64_t limit_ns = (uint64_t)stall_limit_ms(g->o) * 1000000u;
	bool end_sent = false, have_reader = false;
	pthread_t rt;

	if (lvd_fq_init(&fq)) {
		outgoing_fail(g, "eventfd: %s", strerror(errno));
		return;
	}
	atomic_store(&r.progress_ns, mono_ns());
	if (ps->nr_data && !(r.data = s.data = lvd_data_out_start(g, ps->data, ps->nr_data))) {
		outgoing_fail(g, "the data channels' threads: %s", strerror(errno));
		goto out;
	}
	r.enc = qsrec_encoder_new(&out, &eo);
	r.p = r.enc ? qstream_parser_new(checked_event, &r) : NULL;
	s.rp = qstream_rp_parser_new(src_rp, &s.sh);
	if (!r.p || !s.rp) {
		outgoing_fail(g, "out of memory");
		goto out;
	}
	if (!(r.ra = lvd_read_ahead_start(q))) {
		outgoing_fail(g, "reading QEMU's stream ahead: %s", strerror(errno));
		goto out;
	}
	if (pthread_create(&rt, NULL, reader_thread, &r)) {
		outgoing_fail(g, "pthread_create: %s", strerror(errno));
		goto out;
	}
	have_reader = true;
	while (!(end_sent && s.dest_end) && !outgoing_failed(g)) {
		struct pollfd pfd[2] = {
			{ .fd = xport_fd(x), .events = POLLIN },
			{ .fd = fq.wake_fd, .events = POLLIN },
		};
		const struct lvd_fq_slot *f;
		uint64_t progress, now;
		int n;

		if (xport_poll_in(x, 0) > 0) {
			if (handle_frame(&s, buf))
				break;
			continue;
		}
		lvd_fq_drain_wake(&fq);
		if ((f = lvd_fq_peek(&fq))) {
			if (send_frame(&s, f))
				break;
			end_sent |= f->type == LVD_FRAME_END;
			lvd_fq_pop(&fq);
			count_wire(g, x, s.data);
			continue;
		}
		/* the reader stopped short of QEMU's end: its failure is the job's */
		if (atomic_load(&r.stopped) && !atomic_load(&r.eof))
			break;
		progress = atomic_load(&r.progress_ns);
		if (s.progress_ns > progress)
			progress = s.progress_ns;
		if (lvd_data_out_progress_ns(s.data) > progress)
			progress = lvd_data_out_progress_ns(s.data);
		now = mono_ns();
		if (now > progress && now - progress > limit_ns) {
			/* after the ACK the domain is the destination's: only stop waiting */
			if (s.sh.acked)
				break;
			outgoing_fail(g, "no progress for %d ms: the destination stalls (%s); "
				      "the migration is aborted", stall_limit_ms(g->o),
				      s.sh.seen ? "its QEMU loaded the stream, its service never "
				      "acknowledged" : "QEMU's stream or its return path stands still");
			pthread_mutex_lock(&g->lock);
			g->stalled = true;
			pthread_mutex_unlock(&g->lock);
			stalled_abort(g, q);
			break;
		}
		n = poll(pfd, 2, 200);
		if (n < 0 && errno != EINTR) {
			outgoing_fail(g, "poll: %s", strerror(errno));
			break;
		}
		/* libvirt ended its job with QEMU's stream still open */
		if (n == 0 && atomic_load(&g->mig_done) && g->mig_ret && !atomic_load(&r.eof))
			break;
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
	/* a reader waiting on a full queue or on QEMU ends now; the data
	 * channels break after the ABORT: the destination learns why first */
	atomic_store(&r.told_to_stop, true);
	lvd_fq_cancel(&fq);
	lvd_data_out_cancel(s.data);
	if (have_reader && !atomic_load(&r.stopped))
		shutdown(q, SHUT_RD);
	if (have_reader)
		pthread_join(rt, NULL);
	count_wire(g, x, s.data);
out:
	lvd_read_ahead_stop(r.ra);
	lvd_data_out_stop(s.data);
	qstream_parser_free(r.p);
	qsrec_encoder_free(r.enc);
	qstream_rp_parser_free(s.rp);
	lvd_fq_destroy(&fq);
}
