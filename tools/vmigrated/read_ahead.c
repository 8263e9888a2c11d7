/*
 * The read-ahead thread and its ring (read_ahead.h).
 */
#include "read_ahead.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

struct lvd_read_ahead {
	int fd;
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t cond;		/* a chunk filled, one came free, or the end */
	uint8_t *mem;			/* LVD_RA_CHUNKS chunks */
	size_t len[LVD_RA_CHUNKS];	/* under lock: bytes in a filled chunk */
	/* The ring: chunks [head, head + count) are filled. The consumer holds
	 * the head chunk from lvd_read_ahead_next until its next call. */
	unsigned head, count;		/* under lock */
	bool held;			/* under lock: the consumer has the head chunk */
	int end;			/* under lock: 0 reading, 1 at the end, -errno */
	bool stopping;			/* under lock */
};

static void *read_main(void *opaque)
{
	struct lvd_read_ahead *ra = opaque;

	pthread_mutex_lock(&ra->lock);
	for (;;) {
		unsigned slot;
		ssize_t n;

		while (ra->count == LVD_RA_CHUNKS && !ra->stopping)
			pthread_cond_wait(&ra->cond, &ra->lock);
		if (ra->stopping)
			break;
		slot = (ra->head + ra->count) % LVD_RA_CHUNKS;
		pthread_mutex_unlock(&ra->lock);
		/* the slot is free: nobody else touches it until it is counted */
		do
			n = read(ra->fd, ra->mem + (size_t)slot * LVD_RA_CHUNK, LVD_RA_CHUNK);
		while (n < 0 && errno == EINTR);
		pthread_mutex_lock(&ra->lock);
		if (n <= 0) {
			ra->end = n == 0 || errno == ECONNRESET ? 1 : -errno;
			pthread_cond_broadcast(&ra->cond);
			break;
		}
		ra->len[slot] = (size_t)n;
		ra->count++;
		pthread_cond_broadcast(&ra->cond);
	}
	pthread_mutex_unlock(&ra->lock);
	return NULL;
}

struct lvd_read_ahead *lvd_read_ahead_start(int fd)
{
	struct lvd_read_ahead *ra = calloc(1, sizeof(*ra));

	if (!ra)
		return NULL;
	ra->fd = fd;
	ra->mem = malloc((size_t)LVD_RA_CHUNKS * LVD_RA_CHUNK);
	if (!ra->mem)
		goto fail;
	pthread_mutex_init(&ra->lock, NULL);
	pthread_cond_init(&ra->cond, NULL);
	if (pthread_create(&ra->thread, NULL, read_main, ra)) {
		pthread_cond_destroy(&ra->cond);
		pthread_mutex_destroy(&ra->lock);
		goto fail;
	}
	return ra;
fail:
	free(ra->mem);
	free(ra);
	return NULL;
}

ssize_t lvd_read_ahead_next(struct lvd_read_ahead *ra, const uint8_t **buf)
{
	ssize_t ret;

	pthread_mutex_lock(&ra->lock);
	if (ra->held) {
		/* the chunk handed out last time is done with */
		ra->held = false;
		ra->head = (ra->head + 1) % LVD_RA_CHUNKS;
		ra->count--;
		pthread_cond_broadcast(&ra->cond);
	}
	while (!ra->count && !ra->end)
		pthread_cond_wait(&ra->cond, &ra->lock);
	if (ra->count) {
		ra->held = true;
		*buf = ra->mem + (size_t)ra->head * LVD_RA_CHUNK;
		ret = (ssize_t)ra->len[ra->head];
	} else {
		ret = ra->end > 0 ? 0 : ra->end;
	}
	pthread_mutex_unlock(&ra->lock);
	return ret;
}

void lvd_read_ahead_stop(struct lvd_read_ahead *ra)
{
	if (!ra)
		return;
	pthread_mutex_lock(&ra->lock);
	ra->stopping = true;
	pthread_cond_broadcast(&ra->cond);
	pthread_mutex_unlock(&ra->lock);
	shutdown(ra->fd, SHUT_RD);
	pthread_join(ra->thread, NULL);
	pthread_cond_destroy(&ra->cond);
	pthread_mutex_destroy(&ra->lock);
	free(ra->mem);
	free(ra);
}
