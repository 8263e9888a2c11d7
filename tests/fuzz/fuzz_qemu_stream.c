/*
 * libFuzzer target for the QEMU migration stream (vm/libvirt/qemu_stream.h)
 * and its records (qemu_stream_records.h): any bytes must be parsed or
 * refused with a reason, never crash, leak or read out of bounds. The
 * first input byte picks the stream (bit 0: the return path; bit 4: the
 * messages a destination decodes) and the size of the chunks the rest is
 * fed in (bits 1-3).
 *
 * Main stream: every event the parser gives must be taken by the writer,
 * and a stream that parsed to its end is written again, parsed again and
 * must give the same events (never more bytes: the writer only adds
 * CONTINUE where QEMU may leave it out); carried as records and decoded,
 * it must parse again too. Return path: the messages read, encoded again,
 * are exactly the bytes they came from. Messages: u8 kind, le24 length,
 * payload, again and again, into a decoder, whose refusals say why.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qemu_stream.h"
#include "qemu_stream_records.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const size_t chunks[8] = { 0, 1, 2, 3, 7, 64, 4095, 4097 };

struct out {
	uint8_t *p;
	size_t len, cap;
};

static void out_put(struct out *o, const void *d, size_t n)
{
	if (o->len + n > o->cap) {
		o->cap = (o->len + n) * 2 + 64;
		o->p = realloc(o->p, o->cap);
		if (!o->p)
			abort();
	}
	memcpy(o->p + o->len, d, n);
	o->len += n;
}

static int out_write(void *opaque, const void *buf, size_t len)
{
	out_put(opaque, buf, len);
	return 0;
}

struct digest {
	uint64_t h;
	struct qstream_writer *w;	/* events go on here too, when set */
};

static void mix(struct digest *d, const void *p, size_t n)
{
	const uint8_t *b = p;

	for (size_t i = 0; i < n; i++)
		d->h = (d->h ^ b[i]) * 0x100000001b3ull;
}

/* The content of each event, whatever the chunking split (device data). */
static int on_event(void *opaque, const struct qstream_event *ev)
{
	struct digest *d = opaque;

	if (ev->type != QSTREAM_EV_DEVICE)
		mix(d, &ev->type, sizeof(ev->type));
	switch (ev->type) {
	case QSTREAM_EV_CONFIG:
		mix(d, ev->u.config, sizeof(*ev->u.config));
		break;
	case QSTREAM_EV_COMMAND:
		mix(d, &ev->u.command, sizeof(ev->u.command));
		break;
	case QSTREAM_EV_RAM_BEGIN:
	case QSTREAM_EV_RAM_EOS:
		mix(d, &ev->u.ram, sizeof(ev->u.ram));
		break;
	case QSTREAM_EV_RAM_BLOCKS:
		mix(d, ev->u.blocks.list, ev->u.blocks.count * sizeof(*ev->u.blocks.list));
		break;
	case QSTREAM_EV_RAM_PAGE:
		mix(d, &ev->u.page.block, sizeof(ev->u.page.block));
		mix(d, &ev->u.page.offset, sizeof(ev->u.page.offset));
		if (ev->u.page.data)
			mix(d, ev->u.page.data, QSTREAM_PAGE_SIZE);
		else
			mix(d, &ev->u.page.fill, 1);
		break;
	case QSTREAM_EV_DEVICE:
		mix(d, ev->u.device.data, ev->u.device.len);
		break;
	case QSTREAM_EV_END:
		break;
	}
	if (d->w && qstream_writer_event(d->w, ev)) {
		fprintf(stderr, "writer refused a parsed event: %s\n", qstream_writer_errmsg(d->w));
		abort();
	}
	return 0;
}

static int parse(const uint8_t *data, size_t size, size_t chunk, struct digest *d,
		 struct qstream_parser **pp)
{
	struct qstream_parser *p = qstream_parser_new(on_event, d);
	int ret = 0;

	if (!p)
		abort();
	for (size_t off = 0; off < size && !ret; ) {
		size_t n = chunk && chunk < size - off ? chunk : size - off;

		ret = qstream_parser_feed(p, data + off, n);
		off += n;
	}
	if (!ret)
		ret = qstream_parser_finish(p);
	if (ret && (qstream_parser_error(p) == QSTREAM_OK || !strlen(qstream_parser_errmsg(p))))
		abort();	/* every failure comes with its reason */
	if (!ret && qstream_parser_stats(p)->bytes != size)
		abort();
	*pp = p;
	return ret;
}

/* Messages from the encoder straight into a decoder. */
struct pipe {
	struct qsrec_decoder *d;
	struct out buf;
};

static int pipe_send(void *opaque, unsigned kind, const struct iovec *iov, int iovcnt)
{
	struct pipe *pp = opaque;
	int ret;

	pp->buf.len = 0;
	for (int i = 0; i < iovcnt; i++)
		out_put(&pp->buf, iov[i].iov_base, iov[i].iov_len);
	ret = qsrec_decoder_feed(pp->d, kind, pp->buf.p, pp->buf.len);
	if (ret) {
		fprintf(stderr, "the decoder refused the encoder: %s\n", qsrec_decoder_errmsg(pp->d));
		abort();
	}
	return 0;
}

/* A stream that parsed, carried as records: it decodes, and what the
 * decoder writes parses (a QEMU would load it). */
static void through_records(const uint8_t *data, size_t size)
{
	struct out o = { 0 };
	struct qstream_sink sink = { out_write, &o };
	struct qstream_writer *w = qstream_writer_new(&sink);
	struct pipe pp = { qsrec_decoder_new(w), { 0 } };
	struct qsrec_out out = { pipe_send, &pp };
	struct qsrec_enc_opts eo = { .guest_name = "fuzz", .lz4 = true, .batch_pages = 3 };
	struct qsrec_encoder *e = qsrec_encoder_new(&out, &eo);
	struct qstream_parser *p = qstream_parser_new(qsrec_encoder_event, e);
	struct digest d = { 0xcbf29ce484222325ull, NULL };
	struct qstream_parser *p2;

	if (!w || !pp.d || !e || !p)
		abort();
	if (qstream_parser_feed(p, data, size) || qstream_parser_finish(p)) {
		/* only the records' own limits may refuse a stream that parsed */
		if (!strstr(qsrec_encoder_errmsg(e), "vmigrate's records carry"))
			abort();
	} else {
		if (qsrec_decoder_finish(pp.d))
			abort();
		if (parse(o.p, o.len, 0, &d, &p2)) {
			fprintf(stderr, "decoded, the stream does not parse: %s\n",
				qstream_parser_errmsg(p2));
			abort();
		}
		qstream_parser_free(p2);
	}
	qstream_parser_free(p);
	qsrec_encoder_free(e);
	qsrec_decoder_free(pp.d);
	qstream_writer_free(w);
	free(pp.buf.p);
	free(o.p);
}

static void messages(const uint8_t *data, size_t size)
{
	struct out o = { 0 };
	struct qstream_sink sink = { out_write, &o };
	struct qstream_writer *w = qstream_writer_new(&sink);
	struct qsrec_decoder *d = qsrec_decoder_new(w);
	int ret = 0;

	if (!w || !d)
		abort();
	while (size >= 4 && !ret) {
		unsigned kind = data[0];
		size_t len = data[1] | (size_t)data[2] << 8 | (size_t)data[3] << 16;

		if (len > size - 4)
			len = size - 4;
		ret = qsrec_decoder_feed(d, kind, data + 4, len);
		data += 4 + len;
		size -= 4 + len;
	}
	if (!ret)
		ret = qsrec_decoder_finish(d);
	if (ret && !strcmp(qsrec_decoder_errmsg(d), "no error"))
		abort();	/* every refusal says why */
	qsrec_decoder_free(d);
	qstream_writer_free(w);
	free(o.p);
}

static void main_stream(const uint8_t *data, size_t size, size_t chunk)
{
	struct out o = { 0 };
	struct qstream_sink sink = { out_write, &o };
	struct digest d1 = { 0xcbf29ce484222325ull, qstream_writer_new(&sink) };
	struct digest d2 = { 0xcbf29ce484222325ull, NULL };
	struct qstream_parser *p1, *p2;

	if (!d1.w)
		abort();
	if (parse(data, size, chunk, &d1, &p1) == 0) {
		if (qstream_writer_flush(d1.w) || o.len > size)
			abort();
		if (parse(o.p, o.len, 0, &d2, &p2) || d2.h != d1.h) {
			fprintf(stderr, "written again, the stream reads otherwise: %s\n",
				qstream_parser_errmsg(p2));
			abort();
		}
		qstream_parser_free(p2);
		through_records(data, size);
	}
	qstream_parser_free(p1);
	qstream_writer_free(d1.w);
	free(o.p);
}

static int on_rp(void *opaque, const struct qstream_rp_msg *m)
{
	uint8_t buf[QSTREAM_RP_MSG_LEN];

	if (qstream_rp_encode(m, buf) != QSTREAM_RP_MSG_LEN)
		abort();
	out_put(opaque, buf, sizeof(buf));
	return 0;
}

static void return_path(const uint8_t *data, size_t size, size_t chunk)
{
	struct out o = { 0 };
	struct qstream_rp_parser *rp = qstream_rp_parser_new(on_rp, &o);
	int ret = 0;

	if (!rp)
		abort();
	for (size_t off = 0; off < size && !ret; ) {
		size_t n = chunk && chunk < size - off ? chunk : size - off;

		ret = qstream_rp_parser_feed(rp, data + off, n);
		off += n;
	}
	if (!ret)
		ret = qstream_rp_parser_finish(rp);
	if (ret && !strlen(qstream_rp_parser_errmsg(rp)))
		abort();
	/* what was read is encoded back exactly; all of it when it parsed */
	if (o.len > size || (o.len && memcmp(o.p, data, o.len)) || (!ret && o.len != size))
		abort();
	qstream_rp_parser_free(rp);
	free(o.p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t chunk;

	if (!size)
		return 0;
	chunk = chunks[(data[0] >> 1) & 7];
	if (data[0] & 0x10)
		messages(data + 1, size - 1);
	else if (data[0] & 1)
		return_path(data + 1, size - 1, chunk);
	else
		main_stream(data + 1, size - 1, chunk);
	return 0;
}
