/*
 * The bounded frame queue between the source's stream reader and its
 * sender (frame_queue.h).
 */
#include "frame_queue.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

int lvd_fq_init(struct lvd_fq *q)
{
	memset(q, 0, sizeof(*q));
	q->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (q->wake_fd < 0)
		return -errno;
	pthread_mutex_init(&q->lock, NULL);
	pthread_cond_init(&q->space, NULL);
	return 0;
}

void lvd_fq_destroy(struct lvd_fq *q)
{
	for (unsigned i = 0; i < LVD_FQ_SLOTS; i++)
		free(q->slot[i].data);
	close(q->wake_fd);
	pthread_cond_destroy(&q->space);
	pthread_mutex_destroy(&q->lock);
}

void lvd_fq_wake(struct lvd_fq *q)
{
	uint64_t one = 1;

	if (write(q->wake_fd, &one, sizeof(one)) < 0) {
		/* only EAGAIN (the counter is full): it is readable anyway */
	}
}

int lvd_fq_push(struct lvd_fq *q, uint32_t type, const struct iovec *iov, int iovcnt)
{
	struct lvd_fq_slot *s;
	size_t len = 0;

	for (int i = 0; i < iovcnt; i++)
		len += iov[i].iov_len;
	pthread_mutex_lock(&q->lock);
	while (q->count == LVD_FQ_SLOTS && !q->cancelled)
		pthread_cond_wait(&q->space, &q->lock);
	if (q->cancelled) {
		pthread_mutex_unlock(&q->lock);
		return -ECANCELED;
	}
	s = &q->slot[(q->head + q->count) % LVD_FQ_SLOTS];
	pthread_mutex_unlock(&q->lock);
	/* the slot is the producer's until it is counted below */
	if (s->cap < len) {
		uint8_t *d = realloc(s->data, len);

		if (!d)
			return -ENOMEM;
		s->data = d;
		s->cap = len;
	}
	s->type = type;
	s->len = (uint32_t)len;
	len = 0;
	for (int i = 0; i < iovcnt; i++) {
		memcpy(s->data + len, iov[i].iov_base, iov[i].iov_len);
		len += iov[i].iov_len;
	}
	pthread_mutex_lock(&q->lock);
	q->count++;
	pthread_mutex_unlock(&q->lock);
	lvd_fq_wake(q);
	return 0;
}

const struct lvd_fq_slot *lvd_fq_peek(struct lvd_fq *q)
{
	const struct lvd_fq_slot *s;

	pthread_mutex_lock(&q->lock);
	s = q->count ? &q->slot[q->head] : NULL;
	pthread_mutex_unlock(&q->lock);
	return s;
}

void lvd_fq_pop(struct lvd_fq *q)
{
	pthread_mutex_lock(&q->lock);
	q->head = (q->head + 1) % LVD_FQ_SLOTS;
	q->count--;
	pthread_cond_signal(&q->space);
	pthread_mutex_unlock(&q->lock);
}

void lvd_fq_drain_wake(struct lvd_fq *q)
{
	uint64_t n;

	if (read(q->wake_fd, &n, sizeof(n)) < 0) {
		/* EAGAIN: nothing was pending */
	}
}

void lvd_fq_cancel(struct lvd_fq *q)
{
	pthread_mutex_lock(&q->lock);
	q->cancelled = true;
	pthread_cond_broadcast(&q->space);
	pthread_mutex_unlock(&q->lock);
}
