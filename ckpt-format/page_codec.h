/*
 * Page codec: turns one guest page into its cheapest wire encoding (zero,
 * raw, lz4, or a delta against the page's previous version) and back.
 * Shared by live migration, checkpoint files and replication.
 */
#ifndef CKPT_PAGE_CODEC_H
#define CKPT_PAGE_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct ckpt_codec_opts {
	bool lz4;		/* try LZ4 on pages that are not zero */
	bool delta;		/* try a delta when the previous version is known */
	int lz4_accel;		/* LZ4 acceleration, 1 = best ratio */
	bool raw_by_reference;	/* a raw page is not copied to out: the caller
				 * sends it from where it is */
};

/* Defaults: LZ4 on at acceleration 1, deltas on. */
extern const struct ckpt_codec_opts ckpt_codec_default;

/* True when every byte of buf is zero. len must be a multiple of 64. */
bool ckpt_page_is_zero(const void *buf, size_t len);

/* Bytes an encoded page may need at most: LZ4's worst case stays hidden
 * because a page that does not shrink is sent raw. */
static inline size_t ckpt_page_max_encoded(size_t page_size)
{
	return page_size;
}

/*
 * Encode one page. prev, when not NULL, is the version the receiver holds.
 * out must hold ckpt_page_max_encoded(page_size) bytes, scratch page_size.
 * Returns the CKPT_ENC_* chosen and stores the data length in *out_len
 * (0 for CKPT_ENC_ZERO). Never fails: the raw encoding always fits.
 */
int ckpt_page_encode(const void *page, const void *prev, size_t page_size,
		     const struct ckpt_codec_opts *opts, void *out,
		     size_t *out_len, void *scratch);

/*
 * Decode one page into dst, which for CKPT_ENC_DELTA holds the previous
 * version. scratch holds page_size bytes. Returns 0, or -EBADMSG when the
 * data does not decode to exactly one page.
 */
int ckpt_page_decode(int encoding, const void *data, size_t len, void *dst,
		     size_t page_size, void *scratch);

#endif
