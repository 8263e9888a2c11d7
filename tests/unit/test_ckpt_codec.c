/*
 * Page codec: zero detection at every word position, each encoding chosen
 * when it should be (LZ4, or zstd where asked), exact round trips, and
 * rejection of data that does not decode to exactly one page.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>

#include <lz4.h>
#include <zstd.h>

#include "harness.h"
#include "lz4_auto.h"
#include "testdata.h"

#define PS 4096

static uint8_t page[PS], prev[PS], out[PS], back[PS], scratch[PS];

TEST(zero_detect_every_position)
{
	memset(page, 0, PS);
	CHECK(ckpt_page_is_zero(page, PS));
	for (size_t i = 0; i < PS; i++) {
		page[i] = 0x80;
		CHECK_MSG(!ckpt_page_is_zero(page, PS), "byte %zu set, page called zero", i);
		page[i] = 0;
	}
	CHECK(ckpt_page_is_zero(page, PS));
}

TEST(zero_page_encodes_as_zero)
{
	size_t len = 99;

	memset(page, 0, PS);
	CHECK_EQ(ckpt_page_encode(page, NULL, PS, &ckpt_codec_default, out, &len, scratch),
		 CKPT_ENC_ZERO);
	CHECK_EQ(len, 0);
	memset(back, 0xff, PS);
	CHECK_EQ(ckpt_page_decode(CKPT_ENC_ZERO, out, 0, back, PS, scratch), 0);
	CHECK(ckpt_page_is_zero(back, PS));
}

TEST(random_page_goes_raw)
{
	size_t len;

	td_fill(page, PS, MIX_RANDOM, 1);
	CHECK_EQ(ckpt_page_encode(page, NULL, PS, &ckpt_codec_default, out, &len, scratch),
		 CKPT_ENC_RAW);
	CHECK_EQ(len, PS);
	CHECK_EQ(ckpt_page_decode(CKPT_ENC_RAW, out, len, back, PS, scratch), 0);
	CHECK(!memcmp(page, back, PS));
}

TEST(text_page_goes_lz4_and_shrinks)
{
	size_t len;

	td_fill(page, PS, MIX_TEXT, 2);
	CHECK_EQ(ckpt_page_encode(page, NULL, PS, &ckpt_codec_default, out, &len, scratch),
		 CKPT_ENC_LZ4);
	CHECK(len > 0 && len < PS * 3 / 4);
	CHECK_EQ(ckpt_page_decode(CKPT_ENC_LZ4, out, len, back, PS, scratch), 0);
	CHECK(!memcmp(page, back, PS));
}

TEST(lz4_off_sends_raw)
{
	struct ckpt_codec_opts opts = { .lz4 = false, .delta = false };
	size_t len;

	td_fill(page, PS, MIX_TEXT, 3);
	CHECK_EQ(ckpt_page_encode(page, NULL, PS, &opts, out, &len, scratch), CKPT_ENC_RAW);
	CHECK_EQ(len, PS);
}

TEST(small_change_goes_as_delta)
{
	size_t len;

	td_fill(prev, PS, MIX_RANDOM, 4);
	memcpy(page, prev, PS);
	td_touch(page, PS, 5);
	CHECK_EQ(ckpt_page_encode(page, prev, PS, &ckpt_codec_default, out, &len, scratch),
		 CKPT_ENC_DELTA);
	CHECK(len < 128);
	memcpy(back, prev, PS);
	CHECK_EQ(ckpt_page_decode(CKPT_ENC_DELTA, out, len, back, PS, scratch), 0);
	CHECK(!memcmp(page, back, PS));
}

TEST(rewritten_page_does_not_use_delta)
{
	size_t len;

	td_fill(prev, PS, MIX_RANDOM, 6);
	td_fill(page, PS, MIX_RANDOM, 7);
	CHECK_EQ(ckpt_page_encode(page, prev, PS, &ckpt_codec_default, out, &len, scratch),
		 CKPT_ENC_RAW);
}

TEST(bad_data_is_refused)
{
	size_t len;

	td_fill(page, PS, MIX_TEXT, 8);
	CHECK_EQ(ckpt_page_encode(page, NULL, PS, &ckpt_codec_default, out, &len, scratch),
		 CKPT_ENC_LZ4);
	/* cut short, too long, wrong sizes for raw and zero, unknown encoding */
	CHECK_EQ(ckpt_page_decode(CKPT_ENC_LZ4, out, len / 2, back, PS, scratch), -EBADMSG);
	CHECK_EQ(ckpt_page_decode(CKPT_ENC_LZ4, out, PS, back, PS, scratch), -EBADMSG);
	CHECK_EQ(ckpt_page_decode(CKPT_ENC_LZ4, out, 0, back, PS, scratch), -EBADMSG);
	CHECK_EQ(ckpt_page_decode(CKPT_ENC_RAW, page, PS - 1, back, PS, scratch), -EBADMSG);
	CHECK_EQ(ckpt_page_decode(CKPT_ENC_ZERO, page, 1, back, PS, scratch), -EBADMSG);
	CHECK_EQ(ckpt_page_decode(9, page, PS, back, PS, scratch), -EBADMSG);
	/* a block that decodes to less than a page */
	{
		uint8_t half[PS / 2], small[PS];
		int n;

		memset(half, 'a', sizeof(half));
		n = LZ4_compress_default((char *)half, (char *)small, sizeof(half), sizeof(small));
		CHECK(n > 0);
		CHECK_EQ(ckpt_page_decode(CKPT_ENC_LZ4, small, n, back, PS, scratch), -EBADMSG);
		CHECK_EQ(ckpt_page_decode(CKPT_ENC_DELTA, small, n, back, PS, scratch), -EBADMSG);
	}
}

TEST(every_mix_round_trips)
{
	const size_t n = 256;
	uint8_t *mem = malloc(n * PS), *got = malloc(n * PS);

	for (int mix = 0; mix < 3; mix++) {
		td_fill(mem, n * PS, mix, 100 + mix);
		for (size_t i = 0; i < n; i++) {
			size_t len;
			int enc = ckpt_page_encode(mem + i * PS, NULL, PS, &ckpt_codec_default,
						   out, &len, scratch);

			CHECK_EQ(ckpt_page_decode(enc, out, len, got + i * PS, PS, scratch), 0);
		}
		CHECK_MSG(!memcmp(mem, got, n * PS), "mix %s differs", mem_mix_names[mix]);
	}
	free(mem);
	free(got);
}

/* ---- lz4_auto: the decision, fed with chosen costs ------------------------ */

/* A sending thread simulated in ns per byte: its CPU, and a link that
 * drains wire bytes behind a socket buffer of 4 MiB (link 0: free). */
struct link_model {
	double tried, plain;		/* encode, per input byte */
	double base;			/* other CPU, per input byte */
	double send_cpu, link;		/* per wire byte */
	double ratio;			/* LZ4 output over input */
};

struct sim {
	uint64_t cpu;			/* the thread's CPU clock */
	double now, link_free;		/* wall clock; when the link is idle again */
};

static uint64_t sim_cpu(void *opaque)
{
	return ((struct sim *)opaque)->cpu;
}

/* The thread spends ns of CPU. */
static void sim_run(struct sim *s, double ns)
{
	s->cpu += (uint64_t)ns;
	s->now += ns;
}

/* Feed pages as a writer would, a record every 1024 pages; returns the
 * share of the last `tail` pages that were tried with LZ4. */
static double feed(struct lz4_auto *a, struct sim *s, const struct link_model *m,
		   unsigned pages, unsigned tail)
{
	const double buffer = 4 << 20;
	unsigned tried_late = 0;
	size_t record = 0;

	a->cpu_now = sim_cpu;
	a->cpu_opaque = s;
	for (unsigned i = 0; i < pages; i++) {
		bool timed, tried = lz4_auto_try(a, &timed);
		size_t wire = tried ? (size_t)(PS * m->ratio) : PS;
		double cost = (tried ? m->tried : m->plain) * PS;

		sim_run(s, cost + m->base * PS);
		lz4_auto_page(a, tried, PS, wire, timed ? (uint64_t)cost : 0);
		record += wire;
		if (i % 1024 == 1023) {
			double cpu = record * m->send_cpu, blocked;

			sim_run(s, cpu);
			s->link_free = (s->link_free > s->now ? s->link_free : s->now) +
				       record * m->link;
			blocked = s->link_free - s->now - buffer * m->link;
			blocked = blocked > 0 ? blocked : 0;
			s->now += blocked;
			lz4_auto_sent(a, record, (uint64_t)(cpu + blocked), (uint64_t)cpu);
			record = 0;
		}
		if (tried && i >= pages - tail)
			tried_late++;
	}
	return (double)tried_late / tail;
}

/* Costs seen here: text LZ4 ~3 ns/B, a copy ~0.4, a loopback send ~0.3;
 * 1 Gbit/s shared by two channels drains a wire byte in 16 ns. */
static const struct link_model loopback_text = { 3.0, 0.4, 0.2, 0.3, 0, 0.5 };
static const struct link_model gigabit_text = { 3.0, 0.4, 0.2, 0.3, 16, 0.5 };
static const struct link_model loopback_random = { 0.6, 0.4, 0.2, 0.3, 0, 1.0 };
/* LZ4 keeps the thread busy but the link idle part of the time; without
 * it the link holds the thread back, a little longer. */
static const struct link_model middle_text = { 3.0, 0.4, 0.2, 0.3, 5, 0.5 };

TEST(lz4_auto_does_not_compress_where_the_link_is_faster)
{
	struct lz4_auto a;
	struct sim s = { .cpu = 1 };

	lz4_auto_init(&a);
	CHECK(!a.on);
	/* off throughout, but still probing one page in LZ4_AUTO_PROBE */
	CHECK_EQ(feed(&a, &s, &loopback_text, 32768, 4096), 1.0 / LZ4_AUTO_PROBE);
	CHECK(!a.on);
	CHECK_EQ(a.switches, 0);
}

TEST(lz4_auto_compresses_on_a_slow_link)
{
	struct lz4_auto a;
	struct sim s = { .cpu = 1 };

	lz4_auto_init(&a);
	CHECK_EQ(feed(&a, &s, &gigabit_text, 32768, 4096), 1 - 1.0 / LZ4_AUTO_PROBE);
	CHECK(a.on);
	CHECK_EQ(a.switches, 1);
}

/* Where LZ4 would keep the thread busy and the link idle part of the time,
 * and raw pages fill the link, compressing and draining overlap and LZ4
 * would win (3.55 against 5 ns a byte here); the model counts them one
 * after the other and keeps LZ4 off (the band lz4_auto.h names). It must at
 * least not flap there. */
TEST(lz4_auto_stays_put_in_the_band_it_cannot_call)
{
	struct lz4_auto a;
	struct sim s = { .cpu = 1 };

	lz4_auto_init(&a);
	feed(&a, &s, &middle_text, 65536, 1);
	CHECK(!a.on);
	CHECK_EQ(a.switches, 0);
}

TEST(lz4_auto_follows_the_link_when_it_changes)
{
	struct lz4_auto a;
	struct sim s = { .cpu = 1 };

	lz4_auto_init(&a);
	feed(&a, &s, &loopback_text, 32768, 1);
	CHECK(!a.on);
	feed(&a, &s, &gigabit_text, 32768, 1);	/* the link got slow: compress */
	CHECK(a.on);
	/* fast again and nothing shrinks: stop, once the link is forgotten */
	feed(&a, &s, &loopback_random, 49152, 1);
	CHECK(!a.on);
	CHECK_EQ(a.switches, 2);
}

TEST(lz4_auto_holds_its_choice_when_costs_are_close)
{
	/* link-bound either way, LZ4 saving 5% of the bytes: within the margin */
	static const struct link_model even = { 1.0, 0.4, 0.2, 0.3, 16, 0.95 };
	struct lz4_auto a;
	struct sim s = { .cpu = 1 };

	lz4_auto_init(&a);
	feed(&a, &s, &even, 65536, 1);
	CHECK(!a.on);
	CHECK_EQ(a.switches, 0);
}

/* The band above with the bytes sent by another thread (overlapped): the
 * slower of compressing (3 ns a byte) and draining half the bytes (2.5)
 * beats draining them all (5), so LZ4 goes on; on loopback it stays off. */
TEST(lz4_auto_overlapped_compresses_in_that_band)
{
	static const struct link_model queued_middle = { 3.0, 0.4, 0.2, 0.05, 5, 0.5 };
	static const struct link_model queued_loopback = { 3.0, 0.4, 0.2, 0.05, 0, 0.5 };
	struct lz4_auto a, b;
	struct sim s = { .cpu = 1 }, t = { .cpu = 1 };

	lz4_auto_init(&a);
	a.overlapped = true;
	feed(&a, &s, &queued_middle, 32768, 1);
	CHECK(a.on);
	lz4_auto_init(&b);
	b.overlapped = true;
	CHECK_EQ(feed(&b, &t, &queued_loopback, 32768, 4096), 1.0 / LZ4_AUTO_PROBE);
	CHECK(!b.on);
}

/* ---- zstd (format 1.2) ------------------------------------------------------ */

static const struct ckpt_codec_opts zstd_opts = { .lz4 = true, .zstd = true, .lz4_accel = 1 };

TEST(text_page_goes_zstd_and_shrinks_more_than_lz4)
{
	size_t lz4_len, len;

	td_fill(page, PS, MIX_TEXT, 20);
	CHECK_EQ(ckpt_page_encode(page, NULL, PS, &ckpt_codec_default, out, &lz4_len, scratch),
		 CKPT_ENC_LZ4);
	CHECK_EQ(ckpt_page_encode(page, NULL, PS, &zstd_opts, out, &len, scratch), CKPT_ENC_ZSTD);
	CHECK_MSG(len < lz4_len, "zstd %zu bytes, lz4 %zu", len, lz4_len);
	/* a standard frame: its magic first (RFC 8878) */
	CHECK(len > 4 && !memcmp(out, "\x28\xb5\x2f\xfd", 4));
	memset(back, 0xa5, PS);
	CHECK_EQ(ckpt_page_decode(CKPT_ENC_ZSTD, out, len, back, PS, scratch), 0);
	CHECK(!memcmp(page, back, PS));
}

TEST(zstd_sends_random_pages_raw_and_zero_pages_as_zero)
{
	size_t len;

	td_fill(page, PS, MIX_RANDOM, 21);
	CHECK_EQ(ckpt_page_encode(page, NULL, PS, &zstd_opts, out, &len, scratch), CKPT_ENC_RAW);
	CHECK_EQ(len, PS);
	CHECK(!memcmp(page, out, PS));
	memset(page, 0, PS);
	CHECK_EQ(ckpt_page_encode(page, NULL, PS, &zstd_opts, out, &len, scratch), CKPT_ENC_ZERO);
	CHECK_EQ(len, 0);
}

TEST(zstd_leaves_deltas_to_lz4)
{
	struct ckpt_codec_opts opts = zstd_opts;
	size_t len;

	opts.delta = true;
	td_fill(prev, PS, MIX_RANDOM, 22);
	memcpy(page, prev, PS);
	td_touch(page, PS, 23);
	CHECK_EQ(ckpt_page_encode(page, prev, PS, &opts, out, &len, scratch), CKPT_ENC_DELTA);
	memcpy(back, prev, PS);
	CHECK_EQ(ckpt_page_decode(CKPT_ENC_DELTA, out, len, back, PS, scratch), 0);
	CHECK(!memcmp(page, back, PS));
}

/* A frame of n bytes of 'a' (compresses well whatever n). */
static size_t zstd_frame_of(size_t n, uint8_t *frame, size_t cap)
{
	uint8_t *src = malloc(n);
	size_t len;

	memset(src, 'a', n);
	len = ZSTD_compress(frame, cap, src, n, 1);
	free(src);
	CHECK(!ZSTD_isError(len));
	return len;
}

TEST(zstd_data_that_is_not_exactly_one_page_is_refused)
{
	uint8_t frame[PS], two[PS];
	size_t len, n;

	td_fill(page, PS, MIX_TEXT, 24);
	CHECK_EQ(ckpt_page_encode(page, NULL, PS, &zstd_opts, out, &len, scratch), CKPT_ENC_ZSTD);
	/* cut short, no data, a page's worth, the magic broken, a byte more */
	CHECK_EQ(ckpt_page_decode(CKPT_ENC_ZSTD, out, len / 2, back, PS, scratch), -EBADMSG);
	CHECK_EQ(ckpt_page_decode(CKPT_ENC_ZSTD, out, len - 1, back, PS, scratch), -EBADMSG);
	CHECK_EQ(ckpt_page_decode(CKPT_ENC_ZSTD, out, 0, back, PS, scratch), -EBADMSG);
	CHECK_EQ(ckpt_page_decode(CKPT_ENC_ZSTD, out, PS, back, PS, scratch), -EBADMSG);
	memcpy(frame, out, len);
	frame[0] ^= 0x01;
	CHECK_EQ(ckpt_page_decode(CKPT_ENC_ZSTD, frame, len, back, PS, scratch), -EBADMSG);
	memcpy(frame, out, len);
	frame[len] = 0;
	CHECK_EQ(ckpt_page_decode(CKPT_ENC_ZSTD, frame, len + 1, back, PS, scratch), -EBADMSG);
	/* the codec's own frame still decodes after all that */
	CHECK_EQ(ckpt_page_decode(CKPT_ENC_ZSTD, out, len, back, PS, scratch), 0);
	CHECK(!memcmp(page, back, PS));

	/* frames of half a page, of a page and a byte, of two pages */
	n = zstd_frame_of(PS / 2, frame, sizeof(frame));
	CHECK_EQ(ckpt_page_decode(CKPT_ENC_ZSTD, frame, n, back, PS, scratch), -EBADMSG);
	n = zstd_frame_of(PS + 1, frame, sizeof(frame));
	CHECK_EQ(ckpt_page_decode(CKPT_ENC_ZSTD, frame, n, back, PS, scratch), -EBADMSG);
	n = zstd_frame_of(2 * PS, frame, sizeof(frame));
	CHECK_EQ(ckpt_page_decode(CKPT_ENC_ZSTD, frame, n, back, PS, scratch), -EBADMSG);
	/* two frames of half a page each: a page in all, but not one frame */
	n = zstd_frame_of(PS / 2, frame, sizeof(frame));
	memcpy(two, frame, n);
	memcpy(two + n, frame, n);
	CHECK_EQ(ckpt_page_decode(CKPT_ENC_ZSTD, two, 2 * n, back, PS, scratch), -EBADMSG);
	/* a page's frame, then a skippable frame (RFC 8878: magic 0x184D2A5?,
	 * le32 size, that many bytes); and the skippable frame alone */
	n = zstd_frame_of(PS, frame, sizeof(frame));
	CHECK_EQ(ckpt_page_decode(CKPT_ENC_ZSTD, frame, n, back, PS, scratch), 0);
	memcpy(frame + n, "\x50\x2a\x4d\x18\x01\x00\x00\x00x", 9);
	CHECK_EQ(ckpt_page_decode(CKPT_ENC_ZSTD, frame, n + 9, back, PS, scratch), -EBADMSG);
	CHECK_EQ(ckpt_page_decode(CKPT_ENC_ZSTD, frame + n, 9, back, PS, scratch), -EBADMSG);
}

TEST(zstd_round_trips_every_mix)
{
	const size_t n = 256;
	uint8_t *mem = malloc(n * PS), *got = malloc(n * PS);

	for (int mix = 0; mix < 3; mix++) {
		size_t zstd_pages = 0;

		td_fill(mem, n * PS, mix, 200 + mix);
		for (size_t i = 0; i < n; i++) {
			size_t len;
			int enc = ckpt_page_encode(mem + i * PS, NULL, PS, &zstd_opts, out, &len,
						   scratch);

			CHECK(enc != CKPT_ENC_LZ4);
			zstd_pages += enc == CKPT_ENC_ZSTD;
			CHECK_EQ(ckpt_page_decode(enc, out, len, got + i * PS, PS, scratch), 0);
		}
		CHECK_MSG(!memcmp(mem, got, n * PS), "mix %s differs", mem_mix_names[mix]);
		CHECK_MSG(mix == MIX_RANDOM || zstd_pages > 0, "mix %s: no zstd page",
			  mem_mix_names[mix]);
	}
	free(mem);
	free(got);
}

/* Each thread has contexts of its own: threads encoding and decoding at
 * once get their own pages back (and under ASan, each thread's contexts are
 * freed when it ends). */
struct zstd_worker {
	unsigned seed;
	int failures;
};

static void *zstd_thread(void *opaque)
{
	struct zstd_worker *z = opaque;
	uint8_t *p = malloc(PS), *o = malloc(PS), *b = malloc(PS), *s = malloc(PS);

	for (unsigned k = 0; k < 64; k++) {
		size_t len;
		int enc;

		td_fill(p, PS, MIX_TEXT, z->seed * 1000 + k);
		enc = ckpt_page_encode(p, NULL, PS, &zstd_opts, o, &len, s);
		if (enc != CKPT_ENC_ZSTD || ckpt_page_decode(enc, o, len, b, PS, s) ||
		    memcmp(p, b, PS))
			z->failures++;
	}
	free(p);
	free(o);
	free(b);
	free(s);
	return NULL;
}

TEST(zstd_contexts_are_per_thread)
{
	struct zstd_worker z[4];
	pthread_t t[4];

	for (unsigned i = 0; i < 4; i++) {
		z[i] = (struct zstd_worker){ .seed = 300 + i };
		CHECK_EQ(pthread_create(&t[i], NULL, zstd_thread, &z[i]), 0);
	}
	for (unsigned i = 0; i < 4; i++) {
		pthread_join(t[i], NULL);
		CHECK_MSG(z[i].failures == 0, "thread %u: %d pages wrong", i, z[i].failures);
	}
}

TEST(compressor_names_parse_and_print)
{
	static const char *const names[] = { "lz4", "zstd", "off" };
	enum ckpt_compressor c;
	struct ckpt_codec_opts o = ckpt_codec_default;

	for (unsigned i = 0; i < 3; i++) {
		CHECK_EQ(ckpt_compressor_parse(names[i], &c), 0);
		CHECK(!strcmp(ckpt_compressor_name(c), names[i]));
	}
	CHECK_EQ(ckpt_compressor_parse("gzip", &c), -EINVAL);
	CHECK_EQ(ckpt_compressor_parse("auto", &c), -EINVAL);
	ckpt_codec_use(&o, CKPT_COMPRESSOR_ZSTD);
	CHECK(o.zstd && !o.lz4 && o.delta);
	ckpt_codec_use(&o, CKPT_COMPRESSOR_OFF);
	CHECK(!o.zstd && !o.lz4);
	ckpt_codec_use(&o, CKPT_COMPRESSOR_LZ4);
	CHECK(!o.zstd && o.lz4);
}
