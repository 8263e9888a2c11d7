/*
 * Record reader. Everything read is hostile until checked: lengths are
 * capped before anything is allocated, every record's checksum and sequence
 * number are verified, and the record grammar below is enforced:
 *
 *   MAGIC HEADER [PARENT] { MARKER | PAGES | STATE } END { INDEX } COMMIT EOF
 *
 * PARENT comes right after HEADER exactly when the image is incremental,
 * PAGES only after a first MARKER, and unknown optional records anywhere
 * between HEADER and COMMIT are skipped.
 */
#include "ckpt.h"

#include <endian.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/uio.h>

#include <openssl/crypto.h>

#include "ckpt_hash.h"
#include "mac.h"

#define MAX_STATES_PER_PERIOD	4096u

/* The fuzzer cannot forge checksums: let it reach the parsers behind them. */
#ifdef FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION
#define FUZZING 1
#else
#define FUZZING 0
#endif

enum phase {
	PH_MAGIC,
	PH_HEADER,
	PH_AFTER_HEADER,	/* PARENT may (or must) come now */
	PH_BODY,
	PH_AFTER_END,		/* INDEX records, then COMMIT */
	PH_DONE,
};

struct state_key {
	uint32_t kind, instance;
};

struct batch_ref {
	uint64_t offset;
	uint32_t slot;
};

struct ckpt_reader {
	struct ckpt_source src;
	struct ckpt_reader_opts opts;
	int ret;			/* sticky: first failure */
	enum ckpt_error code;
	char msg[256];

	enum phase phase;
	uint64_t seq_next;
	uint64_t offset;		/* bytes consumed */
	uint8_t *buf;
	size_t buf_cap;
	uint8_t *scratch;
	uint8_t *page;			/* one decoded page, for target->place */
	XXH3_state_t *sum;
	XXH3_state_t *digest;
	struct ckpt_mac *mac;		/* when a key was given */
	struct ckpt_image_info info;
	const struct ckpt_page_target *into;	/* LIVE pages straight to it, or NULL */
	bool deferred;			/* the record read holds no data yet: into's */

	bool marker_seen[3];		/* by CKPT_MARK_* */
	uint64_t marker_last[3];
	struct state_key *states;	/* seen since the last marker */
	size_t nstates;
	struct batch_ref *batches;	/* every PAGES record, in stream order */
	size_t nbatches, batches_cap;
	uint64_t pages_total;

	uint64_t first_index_offset;
	uint32_t index_slot;		/* where the next INDEX record must start */
	uint64_t index_page;
};

static const char *const error_names[CKPT_E_COUNT] = {
	[CKPT_OK] = "ok",
	[CKPT_E_IO] = "read error",
	[CKPT_E_TRUNCATED] = "truncated",
	[CKPT_E_MAGIC] = "bad magic",
	[CKPT_E_VERSION] = "unsupported version",
	[CKPT_E_CHECKSUM] = "checksum mismatch",
	[CKPT_E_SEQUENCE] = "record out of sequence",
	[CKPT_E_UNKNOWN_TYPE] = "unknown required record",
	[CKPT_E_ORDER] = "record out of order",
	[CKPT_E_DUPLICATE] = "duplicate",
	[CKPT_E_LENGTH] = "bad length",
	[CKPT_E_RANGE] = "out of range",
	[CKPT_E_FIELD] = "bad field",
	[CKPT_E_ENCODING] = "bad page encoding",
	[CKPT_E_DIGEST] = "digest mismatch",
	[CKPT_E_TRAILING] = "trailing data",
	[CKPT_E_MAC] = "authentication failed",
	[CKPT_E_NOMEM] = "out of memory",
};

const char *ckpt_error_name(enum ckpt_error e)
{
	return (unsigned)e < CKPT_E_COUNT ? error_names[e] : "unknown error";
}

__attribute__((format(printf, 3, 4)))
static int reject(struct ckpt_reader *r, enum ckpt_error code, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (r->ret)
		return r->ret;
	r->code = code;
	n = snprintf(r->msg, sizeof(r->msg), "%s at offset %llu: ",
		     ckpt_error_name(code), (unsigned long long)r->offset);
	va_start(ap, fmt);
	if (n > 0 && (size_t)n < sizeof(r->msg))
		vsnprintf(r->msg + n, sizeof(r->msg) - n, fmt, ap);
	va_end(ap);
	r->ret = code == CKPT_E_IO ? -EIO : code == CKPT_E_NOMEM ? -ENOMEM : -EBADMSG;
	return r->ret;
}

struct ckpt_reader *ckpt_reader_new(const struct ckpt_source *src,
				    const struct ckpt_reader_opts *opts)
{
	struct ckpt_reader *r = calloc(1, sizeof(*r));

	if (!r)
		return NULL;
	r->src = *src;
	if (opts)
		r->opts = *opts;
	r->sum = XXH3_createState();
	r->digest = XXH3_createState();
	r->states = calloc(MAX_STATES_PER_PERIOD, sizeof(*r->states));
	if (!r->sum || !r->digest || !r->states) {
		ckpt_reader_free(r);
		return NULL;
	}
	XXH3_128bits_reset(r->digest);
	if (r->opts.mac_key) {
		r->mac = ckpt_mac_new(r->opts.mac_key, r->opts.mac_key_len);
		if (!r->mac) {
			ckpt_reader_free(r);
			return NULL;
		}
	}
	return r;
}

void ckpt_reader_free(struct ckpt_reader *r)
{
	if (!r)
		return;
	XXH3_freeState(r->sum);
	XXH3_freeState(r->digest);
	ckpt_mac_free(r->mac);
	free(r->states);
	free(r->batches);
	free(r->buf);
	free(r->scratch);
	free(r->page);
	free(r);
}

enum ckpt_error ckpt_reader_error(const struct ckpt_reader *r)
{
	return r->code;
}

const char *ckpt_reader_errmsg(const struct ckpt_reader *r)
{
	return r->code ? r->msg : "no error";
}

const struct ckpt_image_info *ckpt_reader_info(const struct ckpt_reader *r)
{
	return r->phase > PH_HEADER ? &r->info : NULL;
}

/* Read exactly len bytes; what is missing is reported as truncation. */
static int read_exact(struct ckpt_reader *r, void *buf, size_t len, const char *what)
{
	long n = r->src.read(r->src.opaque, buf, len);

	if (n < 0)
		return reject(r, CKPT_E_IO, "reading %s: %s", what, strerror((int)-n));
	if ((size_t)n != len)
		return reject(r, CKPT_E_TRUNCATED, "%s: %ld of %zu bytes", what, n, len);
	r->offset += len;
	return 0;
}

static int grow_buf(struct ckpt_reader *r, size_t len)
{
	uint8_t *nb;

	if (len <= r->buf_cap)
		return 0;
	nb = realloc(r->buf, len);
	if (!nb)
		return reject(r, CKPT_E_NOMEM, "payload of %zu bytes", len);
	r->buf = nb;
	r->buf_cap = len;
	return 0;
}

static uint16_t get16(const uint8_t *p)
{
	uint16_t v;

	memcpy(&v, p, sizeof(v));
	return le16toh(v);
}

static uint32_t get32(const uint8_t *p)
{
	uint32_t v;

	memcpy(&v, p, sizeof(v));
	return le32toh(v);
}

static uint64_t get64(const uint8_t *p)
{
	uint64_t v;

	memcpy(&v, p, sizeof(v));
	return le64toh(v);
}

#define FIELD(p, type, member) ((p) + offsetof(type, member))

/* A LIVE record's entry and the checksum of its data. */
#define LIVE_ENTRY_BYTES	(sizeof(struct ckpt_page_entry) + sizeof(uint64_t))

static int parse_header(struct ckpt_reader *r, const uint8_t *p, uint32_t len)
{
	struct ckpt_image_info *info = &r->info;
	unsigned max_minor = r->opts.only_1_0 ? 0 : r->opts.only_1_1 ? CKPT_MINOR_LIVE :
			     CKPT_VERSION_MINOR;
	uint32_t ps, count;

	if (len < sizeof(struct ckpt_header_rec))
		return reject(r, CKPT_E_LENGTH, "HEADER of %u bytes", len);
	info->major = get16(FIELD(p, struct ckpt_header_rec, major));
	info->minor = get16(FIELD(p, struct ckpt_header_rec, minor));
	if (info->major != CKPT_VERSION_MAJOR || info->minor > max_minor)
		return reject(r, CKPT_E_VERSION, "format %u.%u, this reader reads %u.0 to %u.%u",
			      info->major, info->minor, CKPT_VERSION_MAJOR,
			      CKPT_VERSION_MAJOR, max_minor);
	count = get32(FIELD(p, struct ckpt_header_rec, region_count));
	if (count == 0 || count > CKPT_MAX_REGIONS)
		return reject(r, CKPT_E_RANGE, "%u regions (1 to %u allowed)",
			      count, CKPT_MAX_REGIONS);
	if (len != sizeof(struct ckpt_header_rec) + count * sizeof(struct ckpt_region_desc))
		return reject(r, CKPT_E_LENGTH, "HEADER of %u bytes for %u regions", len, count);
	info->flags = get32(FIELD(p, struct ckpt_header_rec, flags));
	if (info->flags & ~CKPT_HDRF_KNOWN)
		return reject(r, CKPT_E_FIELD, "unknown header flags %#x", info->flags);
	ps = get32(FIELD(p, struct ckpt_header_rec, page_size));
	if (ps < CKPT_MIN_PAGE_SIZE || ps > CKPT_MAX_PAGE_SIZE || (ps & (ps - 1)))
		return reject(r, CKPT_E_FIELD, "page size %u", ps);
	info->page_size = ps;
	memcpy(info->guest_uuid, FIELD(p, struct ckpt_header_rec, guest_uuid), 16);
	memcpy(info->image_uuid, FIELD(p, struct ckpt_header_rec, image_uuid), 16);
	memcpy(info->guest_name, FIELD(p, struct ckpt_header_rec, guest_name), CKPT_NAME_LEN);
	if (!memchr(info->guest_name, 0, CKPT_NAME_LEN))
		return reject(r, CKPT_E_FIELD, "guest name not terminated");
	info->created_ns = get64(FIELD(p, struct ckpt_header_rec, created_ns));
	info->region_count = count;

	p += sizeof(struct ckpt_header_rec);
	for (uint32_t i = 0; i < count; i++, p += sizeof(struct ckpt_region_desc)) {
		struct ckpt_region *rg = &info->regions[i];

		rg->id = get32(FIELD(p, struct ckpt_region_desc, id));
		rg->gpa = get64(FIELD(p, struct ckpt_region_desc, gpa));
		rg->size = get64(FIELD(p, struct ckpt_region_desc, size));
		if (get32(FIELD(p, struct ckpt_region_desc, flags)))
			return reject(r, CKPT_E_FIELD, "region %u has flags set", rg->id);
		if (!rg->size || rg->size % ps || rg->gpa % ps ||
		    rg->size > CKPT_MAX_REGION_BYTES || rg->gpa + rg->size < rg->gpa)
			return reject(r, CKPT_E_RANGE, "region %u: base %#llx size %#llx",
				      rg->id, (unsigned long long)rg->gpa,
				      (unsigned long long)rg->size);
		for (uint32_t j = 0; j < i; j++) {
			const struct ckpt_region *o = &info->regions[j];

			if (o->id == rg->id)
				return reject(r, CKPT_E_DUPLICATE, "region id %u", rg->id);
			if (rg->gpa < o->gpa + o->size && o->gpa < rg->gpa + rg->size)
				return reject(r, CKPT_E_RANGE, "regions %u and %u overlap",
					      o->id, rg->id);
		}
	}
	return 0;
}

static int parse_marker(struct ckpt_reader *r, const uint8_t *p, uint32_t len,
			struct ckpt_record *rec)
{
	uint32_t kind;
	uint64_t number;

	if (len != sizeof(struct ckpt_marker_rec))
		return reject(r, CKPT_E_LENGTH, "MARKER of %u bytes", len);
	kind = get32(FIELD(p, struct ckpt_marker_rec, kind));
	number = get64(FIELD(p, struct ckpt_marker_rec, number));
	if ((kind != CKPT_MARK_ROUND && kind != CKPT_MARK_EPOCH) ||
	    get32(FIELD(p, struct ckpt_marker_rec, reserved)))
		return reject(r, CKPT_E_FIELD, "marker kind %u", kind);
	if (r->marker_seen[kind] && number <= r->marker_last[kind])
		return reject(r, CKPT_E_DUPLICATE, "marker %llu after %llu",
			      (unsigned long long)number,
			      (unsigned long long)r->marker_last[kind]);
	r->marker_seen[kind] = true;
	r->marker_last[kind] = number;
	r->nstates = 0;
	rec->u.marker.kind = kind;
	rec->u.marker.number = number;
	return 0;
}

static int parse_pages(struct ckpt_reader *r, const uint8_t *p, uint32_t len,
		       struct ckpt_record *rec)
{
	struct ckpt_pages_view *v = &rec->u.pages;
	uint32_t ps = r->info.page_size;
	uint64_t region_pages, prev = 0, next = 0, data = 0;
	bool live = rec->flags & CKPT_RECF_LIVE;
	size_t entry_bytes;
	int slot;

	if (!r->marker_seen[CKPT_MARK_ROUND] && !r->marker_seen[CKPT_MARK_EPOCH])
		return reject(r, CKPT_E_ORDER, "PAGES before any MARKER");
	if (len < sizeof(struct ckpt_pages_rec))
		return reject(r, CKPT_E_LENGTH, "PAGES of %u bytes", len);
	v->region_id = get32(FIELD(p, struct ckpt_pages_rec, region_id));
	v->count = get32(FIELD(p, struct ckpt_pages_rec, count));
	slot = ckpt_info_region_slot(&r->info, v->region_id);
	if (slot < 0)
		return reject(r, CKPT_E_RANGE, "PAGES for unknown region %u", v->region_id);
	if (v->count == 0 || v->count > CKPT_MAX_BATCH_ENTRIES)
		return reject(r, CKPT_E_LENGTH, "PAGES with %u entries", v->count);
	entry_bytes = live ? LIVE_ENTRY_BYTES : sizeof(struct ckpt_page_entry);
	if ((uint64_t)v->count * entry_bytes > len - sizeof(struct ckpt_pages_rec))
		return reject(r, CKPT_E_LENGTH, "%u entries in %u bytes", v->count, len);
	region_pages = r->info.regions[slot].size / ps;
	v->entries = (const struct ckpt_page_entry *)(p + sizeof(struct ckpt_pages_rec));
	v->sums = live ? (const uint8_t *)(v->entries + v->count) : NULL;
	v->data = (const uint8_t *)(v->entries + v->count) +
		  (live ? v->count * sizeof(uint64_t) : 0);
	v->data_len = len - sizeof(struct ckpt_pages_rec) - v->count * entry_bytes;

	for (uint32_t i = 0; i < v->count; i++) {
		const uint8_t *e = (const uint8_t *)&v->entries[i];
		uint64_t page = get64(FIELD(e, struct ckpt_page_entry, page));
		uint32_t size = get32(FIELD(e, struct ckpt_page_entry, size));
		uint8_t enc = e[offsetof(struct ckpt_page_entry, encoding)];
		uint64_t run = enc == CKPT_ENC_ZERO ? size : 1;
		const uint8_t *rsv = FIELD(e, struct ckpt_page_entry, reserved);

		if (rsv[0] | rsv[1] | rsv[2])
			return reject(r, CKPT_E_FIELD, "entry %u: reserved bytes set", i);
		if (i && page < next)
			return reject(r, page >= prev ? CKPT_E_DUPLICATE : CKPT_E_ORDER,
				      "entry %u: page %llu not after page %llu", i,
				      (unsigned long long)page,
				      (unsigned long long)(next - 1));
		if (page >= region_pages || run > region_pages - page)
			return reject(r, CKPT_E_RANGE, "entry %u: page %llu+%llu beyond %llu pages",
				      i, (unsigned long long)page,
				      (unsigned long long)run,
				      (unsigned long long)region_pages);
		switch (enc) {
		case CKPT_ENC_ZERO:
			if (size == 0)
				return reject(r, CKPT_E_FIELD, "entry %u: empty zero run", i);
			break;
		case CKPT_ENC_RAW:
			if (size != ps)
				return reject(r, CKPT_E_LENGTH, "entry %u: raw page of %u bytes", i, size);
			data += size;
			break;
		case CKPT_ENC_ZSTD:
			if (r->info.minor < CKPT_MINOR_ZSTD)
				return reject(r, CKPT_E_FIELD, "entry %u: encoding %u (ZSTD) in a "
					      "%u.%u stream", i, enc, r->info.major, r->info.minor);
			/* sized as the LZ4 encodings are */
			__attribute__((fallthrough));
		case CKPT_ENC_LZ4:
		case CKPT_ENC_DELTA:
			if (live && enc == CKPT_ENC_DELTA)
				return reject(r, CKPT_E_FIELD, "entry %u: DELTA in a LIVE record", i);
			if (size == 0 || size >= ps)
				return reject(r, CKPT_E_LENGTH, "entry %u: compressed page of %u bytes",
					      i, size);
			data += size;
			break;
		default:
			return reject(r, CKPT_E_FIELD, "entry %u: encoding %u", i, enc);
		}
		prev = page;
		next = page + run;
		r->pages_total += run;
	}
	if (data != v->data_len)
		return reject(r, CKPT_E_LENGTH, "entries name %llu data bytes, record holds %zu",
			      (unsigned long long)data, v->data_len);

	if (r->nbatches == r->batches_cap) {
		size_t cap = r->batches_cap ? r->batches_cap * 2 : 256;
		struct batch_ref *nb = realloc(r->batches, cap * sizeof(*nb));

		if (!nb)
			return reject(r, CKPT_E_NOMEM, "batch table");
		r->batches = nb;
		r->batches_cap = cap;
	}
	r->batches[r->nbatches++] = (struct batch_ref){ rec->offset, (uint32_t)slot };
	return 0;
}

static int parse_state(struct ckpt_reader *r, const uint8_t *p, uint32_t len,
		       struct ckpt_record *rec)
{
	struct state_key key;

	if (len < sizeof(struct ckpt_state_rec))
		return reject(r, CKPT_E_LENGTH, "STATE of %u bytes", len);
	if (get32(FIELD(p, struct ckpt_state_rec, reserved)))
		return reject(r, CKPT_E_FIELD, "STATE reserved field set");
	key.kind = get32(FIELD(p, struct ckpt_state_rec, kind));
	key.instance = get32(FIELD(p, struct ckpt_state_rec, instance));
	for (size_t i = 0; i < r->nstates; i++)
		if (r->states[i].kind == key.kind && r->states[i].instance == key.instance)
			return reject(r, CKPT_E_DUPLICATE, "state %u/%u twice",
				      key.kind, key.instance);
	if (r->nstates == MAX_STATES_PER_PERIOD)
		return reject(r, CKPT_E_LENGTH, "more than %u state records",
			      MAX_STATES_PER_PERIOD);
	r->states[r->nstates++] = key;
	rec->u.state.kind = key.kind;
	rec->u.state.instance = key.instance;
	rec->u.state.version = get32(FIELD(p, struct ckpt_state_rec, version));
	rec->u.state.data = p + sizeof(struct ckpt_state_rec);
	rec->u.state.len = len - sizeof(struct ckpt_state_rec);
	return 0;
}

static bool is_batch_of(const struct ckpt_reader *r, uint64_t offset, uint32_t slot)
{
	size_t lo = 0, hi = r->nbatches;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (r->batches[mid].offset < offset)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < r->nbatches && r->batches[lo].offset == offset &&
	       r->batches[lo].slot == slot;
}

static int parse_index(struct ckpt_reader *r, const uint8_t *p, uint32_t len,
		       struct ckpt_record *rec)
{
	uint32_t region, count;
	uint64_t first, region_pages;
	int slot;

	if (len < sizeof(struct ckpt_index_rec))
		return reject(r, CKPT_E_LENGTH, "INDEX of %u bytes", len);
	region = get32(FIELD(p, struct ckpt_index_rec, region_id));
	count = get32(FIELD(p, struct ckpt_index_rec, count));
	first = get64(FIELD(p, struct ckpt_index_rec, first_page));
	if (count == 0 || count > CKPT_MAX_INDEX_ENTRIES ||
	    len != sizeof(struct ckpt_index_rec) + (uint64_t)count * 8)
		return reject(r, CKPT_E_LENGTH, "INDEX of %u entries in %u bytes", count, len);
	slot = ckpt_info_region_slot(&r->info, region);
	if (slot < 0)
		return reject(r, CKPT_E_RANGE, "INDEX for unknown region %u", region);
	if ((uint32_t)slot != r->index_slot || first != r->index_page)
		return reject(r, (uint32_t)slot < r->index_slot ||
			      ((uint32_t)slot == r->index_slot && first < r->index_page) ?
			      CKPT_E_DUPLICATE : CKPT_E_ORDER,
			      "INDEX for region %u page %llu, expected slot %u page %llu",
			      region, (unsigned long long)first, r->index_slot,
			      (unsigned long long)r->index_page);
	region_pages = r->info.regions[slot].size / r->info.page_size;
	if (count > region_pages - first)
		return reject(r, CKPT_E_RANGE, "INDEX runs past region %u", region);
	for (uint32_t i = 0; i < count; i++) {
		uint64_t off = get64(p + sizeof(struct ckpt_index_rec) + i * 8ull);

		if (off && !is_batch_of(r, off, (uint32_t)slot))
			return reject(r, CKPT_E_RANGE,
				      "INDEX entry %u: offset %llu is no PAGES record of region %u",
				      i, (unsigned long long)off, region);
	}
	if (!r->first_index_offset)
		r->first_index_offset = rec->offset;
	r->index_page = first + count;
	if (r->index_page == region_pages) {
		r->index_slot++;
		r->index_page = 0;
	}
	rec->u.index.region_id = region;
	rec->u.index.count = count;
	rec->u.index.first_page = first;
	rec->u.index.offsets = p + sizeof(struct ckpt_index_rec);
	return 0;
}

static int parse_commit(struct ckpt_reader *r, const uint8_t *p, uint32_t len,
			struct ckpt_record *rec)
{
	XXH128_canonical_t canon;
	uint32_t digest_alg, mac_alg;
	uint64_t index_offset;

	if (len != sizeof(struct ckpt_commit_rec))
		return reject(r, CKPT_E_LENGTH, "COMMIT of %u bytes", len);
	if (r->first_index_offset && r->index_slot != r->info.region_count)
		return reject(r, CKPT_E_TRUNCATED, "INDEX stops at region slot %u page %llu",
			      r->index_slot, (unsigned long long)r->index_page);
	digest_alg = get32(FIELD(p, struct ckpt_commit_rec, digest_alg));
	mac_alg = get32(FIELD(p, struct ckpt_commit_rec, mac_alg));
	if (digest_alg != CKPT_DIGEST_XXH3_128 ||
	    (mac_alg != CKPT_MAC_NONE && mac_alg != CKPT_MAC_HMAC_SHA256))
		return reject(r, CKPT_E_FIELD, "digest %u, mac %u", digest_alg, mac_alg);
	index_offset = get64(FIELD(p, struct ckpt_commit_rec, index_offset));
	if (index_offset != r->first_index_offset)
		return reject(r, CKPT_E_RANGE, "COMMIT names index at %llu, it is at %llu",
			      (unsigned long long)index_offset,
			      (unsigned long long)r->first_index_offset);
	if (get64(FIELD(p, struct ckpt_commit_rec, records)) != rec->seq)
		return reject(r, CKPT_E_DIGEST, "COMMIT counts %llu records, stream has %llu",
			      (unsigned long long)get64(FIELD(p, struct ckpt_commit_rec, records)),
			      (unsigned long long)rec->seq);
	XXH128_canonicalFromHash(&canon, XXH3_128bits_digest(r->digest));
	if (memcmp(canon.digest, FIELD(p, struct ckpt_commit_rec, digest), 16) && !FUZZING)
		return reject(r, CKPT_E_DIGEST, "image digest does not match its records");
	if (r->mac) {
		uint8_t want[32];

		if (mac_alg != CKPT_MAC_HMAC_SHA256)
			return reject(r, CKPT_E_MAC, "a key was given but the image carries no MAC");
		if (ckpt_mac_final(r->mac, want) ||
		    CRYPTO_memcmp(want, FIELD(p, struct ckpt_commit_rec, mac), 32))
			return reject(r, CKPT_E_MAC, "the MAC does not match: altered, or another key");
	}
	memcpy(rec->u.commit.digest, canon.digest, 16);
	rec->u.commit.index_offset = index_offset;
	rec->u.commit.mac_alg = mac_alg;
	memcpy(rec->u.commit.mac, FIELD(p, struct ckpt_commit_rec, mac), 32);
	return 0;
}

/* Where each record type may appear; sets the phase it leads to. */
static int check_order(struct ckpt_reader *r, uint16_t type)
{
	bool incremental = r->info.flags & CKPT_HDRF_INCREMENTAL;

	if (r->phase == PH_HEADER)
		return type == CKPT_REC_HEADER ? 0 :
		       reject(r, CKPT_E_ORDER, "record type %u before HEADER", type);
	if (type == CKPT_REC_HEADER)
		return reject(r, CKPT_E_DUPLICATE, "second HEADER");
	if (type == CKPT_REC_PARENT) {
		if (r->phase != PH_AFTER_HEADER)
			return reject(r, r->phase == PH_BODY && incremental ?
				      CKPT_E_DUPLICATE : CKPT_E_ORDER, "PARENT here");
		if (!incremental)
			return reject(r, CKPT_E_ORDER, "PARENT in a full image");
		return 0;
	}
	if (r->phase == PH_AFTER_HEADER && incremental)
		return reject(r, CKPT_E_ORDER, "incremental image without PARENT");
	switch (type) {
	case CKPT_REC_MARKER:
	case CKPT_REC_PAGES:
	case CKPT_REC_STATE:
	case CKPT_REC_END:
		if (r->phase == PH_AFTER_END)
			return reject(r, type == CKPT_REC_END ? CKPT_E_DUPLICATE :
				      CKPT_E_ORDER, "record type %u after END", type);
		return 0;
	case CKPT_REC_INDEX:
	case CKPT_REC_COMMIT:
		if (r->phase != PH_AFTER_END)
			return reject(r, CKPT_E_ORDER, "record type %u before END", type);
		return 0;
	}
	return 0;
}

static bool known_type(uint16_t type)
{
	return type >= CKPT_REC_HEADER && type <= CKPT_REC_COMMIT;
}

/*
 * A LIVE record's checksum covers its head, entries and page checksums,
 * not the data (FORMAT.md): how many bytes that is, from the count, which
 * the checksum then covers. Only PAGES of a 1.1 stream without a MAC.
 */
static int live_summed(struct ckpt_reader *r, uint16_t type, uint32_t len, uint32_t *summed)
{
	uint32_t count;

	if (type != CKPT_REC_PAGES || r->phase <= PH_HEADER || r->info.minor < CKPT_MINOR_LIVE)
		return reject(r, CKPT_E_FIELD, "LIVE flag on a record of type %u in a %u.%u stream",
			      type, r->info.major, r->info.minor);
	if (r->mac)
		return reject(r, CKPT_E_FIELD, "LIVE records in an authenticated stream");
	if (len < sizeof(struct ckpt_pages_rec))
		return reject(r, CKPT_E_LENGTH, "LIVE PAGES of %u bytes", len);
	count = get32(r->buf + offsetof(struct ckpt_pages_rec, count));
	if (count == 0 || count > CKPT_MAX_BATCH_ENTRIES ||
	    (uint64_t)count * LIVE_ENTRY_BYTES > len - sizeof(struct ckpt_pages_rec))
		return reject(r, CKPT_E_LENGTH, "LIVE PAGES with %u entries in %u bytes", count, len);
	*summed = (uint32_t)sizeof(struct ckpt_pages_rec) + count * LIVE_ENTRY_BYTES;
	return 0;
}

static int read_pages_into(struct ckpt_reader *r, struct ckpt_record *rec);

static int read_record(struct ckpt_reader *r, struct ckpt_record *rec)
{
	struct ckpt_rec_hdr hdr;
	uint32_t len, summed;
	uint64_t seq;

	memset(rec, 0, sizeof(*rec));
	rec->offset = r->offset;
	{
		long n = r->src.read(r->src.opaque, &hdr, sizeof(hdr));

		if (n < 0)
			return reject(r, CKPT_E_IO, "reading record header: %s",
				      strerror((int)-n));
		if (n == 0)
			return reject(r, CKPT_E_TRUNCATED, "input ends before COMMIT");
		if ((size_t)n != sizeof(hdr))
			return reject(r, CKPT_E_TRUNCATED, "record header: %ld of %zu bytes",
				      n, sizeof(hdr));
		r->offset += sizeof(hdr);
	}
	rec->type = le16toh(hdr.type);
	rec->flags = le16toh(hdr.flags);
	len = le32toh(hdr.length);
	summed = len;
	seq = le64toh(hdr.seq);
	if (len > CKPT_MAX_PAYLOAD)
		return reject(r, CKPT_E_LENGTH, "record of %u bytes, cap %u", len,
			      CKPT_MAX_PAYLOAD);
	r->deferred = false;
	if (grow_buf(r, len ? len : 1))
		return r->ret;
	if (r->into && (rec->flags & CKPT_RECF_LIVE) && rec->type == CKPT_REC_PAGES) {
		/* the head for the count, then entries and sums; the data later */
		if (read_exact(r, r->buf, len < 8 ? len : 8, "record payload") ||
		    live_summed(r, rec->type, len, &summed) ||
		    read_exact(r, r->buf + 8, summed - 8, "record payload"))
			return r->ret;
		r->deferred = true;
	} else if (read_exact(r, r->buf, len, "record payload") ||
		   ((rec->flags & CKPT_RECF_LIVE) && live_summed(r, rec->type, len, &summed))) {
		return r->ret;
	}

	XXH3_64bits_reset(r->sum);
	XXH3_64bits_update(r->sum, &hdr, CKPT_REC_HDR_SUMMED);
	XXH3_64bits_update(r->sum, r->buf, summed);
	if (XXH3_64bits_digest(r->sum) != le64toh(hdr.checksum) && !FUZZING)
		return reject(r, CKPT_E_CHECKSUM, "record %llu (type %u, %u bytes)",
			      (unsigned long long)seq, rec->type, len);
	if (seq != r->seq_next)
		return reject(r, seq < r->seq_next ? CKPT_E_DUPLICATE : CKPT_E_SEQUENCE,
			      "record seq %llu, expected %llu", (unsigned long long)seq,
			      (unsigned long long)r->seq_next);
	if (rec->flags & ~CKPT_RECF_KNOWN)
		return reject(r, CKPT_E_FIELD, "record flags %#x", rec->flags);
	r->seq_next++;
	if (rec->type != CKPT_REC_COMMIT) {
		XXH3_128bits_update(r->digest, &hdr, sizeof(hdr));
		ckpt_mac_update(r->mac, &hdr, sizeof(hdr));
		ckpt_mac_update(r->mac, r->buf, len);
	}
	rec->seq = seq;
	rec->payload = r->buf;
	rec->length = len;
	return 0;
}

int ckpt_reader_next(struct ckpt_reader *r, struct ckpt_record *rec)
{
	uint8_t magic[CKPT_MAGIC_LEN];
	int ret;

	if (r->ret)
		return r->ret;
	if (r->phase == PH_DONE)
		return 1;
	if (r->phase == PH_MAGIC) {
		if (read_exact(r, magic, sizeof(magic), "magic"))
			return r->ret;
		if (memcmp(magic, CKPT_MAGIC, CKPT_MAGIC_LEN))
			return reject(r, CKPT_E_MAGIC, "not a vmigrate image or stream");
		ckpt_mac_update(r->mac, magic, sizeof(magic));
		r->phase = PH_HEADER;
	}

	for (;;) {
		if (read_record(r, rec))
			return r->ret;
		if (known_type(rec->type))
			break;
		if (!(rec->flags & CKPT_RECF_OPTIONAL))
			return reject(r, CKPT_E_UNKNOWN_TYPE, "record type %u", rec->type);
		if (r->phase == PH_HEADER)
			return reject(r, CKPT_E_ORDER, "record type %u before HEADER", rec->type);
	}
	if (check_order(r, rec->type))
		return r->ret;

	switch (rec->type) {
	case CKPT_REC_HEADER:
		ret = parse_header(r, rec->payload, rec->length);
		if (!ret) {
			r->scratch = malloc(r->info.page_size);
			r->page = aligned_alloc(r->info.page_size, r->info.page_size);
			if (!r->scratch || !r->page)
				return reject(r, CKPT_E_NOMEM, "page scratch");
			rec->u.header = &r->info;
			r->phase = PH_AFTER_HEADER;
		}
		return ret;
	case CKPT_REC_PARENT:
		if (rec->length != sizeof(struct ckpt_parent_rec))
			return reject(r, CKPT_E_LENGTH, "PARENT of %u bytes", rec->length);
		memcpy(rec->u.parent.image_uuid, rec->payload, 16);
		memcpy(rec->u.parent.digest, rec->payload + 16, 16);
		r->phase = PH_BODY;
		return 0;
	case CKPT_REC_MARKER:
		r->phase = PH_BODY;
		return parse_marker(r, rec->payload, rec->length, rec);
	case CKPT_REC_PAGES:
		r->phase = PH_BODY;
		if (parse_pages(r, rec->payload, rec->length, rec))
			return r->ret;
		return r->deferred ? read_pages_into(r, rec) : 0;
	case CKPT_REC_STATE:
		r->phase = PH_BODY;
		return parse_state(r, rec->payload, rec->length, rec);
	case CKPT_REC_END:
		if (rec->length != sizeof(struct ckpt_end_rec))
			return reject(r, CKPT_E_LENGTH, "END of %u bytes", rec->length);
		rec->u.end.pages_total = get64(rec->payload);
		if (rec->u.end.pages_total != r->pages_total ||
		    get64(rec->payload + 8) != rec->seq)
			return reject(r, CKPT_E_DIGEST, "END counts do not match the stream");
		r->phase = PH_AFTER_END;
		return 0;
	case CKPT_REC_INDEX:
		return parse_index(r, rec->payload, rec->length, rec);
	case CKPT_REC_COMMIT:
		if (parse_commit(r, rec->payload, rec->length, rec))
			return r->ret;
		r->phase = PH_DONE;
		if (!r->opts.allow_trailing) {
			uint8_t extra;
			long n = r->src.read(r->src.opaque, &extra, 1);

			if (n < 0)
				return reject(r, CKPT_E_IO, "after COMMIT: %s", strerror((int)-n));
			if (n > 0)
				return reject(r, CKPT_E_TRAILING, "bytes after COMMIT");
		}
		return 0;
	}
	return reject(r, CKPT_E_UNKNOWN_TYPE, "record type %u", rec->type);
}

/* Consecutive whole pages bound for a file, written with one pwritev. */
struct page_run {
	int fd;
	uint64_t first_off;
	uint64_t next_off;
	struct iovec iov[64];
	int n;
};

static int run_flush(struct page_run *run)
{
	size_t total = 0;
	off_t off = (off_t)run->first_off;
	int i = 0;

	for (int k = 0; k < run->n; k++)
		total += run->iov[k].iov_len;
	while (total) {
		ssize_t w = pwritev(run->fd, run->iov + i, run->n - i, off);

		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		total -= w;
		off += w;
		while (w > 0 && (size_t)w >= run->iov[i].iov_len)
			w -= run->iov[i++].iov_len;
		if (w > 0) {
			run->iov[i].iov_base = (uint8_t *)run->iov[i].iov_base + w;
			run->iov[i].iov_len -= w;
		}
	}
	run->n = 0;
	return 0;
}

static int run_add(struct page_run *run, uint64_t off, const void *data, size_t len)
{
	struct iovec *last = run->n ? &run->iov[run->n - 1] : NULL;
	int ret = 0;

	if (last && off == run->next_off && (uint8_t *)last->iov_base + last->iov_len == data) {
		last->iov_len += len;	/* neighbours in the record: one piece */
		run->next_off += len;
		return 0;
	}
	if (run->n && (off != run->next_off || run->n == 64))
		ret = run_flush(run);
	if (!run->n)
		run->first_off = off;
	run->iov[run->n++] = (struct iovec){ (void *)data, len };
	run->next_off = off + len;
	return ret;
}

int ckpt_record_dup(const struct ckpt_record *rec, struct ckpt_record *out,
		    uint8_t **owned)
{
	uint8_t *copy = malloc(rec->length ? rec->length : 1);

#define REBASE(ptr) ((ptr) ? (const void *)(copy + ((const uint8_t *)(ptr) - rec->payload)) : NULL)
	if (!copy)
		return -ENOMEM;
	memcpy(copy, rec->payload, rec->length);
	*out = *rec;
	out->payload = copy;
	if (rec->type == CKPT_REC_PAGES) {
		out->u.pages.entries = REBASE(rec->u.pages.entries);
		out->u.pages.data = REBASE(rec->u.pages.data);
	} else if (rec->type == CKPT_REC_STATE) {
		out->u.state.data = REBASE(rec->u.state.data);
	} else if (rec->type == CKPT_REC_INDEX) {
		out->u.index.offsets = REBASE(rec->u.index.offsets);
	}
#undef REBASE
	*owned = copy;
	return 0;
}

/* ckpt_reader_apply through target->place: runs of raw pages straight
 * from the record, other pages decoded one at a time. */
/* Whether entry i of a LIVE record arrived as it was read (always, for
 * other records). */
static bool entry_whole(const struct ckpt_pages_view *v, uint32_t i, const uint8_t *data,
			uint32_t size)
{
	return !v->sums || XXH3_64bits(data, size) == get64(v->sums + (size_t)i * 8);
}

/* A torn page: owed until delivered whole; false when the target cannot
 * keep it owed. */
static bool note_torn(const struct ckpt_page_target *t, int slot, uint64_t page)
{
	uint64_t bit = 1ull << (page % 64);

	if (!t->torn || !t->torn->owed[slot])
		return false;
	__atomic_fetch_add(&t->torn->torn_pages, 1, __ATOMIC_RELAXED);
	if (!(__atomic_fetch_or(&t->torn->owed[slot][page / 64], bit, __ATOMIC_RELAXED) & bit))
		__atomic_fetch_add(&t->torn->owed_pages, 1, __ATOMIC_RELAXED);
	return true;
}

static bool is_owed(const struct ckpt_page_target *t, int slot, uint64_t page)
{
	return t->torn && t->torn->owed[slot] &&
	       (__atomic_load_n(&t->torn->owed[slot][page / 64], __ATOMIC_RELAXED) >> (page % 64)) & 1;
}

/* Pages [page, page+n) arrived whole: no longer owed. */
static void note_whole(const struct ckpt_page_target *t, int slot, uint64_t page, uint64_t n)
{
	if (!t->torn || !t->torn->owed[slot] ||
	    !__atomic_load_n(&t->torn->owed_pages, __ATOMIC_RELAXED))
		return;
	for (uint64_t p = page; p < page + n; p++) {
		uint64_t *word = &t->torn->owed[slot][p / 64], bit = 1ull << (p % 64);

		if (!__atomic_load_n(word, __ATOMIC_RELAXED)) {
			p |= 63;	/* none of this word's pages is owed */
			continue;
		}
		if (__atomic_fetch_and(word, ~bit, __ATOMIC_RELAXED) & bit)
			__atomic_fetch_sub(&t->torn->owed_pages, 1, __ATOMIC_RELAXED);
	}
}

static int apply_placed(struct ckpt_reader *r, const struct ckpt_pages_view *v, int slot,
			const struct ckpt_page_target *target)
{
	uint32_t ps = r->info.page_size;
	const uint8_t *data = v->data, *run = NULL;
	uint64_t run_first = 0, run_n = 0;

	for (uint32_t i = 0; v->sums && i < v->count; i++) {
		const uint8_t *e = (const uint8_t *)&v->entries[i];
		uint32_t size = get32(FIELD(e, struct ckpt_page_entry, size));

		if (e[offsetof(struct ckpt_page_entry, encoding)] == CKPT_ENC_ZERO)
			continue;
		if (!entry_whole(v, i, data, size))	/* placed pages are final */
			return reject(r, CKPT_E_CHECKSUM, "region %u page %llu arrived torn",
				      v->region_id, (unsigned long long)get64(e));
		data += size;
	}
	data = v->data;
	for (uint32_t i = 0; i <= v->count; i++) {
		const uint8_t *e = i < v->count ? (const uint8_t *)&v->entries[i] : NULL;
		uint64_t page = e ? get64(FIELD(e, struct ckpt_page_entry, page)) : 0;
		uint32_t size = e ? get32(FIELD(e, struct ckpt_page_entry, size)) : 0;
		uint8_t enc = e ? e[offsetof(struct ckpt_page_entry, encoding)] : CKPT_ENC_ZERO;

		if (run_n && (!e || enc != CKPT_ENC_RAW || page != run_first + run_n)) {
			if (target->place(target->opaque, (unsigned)slot, run_first, run_n, run))
				return reject(r, CKPT_E_IO, "placing region %u pages %llu+%llu",
					      v->region_id, (unsigned long long)run_first,
					      (unsigned long long)run_n);
			run_n = 0;
		}
		if (!e)
			break;
		if (enc == CKPT_ENC_RAW) {
			if (!run_n) {
				run = data;
				run_first = page;
			}
			run_n++;
		} else if (enc == CKPT_ENC_ZERO) {
			if (target->place(target->opaque, (unsigned)slot, page, size, NULL))
				return reject(r, CKPT_E_IO, "placing region %u zero pages %llu+%u",
					      v->region_id, (unsigned long long)page, size);
			continue;
		} else if (enc == CKPT_ENC_DELTA ||
			   ckpt_page_decode(enc, data, size, r->page, ps, r->scratch)) {
			return reject(r, CKPT_E_ENCODING, "region %u page %llu (encoding %u)",
				      v->region_id, (unsigned long long)page, enc);
		} else if (target->place(target->opaque, (unsigned)slot, page, 1, r->page)) {
			return reject(r, CKPT_E_IO, "placing region %u page %llu", v->region_id,
				      (unsigned long long)page);
		}
		data += size;
	}
	return 0;
}

/* Entry i of v, its data at data, into target memory host (region slot). */
static int apply_entry(struct ckpt_reader *r, const struct ckpt_pages_view *v, uint32_t i,
		       const uint8_t *data, int slot, uint8_t *host,
		       const struct ckpt_page_target *target, struct page_run *run)
{
	const uint8_t *e = (const uint8_t *)&v->entries[i];
	uint64_t page = get64(FIELD(e, struct ckpt_page_entry, page));
	uint32_t size = get32(FIELD(e, struct ckpt_page_entry, size));
	uint8_t enc = e[offsetof(struct ckpt_page_entry, encoding)];
	uint32_t ps = r->info.page_size;
	uint8_t *dst = host + page * ps;

	if (enc != CKPT_ENC_ZERO && !entry_whole(v, i, data, size)) {
		if (!note_torn(target, slot, page))
			return reject(r, CKPT_E_CHECKSUM, "region %u page %llu arrived torn",
				      v->region_id, (unsigned long long)page);
		return 0;
	}
	if (enc == CKPT_ENC_DELTA && is_owed(target, slot, page))
		return reject(r, CKPT_E_ENCODING, "region %u page %llu: a DELTA onto a torn "
			      "page", v->region_id, (unsigned long long)page);
	note_whole(target, slot, page, enc == CKPT_ENC_ZERO ? size : 1);
	if (enc == CKPT_ENC_ZERO) {
		if (target->zero_range && size >= target->zero_range_min) {
			if (target->zero_range(target->opaque, (unsigned)slot, page, size))
				return reject(r, CKPT_E_IO, "clearing region %u pages %llu+%u",
					      v->region_id, (unsigned long long)page, size);
			return 0;
		}
		/* Reading first keeps untouched guest memory unallocated. */
		for (uint32_t k = 0; k < size; k++, dst += ps)
			if (!ckpt_page_is_zero(dst, ps))
				memset(dst, 0, ps);
		return 0;
	}
	if (data == dst)
		return 0;	/* read into place already */
	if (run && run->fd >= 0 && enc == CKPT_ENC_RAW && size == ps) {
		if (run_add(run, target->fd_offset[slot] + page * ps, data, ps))
			return reject(r, CKPT_E_IO, "writing region %u page %llu: %s",
				      v->region_id, (unsigned long long)page, strerror(errno));
		return 0;
	}
	if (run && run->n && run_flush(run))
		return reject(r, CKPT_E_IO, "writing region %u: %s", v->region_id,
			      strerror(errno));
	if (ckpt_page_decode(enc, data, size, dst, ps, r->scratch))
		return reject(r, CKPT_E_ENCODING, "region %u page %llu (encoding %u)",
			      v->region_id, (unsigned long long)page, enc);
	return 0;
}

/* Entries [i, end) of v: raw pages, each the page after the one before. */
static uint32_t raw_run_end(const struct ckpt_pages_view *v, uint32_t i)
{
	uint64_t next = get64(FIELD((const uint8_t *)&v->entries[i], struct ckpt_page_entry, page));
	uint32_t end = i;

	for (; end < v->count; end++, next++) {
		const uint8_t *e = (const uint8_t *)&v->entries[end];

		if (e[offsetof(struct ckpt_page_entry, encoding)] != CKPT_ENC_RAW ||
		    get64(FIELD(e, struct ckpt_page_entry, page)) != next)
			break;
	}
	return end;
}

/*
 * A LIVE PAGES record's data, read after its entries (ckpt_reader_read_into):
 * each run of neighbouring raw pages in one read straight into target
 * memory (populated first in one call, not a fault a page), the rest into
 * the record's buffer where it would have been; every entry then applied.
 */
static int read_pages_into(struct ckpt_reader *r, struct ckpt_record *rec)
{
	struct ckpt_pages_view *v = &rec->u.pages;
	const struct ckpt_page_target *target = r->into;
	int slot = ckpt_info_region_slot(&r->info, v->region_id);
	uint8_t *host = slot >= 0 && !target->place ? target->host[slot] : NULL;
	uint8_t *data = (uint8_t *)v->data;
	uint32_t ps = r->info.page_size;

	if (!host)
		return reject(r, CKPT_E_RANGE, "region %u is not mapped", v->region_id);
	for (uint32_t i = 0; i < v->count; ) {
		const uint8_t *e = (const uint8_t *)&v->entries[i];
		uint32_t size = get32(FIELD(e, struct ckpt_page_entry, size));
		uint8_t enc = e[offsetof(struct ckpt_page_entry, encoding)];

		if (enc == CKPT_ENC_RAW) {
			uint32_t end = raw_run_end(v, i);
			uint8_t *to = host + get64(FIELD(e, struct ckpt_page_entry, page)) * ps;
			size_t bytes = (size_t)(end - i) * ps;

			madvise(to, bytes, MADV_POPULATE_WRITE);	/* a hint: faults do it too */
			if (read_exact(r, to, bytes, "record payload"))
				return r->ret;
			for (; i < end; i++, to += ps)
				if (apply_entry(r, v, i, to, slot, host, target, NULL))
					return r->ret;
			data += bytes;
			continue;
		}
		if (enc != CKPT_ENC_ZERO && read_exact(r, data, size, "record payload"))
			return r->ret;
		if (apply_entry(r, v, i, data, slot, host, target, NULL))
			return r->ret;
		if (enc != CKPT_ENC_ZERO)
			data += size;
		i++;
	}
	v->applied = true;
	return 0;
}

void ckpt_reader_read_into(struct ckpt_reader *r, const struct ckpt_page_target *target)
{
	r->into = target && !target->place ? target : NULL;
}

int ckpt_reader_apply(struct ckpt_reader *r, const struct ckpt_record *rec,
		      const struct ckpt_page_target *target)
{
	struct page_run run = { .fd = -1 };
	const struct ckpt_pages_view *v = &rec->u.pages;
	const uint8_t *data = v->data;
	int slot;
	uint8_t *host;

	if (r->ret)
		return r->ret;
	if (rec->type != CKPT_REC_PAGES)
		return -EINVAL;
	if (v->applied)
		return 0;
	slot = ckpt_info_region_slot(&r->info, v->region_id);
	if (slot >= 0 && target->place)
		return apply_placed(r, v, slot, target);
	host = slot >= 0 ? target->host[slot] : NULL;
	if (!host)
		return reject(r, CKPT_E_RANGE, "region %u is not mapped", v->region_id);
	if (target->use_fd)
		run.fd = target->fd[slot];

	for (uint32_t i = 0; i < v->count; i++) {
		const uint8_t *e = (const uint8_t *)&v->entries[i];

		if (apply_entry(r, v, i, data, slot, host, target, &run))
			return r->ret;
		if (e[offsetof(struct ckpt_page_entry, encoding)] != CKPT_ENC_ZERO)
			data += get32(FIELD(e, struct ckpt_page_entry, size));
	}
	if (run.n && run_flush(&run))
		return reject(r, CKPT_E_IO, "writing region %u: %s", v->region_id, strerror(errno));
	return 0;
}
