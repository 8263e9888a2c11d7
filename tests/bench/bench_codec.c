/*
 * Codec benchmark: encode (writer, all pages through the page codec and
 * record framing into memory) and decode (reader plus apply into guest
 * memory) on three memory mixes, each next to memcpy of the same bytes in
 * the same run. One core. Prints one JSON line per mix and a table.
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

int main(void)
{
	size_t mib = getenv("BENCH_MIB") ? strtoul(getenv("BENCH_MIB"), NULL, 0) : 256;
	int reps = getenv("BENCH_REPEAT") ? atoi(getenv("BENCH_REPEAT")) : 5;
	size_t bytes = mib << 20, pages = bytes / PS;
	uint8_t *mem = malloc(bytes), *dst = malloc(bytes);
	struct ckpt_membuf out = { 0 };
	double *t = calloc(reps, sizeof(double));
	const struct ckpt_codec_opts raw = { .lz4 = false, .delta = false };

	if (reps < 1 || !mem || !dst || !t)
		return 1;
	memset(dst, 1, bytes);
	printf("# codec benchmark: %zu MiB per mix, best and median of %d, one core\n", mib, reps);
	printf("# %-10s %8s %10s %10s %10s %10s %8s\n", "mix", "memcpy", "enc-lz4", "dec-lz4",
	       "enc-nolz4", "dec-nolz4", "ratio");
	for (int mix = 0; mix < 3; mix++) {
		struct result cp, enc, dec, enc_raw, dec_raw;
		size_t size = 0;

		td_fill(mem, bytes, mix, 1234 + mix);
		for (int i = 0; i < reps; i++) {
			double t0 = tm_now();

			memcpy(dst, mem, bytes);
			t[i] = tm_now() - t0;
		}
		cp = summarize(t, reps);
		for (int i = 0; i < reps; i++) {
			double t0 = tm_now();

			size = encode(mem, pages, &out, &ckpt_codec_default);
			t[i] = tm_now() - t0;
		}
		enc = summarize(t, reps);
		for (int i = 0; i < reps; i++) {
			double t0 = tm_now();

			decode(&out, dst);
			t[i] = tm_now() - t0;
		}
		dec = summarize(t, reps);
		if (memcmp(mem, dst, bytes)) {
			fprintf(stderr, "bench: %s did not round-trip\n", mem_mix_names[mix]);
			return 1;
		}
		for (int i = 0; i < reps; i++) {
			double t0 = tm_now();

			encode(mem, pages, &out, &raw);
			t[i] = tm_now() - t0;
		}
		enc_raw = summarize(t, reps);
		for (int i = 0; i < reps; i++) {
			double t0 = tm_now();

			decode(&out, dst);
			t[i] = tm_now() - t0;
		}
		dec_raw = summarize(t, reps);

#define GBS(x) (bytes / (x) / 1e9)
		printf("# %-10s %8.2f %10.2f %10.2f %10.2f %10.2f %8.2f   GB/s of guest RAM (best)\n",
		       mem_mix_names[mix], GBS(cp.min), GBS(enc.min), GBS(dec.min),
		       GBS(enc_raw.min), GBS(dec_raw.min), (double)bytes / size);
		printf("{\"bench\":\"codec\",\"mix\":\"%s\",\"mib\":%zu,"
		       "\"memcpy_gbs\":%.2f,\"encode_gbs\":%.2f,\"encode_gbs_median\":%.2f,"
		       "\"decode_gbs\":%.2f,\"decode_gbs_median\":%.2f,"
		       "\"encode_nolz4_gbs\":%.2f,\"decode_nolz4_gbs\":%.2f,"
		       "\"ratio\":%.3f,\"encoded_bytes\":%zu}\n",
		       mem_mix_names[mix], mib, GBS(cp.min), GBS(enc.min), GBS(enc.median),
		       GBS(dec.min), GBS(dec.median), GBS(enc_raw.min), GBS(dec_raw.min),
		       (double)bytes / size, size);
	}
	ckpt_membuf_release(&out);
	free(mem);
	free(dst);
	free(t);
	return 0;
}
