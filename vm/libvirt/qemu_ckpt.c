/*
 * Domain checkpoints (qemu_ckpt.h): QEMU's stream into a ckpt-format file
 * and a chain of such files back into one image. The layouts of the
 * QCKPT_STATE_KIND records are QEMU-STREAM.md's ("In a checkpoint file").
 */
#include "qemu_ckpt.h"

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "ckpt_hash.h"

#define PAGE		QSTREAM_PAGE_SIZE
#define CONFIG_HEAD	32u		/* fixed part of the config record */
#define RECORD_PAGES	256u		/* pages a PAGES record holds at most */

static uint64_t zero_hash(void)
{
	static const uint8_t zero[PAGE];

	return XXH3_64bits(zero, PAGE);
}

static uint64_t region_pages(const struct ckpt_image_info *info, unsigned r)
{
	return info->regions[r].size / PAGE;
}

/* ---- the config record ---- */

static size_t config_len(const struct qckpt_image *im)
{
	size_t n = CONFIG_HEAD + (im->cfg.has_machine ? strlen(im->cfg.machine) : 0);

	for (unsigned b = 0; b < im->nblocks; b++)
		n += 1 + strlen(im->blocks[b].idstr);
	return n;
}

static void put32(uint8_t *p, uint32_t v)
{
	v = htole32(v);
	memcpy(p, &v, 4);
}

static uint32_t get32(const uint8_t *p)
{
	uint32_t v;

	memcpy(&v, p, 4);
	return le32toh(v);
}

static void config_encode(const struct qckpt_image *im, uint8_t *out)
{
	size_t ml = im->cfg.has_machine ? strlen(im->cfg.machine) : 0, at;

	memset(out, 0, CONFIG_HEAD);
	out[0] = im->cfg.has_machine;
	out[1] = im->cfg.has_uuid;
	out[2] = (uint8_t)ml;
	out[3] = im->was_running;
	if (im->cfg.has_uuid)
		memcpy(out + 4, im->cfg.uuid, 16);
	put32(out + 20, im->ram_section_id);
	put32(out + 24, im->vcpus);
	put32(out + 28, im->nblocks);
	memcpy(out + CONFIG_HEAD, im->cfg.machine, ml);
	at = CONFIG_HEAD + ml;
	for (unsigned b = 0; b < im->nblocks; b++) {
		size_t n = strlen(im->blocks[b].idstr);

		out[at++] = (uint8_t)n;
		memcpy(out + at, im->blocks[b].idstr, n);
		at += n;
	}
}

static int failf(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int failf(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return -EBADMSG;
}

static bool good_name(const uint8_t *p, size_t n)
{
	return n >= 1 && n <= QSTREAM_NAME_MAX && !memchr(p, 0, n);
}

/* The config record into im, checked against the file's region table. */
static int config_decode(const uint8_t *p, size_t len, const struct ckpt_image_info *info,
			 struct qckpt_image *im, char *err, size_t errlen)
{
	size_t at = CONFIG_HEAD, ml;
	unsigned n;

	if (len < CONFIG_HEAD)
		return failf(err, errlen, "domain config record of %zu bytes", len);
	if (p[0] > 1 || p[1] > 1 || p[3] > 1 || (!p[0] != !p[2]))
		return failf(err, errlen, "domain config record: bad flags");
	ml = p[2];
	n = get32(p + 28);
	im->vcpus = get32(p + 24);
	if (!im->vcpus || im->vcpus > 4096)
		return failf(err, errlen, "domain config record: %u vCPUs", im->vcpus);
	if (n != info->region_count || n > QCKPT_MAX_BLOCKS)
		return failf(err, errlen, "domain config record: %u RAM blocks, the file has %u "
			     "regions", n, info->region_count);
	if (len < at + ml || (ml && !good_name(p + at, ml)))
		return failf(err, errlen, "domain config record: bad machine type");
	memset(&im->cfg, 0, sizeof(im->cfg));
	im->cfg.has_machine = p[0];
	im->cfg.has_uuid = p[1];
	memcpy(im->cfg.uuid, p + 4, 16);
	memcpy(im->cfg.machine, p + at, ml);
	im->was_running = p[3];
	im->ram_section_id = get32(p + 20);
	at += ml;
	for (unsigned b = 0; b < n; b++) {
		size_t bl = at < len ? p[at] : 0;

		if (at + 1 + bl > len || !good_name(p + at + 1, bl))
			return failf(err, errlen, "domain config record: bad name of RAM block %u", b);
		memcpy(im->blocks[b].idstr, p + at + 1, bl);
		im->blocks[b].idstr[bl] = 0;
		for (unsigned k = 0; k < b; k++)
			if (!strcmp(im->blocks[k].idstr, im->blocks[b].idstr))
				return failf(err, errlen, "domain config record: RAM block %s twice",
					     im->blocks[b].idstr);
		if (info->regions[b].id != b || info->regions[b].size % PAGE)
			return failf(err, errlen, "region %u does not stand for RAM block %u", b, b);
		im->blocks[b].used_length = info->regions[b].size;
		at += 1 + bl;
	}
	if (at != len)
		return failf(err, errlen, "domain config record: %zu bytes, its fields take %zu",
			     len, at);
	im->nblocks = n;
	return 0;
}

/* ---- writing the state records ---- */

static int write_state(struct ckpt_writer *w, const struct qckpt_image *im)
{
	size_t cl = config_len(im);
	uint8_t *cfg = malloc(cl);
	unsigned inst = QCKPT_INST_DEVICE;

	if (!cfg)
		return -ENOMEM;
	config_encode(im, cfg);
	ckpt_writer_state(w, QCKPT_STATE_KIND, QCKPT_INST_CONFIG, QCKPT_VERSION, false, cfg, cl);
	free(cfg);
	ckpt_writer_state(w, QCKPT_STATE_KIND, QCKPT_INST_XML, QCKPT_VERSION, false, im->xml,
			  strlen(im->xml));
	for (size_t at = 0; at < im->device_len; at += QCKPT_DEVICE_PIECE, inst++) {
		size_t n = im->device_len - at < QCKPT_DEVICE_PIECE ? im->device_len - at :
			   QCKPT_DEVICE_PIECE;

		ckpt_writer_state(w, QCKPT_STATE_KIND, inst, QCKPT_VERSION, false, im->device + at,
				  n);
	}
	return ckpt_writer_error(w);
}

static void new_identity(struct ckpt_image_info *info)
{
	struct timespec ts;

	if (getrandom(info->image_uuid, 16, 0) != 16)
		memset(info->image_uuid, 0, 16);	/* never: getrandom on a booted host */
	clock_gettime(CLOCK_REALTIME, &ts);
	info->created_ns = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static struct ckpt_writer *file_writer(int *fd, struct ckpt_sink *sink, const uint8_t *key,
				       size_t key_len, enum ckpt_compressor compress)
{
	struct ckpt_writer_opts o = {
		.codec = ckpt_codec_default, .build_index = true, .batch_pages = RECORD_PAGES,
		.mac_key = key, .mac_key_len = key_len,
	};

	o.codec.delta = false;	/* every page whole: restore reads each file alone */
	ckpt_codec_use(&o.codec, compress);
	ckpt_fd_sink(fd, sink);
	return ckpt_writer_new(sink, &o);
}

/* ---- is it a domain's file ---- */

bool qckpt_is_domain_file(const char *path)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	uint64_t off = CKPT_MAGIC_LEN;
	bool found = false;

	if (fd < 0)
		return false;
	/* the headers alone, payloads skipped: a few hundred reads */
	for (int i = 0; i < (1 << 22) && !found; i++) {
		struct ckpt_rec_info ri;
		struct ckpt_state_rec sr;

		if (ckpt_pread_header(fd, off, &ri) || ri.type == CKPT_REC_COMMIT)
			break;
		if (ri.type == CKPT_REC_STATE && ri.length >= sizeof(sr) &&
		    pread(fd, &sr, sizeof(sr), (off_t)(off + sizeof(struct ckpt_rec_hdr))) ==
		    sizeof(sr))
			found = le32toh(sr.kind) == QCKPT_STATE_KIND &&
				le32toh(sr.instance) == QCKPT_INST_CONFIG;
		off += sizeof(struct ckpt_rec_hdr) + ri.length;
	}
	close(fd);
	return found;
}

/* ---- loading a chain ---- */

struct load {
	struct qckpt_image *im;
	bool hashes_only;
	bool check_only;	/* one file on its own: no pages kept, no parent */
};

static int place(void *opaque, unsigned slot, uint64_t first, uint64_t count, const void *data)
{
	struct load *l = opaque;
	struct qckpt_image *im = l->im;

	if (first + count > region_pages(&im->info, slot))
		return -ERANGE;
	for (uint64_t k = 0; k < count; k++) {
		const uint8_t *pg = data ? (const uint8_t *)data + k * PAGE : NULL;

		if (im->hash[slot])
			im->hash[slot][first + k] = pg ? XXH3_64bits(pg, PAGE) : zero_hash();
		if (im->ram[slot]) {
			if (pg)
				memcpy(im->ram[slot] + (first + k) * PAGE, pg, PAGE);
			else
				memset(im->ram[slot] + (first + k) * PAGE, 0, PAGE);
		}
	}
	return 0;
}

static int alloc_regions(struct qckpt_image *im, bool hashes_only, char *err, size_t errlen)
{
	uint64_t zh = zero_hash();

	for (unsigned r = 0; r < im->info.region_count; r++) {
		uint64_t pages = region_pages(&im->info, r);

		if (im->info.regions[r].id != r)
			return failf(err, errlen, "region %u has id %u: not a domain's table", r,
				     im->info.regions[r].id);
		if (hashes_only) {
			im->hash[r] = malloc(pages * sizeof(uint64_t));
			if (!im->hash[r])
				return failf(err, errlen, "out of memory for %llu page hashes",
					     (unsigned long long)pages);
			for (uint64_t p = 0; p < pages; p++)
				im->hash[r][p] = zh;
		} else {
			/* untouched pages of an anonymous mapping read as zero for free */
			void *m = mmap(NULL, pages * PAGE, PROT_READ | PROT_WRITE,
				       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);

			if (m == MAP_FAILED)
				return failf(err, errlen, "mapping %llu bytes for region %u: %s",
					     (unsigned long long)(pages * PAGE), r, strerror(errno));
			im->ram[r] = m;
		}
	}
	return 0;
}

static bool same_regions(const struct ckpt_image_info *a, const struct ckpt_image_info *b)
{
	if (a->region_count != b->region_count || a->page_size != b->page_size)
		return false;
	for (unsigned r = 0; r < a->region_count; r++)
		if (a->regions[r].id != b->regions[r].id || a->regions[r].gpa != b->regions[r].gpa ||
		    a->regions[r].size != b->regions[r].size)
			return false;
	return true;
}

/* What one file's state records said. */
struct file_state {
	bool config, xml;
	unsigned pieces;
};

static int take_state(struct qckpt_image *im, const struct ckpt_record *rec,
		      const struct ckpt_image_info *info, struct file_state *fs, char *err,
		      size_t errlen)
{
	const uint8_t *d = rec->u.state.data;
	size_t n = rec->u.state.len;
	uint32_t inst = rec->u.state.instance;

	if (rec->u.state.kind != QCKPT_STATE_KIND)
		return failf(err, errlen, "state record of kind %u in a domain checkpoint",
			     rec->u.state.kind);
	if (rec->u.state.version != QCKPT_VERSION)
		return failf(err, errlen, "domain state record of version %u", rec->u.state.version);
	if (inst == QCKPT_INST_CONFIG) {
		fs->config = true;
		return config_decode(d, n, info, im, err, errlen);
	}
	if (inst == QCKPT_INST_XML) {
		if (!n || n > QCKPT_XML_MAX || memchr(d, 0, n))
			return failf(err, errlen, "domain XML record of %zu bytes, or with a NUL", n);
		free(im->xml);
		if (!(im->xml = strndup((const char *)d, n)))
			return -ENOMEM;
		fs->xml = true;
		return 0;
	}
	/* device state: pieces in instance order, the blob from its first byte */
	if (inst != QCKPT_INST_DEVICE + fs->pieces)
		return failf(err, errlen, "device state piece %u where piece %u belongs",
			     inst - QCKPT_INST_DEVICE, fs->pieces);
	if (!n || n > QCKPT_DEVICE_PIECE || (!fs->pieces && d[0] != 0x04 && d[0] != 0x00))
		return failf(err, errlen, "device state piece %u: %zu bytes%s", fs->pieces, n,
			     fs->pieces || !n ? "" : ", not starting with QEMU's FULL or EOF byte");
	if (!fs->pieces)
		im->device_len = 0;
	if (im->device_len + n > QCKPT_DEVICE_MAX)
		return failf(err, errlen, "device state above %u bytes", QCKPT_DEVICE_MAX);
	{
		uint8_t *b = realloc(im->device, im->device_len + n);

		if (!b)
			return -ENOMEM;
		im->device = b;
	}
	memcpy(im->device + im->device_len, d, n);
	im->device_len += n;
	fs->pieces++;
	return 0;
}

/* One file of the chain, older files already in im (first: none). */
static int load_file(const char *path, bool first, const uint8_t *key, size_t key_len,
		     struct load *l, char *err, size_t errlen)
{
	struct ckpt_reader_opts ro = { .mac_key = key, .mac_key_len = key_len };
	struct qckpt_image *im = l->im;
	struct ckpt_page_target target = { .place = place, .opaque = l };
	struct file_state fs = { 0 };
	struct ckpt_source src;
	struct ckpt_reader *r;
	struct ckpt_record rec;
	uint8_t parent_digest[16];
	char why[400] = "";
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW), ret;

	if (fd < 0) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return -errno;
	}
	memcpy(parent_digest, im->digest, 16);
	ckpt_fd_source(&fd, &src);
	r = ckpt_reader_new(&src, &ro);
	if (!r) {
		close(fd);
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	while ((ret = ckpt_reader_next(r, &rec)) == 0) {
		switch (rec.type) {
		case CKPT_REC_HEADER:
			if (first && !l->check_only && (rec.u.header->flags & CKPT_HDRF_INCREMENTAL))
				ret = failf(why, sizeof(why), "the oldest file of the chain is "
					    "incremental");
			else if (!first && !same_regions(rec.u.header, &im->info))
				ret = failf(why, sizeof(why), "its regions differ from its parent's");
			else if (rec.u.header->page_size != PAGE)
				ret = failf(why, sizeof(why), "page size %u, QEMU's is %u",
					    rec.u.header->page_size, PAGE);
			if (!ret) {
				im->info = *rec.u.header;
				if (first && !l->check_only)
					ret = alloc_regions(im, l->hashes_only, why, sizeof(why));
			}
			break;
		case CKPT_REC_PARENT:
			if (!l->check_only && (first || memcmp(rec.u.parent.digest, parent_digest, 16)))
				ret = failf(why, sizeof(why), "it does not name the file before it in "
					    "the chain as its parent (digest)");
			break;
		case CKPT_REC_PAGES:
			if (!l->check_only)
				ret = ckpt_reader_apply(r, &rec, &target);
			break;
		case CKPT_REC_STATE:
			ret = take_state(im, &rec, &im->info, &fs, why, sizeof(why));
			break;
		case CKPT_REC_COMMIT:
			memcpy(im->digest, rec.u.commit.digest, 16);
			break;
		}
		if (ret)
			break;
	}
	if (ret == 1 && (!fs.config || !fs.xml || !fs.pieces))
		ret = failf(why, sizeof(why), "not a domain checkpoint: its %s record is missing",
			    !fs.config ? "domain config" : !fs.xml ? "domain XML" : "device state");
	if (ret == 1)
		ret = 0;
	else if (why[0])
		snprintf(err, errlen, "%s: %s", path, why);
	else
		snprintf(err, errlen, "%s: %s", path, ckpt_reader_errmsg(r));
	if (ret > 0 || (ret < 0 && ret != -ENOMEM))
		ret = -EBADMSG;
	ckpt_reader_free(r);
	close(fd);
	return ret;
}

int qckpt_image_load(char *const *files, unsigned n, const uint8_t *mac_key, size_t mac_key_len,
		     bool hashes_only, struct qckpt_image *im, char *err, size_t errlen)
{
	struct load l = { .im = im, .hashes_only = hashes_only };
	int ret = 0;

	memset(im, 0, sizeof(*im));
	if (!n)
		return failf(err, errlen, "no file");
	for (unsigned i = n; i-- > 0 && !ret;)
		ret = load_file(files[i], i == n - 1, mac_key, mac_key_len, &l, err, errlen);
	if (ret)
		qckpt_image_free(im);
	return ret;
}

int qckpt_file_check(const char *path, const uint8_t *mac_key, size_t mac_key_len,
		     unsigned *vcpus, uint64_t *device_bytes, char *err, size_t errlen)
{
	struct qckpt_image im;
	struct load l = { .im = &im, .check_only = true };
	int ret;

	memset(&im, 0, sizeof(im));
	ret = load_file(path, true, mac_key, mac_key_len, &l, err, errlen);
	*vcpus = im.vcpus;
	*device_bytes = im.device_len;
	qckpt_image_free(&im);
	return ret;
}

void qckpt_image_free(struct qckpt_image *im)
{
	for (unsigned r = 0; r < QCKPT_MAX_BLOCKS; r++) {
		if (im->ram[r])
			munmap(im->ram[r], region_pages(&im->info, r) * PAGE);
		free(im->hash[r]);
	}
	free(im->xml);
	free(im->device);
	memset(im, 0, sizeof(*im));
}

int qckpt_image_write(const struct qckpt_image *im, int fd, const uint8_t *mac_key,
		      size_t mac_key_len, uint8_t image_uuid[16], uint8_t digest[16],
		      uint64_t *file_bytes, char *err, size_t errlen)
{
	struct ckpt_image_info info = im->info;
	struct ckpt_sink sink;
	struct ckpt_writer *w = file_writer(&fd, &sink, mac_key, mac_key_len, CKPT_COMPRESSOR_LZ4);
	int ret;

	if (!w)
		return -ENOMEM;
	info.flags = 0;
	new_identity(&info);
	memcpy(image_uuid, info.image_uuid, 16);
	ckpt_writer_header(w, &info);
	ckpt_writer_marker(w, CKPT_MARK_ROUND, 1);
	for (unsigned r = 0; r < info.region_count && !ckpt_writer_error(w); r++) {
		uint64_t pages = region_pages(&info, r);

		for (uint64_t p = 0; p < pages; p++) {
			const uint8_t *pg = im->ram[r] + p * PAGE;

			/* a full image holds no zero page: absent is zero */
			if (!ckpt_page_is_zero(pg, PAGE) && ckpt_writer_page(w, r, p, pg, NULL))
				break;
		}
	}
	ret = write_state(w, im);
	if (!ret)
		ret = ckpt_writer_finish(w, digest);
	if (ret)
		snprintf(err, errlen, "writing the merged image: %s", strerror(-ret));
	*file_bytes = ckpt_writer_stats(w)->bytes;
	ckpt_writer_free(w);
	return ret;
}

/* ---- capture ---- */

struct qckpt_capture {
	int fd;
	struct ckpt_sink sink;
	struct ckpt_writer *w;
	struct qckpt_capture_opts o;
	struct qckpt_image im;		/* what the stream said; no pages */
	uint64_t *written[QCKPT_MAX_BLOCKS];	/* pages this file holds a copy of */
	uint8_t page[PAGE];
	uint64_t round;
	bool header_done;
	struct qckpt_capture_stats st;
	char err[400];
};

struct qckpt_capture *qckpt_capture_new(int fd, const struct qckpt_capture_opts *o,
					char *err, size_t errlen)
{
	struct qckpt_capture *c = calloc(1, sizeof(*c));

	if (!c || !(c->im.xml = strdup(o->xml))) {
		free(c);
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	c->fd = fd;
	c->o = *o;
	c->im.vcpus = o->vcpus;
	c->im.was_running = o->was_running;
	c->w = file_writer(&c->fd, &c->sink, o->mac_key, o->mac_key_len, o->compress);
	if (!c->w) {
		qckpt_capture_free(c);
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	return c;
}

static int refuse(struct qckpt_capture *c, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static int refuse(struct qckpt_capture *c, const char *fmt, ...)
{
	va_list ap;

	if (!c->err[0]) {
		va_start(ap, fmt);
		vsnprintf(c->err, sizeof(c->err), fmt, ap);
		va_end(ap);
	}
	return -EPROTO;
}

/* The block list: the file's HEADER (and PARENT), checked against the parent. */
static int blocks_event(struct qckpt_capture *c, const struct qstream_event *ev)
{
	const struct qckpt_image *p = c->o.parent;
	struct ckpt_image_info info = { .page_size = PAGE };
	uint64_t gpa = 0;

	if (ev->u.blocks.count > QCKPT_MAX_BLOCKS)
		return refuse(c, "QEMU has %u RAM blocks, a checkpoint holds at most %u",
			      ev->u.blocks.count, QCKPT_MAX_BLOCKS);
	if (p && p->nblocks != ev->u.blocks.count)
		return refuse(c, "the domain has %u RAM blocks, its parent checkpoint %u: take a "
			      "full checkpoint", ev->u.blocks.count, p->nblocks);
	info.region_count = ev->u.blocks.count;
	for (unsigned b = 0; b < ev->u.blocks.count; b++) {
		const struct qstream_block *blk = &ev->u.blocks.list[b];

		if (p && (strcmp(p->blocks[b].idstr, blk->idstr) ||
			  p->blocks[b].used_length != blk->used_length))
			return refuse(c, "RAM block %s differs from its parent checkpoint's (%s, "
				      "%llu bytes): take a full checkpoint", blk->idstr,
				      p->blocks[b].idstr, (unsigned long long)p->blocks[b].used_length);
		if (blk->used_length > CKPT_MAX_REGION_BYTES)
			return refuse(c, "RAM block %s is larger than a region may be", blk->idstr);
		c->im.blocks[b] = *blk;
		info.regions[b] = (struct ckpt_region){ .id = b, .gpa = gpa, .size = blk->used_length };
		gpa += blk->used_length;	/* laid end to end, as on the wire */
		c->written[b] = calloc(blk->used_length / PAGE / 64 + 1, sizeof(uint64_t));
		if (!c->written[b])
			return refuse(c, "out of memory");
	}
	c->im.nblocks = ev->u.blocks.count;
	memcpy(info.guest_uuid, c->o.parent ? c->o.parent->info.guest_uuid : c->im.cfg.uuid, 16);
	snprintf(info.guest_name, sizeof(info.guest_name), "%s", c->o.domain_name);
	new_identity(&info);
	if (p)
		info.flags |= CKPT_HDRF_INCREMENTAL;
	memcpy(c->st.image_uuid, info.image_uuid, 16);
	c->im.info = info;
	ckpt_writer_header(c->w, &info);
	if (p)
		ckpt_writer_parent(c->w, p->info.image_uuid, p->digest);
	c->header_done = true;
	return ckpt_writer_error(c->w);
}

static int page_event(struct qckpt_capture *c, const struct qstream_event *ev)
{
	unsigned b = ev->u.page.block;
	uint64_t p = ev->u.page.offset / PAGE;
	const uint8_t *data = ev->u.page.data;
	bool again = (c->written[b][p / 64] >> (p % 64)) & 1;

	c->st.pages_seen++;
	if (!data) {
		memset(c->page, ev->u.page.fill, PAGE);
		data = c->page;
	}
	/* a page already in this file is written again whatever it holds:
	 * the last copy is the one restore takes */
	if (!again) {
		bool same = c->o.parent ? c->o.parent->hash[b][p] == XXH3_64bits(data, PAGE) :
			    ckpt_page_is_zero(data, PAGE);

		if (same) {
			c->st.pages_unchanged += c->o.parent != NULL;
			return 0;
		}
	}
	c->written[b][p / 64] |= 1ull << (p % 64);
	c->st.pages_written++;
	return ckpt_writer_page(c->w, b, p, data, NULL);
}

int qckpt_capture_event(void *capture, const struct qstream_event *ev)
{
	struct qckpt_capture *c = capture;

	if (c->err[0] || ckpt_writer_error(c->w))
		return -EPROTO;
	switch (ev->type) {
	case QSTREAM_EV_CONFIG:
		c->im.cfg = *ev->u.config;
		return 0;
	case QSTREAM_EV_COMMAND:
		return refuse(c, "QEMU opened a return path (capability return-path is on)");
	case QSTREAM_EV_RAM_BEGIN:
		if (ev->u.ram.kind == QSTREAM_RAM_SETUP)
			c->im.ram_section_id = ev->u.ram.section_id;
		else
			ckpt_writer_marker(c->w, CKPT_MARK_ROUND, ++c->round);
		return ckpt_writer_error(c->w);
	case QSTREAM_EV_RAM_BLOCKS:
		return blocks_event(c, ev);
	case QSTREAM_EV_RAM_PAGE:
		return page_event(c, ev);
	case QSTREAM_EV_RAM_EOS:
		return 0;
	case QSTREAM_EV_DEVICE:
		if (c->im.device_len + ev->u.device.len > QCKPT_DEVICE_MAX)
			return refuse(c, "QEMU's device state is above %u bytes", QCKPT_DEVICE_MAX);
		{
			uint8_t *d = realloc(c->im.device, c->im.device_len + ev->u.device.len);

			if (!d)
				return refuse(c, "out of memory");
			c->im.device = d;
		}
		memcpy(c->im.device + c->im.device_len, ev->u.device.data, ev->u.device.len);
		c->im.device_len += ev->u.device.len;
		return 0;
	case QSTREAM_EV_END:
		return 0;
	}
	return refuse(c, "unknown stream event %d", (int)ev->type);
}

int qckpt_capture_finish(struct qckpt_capture *c)
{
	int ret;

	if (c->err[0])
		return -EPROTO;
	if (!c->header_done || !c->im.device_len)
		return refuse(c, "QEMU's stream ended before its %s", !c->header_done ?
			      "RAM block list" : "device state");
	ret = write_state(c->w, &c->im);
	if (!ret)
		ret = ckpt_writer_finish(c->w, c->st.digest);
	if (ret)
		return refuse(c, "writing the checkpoint: %s", strerror(-ret));
	return 0;
}

const char *qckpt_capture_errmsg(const struct qckpt_capture *c)
{
	if (c->err[0])
		return c->err;
	return ckpt_writer_error(c->w) ? strerror(-ckpt_writer_error(c->w)) : "no error";
}

void qckpt_capture_stats(const struct qckpt_capture *c, struct qckpt_capture_stats *out)
{
	*out = c->st;
	out->device_bytes = c->im.device_len;
	out->file_bytes = ckpt_writer_stats(c->w)->bytes;
}

void qckpt_capture_free(struct qckpt_capture *c)
{
	if (!c)
		return;
	ckpt_writer_free(c->w);
	for (unsigned b = 0; b < QCKPT_MAX_BLOCKS; b++)
		free(c->written[b]);
	free(c->im.xml);
	free(c->im.device);
	free(c);
}
