/*
 * Push parser of QEMU 7.2's outgoing migration stream (QEMU-STREAM.md).
 * Bytes come in arbitrary chunks; each field is gathered (or read in place
 * when the chunk holds all of it) and then checked before anything uses it.
 * The grammar it enforces, from the file header to the device state:
 *
 *   MAGIC VERSION [CONFIGURATION {SUBSECTION}]
 *   { COMMAND } RAM-START { COMMAND | RAM-PART } [RAM-END] ... { COMMAND }
 *   DEVICE-STATE...                  (FULL or EOF: opaque to the end)
 *
 *   RAM-START = START id "ram" 0 4  MEM_SIZE blocks...  EOS  FOOTER id
 *   RAM-PART  = PART id  { PAGE | ZERO }  EOS  FOOTER id     (END alike)
 *
 * The device state may begin only once the RAM-END section is complete.
 */
#include "qemu_stream.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "qemu_stream_int.h"
#include "qemu_stream_wire.h"

enum state {
	ST_MAGIC,		/* be32 magic, be32 version */
	ST_TOP,			/* one byte: what comes next */
	ST_CFG_LEN,		/* be32 */
	ST_CFG_NAME,
	ST_SUB_NAMELEN,		/* u8 */
	ST_SUB_NAME,
	ST_SUB_VERSION,		/* be32 */
	ST_SUB_UUID,		/* 16 bytes */
	ST_CMD,			/* be16 cmd, be16 len */
	ST_CMD_PING,		/* be32 */
	ST_SEC_ID,		/* be32 */
	ST_SEC_IDLEN,		/* u8 */
	ST_SEC_IDSTR,
	ST_SEC_INSTVER,		/* be32 instance, be32 version */
	ST_RAM_HDR,		/* be64 offset | flags */
	ST_BLK_IDLEN,		/* u8 */
	ST_BLK_IDSTR,
	ST_BLK_LEN,		/* be64 */
	ST_PAGE_IDLEN,		/* u8 */
	ST_PAGE_IDSTR,
	ST_PAGE_DATA,		/* QSTREAM_PAGE_SIZE bytes */
	ST_ZERO_FILL,		/* u8 */
	ST_FOOTER,		/* 0x7e, be32 section id */
	ST_DEVICE,		/* the rest, opaque */
	ST_DONE,
};

static const char *const state_names[] = {
	[ST_MAGIC] = "the file header",
	[ST_TOP] = "between sections",
	[ST_CFG_LEN] = "the configuration section",
	[ST_CFG_NAME] = "the configuration section",
	[ST_SUB_NAMELEN] = "a configuration subsection",
	[ST_SUB_NAME] = "a configuration subsection",
	[ST_SUB_VERSION] = "a configuration subsection",
	[ST_SUB_UUID] = "a configuration subsection",
	[ST_CMD] = "a command",
	[ST_CMD_PING] = "a command",
	[ST_SEC_ID] = "a section header",
	[ST_SEC_IDLEN] = "a section header",
	[ST_SEC_IDSTR] = "a section header",
	[ST_SEC_INSTVER] = "a section header",
	[ST_RAM_HDR] = "a RAM section",
	[ST_BLK_IDLEN] = "the RAM block list",
	[ST_BLK_IDSTR] = "the RAM block list",
	[ST_BLK_LEN] = "the RAM block list",
	[ST_PAGE_IDLEN] = "a page header",
	[ST_PAGE_IDSTR] = "a page header",
	[ST_PAGE_DATA] = "a page",
	[ST_ZERO_FILL] = "a zero page",
	[ST_FOOTER] = "a section footer",
	[ST_DEVICE] = "the device state",
	[ST_DONE] = "the end",
};

enum cfg_state {
	CFG_EXPECTED,		/* right after the file header */
	CFG_OPEN,		/* read; subsections may follow */
	CFG_EMITTED,		/* the CONFIG event went out */
};

struct qstream_parser {
	qstream_event_fn fn;
	void *opaque;
	struct qs_err err;

	enum state st;
	size_t need;			/* bytes of the current field */
	size_t have;			/* of them gathered in buf */
	uint64_t off;			/* bytes consumed */
	uint64_t field_off;		/* where the current field began */
	uint64_t item_off;		/* where the current item began */
	uint8_t buf[QSTREAM_PAGE_SIZE];

	enum cfg_state cfg_state;
	struct qstream_config cfg;
	char name[QSTREAM_NAME_MAX + 1];	/* subsection or section idstr */
	uint8_t sec_type;		/* of the section being read */
	uint32_t sec_id;
	bool rp_open;

	bool ram_started, ram_setup_done, ram_done;
	bool background;		/* QEMU's background-snapshot: no END section */
	bool in_ram;
	enum qstream_ram_section kind;	/* of the section being read */
	uint32_t ram_id;

	struct qstream_block blocks[QSTREAM_MAX_BLOCKS];
	unsigned nblocks;
	bool blocks_done;
	uint64_t blocks_left;		/* bytes of the MEM_SIZE total unlisted */

	uint64_t page_addr;		/* of the page being read */
	unsigned page_type;		/* QSW_RAM_PAGE or QSW_RAM_ZERO */
	unsigned page_block;
	int last_block;			/* QEMU's last_recv_block; -1 none */

	struct qstream_stats stats;
};

static const char *const error_names[QSTREAM_E_COUNT] = {
	[QSTREAM_OK] = "ok",
	[QSTREAM_E_TRUNCATED] = "truncated",
	[QSTREAM_E_MAGIC] = "bad magic",
	[QSTREAM_E_VERSION] = "unsupported version",
	[QSTREAM_E_CAPABILITY] = "unsupported capability",
	[QSTREAM_E_UNKNOWN] = "unknown item",
	[QSTREAM_E_ORDER] = "out of order",
	[QSTREAM_E_DUPLICATE] = "duplicate",
	[QSTREAM_E_LENGTH] = "bad length",
	[QSTREAM_E_RANGE] = "out of range",
	[QSTREAM_E_FIELD] = "bad field",
	[QSTREAM_E_FOOTER] = "bad section footer",
	[QSTREAM_E_CONSUMER] = "refused by the consumer",
};

const char *qstream_error_name(enum qstream_error e)
{
	return (unsigned)e < QSTREAM_E_COUNT ? error_names[e] : "unknown error";
}

int qs_vfail(struct qs_err *e, enum qstream_error code, int ret, uint64_t off,
	     const char *fmt, va_list ap)
{
	int n;

	if (e->ret)
		return e->ret;
	e->code = code;
	e->ret = ret;
	n = snprintf(e->msg, sizeof(e->msg), "%s at byte %llu: ", qstream_error_name(code),
		     (unsigned long long)off);
	if (n > 0 && (size_t)n < sizeof(e->msg))
		vsnprintf(e->msg + n, sizeof(e->msg) - n, fmt, ap);
	return ret;
}

int qs_fail(struct qs_err *e, enum qstream_error code, int ret, uint64_t off,
	    const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	ret = qs_vfail(e, code, ret, off, fmt, ap);
	va_end(ap);
	return ret;
}

__attribute__((format(printf, 3, 4)))
static int reject(struct qstream_parser *p, enum qstream_error code, const char *fmt, ...)
{
	va_list ap;
	int ret;

	va_start(ap, fmt);
	ret = qs_vfail(&p->err, code, -EBADMSG, p->field_off, fmt, ap);
	va_end(ap);
	return ret;
}

/* A capability that changes the stream: refused, named as QEMU names it. */
static int refuse_capability(struct qstream_parser *p, const char *cap, const char *what)
{
	return reject(p, QSTREAM_E_CAPABILITY, "%s: migration capability '%s' must be off",
		      what, cap);
}

static int emit(struct qstream_parser *p, struct qstream_event *ev)
{
	int r;

	if (!p->fn)
		return 0;
	r = p->fn(p->opaque, ev);
	if (!r)
		return 0;
	if (r > 0)
		r = -ECANCELED;
	return qs_fail(&p->err, QSTREAM_E_CONSUMER, r, ev->offset, "event %d: %s", ev->type,
		       strerror(-r));
}

static void expect(struct qstream_parser *p, enum state st, size_t need)
{
	p->st = st;
	p->need = need;
}

static int emit_config(struct qstream_parser *p)
{
	struct qstream_event ev = { .type = QSTREAM_EV_CONFIG, .offset = 0,
				    .u.config = &p->cfg };

	p->cfg_state = CFG_EMITTED;
	return emit(p, &ev);
}

static int emit_ram(struct qstream_parser *p, enum qstream_event_type type)
{
	struct qstream_event ev = { .type = type, .offset = p->item_off,
				    .u.ram = { .kind = p->kind, .section_id = p->ram_id } };

	return emit(p, &ev);
}

static int find_block(const struct qstream_parser *p, const char *name)
{
	for (unsigned i = 0; i < p->nblocks; i++)
		if (!strcmp(p->blocks[i].idstr, name))
			return (int)i;
	return -1;
}

/* A name of p->need bytes from field f into dst; no NUL inside. */
static int take_name(struct qstream_parser *p, char *dst, const uint8_t *f, const char *what)
{
	memcpy(dst, f, p->need);
	dst[p->need] = '\0';
	if (strlen(dst) != p->need)
		return reject(p, QSTREAM_E_FIELD, "%s with a NUL byte", what);
	return 0;
}

/* A name's length byte: names are never empty. */
static int name_len(struct qstream_parser *p, uint8_t n, enum state next, const char *what)
{
	if (!n)
		return reject(p, QSTREAM_E_FIELD, "empty %s", what);
	expect(p, next, n);
	return 0;
}

/* ---- top level --------------------------------------------------------- */

static int magic(struct qstream_parser *p, const uint8_t *f)
{
	uint32_t m = qs_be32(f), v = qs_be32(f + 4);

	if (m == QSW_MULTIFD_MAGIC)
		return refuse_capability(p, "multifd", "a multifd channel");
	if (m != QSW_MAGIC)
		return reject(p, QSTREAM_E_MAGIC, "0x%08x is not QEMU's \"QEVM\"", m);
	if (v != QSW_VERSION)
		return reject(p, QSTREAM_E_VERSION, "stream version %u%s, only %u is read", v,
			      v == QSW_VERSION_OLD ? " (obsolete)" : "", QSW_VERSION);
	p->cfg_state = CFG_EXPECTED;
	expect(p, ST_TOP, 1);
	return 0;
}

/* The device state may begin: only after the last RAM section. */
static int device_begins(struct qstream_parser *p, uint8_t type)
{
	if (p->cfg_state != CFG_EMITTED && emit_config(p))
		return p->err.ret;
	if (!p->ram_done && !(p->background && p->ram_setup_done))
		return reject(p, QSTREAM_E_ORDER, "device state (%s) before %s",
			      type == QSW_EOF ? "end of file" : "a FULL section",
			      p->ram_started ? "the end of RAM" : "any RAM section");
	p->st = ST_DEVICE;
	return 0;
}

static int top(struct qstream_parser *p, uint8_t type)
{
	p->item_off = p->field_off;
	if (type == QSW_CONFIGURATION && p->cfg_state == CFG_EXPECTED) {
		expect(p, ST_CFG_LEN, 4);
		return 0;
	}
	if (type == QSW_SUBSECTION && p->cfg_state == CFG_OPEN) {
		expect(p, ST_SUB_NAMELEN, 1);
		return 0;
	}
	if (p->cfg_state != CFG_EMITTED && emit_config(p))
		return p->err.ret;
	switch (type) {
	case QSW_CONFIGURATION:
		return reject(p, QSTREAM_E_ORDER, "configuration section not right after the header");
	case QSW_SUBSECTION:
		return reject(p, QSTREAM_E_ORDER, "subsection outside the configuration section");
	case QSW_COMMAND:
		expect(p, ST_CMD, 4);
		return 0;
	case QSW_SECTION_START:
	case QSW_SECTION_PART:
	case QSW_SECTION_END:
		p->sec_type = type;
		expect(p, ST_SEC_ID, 4);
		return 0;
	case QSW_SECTION_FOOTER:
		return reject(p, QSTREAM_E_FOOTER, "section footer outside a section");
	case QSW_VMDESCRIPTION:
		return reject(p, QSTREAM_E_ORDER, "VM description before the end of file");
	default:
		return reject(p, QSTREAM_E_UNKNOWN, "unknown section type 0x%02x", type);
	}
}

static int cfg_len(struct qstream_parser *p, uint32_t len)
{
	if (!len)
		return reject(p, QSTREAM_E_FIELD, "empty machine type");
	if (len > QSTREAM_NAME_MAX)
		return reject(p, QSTREAM_E_LENGTH, "machine type of %u bytes, at most %u", len,
			      QSTREAM_NAME_MAX);
	expect(p, ST_CFG_NAME, len);
	return 0;
}

static int sub_version(struct qstream_parser *p, uint32_t version)
{
	if (!strcmp(p->name, QSW_SUB_CAPABILITIES))
		return refuse_capability(p, "x-ignore-shared",
					 "subsection configuration/capabilities");
	if (!strcmp(p->name, QSW_SUB_PAGE_BITS))
		return reject(p, QSTREAM_E_FIELD, "subsection %s: target pages other than 4 KiB "
			      "(not an x86 stream)", p->name);
	if (strcmp(p->name, QSW_SUB_UUID))
		return reject(p, QSTREAM_E_UNKNOWN, "configuration subsection '%s'", p->name);
	if (version != 1)
		return reject(p, QSTREAM_E_VERSION, "subsection %s version %u, only 1 is read",
			      p->name, version);
	if (p->cfg.has_uuid)
		return reject(p, QSTREAM_E_DUPLICATE, "second subsection %s", p->name);
	expect(p, ST_SUB_UUID, QSW_UUID_LEN);
	return 0;
}

static const char *const postcopy_cmds[] = {
	[QSW_CMD_POSTCOPY_ADVISE] = "POSTCOPY_ADVISE",
	[QSW_CMD_POSTCOPY_LISTEN] = "POSTCOPY_LISTEN",
	[QSW_CMD_POSTCOPY_RUN] = "POSTCOPY_RUN",
	[QSW_CMD_POSTCOPY_RAM_DISCARD] = "POSTCOPY_RAM_DISCARD",
	[QSW_CMD_PACKAGED] = "PACKAGED",
	[QSW_CMD_POSTCOPY_RESUME] = "POSTCOPY_RESUME",
	[QSW_CMD_RECV_BITMAP] = "RECV_BITMAP",
};

static int command(struct qstream_parser *p, uint16_t cmd, uint16_t len)
{
	struct qstream_event ev = { .type = QSTREAM_EV_COMMAND, .offset = p->item_off };
	char what[64];

	switch (cmd) {
	case QSW_CMD_OPEN_RETURN_PATH:
		if (len)
			return reject(p, QSTREAM_E_LENGTH, "OPEN_RETURN_PATH with %u bytes", len);
		if (p->rp_open)
			return reject(p, QSTREAM_E_DUPLICATE, "second OPEN_RETURN_PATH");
		p->rp_open = true;
		ev.u.command.cmd = QSTREAM_CMD_OPEN_RETURN_PATH;
		expect(p, ST_TOP, 1);
		return emit(p, &ev);
	case QSW_CMD_PING:
		if (len != 4)
			return reject(p, QSTREAM_E_LENGTH, "PING with %u bytes, not 4", len);
		if (!p->rp_open)
			return reject(p, QSTREAM_E_ORDER, "PING before OPEN_RETURN_PATH");
		expect(p, ST_CMD_PING, 4);
		return 0;
	case QSW_CMD_ENABLE_COLO:
		return refuse_capability(p, "x-colo", "command ENABLE_COLO");
	case QSW_CMD_POSTCOPY_ADVISE:
	case QSW_CMD_POSTCOPY_LISTEN:
	case QSW_CMD_POSTCOPY_RUN:
	case QSW_CMD_POSTCOPY_RAM_DISCARD:
	case QSW_CMD_PACKAGED:
	case QSW_CMD_POSTCOPY_RESUME:
	case QSW_CMD_RECV_BITMAP:
		snprintf(what, sizeof(what), "command %s", postcopy_cmds[cmd]);
		return refuse_capability(p, "postcopy-ram", what);
	default:
		return reject(p, QSTREAM_E_UNKNOWN, "command %u", cmd);
	}
}

static int ping(struct qstream_parser *p, uint32_t value)
{
	struct qstream_event ev = { .type = QSTREAM_EV_COMMAND, .offset = p->item_off,
				    .u.command = { .cmd = QSTREAM_CMD_PING, .value = value } };

	expect(p, ST_TOP, 1);
	return emit(p, &ev);
}

/* ---- section headers and footers -------------------------------------- */

static int section_id(struct qstream_parser *p, uint32_t id)
{
	p->sec_id = id;
	if (p->sec_type == QSW_SECTION_START) {
		expect(p, ST_SEC_IDLEN, 1);
		return 0;
	}
	if (!p->ram_setup_done)
		return reject(p, QSTREAM_E_ORDER, "section %s %u before the RAM setup section",
			      p->sec_type == QSW_SECTION_PART ? "PART" : "END", id);
	if (p->ram_done)
		return reject(p, QSTREAM_E_ORDER, "section %s %u after the last RAM section",
			      p->sec_type == QSW_SECTION_PART ? "PART" : "END", id);
	if (id != p->ram_id)
		return reject(p, QSTREAM_E_ORDER, "section id %u was never started (ram is %u)",
			      id, p->ram_id);
	p->kind = p->sec_type == QSW_SECTION_PART ? QSTREAM_RAM_ITERATE : QSTREAM_RAM_COMPLETE;
	p->in_ram = true;
	p->stats.ram_sections++;
	expect(p, ST_RAM_HDR, 8);
	return emit_ram(p, QSTREAM_EV_RAM_BEGIN);
}

static int section_start(struct qstream_parser *p, uint32_t instance, uint32_t version)
{
	if (!strcmp(p->name, "block"))
		return refuse_capability(p, "block", "section \"block\" (block migration)");
	if (!strcmp(p->name, "dirty-bitmap"))
		return refuse_capability(p, "dirty-bitmaps", "section \"dirty-bitmap\"");
	if (strcmp(p->name, QSW_RAM_IDSTR))
		return reject(p, QSTREAM_E_UNKNOWN, "iterable section \"%s\": only \"ram\" is read",
			      p->name);
	if (p->ram_started)
		return reject(p, QSTREAM_E_DUPLICATE, "second \"ram\" setup section");
	if (instance != QSW_RAM_INSTANCE)
		return reject(p, QSTREAM_E_FIELD, "\"ram\" instance %u, not 0", instance);
	if (version != QSW_RAM_VERSION)
		return reject(p, QSTREAM_E_VERSION, "\"ram\" version %u, only %u is read", version,
			      QSW_RAM_VERSION);
	p->ram_started = true;
	p->ram_id = p->sec_id;
	p->kind = QSTREAM_RAM_SETUP;
	p->in_ram = true;
	p->stats.ram_sections++;
	expect(p, ST_RAM_HDR, 8);
	return emit_ram(p, QSTREAM_EV_RAM_BEGIN);
}

static int footer(struct qstream_parser *p, const uint8_t *f)
{
	uint32_t id = qs_be32(f + 1);

	if (f[0] != QSW_SECTION_FOOTER)
		return reject(p, QSTREAM_E_FOOTER, "section %u has no footer (0x%02x instead)",
			      p->ram_id, f[0]);
	if (id != p->ram_id)
		return reject(p, QSTREAM_E_FOOTER, "footer of section %u ends section %u", id,
			      p->ram_id);
	p->in_ram = false;
	if (p->kind == QSTREAM_RAM_SETUP)
		p->ram_setup_done = true;
	else if (p->kind == QSTREAM_RAM_COMPLETE)
		p->ram_done = true;
	expect(p, ST_TOP, 1);
	return emit_ram(p, QSTREAM_EV_RAM_EOS);
}

/* ---- RAM --------------------------------------------------------------- */

static int ram_header(struct qstream_parser *p, uint64_t v)
{
	unsigned flags = (unsigned)(v & QSW_RAM_FLAG_MASK);
	const unsigned known = QSW_RAM_ZERO | QSW_RAM_MEM_SIZE | QSW_RAM_PAGE | QSW_RAM_EOS |
			       QSW_RAM_CONTINUE;
	uint64_t addr = v & ~QSW_RAM_FLAG_MASK;
	bool cont = flags & QSW_RAM_CONTINUE;

	p->item_off = p->field_off;
	if (flags & QSW_RAM_XBZRLE)
		return refuse_capability(p, "xbzrle", "an XBZRLE-encoded page");
	if (flags & QSW_RAM_COMPRESS_PAGE)
		return refuse_capability(p, "compress", "a compressed page");
	if (flags & QSW_RAM_MULTIFD_FLUSH)
		return refuse_capability(p, "multifd", "a MULTIFD_FLUSH");
	if (flags & QSW_RAM_HOOK)
		return reject(p, QSTREAM_E_CAPABILITY, "an RDMA control hook: migration over "
			      "rdma is not read");
	if (flags & QSW_RAM_FULL)
		return reject(p, QSTREAM_E_UNKNOWN, "obsolete RAM flag FULL (0x001)");
	if (flags & ~known)
		return reject(p, QSTREAM_E_UNKNOWN, "RAM flags 0x%03x", flags & ~known);

	switch (flags & ~QSW_RAM_CONTINUE) {
	case QSW_RAM_MEM_SIZE:
		if (p->blocks_done)
			return reject(p, QSTREAM_E_DUPLICATE, "second MEM_SIZE block list");
		if (p->kind != QSTREAM_RAM_SETUP)
			return reject(p, QSTREAM_E_ORDER, "MEM_SIZE outside the setup section");
		if (cont)
			return reject(p, QSTREAM_E_FIELD, "MEM_SIZE with CONTINUE");
		if (!addr)
			return reject(p, QSTREAM_E_LENGTH, "MEM_SIZE of 0 bytes");
		if (addr > QSTREAM_MAX_RAM)
			return reject(p, QSTREAM_E_LENGTH, "MEM_SIZE of %llu bytes, at most %llu",
				      (unsigned long long)addr, QSTREAM_MAX_RAM);
		p->blocks_left = addr;
		expect(p, ST_BLK_IDLEN, 1);
		return 0;
	case QSW_RAM_EOS:
		if (cont || addr)
			return reject(p, QSTREAM_E_FIELD, "EOS with offset 0x%llx%s",
				      (unsigned long long)addr, cont ? " and CONTINUE" : "");
		if (p->kind == QSTREAM_RAM_SETUP && !p->blocks_done)
			return reject(p, QSTREAM_E_ORDER, "setup section without a block list");
		expect(p, ST_FOOTER, 5);
		return 0;
	case QSW_RAM_PAGE:
	case QSW_RAM_ZERO:
		if (p->kind == QSTREAM_RAM_SETUP)
			return reject(p, QSTREAM_E_ORDER, "a page in the setup section");
		p->page_addr = addr;
		p->page_type = flags & (QSW_RAM_PAGE | QSW_RAM_ZERO);
		if (!cont) {
			expect(p, ST_PAGE_IDLEN, 1);
			return 0;
		}
		if (p->last_block < 0)
			return reject(p, QSTREAM_E_ORDER, "CONTINUE before any page named its block");
		p->page_block = (unsigned)p->last_block;
		break;
	default:
		return reject(p, QSTREAM_E_FIELD, "RAM flags 0x%03x name no single item", flags);
	}
	/* a page of the last block */
	if (p->page_addr >= p->blocks[p->page_block].used_length)
		return reject(p, QSTREAM_E_RANGE, "page at 0x%llx beyond block \"%s\" of %llu bytes",
			      (unsigned long long)p->page_addr, p->blocks[p->page_block].idstr,
			      (unsigned long long)p->blocks[p->page_block].used_length);
	if (p->page_type == QSW_RAM_PAGE)
		expect(p, ST_PAGE_DATA, QSTREAM_PAGE_SIZE);
	else
		expect(p, ST_ZERO_FILL, 1);
	return 0;
}

static int page_block(struct qstream_parser *p, const uint8_t *f)
{
	int b;

	if (take_name(p, p->name, f, "RAM block name"))
		return p->err.ret;
	b = find_block(p, p->name);
	if (b < 0)
		return reject(p, QSTREAM_E_RANGE, "page of unknown RAM block \"%s\"", p->name);
	p->page_block = (unsigned)b;
	p->last_block = b;
	if (p->page_addr >= p->blocks[b].used_length)
		return reject(p, QSTREAM_E_RANGE, "page at 0x%llx beyond block \"%s\" of %llu bytes",
			      (unsigned long long)p->page_addr, p->blocks[b].idstr,
			      (unsigned long long)p->blocks[b].used_length);
	if (p->page_type == QSW_RAM_PAGE)
		expect(p, ST_PAGE_DATA, QSTREAM_PAGE_SIZE);
	else
		expect(p, ST_ZERO_FILL, 1);
	return 0;
}

static int page(struct qstream_parser *p, const uint8_t *data, uint8_t fill)
{
	struct qstream_event ev = {
		.type = QSTREAM_EV_RAM_PAGE, .offset = p->item_off,
		.u.page = { .block = p->page_block, .offset = p->page_addr, .data = data,
			    .fill = fill },
	};

	if (data)
		p->stats.pages++;
	else
		p->stats.zero_pages++;
	expect(p, ST_RAM_HDR, 8);
	return emit(p, &ev);
}

static int block_idlen(struct qstream_parser *p, uint8_t n)
{
	p->item_off = p->field_off;
	if (p->nblocks == QSTREAM_MAX_BLOCKS)
		return reject(p, QSTREAM_E_LENGTH, "more than %u RAM blocks", QSTREAM_MAX_BLOCKS);
	return name_len(p, n, ST_BLK_IDSTR, "RAM block name");
}

static int block_idstr(struct qstream_parser *p, const uint8_t *f)
{
	struct qstream_block *b = &p->blocks[p->nblocks];

	if (take_name(p, b->idstr, f, "RAM block name"))
		return p->err.ret;
	if (find_block(p, b->idstr) >= 0)
		return reject(p, QSTREAM_E_DUPLICATE, "RAM block \"%s\" listed twice", b->idstr);
	expect(p, ST_BLK_LEN, 8);
	return 0;
}

static int block_len(struct qstream_parser *p, uint64_t len)
{
	struct qstream_block *b = &p->blocks[p->nblocks];
	struct qstream_event ev = { .type = QSTREAM_EV_RAM_BLOCKS, .offset = p->item_off };

	if (!len || len % QSTREAM_PAGE_SIZE)
		return reject(p, QSTREAM_E_LENGTH, "RAM block \"%s\" of %llu bytes, not whole pages",
			      b->idstr, (unsigned long long)len);
	if (len > p->blocks_left)
		return reject(p, QSTREAM_E_LENGTH, "RAM block \"%s\" of %llu bytes: the list is "
			      "longer than its MEM_SIZE total", b->idstr, (unsigned long long)len);
	b->used_length = len;
	p->nblocks++;
	p->blocks_left -= len;
	if (p->blocks_left) {
		expect(p, ST_BLK_IDLEN, 1);
		return 0;
	}
	p->blocks_done = true;
	expect(p, ST_RAM_HDR, 8);
	ev.u.blocks.list = p->blocks;
	ev.u.blocks.count = p->nblocks;
	return emit(p, &ev);
}

/* ---- the machine -------------------------------------------------------- */

/* Handle one complete field f of p->need bytes. */
static int step(struct qstream_parser *p, const uint8_t *f)
{
	switch (p->st) {
	case ST_MAGIC:
		return magic(p, f);
	case ST_TOP:
		return top(p, f[0]);
	case ST_CFG_LEN:
		return cfg_len(p, qs_be32(f));
	case ST_CFG_NAME:
		if (take_name(p, p->cfg.machine, f, "machine type"))
			return p->err.ret;
		p->cfg.has_machine = true;
		p->cfg_state = CFG_OPEN;
		expect(p, ST_TOP, 1);
		return 0;
	case ST_SUB_NAMELEN:
		return name_len(p, f[0], ST_SUB_NAME, "subsection name");
	case ST_SUB_NAME:
		if (take_name(p, p->name, f, "subsection name"))
			return p->err.ret;
		expect(p, ST_SUB_VERSION, 4);
		return 0;
	case ST_SUB_VERSION:
		return sub_version(p, qs_be32(f));
	case ST_SUB_UUID:
		memcpy(p->cfg.uuid, f, QSW_UUID_LEN);
		p->cfg.has_uuid = true;
		expect(p, ST_TOP, 1);
		return 0;
	case ST_CMD:
		return command(p, qs_be16(f), qs_be16(f + 2));
	case ST_CMD_PING:
		return ping(p, qs_be32(f));
	case ST_SEC_ID:
		return section_id(p, qs_be32(f));
	case ST_SEC_IDLEN:
		return name_len(p, f[0], ST_SEC_IDSTR, "section name");
	case ST_SEC_IDSTR:
		if (take_name(p, p->name, f, "section name"))
			return p->err.ret;
		expect(p, ST_SEC_INSTVER, 8);
		return 0;
	case ST_SEC_INSTVER:
		return section_start(p, qs_be32(f), qs_be32(f + 4));
	case ST_RAM_HDR:
		return ram_header(p, qs_be64(f));
	case ST_BLK_IDLEN:
		return block_idlen(p, f[0]);
	case ST_BLK_IDSTR:
		return block_idstr(p, f);
	case ST_BLK_LEN:
		return block_len(p, qs_be64(f));
	case ST_PAGE_IDLEN:
		return name_len(p, f[0], ST_PAGE_IDSTR, "RAM block name");
	case ST_PAGE_IDSTR:
		return page_block(p, f);
	case ST_PAGE_DATA:
		return page(p, f, 0);
	case ST_ZERO_FILL:
		return page(p, NULL, f[0]);
	case ST_FOOTER:
		return footer(p, f);
	case ST_DEVICE:
	case ST_DONE:
		break;
	}
	return reject(p, QSTREAM_E_ORDER, "internal: no field in state %d", p->st);
}

struct qstream_parser *qstream_parser_new(qstream_event_fn fn, void *opaque)
{
	struct qstream_parser *p = calloc(1, sizeof(*p));

	if (!p)
		return NULL;
	p->fn = fn;
	p->opaque = opaque;
	p->last_block = -1;
	expect(p, ST_MAGIC, 8);
	return p;
}

void qstream_parser_background_snapshot(struct qstream_parser *p)
{
	p->background = true;
}

void qstream_parser_free(struct qstream_parser *p)
{
	free(p);
}

static int device(struct qstream_parser *p, const uint8_t *in, size_t len)
{
	struct qstream_event ev = { .type = QSTREAM_EV_DEVICE, .offset = p->off,
				    .u.device = { .data = in, .len = len } };

	p->off += len;
	p->stats.device_bytes += len;
	p->stats.bytes = p->off;
	return emit(p, &ev);
}

int qstream_parser_feed(struct qstream_parser *p, const void *data, size_t len)
{
	const uint8_t *in = data;

	if (p->err.ret)
		return p->err.ret;
	if (p->st == ST_DONE && len)
		return reject(p, QSTREAM_E_ORDER, "input after the end");
	while (len && !p->err.ret) {
		const uint8_t *f;

		if (p->st == ST_TOP && !p->have && (in[0] == QSW_SECTION_FULL || in[0] == QSW_EOF)) {
			p->field_off = p->off;
			if (device_begins(p, in[0]))
				break;
		}
		if (p->st == ST_DEVICE) {
			device(p, in, len);
			break;
		}
		if (!p->have && len >= p->need) {
			f = in;		/* all of it here: read in place */
		} else {
			size_t n = p->need - p->have < len ? p->need - p->have : len;

			memcpy(p->buf + p->have, in, n);
			p->have += n;
			in += n;
			len -= n;
			p->off += n;
			if (p->have < p->need)
				break;
			p->have = 0;
			p->field_off = p->off - p->need;
			step(p, p->buf);
			continue;
		}
		in += p->need;
		len -= p->need;
		p->off += p->need;
		p->field_off = p->off - p->need;
		step(p, f);
	}
	p->stats.bytes = p->off;
	return p->err.ret;
}

int qstream_parser_finish(struct qstream_parser *p)
{
	struct qstream_event ev = { .type = QSTREAM_EV_END };

	if (p->err.ret)
		return p->err.ret;
	if (p->st == ST_DONE)
		return 0;
	if (p->st != ST_DEVICE) {
		p->field_off = p->off;
		return reject(p, QSTREAM_E_TRUNCATED, "the stream ended in %s%s",
			      state_names[p->st], p->have ? ", part way" : "");
	}
	p->st = ST_DONE;
	ev.offset = p->off;
	return emit(p, &ev);
}

enum qstream_error qstream_parser_error(const struct qstream_parser *p)
{
	return p->err.code;
}

const char *qstream_parser_errmsg(const struct qstream_parser *p)
{
	return p->err.code ? p->err.msg : "no error";
}

const struct qstream_stats *qstream_parser_stats(const struct qstream_parser *p)
{
	return &p->stats;
}

bool qstream_parser_in_device_state(const struct qstream_parser *p)
{
	return p->st == ST_DEVICE || p->st == ST_DONE;
}
