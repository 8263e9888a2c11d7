/*
 * Test memory and stream surgery. The text mix draws words from a small
 * vocabulary so LZ4 sees the kind of redundancy real page cache has.
 */
#include "testdata.h"

#include <endian.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ckpt_hash.h"

const char *const mem_mix_names[3] = { "random", "zero-heavy", "text" };

uint64_t td_rand(uint64_t *s)
{
	/* splitmix64: fast, and every seed gives a good stream */
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static void fill_random(uint8_t *p, size_t len, uint64_t *st)
{
	for (size_t i = 0; i < len; i += 8) {
		uint64_t v = td_rand(st);

		memcpy(p + i, &v, 8);
	}
}

static void fill_text(uint8_t *p, size_t len, uint64_t *st)
{
	static const char *const words[] = {
		"the", "guest", "memory", "page", "migration", "kernel", "of",
		"and", "to", "in", "is", "dirty", "round", "checkpoint", "a",
		"for", "with", "bandwidth", "downtime", "state", "vcpu", "host",
		"replication", "epoch", "compressed", "stream", "file", "that",
		"error", "return", "struct", "int", "static", "const", "void",
		"lz4", "buffer", "offset", "length", "#include", "{", "}", ";",
		"\n", "\t", "/*", "*/", "0x7f", "1024", "EINVAL",
	};
	size_t n = 0;

	while (n < len) {
		uint64_t r = td_rand(st);
		const char *w = words[r % (sizeof(words) / sizeof(words[0]))];
		size_t wl = strlen(w);

		if (n + wl + 1 > len)
			break;
		memcpy(p + n, w, wl);
		n += wl;
		p[n++] = (r >> 32) % 11 ? ' ' : '\n';
	}
	memset(p + n, ' ', len - n);
}

void td_fill(void *buf, size_t len, enum mem_mix mix, uint64_t seed)
{
	uint8_t *p = buf;
	uint64_t st = seed;

	for (size_t off = 0; off < len; off += 4096) {
		switch (mix) {
		case MIX_RANDOM:
			fill_random(p + off, 4096, &st);
			break;
		case MIX_TEXT:
			fill_text(p + off, 4096, &st);
			break;
		case MIX_ZERO_HEAVY:
			/* three pages in four zero, the rest text */
			if (td_rand(&st) % 4)
				memset(p + off, 0, 4096);
			else
				fill_text(p + off, 4096, &st);
			break;
		}
	}
}

void td_touch(void *page, size_t page_size, uint64_t seed)
{
	uint8_t *p = page;
	uint64_t st = seed;

	for (int i = 0; i < 4; i++) {
		uint64_t v = td_rand(&st);

		memcpy(p + (v % (page_size / 8)) * 8, &seed, 8);
	}
}

int td_split(const uint8_t *buf, size_t len, struct td_stream *s)
{
	size_t off = CKPT_MAGIC_LEN;

	memset(s, 0, sizeof(*s));
	if (len < CKPT_MAGIC_LEN || memcmp(buf, CKPT_MAGIC, CKPT_MAGIC_LEN))
		return -1;
	while (off < len) {
		struct ckpt_rec_hdr h;
		struct td_rec r;

		if (len - off < sizeof(h))
			return -1;
		memcpy(&h, buf + off, sizeof(h));
		r.type = le16toh(h.type);
		r.flags = le16toh(h.flags);
		r.seq = le64toh(h.seq);
		r.checksum = le64toh(h.checksum);
		r.len = le32toh(h.length);
		if (len - off - sizeof(h) < r.len)
			return -1;
		r.orig_offset = off;
		r.payload = malloc(r.len ? r.len : 1);
		memcpy(r.payload, buf + off + sizeof(h), r.len);
		s->recs = realloc(s->recs, (s->count + 1) * sizeof(r));
		s->recs[s->count++] = r;
		off += sizeof(h) + r.len;
	}
	return 0;
}

static void make_hdr(const struct td_rec *r, uint64_t seq, struct ckpt_rec_hdr *h)
{
	XXH3_state_t *st = XXH3_createState();

	h->type = htole16(r->type);
	h->flags = htole16(r->flags);
	h->length = htole32(r->len);
	h->seq = htole64(seq);
	XXH3_64bits_reset(st);
	XXH3_64bits_update(st, h, CKPT_REC_HDR_SUMMED);
	XXH3_64bits_update(st, r->payload, r->len);
	h->checksum = htole64(XXH3_64bits_digest(st));
	XXH3_freeState(st);
}

/* New offset of the first record found at orig, or orig when none was. */
static uint64_t remap(const struct td_stream *s, const uint64_t *offs, uint64_t orig)
{
	for (size_t i = 0; i < s->count; i++)
		if (s->recs[i].orig_offset == orig)
			return offs[i];
	return orig;
}

/* Make counts and offsets that depend on the layout match it again. */
static void fix_layout(struct td_stream *s)
{
	uint64_t *offs = calloc(s->count + 1, sizeof(uint64_t)), off = CKPT_MAGIC_LEN;
	uint64_t first_index = 0;

	for (size_t i = 0; i < s->count; i++) {
		offs[i] = off;
		off += sizeof(struct ckpt_rec_hdr) + s->recs[i].len;
	}
	for (size_t i = 0; i < s->count; i++) {
		struct td_rec *r = &s->recs[i];

		if (r->type == CKPT_REC_END && r->len == sizeof(struct ckpt_end_rec)) {
			uint64_t v = htole64(i);

			memcpy(r->payload + offsetof(struct ckpt_end_rec, records), &v, 8);
		} else if (r->type == CKPT_REC_INDEX && r->len >= sizeof(struct ckpt_index_rec)) {
			if (!first_index)
				first_index = offs[i];
			for (size_t k = sizeof(struct ckpt_index_rec); k + 8 <= r->len; k += 8) {
				uint64_t v;

				memcpy(&v, r->payload + k, 8);
				if (v)
					v = htole64(remap(s, offs, le64toh(v)));
				memcpy(r->payload + k, &v, 8);
			}
		} else if (r->type == CKPT_REC_COMMIT && r->len == sizeof(struct ckpt_commit_rec)) {
			uint64_t v = htole64(first_index);

			memcpy(r->payload + offsetof(struct ckpt_commit_rec, index_offset), &v, 8);
		}
	}
	free(offs);
}

int td_join(struct td_stream *s, int keep_seq, int keep_digest,
	    uint8_t **out, size_t *out_len)
{
	size_t len = CKPT_MAGIC_LEN, off;
	XXH3_state_t *digest = XXH3_createState();
	uint8_t *buf;

	for (size_t i = 0; i < s->count; i++)
		len += sizeof(struct ckpt_rec_hdr) + s->recs[i].len;
	buf = malloc(len);
	memcpy(buf, CKPT_MAGIC, CKPT_MAGIC_LEN);
	off = CKPT_MAGIC_LEN;
	XXH3_128bits_reset(digest);
	if (!keep_digest)
		fix_layout(s);
	for (size_t i = 0; i < s->count; i++) {
		struct td_rec *r = &s->recs[i];
		struct ckpt_rec_hdr h;

		if (r->type == CKPT_REC_COMMIT && !keep_digest &&
		    r->len == sizeof(struct ckpt_commit_rec)) {
			XXH128_canonical_t c;
			uint64_t records = htole64(keep_seq ? r->seq : i);

			XXH128_canonicalFromHash(&c, XXH3_128bits_digest(digest));
			memcpy(r->payload + offsetof(struct ckpt_commit_rec, digest), c.digest, 16);
			memcpy(r->payload + offsetof(struct ckpt_commit_rec, records), &records, 8);
		}
		make_hdr(r, keep_seq ? r->seq : i, &h);
		if (r->type != CKPT_REC_COMMIT)
			XXH3_128bits_update(digest, &h, sizeof(h));
		memcpy(buf + off, &h, sizeof(h));
		memcpy(buf + off + sizeof(h), r->payload, r->len);
		off += sizeof(h) + r->len;
	}
	XXH3_freeState(digest);
	*out = buf;
	*out_len = len;
	return 0;
}

void td_stream_free(struct td_stream *s)
{
	for (size_t i = 0; i < s->count; i++)
		free(s->recs[i].payload);
	free(s->recs);
	memset(s, 0, sizeof(*s));
}

void td_insert(struct td_stream *s, size_t at, const struct td_rec *rec)
{
	struct td_rec copy = *rec;

	copy.payload = malloc(rec->len ? rec->len : 1);
	memcpy(copy.payload, rec->payload, rec->len);
	s->recs = realloc(s->recs, (s->count + 1) * sizeof(copy));
	memmove(s->recs + at + 1, s->recs + at, (s->count - at) * sizeof(copy));
	s->recs[at] = copy;
	s->count++;
}

void td_remove(struct td_stream *s, size_t at)
{
	free(s->recs[at].payload);
	memmove(s->recs + at, s->recs + at + 1, (s->count - at - 1) * sizeof(s->recs[0]));
	s->count--;
}

long td_find(const struct td_stream *s, uint16_t type, unsigned n)
{
	for (size_t i = 0; i < s->count; i++)
		if (s->recs[i].type == type && n-- == 0)
			return (long)i;
	return -1;
}

int td_decode(const uint8_t *buf, size_t len, const struct ckpt_page_target *target,
	      struct td_decode *out)
{
	struct ckpt_membuf m = { .data = (uint8_t *)buf, .len = len, .cap = len, .fixed = true };
	struct ckpt_source src;
	struct ckpt_reader *r;
	struct ckpt_record rec;
	int ret;

	memset(out, 0, sizeof(*out));
	ckpt_membuf_source(&m, &src);
	r = ckpt_reader_new(&src, NULL);
	if (!r)
		return -1;
	while ((ret = ckpt_reader_next(r, &rec)) == 0) {
		out->records++;
		if (rec.type == CKPT_REC_PAGES) {
			out->pages_records++;
			if (target && (ret = ckpt_reader_apply(r, &rec, target)))
				break;
		} else if (rec.type == CKPT_REC_STATE) {
			out->state_records++;
		}
	}
	out->code = ckpt_reader_error(r);
	snprintf(out->msg, sizeof(out->msg), "%s", ckpt_reader_errmsg(r));
	ckpt_reader_free(r);
	return ret == 1 ? 0 : ret;
}
