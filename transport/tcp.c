/*
 * TCP channels. Every blocking step has a deadline: a peer that vanishes
 * (killed host, a firewall that drops everything) is noticed within
 * io_timeout_ms through poll deadlines, TCP_USER_TIMEOUT and keepalives,
 * never by waiting for ever.
 */
#include "transport.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

struct tcp_xport {
	struct xport x;
	int fd;
	int io_timeout_ms;
};

static struct tcp_xport *to_tcp(struct xport *x)
{
	return (struct tcp_xport *)x;
}

/* Wait for events on fd; -ETIMEDOUT after timeout_ms (0 = for ever). */
static int wait_fd(int fd, short events, int timeout_ms)
{
	struct pollfd p = { .fd = fd, .events = events };
	int n;

	do {
		n = poll(&p, 1, timeout_ms > 0 ? timeout_ms : -1);
	} while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	if (n == 0)
		return -ETIMEDOUT;
	return 0;
}

static int tcp_sendv(struct xport *x, const struct iovec *iov, int iovcnt)
{
	struct tcp_xport *t = to_tcp(x);
	struct iovec local[16];
	struct msghdr msg = { 0 };
	int n = iovcnt;

	if (n > 16)
		return -EINVAL;
	memcpy(local, iov, n * sizeof(*iov));
	msg.msg_iov = local;
	while (n > 0) {
		ssize_t w;
		int ret;

		msg.msg_iovlen = n;
		w = sendmsg(t->fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN)
				return -errno;
			ret = wait_fd(t->fd, POLLOUT, t->io_timeout_ms);
			if (ret)
				return ret;
			continue;
		}
		while (n > 0 && (size_t)w >= msg.msg_iov->iov_len) {
			w -= msg.msg_iov->iov_len;
			msg.msg_iov++;
			n--;
		}
		if (n > 0) {
			msg.msg_iov->iov_base = (char *)msg.msg_iov->iov_base + w;
			msg.msg_iov->iov_len -= w;
		}
	}
	return 0;
}

static long tcp_recv(struct xport *x, void *buf, size_t len)
{
	struct tcp_xport *t = to_tcp(x);
	size_t done = 0;

	while (done < len) {
		ssize_t n = recv(t->fd, (char *)buf + done, len - done, MSG_DONTWAIT);
		int ret;

		if (n > 0) {
			done += n;
			continue;
		}
		if (n == 0)
			break;
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN)
			return -errno;
		ret = wait_fd(t->fd, POLLIN, x->idle_ok ? 0 : t->io_timeout_ms);
		if (ret)
			return ret;
	}
	return (long)done;
}

static int tcp_poll_in(struct xport *x, int timeout_ms)
{
	struct pollfd p = { .fd = to_tcp(x)->fd, .events = POLLIN };
	int n;

	do {
		n = poll(&p, 1, timeout_ms);
	} while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	return n > 0;
}

static void tcp_close(struct xport *x)
{
	struct tcp_xport *t = to_tcp(x);

	close(t->fd);
	free(t);
}

static int tcp_fd(const struct xport *x)
{
	return ((const struct tcp_xport *)x)->fd;
}

static const struct xport_ops tcp_ops = {
	.name = "tcp",
	.sendv = tcp_sendv,
	.recv = tcp_recv,
	.poll_in = tcp_poll_in,
	.fd = tcp_fd,
	.close = tcp_close,
};

void xport_tcp_tune(int fd, int io_timeout_ms)
{
	int one = 1, idle = 1, intvl = 1, cnt = 3;

	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (io_timeout_ms > 0) {
		unsigned user_timeout = (unsigned)io_timeout_ms;

		setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
		setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
		setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl));
		setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt));
		/* unacknowledged data older than this kills the connection */
		setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user_timeout,
			   sizeof(user_timeout));
	}
}

struct xport *xport_tcp_from_fd(int fd, int io_timeout_ms)
{
	struct tcp_xport *t = calloc(1, sizeof(*t));

	if (!t)
		return NULL;
	t->x.ops = &tcp_ops;
	t->fd = fd;
	t->io_timeout_ms = io_timeout_ms;
	fcntl(fd, F_SETFD, FD_CLOEXEC);
	xport_tcp_tune(fd, io_timeout_ms);
	return &t->x;
}

struct xport *xport_tcp_connect(const char *host, const char *port,
				int connect_timeout_ms, int io_timeout_ms,
				char *err, size_t errlen)
{
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *res, *ai;
	int gai, fd = -1, last = ECONNREFUSED;
	struct xport *x;

	gai = getaddrinfo(host, port, &hints, &res);
	if (gai) {
		snprintf(err, errlen, "%s:%s: %s", host, port, gai_strerror(gai));
		return NULL;
	}
	for (ai = res; ai; ai = ai->ai_next) {
		int soerr = 0;
		socklen_t sl = sizeof(soerr);

		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK,
			    ai->ai_protocol);
		if (fd < 0) {
			last = errno;
			continue;
		}
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
			break;
		if (errno == EINPROGRESS) {
			int ret = wait_fd(fd, POLLOUT, connect_timeout_ms);

			if (ret == 0 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) == 0 &&
			    soerr == 0)
				break;
			last = ret ? -ret : soerr;
		} else {
			last = errno;
		}
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd < 0) {
		snprintf(err, errlen, "connecting to %s:%s: %s", host, port, strerror(last));
		return NULL;
	}
	x = xport_tcp_from_fd(fd, io_timeout_ms);
	if (!x) {
		close(fd);
		snprintf(err, errlen, "out of memory");
	}
	return x;
}

int xport_tcp_listen(const char *host, const char *port, char *err, size_t errlen)
{
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE }, *res;
	int gai, fd, one = 1;

	gai = getaddrinfo(host && *host ? host : NULL, port, &hints, &res);
	if (gai) {
		snprintf(err, errlen, "%s:%s: %s", host ? host : "*", port, gai_strerror(gai));
		return -EINVAL;
	}
	fd = socket(res->ai_family, res->ai_socktype | SOCK_CLOEXEC, res->ai_protocol);
	if (fd < 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    bind(fd, res->ai_addr, res->ai_addrlen) < 0 || listen(fd, 16) < 0) {
		int e = errno;

		snprintf(err, errlen, "listening on %s:%s: %s", host ? host : "*", port,
			 strerror(e));
		if (fd >= 0)
			close(fd);
		freeaddrinfo(res);
		return -e;
	}
	freeaddrinfo(res);
	return fd;
}

int xport_split_hostport(const char *s, const char *default_port, char *host,
			 size_t hostlen, char *port, size_t portlen)
{
	const char *colon;
	size_t hl;

	if (s[0] == '[') {
		const char *close = strchr(s, ']');

		if (!close)
			return -EINVAL;
		hl = close - s - 1;
		if (hl >= hostlen)
			return -EINVAL;
		memcpy(host, s + 1, hl);
		host[hl] = 0;
		colon = close[1] == ':' ? close + 1 : NULL;
		if (close[1] && !colon)
			return -EINVAL;
	} else {
		colon = strrchr(s, ':');
		hl = colon ? (size_t)(colon - s) : strlen(s);
		if (hl >= hostlen || hl == 0)
			return -EINVAL;
		memcpy(host, s, hl);
		host[hl] = 0;
	}
	snprintf(port, portlen, "%s", colon ? colon + 1 : default_port);
	return port[0] ? 0 : -EINVAL;
}
