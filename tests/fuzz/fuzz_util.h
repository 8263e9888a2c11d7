/*
 * What the socket-fed fuzz targets share: a socketpair whose far end has
 * the input written into it and its write side shut, so the code under
 * test reads the input and then end of stream, never waits; and a count of
 * open descriptors, so an iteration that leaks one is a crash.
 */
#ifndef FUZZ_UTIL_H
#define FUZZ_UTIL_H

#include <errno.h>
#include <poll.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#define FUZZ_FD_SCAN	256	/* descriptors below this are counted */

/* Open descriptors below FUZZ_FD_SCAN, with one poll. */
static inline int fuzz_fd_count(void)
{
	struct pollfd p[FUZZ_FD_SCAN];
	int open = 0;

	for (int i = 0; i < FUZZ_FD_SCAN; i++)
		p[i] = (struct pollfd){ .fd = i, .events = 0 };
	if (poll(p, FUZZ_FD_SCAN, 0) < 0)
		return -1;
	for (int i = 0; i < FUZZ_FD_SCAN; i++)
		open += !(p[i].revents & POLLNVAL);
	return open;
}

/* An iteration must leave as many descriptors open as it found. */
static inline void fuzz_check_fds(int before, const char *what)
{
	int after = fuzz_fd_count();

	if (after != before) {
		fprintf(stderr, "fuzz: %s leaked %d file descriptor(s)\n", what, after - before);
		abort();
	}
}

/* Write what fits without blocking; the rest of an input too large for
 * the socket buffer is dropped (the targets cap -max_len below that). */
static inline void fuzz_write(int fd, const uint8_t *data, size_t size)
{
	while (size) {
		ssize_t n = send(fd, data, size, MSG_DONTWAIT | MSG_NOSIGNAL);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return;
		data += n;
		size -= (size_t)n;
	}
}

/* sv[0] for the code under test, sv[1] holds the input followed by end of
 * stream (its read side stays open for replies, which nobody reads). */
static inline bool fuzz_socketpair(int sv[2], const uint8_t *data, size_t size)
{
	int big = 1 << 20;

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		return false;
	setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &big, sizeof(big));
	setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &big, sizeof(big));
	fuzz_write(sv[1], data, size);
	shutdown(sv[1], SHUT_WR);
	return true;
}

#endif
