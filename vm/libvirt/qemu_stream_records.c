/*
 * QEMU's stream as vmigrate records (qemu_stream_records.h, QEMU-STREAM.md
 * "Carried as records"): pages into ckpt-format PAGES records through the
 * record writer, the rest as event messages; and back, through the record
 * reader (checksums, sequence, digest) into the stream writer.
 */
#include "qemu_stream_records.h"

#include <assert.h>
#include <endian.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "qemu_stream_wire.h"

#define DEFAULT_BATCH_PAGES	256u	/* 1 MiB records: short waits at the peer */

static_assert(8 + CKPT_MAX_REGIONS * (1 + QSTREAM_NAME_MAX + 8) <= QSREC_EVENT_MAX,
	      "a block list fits an event");

static const uint8_t zero_page[QSTREAM_PAGE_SIZE] __attribute__((aligned(64)));

static void put_le32(uint8_t *p, uint32_t v)
{
	v = htole32(v);
	memcpy(p, &v, 4);
}

static void put_le64(uint8_t *p, uint64_t v)
{
	v = htole64(v);
	memcpy(p, &v, 8);
}

static uint32_t get_le32(const uint8_t *p)
{
	uint32_t v;

	memcpy(&v, p, 4);
	return le32toh(v);
}

static uint64_t get_le64(const uint8_t *p)
{
	uint64_t v;

	memcpy(&v, p, 8);
	return le64toh(v);
}

/* QEMU's section types for the three kinds of "ram" section. */
static uint32_t section_type(enum qstream_ram_section k)
{
	return k == QSTREAM_RAM_SETUP ? QSW_SECTION_START :
	       k == QSTREAM_RAM_ITERATE ? QSW_SECTION_PART : QSW_SECTION_END;
}

/* ==== encoder ============================================================ */

struct qsrec_encoder {
	struct qsrec_out out;
	struct qsrec_enc_opts opts;
	char guest_name[CKPT_NAME_LEN];
	int ret;			/* sticky: first failure */
	char msg[256];

	uint8_t uuid[16];		/* the configuration's, else zero */
	struct ckpt_writer *w;		/* from the block list on */
	bool w_started, magic_held;	/* the magic waits for the HEADER */
	enum qstream_ram_section kind;	/* of the section being read */
	uint64_t rounds;		/* MARKERs written */
	bool finished;			/* END and COMMIT written */
	struct qsrec_enc_stats stats;
	uint8_t fill_page[QSTREAM_PAGE_SIZE];
	uint8_t ev[QSREC_EVENT_MAX];
};

__attribute__((format(printf, 3, 4)))
static int enc_fail(struct qsrec_encoder *e, int ret, const char *fmt, ...)
{
	va_list ap;

	if (e->ret)
		return e->ret;
	va_start(ap, fmt);
	vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
	va_end(ap);
	e->ret = ret;
	return ret;
}

/* The record writer's sink: each record one message, the magic with the
 * HEADER that follows it (it comes in a write of its own). */
static int records_writev(void *opaque, const struct iovec *iov, int iovcnt)
{
	struct qsrec_encoder *e = opaque;
	struct iovec v[9];
	int ret;

	if (!e->magic_held && !e->w_started) {
		e->magic_held = true;
		e->w_started = true;
		return iovcnt == 1 && iov[0].iov_len == CKPT_MAGIC_LEN ? 0 : -EINVAL;
	}
	if (e->magic_held) {
		if (iovcnt > 8)
			return -EINVAL;
		v[0] = (struct iovec){ (void *)CKPT_MAGIC, CKPT_MAGIC_LEN };
		memcpy(v + 1, iov, (size_t)iovcnt * sizeof(*iov));
		iov = v;
		iovcnt++;
		e->magic_held = false;
	}
	ret = e->out.send(e->out.opaque, QSREC_MSG_RECORDS, iov, iovcnt);
	for (int i = 0; !ret && i < iovcnt; i++)
		e->stats.record_bytes += iov[i].iov_len;
	return ret;
}

struct qsrec_encoder *qsrec_encoder_new(const struct qsrec_out *out,
					const struct qsrec_enc_opts *opts)
{
	struct qsrec_encoder *e = calloc(1, sizeof(*e));

	if (!e)
		return NULL;
	e->out = *out;
	if (opts)
		e->opts = *opts;
	snprintf(e->guest_name, sizeof(e->guest_name), "%s",
		 e->opts.guest_name ? e->opts.guest_name : "");
	e->opts.guest_name = e->guest_name;
	return e;
}

void qsrec_encoder_free(struct qsrec_encoder *e)
{
	if (!e)
		return;
	ckpt_writer_free(e->w);
	free(e);
}

const char *qsrec_encoder_errmsg(const struct qsrec_encoder *e)
{
	return e->ret ? e->msg : "no error";
}

void qsrec_encoder_stats(const struct qsrec_encoder *e, struct qsrec_enc_stats *out)
{
	*out = e->stats;
	if (e->w)
		memcpy(out->pages, ckpt_writer_stats(e->w)->pages, sizeof(out->pages));
}

static int send_event(struct qsrec_encoder *e, size_t len, const void *extra, size_t extra_len)
{
	struct iovec iov[2] = { { e->ev, len }, { (void *)extra, extra_len } };
	int ret;

	/* pages before this event go first: the order is QEMU's */
	if (e->w && ckpt_writer_flush(e->w))
		return enc_fail(e, ckpt_writer_error(e->w), "sending records: %s",
				strerror(-ckpt_writer_error(e->w)));
	ret = e->out.send(e->out.opaque, QSREC_MSG_EVENT, iov, extra_len ? 2 : 1);
	if (ret)
		return enc_fail(e, ret, "sending an event: %s", strerror(-ret));
	e->stats.event_bytes += len + extra_len;
	return 0;
}

static int writer_failed(struct qsrec_encoder *e, const char *what)
{
	int ret = ckpt_writer_error(e->w);

	return enc_fail(e, ret ? ret : -EIO, "%s: %s", what, strerror(ret ? -ret : EIO));
}

static int enc_config(struct qsrec_encoder *e, const struct qstream_config *c)
{
	size_t n = c->has_machine ? strlen(c->machine) : 0;

	put_le32(e->ev, QSREC_EV_CONFIG);
	e->ev[4] = c->has_machine;
	e->ev[5] = c->has_uuid;
	e->ev[6] = (uint8_t)n;
	e->ev[7] = 0;
	memset(e->ev + 8, 0, 16);
	if (c->has_uuid) {
		memcpy(e->ev + 8, c->uuid, 16);
		memcpy(e->uuid, c->uuid, 16);
	}
	memcpy(e->ev + 24, c->machine, n);
	return send_event(e, 24 + n, NULL, 0);
}

/* The block list: an event, then the records' HEADER with one region a
 * block (id = its index, laid end to end). */
static int enc_blocks(struct qsrec_encoder *e, const struct qstream_block *list, unsigned count)
{
	struct ckpt_writer_opts wo = {
		.codec = { .lz4 = e->opts.lz4, .zstd = e->opts.zstd, .delta = false,
			   .lz4_accel = 1 },
		.lz4_auto = e->opts.lz4 && e->opts.lz4_auto,
		.lz4_auto_overlapped = e->opts.queued,
		.batch_pages = e->opts.batch_pages ? e->opts.batch_pages : DEFAULT_BATCH_PAGES,
	};
	struct ckpt_sink sink = { records_writev, e };
	struct ckpt_image_info info;
	struct timespec ts;
	uint64_t base = 0;
	size_t len = 8;

	if (e->w)
		return enc_fail(e, -EINVAL, "a second RAM block list");
	if (count > CKPT_MAX_REGIONS)
		return enc_fail(e, -E2BIG, "QEMU's RAM has %u blocks; vmigrate's records carry "
				"at most %u", count, CKPT_MAX_REGIONS);
	memset(&info, 0, sizeof(info));
	put_le32(e->ev, QSREC_EV_RAM_BLOCKS);
	put_le32(e->ev + 4, count);
	for (unsigned i = 0; i < count; i++) {
		size_t n = strlen(list[i].idstr);

		if (list[i].used_length > CKPT_MAX_REGION_BYTES)
			return enc_fail(e, -E2BIG, "RAM block \"%s\" has %llu bytes; vmigrate's "
					"records carry at most %llu a block", list[i].idstr,
					(unsigned long long)list[i].used_length,
					(unsigned long long)CKPT_MAX_REGION_BYTES);
		e->ev[len] = (uint8_t)n;
		memcpy(e->ev + len + 1, list[i].idstr, n);
		put_le64(e->ev + len + 1 + n, list[i].used_length);
		len += 1 + n + 8;
		info.regions[i] = (struct ckpt_region){ .id = i, .gpa = base,
							.size = list[i].used_length };
		base += list[i].used_length;
	}
	if (send_event(e, len, NULL, 0))
		return e->ret;

	info.page_size = QSTREAM_PAGE_SIZE;
	info.region_count = count;
	memcpy(info.guest_uuid, e->uuid, 16);
	if (getrandom(info.image_uuid, sizeof(info.image_uuid), 0) != sizeof(info.image_uuid))
		return enc_fail(e, -EIO, "getrandom: %s", strerror(errno));
	snprintf(info.guest_name, sizeof(info.guest_name), "%s", e->guest_name);
	clock_gettime(CLOCK_REALTIME, &ts);
	info.created_ns = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
	e->w = ckpt_writer_new(&sink, &wo);
	if (!e->w)
		return enc_fail(e, -ENOMEM, "out of memory");
	if (ckpt_writer_header(e->w, &info))
		return writer_failed(e, "the records' header");
	return 0;
}

static int enc_page(struct qsrec_encoder *e, const struct qstream_event *ev)
{
	const void *data = ev->u.page.data;

	if (!e->w || e->finished)
		return enc_fail(e, -EINVAL, "a page outside the RAM sections");
	if (!data && ev->u.page.fill) {
		/* QEMU 7.2 writes 0; another fill byte travels as a page */
		memset(e->fill_page, ev->u.page.fill, sizeof(e->fill_page));
		data = e->fill_page;
	} else if (!data) {
		data = zero_page;
	}
	if (ckpt_writer_page(e->w, ev->u.page.block, ev->u.page.offset / QSTREAM_PAGE_SIZE,
			     data, NULL))
		return writer_failed(e, "sending records");
	return 0;
}

static int enc_device(struct qsrec_encoder *e, const uint8_t *data, size_t len)
{
	if (!e->finished)
		return enc_fail(e, -EINVAL, "device state before the last RAM section");
	put_le32(e->ev, QSREC_EV_DEVICE);
	while (len) {
		size_t n = len < QSREC_DEVICE_CHUNK ? len : QSREC_DEVICE_CHUNK;

		if (send_event(e, 4, data, n))
			return e->ret;
		data += n;
		len -= n;
	}
	return 0;
}

int qsrec_encoder_event(void *encoder, const struct qstream_event *ev)
{
	struct qsrec_encoder *e = encoder;

	if (e->ret)
		return e->ret;
	switch (ev->type) {
	case QSTREAM_EV_CONFIG:
		return enc_config(e, ev->u.config);
	case QSTREAM_EV_COMMAND:
		put_le32(e->ev, QSREC_EV_COMMAND);
		put_le32(e->ev + 4, ev->u.command.cmd == QSTREAM_CMD_PING ? QSW_CMD_PING :
			 QSW_CMD_OPEN_RETURN_PATH);
		put_le32(e->ev + 8, ev->u.command.value);
		return send_event(e, 12, NULL, 0);
	case QSTREAM_EV_RAM_BEGIN:
		if (ev->u.ram.kind != QSTREAM_RAM_SETUP && (!e->w || e->finished))
			return enc_fail(e, -EINVAL, "a RAM section outside the records");
		e->kind = ev->u.ram.kind;
		put_le32(e->ev, QSREC_EV_RAM_BEGIN);
		put_le32(e->ev + 4, section_type(ev->u.ram.kind));
		put_le32(e->ev + 8, ev->u.ram.section_id);
		if (send_event(e, 12, NULL, 0))
			return e->ret;
		/* each iteration of QEMU's a round of the records */
		if (e->kind != QSTREAM_RAM_SETUP && ckpt_writer_marker(e->w, CKPT_MARK_ROUND,
								       ++e->rounds))
			return writer_failed(e, "sending records");
		return 0;
	case QSTREAM_EV_RAM_BLOCKS:
		return enc_blocks(e, ev->u.blocks.list, ev->u.blocks.count);
	case QSTREAM_EV_RAM_PAGE:
		return enc_page(e, ev);
	case QSTREAM_EV_RAM_EOS:
		put_le32(e->ev, QSREC_EV_RAM_EOS);
		if (send_event(e, 4, NULL, 0))
			return e->ret;
		if (e->kind == QSTREAM_RAM_COMPLETE) {
			/* the last pages: END and COMMIT seal the records */
			if (ckpt_writer_finish(e->w, NULL))
				return writer_failed(e, "sealing the records");
			e->finished = true;
		}
		return 0;
	case QSTREAM_EV_DEVICE:
		return enc_device(e, ev->u.device.data, ev->u.device.len);
	case QSTREAM_EV_END:
		return 0;
	}
	return enc_fail(e, -EINVAL, "unknown stream event %d", (int)ev->type);
}

/* ==== decoder ============================================================ */

struct qsrec_decoder {
	struct qstream_writer *w;
	int ret;
	char msg[320];

	/* the ckpt-format stream, as it comes: whole records are read */
	struct ckpt_reader *r;
	uint8_t *in;
	size_t in_len, in_pos, in_cap;
	bool magic_read;
	uint64_t record_bytes;
	bool header_seen, committed;

	struct qstream_block blocks[QSTREAM_MAX_BLOCKS];
	unsigned nblocks;
	bool device;			/* device state began */
	uint8_t ev[QSREC_EVENT_MAX];
	uint8_t page[QSTREAM_PAGE_SIZE] __attribute__((aligned(64)));
	uint8_t scratch[QSTREAM_PAGE_SIZE];
};

__attribute__((format(printf, 2, 3)))
static int dec_fail(struct qsrec_decoder *d, const char *fmt, ...)
{
	va_list ap;

	if (d->ret)
		return d->ret;
	va_start(ap, fmt);
	vsnprintf(d->msg, sizeof(d->msg), fmt, ap);
	va_end(ap);
	d->ret = -EBADMSG;
	return d->ret;
}

/* The stream writer refused or could not write: its reason, its errno. */
static int dec_writer_failed(struct qsrec_decoder *d)
{
	if (!d->ret) {
		snprintf(d->msg, sizeof(d->msg), "%s", qstream_writer_errmsg(d->w));
		d->ret = qstream_writer_error(d->w) ? qstream_writer_error(d->w) : -EIO;
	}
	return d->ret;
}

/* The record reader's source: the bytes buffered; whole records only are
 * asked for, so a short answer never happens but at COMMIT's end. */
static long in_read(void *opaque, void *buf, size_t len)
{
	struct qsrec_decoder *d = opaque;
	size_t n = d->in_len - d->in_pos < len ? d->in_len - d->in_pos : len;

	memcpy(buf, d->in + d->in_pos, n);
	d->in_pos += n;
	return (long)n;
}

struct qsrec_decoder *qsrec_decoder_new(struct qstream_writer *w)
{
	struct qsrec_decoder *d = calloc(1, sizeof(*d));
	struct ckpt_source src = { in_read, d };

	if (!d)
		return NULL;
	d->w = w;
	d->r = ckpt_reader_new(&src, NULL);
	if (!d->r) {
		free(d);
		return NULL;
	}
	return d;
}

void qsrec_decoder_free(struct qsrec_decoder *d)
{
	if (!d)
		return;
	ckpt_reader_free(d->r);
	free(d->in);
	free(d);
}

const char *qsrec_decoder_errmsg(const struct qsrec_decoder *d)
{
	return d->ret ? d->msg : "no error";
}

bool qsrec_decoder_committed(const struct qsrec_decoder *d)
{
	return d->committed;
}

bool qsrec_decoder_device_begun(const struct qsrec_decoder *d)
{
	return d->device;
}

uint64_t qsrec_decoder_record_bytes(const struct qsrec_decoder *d)
{
	return d->record_bytes;
}

uint8_t *qsrec_decoder_space(struct qsrec_decoder *d, unsigned kind, size_t len)
{
	if (kind == QSREC_MSG_EVENT)
		return len >= 4 && len <= QSREC_EVENT_MAX ? d->ev : NULL;
	if (kind != QSREC_MSG_RECORDS || len == 0 || len > QSREC_RECORDS_MAX)
		return NULL;
	/* every message holds whole records: nothing is left of the last */
	d->in_len = d->in_pos = 0;
	if (d->in_len + len > d->in_cap) {
		size_t cap = d->in_len + len;
		uint8_t *n;

		if (cap < (1u << 20))
			cap = 1u << 20;
		n = realloc(d->in, cap);
		if (!n)
			return NULL;
		d->in = n;
		d->in_cap = cap;
	}
	return d->in + d->in_len;
}

/* The HEADER must describe the block list: a region a block, in order. */
static int dec_header(struct qsrec_decoder *d, const struct ckpt_image_info *info)
{
	if (!d->nblocks)
		return dec_fail(d, "the records begin before the RAM block list");
	if (info->page_size != QSTREAM_PAGE_SIZE || info->flags ||
	    info->region_count != d->nblocks)
		return dec_fail(d, "the records' header (%u regions of %u-byte pages%s) does not "
				"describe the %u RAM blocks", info->region_count, info->page_size,
				info->flags ? ", incremental" : "", d->nblocks);
	for (unsigned i = 0; i < d->nblocks; i++)
		if (info->regions[i].id != i || info->regions[i].size != d->blocks[i].used_length)
			return dec_fail(d, "the records' region %u (id %u, %llu bytes) is not RAM "
					"block %u \"%s\" (%llu bytes)", i, info->regions[i].id,
					(unsigned long long)info->regions[i].size, i,
					d->blocks[i].idstr,
					(unsigned long long)d->blocks[i].used_length);
	d->header_seen = true;
	return 0;
}

/* Every page of a PAGES record into the stream, in the record's order
 * (the reader checked the entries against the region and the data area). */
static int dec_pages(struct qsrec_decoder *d, const struct ckpt_pages_view *v)
{
	const uint8_t *data = v->data;
	unsigned block = v->region_id;	/* region ids are block indexes */

	for (uint32_t i = 0; i < v->count; i++) {
		const struct ckpt_page_entry *e = &v->entries[i];
		uint64_t page = le64toh(e->page);
		uint32_t size = le32toh(e->size);
		const void *p = data;

		switch (e->encoding) {
		case CKPT_ENC_ZERO:
			for (uint64_t k = 0; k < size; k++)
				if (qstream_writer_ram_zero(d->w, block, (page + k) * QSTREAM_PAGE_SIZE, 0))
					return dec_writer_failed(d);
			continue;
		case CKPT_ENC_RAW:
			break;
		case CKPT_ENC_LZ4:
		case CKPT_ENC_ZSTD:
			if (ckpt_page_decode(e->encoding, data, size, d->page, QSTREAM_PAGE_SIZE,
					     d->scratch))
				return dec_fail(d, "the records: page %llu of block %u does not "
						"decode", (unsigned long long)page, block);
			p = d->page;
			break;
		default:
			return dec_fail(d, "the records: page %llu of block %u is a delta, which "
					"this stream never carries", (unsigned long long)page, block);
		}
		if (qstream_writer_ram_page(d->w, block, page * QSTREAM_PAGE_SIZE, p))
			return dec_writer_failed(d);
		data += size;
	}
	return 0;
}

static int dec_record(struct qsrec_decoder *d, const struct ckpt_record *rec)
{
	switch (rec->type) {
	case CKPT_REC_HEADER:
		return dec_header(d, rec->u.header);
	case CKPT_REC_MARKER:
	case CKPT_REC_END:
		return 0;
	case CKPT_REC_PAGES:
		return dec_pages(d, &rec->u.pages);
	case CKPT_REC_COMMIT:
		d->committed = true;
		return 0;
	}
	return dec_fail(d, "the records: a record of type %u, which this stream never carries",
			rec->type);
}

/* Read every whole record buffered. */
static int dec_records(struct qsrec_decoder *d)
{
	for (;;) {
		size_t avail = d->in_len - d->in_pos, need = d->magic_read ? 0 : CKPT_MAGIC_LEN;
		struct ckpt_record rec;
		uint32_t len;

		if (d->committed) {
			if (avail)
				return dec_fail(d, "the records: %zu bytes after their COMMIT", avail);
			return 0;
		}
		if (avail < need + sizeof(struct ckpt_rec_hdr))
			return 0;
		len = get_le32(d->in + d->in_pos + need + 4);
		/* a length over the cap: the reader refuses it from the header */
		need += sizeof(struct ckpt_rec_hdr) + (len <= CKPT_MAX_PAYLOAD ? len : 0);
		if (avail < need)
			return 0;
		d->magic_read = true;
		if (ckpt_reader_next(d->r, &rec) < 0)
			return dec_fail(d, "the records: %s", ckpt_reader_errmsg(d->r));
		if (dec_record(d, &rec))
			return d->ret;
	}
}

static int dec_config(struct qsrec_decoder *d, const uint8_t *p, size_t len)
{
	struct qstream_config c;

	memset(&c, 0, sizeof(c));
	if (len < 24 || len != 24u + p[6] || p[4] > 1 || p[5] > 1 || p[7] ||
	    (p[4] && !p[6]) || (!p[4] && p[6]) || memchr(p + 24, 0, p[6]))
		return dec_fail(d, "a configuration event of %zu bytes that is not one", len);
	c.has_machine = p[4];
	c.has_uuid = p[5];
	memcpy(c.uuid, p + 8, 16);
	memcpy(c.machine, p + 24, p[6]);
	return qstream_writer_header(d->w, &c) ? dec_writer_failed(d) : 0;
}

static int dec_blocks(struct qsrec_decoder *d, const uint8_t *p, size_t len)
{
	uint32_t count = len >= 8 ? get_le32(p + 4) : 0;
	size_t off = 8;

	if (d->nblocks)
		return dec_fail(d, "a second RAM block list");
	if (count == 0 || count > CKPT_MAX_REGIONS)
		return dec_fail(d, "a RAM block list of %u blocks (1 to %u)", count,
				CKPT_MAX_REGIONS);
	for (uint32_t i = 0; i < count; i++) {
		struct qstream_block *b = &d->blocks[i];
		unsigned n;

		if (off >= len || (n = p[off]) == 0 || len - off < 1 + n + 8 ||
		    memchr(p + off + 1, 0, n))
			return dec_fail(d, "RAM block list: entry %u is cut short or unnamed", i);
		memcpy(b->idstr, p + off + 1, n);
		b->idstr[n] = 0;
		b->used_length = get_le64(p + off + 1 + n);
		off += 1 + n + 8;
	}
	if (off != len)
		return dec_fail(d, "RAM block list: %zu bytes after its %u blocks", len - off, count);
	d->nblocks = count;
	return qstream_writer_ram_blocks(d->w, d->blocks, count) ? dec_writer_failed(d) : 0;
}

static int dec_event(struct qsrec_decoder *d, const uint8_t *p, size_t len)
{
	uint32_t code = get_le32(p), a = len >= 12 ? get_le32(p + 4) : 0;
	uint32_t b = len >= 12 ? get_le32(p + 8) : 0;
	int ret = 0;

	switch (code) {
	case QSREC_EV_CONFIG:
		return dec_config(d, p, len);
	case QSREC_EV_COMMAND:
		if (len != 12 || (a != QSW_CMD_OPEN_RETURN_PATH && a != QSW_CMD_PING) ||
		    (a == QSW_CMD_OPEN_RETURN_PATH && b))
			return dec_fail(d, "a command event that is not one (%zu bytes, command %u)",
					len, a);
		ret = qstream_writer_command(d->w, a == QSW_CMD_PING ? QSTREAM_CMD_PING :
					     QSTREAM_CMD_OPEN_RETURN_PATH, b);
		break;
	case QSREC_EV_RAM_BEGIN:
		if (len != 12 || a < QSW_SECTION_START || a > QSW_SECTION_END)
			return dec_fail(d, "a RAM section event that is not one (%zu bytes, type %u)",
					len, a);
		if (a != QSW_SECTION_START && !d->header_seen)
			return dec_fail(d, "a RAM iteration before the records' header");
		ret = qstream_writer_ram_begin(d->w, a == QSW_SECTION_START ? QSTREAM_RAM_SETUP :
					       a == QSW_SECTION_PART ? QSTREAM_RAM_ITERATE :
					       QSTREAM_RAM_COMPLETE, b);
		break;
	case QSREC_EV_RAM_BLOCKS:
		return dec_blocks(d, p, len);
	case QSREC_EV_RAM_EOS:
		if (len != 4)
			return dec_fail(d, "an end-of-section event of %zu bytes", len);
		ret = qstream_writer_ram_eos(d->w);
		break;
	case QSREC_EV_DEVICE:
		if (len == 4 || len > 4 + QSREC_DEVICE_CHUNK)
			return dec_fail(d, "device state of %zu bytes in one event", len - 4);
		/* the destination QEMU runs once it has the device state: every
		 * page must have arrived, checked, first */
		if (!d->committed)
			return dec_fail(d, "device state before the records' COMMIT");
		d->device = true;
		ret = qstream_writer_device(d->w, p + 4, len - 4);
		break;
	default:
		return dec_fail(d, "unknown event %u", code);
	}
	return ret ? dec_writer_failed(d) : 0;
}

int qsrec_decoder_message(struct qsrec_decoder *d, unsigned kind, size_t len)
{
	if (d->ret)
		return d->ret;
	if (kind == QSREC_MSG_EVENT) {
		if (len < 4 || len > QSREC_EVENT_MAX)
			return dec_fail(d, "an event of %zu bytes", len);
		return dec_event(d, d->ev, len);
	}
	if (kind != QSREC_MSG_RECORDS || len == 0 || len > QSREC_RECORDS_MAX ||
	    d->in_len + len > d->in_cap)
		return dec_fail(d, "a message of kind %u and %zu bytes", kind, len);
	d->in_len += len;
	d->record_bytes += len;
	if (dec_records(d))
		return d->ret;
	/* each message whole records: an event never lands inside one */
	if (d->in_pos != d->in_len)
		return dec_fail(d, "the records: a message ends inside a record (%zu bytes of it "
				"came)", d->in_len - d->in_pos);
	return 0;
}

int qsrec_decoder_feed(struct qsrec_decoder *d, unsigned kind, const void *buf, size_t len)
{
	uint8_t *space;

	if (d->ret)
		return d->ret;
	space = qsrec_decoder_space(d, kind, len);
	if (!space)
		return dec_fail(d, "a message of kind %u and %zu bytes", kind, len);
	memcpy(space, buf, len);
	return qsrec_decoder_message(d, kind, len);
}

int qsrec_decoder_finish(struct qsrec_decoder *d)
{
	if (d->ret)
		return d->ret;
	if (!d->committed)
		return dec_fail(d, "the stream ended before its records' COMMIT");
	if (!d->device)
		return dec_fail(d, "the stream ended before the device state");
	return qstream_writer_flush(d->w) ? dec_writer_failed(d) : 0;
}
