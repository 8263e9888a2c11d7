/*
 * The source's data channels for a libvirt domain (libvirt_out.h): the
 * RECORDS messages of QEMU's pages dealt round robin over N connections,
 * each with its own queue and its own thread that sends (and encrypts),
 * so that TLS of the pages runs beside parsing, encoding and the control
 * session instead of after them. Where the records belong in QEMU's stream
 * the control session says (ON_DATA frames, libvirt_frames.c).
 *
 * The micro-VM's page channels (migrate/channels.c) do not fit here: they
 * read pages out of guest memory and give each channel a stream of its
 * own, while a domain's pages arrive in QEMU's stream, one ordered record
 * stream that the destination must hand its QEMU in that order. What is
 * shared is the session's making of the channels (peer_dial, peer_welcome).
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "fault.h"
#include "frame_queue.h"
#include "libvirt_out.h"

struct data_channel {
	struct lvd_data_out *d;
	unsigned index;
	struct xport *x;		/* its thread's alone while it runs */
	struct lvd_fq fq;		/* the reader pushes, the thread pops */
	pthread_t thread;
	bool running;
	_Atomic uint64_t records_sent;	/* RECORDS payload bytes on the wire */
	_Atomic uint64_t progress_ns;	/* the last frame sent */
};

struct lvd_data_out {
	struct outgoing *g;
	unsigned n;
	unsigned next;			/* the reader's: the channel of the next record */
	atomic_bool stopping;
	struct data_channel ch[PEER_MAX_DATA];
};

static uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/*
 * Tests (fault point src-data-channel-cut): the last data channel's
 * connection is shut past its first 4 MiB, as if it broke; the migration
 * must fail and the domain stay on the source.
 */
static bool cut_for_test(struct data_channel *c)
{
	return c->index + 1 == c->d->n && c->x->bytes_sent > (4u << 20) &&
	       fault_point("src-data-channel-cut");
}

static void *channel_main(void *opaque)
{
	struct data_channel *c = opaque;
	struct outgoing *g = c->d->g;

	while (!atomic_load(&c->d->stopping)) {
		struct pollfd p = { .fd = c->fq.wake_fd, .events = POLLIN };
		const struct lvd_fq_slot *f;

		lvd_fq_drain_wake(&c->fq);
		if (!(f = lvd_fq_peek(&c->fq))) {
			poll(&p, 1, 200);
			continue;
		}
		if (cut_for_test(c))
			shutdown(xport_fd(c->x), SHUT_RDWR);
		if (lvd_frame_send(c->x, f->type, f->data, f->len)) {
			int err = c->x->err;

			/* the words of a session that broke, as on the session itself */
			if (atomic_load(&c->d->stopping))
				;
			else if (err == -EPIPE || err == -ECONNRESET)
				outgoing_fail(g, "the destination's service: it closed the session "
					      "(data channel %u: %s)", c->index + 1, strerror(-err));
			else
				outgoing_fail(g, "the session to %s: data channel %u: %s", g->o->dest,
					      c->index + 1, strerror(-err));
			break;
		}
		atomic_fetch_add(&c->records_sent, f->len);
		atomic_store(&c->progress_ns, mono_ns());
		lvd_fq_pop(&c->fq);
	}
	/* a reader waiting on this queue learns that it is over */
	lvd_fq_cancel(&c->fq);
	return NULL;
}

struct lvd_data_out *lvd_data_out_start(struct outgoing *g, struct xport **x, unsigned n)
{
	struct lvd_data_out *d = calloc(1, sizeof(*d));

	if (!d)
		return NULL;
	d->g = g;
	d->n = n < PEER_MAX_DATA ? n : PEER_MAX_DATA;
	for (unsigned i = 0; i < d->n; i++) {
		struct data_channel *c = &d->ch[i];

		c->d = d;
		c->index = i;
		c->x = x[i];
		atomic_store(&c->progress_ns, mono_ns());
		if (lvd_fq_init(&c->fq))
			goto fail;
		if (pthread_create(&c->thread, NULL, channel_main, c)) {
			lvd_fq_destroy(&c->fq);
			goto fail;
		}
		c->running = true;
	}
	return d;
fail:
	lvd_data_out_stop(d);
	return NULL;
}

unsigned lvd_data_out_count(const struct lvd_data_out *d)
{
	return d ? d->n : 0;
}

int lvd_data_out_push(struct lvd_data_out *d, const struct iovec *iov, int iovcnt)
{
	struct data_channel *c = &d->ch[d->next];

	d->next = (d->next + 1) % d->n;
	return lvd_fq_push(&c->fq, LVD_FRAME_RECORDS, iov, iovcnt);
}

uint64_t lvd_data_out_records_sent(struct lvd_data_out *d)
{
	uint64_t sum = 0;

	for (unsigned i = 0; d && i < d->n; i++)
		sum += atomic_load(&d->ch[i].records_sent);
	return sum;
}

uint64_t lvd_data_out_progress_ns(struct lvd_data_out *d)
{
	uint64_t last = 0;

	for (unsigned i = 0; d && i < d->n; i++) {
		uint64_t p = atomic_load(&d->ch[i].progress_ns);

		if (p > last)
			last = p;
	}
	return last;
}

uint64_t lvd_data_out_bytes_sent(struct lvd_data_out *d)
{
	uint64_t sum = 0;

	/* bytes_sent is the channel thread's; a figure read a frame late is fine */
	for (unsigned i = 0; d && i < d->n; i++)
		sum += __atomic_load_n(&d->ch[i].x->bytes_sent, __ATOMIC_RELAXED);
	return sum;
}

void lvd_data_out_cancel(struct lvd_data_out *d)
{
	if (!d)
		return;
	atomic_store(&d->stopping, true);
	for (unsigned i = 0; i < d->n; i++) {
		struct data_channel *c = &d->ch[i];

		if (!c->running)
			continue;
		lvd_fq_cancel(&c->fq);
		/* a send that waits on a peer that reads no more returns now */
		shutdown(xport_fd(c->x), SHUT_RDWR);
	}
}

void lvd_data_out_stop(struct lvd_data_out *d)
{
	if (!d)
		return;
	lvd_data_out_cancel(d);
	for (unsigned i = 0; i < d->n; i++) {
		struct data_channel *c = &d->ch[i];

		if (!c->running)
			continue;
		pthread_join(c->thread, NULL);
		lvd_fq_destroy(&c->fq);
		c->running = false;
	}
	free(d);
}
