/*
 * Page codec: turns one guest page into its cheapest wire encoding (zero,
 * raw, lz4 or zstd, or a delta against the page's previous version) and
 * back. Shared by live migration, checkpoint files and replication.
 */
#ifndef CKPT_PAGE_CODEC_H
#define CKPT_PAGE_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct ckpt_codec_opts {
	bool lz4;		/* try LZ4 on pages that are not zero */
	/* Try zstd instead of LZ4 on whole pages (format 1.2's ZSTD): about
	 * 1.6 times LZ4's ratio on text at half its speed, for slow links and
	 * files. Deltas stay LZ4. */
	bool zstd;
	int zstd_level;		/* 0: CKPT_ZSTD_LEVEL_DEFAULT; never below 1 */
	bool delta;		/* try a delta when the previous version is known */
	int lz4_accel;		/* LZ4 acceleration, 1 = best ratio */
	bool raw_by_reference;	/* a raw page is not copied to out: the caller
				 * sends it from where it is */
};

/* Defaults: LZ4 on at acceleration 1, deltas on, zstd off. */
extern const struct ckpt_codec_opts ckpt_codec_default;

/* zstd's level 1: its negative levels lose to LZ4 on both speed and ratio. */
#define CKPT_ZSTD_LEVEL_DEFAULT	1

/* What compresses whole pages, as operators name it ("lz4", "zstd", "off").
 * LZ4 is 0, so options left zero keep today's default. */
enum ckpt_compressor {
	CKPT_COMPRESSOR_LZ4,
	CKPT_COMPRESSOR_ZSTD,
	CKPT_COMPRESSOR_OFF,
};

#define CKPT_COMPRESSOR_CHOICES	"lz4, zstd or off"

/* The name into *out: 0, or -EINVAL for a name not above. */
int ckpt_compressor_parse(const char *name, enum ckpt_compressor *out);
const char *ckpt_compressor_name(enum ckpt_compressor c);
/* Set opts' lz4 and zstd for c (deltas and levels are left alone). */
void ckpt_codec_use(struct ckpt_codec_opts *opts, enum ckpt_compressor c);

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
 * data does not decode to exactly one page (-ENOMEM: no zstd context could
 * be made for this thread). Thread-safe: zstd's contexts are per thread.
 */
int ckpt_page_decode(int encoding, const void *data, size_t len, void *dst,
		     size_t page_size, void *scratch);

#endif
