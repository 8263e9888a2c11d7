/*
 * Checkpoints of libvirt domains without libvirt: a QEMU stream (written
 * by the stream writer) captured into a file, read back into an image with
 * every page's last copy, an incremental holding only the pages whose
 * content changed, the libvirt save image synthesised from a chain (its
 * header against libvirt's layout, its QEMU stream parsed back to the same
 * pages and device state), and hostile or truncated files refused with a
 * message that says what.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"
#include "libvirt_save_image.h"
#include "qemu_ckpt.h"
#include "qemu_stream.h"

#define PG		QSTREAM_PAGE_SIZE
#define RAM_PAGES	64
#define BIOS_PAGES	4
#define XML		"<domain type='qemu'><name>dom</name></domain>"

static const struct qstream_block blocks[2] = {
	{ "pc.ram", RAM_PAGES * PG },
	{ "pc.bios", BIOS_PAGES * PG },
};
static const uint8_t device[] = { 0x00, 0x06, 0, 0, 0, 2, '{', '}' };

/* What the guest's memory holds: block b, page p. */
struct mem {
	uint8_t ram[RAM_PAGES * PG], bios[BIOS_PAGES * PG];
};

static uint8_t *mem_page(struct mem *m, unsigned b, unsigned p)
{
	return (b ? m->bios : m->ram) + (size_t)p * PG;
}

struct buf {
	uint8_t *p;
	size_t len;
};

static int buf_write(void *opaque, const void *d, size_t n)
{
	struct buf *b = opaque;

	b->p = realloc(b->p, b->len + n);
	if (!b->p)
		return -ENOMEM;
	memcpy(b->p + b->len, d, n);
	b->len += n;
	return 0;
}

/* A QEMU stream of m: every page once in an iteration (zero pages as zero
 * items), then `again` pages sent once more with other content (what a
 * live migration's later round does), the last of them also in END. */
static struct buf stream_of(struct mem *m, unsigned again, uint8_t seed)
{
	struct buf out = { 0 };
	struct qstream_sink sink = { buf_write, &out };
	struct qstream_writer *w = qstream_writer_new(&sink);
	struct qstream_config cfg = { .has_machine = true, .machine = "pc-i440fx-7.2" };

	CHECK(w);
	qstream_writer_header(w, &cfg);
	qstream_writer_ram_begin(w, QSTREAM_RAM_SETUP, 2);
	qstream_writer_ram_blocks(w, blocks, 2);
	qstream_writer_ram_eos(w);
	qstream_writer_ram_begin(w, QSTREAM_RAM_ITERATE, 2);
	for (unsigned b = 0; b < 2; b++)
		for (unsigned p = 0; p < (b ? BIOS_PAGES : RAM_PAGES); p++) {
			uint8_t *pg = mem_page(m, b, p);

			if (ckpt_page_is_zero(pg, PG))
				qstream_writer_ram_zero(w, b, (uint64_t)p * PG, 0);
			else
				qstream_writer_ram_page(w, b, (uint64_t)p * PG, pg);
		}
	qstream_writer_ram_eos(w);
	qstream_writer_ram_begin(w, QSTREAM_RAM_COMPLETE, 2);
	for (unsigned k = 0; k < again; k++) {
		uint8_t *pg = mem_page(m, 0, 3 + k);

		memset(pg, seed + k, PG);	/* changed after its first copy */
		qstream_writer_ram_page(w, 0, (uint64_t)(3 + k) * PG, pg);
	}
	qstream_writer_ram_eos(w);
	qstream_writer_device(w, device, sizeof(device));
	CHECK_MSG(qstream_writer_flush(w) == 0, "%s", qstream_writer_errmsg(w));
	qstream_writer_free(w);
	return out;
}

static void mem_fill(struct mem *m)
{
	memset(m, 0, sizeof(*m));
	for (unsigned p = 0; p < RAM_PAGES; p++)
		if (p % 3)	/* every third page zero */
			for (unsigned i = 0; i < PG; i++)
				mem_page(m, 0, p)[i] = (uint8_t)(p * 7 + i * 13);
	memset(mem_page(m, 1, 1), 0xa5, PG);
}

/* Capture s into path (parent: an incremental); its stats in st. */
static void capture(const char *path, const struct buf *s, const struct qckpt_image *parent,
		    struct qckpt_capture_stats *st)
{
	struct qckpt_capture_opts o = { .domain_name = "dom", .xml = XML, .vcpus = 2,
					.was_running = true, .parent = parent };
	char err[256];
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	struct qckpt_capture *c;
	struct qstream_parser *p;

	CHECK(fd >= 0);
	c = qckpt_capture_new(fd, &o, err, sizeof(err));
	CHECK_MSG(c, "%s", err);
	p = qstream_parser_new(qckpt_capture_event, c);
	CHECK(p);
	/* in uneven pieces, as a pipe delivers them */
	for (size_t at = 0; at < s->len;) {
		size_t n = s->len - at < 3001 ? s->len - at : 3001;

		CHECK_MSG(qstream_parser_feed(p, s->p + at, n) == 0, "%s / %s",
			  qstream_parser_errmsg(p), qckpt_capture_errmsg(c));
		at += n;
	}
	CHECK(qstream_parser_finish(p) == 0);
	CHECK_MSG(qckpt_capture_finish(c) == 0, "%s", qckpt_capture_errmsg(c));
	qckpt_capture_stats(c, st);
	qstream_parser_free(p);
	qckpt_capture_free(c);
	close(fd);
}

static void check_image(const struct qckpt_image *im, struct mem *m)
{
	CHECK_EQ(im->nblocks, 2u);
	CHECK(!strcmp(im->blocks[0].idstr, "pc.ram") && !strcmp(im->blocks[1].idstr, "pc.bios"));
	CHECK(!strcmp(im->cfg.machine, "pc-i440fx-7.2"));
	CHECK_EQ(im->ram_section_id, 2u);
	CHECK_EQ(im->vcpus, 2u);
	CHECK(im->was_running);
	CHECK(!strcmp(im->xml, XML));
	CHECK(im->device_len == sizeof(device) && !memcmp(im->device, device, sizeof(device)));
	CHECK(!memcmp(im->ram[0], m->ram, sizeof(m->ram)));
	CHECK(!memcmp(im->ram[1], m->bios, sizeof(m->bios)));
}

static void path_in_tmp(char *out, size_t len, const char *name)
{
	snprintf(out, len, "%s/%s", test_tmpdir(), name);
}

TEST(capture_keeps_last_copy_and_device_state)
{
	static struct mem m;
	struct qckpt_capture_stats st;
	struct qckpt_image im;
	char path[512], err[512], *files[1] = { path };
	struct buf s;
	unsigned vcpus;
	uint64_t dev;

	mem_fill(&m);
	s = stream_of(&m, 2, 0x40);
	path_in_tmp(path, sizeof(path), "full.ckpt");
	capture(path, &s, NULL, &st);
	CHECK(qckpt_is_domain_file(path));
	CHECK_MSG(qckpt_image_load(files, 1, NULL, 0, false, &im, err, sizeof(err)) == 0, "%s", err);
	check_image(&im, &m);
	/* a full file: every non-zero page and the two sent again */
	CHECK_EQ(st.pages_written, (uint64_t)(RAM_PAGES - (RAM_PAGES + 2) / 3 + 1 + 2));
	CHECK_EQ(st.device_bytes, (uint64_t)sizeof(device));
	CHECK_MSG(qckpt_file_check(path, NULL, 0, &vcpus, &dev, err, sizeof(err)) == 0, "%s", err);
	CHECK(vcpus == 2 && dev == sizeof(device));
	qckpt_image_free(&im);
	free(s.p);
}

TEST(incremental_holds_changed_pages_only)
{
	static struct mem m;
	struct qckpt_capture_stats st1, st2;
	struct qckpt_image parent, im;
	char full[512], inc[512], err[512];
	char *one[1] = { full }, *chain[2] = { inc, full };
	struct buf s1, s2;
	struct stat a, b;

	mem_fill(&m);
	s1 = stream_of(&m, 0, 0);
	path_in_tmp(full, sizeof(full), "dom-1.ckpt");
	path_in_tmp(inc, sizeof(inc), "dom-2.ckpt");
	capture(full, &s1, NULL, &st1);
	CHECK_MSG(qckpt_image_load(one, 1, NULL, 0, true, &parent, err, sizeof(err)) == 0, "%s", err);
	CHECK(parent.hash[0] && !parent.ram[0]);
	/* three pages change: 3 and 4 in the END section, page 10 before */
	memset(mem_page(&m, 0, 10), 0x77, PG);
	s2 = stream_of(&m, 2, 0x90);
	capture(inc, &s2, &parent, &st2);
	CHECK_EQ(st2.pages_written, 3u);
	CHECK_EQ(st2.pages_unchanged, (uint64_t)(RAM_PAGES + BIOS_PAGES - 1));
	CHECK(stat(full, &a) == 0 && stat(inc, &b) == 0);
	CHECK_MSG(b.st_size * 4 < a.st_size, "incremental %lld bytes, full %lld",
		  (long long)b.st_size, (long long)a.st_size);
	CHECK_MSG(qckpt_image_load(chain, 2, NULL, 0, false, &im, err, sizeof(err)) == 0, "%s", err);
	check_image(&im, &m);
	qckpt_image_free(&im);
	/* the incremental alone is not a chain */
	CHECK(qckpt_image_load(chain, 1, NULL, 0, false, &im, err, sizeof(err)) == -EBADMSG);
	CHECK_MSG(strstr(err, "incremental"), "%s", err);
	/* nor on top of another full file than the parent it names */
	{
		char other[512], *wrong[2] = { inc, other };
		struct qckpt_capture_stats st3;

		path_in_tmp(other, sizeof(other), "dom-0.ckpt");
		capture(other, &s1, NULL, &st3);
		CHECK(qckpt_image_load(wrong, 2, NULL, 0, false, &im, err, sizeof(err)) == -EBADMSG);
		CHECK_MSG(strstr(err, "parent"), "%s", err);
	}
	qckpt_image_free(&parent);
	free(s1.p);
	free(s2.p);
}

/* The pages and device state of a QEMU stream, as the parser sees them. */
struct seen {
	struct mem m;
	struct buf dev;
	unsigned pages;
};

static int seen_event(void *opaque, const struct qstream_event *ev)
{
	struct seen *s = opaque;

	if (ev->type == QSTREAM_EV_RAM_PAGE) {
		uint8_t *pg = mem_page(&s->m, ev->u.page.block, (unsigned)(ev->u.page.offset / PG));

		if (ev->u.page.data)
			memcpy(pg, ev->u.page.data, PG);
		else
			memset(pg, ev->u.page.fill, PG);
		s->pages++;
	} else if (ev->type == QSTREAM_EV_DEVICE) {
		buf_write(&s->dev, ev->u.device.data, ev->u.device.len);
	}
	return 0;
}

TEST(save_image_header_xml_and_stream)
{
	static struct mem m;
	static struct seen seen;
	struct qckpt_capture_stats st;
	struct qckpt_image im;
	struct lvsave_header h;
	char path[512], err[512], *files[1] = { path };
	struct buf s, out = { 0 };
	struct qstream_sink sink = { buf_write, &out };
	struct qstream_parser *p;
	uint32_t v;

	mem_fill(&m);
	s = stream_of(&m, 1, 0x33);
	path_in_tmp(path, sizeof(path), "img.ckpt");
	capture(path, &s, NULL, &st);
	CHECK(qckpt_image_load(files, 1, NULL, 0, false, &im, err, sizeof(err)) == 0);
	CHECK_MSG(lvsave_write(&im, true, &sink, err, sizeof(err)) == 0, "%s", err);
	/* libvirt's virQEMUSaveHeader, byte by byte */
	CHECK(out.len > 92 + sizeof(XML));
	CHECK(!memcmp(out.p, "LibvirtQemudSave", 16));
	memcpy(&v, out.p + 16, 4);
	CHECK_EQ(le32toh(v), 2u);				/* version */
	memcpy(&v, out.p + 20, 4);
	CHECK_EQ(le32toh(v), (uint32_t)sizeof(XML));		/* data_len, with the NUL */
	memcpy(&v, out.p + 24, 4);
	CHECK_EQ(le32toh(v), 1u);				/* was_running */
	memcpy(&v, out.p + 28, 4);
	CHECK_EQ(le32toh(v), 0u);				/* raw */
	for (unsigned i = 32; i < 92; i++)
		CHECK_MSG(out.p[i] == 0, "byte %u of the header", i);
	CHECK(!memcmp(out.p + 92, XML, sizeof(XML)));		/* the XML and its NUL */
	lvsave_header(&h, strlen(XML), false);
	CHECK(h.was_running == 0 && !memcmp(&h, out.p, 24));
	/* the rest is a QEMU stream with the image's pages and device state */
	memset(&seen, 0, sizeof(seen));
	p = qstream_parser_new(seen_event, &seen);
	CHECK(p);
	CHECK_MSG(qstream_parser_feed(p, out.p + 92 + sizeof(XML), out.len - 92 - sizeof(XML)) == 0,
		  "%s", qstream_parser_errmsg(p));
	CHECK_MSG(qstream_parser_finish(p) == 0, "%s", qstream_parser_errmsg(p));
	CHECK_EQ(seen.pages, (unsigned)(RAM_PAGES + BIOS_PAGES));	/* each once */
	CHECK(!memcmp(&seen.m, &m, sizeof(m)));
	CHECK(seen.dev.len == sizeof(device) && !memcmp(seen.dev.p, device, sizeof(device)));
	qstream_parser_free(p);
	free(seen.dev.p);
	free(out.p);
	qckpt_image_free(&im);
	free(s.p);
}

/* A header as libvirt 9.0 wrote it into the rig's FIFO (its memory snapshot). */
static void libvirt_header(struct lvsave_header *h, const char *magic)
{
	memset(h, 0, sizeof(*h));
	memcpy(h->magic, magic, sizeof(h->magic));
	h->version = htole32(2);
	h->data_len = htole32(67376);		/* XML, cookie, 64 KiB of padding */
	h->was_running = htole32(1);
	h->cookie_offset = htole32(1604);
}

TEST(libvirt_header_read_back)
{
	struct lvsave_header h;
	uint32_t len = 0;
	char err[512];

	libvirt_header(&h, LVSAVE_MAGIC_PARTIAL);
	CHECK_MSG(lvsave_header_check(&h, true, &len, err, sizeof(err)) == 0, "%s", err);
	CHECK_EQ(len, 67376u);
	CHECK(lvsave_header_check(&h, false, &len, err, sizeof(err)) == -EBADMSG);
	CHECK_MSG(strstr(err, LVSAVE_MAGIC), "%s", err);
	libvirt_header(&h, LVSAVE_MAGIC);
	CHECK(lvsave_header_check(&h, false, &len, err, sizeof(err)) == 0);
	CHECK(lvsave_header_check(&h, true, &len, err, sizeof(err)) == -EBADMSG);
	/* what we write for a restore reads back the same way */
	lvsave_header(&h, 100, true);
	CHECK(lvsave_header_check(&h, false, &len, err, sizeof(err)) == 0 && len == 101);

	libvirt_header(&h, LVSAVE_MAGIC_PARTIAL);
	h.version = htole32(3);
	CHECK(lvsave_header_check(&h, true, &len, err, sizeof(err)) == -EBADMSG);
	CHECK_MSG(strstr(err, "version 3"), "%s", err);
	/* compressed: refused by name, with the setting that chose it */
	libvirt_header(&h, LVSAVE_MAGIC_PARTIAL);
	h.format = htole32(1);
	CHECK(lvsave_header_check(&h, true, &len, err, sizeof(err)) == -ENOTSUP);
	CHECK_MSG(strstr(err, "gzip") && strstr(err, "snapshot_image_format"), "%s", err);
	h.format = htole32(77);
	CHECK(lvsave_header_check(&h, true, &len, err, sizeof(err)) == -ENOTSUP);
	CHECK_MSG(strstr(err, "format 77"), "%s", err);
	/* lengths from the FIFO are capped */
	libvirt_header(&h, LVSAVE_MAGIC_PARTIAL);
	h.data_len = htole32(LVSAVE_DATA_MAX + 1);
	CHECK(lvsave_header_check(&h, true, &len, err, sizeof(err)) == -EBADMSG);
	h.data_len = 0;
	CHECK(lvsave_header_check(&h, true, &len, err, sizeof(err)) == -EBADMSG);
	libvirt_header(&h, LVSAVE_MAGIC_PARTIAL);
	h.cookie_offset = h.data_len;
	CHECK(lvsave_header_check(&h, true, &len, err, sizeof(err)) == -EBADMSG);
	CHECK_MSG(strstr(err, "cookie"), "%s", err);
}

static int failing_sink(void *opaque, const void *d, size_t n)
{
	size_t *left = opaque;

	(void)d;
	if (n > *left)
		return -EPIPE;
	*left -= n;
	return 0;
}

TEST(save_image_stops_on_a_broken_pipe)
{
	static struct mem m;
	struct qckpt_capture_stats st;
	struct qckpt_image im;
	char path[512], err[512], *files[1] = { path };
	size_t left = 100000;
	struct qstream_sink sink = { failing_sink, &left };
	struct buf s;

	mem_fill(&m);
	s = stream_of(&m, 0, 0);
	path_in_tmp(path, sizeof(path), "pipe.ckpt");
	capture(path, &s, NULL, &st);
	CHECK(qckpt_image_load(files, 1, NULL, 0, false, &im, err, sizeof(err)) == 0);
	CHECK(lvsave_write(&im, true, &sink, err, sizeof(err)) == -EPIPE);
	CHECK_MSG(strstr(err, "stream"), "%s", err);
	qckpt_image_free(&im);
	free(s.p);
}

TEST(truncated_files_refused)
{
	static struct mem m;
	struct qckpt_capture_stats st;
	struct qckpt_image im;
	char path[512], cut[512], err[512], *files[1] = { cut };
	struct buf s;
	uint8_t *whole;
	struct stat sb;
	int fd;

	mem_fill(&m);
	s = stream_of(&m, 0, 0);
	path_in_tmp(path, sizeof(path), "whole.ckpt");
	path_in_tmp(cut, sizeof(cut), "cut.ckpt");
	capture(path, &s, NULL, &st);
	CHECK(stat(path, &sb) == 0);
	whole = malloc((size_t)sb.st_size);
	fd = open(path, O_RDONLY);
	CHECK(whole && fd >= 0 && read(fd, whole, (size_t)sb.st_size) == sb.st_size);
	close(fd);
	for (off_t len = 0; len < sb.st_size; len += len < 200 ? 7 : 4093) {
		fd = open(cut, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		CHECK(fd >= 0 && write(fd, whole, (size_t)len) == len);
		close(fd);
		CHECK_MSG(qckpt_image_load(files, 1, NULL, 0, false, &im, err, sizeof(err)) == -EBADMSG,
			  "a file cut at %lld bytes was taken", (long long)len);
	}
	/* one flipped byte in the middle: a checksum fails */
	whole[sb.st_size / 2] ^= 1;
	fd = open(cut, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	CHECK(fd >= 0 && write(fd, whole, (size_t)sb.st_size) == sb.st_size);
	close(fd);
	CHECK(qckpt_image_load(files, 1, NULL, 0, false, &im, err, sizeof(err)) == -EBADMSG);
	CHECK_MSG(strstr(err, "checksum"), "%s", err);
	free(whole);
	free(s.p);
}

/* ---- hostile files, written record by record ---- */

/* The config record as QEMU-STREAM.md lays it out, for nblocks blocks. */
static size_t config_bytes(uint8_t *out, unsigned nblocks, const char *name0)
{
	const char *machine = "pc-i440fx-7.2";
	size_t at = 32;
	uint32_t v;

	memset(out, 0, 32);
	out[0] = 1;
	out[2] = (uint8_t)strlen(machine);
	out[3] = 1;
	v = htole32(2);
	memcpy(out + 20, &v, 4);	/* ram section id */
	v = htole32(1);
	memcpy(out + 24, &v, 4);	/* vCPUs */
	v = htole32(nblocks);
	memcpy(out + 28, &v, 4);
	memcpy(out + at, machine, strlen(machine));
	at += strlen(machine);
	for (unsigned b = 0; b < nblocks; b++) {
		const char *n = b ? "pc.bios" : name0;

		out[at++] = (uint8_t)strlen(n);
		memcpy(out + at, n, strlen(n));
		at += strlen(n);
	}
	return at;
}

enum spoil { OK, BLOCKS, NUL_XML, NO_DEVICE, BAD_DEVICE, VM_STATE, NUL_NAME, CFG_LONG };

static int write_hostile(const char *path, enum spoil how, char *err, size_t errlen)
{
	struct ckpt_writer_opts o = { .codec = ckpt_codec_default, .build_index = true };
	struct ckpt_image_info info = { .page_size = PG, .region_count = 2, .guest_name = "dom" };
	uint8_t cfg[512], page[PG];
	struct ckpt_sink sink;
	struct ckpt_writer *w;
	struct qckpt_image im;
	char *files[1] = { (char *)path };
	size_t cl;
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600), ret;

	CHECK(fd >= 0);
	ckpt_fd_sink(&fd, &sink);
	w = ckpt_writer_new(&sink, &o);
	info.regions[0] = (struct ckpt_region){ 0, 0, RAM_PAGES * PG };
	info.regions[1] = (struct ckpt_region){ 1, RAM_PAGES * PG, BIOS_PAGES * PG };
	ckpt_writer_header(w, &info);
	ckpt_writer_marker(w, CKPT_MARK_ROUND, 1);
	memset(page, 0x11, PG);
	ckpt_writer_page(w, 0, 5, page, NULL);
	cl = config_bytes(cfg, how == BLOCKS ? 3 : 2, "pc.ram");
	if (how == NUL_NAME)
		cfg[32 + 13 + 1 + 2] = 0;	/* "pc\0ram": a NUL inside the name */
	if (how == CFG_LONG)
		cfg[cl++] = 0;
	ckpt_writer_state(w, QCKPT_STATE_KIND, QCKPT_INST_CONFIG, 1, false, cfg, cl);
	ckpt_writer_state(w, QCKPT_STATE_KIND, QCKPT_INST_XML, 1, false,
			  how == NUL_XML ? "<dom\0ain/>" : XML, how == NUL_XML ? 10 : strlen(XML));
	if (how != NO_DEVICE)
		ckpt_writer_state(w, QCKPT_STATE_KIND, QCKPT_INST_DEVICE, 1, false,
				  how == BAD_DEVICE ? (const void *)"\x01xyz" : device,
				  how == BAD_DEVICE ? 4 : sizeof(device));
	if (how == VM_STATE)
		ckpt_writer_state(w, CKPT_STATE_VM, 0, 1, false, "1234", 4);
	CHECK(ckpt_writer_finish(w, NULL) == 0);
	ckpt_writer_free(w);
	close(fd);
	ret = qckpt_image_load(files, 1, NULL, 0, false, &im, err, errlen);
	if (!ret) {
		CHECK(im.ram[0][5 * PG] == 0x11 && im.ram[0][4 * PG] == 0);
		qckpt_image_free(&im);
	}
	return ret;
}

TEST(hostile_state_records_refused)
{
	static const struct {
		enum spoil how;
		const char *says;
	} cases[] = {
		{ BLOCKS, "3 RAM blocks" },
		{ NUL_XML, "XML" },
		{ NO_DEVICE, "device state record is missing" },
		{ BAD_DEVICE, "FULL or EOF" },
		{ VM_STATE, "kind 1" },
		{ NUL_NAME, "name of RAM block 0" },
		{ CFG_LONG, "its fields take" },
	};
	char path[512], err[512];

	path_in_tmp(path, sizeof(path), "hostile.ckpt");
	CHECK_MSG(write_hostile(path, OK, err, sizeof(err)) == 0, "the well-formed one: %s", err);
	CHECK(qckpt_is_domain_file(path));
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		err[0] = 0;
		CHECK_MSG(write_hostile(path, cases[i].how, err, sizeof(err)) == -EBADMSG,
			  "case %zu taken", i);
		CHECK_MSG(strstr(err, cases[i].says), "case %zu said: %s", i, err);
	}
}

TEST(not_a_domain_file)
{
	char path[512];
	int fd;

	path_in_tmp(path, sizeof(path), "junk.ckpt");
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	CHECK(fd >= 0 && write(fd, "VMIGCKPTjunkjunkjunkjunkjunkjunk", 32) == 32);
	close(fd);
	CHECK(!qckpt_is_domain_file(path));
	CHECK(!qckpt_is_domain_file("/nonexistent/file"));
}

/* QEMU's background-snapshot stream: PART sections, no END, then the
 * device state. Taken only when the parser is told so. */
TEST(background_snapshot_stream_needs_the_word)
{
	static struct mem m;
	static struct seen seen;
	struct buf s = { 0 };
	struct qstream_sink sink = { buf_write, &s };
	struct qstream_writer *w = qstream_writer_new(&sink);
	struct qstream_config cfg = { .has_machine = true, .machine = "pc-q35-7.2" };
	struct qstream_parser *p;

	mem_fill(&m);
	qstream_writer_header(w, &cfg);
	qstream_writer_ram_begin(w, QSTREAM_RAM_SETUP, 3);
	qstream_writer_ram_blocks(w, blocks, 2);
	qstream_writer_ram_eos(w);
	qstream_writer_ram_begin(w, QSTREAM_RAM_ITERATE, 3);
	qstream_writer_ram_page(w, 0, 5 * PG, mem_page(&m, 0, 5));
	qstream_writer_ram_eos(w);
	CHECK(qstream_writer_flush(w) == 0);
	qstream_writer_free(w);
	buf_write(&s, device, sizeof(device));	/* what the writer itself refuses */
	for (int told = 0; told < 2; told++) {
		free(seen.dev.p);
		memset(&seen, 0, sizeof(seen));
		p = qstream_parser_new(seen_event, &seen);
		if (told)
			qstream_parser_background_snapshot(p);
		CHECK(p);
		if (told) {
			CHECK_MSG(qstream_parser_feed(p, s.p, s.len) == 0 && qstream_parser_finish(p) == 0,
				  "%s", qstream_parser_errmsg(p));
		} else {
			CHECK(qstream_parser_feed(p, s.p, s.len) == -EBADMSG);
			CHECK_MSG(strstr(qstream_parser_errmsg(p), "before the end of RAM"), "%s",
				  qstream_parser_errmsg(p));
		}
		qstream_parser_free(p);
	}
	CHECK_EQ(seen.pages, 1u);	/* the page, in the run that was told */
	free(seen.dev.p);
	free(s.p);
}
