/*
 * Named fault points for tests (like CRIU_FAULT): VMIGRATE_FAULT holds a
 * comma-separated list of points that fire, each once per process. Never
 * set in production. The lowest layer, so migrate/, snapshot/ and
 * replicate/ all use it without including each other's headers. Every
 * point in use is listed here.
 *
 *   src-corrupt-stream    the source flips one byte of a page batch on the wire
 *   src-tear-page         a data channel sends one page of a LIVE record changed, as
 *                         if torn, though its dirty log will not send it again
 *   src-tear-written-page ... and the source counts that page as written, as its
 *                         dirty log would after a real tear, so it sends it again
 *                         (at its next dirty sync: a tear in the paused last round,
 *                         after the last sync, would not be; tests tear in round 1)
 *   src-stall-before-go   the source waits 3 s between LOADED and GO
 *   dst-exit-before-loaded the destination's process dies instead of LOADED
 *   dst-exit-before-running the destination's process dies after GO, before running
 *   dst-stop-after-loaded the destination's process stops itself (SIGSTOP) after LOADED
 *   dst-exit-before-ack   a libvirt domain's destination dies after its QEMU's SHUT,
 *                         before vmigrate's ACK
 *   dst-stop-before-ack   ... stops itself (SIGSTOP) there instead
 *   src-data-channel-cut  a libvirt domain's source shuts its last data channel's
 *                         connection past its first 4 MiB, as if it broke
 *   dst-decision-unrecorded the destination cannot record its handover decision
 *   dst-reads-1.0         the destination welcomes and reads as one of format 1.0 would
 *                         (an earlier version: it does not say which minor it reads)
 *   dst-reads-1.1         ... as one of format 1.1 would (LIVE records, no zstd pages)
 *   repl-skip-self-fence  a replication primary ignores its lease: never fences, never
 *                         marks a lost standby stale (the output checker must catch it)
 *   lazy-slow-prefetch    a lazy restore's prefetch takes 5 ms a MiB
 *   src-postcopy-slow-push the source's post-copy push waits 20 ms a 2 MiB chunk
 *   standby-half-apply    a standby fails an epoch after its first record (half applied)
 *   repl-abandon-standby  a replication primary gives its standby up after epoch 50 and
 *                         leaves the connection open (its end never reaches the standby,
 *                         as behind a stalled link)
 *   dst-postcopy-zero-page the destination maps a zero page for an owed page a vCPU
 *                         touches instead of waiting for it (tests must catch it)
 *   lvsnap-reader-dies    a libvirt domain's memory snapshot: the service stops reading
 *                         libvirt's FIFO 4 MiB into QEMU's stream
 */
#ifndef FAULT_H
#define FAULT_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

bool fault_point(const char *point);

/* The src-corrupt-stream point, on a PAGES record about to be sent (its
 * iovec: header, head, entries, then the data, or a LIVE record's page
 * checksums): once sent passed `after` bytes, flips one bit of that part,
 * once per process. Cheap when unarmed. */
void fault_corrupt_batch(const struct iovec *iov, int iovcnt, uint64_t sent,
			     uint64_t after);

#endif
