/*
 * Deterministic test memory (random, zero-heavy, text-like mixes) and
 * helpers that take record streams apart and put them back together, so
 * tests can forge well-checksummed but hostile input.
 */
#ifndef TESTDATA_H
#define TESTDATA_H

#include <stddef.h>
#include <stdint.h>

#include "ckpt.h"

enum mem_mix { MIX_RANDOM, MIX_ZERO_HEAVY, MIX_TEXT };

extern const char *const mem_mix_names[3];

uint64_t td_rand(uint64_t *state);
/* Fill len bytes (a multiple of 4096) with one mix, reproducibly from seed. */
void td_fill(void *buf, size_t len, enum mem_mix mix, uint64_t seed);
/* Overwrite a few bytes of a page, as a guest updating a counter would. */
void td_touch(void *page, size_t page_size, uint64_t seed);

/* One record of a stream, with its payload copied out. */
struct td_rec {
	uint16_t type, flags;
	uint64_t seq;
	uint64_t checksum;
	uint8_t *payload;
	uint32_t len;
	uint64_t orig_offset;	/* where td_split found it */
};

struct td_stream {
	struct td_rec *recs;
	size_t count;
};

/* Split a well-formed stream; returns 0 or -1. */
int td_split(const uint8_t *buf, size_t len, struct td_stream *s);
/* Rebuild with fresh checksums and seq numbers in list order unless
 * keep_seq; unless keep_digest, also make END's count, INDEX offsets and
 * COMMIT match the new layout. Caller frees *out. */
int td_join(struct td_stream *s, int keep_seq, int keep_digest,
	    uint8_t **out, size_t *out_len);
void td_stream_free(struct td_stream *s);
/* Insert a copy of rec at position at. */
void td_insert(struct td_stream *s, size_t at, const struct td_rec *rec);
void td_remove(struct td_stream *s, size_t at);
/* Index of the n-th record of a type (n from 0), or -1. */
long td_find(const struct td_stream *s, uint16_t type, unsigned n);

/* Decode a whole stream into target; returns 0 or the reader's error. */
struct td_decode {
	enum ckpt_error code;
	char msg[256];
	unsigned records, pages_records, state_records;
};
int td_decode(const uint8_t *buf, size_t len, const struct ckpt_page_target *target,
	      struct td_decode *out);

#endif
