/*
 * When LZ4 pays: a writer asks before each page whether to try LZ4 on it,
 * and reports what each page and each record write cost. Trying LZ4 pays
 * when compressing plus sending the smaller result takes less time than
 * copying plus sending the page as it is:
 *
 *     tried + ratio * send  <  plain + send      (ns per input byte)
 *
 * tried and plain are the measured encode costs with and without the
 * attempt, ratio is wire bytes over input bytes for tried pages, and send
 * is what a wire byte costs to send: checksum, encryption, and the wait
 * for the link and the peer's pace behind it. On a fast link the answer is
 * "no", on a slow one "yes"; the same guest can need both.
 *
 * send is measured while sending without LZ4, where the thread keeps the
 * socket buffer full; with LZ4 it is kept, and forgotten after a while in
 * which the link did not hold the thread back, so a link that got faster
 * is found again (unknown, it counts as free). The sum overstates LZ4's
 * cost where compressing and draining overlap on hosts of their own, so in
 * a band of link speeds it keeps LZ4 off where LZ4 would win (text pages
 * here: a link that drains a channel at 190 to 285 MB/s); in exchange a
 * peer slowed by our own compressing (one sharing our cores) is not taken
 * for a slow link. A peer that is slow even without LZ4 looks like one.
 * Where another thread sends (overlapped), compressing and draining do
 * overlap, and a choice costs the slower of the two instead of their sum.
 * A stream starts without LZ4 and decides after two windows, while
 * buffers fill.
 *
 * A small share of pages (one in LZ4_AUTO_PROBE) takes the other choice so
 * that both encode costs stay known. Private to ckpt-format/.
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
	unsigned windows;		/* measured so far */
	unsigned quiet;			/* windows with LZ4 the link did not hold back */
	bool settling;			/* the window after a switch: buffers change */
	/* The bytes are sent by another thread (the writer's sink only queues
	 * them): compressing and draining overlap, so a choice costs the
	 * slower of the two, not their sum. */
	bool overlapped;
	/* Smoothed costs in ns per byte; negative until measured. */
	double tried, plain, ratio, send;
	/* The thread's CPU clock (CLOCK_THREAD_CPUTIME_ID; tests set another). */
	uint64_t (*cpu_now)(void *opaque);
	void *cpu_opaque;
	/* The window being measured. */
	uint64_t w_cpu_start;
	struct lz4_auto_cost w_tried, w_plain;
	uint64_t w_tried_in, w_tried_out;
	uint64_t w_wire, w_send_cpu, w_blocked;
	unsigned w_pages;
};

void lz4_auto_init(struct lz4_auto *a);

/* For the next page: try LZ4 on it? *timed says whether to time its encode. */
bool lz4_auto_try(struct lz4_auto *a, bool *timed);

/* A non-zero page was encoded: in bytes in, out bytes out, ns spent (0 when
 * it was not timed). Every LZ4_AUTO_WINDOW pages the choice is revisited. */
void lz4_auto_page(struct lz4_auto *a, bool tried, size_t in, size_t out, uint64_t ns);

/* A record of bytes went out: wall_ns in all, cpu_ns of it on this thread's
 * CPU (checksum, encryption, copies); the rest it waited for the link. */
void lz4_auto_sent(struct lz4_auto *a, size_t bytes, uint64_t wall_ns, uint64_t cpu_ns);

uint64_t lz4_auto_now_ns(void);
uint64_t lz4_auto_thread_cpu_ns(void *unused);

#endif
