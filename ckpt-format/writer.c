/*
 * Record writer. Pages are encoded as they are added and collected into one
 * PAGES record per region run; each record is checksummed, and the image
 * digest is chained over record headers so COMMIT seals the whole stream
 * without a second pass over the data.
 */
#include "ckpt.h"

#include <endian.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "ckpt_hash.h"
#include "lz4_auto.h"
#include "mac.h"

#define DEFAULT_BATCH_PAGES	1024u
#define GIVE_UP_STREAK		32u	/* failed compressions in a row */
#define SKIP_PAGES		224u	/* then pages sent without trying */

struct ckpt_writer {
	struct ckpt_sink sink;
	struct ckpt_writer_opts opts;
	int err;			/* sticky: first failure */
	bool header_done, finished;
	struct ckpt_image_info info;
	uint64_t seq;
	uint64_t offset;		/* bytes written so far */
	XXH3_state_t *digest;		/* over every record header */
	XXH3_state_t *sum;		/* per-record checksum */
	struct ckpt_mac *mac;		/* over every byte before COMMIT, or NULL */
	struct ckpt_writer_stats stats;

	/* The batch being built: one region, strictly increasing pages. */
	uint32_t batch_region;
	unsigned batch_cap;
	unsigned batch_count;
	unsigned batch_data;		/* entries with content */
	struct ckpt_page_entry *entries;
	uint8_t *data;
	size_t data_len;		/* the record's data area */
	size_t data_used;		/* of it in data (the rest: refs) */
	const uint8_t **refs;		/* live_pages: entry i's raw page, or NULL */
	uint64_t batch_next_page;	/* first page a new entry may use */
	uint8_t *scratch;

	/* Adaptive compression (LZ4 or zstd): after a streak of pages that did
	 * not shrink (random data), skip the attempt for a while and then
	 * probe again. With opts.lz4_auto LZ4 follows measured costs instead. */
	unsigned fail_streak;
	unsigned skip;
	struct lz4_auto lz4_auto;

	/* Per region and page: offset of the PAGES record with its latest copy. */
	uint64_t *index[CKPT_MAX_REGIONS];
	uint64_t first_index_offset;
};

static int fail(struct ckpt_writer *w, int err)
{
	if (!w->err)
		w->err = err;
	return w->err;
}

struct ckpt_writer *ckpt_writer_new(const struct ckpt_sink *sink,
				    const struct ckpt_writer_opts *opts)
{
	struct ckpt_writer *w = calloc(1, sizeof(*w));

	if (!w)
		return NULL;
	w->sink = *sink;
	if (opts)
		w->opts = *opts;
	else
		w->opts.codec = ckpt_codec_default;
	lz4_auto_init(&w->lz4_auto);
	w->lz4_auto.overlapped = w->opts.lz4_auto_overlapped;
	w->digest = XXH3_createState();
	w->sum = XXH3_createState();
	if (!w->digest || !w->sum) {
		XXH3_freeState(w->digest);
		XXH3_freeState(w->sum);
		free(w);
		return NULL;
	}
	XXH3_128bits_reset(w->digest);
	if (w->opts.live_pages && (w->opts.mac_key || w->opts.codec.delta))
		w->err = -EINVAL;	/* FORMAT.md: neither goes with LIVE */
	if (w->opts.mac_key) {
		w->mac = ckpt_mac_new(w->opts.mac_key, w->opts.mac_key_len);
		if (!w->mac) {
			ckpt_writer_free(w);
			return NULL;
		}
	}
	return w;
}

void ckpt_writer_free(struct ckpt_writer *w)
{
	if (!w)
		return;
	for (unsigned i = 0; i < CKPT_MAX_REGIONS; i++)
		free(w->index[i]);
	free(w->entries);
	free(w->refs);
	free(w->data);
	free(w->scratch);
	XXH3_freeState(w->digest);
	XXH3_freeState(w->sum);
	ckpt_mac_free(w->mac);
	free(w);
}

int ckpt_writer_error(const struct ckpt_writer *w)
{
	return w->err;
}

const struct ckpt_writer_stats *ckpt_writer_stats(const struct ckpt_writer *w)
{
	return &w->stats;
}

int ckpt_writer_buffers(const struct ckpt_writer *w, struct iovec out[2])
{
	if (!w->entries || !w->data)
		return 0;
	out[0] = (struct iovec){ w->entries, w->batch_cap * sizeof(*w->entries) };
	out[1] = (struct iovec){ w->data, (size_t)w->batch_cap * w->info.page_size };
	return 2;
}

/* Write one record whose payload is the concatenation of parts. */
static int emit(struct ckpt_writer *w, uint16_t type, uint16_t flags,
		const struct iovec *parts, int nparts)
{
	struct ckpt_rec_hdr hdr;
	struct iovec iov[8];
	size_t len = 0;
	int ret;

	if (w->err)
		return w->err;
	if (nparts > 7)
		return fail(w, -EINVAL);
	for (int i = 0; i < nparts; i++)
		len += parts[i].iov_len;
	if (len > CKPT_MAX_PAYLOAD)
		return fail(w, -E2BIG);

	hdr.type = htole16(type);
	hdr.flags = htole16(flags);
	hdr.length = htole32((uint32_t)len);
	hdr.seq = htole64(w->seq);
	XXH3_64bits_reset(w->sum);
	XXH3_64bits_update(w->sum, &hdr, CKPT_REC_HDR_SUMMED);
	for (int i = 0; i < nparts; i++)
		XXH3_64bits_update(w->sum, parts[i].iov_base, parts[i].iov_len);
	hdr.checksum = htole64(XXH3_64bits_digest(w->sum));

	iov[0].iov_base = &hdr;
	iov[0].iov_len = sizeof(hdr);
	memcpy(iov + 1, parts, nparts * sizeof(*parts));
	ret = w->sink.writev(w->sink.opaque, iov, nparts + 1);
	if (ret < 0)
		return fail(w, ret);

	if (type != CKPT_REC_COMMIT) {
		XXH3_128bits_update(w->digest, &hdr, sizeof(hdr));
		ckpt_mac_update(w->mac, &hdr, sizeof(hdr));
		for (int i = 0; i < nparts; i++)
			ckpt_mac_update(w->mac, parts[i].iov_base, parts[i].iov_len);
	}
	w->seq++;
	w->offset += sizeof(hdr) + len;
	w->stats.records++;
	w->stats.bytes = w->offset;
	return 0;
}

static int emit1(struct ckpt_writer *w, uint16_t type, const void *buf, size_t len)
{
	struct iovec part = { .iov_base = (void *)buf, .iov_len = len };

	return emit(w, type, 0, &part, 1);
}

static bool valid_info(const struct ckpt_image_info *info)
{
	uint32_t ps = info->page_size;

	if (ps < CKPT_MIN_PAGE_SIZE || ps > CKPT_MAX_PAGE_SIZE || (ps & (ps - 1)))
		return false;
	if (info->region_count == 0 || info->region_count > CKPT_MAX_REGIONS)
		return false;
	if (info->flags & ~CKPT_HDRF_KNOWN)
		return false;
	if (!memchr(info->guest_name, 0, CKPT_NAME_LEN))
		return false;
	for (uint32_t i = 0; i < info->region_count; i++) {
		const struct ckpt_region *r = &info->regions[i];

		if (!r->size || r->size % ps || r->gpa % ps ||
		    r->size > CKPT_MAX_REGION_BYTES)
			return false;
		for (uint32_t j = 0; j < i; j++) {
			const struct ckpt_region *o = &info->regions[j];

			if (o->id == r->id || (r->gpa < o->gpa + o->size &&
					       o->gpa < r->gpa + r->size))
				return false;
		}
	}
	return true;
}

/* The oldest minor that reads what these options may write (FORMAT.md:
 * readers of earlier minors read all that does not need a later one). */
static uint16_t header_minor(const struct ckpt_writer_opts *o)
{
	if (o->codec.zstd)
		return CKPT_MINOR_ZSTD;
	return o->live_pages ? CKPT_MINOR_LIVE : 0;
}

int ckpt_writer_header(struct ckpt_writer *w, const struct ckpt_image_info *info)
{
	struct ckpt_header_rec h;
	struct ckpt_region_desc regions[CKPT_MAX_REGIONS];
	struct iovec parts[2];
	size_t max_entries;
	int ret;

	if (w->err)
		return w->err;
	if (w->header_done || !valid_info(info))
		return fail(w, -EINVAL);
	w->info = *info;

	max_entries = (CKPT_MAX_PAYLOAD - sizeof(struct ckpt_pages_rec)) /
		      (sizeof(struct ckpt_page_entry) + info->page_size);
	w->batch_cap = w->opts.batch_pages ? w->opts.batch_pages : DEFAULT_BATCH_PAGES;
	if (w->batch_cap > max_entries)
		w->batch_cap = (unsigned)max_entries;
	if (w->batch_cap > CKPT_MAX_BATCH_ENTRIES)
		w->batch_cap = CKPT_MAX_BATCH_ENTRIES;
	w->entries = calloc(w->batch_cap, sizeof(*w->entries));
	w->data = malloc((size_t)w->batch_cap * info->page_size);
	w->scratch = malloc(info->page_size);
	if (w->opts.live_pages)
		w->refs = calloc(w->batch_cap, sizeof(*w->refs));
	if (!w->entries || !w->data || !w->scratch || (w->opts.live_pages && !w->refs))
		return fail(w, -ENOMEM);
	if (w->opts.build_index) {
		for (uint32_t i = 0; i < info->region_count; i++) {
			w->index[i] = calloc(info->regions[i].size / info->page_size,
					     sizeof(uint64_t));
			if (!w->index[i])
				return fail(w, -ENOMEM);
		}
	}

	memset(&h, 0, sizeof(h));
	h.major = htole16(CKPT_VERSION_MAJOR);
	h.minor = htole16(header_minor(&w->opts));
	h.flags = htole32(info->flags);
	h.page_size = htole32(info->page_size);
	h.region_count = htole32(info->region_count);
	memcpy(h.guest_uuid, info->guest_uuid, 16);
	memcpy(h.image_uuid, info->image_uuid, 16);
	memcpy(h.guest_name, info->guest_name, CKPT_NAME_LEN);
	h.created_ns = htole64(info->created_ns);
	for (uint32_t i = 0; i < info->region_count; i++) {
		regions[i].id = htole32(info->regions[i].id);
		regions[i].flags = 0;
		regions[i].gpa = htole64(info->regions[i].gpa);
		regions[i].size = htole64(info->regions[i].size);
	}
	parts[0] = (struct iovec){ CKPT_MAGIC, CKPT_MAGIC_LEN };
	ret = w->sink.writev(w->sink.opaque, parts, 1);
	if (ret < 0)
		return fail(w, ret);
	w->offset = CKPT_MAGIC_LEN;
	ckpt_mac_update(w->mac, CKPT_MAGIC, CKPT_MAGIC_LEN);

	parts[0] = (struct iovec){ &h, sizeof(h) };
	parts[1] = (struct iovec){ regions, info->region_count * sizeof(regions[0]) };
	if (emit(w, CKPT_REC_HEADER, 0, parts, 2))
		return w->err;
	w->header_done = true;
	return 0;
}

static int need_body(struct ckpt_writer *w)
{
	if (w->err)
		return w->err;
	if (!w->header_done || w->finished)
		return fail(w, -EINVAL);
	return 0;
}

int ckpt_writer_parent(struct ckpt_writer *w, const uint8_t image_uuid[16],
		       const uint8_t digest[16])
{
	struct ckpt_parent_rec p;

	if (need_body(w))
		return w->err;
	if (w->seq != 1 || !(w->info.flags & CKPT_HDRF_INCREMENTAL))
		return fail(w, -EINVAL);
	memcpy(p.image_uuid, image_uuid, 16);
	memcpy(p.digest, digest, 16);
	return emit1(w, CKPT_REC_PARENT, &p, sizeof(p));
}

int ckpt_writer_marker(struct ckpt_writer *w, uint32_t kind, uint64_t number)
{
	struct ckpt_marker_rec m = {
		.kind = htole32(kind),
		.number = htole64(number),
	};

	if (need_body(w) || ckpt_writer_flush(w))
		return w->err;
	return emit1(w, CKPT_REC_MARKER, &m, sizeof(m));
}

/*
 * A LIVE PAGES record (FORMAT.md): head, entries, a checksum of each
 * entry's data, then the data, raw pages straight from where they lie. The
 * record's checksum covers all but the data. Sent in pieces of at most
 * LIVE_IOV iovecs (a channel takes few at a time); neighbouring pages of
 * memory go as one.
 */
#define LIVE_IOV	16

static int emit_live_pages(struct ckpt_writer *w, const struct ckpt_pages_rec *head)
{
	uint64_t sums[CKPT_MAX_BATCH_ENTRIES];
	const uint8_t *own = w->data;
	struct ckpt_rec_hdr hdr;
	struct iovec iov[LIVE_IOV];
	size_t sums_len = w->batch_count * sizeof(uint64_t);
	size_t len = sizeof(*head) + w->batch_count * sizeof(*w->entries) + sums_len;
	int n = 0, first_data, ret;

	for (unsigned i = 0; i < w->batch_count; i++) {
		const struct ckpt_page_entry *e = &w->entries[i];
		uint32_t size = le32toh(e->size);

		if (e->encoding == CKPT_ENC_ZERO) {
			sums[i] = 0;
			continue;
		}
		sums[i] = htole64(XXH3_64bits(w->refs[i] ? w->refs[i] : own, size));
		if (!w->refs[i])
			own += size;
	}
	hdr.type = htole16(CKPT_REC_PAGES);
	hdr.flags = htole16(CKPT_RECF_LIVE);
	hdr.length = htole32((uint32_t)(len + w->data_len));
	hdr.seq = htole64(w->seq);
	XXH3_64bits_reset(w->sum);
	XXH3_64bits_update(w->sum, &hdr, CKPT_REC_HDR_SUMMED);
	XXH3_64bits_update(w->sum, head, sizeof(*head));
	XXH3_64bits_update(w->sum, w->entries, w->batch_count * sizeof(*w->entries));
	XXH3_64bits_update(w->sum, sums, sums_len);
	hdr.checksum = htole64(XXH3_64bits_digest(w->sum));

	iov[n++] = (struct iovec){ &hdr, sizeof(hdr) };
	iov[n++] = (struct iovec){ (void *)head, sizeof(*head) };
	iov[n++] = (struct iovec){ w->entries, w->batch_count * sizeof(*w->entries) };
	iov[n++] = (struct iovec){ sums, sums_len };
	first_data = n;
	own = w->data;
	for (unsigned i = 0; i < w->batch_count; i++) {
		const struct ckpt_page_entry *e = &w->entries[i];
		uint32_t size = le32toh(e->size);
		const uint8_t *p = w->refs[i];

		if (e->encoding == CKPT_ENC_ZERO)
			continue;
		if (!p) {
			p = own;
			own += size;
		}
		if (n > first_data && (uint8_t *)iov[n - 1].iov_base + iov[n - 1].iov_len == p) {
			iov[n - 1].iov_len += size;
			continue;
		}
		if (n == LIVE_IOV) {
			ret = w->sink.writev(w->sink.opaque, iov, n);
			if (ret < 0)
				return fail(w, ret);
			n = first_data = 0;
		}
		iov[n++] = (struct iovec){ (void *)p, size };
	}
	ret = w->sink.writev(w->sink.opaque, iov, n);
	if (ret < 0)
		return fail(w, ret);
	XXH3_128bits_update(w->digest, &hdr, sizeof(hdr));
	w->seq++;
	w->offset += sizeof(hdr) + len + w->data_len;
	w->stats.records++;
	w->stats.bytes = w->offset;
	return 0;
}

int ckpt_writer_flush(struct ckpt_writer *w)
{
	struct ckpt_pages_rec head;
	struct iovec parts[3];
	uint64_t offset = w->offset, t0 = 0, cpu0 = 0;
	int slot;

	if (w->err || !w->batch_count)
		return w->err;
	head.region_id = htole32(w->batch_region);
	head.count = htole32(w->batch_count);
	parts[0] = (struct iovec){ &head, sizeof(head) };
	parts[1] = (struct iovec){ w->entries, w->batch_count * sizeof(*w->entries) };
	parts[2] = (struct iovec){ w->data, w->data_len };
	if (w->opts.lz4_auto) {
		t0 = lz4_auto_now_ns();
		cpu0 = lz4_auto_thread_cpu_ns(NULL);
	}
	if (w->opts.live_pages ? emit_live_pages(w, &head) : emit(w, CKPT_REC_PAGES, 0, parts, 3))
		return w->err;
	if (w->opts.lz4_auto)
		lz4_auto_sent(&w->lz4_auto, w->offset - offset, lz4_auto_now_ns() - t0,
			      lz4_auto_thread_cpu_ns(NULL) - cpu0);
	w->stats.page_bytes += w->data_len;
	w->stats.data_pages += w->batch_data;

	slot = ckpt_info_region_slot(&w->info, w->batch_region);
	if (w->opts.build_index && slot >= 0) {
		for (unsigned i = 0; i < w->batch_count; i++) {
			const struct ckpt_page_entry *e = &w->entries[i];
			uint64_t page = le64toh(e->page);
			uint64_t n = e->encoding == CKPT_ENC_ZERO ? le32toh(e->size) : 1;

			for (uint64_t p = page; p < page + n; p++)
				w->index[slot][p] = offset;
		}
	}
	w->batch_count = 0;
	w->batch_data = 0;
	w->data_len = 0;
	w->data_used = 0;
	return 0;
}

/* Make room for an entry for page in region; flushes when it must. */
static int batch_prepare(struct ckpt_writer *w, uint32_t region_id,
			 uint64_t page, uint64_t count)
{
	int slot;

	if (need_body(w))
		return w->err;
	slot = ckpt_info_region_slot(&w->info, region_id);
	if (slot < 0 || count == 0 ||
	    page >= w->info.regions[slot].size / w->info.page_size ||
	    count > w->info.regions[slot].size / w->info.page_size - page)
		return fail(w, -ERANGE);
	if (w->batch_count && (w->batch_region != region_id ||
			       page < w->batch_next_page ||
			       w->batch_count == w->batch_cap))
		ckpt_writer_flush(w);
	w->batch_region = region_id;
	return w->err;
}

/* Encode one page into the batch's data area, choosing whether to try to
 * compress it (zstd, when asked for, takes LZ4's place; lz4_auto is LZ4's). */
static int encode_page(struct ckpt_writer *w, const void *data, const void *prev, size_t *len)
{
	struct ckpt_codec_opts codec = w->opts.codec;
	bool automatic = codec.lz4 && !codec.zstd && w->opts.lz4_auto && !(prev && codec.delta);
	bool timed = false;
	uint64_t t0 = 0;
	int enc;

	if (automatic) {
		codec.lz4 = lz4_auto_try(&w->lz4_auto, &timed);
		if (timed)
			t0 = lz4_auto_now_ns();
	} else if ((codec.lz4 || codec.zstd) && w->skip) {
		codec.lz4 = codec.zstd = false;
		w->skip--;
	}
	codec.raw_by_reference = w->opts.live_pages;
	enc = ckpt_page_encode(data, prev, w->info.page_size, &codec,
			       w->data + w->data_used, len, w->scratch);
	if (enc == CKPT_ENC_ZERO)
		return enc;
	if (automatic) {
		lz4_auto_page(&w->lz4_auto, codec.lz4, w->info.page_size, *len,
			      timed ? lz4_auto_now_ns() - t0 : 0);
	} else if ((codec.lz4 || codec.zstd) && enc == CKPT_ENC_RAW) {
		if (++w->fail_streak >= GIVE_UP_STREAK) {
			w->skip = SKIP_PAGES;
			w->fail_streak = 0;
		}
	} else {
		w->fail_streak = 0;
	}
	return enc;
}

int ckpt_writer_page(struct ckpt_writer *w, uint32_t region_id, uint64_t page,
		     const void *data, const void *prev)
{
	struct ckpt_page_entry *e;
	size_t len;
	int enc;

	if (batch_prepare(w, region_id, page, 1))
		return w->err;
	enc = encode_page(w, data, prev, &len);
	w->stats.pages[enc]++;

	/* Extend a zero run that ends right before this page. */
	e = w->batch_count ? &w->entries[w->batch_count - 1] : NULL;
	if (enc == CKPT_ENC_ZERO && e && e->encoding == CKPT_ENC_ZERO &&
	    le64toh(e->page) + le32toh(e->size) == page &&
	    le32toh(e->size) < UINT32_MAX) {
		e->size = htole32(le32toh(e->size) + 1);
	} else {
		e = &w->entries[w->batch_count++];
		memset(e, 0, sizeof(*e));
		e->page = htole64(page);
		e->size = htole32(enc == CKPT_ENC_ZERO ? 1 : (uint32_t)len);
		e->encoding = (uint8_t)enc;
		w->data_len += len;
		w->batch_data += enc != CKPT_ENC_ZERO;
		if (w->refs)
			w->refs[w->batch_count - 1] = enc == CKPT_ENC_RAW ? data : NULL;
		if (!w->refs || enc != CKPT_ENC_RAW)
			w->data_used += len;
	}
	w->batch_next_page = page + 1;
	return 0;
}

int ckpt_writer_zero_run(struct ckpt_writer *w, uint32_t region_id,
			 uint64_t first_page, uint64_t count)
{
	while (count) {
		uint32_t n = count > UINT32_MAX ? UINT32_MAX : (uint32_t)count;
		struct ckpt_page_entry *e;

		if (batch_prepare(w, region_id, first_page, n))
			return w->err;
		e = &w->entries[w->batch_count++];
		memset(e, 0, sizeof(*e));
		e->page = htole64(first_page);
		e->size = htole32(n);
		e->encoding = CKPT_ENC_ZERO;
		w->stats.pages[CKPT_ENC_ZERO] += n;
		w->stats.run_pages += n;
		w->batch_next_page = first_page + n;
		first_page += n;
		count -= n;
	}
	return 0;
}

int ckpt_writer_state(struct ckpt_writer *w, uint32_t kind, uint32_t instance,
		      uint32_t version, bool optional, const void *data,
		      size_t len)
{
	struct ckpt_state_rec s = {
		.kind = htole32(kind),
		.instance = htole32(instance),
		.version = htole32(version),
	};
	struct iovec parts[2] = {
		{ &s, sizeof(s) },
		{ (void *)data, len },
	};

	if (need_body(w) || ckpt_writer_flush(w))
		return w->err;
	return emit(w, CKPT_REC_STATE, optional ? CKPT_RECF_OPTIONAL : 0,
		    parts, 2);
}

/* INDEX records, split so that none exceeds the entry cap. */
static int write_index(struct ckpt_writer *w)
{
	w->first_index_offset = w->offset;
	for (uint32_t i = 0; i < w->info.region_count; i++) {
		uint64_t pages = w->info.regions[i].size / w->info.page_size;

		for (uint64_t first = 0; first < pages; first += CKPT_MAX_INDEX_ENTRIES) {
			uint64_t n = pages - first;
			struct ckpt_index_rec head;
			struct iovec parts[2];
			uint64_t *offs = w->index[i] + first;

			if (n > CKPT_MAX_INDEX_ENTRIES)
				n = CKPT_MAX_INDEX_ENTRIES;
			head.region_id = htole32(w->info.regions[i].id);
			head.count = htole32((uint32_t)n);
			head.first_page = htole64(first);
			for (uint64_t k = 0; k < n; k++)
				offs[k] = htole64(offs[k]);
			parts[0] = (struct iovec){ &head, sizeof(head) };
			parts[1] = (struct iovec){ offs, n * sizeof(uint64_t) };
			if (emit(w, CKPT_REC_INDEX, 0, parts, 2))
				return w->err;
		}
	}
	return 0;
}

int ckpt_writer_finish(struct ckpt_writer *w, uint8_t *digest_out)
{
	struct ckpt_end_rec end;
	struct ckpt_commit_rec c;
	XXH128_hash_t h;
	XXH128_canonical_t canon;
	uint64_t pages_total = 0;

	if (need_body(w) || ckpt_writer_flush(w))
		return w->err;
	for (int i = 0; i < CKPT_ENC_COUNT; i++)
		pages_total += w->stats.pages[i];
	end.pages_total = htole64(pages_total);
	end.records = htole64(w->seq);
	if (emit1(w, CKPT_REC_END, &end, sizeof(end)))
		return w->err;
	if (w->opts.build_index && write_index(w))
		return w->err;

	memset(&c, 0, sizeof(c));
	c.digest_alg = htole32(CKPT_DIGEST_XXH3_128);
	c.mac_alg = htole32(w->mac ? CKPT_MAC_HMAC_SHA256 : CKPT_MAC_NONE);
	if (w->mac && ckpt_mac_final(w->mac, c.mac))
		return fail(w, -EIO);
	c.index_offset = htole64(w->opts.build_index ? w->first_index_offset : 0);
	c.records = htole64(w->seq);
	h = XXH3_128bits_digest(w->digest);
	XXH128_canonicalFromHash(&canon, h);
	memcpy(c.digest, canon.digest, 16);
	if (emit1(w, CKPT_REC_COMMIT, &c, sizeof(c)))
		return w->err;
	w->finished = true;
	if (digest_out)
		memcpy(digest_out, c.digest, 16);
	return 0;
}

int ckpt_info_region_slot(const struct ckpt_image_info *info, uint32_t id)
{
	for (uint32_t i = 0; i < info->region_count; i++)
		if (info->regions[i].id == id)
			return (int)i;
	return -1;
}
