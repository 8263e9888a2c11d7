/*
 * Page codec. Zero detection runs first because about half of a real
 * guest's RAM is zero and it is the cheapest test; LZ4 gives up early on
 * pages that do not shrink, which then go raw (see PERF-FACTS.md).
 */
#include "page_codec.h"

#include <errno.h>
#include <string.h>

#include <lz4.h>

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
	if (opts->lz4) {
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
	default:
		return -EBADMSG;
	}
}
