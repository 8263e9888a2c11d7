/*
 * The QEMU migration stream module (vm/libvirt/qemu_stream.h): the writer
 * against bytes written out by hand from QEMU-STREAM.md, the parser on
 * those bytes, round trips that give the same bytes back whatever the
 * chunking, truncation at every byte, and each hostile input refused with
 * its own error (a capability by its name); the return path likewise.
 */
#include <errno.h>
#include <stdlib.h>

#include "harness.h"
#include "qemu_stream.h"
#include "qemu_stream_records.h"
#include "testdata.h"

/* ---- bytes, built by hand --------------------------------------------- */

struct bytes {
	uint8_t *p;
	size_t len, cap;
};

static void b_put(struct bytes *b, const void *d, size_t n)
{
	if (b->len + n > b->cap) {
		b->cap = (b->len + n) * 2 + 64;
		b->p = realloc(b->p, b->cap);
		CHECK(b->p);
	}
	memcpy(b->p + b->len, d, n);
	b->len += n;
}

static void b8(struct bytes *b, uint8_t v)
{
	b_put(b, &v, 1);
}

static void b16(struct bytes *b, uint16_t v)
{
	uint8_t x[2] = { v >> 8, v };

	b_put(b, x, 2);
}

static void b32(struct bytes *b, uint32_t v)
{
	uint8_t x[4] = { v >> 24, v >> 16, v >> 8, v };

	b_put(b, x, 4);
}

static void b64(struct bytes *b, uint64_t v)
{
	b32(b, v >> 32);
	b32(b, (uint32_t)v);
}

static void bname(struct bytes *b, const char *s)
{
	b8(b, (uint8_t)strlen(s));
	b_put(b, s, strlen(s));
}

static void b_free(struct bytes *b)
{
	free(b->p);
	*b = (struct bytes){ 0 };
}

/* QEMU's items, as QEMU-STREAM.md lays them out (not through the writer). */
static void s_header(struct bytes *b, const char *machine)
{
	b32(b, 0x5145564d);
	b32(b, 3);
	if (machine) {
		b8(b, 0x07);
		b32(b, (uint32_t)strlen(machine));
		b_put(b, machine, strlen(machine));
	}
}

static void s_cmd(struct bytes *b, uint16_t cmd, uint16_t len)
{
	b8(b, 0x08);
	b16(b, cmd);
	b16(b, len);
}

static void s_start(struct bytes *b, uint32_t id, const char *idstr, uint32_t inst, uint32_t ver)
{
	b8(b, 0x01);
	b32(b, id);
	bname(b, idstr);
	b32(b, inst);
	b32(b, ver);
}

static void s_part(struct bytes *b, uint8_t type, uint32_t id)
{
	b8(b, type);
	b32(b, id);
}

static void s_eos(struct bytes *b, uint32_t id)
{
	b64(b, 0x10);
	b8(b, 0x7e);
	b32(b, id);
}

/* name NULL: CONTINUE */
static void s_page(struct bytes *b, const char *name, uint64_t off, const uint8_t *data)
{
	b64(b, off | 0x08 | (name ? 0 : 0x20));
	if (name)
		bname(b, name);
	b_put(b, data, 4096);
}

static void s_zero(struct bytes *b, const char *name, uint64_t off, uint8_t fill)
{
	b64(b, off | 0x02 | (name ? 0 : 0x20));
	if (name)
		bname(b, name);
	b8(b, fill);
}

/* Some device state as QEMU ends a stream: a FULL section, EOF, VMDESC. */
static const uint8_t device_tail[] = {
	0x04, 0, 0, 0, 3, 5, 't', 'i', 'm', 'e', 'r', 0, 0, 0, 0, 0, 0, 0, 2,
	1, 2, 3, 4, 5, 6, 7, 8, 0x7e, 0, 0, 0, 3,
	0x00, 0x06, 0, 0, 0, 2, '{', '}',
};

/* Two blocks: "pc.ram" of 16 pages and "pc.bios" of 2, as section 2. */
static void s_setup(struct bytes *b)
{
	s_start(b, 2, "ram", 0, 4);
	b64(b, (18 * 4096) | 0x04);
	bname(b, "pc.ram");
	b64(b, 16 * 4096);
	bname(b, "pc.bios");
	b64(b, 2 * 4096);
	s_eos(b, 2);
}

/* ---- events, recorded -------------------------------------------------- */

#define MAX_EVENTS	4096

struct ev {
	enum qstream_event_type type;
	uint64_t offset;
	int kind;
	uint32_t id;
	unsigned block, count;
	uint64_t page_off;
	bool zero;
	uint8_t fill;
	uint8_t first_byte;
	uint32_t value;
	char name[QSTREAM_NAME_MAX + 1];
};

struct recorder {
	struct ev ev[MAX_EVENTS];
	unsigned n;
	uint64_t digest;		/* FNV-1a over every event's content */
	struct bytes device;
	unsigned non_device;		/* events other than DEVICE */
	unsigned fail_at;		/* refuse this event (1-based), 0 never */
	struct qstream_writer *w;	/* events go on here too, when set */
};

static void mix(struct recorder *r, const void *d, size_t n)
{
	const uint8_t *p = d;

	for (size_t i = 0; i < n; i++) {
		r->digest ^= p[i];
		r->digest *= 0x100000001b3ull;
	}
}

static int record(void *opaque, const struct qstream_event *qe)
{
	struct recorder *r = opaque;
	struct ev e = { .type = qe->type, .offset = qe->offset };

	if (r->fail_at && r->n + 1 == r->fail_at)
		return -EIO;
	if (qe->type != QSTREAM_EV_DEVICE)	/* chunking splits those */
		mix(r, &qe->type, sizeof(qe->type));
	switch (qe->type) {
	case QSTREAM_EV_CONFIG:
		snprintf(e.name, sizeof(e.name), "%s", qe->u.config->has_machine ?
			 qe->u.config->machine : "(none)");
		e.zero = qe->u.config->has_uuid;
		e.first_byte = qe->u.config->uuid[0];
		mix(r, qe->u.config, sizeof(*qe->u.config));
		break;
	case QSTREAM_EV_COMMAND:
		e.kind = qe->u.command.cmd;
		e.value = qe->u.command.value;
		mix(r, &e.kind, sizeof(e.kind));
		mix(r, &e.value, sizeof(e.value));
		break;
	case QSTREAM_EV_RAM_BEGIN:
	case QSTREAM_EV_RAM_EOS:
		e.kind = qe->u.ram.kind;
		e.id = qe->u.ram.section_id;
		mix(r, &e.kind, sizeof(e.kind));
		mix(r, &e.id, sizeof(e.id));
		break;
	case QSTREAM_EV_RAM_BLOCKS:
		e.count = qe->u.blocks.count;
		snprintf(e.name, sizeof(e.name), "%s", qe->u.blocks.list[0].idstr);
		for (unsigned i = 0; i < qe->u.blocks.count; i++)
			mix(r, &qe->u.blocks.list[i], sizeof(qe->u.blocks.list[i]));
		break;
	case QSTREAM_EV_RAM_PAGE:
		e.block = qe->u.page.block;
		e.page_off = qe->u.page.offset;
		e.zero = !qe->u.page.data;
		e.fill = qe->u.page.fill;
		e.first_byte = qe->u.page.data ? qe->u.page.data[0] : 0;
		mix(r, &e.block, sizeof(e.block));
		mix(r, &e.page_off, sizeof(e.page_off));
		if (qe->u.page.data)
			mix(r, qe->u.page.data, QSTREAM_PAGE_SIZE);
		else
			mix(r, &e.fill, 1);
		break;
	case QSTREAM_EV_DEVICE:
		b_put(&r->device, qe->u.device.data, qe->u.device.len);
		break;
	case QSTREAM_EV_END:
		mix(r, r->device.p, r->device.len);
		break;
	}
	if (qe->type != QSTREAM_EV_DEVICE)
		r->non_device++;
	if (r->n < MAX_EVENTS)
		r->ev[r->n] = e;
	r->n++;
	if (r->w)
		CHECK_MSG(qstream_writer_event(r->w, qe) == 0, "writer refused event %u: %s",
			  r->n, qstream_writer_errmsg(r->w));
	return 0;
}

static void recorder_init(struct recorder *r)
{
	memset(r, 0, sizeof(*r));
	r->digest = 0xcbf29ce484222325ull;
}

static int membuf_write(void *opaque, const void *buf, size_t len)
{
	b_put(opaque, buf, len);
	return 0;
}

/* Feed all of buf to p in chunks of `chunk` bytes (0: at once), then finish. */
static int feed_chunks(struct qstream_parser *p, const uint8_t *buf, size_t len, size_t chunk)
{
	int ret = 0;

	for (size_t off = 0; off < len && !ret; ) {
		size_t n = chunk && chunk < len - off ? chunk : len - off;

		ret = qstream_parser_feed(p, buf + off, n);
		off += n;
	}
	return ret ? ret : qstream_parser_finish(p);
}

/* Parse all of buf in chunks of `chunk` bytes (0: at once), then finish. */
static int parse(const uint8_t *buf, size_t len, size_t chunk, struct recorder *r,
		 enum qstream_error *code, char *msg, size_t msglen)
{
	struct qstream_parser *p = qstream_parser_new(record, r);
	int ret = 0;

	CHECK(p);
	ret = feed_chunks(p, buf, len, chunk);
	if (code)
		*code = qstream_parser_error(p);
	if (msg)
		snprintf(msg, msglen, "%s", qstream_parser_errmsg(p));
	qstream_parser_free(p);
	return ret;
}

/* Parse into a writer; returns the writer's bytes in out. */
static int round_trip(const uint8_t *buf, size_t len, size_t chunk, struct bytes *out,
		      struct recorder *r)
{
	struct qstream_sink sink = { membuf_write, out };
	int ret;

	recorder_init(r);
	r->w = qstream_writer_new(&sink);
	CHECK(r->w);
	ret = parse(buf, len, chunk, r, NULL, NULL, 0);
	CHECK_EQ(qstream_writer_flush(r->w), 0);
	qstream_writer_free(r->w);
	r->w = NULL;
	return ret;
}

/* buf must be refused with code, and the message must name want. */
static void expect_refused(const struct bytes *b, enum qstream_error code, const char *want)
{
	static struct recorder r;
	enum qstream_error got;
	char msg[256];
	int ret;

	recorder_init(&r);
	ret = parse(b->p, b->len, 0, &r, &got, msg, sizeof(msg));
	CHECK_MSG(ret == -EBADMSG, "parsed (%d), expected %s (%s)", ret, qstream_error_name(code),
		  want);
	CHECK_MSG(got == code, "got \"%s\", expected %s", msg, qstream_error_name(code));
	CHECK_MSG(!want || strstr(msg, want), "\"%s\" does not say \"%s\"", msg, want);
	/* byte by byte, the same verdict */
	recorder_init(&r);
	ret = parse(b->p, b->len, 1, &r, &got, NULL, 0);
	CHECK_MSG(ret == -EBADMSG && got == code, "byte by byte: %d %s", ret,
		  qstream_error_name(got));
}

/* ---- the hand-written stream ------------------------------------------ */

/*
 * One block "pc.ram" of 2 pages as section 2; a PART with a zero page
 * (named) and a data page of 0xab (CONTINUE); an END with no pages; then
 * the device state. Written out byte by byte from QEMU-STREAM.md.
 */
static const uint8_t literal_head[] = {
	0x51, 0x45, 0x56, 0x4d, 0x00, 0x00, 0x00, 0x03,		/* "QEVM", 3 */
	0x07, 0x00, 0x00, 0x00, 0x0d,				/* CONFIGURATION, 13 */
	'p', 'c', '-', 'i', '4', '4', '0', 'f', 'x', '-', '7', '.', '2',
	0x08, 0x00, 0x01, 0x00, 0x00,				/* OPEN_RETURN_PATH */
	0x08, 0x00, 0x02, 0x00, 0x04, 0x00, 0x00, 0x00, 0x01,	/* PING 1 */
	0x01, 0x00, 0x00, 0x00, 0x02, 0x03, 'r', 'a', 'm',	/* START 2 "ram" */
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04,		/* instance 0, version 4 */
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x20, 0x04,		/* 8192 | MEM_SIZE */
	0x06, 'p', 'c', '.', 'r', 'a', 'm',
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x20, 0x00,		/* 8192 */
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10,		/* EOS */
	0x7e, 0x00, 0x00, 0x00, 0x02,				/* FOOTER 2 */
	0x02, 0x00, 0x00, 0x00, 0x02,				/* PART 2 */
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02,		/* 0 | ZERO */
	0x06, 'p', 'c', '.', 'r', 'a', 'm', 0x00,		/* fill 0 */
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x28,		/* 4096 | CONTINUE | PAGE */
};
static const uint8_t literal_tail[] = {
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10,		/* EOS */
	0x7e, 0x00, 0x00, 0x00, 0x02,
	0x03, 0x00, 0x00, 0x00, 0x02,				/* END 2 */
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10,
	0x7e, 0x00, 0x00, 0x00, 0x02,
};

static void literal(struct bytes *b)
{
	uint8_t page[4096];

	memset(page, 0xab, sizeof(page));
	*b = (struct bytes){ 0 };
	b_put(b, literal_head, sizeof(literal_head));
	b_put(b, page, sizeof(page));
	b_put(b, literal_tail, sizeof(literal_tail));
	b_put(b, device_tail, sizeof(device_tail));
}

TEST(writer_writes_the_hand_written_bytes)
{
	struct qstream_config cfg = { .has_machine = true, .machine = "pc-i440fx-7.2" };
	struct qstream_block blk = { .idstr = "pc.ram", .used_length = 8192 };
	struct bytes out = { 0 }, want;
	struct qstream_sink sink = { membuf_write, &out };
	struct qstream_writer *w = qstream_writer_new(&sink);
	uint8_t page[4096];

	memset(page, 0xab, sizeof(page));
	CHECK(w);
	CHECK_EQ(qstream_writer_header(w, &cfg), 0);
	CHECK_EQ(qstream_writer_command(w, QSTREAM_CMD_OPEN_RETURN_PATH, 0), 0);
	CHECK_EQ(qstream_writer_command(w, QSTREAM_CMD_PING, 1), 0);
	CHECK_EQ(qstream_writer_ram_begin(w, QSTREAM_RAM_SETUP, 2), 0);
	CHECK_EQ(qstream_writer_ram_blocks(w, &blk, 1), 0);
	CHECK_EQ(qstream_writer_ram_eos(w), 0);
	CHECK_EQ(qstream_writer_ram_begin(w, QSTREAM_RAM_ITERATE, 2), 0);
	CHECK_EQ(qstream_writer_ram_zero(w, 0, 0, 0), 0);
	CHECK_EQ(qstream_writer_ram_page(w, 0, 4096, page), 0);
	CHECK_EQ(qstream_writer_ram_eos(w), 0);
	CHECK_EQ(qstream_writer_ram_begin(w, QSTREAM_RAM_COMPLETE, 2), 0);
	CHECK_EQ(qstream_writer_ram_eos(w), 0);
	CHECK_EQ(qstream_writer_device(w, device_tail, 10), 0);
	CHECK_EQ(qstream_writer_device(w, device_tail + 10, sizeof(device_tail) - 10), 0);
	CHECK_EQ(qstream_writer_flush(w), 0);

	literal(&want);
	CHECK_EQ(out.len, want.len);
	for (size_t i = 0; i < want.len; i++)
		CHECK_MSG(out.p[i] == want.p[i], "byte %zu: 0x%02x, expected 0x%02x", i, out.p[i],
			  want.p[i]);
	CHECK_EQ(qstream_writer_stats(w)->pages, 1);
	CHECK_EQ(qstream_writer_stats(w)->zero_pages, 1);
	CHECK_EQ(qstream_writer_stats(w)->device_bytes, sizeof(device_tail));
	CHECK_EQ(qstream_writer_stats(w)->bytes, want.len);
	qstream_writer_free(w);
	b_free(&out);
	b_free(&want);
}

TEST(parser_reads_the_hand_written_bytes)
{
	static struct recorder r;
	struct bytes b;
	const struct ev *e = r.ev;

	literal(&b);
	recorder_init(&r);
	CHECK_EQ(parse(b.p, b.len, 0, &r, NULL, NULL, 0), 0);
	CHECK_EQ(r.n, 14);
	CHECK(e[0].type == QSTREAM_EV_CONFIG && !strcmp(e[0].name, "pc-i440fx-7.2") && !e[0].zero);
	CHECK(e[1].type == QSTREAM_EV_COMMAND && e[1].kind == QSTREAM_CMD_OPEN_RETURN_PATH);
	CHECK_EQ(e[1].offset, 26);
	CHECK(e[2].type == QSTREAM_EV_COMMAND && e[2].kind == QSTREAM_CMD_PING && e[2].value == 1);
	CHECK(e[3].type == QSTREAM_EV_RAM_BEGIN && e[3].kind == QSTREAM_RAM_SETUP && e[3].id == 2);
	CHECK_EQ(e[3].offset, 40);
	CHECK(e[4].type == QSTREAM_EV_RAM_BLOCKS && e[4].count == 1 && !strcmp(e[4].name, "pc.ram"));
	CHECK(e[5].type == QSTREAM_EV_RAM_EOS && e[5].kind == QSTREAM_RAM_SETUP);
	CHECK(e[6].type == QSTREAM_EV_RAM_BEGIN && e[6].kind == QSTREAM_RAM_ITERATE);
	CHECK(e[7].type == QSTREAM_EV_RAM_PAGE && e[7].zero && e[7].fill == 0 && e[7].page_off == 0 &&
	      e[7].block == 0);
	CHECK(e[8].type == QSTREAM_EV_RAM_PAGE && !e[8].zero && e[8].first_byte == 0xab &&
	      e[8].page_off == 4096);
	CHECK(e[9].type == QSTREAM_EV_RAM_EOS && e[9].kind == QSTREAM_RAM_ITERATE);
	CHECK(e[10].type == QSTREAM_EV_RAM_BEGIN && e[10].kind == QSTREAM_RAM_COMPLETE);
	CHECK(e[11].type == QSTREAM_EV_RAM_EOS && e[11].kind == QSTREAM_RAM_COMPLETE);
	CHECK(e[12].type == QSTREAM_EV_DEVICE);
	CHECK_EQ(e[12].offset, b.len - sizeof(device_tail));
	CHECK(e[13].type == QSTREAM_EV_END);
	CHECK_EQ(e[13].offset, b.len);
	CHECK_EQ(r.device.len, sizeof(device_tail));
	CHECK(!memcmp(r.device.p, device_tail, sizeof(device_tail)));
	b_free(&b);
	b_free(&r.device);
}

TEST(stream_without_configuration_and_with_uuid)
{
	static struct recorder r;
	struct bytes b = { 0 }, out = { 0 };
	uint8_t uuid[16];

	for (int i = 0; i < 16; i++)
		uuid[i] = (uint8_t)(0xc0 + i);
	/* no configuration section at all (machine types before 2.9) */
	s_header(&b, NULL);
	s_setup(&b);
	s_part(&b, 0x03, 2);
	s_eos(&b, 2);
	b_put(&b, device_tail, sizeof(device_tail));
	CHECK_EQ(round_trip(b.p, b.len, 0, &out, &r), 0);
	CHECK(r.ev[0].type == QSTREAM_EV_CONFIG && !strcmp(r.ev[0].name, "(none)"));
	CHECK(out.len == b.len && !memcmp(out.p, b.p, b.len));
	b_free(&b);
	b_free(&out);
	b_free(&r.device);

	/* with validate-uuid: the configuration/uuid subsection */
	s_header(&b, "pc-q35-7.2");
	b8(&b, 0x05);
	bname(&b, "configuration/uuid");
	b32(&b, 1);
	b_put(&b, uuid, 16);
	s_setup(&b);
	s_part(&b, 0x03, 2);
	s_eos(&b, 2);
	b_put(&b, device_tail, sizeof(device_tail));
	CHECK_EQ(round_trip(b.p, b.len, 0, &out, &r), 0);
	CHECK(r.ev[0].zero && r.ev[0].first_byte == 0xc0 && !strcmp(r.ev[0].name, "pc-q35-7.2"));
	CHECK(out.len == b.len && !memcmp(out.p, b.p, b.len));
	b_free(&b);
	b_free(&out);
	b_free(&r.device);
}

/* ---- a larger stream: rounds, blocks, CONTINUE across sections --------- */

struct big {
	struct bytes b;
	size_t device_at;		/* offset of the device state */
	unsigned pages, zero_pages, sections;
};

static void big_stream(struct big *g, uint64_t seed)
{
	static uint8_t ram[16 * 4096];
	uint64_t st = seed;
	const char *last = NULL;
	char longname[256];

	memset(longname, 'n', 255);
	longname[255] = '\0';
	memset(g, 0, sizeof(*g));
	td_fill(ram, sizeof(ram), MIX_RANDOM, seed);
	s_header(&g->b, "pc-i440fx-7.2");
	s_cmd(&g->b, 1, 0);
	s_cmd(&g->b, 2, 4);
	b32(&g->b, 1);
	s_start(&g->b, 7, "ram", 0, 4);
	b64(&g->b, ((16 + 2 + 1) * 4096) | 0x04);
	bname(&g->b, "pc.ram");
	b64(&g->b, 16 * 4096);
	bname(&g->b, "pc.bios");
	b64(&g->b, 2 * 4096);
	bname(&g->b, longname);		/* the longest name a block can have */
	b64(&g->b, 4096);
	s_eos(&g->b, 7);
	g->sections = 1;
	for (int round = 0; round < 4; round++) {
		s_part(&g->b, round == 3 ? 0x03 : 0x02, 7);
		g->sections++;
		for (int i = 0; i < 12; i++) {
			uint64_t r = td_rand(&st);
			const char *name = (r & 7) == 0 ? "pc.bios" : (r & 7) == 1 ? longname : "pc.ram";
			unsigned pages = name == longname ? 1 : name[3] == 'b' ? 2 : 16;
			uint64_t off = ((r >> 8) % pages) * 4096;
			const char *hdr = name == last ? NULL : name;

			if ((r >> 20) & 1) {
				s_zero(&g->b, hdr, off, (r >> 24) & 1 ? 0 : (uint8_t)(r >> 32));
				g->zero_pages++;
			} else {
				s_page(&g->b, hdr, off, ram + ((r >> 40) % 16) * 4096);
				g->pages++;
			}
			last = name;
		}
		s_eos(&g->b, 7);
		if (round == 1) {
			s_cmd(&g->b, 2, 4);	/* a PING between sections */
			b32(&g->b, 2);
		}
	}
	g->device_at = g->b.len;
	b_put(&g->b, device_tail, sizeof(device_tail));
}

TEST(round_trip_gives_the_same_bytes)
{
	static struct recorder r;
	struct bytes out = { 0 };
	struct big g;

	for (uint64_t seed = 1; seed <= 20; seed++) {
		big_stream(&g, seed);
		CHECK_EQ(round_trip(g.b.p, g.b.len, 0, &out, &r), 0);
		CHECK_MSG(out.len == g.b.len, "seed %llu: %zu bytes out of %zu",
			  (unsigned long long)seed, out.len, g.b.len);
		for (size_t i = 0; i < out.len; i++)
			CHECK_MSG(out.p[i] == g.b.p[i], "seed %llu: byte %zu differs",
				  (unsigned long long)seed, i);
		b_free(&out);
		b_free(&r.device);
		b_free(&g.b);
	}
}

TEST(any_chunking_gives_the_same_events_and_bytes)
{
	static struct recorder r;
	static const size_t chunks[] = { 1, 2, 3, 7, 8, 9, 100, 4095, 4096, 4097, 10000 };
	struct bytes whole = { 0 }, out = { 0 };
	uint64_t digest;
	unsigned n;
	struct big g;

	big_stream(&g, 42);
	CHECK_EQ(round_trip(g.b.p, g.b.len, 0, &whole, &r), 0);
	digest = r.digest;
	n = r.non_device;
	b_free(&r.device);
	for (size_t c = 0; c < sizeof(chunks) / sizeof(chunks[0]); c++) {
		CHECK_EQ(round_trip(g.b.p, g.b.len, chunks[c], &out, &r), 0);
		CHECK_MSG(r.digest == digest && r.non_device == n, "chunks of %zu: other events", chunks[c]);
		CHECK_MSG(out.len == whole.len && !memcmp(out.p, whole.p, out.len),
			  "chunks of %zu: other bytes", chunks[c]);
		b_free(&out);
		b_free(&r.device);
	}
	b_free(&whole);
	b_free(&g.b);
}

TEST(stats_count_what_went_by)
{
	struct qstream_parser *p = qstream_parser_new(NULL, NULL);
	const struct qstream_stats *s;
	struct big g;

	big_stream(&g, 5);
	CHECK(p);
	CHECK(!qstream_parser_in_device_state(p));
	CHECK_EQ(qstream_parser_feed(p, g.b.p, g.device_at), 0);
	CHECK(!qstream_parser_in_device_state(p));
	CHECK_EQ(qstream_parser_feed(p, g.b.p + g.device_at, g.b.len - g.device_at), 0);
	CHECK(qstream_parser_in_device_state(p));
	CHECK_EQ(qstream_parser_finish(p), 0);
	s = qstream_parser_stats(p);
	CHECK_EQ(s->pages, g.pages);
	CHECK_EQ(s->zero_pages, g.zero_pages);
	CHECK_EQ(s->ram_sections, g.sections);
	CHECK_EQ(s->device_bytes, sizeof(device_tail));
	CHECK_EQ(s->bytes, g.b.len);
	CHECK_EQ(qstream_parser_error(p), QSTREAM_OK);
	qstream_parser_free(p);
	b_free(&g.b);
}

TEST(truncation_at_every_byte)
{
	static struct recorder r;
	enum qstream_error code;
	struct big g;

	big_stream(&g, 9);
	for (size_t cut = 0; cut <= g.b.len; cut++) {
		int ret;

		recorder_init(&r);
		ret = parse(g.b.p, cut, 0, &r, &code, NULL, 0);
		if (cut <= g.device_at) {
			/* the stream may end only inside the device state */
			CHECK_MSG(ret == -EBADMSG && code == QSTREAM_E_TRUNCATED,
				  "prefix of %zu bytes: %d %s", cut, ret, qstream_error_name(code));
		} else {
			CHECK_MSG(ret == 0, "prefix of %zu bytes (in the device state): %s", cut,
				  qstream_error_name(code));
			CHECK_EQ(r.device.len, cut - g.device_at);
		}
		b_free(&r.device);
	}
	b_free(&g.b);
}

/* ---- hostile input ----------------------------------------------------- */

/* Header, configuration, the setup section and a PART header of section 2. */
static void upto_part(struct bytes *b)
{
	*b = (struct bytes){ 0 };
	s_header(b, "pc-i440fx-7.2");
	s_setup(b);
	s_part(b, 0x02, 2);
}

static const uint8_t zero_page[4096];

TEST(bad_header_and_configuration)
{
	struct bytes b = { 0 };

	b32(&b, 0x7f454c46);
	b32(&b, 3);
	expect_refused(&b, QSTREAM_E_MAGIC, "QEVM");
	b_free(&b);
	b32(&b, 0x5145564d);
	b32(&b, 2);
	expect_refused(&b, QSTREAM_E_VERSION, "obsolete");
	b_free(&b);
	b32(&b, 0x5145564d);
	b32(&b, 4);
	expect_refused(&b, QSTREAM_E_VERSION, "version 4");
	b_free(&b);

	s_header(&b, NULL);
	b8(&b, 0x07);
	b32(&b, 0x1000);		/* a machine type of 4 KiB */
	expect_refused(&b, QSTREAM_E_LENGTH, "machine type of 4096 bytes");
	b_free(&b);
	s_header(&b, NULL);
	b8(&b, 0x07);
	b32(&b, 0xffffffff);
	expect_refused(&b, QSTREAM_E_LENGTH, "machine type");
	b_free(&b);
	s_header(&b, NULL);
	b8(&b, 0x07);
	b32(&b, 0);
	expect_refused(&b, QSTREAM_E_FIELD, "empty machine type");
	b_free(&b);
	s_header(&b, NULL);
	b8(&b, 0x07);
	b32(&b, 3);
	b_put(&b, "pc\0", 3);
	expect_refused(&b, QSTREAM_E_FIELD, "NUL");
	b_free(&b);

	s_header(&b, "pc");
	s_header(&b, NULL);		/* a stray second header: 0x51 is no item */
	expect_refused(&b, QSTREAM_E_UNKNOWN, "section type 0x51");
	b_free(&b);
	s_header(&b, "pc");
	b8(&b, 0x07);			/* a second configuration */
	expect_refused(&b, QSTREAM_E_ORDER, "configuration");
	b_free(&b);
	s_header(&b, NULL);
	s_setup(&b);
	b8(&b, 0x05);			/* a subsection away from the configuration */
	expect_refused(&b, QSTREAM_E_ORDER, "subsection");
	b_free(&b);
	s_header(&b, "pc");
	b8(&b, 0x05);
	bname(&b, "configuration/unheard-of");
	b32(&b, 1);
	expect_refused(&b, QSTREAM_E_UNKNOWN, "configuration/unheard-of");
	b_free(&b);
	s_header(&b, "pc");
	b8(&b, 0x05);
	bname(&b, "configuration/uuid");
	b32(&b, 2);
	expect_refused(&b, QSTREAM_E_VERSION, "version 2");
	b_free(&b);
	s_header(&b, "pc");
	for (int i = 0; i < 2; i++) {
		b8(&b, 0x05);
		bname(&b, "configuration/uuid");
		b32(&b, 1);
		b_put(&b, zero_page, 16);
	}
	expect_refused(&b, QSTREAM_E_DUPLICATE, "second subsection");
	b_free(&b);
	s_header(&b, "pc");
	b8(&b, 0x05);
	bname(&b, "configuration/target-page-bits");
	b32(&b, 1);
	expect_refused(&b, QSTREAM_E_FIELD, "x86");
	b_free(&b);
	s_header(&b, "pc");
	b8(&b, 0x05);
	b8(&b, 0);
	expect_refused(&b, QSTREAM_E_FIELD, "empty subsection name");
	b_free(&b);
}

TEST(bad_sections)
{
	struct bytes b = { 0 };

	s_header(&b, "pc");
	b8(&b, 0x42);
	expect_refused(&b, QSTREAM_E_UNKNOWN, "section type 0x42");
	b_free(&b);
	s_header(&b, "pc");
	b8(&b, 0x7e);
	expect_refused(&b, QSTREAM_E_FOOTER, "outside a section");
	b_free(&b);
	s_header(&b, "pc");
	b8(&b, 0x06);
	expect_refused(&b, QSTREAM_E_ORDER, "VM description");
	b_free(&b);
	s_header(&b, "pc");
	s_start(&b, 2, "ram", 0, 5);
	expect_refused(&b, QSTREAM_E_VERSION, "\"ram\" version 5");
	b_free(&b);
	s_header(&b, "pc");
	s_start(&b, 2, "ram", 1, 4);
	expect_refused(&b, QSTREAM_E_FIELD, "instance 1");
	b_free(&b);
	s_header(&b, "pc");
	s_start(&b, 2, "vfio", 0, 1);
	expect_refused(&b, QSTREAM_E_UNKNOWN, "\"vfio\"");
	b_free(&b);
	s_header(&b, "pc");
	b8(&b, 0x01);
	b32(&b, 2);
	b8(&b, 0);
	expect_refused(&b, QSTREAM_E_FIELD, "empty section name");
	b_free(&b);
	s_header(&b, "pc");
	s_setup(&b);
	s_start(&b, 3, "ram", 0, 4);
	expect_refused(&b, QSTREAM_E_DUPLICATE, "second \"ram\"");
	b_free(&b);
	s_header(&b, "pc");
	s_part(&b, 0x02, 2);
	expect_refused(&b, QSTREAM_E_ORDER, "before the RAM setup");
	b_free(&b);
	s_header(&b, "pc");
	s_setup(&b);
	s_part(&b, 0x02, 9);
	expect_refused(&b, QSTREAM_E_ORDER, "section id 9");
	b_free(&b);
	s_header(&b, "pc");
	s_setup(&b);
	s_part(&b, 0x03, 2);
	s_eos(&b, 2);
	s_part(&b, 0x02, 2);
	expect_refused(&b, QSTREAM_E_ORDER, "after the last RAM section");
	b_free(&b);

	/* footers: missing, of another section */
	upto_part(&b);
	b64(&b, 0x10);
	s_part(&b, 0x02, 2);
	expect_refused(&b, QSTREAM_E_FOOTER, "no footer");
	b_free(&b);
	upto_part(&b);
	b64(&b, 0x10);
	b8(&b, 0x7e);
	b32(&b, 3);
	expect_refused(&b, QSTREAM_E_FOOTER, "footer of section 3");
	b_free(&b);

	/* device state too early */
	s_header(&b, "pc");
	b_put(&b, device_tail, sizeof(device_tail));
	expect_refused(&b, QSTREAM_E_ORDER, "before any RAM section");
	b_free(&b);
	upto_part(&b);
	s_eos(&b, 2);
	b_put(&b, device_tail, sizeof(device_tail));
	expect_refused(&b, QSTREAM_E_ORDER, "before the end of RAM");
	b_free(&b);
	s_header(&b, "pc");
	s_setup(&b);
	b8(&b, 0x00);			/* EOF right after setup */
	expect_refused(&b, QSTREAM_E_ORDER, "end of file");
	b_free(&b);
}

TEST(bad_block_lists)
{
	struct bytes b = { 0 };

	s_header(&b, "pc");
	s_start(&b, 2, "ram", 0, 4);
	b64(&b, 0x10);			/* EOS with no list */
	expect_refused(&b, QSTREAM_E_ORDER, "without a block list");
	b_free(&b);
	s_header(&b, "pc");
	s_start(&b, 2, "ram", 0, 4);
	b64(&b, 0x04);
	expect_refused(&b, QSTREAM_E_LENGTH, "MEM_SIZE of 0 bytes");
	b_free(&b);
	s_header(&b, "pc");
	s_start(&b, 2, "ram", 0, 4);
	b64(&b, (1ull << 60) | 0x04);
	expect_refused(&b, QSTREAM_E_LENGTH, "at most");
	b_free(&b);
	s_header(&b, "pc");
	s_start(&b, 2, "ram", 0, 4);
	b64(&b, 0x2000 | 0x04 | 0x20);
	expect_refused(&b, QSTREAM_E_FIELD, "MEM_SIZE with CONTINUE");
	b_free(&b);
	s_header(&b, "pc");
	s_start(&b, 2, "ram", 0, 4);
	b64(&b, 0x2000 | 0x04);
	bname(&b, "pc.ram");
	b64(&b, 0x3000);		/* more than the total */
	expect_refused(&b, QSTREAM_E_LENGTH, "longer than its MEM_SIZE total");
	b_free(&b);
	s_header(&b, "pc");
	s_start(&b, 2, "ram", 0, 4);
	b64(&b, 0x2000 | 0x04);
	bname(&b, "pc.ram");
	b64(&b, 0x1800);		/* not whole pages */
	expect_refused(&b, QSTREAM_E_LENGTH, "not whole pages");
	b_free(&b);
	s_header(&b, "pc");
	s_start(&b, 2, "ram", 0, 4);
	b64(&b, 0x2000 | 0x04);
	bname(&b, "pc.ram");
	b64(&b, 0);
	expect_refused(&b, QSTREAM_E_LENGTH, "of 0 bytes");
	b_free(&b);
	s_header(&b, "pc");
	s_start(&b, 2, "ram", 0, 4);
	b64(&b, 0x2000 | 0x04);
	b8(&b, 0);
	expect_refused(&b, QSTREAM_E_FIELD, "empty RAM block name");
	b_free(&b);
	s_header(&b, "pc");
	s_start(&b, 2, "ram", 0, 4);
	b64(&b, 0x2000 | 0x04);
	bname(&b, "pc.ram");
	b64(&b, 0x1000);
	bname(&b, "pc.ram");
	expect_refused(&b, QSTREAM_E_DUPLICATE, "listed twice");
	b_free(&b);
	/* more blocks than the cap, each of one page */
	s_header(&b, "pc");
	s_start(&b, 2, "ram", 0, 4);
	b64(&b, ((QSTREAM_MAX_BLOCKS + 1ull) * 4096) | 0x04);
	for (unsigned i = 0; i <= QSTREAM_MAX_BLOCKS; i++) {
		char name[16];

		snprintf(name, sizeof(name), "b%u", i);
		bname(&b, name);
		b64(&b, 4096);
	}
	expect_refused(&b, QSTREAM_E_LENGTH, "more than 128 RAM blocks");
	b_free(&b);
	/* a second MEM_SIZE, in the setup section and in a PART */
	s_header(&b, "pc");
	s_setup(&b);
	b.len -= 13;			/* before its EOS and footer */
	b64(&b, 0x1000 | 0x04);
	expect_refused(&b, QSTREAM_E_DUPLICATE, "second MEM_SIZE");
	b_free(&b);
	upto_part(&b);
	b64(&b, 0x1000 | 0x04);
	expect_refused(&b, QSTREAM_E_DUPLICATE, "second MEM_SIZE");
	b_free(&b);
}

TEST(bad_pages)
{
	struct bytes b = { 0 };

	upto_part(&b);
	s_page(&b, "pc.ram", 16 * 4096, zero_page);	/* one page past the block */
	expect_refused(&b, QSTREAM_E_RANGE, "beyond block \"pc.ram\"");
	b_free(&b);
	upto_part(&b);
	s_zero(&b, "pc.bios", 0, 0);
	s_zero(&b, NULL, 2 * 4096, 0);			/* CONTINUE, past pc.bios */
	expect_refused(&b, QSTREAM_E_RANGE, "beyond block \"pc.bios\"");
	b_free(&b);
	upto_part(&b);
	b64(&b, 0xfffffffffffff000ull | 0x08);
	bname(&b, "pc.ram");
	expect_refused(&b, QSTREAM_E_RANGE, "beyond block");
	b_free(&b);
	upto_part(&b);
	s_page(&b, "pc.rom", 0, zero_page);
	expect_refused(&b, QSTREAM_E_RANGE, "unknown RAM block \"pc.rom\"");
	b_free(&b);
	upto_part(&b);
	b64(&b, 0x08);
	b8(&b, 7);
	b_put(&b, "pc.ram\0", 7);
	expect_refused(&b, QSTREAM_E_FIELD, "NUL");
	b_free(&b);
	upto_part(&b);
	s_page(&b, NULL, 0, zero_page);			/* CONTINUE with no block yet */
	expect_refused(&b, QSTREAM_E_ORDER, "CONTINUE");
	b_free(&b);
	upto_part(&b);
	b64(&b, 0x08);
	b8(&b, 0);
	expect_refused(&b, QSTREAM_E_FIELD, "empty RAM block name");
	b_free(&b);
	s_header(&b, "pc");
	s_setup(&b);
	b.len -= 13;
	s_zero(&b, "pc.ram", 0, 0);			/* a page in the setup section */
	expect_refused(&b, QSTREAM_E_ORDER, "setup section");
	b_free(&b);
	upto_part(&b);
	b64(&b, 0x0a);					/* ZERO and PAGE at once */
	expect_refused(&b, QSTREAM_E_FIELD, "no single item");
	b_free(&b);
	upto_part(&b);
	b64(&b, 0x00);					/* no flag at all */
	expect_refused(&b, QSTREAM_E_FIELD, "no single item");
	b_free(&b);
	upto_part(&b);
	b64(&b, 0x1000 | 0x10);				/* EOS with an offset */
	expect_refused(&b, QSTREAM_E_FIELD, "EOS with offset");
	b_free(&b);
	upto_part(&b);
	b64(&b, 0x10 | 0x20);
	expect_refused(&b, QSTREAM_E_FIELD, "CONTINUE");
	b_free(&b);
	upto_part(&b);
	b64(&b, 0x400 | 0x08);
	expect_refused(&b, QSTREAM_E_UNKNOWN, "RAM flags 0x400");
	b_free(&b);
	upto_part(&b);
	b64(&b, 0x800);
	expect_refused(&b, QSTREAM_E_UNKNOWN, "RAM flags 0x800");
	b_free(&b);
	upto_part(&b);
	b64(&b, 0x01);
	expect_refused(&b, QSTREAM_E_UNKNOWN, "FULL");
	b_free(&b);
}

TEST(capabilities_are_refused_by_name)
{
	static const struct {
		uint64_t flags;
		const char *cap;
	} flags[] = {
		{ 0x40, "'xbzrle'" }, { 0x40 | 0x20, "'xbzrle'" }, { 0x100, "'compress'" },
		{ 0x200, "'multifd'" }, { 0x80, "rdma" },
	};
	static const struct {
		uint16_t cmd;
		const char *cap;
	} cmds[] = {
		{ 3, "POSTCOPY_ADVISE: migration capability 'postcopy-ram'" },
		{ 4, "'postcopy-ram'" }, { 5, "'postcopy-ram'" }, { 6, "'postcopy-ram'" },
		{ 7, "PACKAGED" }, { 9, "'postcopy-ram'" }, { 10, "RECV_BITMAP" },
		{ 8, "ENABLE_COLO: migration capability 'x-colo'" },
	};
	struct bytes b = { 0 };

	for (size_t i = 0; i < sizeof(flags) / sizeof(flags[0]); i++) {
		upto_part(&b);
		s_zero(&b, "pc.ram", 0, 0);
		b64(&b, 0x1000 | flags[i].flags);
		expect_refused(&b, QSTREAM_E_CAPABILITY, flags[i].cap);
		b_free(&b);
	}
	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
		s_header(&b, "pc");
		s_cmd(&b, cmds[i].cmd, 16);
		expect_refused(&b, QSTREAM_E_CAPABILITY, cmds[i].cap);
		b_free(&b);
	}
	/* a multifd channel connecting where the main stream was expected */
	b32(&b, 0x11223344);
	b32(&b, 1);
	expect_refused(&b, QSTREAM_E_CAPABILITY, "'multifd'");
	b_free(&b);
	s_header(&b, "pc");
	s_start(&b, 3, "block", 0, 1);
	expect_refused(&b, QSTREAM_E_CAPABILITY, "'block'");
	b_free(&b);
	s_header(&b, "pc");
	s_setup(&b);
	s_start(&b, 3, "dirty-bitmap", 0, 1);
	expect_refused(&b, QSTREAM_E_CAPABILITY, "'dirty-bitmaps'");
	b_free(&b);
	s_header(&b, "pc");
	b8(&b, 0x05);
	bname(&b, "configuration/capabilities");
	b32(&b, 1);
	expect_refused(&b, QSTREAM_E_CAPABILITY, "'x-ignore-shared'");
	b_free(&b);
}

TEST(bad_commands)
{
	struct bytes b = { 0 };

	s_header(&b, "pc");
	s_cmd(&b, 2, 4);
	b32(&b, 1);
	expect_refused(&b, QSTREAM_E_ORDER, "PING before OPEN_RETURN_PATH");
	b_free(&b);
	s_header(&b, "pc");
	s_cmd(&b, 1, 0);
	s_cmd(&b, 1, 0);
	expect_refused(&b, QSTREAM_E_DUPLICATE, "second OPEN_RETURN_PATH");
	b_free(&b);
	s_header(&b, "pc");
	s_cmd(&b, 1, 4);
	expect_refused(&b, QSTREAM_E_LENGTH, "OPEN_RETURN_PATH with 4 bytes");
	b_free(&b);
	s_header(&b, "pc");
	s_cmd(&b, 1, 0);
	s_cmd(&b, 2, 8);
	expect_refused(&b, QSTREAM_E_LENGTH, "PING with 8 bytes");
	b_free(&b);
	s_header(&b, "pc");
	s_cmd(&b, 0, 0);
	expect_refused(&b, QSTREAM_E_UNKNOWN, "command 0");
	b_free(&b);
	s_header(&b, "pc");
	s_cmd(&b, 0xffff, 0xffff);
	expect_refused(&b, QSTREAM_E_UNKNOWN, "command 65535");
	b_free(&b);
}

TEST(errors_stick_and_the_consumer_can_stop_it)
{
	static struct recorder r;
	struct qstream_parser *p;
	struct bytes b;
	struct big g;

	/* a consumer's error stops the parser and is what every call returns */
	big_stream(&g, 3);
	recorder_init(&r);
	r.fail_at = 7;
	p = qstream_parser_new(record, &r);
	CHECK(p);
	CHECK_EQ(qstream_parser_feed(p, g.b.p, g.b.len), -EIO);
	CHECK_EQ(r.n, 6);
	CHECK_EQ(qstream_parser_error(p), QSTREAM_E_CONSUMER);
	CHECK_EQ(qstream_parser_feed(p, g.b.p, 1), -EIO);
	CHECK_EQ(qstream_parser_finish(p), -EIO);
	CHECK_EQ(r.n, 6);
	qstream_parser_free(p);
	b_free(&g.b);

	/* bad input: nothing more comes out, whatever follows */
	literal(&b);
	b.p[5] = 9;			/* version 0x00000903 */
	recorder_init(&r);
	p = qstream_parser_new(record, &r);
	CHECK_EQ(qstream_parser_feed(p, b.p, 8), -EBADMSG);
	b_free(&b);
	literal(&b);
	CHECK_EQ(qstream_parser_feed(p, b.p, b.len), -EBADMSG);
	CHECK_EQ(r.n, 0);
	CHECK(strstr(qstream_parser_errmsg(p), "at byte 0"));
	qstream_parser_free(p);
	b_free(&b);
	b_free(&r.device);
}

/* ---- the writer's refusals --------------------------------------------- */

static int failing_write(void *opaque, const void *buf, size_t len)
{
	int *calls = opaque;

	(*calls)++;
	return -EPIPE;
}

/* A writer at the start of a PART section of one block of 2 pages. */
static struct qstream_writer *writer_in_part(struct bytes *out)
{
	struct qstream_config cfg = { .has_machine = true, .machine = "pc" };
	struct qstream_block blk = { .idstr = "pc.ram", .used_length = 8192 };
	struct qstream_sink sink = { membuf_write, out };
	struct qstream_writer *w = qstream_writer_new(&sink);

	CHECK(w);
	CHECK_EQ(qstream_writer_header(w, &cfg), 0);
	CHECK_EQ(qstream_writer_ram_begin(w, QSTREAM_RAM_SETUP, 2), 0);
	CHECK_EQ(qstream_writer_ram_blocks(w, &blk, 1), 0);
	CHECK_EQ(qstream_writer_ram_eos(w), 0);
	CHECK_EQ(qstream_writer_ram_begin(w, QSTREAM_RAM_ITERATE, 2), 0);
	return w;
}

#define WRITER_REFUSES(call, what)						\
	do {									\
		struct bytes _o = { 0 };					\
		struct qstream_writer *w = writer_in_part(&_o);			\
		CHECK_MSG((call) == -EINVAL, "%s was written", #call);		\
		CHECK_MSG(strstr(qstream_writer_errmsg(w), what), "\"%s\" does not say \"%s\"", \
			  qstream_writer_errmsg(w), what);			\
		CHECK_EQ(qstream_writer_ram_eos(w), -EINVAL);			\
		qstream_writer_free(w);						\
		b_free(&_o);							\
	} while (0)

TEST(writer_refuses_what_the_parser_would)
{
	struct qstream_config cfg = { .has_machine = true, .machine = "pc" };
	struct qstream_block blocks[2] = { { .idstr = "a", .used_length = 4096 },
					   { .idstr = "a", .used_length = 4096 } };
	struct qstream_config long_cfg = { .has_machine = true };

	WRITER_REFUSES(qstream_writer_ram_page(w, 0, 8192, zero_page), "not a page of block");
	WRITER_REFUSES(qstream_writer_ram_page(w, 0, 100, zero_page), "not a page of block");
	WRITER_REFUSES(qstream_writer_ram_zero(w, 1, 0, 0), "there are 1");
	WRITER_REFUSES(qstream_writer_header(w, &cfg), "second stream header");
	WRITER_REFUSES(qstream_writer_command(w, QSTREAM_CMD_PING, 1), "inside a RAM section");
	WRITER_REFUSES(qstream_writer_device(w, "x", 1), "device state before");
	WRITER_REFUSES(qstream_writer_ram_begin(w, QSTREAM_RAM_COMPLETE, 2), "inside a RAM");
	WRITER_REFUSES(qstream_writer_ram_blocks(w, blocks, 1), "outside the RAM setup");

	/* names: the writer's own checks */
	{
		struct bytes o = { 0 };
		struct qstream_sink sink = { membuf_write, &o };
		struct qstream_writer *w = qstream_writer_new(&sink);
		struct qstream_block big = { .used_length = 4096 };

		memset(big.idstr, 'x', sizeof(big.idstr));	/* 256 bytes, no NUL */
		CHECK_EQ(qstream_writer_header(w, &cfg), 0);
		CHECK_EQ(qstream_writer_ram_begin(w, QSTREAM_RAM_SETUP, 2), 0);
		CHECK_EQ(qstream_writer_ram_blocks(w, &big, 1), -EINVAL);
		CHECK(strstr(qstream_writer_errmsg(w), "name must be 1 to 255 bytes"));
		qstream_writer_free(w);
		b_free(&o);

		w = qstream_writer_new(&sink);
		CHECK_EQ(qstream_writer_header(w, &cfg), 0);
		CHECK_EQ(qstream_writer_ram_begin(w, QSTREAM_RAM_SETUP, 2), 0);
		CHECK_EQ(qstream_writer_ram_blocks(w, blocks, 2), -EINVAL);
		CHECK(strstr(qstream_writer_errmsg(w), "listed twice"));
		qstream_writer_free(w);
		b_free(&o);

		memset(long_cfg.machine, 'm', sizeof(long_cfg.machine));
		w = qstream_writer_new(&sink);
		CHECK_EQ(qstream_writer_header(w, &long_cfg), -EINVAL);
		CHECK_EQ(qstream_writer_flush(w), -EINVAL);
		CHECK_EQ(o.len, 0);
		qstream_writer_free(w);

		w = qstream_writer_new(&sink);
		CHECK_EQ(qstream_writer_command(w, QSTREAM_CMD_OPEN_RETURN_PATH, 0), -EINVAL);
		CHECK(strstr(qstream_writer_errmsg(w), "before the stream header"));
		qstream_writer_free(w);

		w = qstream_writer_new(&sink);
		CHECK_EQ(qstream_writer_header(w, &cfg), 0);
		CHECK_EQ(qstream_writer_command(w, QSTREAM_CMD_PING, 3), -EINVAL);
		CHECK(strstr(qstream_writer_errmsg(w), "PING before OPEN_RETURN_PATH"));
		qstream_writer_free(w);
		b_free(&o);
	}
}

TEST(writer_sink_errors_stick)
{
	struct qstream_config cfg = { .has_machine = true, .machine = "pc" };
	int calls = 0;
	struct qstream_sink sink = { failing_write, &calls };
	struct qstream_writer *w = qstream_writer_new(&sink);
	static uint8_t blob[64 << 10];

	CHECK_EQ(qstream_writer_header(w, &cfg), 0);	/* buffered */
	CHECK_EQ(calls, 0);
	CHECK_EQ(qstream_writer_flush(w), -EPIPE);
	CHECK_EQ(calls, 1);
	CHECK_EQ(qstream_writer_flush(w), -EPIPE);
	CHECK_EQ(qstream_writer_ram_begin(w, QSTREAM_RAM_SETUP, 2), -EPIPE);
	CHECK_EQ(qstream_writer_device(w, blob, sizeof(blob)), -EPIPE);
	CHECK_EQ(calls, 1);		/* reported once, never tried again */
	CHECK(strstr(qstream_writer_errmsg(w), "Broken pipe"));
	qstream_writer_free(w);
}

/* ---- the return path ---------------------------------------------------- */

struct rp_rec {
	struct qstream_rp_msg m[16];
	unsigned n;
};

static int rp_record(void *opaque, const struct qstream_rp_msg *m)
{
	struct rp_rec *r = opaque;

	if (r->n < 16)
		r->m[r->n] = *m;
	r->n++;
	return 0;
}

static int rp_parse(const uint8_t *buf, size_t len, size_t chunk, struct rp_rec *r,
		    enum qstream_error *code, char *msg, size_t msglen)
{
	struct qstream_rp_parser *rp = qstream_rp_parser_new(rp_record, r);
	int ret = 0;

	CHECK(rp);
	memset(r, 0, sizeof(*r));
	for (size_t off = 0; off < len && !ret; ) {
		size_t n = chunk && chunk < len - off ? chunk : len - off;

		ret = qstream_rp_parser_feed(rp, buf + off, n);
		off += n;
	}
	if (!ret)
		ret = qstream_rp_parser_finish(rp);
	*code = qstream_rp_parser_error(rp);
	if (msg)
		snprintf(msg, msglen, "%s", qstream_rp_parser_errmsg(rp));
	qstream_rp_parser_free(rp);
	return ret;
}

TEST(return_path_messages)
{
	static const uint8_t want[] = {
		0x00, 0x02, 0x00, 0x04, 0x00, 0x00, 0x00, 0x01,		/* PONG 1 */
		0x00, 0x06, 0x00, 0x04, 0x00, 0x00, 0x00, 0x07,		/* RESUME_ACK 7 */
		0x00, 0x01, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00,		/* SHUT 0 */
	};
	const struct qstream_rp_msg msgs[3] = {
		{ QSTREAM_RP_PONG, 1 }, { QSTREAM_RP_RESUME_ACK, 7 }, { QSTREAM_RP_SHUT, 0 },
	};
	uint8_t enc[3 * QSTREAM_RP_MSG_LEN];
	struct qstream_rp_msg bad = { (enum qstream_rp_type)99, 0 };
	struct rp_rec r;
	enum qstream_error code;

	for (int i = 0; i < 3; i++)
		CHECK_EQ(qstream_rp_encode(&msgs[i], enc + i * QSTREAM_RP_MSG_LEN),
			 QSTREAM_RP_MSG_LEN);
	CHECK(!memcmp(enc, want, sizeof(want)));
	CHECK_EQ(qstream_rp_encode(&bad, enc), 0);
	for (size_t chunk = 0; chunk <= 9; chunk++) {
		CHECK_EQ(rp_parse(want, sizeof(want), chunk, &r, &code, NULL, 0), 0);
		CHECK_EQ(r.n, 3);
		for (int i = 0; i < 3; i++)
			CHECK(r.m[i].type == msgs[i].type && r.m[i].value == msgs[i].value);
	}
	/* an empty return path, and one that ends between messages, are fine */
	CHECK_EQ(rp_parse(want, 0, 0, &r, &code, NULL, 0), 0);
	CHECK_EQ(rp_parse(want, 8, 0, &r, &code, NULL, 0), 0);
	CHECK_EQ(r.n, 1);
}

TEST(return_path_hostile)
{
	static const struct {
		uint8_t bytes[12];
		size_t len;
		enum qstream_error code;
		const char *want;
	} cases[] = {
		{ { 0, 4, 0, 12 }, 4, QSTREAM_E_CAPABILITY, "'postcopy-ram'" },
		{ { 0, 3, 0, 20 }, 4, QSTREAM_E_CAPABILITY, "'postcopy-ram'" },
		{ { 0, 5, 0, 8 }, 4, QSTREAM_E_CAPABILITY, "RECV_BITMAP" },
		{ { 0, 7, 0, 0 }, 4, QSTREAM_E_CAPABILITY, "'switchover-ack'" },
		{ { 0, 0, 0, 0 }, 4, QSTREAM_E_UNKNOWN, "type 0" },
		{ { 0xff, 0xff, 0, 4 }, 4, QSTREAM_E_UNKNOWN, "type 65535" },
		{ { 0, 2, 0, 8 }, 4, QSTREAM_E_LENGTH, "of 8 bytes" },
		{ { 0, 1, 0xff, 0xff }, 4, QSTREAM_E_LENGTH, "of 65535 bytes" },
		{ { 0, 1, 0, 4, 0, 0, 0, 0, 0, 2, 0, 4 }, 12, QSTREAM_E_ORDER, "after SHUT" },
		{ { 0, 2, 0, 4, 0, 0 }, 6, QSTREAM_E_TRUNCATED, "inside a message" },
		{ { 0, 2 }, 2, QSTREAM_E_TRUNCATED, "inside a message" },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct rp_rec r;
		enum qstream_error code;
		char msg[256];
		int ret = rp_parse(cases[i].bytes, cases[i].len, 0, &r, &code, msg, sizeof(msg));

		CHECK_MSG(ret == -EBADMSG && code == cases[i].code, "case %zu: %d \"%s\"", i, ret,
			  msg);
		CHECK_MSG(strstr(msg, cases[i].want), "case %zu: \"%s\"", i, msg);
		ret = rp_parse(cases[i].bytes, cases[i].len, 1, &r, &code, NULL, 0);
		CHECK_MSG(ret == -EBADMSG && code == cases[i].code, "case %zu byte by byte", i);
	}
}

/* ---- carried as records (qemu_stream_records.h) ------------------------ */

#define MAX_MSGS	4096

/* The encoder's messages, as a carrier would deliver them. */
struct msgs {
	unsigned n;
	unsigned kind[MAX_MSGS];
	struct bytes m[MAX_MSGS];
	unsigned fail_after;		/* refuse sending after this many, 0 never */
};

static int msgs_send(void *opaque, unsigned kind, const struct iovec *iov, int iovcnt)
{
	struct msgs *ms = opaque;

	if (ms->fail_after && ms->n >= ms->fail_after)
		return -EPIPE;
	CHECK(ms->n < MAX_MSGS);
	ms->kind[ms->n] = kind;
	ms->m[ms->n] = (struct bytes){ 0 };
	for (int i = 0; i < iovcnt; i++)
		b_put(&ms->m[ms->n], iov[i].iov_base, iov[i].iov_len);
	ms->n++;
	return 0;
}

static void msgs_free(struct msgs *ms)
{
	for (unsigned i = 0; i < ms->n; i++)
		b_free(&ms->m[i]);
	ms->n = 0;
}

/* QEMU's stream through the parser into an encoder of opts, in chunks. */
static int encode_with(const struct qsrec_enc_opts *o, const uint8_t *buf, size_t len,
		       size_t chunk, struct msgs *ms, struct qsrec_enc_stats *st, char *msg,
		       size_t msglen)
{
	struct qsrec_out out = { msgs_send, ms };
	struct qsrec_encoder *e = qsrec_encoder_new(&out, o);
	struct qstream_parser *p = qstream_parser_new(qsrec_encoder_event, e);
	int ret = 0;

	CHECK(e && p);
	ret = feed_chunks(p, buf, len, chunk);
	if (st)
		qsrec_encoder_stats(e, st);
	if (msg)
		snprintf(msg, msglen, "%s", qsrec_encoder_errmsg(e));
	qstream_parser_free(p);
	qsrec_encoder_free(e);
	return ret;
}

static int encode(const uint8_t *buf, size_t len, size_t chunk, bool lz4, struct msgs *ms,
		  struct qsrec_enc_stats *st, char *msg, size_t msglen)
{
	struct qsrec_enc_opts o = { .guest_name = "unit", .lz4 = lz4, .batch_pages = 5 };

	return encode_with(&o, buf, len, chunk, ms, st, msg, msglen);
}

/* The messages (but skip, when below n) into a decoder and its writer;
 * returns 0 or the first error, its reason in msg. */
static int decode(const struct msgs *ms, unsigned skip, struct bytes *out, char *msg,
		  size_t msglen)
{
	struct qstream_sink sink = { membuf_write, out };
	struct qstream_writer *w = qstream_writer_new(&sink);
	struct qsrec_decoder *d = qsrec_decoder_new(w);
	int ret = 0;

	CHECK(w && d);
	for (unsigned i = 0; i < ms->n && !ret; i++)
		if (i != skip)
			ret = qsrec_decoder_feed(d, ms->kind[i], ms->m[i].p, ms->m[i].len);
	if (!ret)
		ret = qsrec_decoder_finish(d);
	if (msg)
		snprintf(msg, msglen, "%s", qsrec_decoder_errmsg(d));
	if (!ret)
		CHECK(qsrec_decoder_committed(d) && qsrec_decoder_device_begun(d));
	qsrec_decoder_free(d);
	qstream_writer_free(w);
	return ret;
}

/* RAM as a destination QEMU would hold it after loading a stream: the
 * last copy of each page wins; every block of big_stream. */
struct ram_model {
	uint8_t blk[3][16 * 4096];
	bool seen[3][16];
};

static int model_event(void *opaque, const struct qstream_event *ev)
{
	struct ram_model *m = opaque;

	if (ev->type == QSTREAM_EV_RAM_PAGE) {
		unsigned b = ev->u.page.block, pg = (unsigned)(ev->u.page.offset / 4096);

		CHECK(b < 3 && pg < 16);
		if (ev->u.page.data)
			memcpy(m->blk[b] + pg * 4096, ev->u.page.data, 4096);
		else
			memset(m->blk[b] + pg * 4096, ev->u.page.fill, 4096);
		m->seen[b][pg] = true;
	}
	return 0;
}

static void model_of(const uint8_t *buf, size_t len, struct ram_model *m)
{
	struct qstream_parser *p = qstream_parser_new(model_event, m);

	memset(m, 0, sizeof(*m));
	CHECK(p);
	CHECK_MSG(qstream_parser_feed(p, buf, len) == 0 && qstream_parser_finish(p) == 0,
		  "the stream does not parse: %s", qstream_parser_errmsg(p));
	qstream_parser_free(p);
}

/* Only the device state and the non-page events, in order: the digest
 * of the recorder, pages left out. */
static uint64_t skeleton(const uint8_t *buf, size_t len, unsigned *pages)
{
	static struct recorder r;
	uint64_t h = 0xcbf29ce484222325ull;

	recorder_init(&r);
	CHECK_EQ(parse(buf, len, 0, &r, NULL, NULL, 0), 0);
	*pages = 0;
	for (unsigned i = 0; i < r.n && i < MAX_EVENTS; i++) {
		const struct ev *e = &r.ev[i];

		if (e->type == QSTREAM_EV_RAM_PAGE) {
			(*pages)++;
			continue;
		}
		for (const uint8_t *q = (const uint8_t *)e; q < (const uint8_t *)(e + 1); q++) {
			if (q >= (const uint8_t *)&e->offset &&
			    q < (const uint8_t *)&e->offset + sizeof(e->offset))
				continue;	/* offsets move: items change size */
			h = (h ^ *q) * 0x100000001b3ull;
		}
	}
	for (size_t i = 0; i < r.device.len; i++)
		h = (h ^ r.device.p[i]) * 0x100000001b3ull;
	b_free(&r.device);
	return h;
}

TEST(records_round_trip_gives_the_same_ram_and_the_rest_intact)
{
	static struct msgs ms;
	static struct ram_model a, b;
	struct bytes out = { 0 };
	char msg[320];
	struct big g;

	for (uint64_t seed = 1; seed <= 20; seed++) {
		for (int lz4 = 0; lz4 < 2; lz4++) {
			unsigned pa, pb;

			big_stream(&g, seed);
			CHECK_MSG(encode(g.b.p, g.b.len, seed * 97, lz4, &ms, NULL, msg,
					 sizeof(msg)) == 0, "seed %llu: %s", (unsigned long long)seed, msg);
			CHECK_MSG(decode(&ms, ~0u, &out, msg, sizeof(msg)) == 0, "seed %llu: %s",
				  (unsigned long long)seed, msg);
			model_of(g.b.p, g.b.len, &a);
			model_of(out.p, out.len, &b);
			CHECK_MSG(!memcmp(&a, &b, sizeof(a)), "seed %llu lz4 %d: other RAM",
				  (unsigned long long)seed, lz4);
			CHECK_EQ(skeleton(out.p, out.len, &pb), skeleton(g.b.p, g.b.len, &pa));
			CHECK_EQ(pb, pa);	/* every copy of every page, none merged away */
			msgs_free(&ms);
			b_free(&out);
			b_free(&g.b);
		}
	}
}

/* A stream as QEMU 7.2 writes it (every zero page with fill 0): through
 * the records and back it is the same stream, byte for byte, and the
 * compressible part travels in fewer bytes. */
static void qemu_like_stream(struct bytes *b, uint8_t *pages, size_t npages)
{
	s_header(b, "pc-i440fx-7.2");
	s_cmd(b, 1, 0);
	s_cmd(b, 2, 4);
	b32(b, 1);
	s_setup(b);
	for (int sec = 0; sec < 3; sec++) {
		s_part(b, sec == 2 ? 0x03 : 0x02, 2);
		for (unsigned i = 0; i < 16; i++) {
			const uint8_t *pg = pages + (i % npages) * 4096;

			if (sec == 1 && i % 3)
				continue;	/* later rounds: some pages again */
			if (i % 4 == 1)
				s_zero(b, i ? NULL : "pc.ram", i * 4096, 0);
			else
				s_page(b, i ? NULL : "pc.ram", i * 4096, pg);
		}
		s_page(b, "pc.bios", 4096, pages);
		s_zero(b, NULL, 0, 0);
		s_eos(b, 2);
	}
	b_put(b, device_tail, sizeof(device_tail));
}

TEST(records_give_qemus_stream_back_byte_for_byte)
{
	static uint8_t pages[4 * 4096];
	static struct msgs ms;
	struct bytes b = { 0 }, out = { 0 };
	struct qsrec_enc_stats st, st_raw;
	char msg[320];
	size_t wire = 0, wire_raw = 0;

	td_fill(pages, sizeof(pages), MIX_TEXT, 7);
	qemu_like_stream(&b, pages, 4);
	static const size_t chunks[] = { 0, 1, 9, 4096, 4105 };
	for (size_t c = 0; c < sizeof(chunks) / sizeof(chunks[0]); c++) {
		CHECK_MSG(encode(b.p, b.len, chunks[c], true, &ms, &st, msg, sizeof(msg)) == 0,
			  "%s", msg);
		CHECK_MSG(decode(&ms, ~0u, &out, msg, sizeof(msg)) == 0, "%s", msg);
		CHECK_MSG(out.len == b.len && !memcmp(out.p, b.p, b.len),
			  "chunks of %zu: %zu bytes back for %zu", chunks[c], out.len, b.len);
		wire = 0;
		for (unsigned i = 0; i < ms.n; i++)
			wire += ms.m[i].len;
		msgs_free(&ms);
		b_free(&out);
	}
	CHECK(st.pages[CKPT_ENC_LZ4] > 0 && st.pages[CKPT_ENC_RAW] == 0);
	CHECK(st.pages[CKPT_ENC_ZERO] > 0);
	CHECK_MSG(wire * 4 < b.len * 3, "text pages with LZ4: %zu bytes for a stream of %zu",
		  wire, b.len);
	/* without LZ4 the same pages go raw, and come back the same */
	CHECK_EQ(encode(b.p, b.len, 0, false, &ms, &st_raw, msg, sizeof(msg)), 0);
	for (unsigned i = 0; i < ms.n; i++)
		wire_raw += ms.m[i].len;
	CHECK(st_raw.pages[CKPT_ENC_LZ4] == 0 && st_raw.pages[CKPT_ENC_RAW] > 0);
	CHECK(wire_raw > wire && st_raw.record_bytes > st.record_bytes);
	CHECK_EQ(decode(&ms, ~0u, &out, msg, sizeof(msg)), 0);
	CHECK(out.len == b.len && !memcmp(out.p, b.p, b.len));
	msgs_free(&ms);
	b_free(&out);
	/* with zstd (format 1.2) the same pages take fewer bytes than LZ4's */
	{
		struct qsrec_enc_opts zo = { .guest_name = "unit", .lz4 = true, .zstd = true,
					     .batch_pages = 5 };
		struct qsrec_enc_stats st_zstd;

		CHECK_MSG(encode_with(&zo, b.p, b.len, 9, &ms, &st_zstd, msg, sizeof(msg)) == 0,
			  "%s", msg);
		CHECK(st_zstd.pages[CKPT_ENC_ZSTD] == st.pages[CKPT_ENC_LZ4]);
		CHECK(st_zstd.pages[CKPT_ENC_LZ4] == 0 && st_zstd.pages[CKPT_ENC_RAW] == 0);
		CHECK_MSG(st_zstd.record_bytes < st.record_bytes, "zstd %llu bytes, lz4 %llu",
			  (unsigned long long)st_zstd.record_bytes,
			  (unsigned long long)st.record_bytes);
		CHECK_MSG(decode(&ms, ~0u, &out, msg, sizeof(msg)) == 0, "%s", msg);
		CHECK(out.len == b.len && !memcmp(out.p, b.p, b.len));
		msgs_free(&ms);
		b_free(&out);
	}
	b_free(&b);
}

static bool has_device_tail(const struct bytes *out)
{
	for (size_t i = 0; out->len >= sizeof(device_tail) && i <= out->len - sizeof(device_tail); i++)
		if (!memcmp(out->p + i, device_tail, sizeof(device_tail)))
			return true;
	return false;
}

TEST(records_corrupted_or_lost_are_refused_before_the_device_state)
{
	static uint8_t pages[4 * 4096];
	static struct msgs ms;
	struct bytes b = { 0 }, out = { 0 };
	char msg[320];
	unsigned records = 0;

	td_fill(pages, sizeof(pages), MIX_RANDOM, 3);
	qemu_like_stream(&b, pages, 4);
	CHECK_EQ(encode(b.p, b.len, 0, false, &ms, NULL, msg, sizeof(msg)), 0);
	/* one bit of any record's bytes: its checksum (or the magic) fails */
	for (unsigned i = 0; i < ms.n; i++) {
		if (ms.kind[i] != QSREC_MSG_RECORDS)
			continue;
		records++;
		for (size_t at = 0; at < ms.m[i].len; at += ms.m[i].len / 7 + 1) {
			ms.m[i].p[at] ^= 0x08;
			CHECK_MSG(decode(&ms, ~0u, &out, msg, sizeof(msg)) == -EBADMSG,
				  "message %u byte %zu flipped: accepted", i, at);
			CHECK_MSG(strstr(msg, "the records: ") && (strstr(msg, "checksum mismatch") ||
				  strstr(msg, "bad magic") || strstr(msg, "record")),
				  "message %u byte %zu: %s", i, at, msg);
			CHECK_MSG(!has_device_tail(&out), "message %u: device state went out", i);
			ms.m[i].p[at] ^= 0x08;
			b_free(&out);
		}
	}
	CHECK(records > 5);
	/* a record lost or repeated */
	for (unsigned i = 0; i < ms.n; i++) {
		if (ms.kind[i] != QSREC_MSG_RECORDS)
			continue;
		CHECK_MSG(decode(&ms, i, &out, msg, sizeof(msg)) == -EBADMSG,
			  "message %u left out: accepted", i);
		CHECK_MSG(!has_device_tail(&out), "message %u left out: device state went out (%s)",
			  i, msg);
		b_free(&out);
	}
	/* an intact run still goes through */
	CHECK_EQ(decode(&ms, ~0u, &out, msg, sizeof(msg)), 0);
	CHECK(has_device_tail(&out));
	b_free(&out);
	msgs_free(&ms);
	b_free(&b);
}

/* A decoder fed the messages up to stop, then one more of kind and bytes. */
static void expect_decoder_refuses(const struct msgs *ms, unsigned stop, unsigned kind,
				   const void *buf, size_t len, const char *want)
{
	struct bytes out = { 0 };
	struct qstream_sink sink = { membuf_write, &out };
	struct qstream_writer *w = qstream_writer_new(&sink);
	struct qsrec_decoder *d = qsrec_decoder_new(w);
	int ret = 0;

	for (unsigned i = 0; i < stop && !ret; i++)
		ret = qsrec_decoder_feed(d, ms->kind[i], ms->m[i].p, ms->m[i].len);
	CHECK_MSG(ret == 0, "before the test message: %s", qsrec_decoder_errmsg(d));
	ret = qsrec_decoder_feed(d, kind, buf, len);
	if (!ret)
		ret = qsrec_decoder_finish(d);
	CHECK_MSG(ret < 0, "accepted; wanted \"%s\"", want);
	CHECK_MSG(strstr(qsrec_decoder_errmsg(d), want), "\"%s\", wanted \"%s\"",
		  qsrec_decoder_errmsg(d), want);
	/* errors stick */
	CHECK(qsrec_decoder_feed(d, ms->kind[0], ms->m[0].p, ms->m[0].len) == ret);
	qsrec_decoder_free(d);
	qstream_writer_free(w);
	b_free(&out);
}

static unsigned first_of(const struct msgs *ms, unsigned kind, uint32_t code)
{
	for (unsigned i = 0; i < ms->n; i++)
		if (ms->kind[i] == kind && (kind != QSREC_MSG_EVENT ||
					    (uint32_t)(ms->m[i].p[0] | ms->m[i].p[1] << 8) == code))
			return i;
	CHECK(0);
	return 0;
}

TEST(records_hostile_messages_are_refused)
{
	static uint8_t pages[4 * 4096];
	static struct msgs ms;
	struct bytes b = { 0 };
	uint8_t m[64];
	unsigned blocks, dev, eos_last = 0, hdr;

	td_fill(pages, sizeof(pages), MIX_TEXT, 5);
	qemu_like_stream(&b, pages, 4);
	CHECK_EQ(encode(b.p, b.len, 0, true, &ms, NULL, NULL, 0), 0);
	blocks = first_of(&ms, QSREC_MSG_EVENT, QSREC_EV_RAM_BLOCKS);
	dev = first_of(&ms, QSREC_MSG_EVENT, QSREC_EV_DEVICE);
	hdr = blocks + 1;	/* the magic and HEADER */
	CHECK(ms.kind[hdr] == QSREC_MSG_RECORDS && !memcmp(ms.m[hdr].p, CKPT_MAGIC, 8));
	for (unsigned i = 0; i < dev; i++)
		if (ms.kind[i] == QSREC_MSG_EVENT && ms.m[i].p[0] == QSREC_EV_RAM_EOS)
			eos_last = i;

	memcpy(m, "\x63\0\0\0", 4);
	expect_decoder_refuses(&ms, 0, QSREC_MSG_EVENT, m, 4, "unknown event 99");
	expect_decoder_refuses(&ms, 0, 7, m, 4, "a message of kind 7");
	expect_decoder_refuses(&ms, 0, QSREC_MSG_EVENT, m, 3, "a message of kind 1 and 3 bytes");
	/* a configuration whose lengths disagree, or a machine with a NUL */
	memcpy(m, ms.m[0].p, ms.m[0].len);
	m[6]++;
	expect_decoder_refuses(&ms, 0, QSREC_MSG_EVENT, m, ms.m[0].len, "configuration event");
	m[6]--;
	m[24 + 2] = 0;
	expect_decoder_refuses(&ms, 0, QSREC_MSG_EVENT, m, ms.m[0].len, "configuration event");
	/* the writer's rules: a PING before the configuration */
	expect_decoder_refuses(&ms, 0, QSREC_MSG_EVENT, ms.m[2].p, ms.m[2].len, "");
	/* a block list cut short, or with bytes after it */
	expect_decoder_refuses(&ms, blocks, QSREC_MSG_EVENT, ms.m[blocks].p, ms.m[blocks].len - 1,
			       "cut short");
	{
		struct bytes longer = { 0 };

		b_put(&longer, ms.m[blocks].p, ms.m[blocks].len);
		b8(&longer, 0);
		expect_decoder_refuses(&ms, blocks, QSREC_MSG_EVENT, longer.p, longer.len,
				       "bytes after its 2 blocks");
		b_free(&longer);
	}
	/* records before the block list, a record cut in two */
	expect_decoder_refuses(&ms, blocks, QSREC_MSG_RECORDS, ms.m[hdr].p, ms.m[hdr].len,
			       "before the RAM block list");
	expect_decoder_refuses(&ms, hdr, QSREC_MSG_RECORDS, ms.m[hdr + 1].p, ms.m[hdr + 1].len - 1,
			       "a message ends inside a record");
	/* the device state before the COMMIT */
	expect_decoder_refuses(&ms, eos_last + 1, QSREC_MSG_EVENT, ms.m[dev].p, ms.m[dev].len,
			       "device state before the records' COMMIT");
	/* the stream ends early */
	expect_decoder_refuses(&ms, dev - 1, QSREC_MSG_EVENT, m, 0, "");
	{
		struct bytes out = { 0 };
		struct qstream_sink sink = { membuf_write, &out };
		struct qstream_writer *w = qstream_writer_new(&sink);
		struct qsrec_decoder *d = qsrec_decoder_new(w);

		for (unsigned i = 0; i < dev; i++)
			CHECK_EQ(qsrec_decoder_feed(d, ms.kind[i], ms.m[i].p, ms.m[i].len), 0);
		CHECK(qsrec_decoder_committed(d) && !qsrec_decoder_device_begun(d));
		CHECK(qsrec_decoder_finish(d) == -EBADMSG);
		CHECK(strstr(qsrec_decoder_errmsg(d), "before the device state"));
		qsrec_decoder_free(d);
		qstream_writer_free(w);
		b_free(&out);
	}
	/* records after the COMMIT */
	expect_decoder_refuses(&ms, dev, QSREC_MSG_RECORDS, ms.m[hdr + 1].p, ms.m[hdr + 1].len,
			       "after their COMMIT");
	msgs_free(&ms);
	b_free(&b);
}

TEST(records_encoder_failures_stick_and_say_why)
{
	static uint8_t pages[4 * 4096];
	static struct msgs ms;
	struct bytes b = { 0 };
	char msg[320];

	td_fill(pages, sizeof(pages), MIX_TEXT, 5);
	qemu_like_stream(&b, pages, 4);
	for (unsigned after = 1; after < 30; after += 3) {
		ms.fail_after = after;
		CHECK_MSG(encode(b.p, b.len, 100, true, &ms, NULL, msg, sizeof(msg)) < 0,
			  "sending fails after %u messages: encoded anyway", after);
		CHECK_MSG(strstr(msg, "Broken pipe"), "after %u: %s", after, msg);
		CHECK_EQ(ms.n, after);
		msgs_free(&ms);
	}
	ms.fail_after = 0;
	b_free(&b);
}
