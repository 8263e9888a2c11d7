/*
 * A bounded queue of frames from one producer thread to one consumer
 * thread: the source's stream reader (QEMU's socket, parser, encoder)
 * hands its frames to the thread that owns the peer session, so that
 * reading QEMU, encoding and sending overlap instead of taking turns.
 * Slots are allocated on first use and reused: fresh memory is slow to
 * touch on these machines (PERF-FACTS.md). The consumer polls wake_fd
 * (an eventfd) beside its socket to learn of a new frame.
 */
#ifndef FRAME_QUEUE_H
#define FRAME_QUEUE_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#define LVD_FQ_SLOTS	4	/* frames in flight: deeper queues only lengthen the downtime (the
				 * switchover waits for what they hold) */

struct lvd_fq_slot {
	uint32_t type, len;
	uint8_t *data;			/* len bytes of payload */
	size_t cap;
};

struct lvd_fq {
	pthread_mutex_t lock;
	pthread_cond_t space;		/* a slot came free, or the queue was cancelled */
	/* The ring: slots [head, head + count) hold frames. A slot's contents
	 * belong to the producer until it is counted, then to the consumer
	 * until it is popped. */
	struct lvd_fq_slot slot[LVD_FQ_SLOTS];
	unsigned head, count;		/* under lock */
	bool cancelled;			/* under lock */
	int wake_fd;			/* eventfd: readable after a push or a wake */
};

/* 0 or -errno. */
int lvd_fq_init(struct lvd_fq *q);
void lvd_fq_destroy(struct lvd_fq *q);

/* Producer: one frame of type with the bytes of iov as its payload; waits
 * while the queue is full. 0, -ECANCELED once the consumer cancelled, or
 * -ENOMEM. */
int lvd_fq_push(struct lvd_fq *q, uint32_t type, const struct iovec *iov, int iovcnt);
/* Producer: wake the consumer without a frame (the producer stopped). */
void lvd_fq_wake(struct lvd_fq *q);

/* Consumer: the oldest frame, or NULL when there is none (never waits);
 * it stays valid until lvd_fq_pop. */
const struct lvd_fq_slot *lvd_fq_peek(struct lvd_fq *q);
void lvd_fq_pop(struct lvd_fq *q);
/* Consumer: clear wake_fd before looking at the queue and polling it. */
void lvd_fq_drain_wake(struct lvd_fq *q);
/* Consumer: give up; the producer's pushes fail from now on. */
void lvd_fq_cancel(struct lvd_fq *q);

#endif
