/*
 * Hostile input: each way a stream can be wrong is refused with its own
 * error, never a crash, and never a stream that decodes "successfully".
 * Forged streams get valid checksums (td_join) so that the check under
 * test, not the checksum, is what catches them.
 */
#include <endian.h>
#include <errno.h>
#include <stdlib.h>

#include "golden.h"
#include "harness.h"
#include "testdata.h"

static uint8_t r0[GOLDEN_REGION0_PAGES * GOLDEN_PAGE_SIZE];
static uint8_t r1[GOLDEN_REGION1_PAGES * GOLDEN_PAGE_SIZE];
static const struct ckpt_page_target target = { .host = { r0, r1 } };

static struct ckpt_membuf golden;

static void load_golden(struct td_stream *s)
{
	struct ckpt_sink sink;
	uint8_t digest[16];

	ckpt_membuf_release(&golden);	/* the one a previous call made */
	ckpt_membuf_sink(&golden, &sink);
	CHECK_EQ(golden_write(&sink, digest), 0);
	if (s)
		CHECK_EQ(td_split(golden.data, golden.len, s), 0);
}

/* Decode buf and require exactly the error want. */
static void expect(const uint8_t *buf, size_t len, enum ckpt_error want)
{
	struct td_decode d;
	int ret = td_decode(buf, len, &target, &d);

	CHECK_MSG(ret != 0 || want == CKPT_OK, "decoded, expected %s", ckpt_error_name(want));
	CHECK_MSG(d.code == want, "got \"%s\", expected %s", d.msg, ckpt_error_name(want));
}

/* Rejoin s (fresh checksums, seq and digest) and expect an error. */
static void expect_joined(struct td_stream *s, enum ckpt_error want)
{
	uint8_t *buf;
	size_t len;

	td_join(s, 0, 0, &buf, &len);
	expect(buf, len, want);
	free(buf);
	td_stream_free(s);
}

static void put32(uint8_t *p, uint32_t v)
{
	v = htole32(v);
	memcpy(p, &v, 4);
}

static void put64(uint8_t *p, uint64_t v)
{
	v = htole64(v);
	memcpy(p, &v, 8);
}

#define PAGE_ENTRY(rec, i) ((rec)->payload + sizeof(struct ckpt_pages_rec) + \
			    (i) * sizeof(struct ckpt_page_entry))

TEST(untouched_stream_decodes)
{
	struct td_stream s;
	uint8_t *buf;
	size_t len;

	load_golden(&s);
	expect(golden.data, golden.len, CKPT_OK);
	/* split + join is the identity on a good stream */
	td_join(&s, 0, 0, &buf, &len);
	CHECK_EQ(len, golden.len);
	CHECK(!memcmp(buf, golden.data, len));
	free(buf);
	td_stream_free(&s);
}

TEST(truncation_at_every_byte)
{
	load_golden(NULL);
	for (size_t cut = 0; cut < golden.len; cut++) {
		struct td_decode d;

		CHECK_MSG(td_decode(golden.data, cut, &target, &d) != 0,
			  "prefix of %zu bytes decoded", cut);
		CHECK_MSG(d.code == CKPT_E_TRUNCATED, "prefix %zu: %s", cut, d.msg);
	}
}

TEST(bad_magic)
{
	load_golden(NULL);
	golden.data[3] ^= 0x20;
	expect(golden.data, golden.len, CKPT_E_MAGIC);
	expect((const uint8_t *)"ELF\x7f garbage that is long enough to be read", 40, CKPT_E_MAGIC);
}

TEST(newer_major_and_minor_versions)
{
	struct td_stream s;

	load_golden(&s);
	s.recs[0].payload[offsetof(struct ckpt_header_rec, major)] = 2;
	expect_joined(&s, CKPT_E_VERSION);
	load_golden(&s);
	s.recs[0].payload[offsetof(struct ckpt_header_rec, minor)] = CKPT_VERSION_MINOR + 1;
	expect_joined(&s, CKPT_E_VERSION);
}

TEST(flipped_byte_anywhere_is_caught)
{
	load_golden(NULL);
	for (size_t i = CKPT_MAGIC_LEN; i < golden.len; i += 7) {
		struct td_decode d;

		golden.data[i] ^= 0x04;
		CHECK_MSG(td_decode(golden.data, golden.len, &target, &d) != 0,
			  "flip at %zu decoded", i);
		golden.data[i] ^= 0x04;
	}
}

TEST(flipped_payload_byte_is_a_checksum_error)
{
	struct td_stream s;
	long i;

	load_golden(&s);
	i = td_find(&s, CKPT_REC_PAGES, 2);
	CHECK(i > 0);
	{
		uint8_t *buf;
		size_t len, off = CKPT_MAGIC_LEN;

		td_join(&s, 0, 0, &buf, &len);
		for (long k = 0; k < i; k++)
			off += sizeof(struct ckpt_rec_hdr) + s.recs[k].len;
		buf[off + sizeof(struct ckpt_rec_hdr) + 100] ^= 1;
		expect(buf, len, CKPT_E_CHECKSUM);
		free(buf);
	}
	td_stream_free(&s);
}

TEST(oversized_record_length_is_refused_before_allocating)
{
	load_golden(NULL);
	/* first record header starts after the magic; length at +4 */
	put32(golden.data + CKPT_MAGIC_LEN + 4, 0xfffffff0u);
	expect(golden.data, golden.len, CKPT_E_LENGTH);
}

TEST(lost_repeated_and_swapped_records)
{
	struct td_stream s;
	uint8_t *buf;
	size_t len;
	long i;

	/* a replayed record keeps its old seq */
	load_golden(&s);
	i = td_find(&s, CKPT_REC_PAGES, 1);
	td_insert(&s, i + 1, &s.recs[i]);
	for (size_t k = 0; k < s.count; k++)
		s.recs[k].seq = k <= (size_t)i ? k : k - 1;
	td_join(&s, 1, 0, &buf, &len);
	expect(buf, len, CKPT_E_DUPLICATE);
	free(buf);
	td_stream_free(&s);

	/* a lost record leaves a gap */
	load_golden(&s);
	for (size_t k = 0; k < s.count; k++)
		s.recs[k].seq = k;
	td_remove(&s, td_find(&s, CKPT_REC_PAGES, 1));
	td_join(&s, 1, 0, &buf, &len);
	expect(buf, len, CKPT_E_SEQUENCE);
	free(buf);
	td_stream_free(&s);

	/* two records swapped in transit */
	load_golden(&s);
	for (size_t k = 0; k < s.count; k++)
		s.recs[k].seq = k;
	i = td_find(&s, CKPT_REC_PAGES, 1);
	{
		struct td_rec t = s.recs[i];

		s.recs[i] = s.recs[i + 1];
		s.recs[i + 1] = t;
	}
	td_join(&s, 1, 0, &buf, &len);
	expect(buf, len, CKPT_E_SEQUENCE);
	free(buf);
	td_stream_free(&s);
}

TEST(records_out_of_grammar_order)
{
	struct td_stream s;

	load_golden(&s);	/* PAGES before any MARKER */
	td_remove(&s, td_find(&s, CKPT_REC_MARKER, 0));
	expect_joined(&s, CKPT_E_ORDER);

	load_golden(&s);	/* a MARKER first, before HEADER */
	td_insert(&s, 0, &s.recs[td_find(&s, CKPT_REC_MARKER, 0)]);
	expect_joined(&s, CKPT_E_ORDER);

	load_golden(&s);	/* INDEX before END */
	td_insert(&s, 2, &s.recs[td_find(&s, CKPT_REC_INDEX, 0)]);
	expect_joined(&s, CKPT_E_ORDER);

	load_golden(&s);	/* PAGES after END */
	td_insert(&s, td_find(&s, CKPT_REC_END, 0) + 1, &s.recs[td_find(&s, CKPT_REC_PAGES, 0)]);
	expect_joined(&s, CKPT_E_ORDER);

	load_golden(&s);	/* no COMMIT at all */
	td_remove(&s, td_find(&s, CKPT_REC_COMMIT, 0));
	expect_joined(&s, CKPT_E_TRUNCATED);
}

TEST(duplicate_records)
{
	struct td_stream s;
	long i;

	load_golden(&s);	/* a second HEADER */
	td_insert(&s, 1, &s.recs[0]);
	expect_joined(&s, CKPT_E_DUPLICATE);

	load_golden(&s);	/* the same vCPU state twice in one round */
	i = td_find(&s, CKPT_REC_STATE, 1);
	td_insert(&s, i + 1, &s.recs[i]);
	expect_joined(&s, CKPT_E_DUPLICATE);

	load_golden(&s);	/* a round number repeated */
	i = td_find(&s, CKPT_REC_MARKER, 1);
	put64(s.recs[i].payload + 8, 1);
	expect_joined(&s, CKPT_E_DUPLICATE);

	load_golden(&s);	/* a second END */
	i = td_find(&s, CKPT_REC_END, 0);
	td_insert(&s, i + 1, &s.recs[i]);
	expect_joined(&s, CKPT_E_DUPLICATE);

	load_golden(&s);	/* the same page twice in one batch */
	i = td_find(&s, CKPT_REC_PAGES, 0);
	memcpy(PAGE_ENTRY(&s.recs[i], 1), PAGE_ENTRY(&s.recs[i], 0), 8);
	expect_joined(&s, CKPT_E_DUPLICATE);

	load_golden(&s);	/* an INDEX record repeated */
	i = td_find(&s, CKPT_REC_INDEX, 0);
	td_insert(&s, i + 1, &s.recs[i]);
	expect_joined(&s, CKPT_E_DUPLICATE);
}

TEST(pages_out_of_order_in_a_batch)
{
	struct td_stream s;
	long i;
	uint8_t tmp[sizeof(struct ckpt_page_entry)];

	load_golden(&s);
	i = td_find(&s, CKPT_REC_PAGES, 1);
	/* move entry 2's page index below entry 1's */
	memcpy(tmp, PAGE_ENTRY(&s.recs[i], 1), 8);
	put64(PAGE_ENTRY(&s.recs[i], 2), le64toh(*(uint64_t *)tmp) - 1);
	expect_joined(&s, CKPT_E_ORDER);
}

TEST(regions_and_pages_out_of_range)
{
	struct td_stream s;
	long i;

	load_golden(&s);	/* unknown region id */
	i = td_find(&s, CKPT_REC_PAGES, 0);
	put32(s.recs[i].payload, 99);
	expect_joined(&s, CKPT_E_RANGE);

	load_golden(&s);	/* page index beyond the region */
	i = td_find(&s, CKPT_REC_PAGES, 0);
	put64(PAGE_ENTRY(&s.recs[i], 0), 1ull << 40);
	expect_joined(&s, CKPT_E_RANGE);

	load_golden(&s);	/* zero run that runs past the region's end */
	i = td_find(&s, CKPT_REC_PAGES, 0);
	CHECK_EQ(PAGE_ENTRY(&s.recs[i], 0)[12], CKPT_ENC_ZERO);
	put32(PAGE_ENTRY(&s.recs[i], 0) + 8, 1000);
	expect_joined(&s, CKPT_E_RANGE);

	load_golden(&s);	/* overlapping regions in the header */
	put64(s.recs[0].payload + sizeof(struct ckpt_header_rec) + 24 + 8, 4096);
	expect_joined(&s, CKPT_E_RANGE);

	load_golden(&s);	/* two regions with one id */
	put32(s.recs[0].payload + sizeof(struct ckpt_header_rec) + 24, 0);
	expect_joined(&s, CKPT_E_DUPLICATE);

	load_golden(&s);	/* region count beyond the cap */
	put32(s.recs[0].payload + offsetof(struct ckpt_header_rec, region_count), 100000);
	expect_joined(&s, CKPT_E_RANGE);

	load_golden(&s);	/* index names a record that is no PAGES record */
	i = td_find(&s, CKPT_REC_INDEX, 0);
	put64(s.recs[i].payload + sizeof(struct ckpt_index_rec), 9);
	expect_joined(&s, CKPT_E_RANGE);
}

TEST(oversized_counts_and_lengths)
{
	struct td_stream s;
	long i;

	load_golden(&s);	/* more entries than the cap */
	i = td_find(&s, CKPT_REC_PAGES, 0);
	put32(s.recs[i].payload + 4, CKPT_MAX_BATCH_ENTRIES + 1);
	expect_joined(&s, CKPT_E_LENGTH);

	load_golden(&s);	/* more entries than the record holds */
	i = td_find(&s, CKPT_REC_PAGES, 0);
	put32(s.recs[i].payload + 4, 4000);
	expect_joined(&s, CKPT_E_LENGTH);

	load_golden(&s);	/* a raw page shorter than a page */
	for (unsigned n = 0; (i = td_find(&s, CKPT_REC_PAGES, n)) >= 0; n++) {
		struct td_rec *r = &s.recs[i];
		uint32_t count = le32toh(*(uint32_t *)(r->payload + 4));

		for (uint32_t e = 0; e < count; e++)
			if (PAGE_ENTRY(r, e)[12] == CKPT_ENC_RAW) {
				put32(PAGE_ENTRY(r, e) + 8, 4095);
				goto found;
			}
	}
	CHECK_MSG(0, "golden has no raw page");
found:
	expect_joined(&s, CKPT_E_LENGTH);

	load_golden(&s);	/* entry sizes that leave data unaccounted */
	i = td_find(&s, CKPT_REC_PAGES, 0);
	s.recs[i].payload = realloc(s.recs[i].payload, s.recs[i].len + 10);
	s.recs[i].len += 10;
	expect_joined(&s, CKPT_E_LENGTH);

	load_golden(&s);	/* header length that does not match its region count */
	s.recs[0].len -= 1;
	expect_joined(&s, CKPT_E_LENGTH);
}

TEST(reserved_fields_and_bad_values)
{
	struct td_stream s;
	long i;

	load_golden(&s);
	put32(s.recs[0].payload + offsetof(struct ckpt_header_rec, page_size), 5000);
	expect_joined(&s, CKPT_E_FIELD);

	load_golden(&s);
	put32(s.recs[0].payload + offsetof(struct ckpt_header_rec, flags), 0x80);
	expect_joined(&s, CKPT_E_FIELD);

	load_golden(&s);
	memset(s.recs[0].payload + offsetof(struct ckpt_header_rec, guest_name), 'x', CKPT_NAME_LEN);
	expect_joined(&s, CKPT_E_FIELD);

	load_golden(&s);	/* unknown page encoding */
	i = td_find(&s, CKPT_REC_PAGES, 0);
	PAGE_ENTRY(&s.recs[i], 0)[12] = 17;
	expect_joined(&s, CKPT_E_FIELD);

	load_golden(&s);	/* reserved entry bytes */
	i = td_find(&s, CKPT_REC_PAGES, 0);
	PAGE_ENTRY(&s.recs[i], 0)[14] = 1;
	expect_joined(&s, CKPT_E_FIELD);

	load_golden(&s);	/* unknown record flag */
	s.recs[1].flags = 0x8000;
	expect_joined(&s, CKPT_E_FIELD);

	load_golden(&s);	/* unknown marker kind */
	i = td_find(&s, CKPT_REC_MARKER, 0);
	put32(s.recs[i].payload, 9);
	expect_joined(&s, CKPT_E_FIELD);
}

TEST(unknown_records_required_and_optional)
{
	struct td_stream s;
	struct td_rec extra = { .type = 200, .payload = (uint8_t *)"future", .len = 6 };
	uint8_t *buf;
	size_t len;

	load_golden(&s);
	td_insert(&s, 3, &extra);
	expect_joined(&s, CKPT_E_UNKNOWN_TYPE);

	/* an optional record of a type this reader lacks is skipped */
	load_golden(&s);
	extra.flags = CKPT_RECF_OPTIONAL;
	td_insert(&s, 3, &extra);
	td_join(&s, 0, 0, &buf, &len);
	expect(buf, len, CKPT_OK);
	{
		uint8_t e0[sizeof(r0)], e1[sizeof(r1)];

		golden_memory(e0, e1);
		CHECK(!memcmp(r0, e0, sizeof(r0)) && !memcmp(r1, e1, sizeof(r1)));
	}
	free(buf);
	td_stream_free(&s);
}

TEST(digest_and_counts_must_match)
{
	struct td_stream s;
	uint8_t *buf;
	size_t len;
	long i;

	/* a state record altered, checksum redone, COMMIT left as it was */
	load_golden(&s);
	i = td_find(&s, CKPT_REC_STATE, 0);
	s.recs[i].payload[sizeof(struct ckpt_state_rec)] ^= 1;
	td_join(&s, 0, 1, &buf, &len);
	expect(buf, len, CKPT_E_DIGEST);
	free(buf);
	td_stream_free(&s);

	load_golden(&s);	/* END counting pages that never came */
	i = td_find(&s, CKPT_REC_END, 0);
	put64(s.recs[i].payload, 12345);
	expect_joined(&s, CKPT_E_DIGEST);
}

TEST(corrupt_lz4_data_with_good_checksum)
{
	struct td_stream s;

	load_golden(&s);
	for (unsigned n = 0;; n++) {
		long i = td_find(&s, CKPT_REC_PAGES, n);
		struct td_rec *r;
		uint32_t count, off = 0;

		CHECK(i >= 0);
		r = &s.recs[i];
		count = le32toh(*(uint32_t *)(r->payload + 4));
		for (uint32_t e = 0; e < count; e++) {
			uint8_t *pe = PAGE_ENTRY(r, e);
			uint32_t size = le32toh(*(uint32_t *)(pe + 8));

			if (pe[12] == CKPT_ENC_LZ4) {
				uint8_t *data = PAGE_ENTRY(r, count) + off;

				/* a match offset pointing before the output */
				memset(data + 1, 0xff, size - 1);
				expect_joined(&s, CKPT_E_ENCODING);
				return;
			}
			if (pe[12] != CKPT_ENC_ZERO)
				off += size;
		}
	}
}

TEST(trailing_garbage)
{
	uint8_t *buf;

	load_golden(NULL);
	buf = malloc(golden.len + 1);
	memcpy(buf, golden.data, golden.len);
	buf[golden.len] = 0;
	expect(buf, golden.len + 1, CKPT_E_TRAILING);
	free(buf);
}

TEST(incremental_images_need_exactly_one_parent)
{
	struct td_stream s;
	struct td_rec parent = { .type = CKPT_REC_PARENT, .len = 32 };
	uint8_t p[32] = { 1, 2, 3 };

	parent.payload = p;
	load_golden(&s);	/* PARENT in a full image */
	td_insert(&s, 1, &parent);
	expect_joined(&s, CKPT_E_ORDER);

	load_golden(&s);	/* incremental without PARENT */
	put32(s.recs[0].payload + offsetof(struct ckpt_header_rec, flags), CKPT_HDRF_INCREMENTAL);
	expect_joined(&s, CKPT_E_ORDER);

	load_golden(&s);	/* incremental with two */
	put32(s.recs[0].payload + offsetof(struct ckpt_header_rec, flags), CKPT_HDRF_INCREMENTAL);
	td_insert(&s, 1, &parent);
	td_insert(&s, 1, &parent);
	expect_joined(&s, CKPT_E_DUPLICATE);

	load_golden(&s);	/* incremental with one: fine */
	put32(s.recs[0].payload + offsetof(struct ckpt_header_rec, flags), CKPT_HDRF_INCREMENTAL);
	td_insert(&s, 1, &parent);
	{
		uint8_t *buf;
		size_t len;

		td_join(&s, 0, 0, &buf, &len);
		expect(buf, len, CKPT_OK);
		free(buf);
		td_stream_free(&s);
	}
}

static long failing_read(void *opaque, void *buf, size_t len)
{
	return -ECONNRESET;
}

TEST(source_errors_are_io_errors)
{
	struct ckpt_source src = { failing_read, NULL };
	struct ckpt_reader *r = ckpt_reader_new(&src, NULL);
	struct ckpt_record rec;

	CHECK_EQ(ckpt_reader_next(r, &rec), -EIO);
	CHECK_EQ(ckpt_reader_error(r), CKPT_E_IO);
	CHECK(strstr(ckpt_reader_errmsg(r), strerror(ECONNRESET)));
	/* the error sticks */
	CHECK_EQ(ckpt_reader_next(r, &rec), -EIO);
	ckpt_reader_free(r);
}

/* The golden stream in s, its header saying minor, the first record of
 * type with the LIVE flag; returns that record's index. */
static long golden_with_live(struct td_stream *s, uint16_t minor, uint16_t type)
{
	long i;

	load_golden(s);
	s->recs[0].payload[offsetof(struct ckpt_header_rec, minor)] = (uint8_t)minor;
	i = td_find(s, type, 0);
	CHECK(i > 0);
	s->recs[i].flags |= CKPT_RECF_LIVE;
	return i;
}

/* LIVE (format 1.1) only on PAGES, only in a stream that says 1.1: a 1.0
 * stream or a MARKER with the flag is refused before its checksum is read. */
TEST(live_flag_outside_a_1_1_stream_or_off_pages_is_refused)
{
	struct td_stream s;
	long i;

	golden_with_live(&s, 0, CKPT_REC_PAGES);
	expect_joined(&s, CKPT_E_FIELD);

	golden_with_live(&s, CKPT_MINOR_LIVE, CKPT_REC_MARKER);
	expect_joined(&s, CKPT_E_FIELD);

	/* a LIVE PAGES record whose count leaves no room for the sums */
	i = golden_with_live(&s, CKPT_MINOR_LIVE, CKPT_REC_PAGES);
	put32(s.recs[i].payload + offsetof(struct ckpt_pages_rec, count),
	      (s.recs[i].len - 8) / 24 + 1);
	expect_joined(&s, CKPT_E_LENGTH);
}

/* A writer refuses LIVE with a MAC (it covers every byte, and LIVE pages
 * may differ from what was summed) or with deltas. */
TEST(live_writer_refuses_a_mac_and_deltas)
{
	static const uint8_t key[32] = { 1 };
	struct ckpt_writer_opts with_mac = { .codec = ckpt_codec_default, .live_pages = true,
					     .mac_key = key, .mac_key_len = sizeof(key) };
	struct ckpt_writer_opts with_delta = { .codec = ckpt_codec_default, .live_pages = true };
	struct ckpt_membuf m = { 0 };
	struct ckpt_sink sink;
	struct ckpt_writer *w;

	ckpt_membuf_sink(&m, &sink);
	with_mac.codec.delta = false;
	w = ckpt_writer_new(&sink, &with_mac);
	CHECK(w && ckpt_writer_error(w) == -EINVAL);
	ckpt_writer_free(w);
	with_delta.codec.delta = true;
	w = ckpt_writer_new(&sink, &with_delta);
	CHECK(w && ckpt_writer_error(w) == -EINVAL);
	ckpt_writer_free(w);
	ckpt_membuf_release(&m);
}

/* ---- zstd pages (format 1.2) ------------------------------------------------ */

static void load_golden_zstd(struct td_stream *s)
{
	struct ckpt_sink sink;
	uint8_t digest[16];

	ckpt_membuf_release(&golden);
	ckpt_membuf_sink(&golden, &sink);
	CHECK_EQ(golden_write_zstd(&sink, digest), 0);
	CHECK_EQ(td_split(golden.data, golden.len, s), 0);
}

/* The first ZSTD entry of s: its record's index, the entry and its data. */
static long find_zstd_entry(struct td_stream *s, uint8_t **entry, uint8_t **data)
{
	for (unsigned n = 0;; n++) {
		long i = td_find(s, CKPT_REC_PAGES, n);
		uint32_t count, off = 0;

		CHECK(i >= 0);
		if (i < 0)
			return -1;
		count = le32toh(*(uint32_t *)(s->recs[i].payload + 4));
		for (uint32_t e = 0; e < count; e++) {
			uint8_t *pe = PAGE_ENTRY(&s->recs[i], e);

			if (pe[12] == CKPT_ENC_ZSTD) {
				*entry = pe;
				*data = PAGE_ENTRY(&s->recs[i], count) + off;
				return i;
			}
			if (pe[12] != CKPT_ENC_ZERO)
				off += le32toh(*(uint32_t *)(pe + 8));
		}
	}
}

TEST(zstd_golden_decodes_to_the_golden_memory)
{
	struct td_stream s;
	uint8_t e0[sizeof(r0)], e1[sizeof(r1)], *entry, *data;

	load_golden_zstd(&s);
	CHECK(find_zstd_entry(&s, &entry, &data) > 0);
	CHECK_EQ(s.recs[0].payload[offsetof(struct ckpt_header_rec, minor)], CKPT_MINOR_ZSTD);
	memset(r0, 0x5a, sizeof(r0));
	memset(r1, 0x5a, sizeof(r1));
	expect(golden.data, golden.len, CKPT_OK);
	golden_memory(e0, e1);
	CHECK(!memcmp(r0, e0, sizeof(r0)) && !memcmp(r1, e1, sizeof(r1)));
	td_stream_free(&s);
}

/* A ZSTD entry needs a stream that says 1.2: in one of 1.0 or 1.1 it is an
 * unknown encoding, whatever its data. */
TEST(zstd_entry_in_a_stream_before_1_2_is_refused)
{
	struct td_stream s;

	for (uint16_t minor = 0; minor < CKPT_MINOR_ZSTD; minor++) {
		load_golden_zstd(&s);
		s.recs[0].payload[offsetof(struct ckpt_header_rec, minor)] = (uint8_t)minor;
		expect_joined(&s, CKPT_E_FIELD);
	}
	/* a 1.0 stream whose LZ4 entry is relabelled ZSTD */
	load_golden(&s);
	{
		long i = td_find(&s, CKPT_REC_PAGES, 0);
		uint32_t count = le32toh(*(uint32_t *)(s.recs[i].payload + 4));

		for (uint32_t e = 0; e < count; e++)
			if (PAGE_ENTRY(&s.recs[i], e)[12] == CKPT_ENC_LZ4) {
				PAGE_ENTRY(&s.recs[i], e)[12] = CKPT_ENC_ZSTD;
				break;
			}
	}
	expect_joined(&s, CKPT_E_FIELD);
}

TEST(corrupt_zstd_data_with_good_checksum)
{
	struct td_stream s;
	uint8_t *entry, *data;

	load_golden_zstd(&s);	/* not a frame: its magic broken */
	CHECK(find_zstd_entry(&s, &entry, &data) > 0);
	data[0] ^= 0xff;
	expect_joined(&s, CKPT_E_ENCODING);

	load_golden_zstd(&s);	/* its blocks overwritten: a reserved block type */
	CHECK(find_zstd_entry(&s, &entry, &data) > 0);
	memset(data + 6, 0xff, le32toh(*(uint32_t *)(entry + 8)) - 6);
	expect_joined(&s, CKPT_E_ENCODING);

	load_golden_zstd(&s);	/* a ZSTD entry as large as a page */
	CHECK(find_zstd_entry(&s, &entry, &data) > 0);
	put32(entry + 8, GOLDEN_PAGE_SIZE);
	expect_joined(&s, CKPT_E_LENGTH);
}
