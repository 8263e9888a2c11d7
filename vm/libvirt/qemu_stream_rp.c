/*
 * QEMU's return path, destination to source: be16 type, be16 length, then
 * the payload. A pre-copy destination sends PONG for each PING and SHUT
 * when it is done; the parser reads those (and RESUME_ACK), refuses the
 * postcopy messages by name, and the encoder writes them back for the
 * source (QEMU-STREAM.md, "Return path").
 */
#include "qemu_stream.h"

#include <errno.h>
#include <stdlib.h>

#include "qemu_stream_int.h"
#include "qemu_stream_wire.h"

struct qstream_rp_parser {
	qstream_rp_fn fn;
	void *opaque;
	struct qs_err err;
	uint8_t buf[QSW_RP_HDR_LEN + 4];
	size_t have, need;
	uint64_t off, msg_off;
	bool shut;
};

__attribute__((format(printf, 3, 4)))
static int rp_reject(struct qstream_rp_parser *rp, enum qstream_error code, const char *fmt, ...)
{
	va_list ap;
	int ret;

	va_start(ap, fmt);
	ret = qs_vfail(&rp->err, code, -EBADMSG, rp->msg_off, fmt, ap);
	va_end(ap);
	return ret;
}

size_t qstream_rp_encode(const struct qstream_rp_msg *m, uint8_t out[QSTREAM_RP_MSG_LEN])
{
	uint16_t type;

	switch (m->type) {
	case QSTREAM_RP_SHUT:
		type = QSW_RP_SHUT;
		break;
	case QSTREAM_RP_PONG:
		type = QSW_RP_PONG;
		break;
	case QSTREAM_RP_RESUME_ACK:
		type = QSW_RP_RESUME_ACK;
		break;
	default:
		return 0;
	}
	qs_put_be16(out, type);
	qs_put_be16(out + 2, 4);
	qs_put_be32(out + 4, m->value);
	return QSTREAM_RP_MSG_LEN;
}

struct qstream_rp_parser *qstream_rp_parser_new(qstream_rp_fn fn, void *opaque)
{
	struct qstream_rp_parser *rp = calloc(1, sizeof(*rp));

	if (!rp)
		return NULL;
	rp->fn = fn;
	rp->opaque = opaque;
	rp->need = QSW_RP_HDR_LEN;
	return rp;
}

void qstream_rp_parser_free(struct qstream_rp_parser *rp)
{
	free(rp);
}

/* A complete header: what may follow it. */
static int rp_header(struct qstream_rp_parser *rp, uint16_t type, uint16_t len)
{
	if (rp->shut)
		return rp_reject(rp, QSTREAM_E_ORDER, "message type %u after SHUT", type);
	switch (type) {
	case QSW_RP_SHUT:
	case QSW_RP_PONG:
	case QSW_RP_RESUME_ACK:
		if (len != 4)
			return rp_reject(rp, QSTREAM_E_LENGTH, "message type %u of %u bytes, not 4",
					 type, len);
		rp->need = QSW_RP_HDR_LEN + 4;
		return 0;
	case QSW_RP_REQ_PAGES_ID:
	case QSW_RP_REQ_PAGES:
		return rp_reject(rp, QSTREAM_E_CAPABILITY, "a page request: migration "
				 "capability 'postcopy-ram' must be off");
	case QSW_RP_RECV_BITMAP:
		return rp_reject(rp, QSTREAM_E_CAPABILITY, "RECV_BITMAP (postcopy recovery): "
				 "migration capability 'postcopy-ram' must be off");
	case QSW_RP_SWITCHOVER_ACK:
		return rp_reject(rp, QSTREAM_E_CAPABILITY, "SWITCHOVER_ACK: migration "
				 "capability 'switchover-ack' must be off");
	default:
		return rp_reject(rp, QSTREAM_E_UNKNOWN, "return path message type %u", type);
	}
}

static int rp_message(struct qstream_rp_parser *rp)
{
	struct qstream_rp_msg m = { .value = qs_be32(rp->buf + QSW_RP_HDR_LEN) };
	int r;

	switch (qs_be16(rp->buf)) {
	case QSW_RP_SHUT:
		m.type = QSTREAM_RP_SHUT;
		rp->shut = true;
		break;
	case QSW_RP_PONG:
		m.type = QSTREAM_RP_PONG;
		break;
	default:
		m.type = QSTREAM_RP_RESUME_ACK;
		break;
	}
	rp->have = 0;
	rp->need = QSW_RP_HDR_LEN;
	if (!rp->fn)
		return 0;
	r = rp->fn(rp->opaque, &m);
	if (!r)
		return 0;
	if (r > 0)
		r = -ECANCELED;
	return qs_fail(&rp->err, QSTREAM_E_CONSUMER, r, rp->msg_off, "%s", strerror(-r));
}

int qstream_rp_parser_feed(struct qstream_rp_parser *rp, const void *data, size_t len)
{
	const uint8_t *in = data;

	while (len && !rp->err.ret) {
		size_t n = rp->need - rp->have < len ? rp->need - rp->have : len;

		if (!rp->have)
			rp->msg_off = rp->off;
		memcpy(rp->buf + rp->have, in, n);
		rp->have += n;
		rp->off += n;
		in += n;
		len -= n;
		if (rp->have < rp->need)
			break;
		if (rp->need == QSW_RP_HDR_LEN) {
			if (rp_header(rp, qs_be16(rp->buf), qs_be16(rp->buf + 2)))
				break;
		} else {
			rp_message(rp);
		}
	}
	return rp->err.ret;
}

int qstream_rp_parser_finish(struct qstream_rp_parser *rp)
{
	if (rp->err.ret)
		return rp->err.ret;
	if (rp->have) {
		rp->msg_off = rp->off;
		return rp_reject(rp, QSTREAM_E_TRUNCATED, "the return path ended inside a "
				 "message (%zu of %zu bytes)", rp->have, rp->need);
	}
	return 0;
}

enum qstream_error qstream_rp_parser_error(const struct qstream_rp_parser *rp)
{
	return rp->err.code;
}

const char *qstream_rp_parser_errmsg(const struct qstream_rp_parser *rp)
{
	return rp->err.code ? rp->err.msg : "no error";
}
