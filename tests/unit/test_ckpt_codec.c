/*
 * Page codec: zero detection at every word position, each encoding chosen
 * when it should be, exact round trips, and rejection of data that does not
 * decode to exactly one page.
 */
#include <errno.h>
#include <stdlib.h>

#include <lz4.h>

#include "harness.h"
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
