/*
 * Byte channels between hosts: an ops table per transport (tcp now; tls
 * and rdma later) with a sticky error, so a stream writer can keep sending
 * and learn of the first failure once.
 */
#ifndef TRANSPORT_H
#define TRANSPORT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

struct xport;

/*
 * A bandwidth cap shared by every channel of one job: one token bucket,
 * holding at most 50 ms of the rate; rate may change at any time.
 */
struct xport_bucket {
	_Atomic uint64_t rate;		/* bytes/s, 0 = no cap */
	pthread_mutex_t lock;
	double time;			/* under lock */
	double tokens;			/* under lock */
};

void xport_bucket_init(struct xport_bucket *b, uint64_t rate);

struct xport_ops {
	const char *name;
	/* Send all of iov or fail; -errno. */
	int (*sendv)(struct xport *x, const struct iovec *iov, int iovcnt);
	/* Receive up to len bytes, looping until len or end of stream; returns
	 * the bytes received (< len only at end) or -errno. */
	long (*recv)(struct xport *x, void *buf, size_t len);
	/* Bytes ready without blocking: 1 if any, 0 if none, -errno. */
	int (*poll_in)(struct xport *x, int timeout_ms);
	/* The socket underneath, for shutdown and draining; -1 if none. */
	int (*fd)(const struct xport *x);
	void (*close)(struct xport *x);
	/* Optional: memory to send from without copying (see xport_register_mem). */
	int (*register_mem)(struct xport *x, const void *addr, size_t len);
	void (*unregister_mem)(struct xport *x, const void *addr);
};

struct xport {
	const struct xport_ops *ops;
	int err;			/* sticky: the first failure */
	/* Receivers that may legitimately wait long (a channel idle between
	 * rounds) set this: reads then wait without a deadline, and a dead
	 * peer is still found by TCP keepalives and TCP_USER_TIMEOUT. */
	bool idle_ok;
	uint64_t bytes_sent, bytes_received;
	/* Bandwidth cap, shared with the job's other channels; NULL = none. */
	struct xport_bucket *bucket;
};

int xport_sendv(struct xport *x, const struct iovec *iov, int iovcnt);
int xport_send(struct xport *x, const void *buf, size_t len);
/* Exactly len bytes, or -EPIPE at end of stream, or -errno. */
int xport_recv_exact(struct xport *x, void *buf, size_t len);
long xport_recv(struct xport *x, void *buf, size_t len);
int xport_poll_in(struct xport *x, int timeout_ms);
int xport_fd(const struct xport *x);
void xport_close(struct xport *x);
/*
 * Memory the caller sends from again and again (a stream writer's batch
 * buffers). A transport that can send straight out of registered memory
 * (RDMA) registers it and from then on sends large pieces inside it without
 * copying them; the others ignore it. Returns 0 or -errno (the area is then
 * sent as before, by copying). The area must stay allocated until it is
 * unregistered or the channel closed; sendv does not return before the
 * hardware is done reading it.
 */
int xport_register_mem(struct xport *x, const void *addr, size_t len);
void xport_unregister_mem(struct xport *x, const void *addr);

/* TCP. io_timeout_ms bounds every send and receive (0 = none) and, with
 * TCP_USER_TIMEOUT and keepalives, how long a silent peer goes unnoticed. */
struct xport *xport_tcp_connect(const char *host, const char *port,
				int connect_timeout_ms, int io_timeout_ms,
				char *err, size_t errlen);
struct xport *xport_tcp_from_fd(int fd, int io_timeout_ms);
/* Socket options of every channel between hosts: no Nagle, keepalives and
 * TCP_USER_TIMEOUT from io_timeout_ms (no-ops on other sockets). */
void xport_tcp_tune(int fd, int io_timeout_ms);
/* A listening socket for host:port (host NULL or "" = any). */
int xport_tcp_listen(const char *host, const char *port, char *err, size_t errlen);

/* "host:port", "[v6]:port" or "host" (default port) into its parts. */
int xport_split_hostport(const char *s, const char *default_port, char *host,
			 size_t hostlen, char *port, size_t portlen);

#endif
