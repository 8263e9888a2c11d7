/*
 * The LZ4 decision from measured costs (see lz4_auto.h). Costs are folded
 * into running averages once a window of pages has passed, so one slow
 * write (a full socket buffer, a scheduling hiccup) does not flip it, and
 * the choice only changes when the other one is clearly cheaper.
 */
#include "lz4_auto.h"

#include <string.h>
#include <time.h>

#define WINDOW_PAGES	2048u	/* pages between decisions: 8 MiB of 4 KiB pages */
#define TIME_EVERY	8u	/* time one page in this many (and every probe) */
#define MIN_BYTES	(16u * 1024)	/* timed bytes a cost needs to count */
#define MARGIN		1.10	/* the other choice must be 10% cheaper */

uint64_t lz4_auto_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void lz4_auto_init(struct lz4_auto *a)
{
	memset(a, 0, sizeof(*a));
	a->on = true;		/* until measured: LZ4 never costs more than a few % */
	a->tried = a->plain = a->send = a->ratio = -1;
}

bool lz4_auto_try(struct lz4_auto *a, bool *timed)
{
	bool probe = ++a->seq % LZ4_AUTO_PROBE == 0;

	*timed = probe || a->seq % TIME_EVERY == 0;
	return a->on != probe;
}

/* Fold a window's measurement into a running average. */
static void fold(double *avg, double sample)
{
	*avg = *avg < 0 ? sample : 0.5 * *avg + 0.5 * sample;
}

static void fold_cost(double *avg, const struct lz4_auto_cost *c)
{
	if (c->bytes >= MIN_BYTES)
		fold(avg, (double)c->ns / (double)c->bytes);
}

static void decide(struct lz4_auto *a)
{
	double on, off;

	fold_cost(&a->tried, &a->w_tried);
	fold_cost(&a->plain, &a->w_plain);
	fold_cost(&a->send, &a->w_send);
	if (a->w_tried_in >= MIN_BYTES)
		fold(&a->ratio, (double)a->w_tried_out / (double)a->w_tried_in);
	memset(&a->w_tried, 0, sizeof(a->w_tried));
	memset(&a->w_plain, 0, sizeof(a->w_plain));
	memset(&a->w_send, 0, sizeof(a->w_send));
	a->w_tried_in = a->w_tried_out = 0;
	a->w_pages = 0;
	if (a->tried < 0 || a->plain < 0 || a->send < 0 || a->ratio < 0)
		return;		/* not everything measured yet */

	on = a->tried + a->ratio * a->send;
	off = a->plain + a->send;
	if ((a->on && off * MARGIN < on) || (!a->on && on * MARGIN < off)) {
		a->on = !a->on;
		a->switches++;
	}
}

void lz4_auto_page(struct lz4_auto *a, bool tried, size_t in, size_t out, uint64_t ns)
{
	struct lz4_auto_cost *c = tried ? &a->w_tried : &a->w_plain;

	if (ns) {
		c->ns += ns;
		c->bytes += in;
	}
	if (tried) {
		a->w_tried_in += in;
		a->w_tried_out += out;
	}
	if (++a->w_pages >= WINDOW_PAGES)
		decide(a);
}

void lz4_auto_sent(struct lz4_auto *a, size_t bytes, uint64_t ns)
{
	a->w_send.ns += ns;
	a->w_send.bytes += bytes;
}
