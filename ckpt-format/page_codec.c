/*
 * Page codec. Zero detection runs first because about half of a real
 * guest's RAM is zero and it is the cheapest test; LZ4 gives up early on
 * pages that do not shrink, which then go raw (see PERF-FACTS.md). zstd
 * keeps one compression and one decompression context per thread: making
 * one costs far more than a page's work.
 */
#include "page_codec.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <lz4.h>
#include <zstd.h>

#include "ckpt_wire.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

const struct ckpt_codec_opts ckpt_codec_default = {
	.lz4 = true,
	.delta = true,
	.lz4_accel = 1,
};

#if !defined(__x86_64__)
static bool is_zero_generic(const void *buf, size_t len)
{
	const uint64_t *p = buf;
	size_t n = len / sizeof(uint64_t);

	for (size_t i = 0; i < n; i += 8) {
		uint64_t acc = p[i] | p[i + 1] | p[i + 2] | p[i + 3] |
			       p[i + 4] | p[i + 5] | p[i + 6] | p[i + 7];
		if (acc)
			return false;
	}
	return true;
}
#endif

#if defined(__x86_64__)
__attribute__((target("avx2")))
static bool is_zero_avx2(const void *buf, size_t len)
{
	const __m256i *p = buf;
	size_t n = len / sizeof(__m256i);

	/* Two cache lines per step; stop at the first that holds a bit. */
	for (size_t i = 0; i < n; i += 4) {
		__m256i a = _mm256_or_si256(_mm256_loadu_si256(p + i),
					    _mm256_loadu_si256(p + i + 1));
		__m256i b = _mm256_or_si256(_mm256_loadu_si256(p + i + 2),
					    _mm256_loadu_si256(p + i + 3));
		__m256i acc = _mm256_or_si256(a, b);
		if (!_mm256_testz_si256(acc, acc))
			return false;
	}
	return true;
}

static bool is_zero_sse2(const void *buf, size_t len)
{
	const __m128i *p = buf;
	size_t n = len / sizeof(__m128i);
	const __m128i zero = _mm_setzero_si128();

	for (size_t i = 0; i < n; i += 4) {
		__m128i acc = _mm_or_si128(
			_mm_or_si128(_mm_loadu_si128(p + i), _mm_loadu_si128(p + i + 1)),
			_mm_or_si128(_mm_loadu_si128(p + i + 2), _mm_loadu_si128(p + i + 3)));
		if (_mm_movemask_epi8(_mm_cmpeq_epi8(acc, zero)) != 0xffff)
			return false;
	}
	return true;
}

static bool (*resolve_is_zero(void))(const void *, size_t)
{
	__builtin_cpu_init();
	if (__builtin_cpu_supports("avx2"))
		return is_zero_avx2;
	return is_zero_sse2;
}
#endif

bool ckpt_page_is_zero(const void *buf, size_t len)
{
#if defined(__x86_64__)
	static bool (*impl)(const void *, size_t);

	/* A racing first call stores the same pointer twice: harmless. */
	bool (*fn)(const void *, size_t) = __atomic_load_n(&impl, __ATOMIC_RELAXED);
	if (!fn) {
		fn = resolve_is_zero();
		__atomic_store_n(&impl, fn, __ATOMIC_RELAXED);
	}
	/* Most non-zero pages differ in their first word: answer cheaply
	 * (memcpy: a page inside a QEMU stream's buffer is not aligned). */
	if (len >= 8) {
		uint64_t first;

		memcpy(&first, buf, sizeof(first));
		if (first)
			return false;
	}
	return fn(buf, len);
#else
	return is_zero_generic(buf, len);
#endif
}

int ckpt_compressor_parse(const char *name, enum ckpt_compressor *out)
{
	for (int c = CKPT_COMPRESSOR_LZ4; c <= CKPT_COMPRESSOR_OFF; c++) {
		if (!strcmp(name, ckpt_compressor_name(c))) {
			*out = c;
			return 0;
		}
	}
	return -EINVAL;
}

const char *ckpt_compressor_name(enum ckpt_compressor c)
{
	switch (c) {
	case CKPT_COMPRESSOR_LZ4: return "lz4";
	case CKPT_COMPRESSOR_ZSTD: return "zstd";
	case CKPT_COMPRESSOR_OFF: return "off";
	}
	return "?";
}

void ckpt_codec_use(struct ckpt_codec_opts *opts, enum ckpt_compressor c)
{
	opts->lz4 = c == CKPT_COMPRESSOR_LZ4;
	opts->zstd = c == CKPT_COMPRESSOR_ZSTD;
}

/* ---- zstd's per-thread contexts ------------------------------------------ */

struct zstd_ctx {
	ZSTD_CCtx *cctx;		/* made on first use of each */
	ZSTD_DCtx *dctx;
	int level;			/* cctx's compression level, 0 before set */
};

static pthread_key_t zstd_key;
static pthread_once_t zstd_once = PTHREAD_ONCE_INIT;
static bool zstd_key_made;

/* At the thread's end (a leak checker sees them freed, not lost). */
static void zstd_ctx_free(void *opaque)
{
	struct zstd_ctx *z = opaque;

	ZSTD_freeCCtx(z->cctx);
	ZSTD_freeDCtx(z->dctx);
	free(z);
}

static void zstd_key_make(void)
{
	zstd_key_made = pthread_key_create(&zstd_key, zstd_ctx_free) == 0;
}

/* This thread's contexts, or NULL when there is no memory for them. */
static struct zstd_ctx *zstd_ctx(void)
{
	struct zstd_ctx *z;

	pthread_once(&zstd_once, zstd_key_make);
	if (!zstd_key_made)
		return NULL;
	z = pthread_getspecific(zstd_key);
	if (z)
		return z;
	z = calloc(1, sizeof(*z));
	if (z && pthread_setspecific(zstd_key, z)) {
		free(z);
		z = NULL;
	}
	return z;
}

/* A frame as small as it gets for a page: its size, its checksum and a
 * dictionary id are left out (the record's checksum covers the data, and
 * the reader knows the size: one page). */
static ZSTD_CCtx *zstd_cctx(int level)
{
	struct zstd_ctx *z = zstd_ctx();

	if (!z)
		return NULL;
	if (!z->cctx) {
		z->cctx = ZSTD_createCCtx();
		if (!z->cctx ||
		    ZSTD_isError(ZSTD_CCtx_setParameter(z->cctx, ZSTD_c_contentSizeFlag, 0)) ||
		    ZSTD_isError(ZSTD_CCtx_setParameter(z->cctx, ZSTD_c_checksumFlag, 0)) ||
		    ZSTD_isError(ZSTD_CCtx_setParameter(z->cctx, ZSTD_c_dictIDFlag, 0))) {
			ZSTD_freeCCtx(z->cctx);
			z->cctx = NULL;
			return NULL;
		}
		z->level = 0;
	}
	if (z->level != level) {
		if (ZSTD_isError(ZSTD_CCtx_setParameter(z->cctx, ZSTD_c_compressionLevel, level)))
			return NULL;
		z->level = level;
	}
	return z->cctx;
}

static ZSTD_DCtx *zstd_dctx(void)
{
	struct zstd_ctx *z = zstd_ctx();

	if (z && !z->dctx)
		z->dctx = ZSTD_createDCtx();
	return z ? z->dctx : NULL;
}

/* Compress src into out only if it shrinks; returns the length or 0 (also
 * when this thread has no context: the page then goes another way). */
static size_t zstd_shrink(const void *src, size_t page_size, void *out, int level)
{
	ZSTD_CCtx *c = zstd_cctx(level > 0 ? level : CKPT_ZSTD_LEVEL_DEFAULT);
	size_t n;

	if (!c)
		return 0;
	n = ZSTD_compress2(c, out, page_size - 1, src, page_size);
	return ZSTD_isError(n) ? 0 : n;
}

/* Exactly one frame, all of data, that decodes to exactly one page. */
static int zstd_unpack(const void *data, size_t len, void *dst, size_t page_size)
{
	ZSTD_DCtx *d;
	size_t n;

	if (len == 0 || len >= page_size)
		return -EBADMSG;
	d = zstd_dctx();
	if (!d)
		return -ENOMEM;
	if (ZSTD_findFrameCompressedSize(data, len) != len)
		return -EBADMSG;	/* cut short, or more after the frame */
	n = ZSTD_decompressDCtx(d, dst, page_size, data, len);
	return !ZSTD_isError(n) && n == page_size ? 0 : -EBADMSG;
}

/* ---- the codec ------------------------------------------------------------ */

/* Compress src into out only if it shrinks; returns the length or 0. */
static size_t lz4_shrink(const void *src, size_t page_size, void *out, int accel)
{
	int n = LZ4_compress_fast(src, out, (int)page_size, (int)page_size - 1,
				  accel > 0 ? accel : 1);
	return n > 0 ? (size_t)n : 0;
}

static void xor_pages(void *dst, const void *a, const void *b, size_t len)
{
	uint64_t *d = dst;
	const uint64_t *x = a, *y = b;

	for (size_t i = 0; i < len / sizeof(uint64_t); i++)
		d[i] = x[i] ^ y[i];
}

int ckpt_page_encode(const void *page, const void *prev, size_t page_size,
		     const struct ckpt_codec_opts *opts, void *out,
		     size_t *out_len, void *scratch)
{
	size_t n;

	if (ckpt_page_is_zero(page, page_size)) {
		*out_len = 0;
		return CKPT_ENC_ZERO;
	}
	if (prev && opts->delta) {
		xor_pages(scratch, page, prev, page_size);
		n = lz4_shrink(scratch, page_size, out, opts->lz4_accel);
		if (n) {
			*out_len = n;
			return CKPT_ENC_DELTA;
		}
	}
	if (opts->zstd) {
		n = zstd_shrink(page, page_size, out, opts->zstd_level);
		if (n) {
			*out_len = n;
			return CKPT_ENC_ZSTD;
		}
	} else if (opts->lz4) {
		n = lz4_shrink(page, page_size, out, opts->lz4_accel);
		if (n) {
			*out_len = n;
			return CKPT_ENC_LZ4;
		}
	}
	if (!opts->raw_by_reference)
		memcpy(out, page, page_size);
	*out_len = page_size;
	return CKPT_ENC_RAW;
}

int ckpt_page_decode(int encoding, const void *data, size_t len, void *dst,
		     size_t page_size, void *scratch)
{
	int n;

	switch (encoding) {
	case CKPT_ENC_ZERO:
		if (len)
			return -EBADMSG;
		memset(dst, 0, page_size);
		return 0;
	case CKPT_ENC_RAW:
		if (len != page_size)
			return -EBADMSG;
		memcpy(dst, data, page_size);
		return 0;
	case CKPT_ENC_LZ4:
		if (len == 0 || len >= page_size)
			return -EBADMSG;
		n = LZ4_decompress_safe(data, dst, (int)len, (int)page_size);
		return n == (int)page_size ? 0 : -EBADMSG;
	case CKPT_ENC_DELTA:
		if (len == 0 || len >= page_size)
			return -EBADMSG;
		n = LZ4_decompress_safe(data, scratch, (int)len, (int)page_size);
		if (n != (int)page_size)
			return -EBADMSG;
		xor_pages(dst, dst, scratch, page_size);
		return 0;
	case CKPT_ENC_ZSTD:
		return zstd_unpack(data, len, dst, page_size);
	default:
		return -EBADMSG;
	}
}
