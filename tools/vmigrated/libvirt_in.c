/*
 * The destination's job for a libvirt domain (lvd_run_incoming, in the
 * child that accepted the source's "libvirt-in" hello): the frames from
 * the source through the record decoder and the stream writer into the
 * socket the destination QEMU listens on, and QEMU's return path back.
 * The records come on the session, or over the data channels where the
 * session's ON_DATA frames say (libvirt_frames.c).
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "ckpt_wire.h"
#include "fault.h"
#include "libvirt_jobs_int.h"
#include "log.h"
#include "qemu_stream.h"
#include "qemu_stream_records.h"

#define LVD_QEMU_SNDBUF	(4 << 20)	/* bytes written ahead into the destination QEMU:
					 * more only lengthens the downtime */

struct incoming {
	int q;
	struct qstream_writer *w;
	uint64_t bytes;
	const char *path;		/* the destination QEMU's socket */
	char err[400];			/* why it could not be reached */
};

static int connect_qemu(const char *path, char *err, size_t errlen);

/* Why the decoder stopped, or the writer when only a flush failed. */
static const char *decode_error_text(const struct qsrec_decoder *d,
					    const struct qstream_writer *w)
{
	return qstream_writer_error(w) && !strcmp(qsrec_decoder_errmsg(d), "no error") ?
	       qstream_writer_errmsg(w) : qsrec_decoder_errmsg(d);
}

/* The first bytes the writer has for QEMU open its socket: a stream the
 * parser rejects at once never reaches QEMU at all. */
static int to_qemu(void *opaque, const void *buf, size_t len)
{
	struct incoming *in = opaque;

	if (in->q < 0 && (in->q = connect_qemu(in->path, in->err, sizeof(in->err))) < 0)
		return -EIO;
	in->bytes += len;
	return lvd_write_all(in->q, buf, len);
}

/* The destination QEMU's socket: libvirt's Prepare made it listen before
 * the source QEMU sent a byte, so it is there; a few tries for a slow one. */
static int connect_qemu(const char *path, char *err, size_t errlen)
{
	struct sockaddr_un a;
	int s;

	if (lvd_unix_addr(&a, path)) {
		snprintf(err, errlen, "socket path too long: %s", path);
		return -1;
	}
	for (int i = 0; i < 50; i++) {
		s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (s < 0)
			break;
		if (connect(s, (struct sockaddr *)&a, sizeof(a)) == 0) {
			/* room to write ahead while QEMU loads what it has: decoding
			 * here and loading there overlap instead of taking turns */
			int room = LVD_QEMU_SNDBUF;

			if (setsockopt(s, SOL_SOCKET, SO_SNDBUFFORCE, &room, sizeof(room)))
				setsockopt(s, SOL_SOCKET, SO_SNDBUF, &room, sizeof(room));
			return s;
		}
		close(s);
		if (errno != ENOENT && errno != ECONNREFUSED)
			break;
		usleep(100000);
	}
	snprintf(err, errlen, "the destination QEMU's socket %s: %s", path, strerror(errno));
	return -1;
}

/* Why applying a message failed: refused input (-EBADMSG, or -EINVAL from
 * the writer's rules) is the source's; a failed write is QEMU's. */
static void stream_error(const struct incoming *in, const struct qsrec_decoder *dec, int ret,
			 char *err, size_t errlen)
{
	snprintf(err, errlen, "%s: %s", in->err[0] ? "the destination QEMU" :
		 ret == -EBADMSG || ret == -EINVAL ? "the source's stream" : "the destination QEMU",
		 in->err[0] ? in->err : decode_error_text(dec, in->w));
}

/* The data channels, and whose turn it is: the k-th record announced
 * comes on channel k mod n. */
struct data_in {
	struct xport **x;
	unsigned n;
	uint64_t next;
};

/* The count records an ON_DATA announced, each from its channel in turn,
 * applied in that order. 0, or the failure in err; *broke when a channel
 * itself failed (not what it carried). */
static int take_announced(struct data_in *di, struct incoming *in, struct qsrec_decoder *dec,
			  uint32_t count, bool *broke, char *err, size_t errlen)
{
	if (!di->n || !count) {
		snprintf(err, errlen, "the source's service: %s", !di->n ?
			 "records announced on data channels it did not open" :
			 "an announcement of no records");
		return -EBADMSG;
	}
	while (count--) {
		unsigned i = (unsigned)(di->next++ % di->n);
		uint32_t type, len;
		uint8_t *space = NULL;
		int ret = lvd_frame_head(di->x[i], true, &type, &len);

		if (!ret && type != LVD_FRAME_RECORDS)
			ret = -EBADMSG;
		if (!ret && !(space = qsrec_decoder_space(dec, QSREC_MSG_RECORDS, len)))
			ret = -ENOMEM;
		if (!ret)
			ret = xport_recv_exact(di->x[i], space, len);
		if (ret) {
			snprintf(err, errlen, "the source's data channel %u: %s", i + 1,
				 lvd_frame_error(ret, "it closed before the stream ended"));
			*broke = ret != -EBADMSG && ret != -ENOMEM;
			return ret;
		}
		ret = qsrec_decoder_message(dec, QSREC_MSG_RECORDS, len);
		if (!ret)
			ret = qstream_writer_flush(in->w);
		if (ret) {
			stream_error(in, dec, ret, err, errlen);
			return ret;
		}
	}
	return 0;
}

/* Read a frame's payload of len bytes through buf and drop it; 0 or < 0. */
static int skip_payload(struct xport *x, uint8_t *buf, uint32_t len)
{
	while (len) {
		uint32_t n = len < LVD_FRAME_MAX ? len : LVD_FRAME_MAX;

		if (xport_recv_exact(x, buf, n))
			return -EIO;
		len -= n;
	}
	return 0;
}

/* A data channel broke: the source may have said why on the session (its
 * ABORT comes before it shuts the channels); wait a little for it. */
static void source_reason(struct xport *x, uint8_t *buf, char *err, size_t errlen)
{
	double until = lvd_now() + 2;

	while (lvd_now() < until && xport_poll_in(x, 200) > 0) {
		uint32_t type, len;

		if (lvd_frame_head(x, true, &type, &len))
			return;
		if (type == LVD_FRAME_ABORT) {
			if (len && xport_recv_exact(x, buf, len) == 0)
				snprintf(err, errlen, "the source gave up: %.*s", (int)len, buf);
			return;
		}
		if (skip_payload(x, buf, len))
			return;
	}
}

/* The destination QEMU's SHUT, seen on its return path on the way back. */
struct dst_shut {
	bool seen;
	uint32_t value;			/* 0: QEMU loaded the whole stream */
};

static int dst_rp(void *opaque, const struct qstream_rp_msg *m)
{
	struct dst_shut *ds = opaque;

	if (m->type == QSTREAM_RP_SHUT) {
		ds->seen = true;
		ds->value = m->value;
	}
	return 0;
}

/* The ACK after QEMU's SHUT (libvirt_frames.c): 0, or why there is none
 * in err. Without it the source keeps the domain. */
static int send_ack(struct xport *x, const struct dst_shut *ds, const struct qsrec_decoder *dec,
		    const struct qstream_writer *w, char *err, size_t errlen)
{
	uint64_t v[2] = { qsrec_decoder_record_bytes(dec), qstream_writer_stats(w)->device_bytes };
	uint8_t ack[LVD_ACK_LEN];

	if (ds->value) {
		snprintf(err, errlen, "the destination QEMU failed to load the stream (its SHUT "
			 "says %u)", ds->value);
		return -EIO;
	}
	if (!qsrec_decoder_committed(dec)) {
		snprintf(err, errlen, "the destination QEMU ended its stream before the records' "
			 "COMMIT");
		return -EPROTO;
	}
	if (fault_point("dst-exit-before-ack"))
		_exit(1);	/* tests: a destination that dies after the last byte */
	if (fault_point("dst-stop-before-ack"))
		raise(SIGSTOP);	/* tests: a destination that stalls there */
	for (int i = 0; i < LVD_ACK_LEN; i++)
		ack[i] = (uint8_t)(v[i / 8] >> (8 * (i % 8)));
	if (lvd_frame_send(x, LVD_FRAME_ACK, ack, LVD_ACK_LEN)) {
		snprintf(err, errlen, "the session back to the source: %s", strerror(-x->err));
		return x->err;
	}
	return 0;
}

/* After an ABORT, read what the source still sends until it reads the
 * ABORT and closes (at most a few seconds): closing with its frames
 * unread would reset the connection, and the reset can discard the ABORT
 * before the source reads why. */
static void drain_source(struct xport *x, uint8_t *buf)
{
	double until = lvd_now() + 5;

	while (lvd_now() < until && xport_poll_in(x, 200) > 0) {
		uint32_t type, len;

		if (lvd_frame_head(x, true, &type, &len))
			return;
		if (skip_payload(x, buf, len))
			return;
	}
}

_Noreturn void lvd_run_incoming(const char *sock_dir, const char *jobs_dir,
				const struct peer_config *pc, struct xport *x,
				const struct peer_hello *h)
{
	static uint8_t buf[LVD_FRAME_MAX];
	struct incoming in = { .q = -1 };
	struct qstream_sink sink = { to_qemu, &in };
	struct qsrec_decoder *dec = NULL;
	struct dst_shut ds = { 0 };
	struct qstream_rp_parser *rp = qstream_rp_parser_new(dst_rp, &ds);
	struct peer_session ps;
	struct data_in di = { 0 };
	char path[400], err[600] = "", title[16];
	bool src_end = false, q_eof = false;
	double started = lvd_now();

	snprintf(title, sizeof(title), "vmg:lv-in");
	prctl(PR_SET_NAME, title);
	if (!lvd_safe_word(h->job) || !lvd_safe_word(h->name)) {
		peer_answer(x, false, "a libvirt-in hello with a job or name that is not a plain word");
		log_write(LOG_WARNING, NULL, NULL, "refused a libvirt migration: bad job name");
		_exit(1);
	}
	snprintf(path, sizeof(path), "%s/qemu-%s.sock", sock_dir, h->job);
	in.path = path;
	in.w = qstream_writer_new(&sink);
	dec = in.w ? qsrec_decoder_new(in.w) : NULL;
	if (!dec || !rp) {
		peer_answer(x, false, "out of memory");
		_exit(1);
	}
	/* yes, and the data channels the source asked for */
	if (peer_welcome(pc, x, h->channels, h->rdma, false, CKPT_VERSION_MINOR, &ps, err,
			 sizeof(err))) {
		log_write(LOG_WARNING, h->name, h->job, "incoming libvirt job %s: %s", h->job, err);
		_exit(1);
	}
	di.x = ps.data;
	di.n = ps.nr_data;
	x->idle_ok = true;	/* libvirt's Prepare here, then the stream */
	log_write(LOG_INFO, h->name, h->job, "incoming libvirt domain %s (job %s): its stream "
		"goes into %s, its pages over %u data channel%s%s", h->name, h->job, path, di.n,
		di.n == 1 ? "" : "s", h->rdma ? " (RDMA)" : "");
	{
		struct json_object *o = json_object_new_object();

		json_object_object_add(o, "job", json_object_new_string(h->job));
		json_object_object_add(o, "guest", json_object_new_string(h->name));
		json_object_object_add(o, "kind", json_object_new_string("libvirt"));
		json_object_object_add(o, "direction", json_object_new_string("incoming"));
		json_object_object_add(o, "pid", json_object_new_int(getpid()));
		json_object_object_add(o, "done", json_object_new_boolean(0));
		lvd_write_status(jobs_dir, h->job, o);
		json_object_put(o);
	}
	while (!(src_end && q_eof) && !err[0]) {
		struct pollfd pfd[2] = {
			{ .fd = in.q < 0 || q_eof ? -1 : in.q, .events = POLLIN },
			{ .fd = src_end ? -1 : xport_fd(x), .events = POLLIN },
		};
		int n;

		if (!src_end && xport_poll_in(x, 0) > 0) {
			uint32_t type, len;
			int ret = lvd_frame_head(x, true, &type, &len);
			uint8_t *space = buf;

			if (!ret && (type == LVD_FRAME_EVENT || type == LVD_FRAME_RECORDS)) {
				space = qsrec_decoder_space(dec, type == LVD_FRAME_EVENT ?
							    QSREC_MSG_EVENT : QSREC_MSG_RECORDS, len);
				if (!space)
					ret = -ENOMEM;
			}
			if (!ret && len)
				ret = xport_recv_exact(x, space, len);
			if (ret) {
				snprintf(err, sizeof(err), "the source's service: %s", lvd_frame_error(
					 ret, "it closed the session before the stream ended"));
				break;
			}
			if (type == LVD_FRAME_ABORT) {
				snprintf(err, sizeof(err), "the source gave up: %.*s", (int)len, buf);
				break;
			}
			if (type == LVD_FRAME_ON_DATA) {
				uint32_t count = buf[0] | buf[1] << 8 | buf[2] << 16 |
						 (uint32_t)buf[3] << 24;

				bool broke = false;

				if (take_announced(&di, &in, dec, count, &broke, err, sizeof(err))) {
					if (broke)
						source_reason(x, buf, err, sizeof(err));
					break;
				}
				continue;
			}
			if (type == LVD_FRAME_END) {
				src_end = true;
				ret = qsrec_decoder_finish(dec);
			} else {
				ret = qsrec_decoder_message(dec, type == LVD_FRAME_EVENT ?
							    QSREC_MSG_EVENT : QSREC_MSG_RECORDS, len);
				if (!ret)
					ret = qstream_writer_flush(in.w);
			}
			if (ret)
				stream_error(&in, dec, ret, err, sizeof(err));
			if (src_end && !err[0]) {
				if (in.q >= 0)
					shutdown(in.q, SHUT_WR);
				else
					q_eof = true;
			}
			continue;
		}
		n = poll(pfd, 2, 1000);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			snprintf(err, sizeof(err), "poll: %s", strerror(errno));
			break;
		}
		if (in.q >= 0 && !q_eof && pfd[0].revents) {
			ssize_t len = read(in.q, buf, sizeof(buf));

			if (len < 0 && errno == EINTR)
				continue;
			if (len <= 0) {
				q_eof = true;
				if (!src_end && !qsrec_decoder_device_begun(dec))
					snprintf(err, sizeof(err), "the destination QEMU closed "
						 "before the stream ended");
				continue;
			}
			bool seen_before = ds.seen;

			if (qstream_rp_parser_feed(rp, buf, (size_t)len)) {
				snprintf(err, sizeof(err), "the destination QEMU's return path: %s",
					 qstream_rp_parser_errmsg(rp));
				continue;
			}
			if (lvd_frame_send(x, LVD_FRAME_DATA, buf, (uint32_t)len))
				snprintf(err, sizeof(err), "the session back to the source: %s",
					 strerror(-x->err));
			else if (ds.seen && !seen_before)
				send_ack(x, &ds, dec, in.w, err, sizeof(err));
		}
	}
	if (err[0]) {
		lvd_frame_send(x, LVD_FRAME_ABORT, err, (uint32_t)strnlen(err, LVD_WHY_MAX));
		if (!src_end)
			drain_source(x, buf);
	} else {
		lvd_frame_send(x, LVD_FRAME_END, NULL, 0);
	}
	if (in.q >= 0)
		close(in.q);	/* on a failure the destination QEMU fails its incoming */
	/* QEMU listens once: connected to or gone (a cancelled job), its
	 * socket file is of no more use, and it lies in our directory */
	unlink(path);
	{
		struct json_object *o = json_object_new_object(), *st = json_object_new_object();

		json_object_object_add(o, "job", json_object_new_string(h->job));
		json_object_object_add(o, "guest", json_object_new_string(h->name));
		json_object_object_add(o, "kind", json_object_new_string("libvirt"));
		json_object_object_add(o, "direction", json_object_new_string("incoming"));
		json_object_object_add(o, "done", json_object_new_boolean(1));
		json_object_object_add(st, "status", json_object_new_string(err[0] ? "failed" :
									    "completed"));
		json_object_object_add(st, "error", json_object_new_string(err));
		json_object_object_add(st, "total_time_ms", json_object_new_int64(
			(int64_t)((lvd_now() - started) * 1000)));
		json_object_object_add(st, "transferred_bytes", json_object_new_int64(
			(int64_t)x->bytes_received));
		json_object_object_add(st, "qemu_stream_bytes", json_object_new_int64(
			(int64_t)in.bytes));
		json_object_object_add(st, "record_bytes", json_object_new_int64(
			(int64_t)qsrec_decoder_record_bytes(dec)));
		json_object_object_add(o, "stats", st);
		lvd_write_status(jobs_dir, h->job, o);
		json_object_put(o);
	}
	if (err[0])
		log_write(LOG_WARNING, h->name, h->job, "incoming libvirt job %s failed: %s", h->job,
			err);
	else
		log_write(LOG_INFO, h->name, h->job, "incoming libvirt job %s: %llu bytes of QEMU's "
			"stream written", h->job, (unsigned long long)in.bytes);
	peer_session_close(&ps);	/* the session x and the data channels */
	qstream_rp_parser_free(rp);
	qsrec_decoder_free(dec);
	qstream_writer_free(in.w);
	_exit(err[0] ? 1 : 0);
}
