/*
 * The read-ahead ring of the source's relay for libvirt domains
 * (tools/vmigrated/read_ahead.c): every byte of the socket in order, then
 * its end; a failed read as -errno; a stop that returns while its read
 * waits on a silent peer.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"
#include "tools/vmigrated/read_ahead.h"

#define TOTAL	(3u * LVD_RA_CHUNKS * LVD_RA_CHUNK + 12345u)	/* the ring fills, thrice */

static uint8_t byte_at(uint64_t i)
{
	return (uint8_t)(i * 2654435761u >> 13);
}

/* Writes TOTAL bytes in pieces of odd sizes, then closes. */
static void *writer(void *opaque)
{
	int fd = *(int *)opaque;
	static uint8_t buf[70001];
	uint64_t at = 0;

	while (at < TOTAL) {
		size_t n = (size_t)(at % 3 ? 70001 : 4097);

		if (n > TOTAL - at)
			n = TOTAL - at;
		for (size_t i = 0; i < n; i++)
			buf[i] = byte_at(at + i);
		for (size_t off = 0; off < n;) {
			ssize_t w = write(fd, buf + off, n - off);

			if (w <= 0)
				return NULL;
			off += (size_t)w;
		}
		at += n;
	}
	close(fd);
	return NULL;
}

TEST(read_ahead_every_byte_in_order_then_end)
{
	int sv[2];
	pthread_t t;
	struct lvd_read_ahead *ra;
	uint64_t at = 0, bad = UINT64_MAX;
	ssize_t n;
	const uint8_t *buf;
	unsigned calls = 0;

	CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
	ra = lvd_read_ahead_start(sv[0]);
	CHECK(ra);
	CHECK(pthread_create(&t, NULL, writer, &sv[1]) == 0);
	while ((n = lvd_read_ahead_next(ra, &buf)) > 0) {
		CHECK(n <= (ssize_t)LVD_RA_CHUNK);
		for (ssize_t i = 0; i < n && bad == UINT64_MAX; i++)
			if (buf[i] != byte_at(at + (uint64_t)i))
				bad = at + (uint64_t)i;
		at += (uint64_t)n;
		/* a slow consumer now and then: the ring fills and the writer waits */
		if (++calls % 64 == 0)
			usleep(20000);
	}
	CHECK_EQ(n, 0);
	CHECK_EQ(bad, UINT64_MAX);
	CHECK_EQ(at, TOTAL);
	/* the end stays the end */
	CHECK_EQ(lvd_read_ahead_next(ra, &buf), 0);
	pthread_join(t, NULL);
	lvd_read_ahead_stop(ra);
	close(sv[0]);
}

TEST(read_ahead_failure_reported)
{
	int fd[2];
	struct lvd_read_ahead *ra;
	const uint8_t *buf;
	ssize_t n;

	/* a pipe's write end is no socket: reading it fails with EBADF */
	CHECK(pipe(fd) == 0);
	ra = lvd_read_ahead_start(fd[1]);
	CHECK(ra);
	n = lvd_read_ahead_next(ra, &buf);
	CHECK_EQ(n, -EBADF);
	lvd_read_ahead_stop(ra);
	close(fd[0]);
	close(fd[1]);
}

TEST_T(read_ahead_stop_while_the_peer_is_silent, 10)
{
	int sv[2];
	struct lvd_read_ahead *ra;
	const uint8_t *buf;

	CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
	ra = lvd_read_ahead_start(sv[0]);
	CHECK(ra);
	CHECK(write(sv[1], "abc", 3) == 3);
	CHECK_EQ(lvd_read_ahead_next(ra, &buf), 3);
	CHECK(!memcmp(buf, "abc", 3));
	/* its read waits now: the stop shuts the socket for reading and returns */
	lvd_read_ahead_stop(ra);
	close(sv[0]);
	close(sv[1]);
}
