/*
 * When LZ4 pays: a writer asks before each page whether to try LZ4 on it,
 * and reports what each page and each record write cost. Trying LZ4 pays
 * when compressing plus sending the smaller result takes less time than
 * copying plus sending the page as it is:
 *
 *     tried + ratio * send  <  plain + send      (seconds per input byte)
 *
 * where tried and plain are the measured encode costs with and without the
 * attempt, ratio is wire bytes over input bytes for tried pages, and send
 * is the measured cost of a wire byte (checksum, encryption, the link and
 * the peer's pace behind it). On a fast link the right answer is "no", on
 * a slow one "yes"; the same guest can need both within one migration.
 *
 * A small share of pages (one in LZ4_AUTO_PROBE) takes the other choice so
 * that both costs stay known. Private to ckpt-format/.
 */
#ifndef CKPT_LZ4_AUTO_H
#define CKPT_LZ4_AUTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define LZ4_AUTO_PROBE	128u	/* one page in this many takes the other choice */

struct lz4_auto_cost {
	uint64_t ns, bytes;		/* timed samples only */
};

struct lz4_auto {
	bool on;			/* the current choice */
	unsigned seq;			/* non-zero pages seen */
	unsigned switches;		/* times the choice changed */
	/* Smoothed costs in ns per byte; negative until measured. */
	double tried, plain, send, ratio;
	/* The window being measured. */
	struct lz4_auto_cost w_tried, w_plain, w_send;
	uint64_t w_tried_in, w_tried_out;
	unsigned w_pages;
};

void lz4_auto_init(struct lz4_auto *a);

/* For the next page: try LZ4 on it? *timed says whether to time its encode. */
bool lz4_auto_try(struct lz4_auto *a, bool *timed);

/* A non-zero page was encoded: in bytes in, out bytes out, ns spent (0 when
 * it was not timed). Every LZ4_AUTO_WINDOW pages the choice is revisited. */
void lz4_auto_page(struct lz4_auto *a, bool tried, size_t in, size_t out, uint64_t ns);

/* A record of bytes went out in ns (checksum and sink together). */
void lz4_auto_sent(struct lz4_auto *a, size_t bytes, uint64_t ns);

uint64_t lz4_auto_now_ns(void);

#endif
