/*
 * The source's context, shared by the pre-copy engine (source.c) and its
 * post-copy phase (postcopy_src.c); private to migrate/.
 */
#ifndef MIGRATE_SOURCE_INTERNAL_H
#define MIGRATE_SOURCE_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "ckpt.h"
#include "channels.h"
#include "digests.h"
#include "migrate.h"

#define CHUNK_PAGES		4096u	/* 16 MiB: one dirty-log clear each */
#define STATE_OVERHEAD_MS	MIG_MIN_DOWNTIME_MS	/* state save + load, measured ~1 ms */
#define THROTTLE_PERIOD_US	20000
#define PEEK_EVERY_S		0.25	/* a look at the dirty log mid-round */
#define RATE_WINDOW_S		2.0	/* rates over about this long */
#define RATE_SAMPLES		64	/* at least 0.1 s apart */

struct rate_sample {
	double t;
	uint64_t bytes;			/* on the wire, every channel */
	uint64_t redirtied;		/* source.redirtied then */
	uint64_t data_pages, page_bytes;	/* pages with content written out, their bytes */
};

struct source {
	struct vm *vm;
	struct xport *x;
	const struct mig_params *p;
	struct mig_progress *prog;
	struct ckpt_image_info info;	/* what the streams carry */
	struct ckpt_writer *w;		/* the control stream */
	struct ckpt_writer_opts wo;
	struct page_out *out;		/* where pages go: control or data channels */
	uint64_t *dirty[VM_MAX_REGIONS];
	double t_start, t_pause;
	double bandwidth;		/* bytes/s, measured */
	uint64_t round_bytes_start;
	uint64_t pages_encoded, bytes_encoded;	/* for bytes per dirty page */
	char peer_error[256];
	bool policy_timeout;		/* --timeout ran out, not the link */
	uint64_t dest_round;		/* highest MARKER the destination reached */
	struct page_digests have;	/* a standby's pages from an earlier copy */
	uint64_t matched;		/* pages of round 1 it had already */

	/* Live figures; all owned by the migrating thread (src_account() runs on
	 * it, from tick() too), published under prog->lock. */
	bool tracking;			/* dirty tracking started: peeks may look */
	bool paused;			/* the final round: no peeks */
	uint64_t *carry[VM_MAX_REGIONS];	/* dirty, seen by a peek, not due in
					 * this round: the next round's */
	uint64_t *scratch[VM_MAX_REGIONS];	/* a peek's bitmap */
	uint64_t carry_pages;
	uint64_t redirtied;		/* pages found dirty again after being sent */
	bool peek_failed;		/* the dirty log refused a peek: no more */
	double t_peek;
	unsigned chunk_ri;		/* the chunk being sent: [chunk_first, */
	uint64_t chunk_first, chunk_end;	/* chunk_end) of region chunk_ri; end 0: none */
	uint64_t round_base;		/* pages encoded or matched before this round */
	uint64_t round_runs_base;	/* zero-run pages before this round */
	uint64_t round_holes;		/* memfd holes of this round (round 1) */
	struct rate_sample win[RATE_SAMPLES];
	unsigned win_count;
	double live_rate;		/* bytes/s on the wire, recent */
	double live_dirty;		/* pages/s dirtied again, recent */
	double live_bpp;		/* bytes a page with content, recent */
	double percent;			/* shown so far: never goes back */

	/* Post-copy (postcopy_src.c), from the switch on. */
	struct postcopy_src *pc;
	struct xport *fault;		/* post-copy's fault channel in use: its bytes count */

	bool run_locked;		/* holds p->run_lock: paused by src_pause() */
	pthread_t throttle_thread;
	bool throttle_running;
	atomic_uint throttle_pct;
	atomic_bool throttle_stop;
};

struct postcopy_src;

void src_set_status(struct source *s, enum mig_status st);
void src_fail(struct source *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void src_throttle_stop(struct source *s);
/* The guest paused until src_resume() (or for good), under p->run_lock. */
void src_pause(struct source *s);
/* The guest runs on here: resumed, and p->run_lock let go. */
void src_resume(struct source *s);
/* One message from the destination on the control channel, acted on. */
int src_take_msg(struct source *s, uint16_t *type);
/* Messages already waiting, taken without blocking. */
int src_check_peer(struct source *s);
/* Block until the message want arrives, noting others on the way. */
int src_wait_msg(struct source *s, uint16_t want);
int src_wait_caught_up(struct source *s, uint64_t round);
void src_totals(struct source *s, struct ckpt_writer_stats *ws, uint64_t *bytes);
void src_account(struct source *s);
int src_tick(void *opaque);
/*
 * The memfd's holes (pages never written) and data runs, for pages [page,
 * end) of region ri: where the hole page lies in ends (page itself when it
 * holds data), and where its data run ends. A seek for a hole walks every
 * page of the run before it, so a round walking a long run chunk by chunk
 * seeks once a run, not once a chunk: run remembers the answer (start with
 * run->ri = -1u). Only data is remembered: a hole may be written between a
 * seek and its chunk's dirty-log clear, and is looked at again after it.
 */
struct src_data_run {
	unsigned ri;
	uint64_t first, end;		/* pages [first, end) of region ri hold data */
};
uint64_t src_hole_end(struct src_data_run *run, unsigned ri, const struct vm_region *r,
		      uint64_t page, uint64_t end);
uint64_t src_data_end(struct src_data_run *run, unsigned ri, const struct vm_region *r,
		      uint64_t page, uint64_t end);
int src_sync_dirty(struct source *s, uint64_t *count, bool after_round);
void src_completed(struct source *s);
/* From here on, progress counts against pages due (holes of them). */
void src_begin_count(struct source *s, uint64_t pages, uint64_t holes);

/* between_chunks(): the operator asked for post-copy now. */
#define SRC_SWITCH_NOW	1

/* Post-copy (postcopy_src.c). From the guest running, pre-copy having
 * sent what it sent: pause, hand the guest over, then serve and push the
 * pages still owed. Before GO a failure returns a negative errno and the
 * guest may resume here, as in pre-copy; from GO on the guest never
 * resumes here: 0 once every page arrived, else -ENOLINK (lost in flight:
 * the link stayed down and the caller gave up) with the guest paused. */
int postcopy_src_run(struct source *s, unsigned round);

#endif
