/*
 * Writer of a QEMU 7.2 migration stream from the parser's events
 * (QEMU-STREAM.md). It holds the same rules the parser checks, so what it
 * writes always parses, and it names pages the way QEMU's sender does
 * (CONTINUE whenever a page is in the block of the page before it), so the
 * events of a stream QEMU wrote come back as that stream, byte for byte.
 */
#include "qemu_stream.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "qemu_stream_int.h"
#include "qemu_stream_wire.h"

#define WBUF_SIZE	(64u << 10)

struct qstream_writer {
	struct qstream_sink sink;
	int ret;			/* sticky: first failure */
	char msg[256];
	uint8_t *buf;
	size_t len;

	bool header_done, device;
	bool rp_open;
	bool ram_started, ram_setup_done, ram_done;
	bool in_ram;
	enum qstream_ram_section kind;
	uint32_t ram_id;
	struct qstream_block blocks[QSTREAM_MAX_BLOCKS];
	unsigned nblocks;
	bool blocks_done;
	int last_block;			/* of the last page written; -1 none */
	struct qstream_stats stats;
};

__attribute__((format(printf, 2, 3)))
static int misuse(struct qstream_writer *w, const char *fmt, ...)
{
	va_list ap;

	if (w->ret)
		return w->ret;
	va_start(ap, fmt);
	vsnprintf(w->msg, sizeof(w->msg), fmt, ap);
	va_end(ap);
	w->ret = -EINVAL;
	return w->ret;
}

struct qstream_writer *qstream_writer_new(const struct qstream_sink *sink)
{
	struct qstream_writer *w = calloc(1, sizeof(*w));

	if (!w)
		return NULL;
	w->buf = malloc(WBUF_SIZE);
	if (!w->buf) {
		free(w);
		return NULL;
	}
	w->sink = *sink;
	w->last_block = -1;
	return w;
}

void qstream_writer_free(struct qstream_writer *w)
{
	if (!w)
		return;
	free(w->buf);
	free(w);
}

int qstream_writer_flush(struct qstream_writer *w)
{
	int r;

	if (w->ret || !w->len)
		return w->ret;
	r = w->sink.write(w->sink.opaque, w->buf, w->len);
	if (r < 0) {
		snprintf(w->msg, sizeof(w->msg), "writing the stream: %s", strerror(-r));
		w->ret = r;
		return r;
	}
	w->len = 0;
	return 0;
}

static void put(struct qstream_writer *w, const void *data, size_t len)
{
	const uint8_t *p = data;

	while (len && !w->ret) {
		size_t n = WBUF_SIZE - w->len < len ? WBUF_SIZE - w->len : len;

		memcpy(w->buf + w->len, p, n);
		w->len += n;
		w->stats.bytes += n;
		p += n;
		len -= n;
		if (w->len == WBUF_SIZE)
			qstream_writer_flush(w);
	}
}

static void put8(struct qstream_writer *w, uint8_t v)
{
	put(w, &v, 1);
}

static void put16(struct qstream_writer *w, uint16_t v)
{
	uint8_t b[2];

	qs_put_be16(b, v);
	put(w, b, sizeof(b));
}

static void put32(struct qstream_writer *w, uint32_t v)
{
	uint8_t b[4];

	qs_put_be32(b, v);
	put(w, b, sizeof(b));
}

static void put64(struct qstream_writer *w, uint64_t v)
{
	uint8_t b[8];

	qs_put_be64(b, v);
	put(w, b, sizeof(b));
}

/* u8 length, then the name without its NUL */
static void put_name(struct qstream_writer *w, const char *name)
{
	size_t n = strlen(name);

	put8(w, (uint8_t)n);
	put(w, name, n);
}

/* A name in a buffer of cap bytes: terminated, 1 to QSTREAM_NAME_MAX long. */
static bool name_ok(const char *name, size_t cap)
{
	size_t n = strnlen(name, cap);

	return n >= 1 && n <= QSTREAM_NAME_MAX;
}

int qstream_writer_header(struct qstream_writer *w, const struct qstream_config *cfg)
{
	if (w->ret)
		return w->ret;
	if (w->header_done)
		return misuse(w, "a second stream header");
	if (cfg->has_machine && !name_ok(cfg->machine, sizeof(cfg->machine)))
		return misuse(w, "machine type must be 1 to %u bytes", QSTREAM_NAME_MAX);
	if (cfg->has_uuid && !cfg->has_machine)
		return misuse(w, "a uuid needs the configuration section");
	put32(w, QSW_MAGIC);
	put32(w, QSW_VERSION);
	if (cfg->has_machine) {
		size_t n = strlen(cfg->machine);

		put8(w, QSW_CONFIGURATION);
		put32(w, (uint32_t)n);
		put(w, cfg->machine, n);
		if (cfg->has_uuid) {
			put8(w, QSW_SUBSECTION);
			put_name(w, QSW_SUB_UUID);
			put32(w, 1);
			put(w, cfg->uuid, QSW_UUID_LEN);
		}
	}
	w->header_done = true;
	return w->ret;
}

/* Between sections, before the device state. */
static int at_top(struct qstream_writer *w, const char *what)
{
	if (w->ret)
		return w->ret;
	if (!w->header_done)
		return misuse(w, "%s before the stream header", what);
	if (w->device)
		return misuse(w, "%s after the device state began", what);
	if (w->in_ram)
		return misuse(w, "%s inside a RAM section", what);
	return 0;
}

int qstream_writer_command(struct qstream_writer *w, enum qstream_command cmd,
			   uint32_t value)
{
	if (at_top(w, "a command"))
		return w->ret;
	switch (cmd) {
	case QSTREAM_CMD_OPEN_RETURN_PATH:
		if (w->rp_open)
			return misuse(w, "a second OPEN_RETURN_PATH");
		put8(w, QSW_COMMAND);
		put16(w, QSW_CMD_OPEN_RETURN_PATH);
		put16(w, 0);
		w->rp_open = true;
		return w->ret;
	case QSTREAM_CMD_PING:
		if (!w->rp_open)
			return misuse(w, "PING before OPEN_RETURN_PATH");
		put8(w, QSW_COMMAND);
		put16(w, QSW_CMD_PING);
		put16(w, 4);
		put32(w, value);
		return w->ret;
	}
	return misuse(w, "unknown command %d", (int)cmd);
}

int qstream_writer_ram_begin(struct qstream_writer *w, enum qstream_ram_section kind,
			     uint32_t section_id)
{
	if (at_top(w, "a RAM section"))
		return w->ret;
	switch (kind) {
	case QSTREAM_RAM_SETUP:
		if (w->ram_started)
			return misuse(w, "a second RAM setup section");
		put8(w, QSW_SECTION_START);
		put32(w, section_id);
		put_name(w, QSW_RAM_IDSTR);
		put32(w, QSW_RAM_INSTANCE);
		put32(w, QSW_RAM_VERSION);
		w->ram_started = true;
		w->ram_id = section_id;
		break;
	case QSTREAM_RAM_ITERATE:
	case QSTREAM_RAM_COMPLETE:
		if (!w->ram_setup_done)
			return misuse(w, "a RAM section before the setup section");
		if (w->ram_done)
			return misuse(w, "a RAM section after the last one");
		if (section_id != w->ram_id)
			return misuse(w, "RAM section id %u, the setup section's was %u",
				      section_id, w->ram_id);
		put8(w, kind == QSTREAM_RAM_ITERATE ? QSW_SECTION_PART : QSW_SECTION_END);
		put32(w, section_id);
		break;
	default:
		return misuse(w, "unknown RAM section kind %d", (int)kind);
	}
	w->kind = kind;
	w->in_ram = true;
	w->stats.ram_sections++;
	return w->ret;
}

int qstream_writer_ram_blocks(struct qstream_writer *w, const struct qstream_block *list,
			      unsigned count)
{
	uint64_t total = 0;

	if (w->ret)
		return w->ret;
	if (!w->in_ram || w->kind != QSTREAM_RAM_SETUP)
		return misuse(w, "the block list outside the RAM setup section");
	if (w->blocks_done)
		return misuse(w, "a second block list");
	if (!count || count > QSTREAM_MAX_BLOCKS)
		return misuse(w, "%u RAM blocks, 1 to %u are written", count, QSTREAM_MAX_BLOCKS);
	for (unsigned i = 0; i < count; i++) {
		const struct qstream_block *b = &list[i];

		if (!name_ok(b->idstr, sizeof(b->idstr)))
			return misuse(w, "RAM block %u: name must be 1 to %u bytes", i,
				      QSTREAM_NAME_MAX);
		if (!b->used_length || b->used_length % QSTREAM_PAGE_SIZE ||
		    b->used_length > QSTREAM_MAX_RAM)
			return misuse(w, "RAM block \"%s\": %llu bytes, not whole pages up to %llu",
				      b->idstr, (unsigned long long)b->used_length,
				      QSTREAM_MAX_RAM);
		for (unsigned j = 0; j < i; j++)
			if (!strcmp(list[j].idstr, b->idstr))
				return misuse(w, "RAM block \"%s\" listed twice", b->idstr);
		total += b->used_length;
		if (total > QSTREAM_MAX_RAM)
			return misuse(w, "RAM blocks of more than %llu bytes in all",
				      QSTREAM_MAX_RAM);
	}
	put64(w, total | QSW_RAM_MEM_SIZE);
	for (unsigned i = 0; i < count; i++) {
		put_name(w, list[i].idstr);
		put64(w, list[i].used_length);
	}
	memcpy(w->blocks, list, count * sizeof(*list));
	w->nblocks = count;
	w->blocks_done = true;
	return w->ret;
}

static int page_header(struct qstream_writer *w, unsigned block, uint64_t offset,
		       unsigned flag)
{
	if (w->ret)
		return w->ret;
	if (!w->in_ram || w->kind == QSTREAM_RAM_SETUP)
		return misuse(w, "a page outside a RAM iterate or complete section");
	if (block >= w->nblocks)
		return misuse(w, "page of RAM block %u, there are %u", block, w->nblocks);
	if (offset % QSTREAM_PAGE_SIZE || offset >= w->blocks[block].used_length)
		return misuse(w, "page at 0x%llx: not a page of block \"%s\" (%llu bytes)",
			      (unsigned long long)offset, w->blocks[block].idstr,
			      (unsigned long long)w->blocks[block].used_length);
	if ((int)block == w->last_block) {
		put64(w, offset | flag | QSW_RAM_CONTINUE);
	} else {
		put64(w, offset | flag);
		put_name(w, w->blocks[block].idstr);
		w->last_block = (int)block;
	}
	return w->ret;
}

int qstream_writer_ram_page(struct qstream_writer *w, unsigned block, uint64_t offset,
			    const void *data)
{
	if (page_header(w, block, offset, QSW_RAM_PAGE))
		return w->ret;
	put(w, data, QSTREAM_PAGE_SIZE);
	w->stats.pages++;
	return w->ret;
}

int qstream_writer_ram_zero(struct qstream_writer *w, unsigned block, uint64_t offset,
			    uint8_t fill)
{
	if (page_header(w, block, offset, QSW_RAM_ZERO))
		return w->ret;
	put8(w, fill);
	w->stats.zero_pages++;
	return w->ret;
}

int qstream_writer_ram_eos(struct qstream_writer *w)
{
	if (w->ret)
		return w->ret;
	if (!w->in_ram)
		return misuse(w, "EOS outside a RAM section");
	if (w->kind == QSTREAM_RAM_SETUP && !w->blocks_done)
		return misuse(w, "the RAM setup section ends without a block list");
	put64(w, QSW_RAM_EOS);
	put8(w, QSW_SECTION_FOOTER);
	put32(w, w->ram_id);
	w->in_ram = false;
	if (w->kind == QSTREAM_RAM_SETUP)
		w->ram_setup_done = true;
	else if (w->kind == QSTREAM_RAM_COMPLETE)
		w->ram_done = true;
	return w->ret;
}

int qstream_writer_device(struct qstream_writer *w, const void *data, size_t len)
{
	if (w->ret)
		return w->ret;
	if (!w->device) {
		if (!w->ram_done || w->in_ram)
			return misuse(w, "device state before the last RAM section ended");
		w->device = true;
	}
	if (len >= WBUF_SIZE / 2) {	/* large: straight to the sink */
		int r;

		if (qstream_writer_flush(w))
			return w->ret;
		r = w->sink.write(w->sink.opaque, data, len);
		if (r < 0) {
			snprintf(w->msg, sizeof(w->msg), "writing the stream: %s", strerror(-r));
			w->ret = r;
			return r;
		}
		w->stats.bytes += len;
	} else {
		put(w, data, len);
	}
	w->stats.device_bytes += len;
	return w->ret;
}

int qstream_writer_event(struct qstream_writer *w, const struct qstream_event *ev)
{
	switch (ev->type) {
	case QSTREAM_EV_CONFIG:
		return qstream_writer_header(w, ev->u.config);
	case QSTREAM_EV_COMMAND:
		return qstream_writer_command(w, ev->u.command.cmd, ev->u.command.value);
	case QSTREAM_EV_RAM_BEGIN:
		return qstream_writer_ram_begin(w, ev->u.ram.kind, ev->u.ram.section_id);
	case QSTREAM_EV_RAM_BLOCKS:
		return qstream_writer_ram_blocks(w, ev->u.blocks.list, ev->u.blocks.count);
	case QSTREAM_EV_RAM_PAGE:
		if (ev->u.page.data)
			return qstream_writer_ram_page(w, ev->u.page.block, ev->u.page.offset,
						       ev->u.page.data);
		return qstream_writer_ram_zero(w, ev->u.page.block, ev->u.page.offset,
					       ev->u.page.fill);
	case QSTREAM_EV_RAM_EOS:
		return qstream_writer_ram_eos(w);
	case QSTREAM_EV_DEVICE:
		return qstream_writer_device(w, ev->u.device.data, ev->u.device.len);
	case QSTREAM_EV_END:
		return qstream_writer_flush(w);
	}
	return misuse(w, "unknown event %d", (int)ev->type);
}

int qstream_writer_error(const struct qstream_writer *w)
{
	return w->ret;
}

const char *qstream_writer_errmsg(const struct qstream_writer *w)
{
	return w->ret ? w->msg : "no error";
}

const struct qstream_stats *qstream_writer_stats(const struct qstream_writer *w)
{
	return &w->stats;
}
