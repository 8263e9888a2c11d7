/*
 * Reading a socket ahead of its consumer, in a thread of its own: the
 * source QEMU writes its migration stream into a unix socket whose buffer
 * (the sender's, about 200 KiB) holds well under a millisecond of the
 * stream, so every time the thread that parses and encodes is busy or not
 * scheduled, QEMU's migration thread stands still. This thread does
 * nothing but read into a ring of chunks, so it wakes at once, and the
 * consumer takes the chunks in order without a copy. Private to
 * tools/vmigrated.
 */
#ifndef READ_AHEAD_H
#define READ_AHEAD_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define LVD_RA_CHUNK	(256u << 10)
#define LVD_RA_CHUNKS	16	/* 4 MiB ahead: more only lengthens the downtime, which waits
				 * for what the ring holds */

struct lvd_read_ahead;

/* Start reading fd (not owned). NULL: no memory or no thread (errno). */
struct lvd_read_ahead *lvd_read_ahead_start(int fd);
/* The next bytes of the socket, in order: *buf gets len bytes that stay
 * valid until the next call; 0 at the end of the stream (ECONNRESET is
 * an end too, as for read), -errno when reading failed. Waits. */
ssize_t lvd_read_ahead_next(struct lvd_read_ahead *ra, const uint8_t **buf);
/* Stop (the socket shut for reading, so a read that waits returns), join, free. */
void lvd_read_ahead_stop(struct lvd_read_ahead *ra);

#endif
