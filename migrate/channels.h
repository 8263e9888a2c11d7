/*
 * Parallel page channels, private to migrate/. Each data channel carries a
 * complete ckpt-format stream of its own (header, round markers, pages,
 * END, COMMIT, with its own checksums and digest) and has its own thread
 * that compresses (and, over TLS, encrypts) its pages, so the work spreads
 * over cores. A page always travels on the same channel (by its 64-page
 * group), so its versions arrive in order without any cross-channel
 * barrier; state, markers and the commit stay on the ordered control
 * channel.
 */
#ifndef MIGRATE_CHANNELS_H
#define MIGRATE_CHANNELS_H

#include <stdint.h>

#include "ckpt.h"
#include "transport.h"
#include "vm.h"

#define MIG_MAX_CHANNELS	16
#define MIG_GROUP_PAGES		64

/* ---- source side ---------------------------------------------------------- */

struct page_out;

/* With n == 0 pages go through control, the control stream's writer.
 * tick, when set, is called about every 100 ms while the caller waits for
 * the channels (a full queue, a flush), to keep progress figures live; a
 * negative errno from it (a cancel) fails the channels with that error. */
struct page_out *page_out_new(struct ckpt_writer *control, struct xport **data, unsigned n,
			      const struct ckpt_image_info *info,
			      const struct ckpt_writer_opts *wo,
			      int (*tick)(void *opaque), void *opaque);
void page_out_free(struct page_out *o);

int page_out_marker(struct page_out *o, unsigned round);
/* The pages of region r (vm slot ri) set in bitmap within [first, end). */
int page_out_pages(struct page_out *o, const struct vm_region *r, unsigned ri,
		   const uint64_t *bitmap, uint64_t first, uint64_t end);
int page_out_zero(struct page_out *o, const struct vm_region *r, unsigned ri,
		  uint64_t first, uint64_t count);
/* Wait until everything queued is on the wire (a round's end). */
int page_out_flush(struct page_out *o);
/* An ABORT (why) on every data stream still running, on the wire before
 * it returns: the destination learns why the streams end. */
int page_out_abort(struct page_out *o, const char *why);
/* END and COMMIT on every data stream, then stop the threads. */
int page_out_finish(struct page_out *o);
/* Fault point src-tear-written-page only: the page a channel sent torn
 * since the last call, which the caller must treat as dirtied. */
bool page_out_take_written(struct page_out *o, uint32_t *region_id, uint64_t *page);
/* Page counts summed over the channels (and control), bytes on data channels. */
void page_out_stats(struct page_out *o, struct ckpt_writer_stats *sum, uint64_t *data_bytes);

/* ---- destination side ----------------------------------------------------- */

struct page_in;

/* control: a data channel that fails stops reading it (SHUT_RD), so the
 * control thread wakes up and can tell the source why. read_into: LIVE
 * pages are read straight into target's memory (ckpt_reader_read_into);
 * never where post-copy may change the target. */
struct page_in *page_in_start(struct xport **data, unsigned n,
			      const struct ckpt_image_info *control_info,
			      const struct ckpt_page_target *target, bool read_into,
			      struct xport *control);
/* A failed channel's reason, or NULL. */
const char *page_in_failure(struct page_in *pi);
/* The reason of an ABORT that ended a data stream, or NULL. */
const char *page_in_aborted(struct page_in *pi);
/* Wait until every data stream has reached MARKER round (or ended).
 * Returns 0, or -EBADMSG when one failed (reason in err). */
int page_in_wait_marker(struct page_in *pi, uint64_t round, char *err, size_t errlen);
/* Wait until every data stream committed; 0, or -EBADMSG with err. */
int page_in_wait_end(struct page_in *pi, char *err, size_t errlen);
/* Where pages go from the next record on (post-copy's switch). */
void page_in_set_target(struct page_in *pi, const struct ckpt_page_target *target);
/* Stop: break the channels and join the threads. */
void page_in_stop(struct page_in *pi);

#endif
