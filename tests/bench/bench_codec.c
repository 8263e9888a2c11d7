/*
 * Codec benchmark: encode (writer, all pages through the page codec and
 * record framing into memory) and decode (reader plus apply into guest
 * memory) on three memory mixes, with LZ4, with zstd (format 1.2) and
 * without compressing, each next to memcpy of the same bytes in the same
 * run. One core. Prints one JSON line per mix and a table.
 * Sizes: BENCH_MIB (default 256) MiB per mix, best of BENCH_REPEAT (5).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ckpt.h"
#include "timing.h"
#include "testdata.h"

#define PS 4096

struct result {
	double min, median;
};

static struct result summarize(double *t, int n)
{
	qsort(t, n, sizeof(*t), tm_cmp_double);
	return (struct result){ t[0], t[n / 2] };
}

static size_t encode(const uint8_t *mem, size_t pages, struct ckpt_membuf *out,
		     const struct ckpt_codec_opts *codec)
{
	struct ckpt_writer_opts opts = { .codec = *codec };
	struct ckpt_image_info info;
	struct ckpt_sink sink;
	struct ckpt_writer *w;

	memset(&info, 0, sizeof(info));
	info.page_size = PS;
	strcpy(info.guest_name, "bench");
	info.region_count = 1;
	info.regions[0] = (struct ckpt_region){ .id = 0, .gpa = 0, .size = pages * PS };
	out->len = 0;
	ckpt_membuf_sink(out, &sink);
	w = ckpt_writer_new(&sink, &opts);
	ckpt_writer_header(w, &info);
	ckpt_writer_marker(w, CKPT_MARK_ROUND, 1);
	for (size_t p = 0; p < pages; p++)
		ckpt_writer_page(w, 0, p, mem + p * PS, NULL);
	if (ckpt_writer_finish(w, NULL)) {
		fprintf(stderr, "bench: encode failed\n");
		exit(1);
	}
	ckpt_writer_free(w);
	return out->len;
}

static void decode(const struct ckpt_membuf *in, uint8_t *dst)
{
	struct ckpt_membuf m = { .data = in->data, .len = in->len, .cap = in->len, .fixed = true };
	struct ckpt_page_target t = { .host = { dst } };
	struct ckpt_source src;
	struct ckpt_reader *r;
	struct ckpt_record rec;
	int ret;

	ckpt_membuf_source(&m, &src);
	r = ckpt_reader_new(&src, NULL);
	while ((ret = ckpt_reader_next(r, &rec)) == 0)
		if (rec.type == CKPT_REC_PAGES && ckpt_reader_apply(r, &rec, &t))
			break;
	if (ret != 1) {
		fprintf(stderr, "bench: decode failed: %s\n", ckpt_reader_errmsg(r));
		exit(1);
	}
	ckpt_reader_free(r);
}

/* Best and median times of encoding and decoding mem with codec, and the
 * encoded size; exits when the pages do not come back as they were. */
struct codec_run {
	struct result enc, dec;
	size_t size;
};

static struct codec_run measure(const uint8_t *mem, uint8_t *dst, size_t pages, int reps,
				double *t, struct ckpt_membuf *out,
				const struct ckpt_codec_opts *codec, const char *what)
{
	struct codec_run run;

	for (int i = 0; i < reps; i++) {
		double t0 = tm_now();

		run.size = encode(mem, pages, out, codec);
		t[i] = tm_now() - t0;
	}
	run.enc = summarize(t, reps);
	for (int i = 0; i < reps; i++) {
		double t0 = tm_now();

		decode(out, dst);
		t[i] = tm_now() - t0;
	}
	run.dec = summarize(t, reps);
	if (memcmp(mem, dst, pages * PS)) {
		fprintf(stderr, "bench: %s did not round-trip\n", what);
		exit(1);
	}
	return run;
}

int main(void)
{
	size_t mib = getenv("BENCH_MIB") ? strtoul(getenv("BENCH_MIB"), NULL, 0) : 256;
	int reps = getenv("BENCH_REPEAT") ? atoi(getenv("BENCH_REPEAT")) : 5;
	size_t bytes = mib << 20, pages = bytes / PS;
	uint8_t *mem = malloc(bytes), *dst = malloc(bytes);
	struct ckpt_membuf out = { 0 };
	double *t = calloc(reps, sizeof(double));
	const struct ckpt_codec_opts raw = { .lz4 = false, .delta = false };
	struct ckpt_codec_opts zstd = ckpt_codec_default;

	if (reps < 1 || !mem || !dst || !t)
		return 1;
	zstd.zstd = true;
	memset(dst, 1, bytes);
	printf("# codec benchmark: %zu MiB per mix, best and median of %d, one core\n", mib, reps);
	printf("# %-10s %8s %9s %9s %7s %9s %9s %7s %9s %9s\n", "mix", "memcpy", "enc-lz4",
	       "dec-lz4", "ratio", "enc-zstd", "dec-zstd", "ratio", "enc-raw", "dec-raw");
	for (int mix = 0; mix < 3; mix++) {
		struct codec_run lz4, zs, plain;
		struct result cp;

		td_fill(mem, bytes, mix, 1234 + mix);
		for (int i = 0; i < reps; i++) {
			double t0 = tm_now();

			memcpy(dst, mem, bytes);
			t[i] = tm_now() - t0;
		}
		cp = summarize(t, reps);
		lz4 = measure(mem, dst, pages, reps, t, &out, &ckpt_codec_default, mem_mix_names[mix]);
		zs = measure(mem, dst, pages, reps, t, &out, &zstd, mem_mix_names[mix]);
		plain = measure(mem, dst, pages, reps, t, &out, &raw, mem_mix_names[mix]);

#define GBS(x) (bytes / (x) / 1e9)
		printf("# %-10s %8.2f %9.2f %9.2f %7.2f %9.2f %9.2f %7.2f %9.2f %9.2f   GB/s of guest "
		       "RAM (best), ratios\n", mem_mix_names[mix], GBS(cp.min), GBS(lz4.enc.min),
		       GBS(lz4.dec.min), (double)bytes / lz4.size, GBS(zs.enc.min), GBS(zs.dec.min),
		       (double)bytes / zs.size, GBS(plain.enc.min), GBS(plain.dec.min));
		printf("{\"bench\":\"codec\",\"mix\":\"%s\",\"mib\":%zu,"
		       "\"memcpy_gbs\":%.2f,\"encode_gbs\":%.2f,\"encode_gbs_median\":%.2f,"
		       "\"decode_gbs\":%.2f,\"decode_gbs_median\":%.2f,"
		       "\"encode_nolz4_gbs\":%.2f,\"decode_nolz4_gbs\":%.2f,"
		       "\"ratio\":%.3f,\"encoded_bytes\":%zu,"
		       "\"encode_zstd_gbs\":%.3f,\"encode_zstd_gbs_median\":%.3f,"
		       "\"decode_zstd_gbs\":%.3f,\"decode_zstd_gbs_median\":%.3f,"
		       "\"ratio_zstd\":%.3f,\"encoded_bytes_zstd\":%zu}\n",
		       mem_mix_names[mix], mib, GBS(cp.min), GBS(lz4.enc.min), GBS(lz4.enc.median),
		       GBS(lz4.dec.min), GBS(lz4.dec.median), GBS(plain.enc.min), GBS(plain.dec.min),
		       (double)bytes / lz4.size, lz4.size, GBS(zs.enc.min), GBS(zs.enc.median),
		       GBS(zs.dec.min), GBS(zs.dec.median), (double)bytes / zs.size, zs.size);
	}
	ckpt_membuf_release(&out);
	free(mem);
	free(dst);
	free(t);
	return 0;
}
