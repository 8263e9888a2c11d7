/*
 * Transport-independent part of a channel: the sticky error, byte counts
 * and the bandwidth cap, applied before every send.
 */
#include "transport.h"

#include <errno.h>
#include <stdint.h>
#include <time.h>

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

void xport_bucket_init(struct xport_bucket *b, uint64_t rate)
{
	atomic_store(&b->rate, rate);
	pthread_mutex_init(&b->lock, NULL);
	b->time = 0;
	b->tokens = 0;
}

/* Take len bytes from the bucket, sleeping when it runs dry. */
static void throttle(struct xport_bucket *b, size_t len)
{
	uint64_t rate = atomic_load(&b->rate);
	double t, burst, wait = 0;

	if (!rate)
		return;
	burst = rate * 0.05;
	pthread_mutex_lock(&b->lock);
	t = now();
	if (b->time == 0) {
		b->time = t;
		b->tokens = burst;
	}
	b->tokens += (t - b->time) * rate;
	if (b->tokens > burst)
		b->tokens = burst;
	b->time = t;
	b->tokens -= len;
	if (b->tokens < 0)
		wait = -b->tokens / rate;
	pthread_mutex_unlock(&b->lock);
	if (wait > 0) {
		struct timespec ts = { (time_t)wait, (long)((wait - (time_t)wait) * 1e9) };

		nanosleep(&ts, NULL);
	}
}

#define PACE_BYTES	(256 * 1024)	/* a capped send goes out in slices this big */

/* Send iov in slices of at most PACE_BYTES, each paid for first, so a cap
 * paces smoothly and a new rate applies within a slice; each slice counts
 * in bytes_sent once it is out, so a capped rate reads smoothly too (not
 * in jumps of a whole batch). */
static int paced_sendv(struct xport *x, const struct iovec *iov, int iovcnt)
{
	struct iovec part[16];
	size_t off = 0;		/* into iov[i] */
	int i = 0;

	while (i < iovcnt) {
		size_t budget = PACE_BYTES, total = 0;
		int n = 0, ret;

		while (i < iovcnt && budget && n < 16) {
			size_t take = iov[i].iov_len - off;

			if (take > budget)
				take = budget;
			part[n].iov_base = (uint8_t *)iov[i].iov_base + off;
			part[n].iov_len = take;
			n++;
			total += take;
			budget -= take;
			off += take;
			if (off == iov[i].iov_len) {
				i++;
				off = 0;
			}
		}
		throttle(x->bucket, total);
		ret = x->ops->sendv(x, part, n);
		if (ret < 0)
			return ret;
		x->bytes_sent += total;
	}
	return 0;
}

int xport_sendv(struct xport *x, const struct iovec *iov, int iovcnt)
{
	size_t len = 0;
	int ret;

	if (x->err)
		return x->err;
	for (int i = 0; i < iovcnt; i++)
		len += iov[i].iov_len;
	if (x->bucket && atomic_load(&x->bucket->rate)) {
		ret = paced_sendv(x, iov, iovcnt);	/* counts slice by slice */
	} else {
		ret = x->ops->sendv(x, iov, iovcnt);
		if (!ret)
			x->bytes_sent += len;
	}
	return ret < 0 ? (x->err = ret) : 0;
}

int xport_send(struct xport *x, const void *buf, size_t len)
{
	struct iovec iov = { (void *)buf, len };

	return xport_sendv(x, &iov, 1);
}

long xport_recv(struct xport *x, void *buf, size_t len)
{
	long n;

	if (x->err)
		return x->err;
	n = x->ops->recv(x, buf, len);
	if (n < 0)
		return x->err = (int)n;
	x->bytes_received += n;
	return n;
}

int xport_recv_exact(struct xport *x, void *buf, size_t len)
{
	long n = xport_recv(x, buf, len);

	if (n < 0)
		return (int)n;
	if ((size_t)n != len)
		return x->err = -EPIPE;
	return 0;
}

int xport_poll_in(struct xport *x, int timeout_ms)
{
	if (x->err)
		return x->err;
	return x->ops->poll_in(x, timeout_ms);
}

int xport_fd(const struct xport *x)
{
	return x->ops->fd ? x->ops->fd(x) : -1;
}

void xport_close(struct xport *x)
{
	if (x)
		x->ops->close(x);
}

int xport_register_mem(struct xport *x, const void *addr, size_t len)
{
	return x->ops->register_mem ? x->ops->register_mem(x, addr, len) : 0;
}

void xport_unregister_mem(struct xport *x, const void *addr)
{
	if (x->ops->unregister_mem)
		x->ops->unregister_mem(x, addr);
}
