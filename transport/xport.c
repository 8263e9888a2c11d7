/*
 * Transport-independent part of a channel: the sticky error, byte counts
 * and the bandwidth cap, applied before every send.
 */
#include "transport.h"

#include <errno.h>
#include <time.h>

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Token bucket holding at most 50 ms of the rate: smooth, not bursty. */
static void throttle(struct xport *x, size_t len)
{
	double t = now(), burst = x->rate_limit * 0.05;

	if (x->bucket_time == 0) {
		x->bucket_time = t;
		x->bucket_tokens = burst;
	}
	x->bucket_tokens += (t - x->bucket_time) * x->rate_limit;
	if (x->bucket_tokens > burst)
		x->bucket_tokens = burst;
	x->bucket_time = t;
	x->bucket_tokens -= len;
	if (x->bucket_tokens < 0) {
		double wait = -x->bucket_tokens / x->rate_limit;
		struct timespec ts = { (time_t)wait, (long)((wait - (time_t)wait) * 1e9) };

		nanosleep(&ts, NULL);
	}
}

int xport_sendv(struct xport *x, const struct iovec *iov, int iovcnt)
{
	size_t len = 0;
	int ret;

	if (x->err)
		return x->err;
	for (int i = 0; i < iovcnt; i++)
		len += iov[i].iov_len;
	if (x->rate_limit)
		throttle(x, len);
	ret = x->ops->sendv(x, iov, iovcnt);
	if (ret < 0)
		return x->err = ret;
	x->bytes_sent += len;
	return 0;
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
