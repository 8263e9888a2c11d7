/*
 * The LZ4 decision from measured costs (see lz4_auto.h). Costs are folded
 * into running averages once a window of pages has passed, so one slow
 * write (a scheduling hiccup) does not flip it, and the choice only changes
 * when the other one is clearly cheaper.
 */
#include "lz4_auto.h"

#include <string.h>
#include <time.h>

#define WINDOW_PAGES	2048u	/* pages between decisions: 8 MiB of 4 KiB pages */
#define TIME_EVERY	8u	/* time one page in this many (and every probe) */
#define MIN_BYTES	(16u * 1024)	/* measured bytes a cost needs to count */
#define MARGIN		1.10	/* the other choice must be 10% cheaper */
/* Sends blocked for this share of a window: the link held the thread back
 * (below it, a thread preempted inside a send on a busy host). */
#define LINK_BOUND	0.2
/* No decision before this many windows: at the start a socket buffer takes
 * a few MiB without blocking and hides what the link can do. */
#define WARMUP_WINDOWS	2u
/* With LZ4 and never held back for this many windows, the link may have
 * become faster: forget it, so the next window finds out without LZ4. */
#define FORGET_WINDOWS	16u

uint64_t lz4_auto_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t lz4_auto_thread_cpu_ns(void *unused)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void lz4_auto_init(struct lz4_auto *a)
{
	memset(a, 0, sizeof(*a));
	a->on = false;		/* the link is measured without LZ4 */
	a->tried = a->plain = a->ratio = a->send = -1;
	a->cpu_now = lz4_auto_thread_cpu_ns;
}

bool lz4_auto_try(struct lz4_auto *a, bool *timed)
{
	bool probe = ++a->seq % LZ4_AUTO_PROBE == 0;

	/* The window's CPU clock starts on the thread that encodes. */
	if (!a->w_cpu_start)
		a->w_cpu_start = a->cpu_now(a->cpu_opaque);
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

/* What the window says of the encode costs and of sending. */
static void measure(struct lz4_auto *a)
{
	uint64_t now = a->cpu_now(a->cpu_opaque);
	double cpu = (double)(now - a->w_cpu_start);
	double blocked = (double)a->w_blocked;

	a->w_cpu_start = now;
	fold_cost(&a->tried, &a->w_tried);
	fold_cost(&a->plain, &a->w_plain);
	if (a->w_tried_in >= MIN_BYTES)
		fold(&a->ratio, (double)a->w_tried_out / (double)a->w_tried_in);
	if (a->w_wire < MIN_BYTES)
		return;
	/* Sending is measured without LZ4 only: with it, a peer that shares
	 * this host's cores (tests, loopback) is slowed by our compressing,
	 * and its pace would look like a slow link that compressing is right
	 * for. The first window after a change says little: the socket
	 * buffer was filling or draining. */
	if (a->settling) {
		a->settling = false;
	} else if (!a->on) {
		fold(&a->send, ((double)a->w_send_cpu + blocked) / (double)a->w_wire);
		a->quiet = 0;
	} else if (blocked > LINK_BOUND * (cpu + blocked)) {
		a->quiet = 0;		/* the link holds LZ4 back too: keep it */
	} else if (++a->quiet >= FORGET_WINDOWS) {
		a->send = -1;		/* the link may be faster now: find out */
		a->quiet = 0;
	}
}

static double slower(double a, double b)
{
	return a > b ? a : b;
}

static void decide(struct lz4_auto *a)
{
	double send, on, off;

	measure(a);
	memset(&a->w_tried, 0, sizeof(a->w_tried));
	memset(&a->w_plain, 0, sizeof(a->w_plain));
	a->w_tried_in = a->w_tried_out = 0;
	a->w_wire = a->w_send_cpu = a->w_blocked = 0;
	a->w_pages = 0;
	if (++a->windows < WARMUP_WINDOWS || a->tried < 0 || a->plain < 0 || a->ratio < 0)
		return;		/* not everything measured yet */

	send = a->send < 0 ? 0 : a->send;
	if (a->overlapped) {
		on = slower(a->tried, a->ratio * send);
		off = slower(a->plain, send);
	} else {
		on = a->tried + a->ratio * send;
		off = a->plain + send;
	}
	if ((a->on && off * MARGIN < on) || (!a->on && on * MARGIN < off)) {
		a->on = !a->on;
		a->switches++;
		a->settling = true;
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

void lz4_auto_sent(struct lz4_auto *a, size_t bytes, uint64_t wall_ns, uint64_t cpu_ns)
{
	a->w_wire += bytes;
	a->w_send_cpu += cpu_ns;
	a->w_blocked += wall_ns > cpu_ns ? wall_ns - cpu_ns : 0;
}
