/*
 * Continuous replication: a standby copy of a running guest on a second
 * host, a few milliseconds behind. After an initial live synchronisation
 * (migrate/ with mig_params.standby), the primary runs in epochs: pause,
 * copy the dirty pages and the state into an epoch, resume, ship it; the
 * standby takes an epoch in completely, checks its seal, applies it at once
 * (never half of one) and acknowledges it. What the guest emits is held on
 * the primary until the epoch that produced it is acknowledged (Remus's
 * output commit), so a failover loses nothing the outside saw.
 *
 * Both ends work over the control channel of the migration that made the
 * standby; the stream is a ckpt-format stream of its own (FORMAT.md: EPOCH
 * markers and seals), the acknowledgements fixed 24-byte messages back.
 */
#ifndef REPLICATE_H
#define REPLICATE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "lease.h"
#include "transport.h"
#include "vm.h"

enum repl_state {
	REPL_SYNCING,		/* initial synchronisation (a live pre-copy) */
	REPL_PROTECTED,		/* epochs acknowledged in time */
	REPL_DEGRADED,		/* the standby falls behind: epochs wait for it */
	REPL_STOPPED,		/* ended cleanly on both sides */
	REPL_FAILED,		/* the standby is lost: unprotected */
	REPL_FENCED,		/* the lease ran out: the guest is stopped here for good */
	REPL_SWITCHED,		/* handed to the standby (planned failover): stopped
				 * here for good */
	REPL_UNPROTECTED,	/* the standby is lost; the guest runs on here while
				 * a new one is synchronised */
};

const char *repl_state_name(enum repl_state s);

struct repl_params {
	unsigned epoch_ms;	/* fixed epoch length; 0 = as short as the link allows */
	uint64_t token;		/* fencing token, carried in every epoch (0: no arbiter) */
	bool compress;		/* LZ4 on epoch pages (they are encoded after resuming) */
	unsigned max_inflight;	/* epochs sent but not acknowledged; 0 = default (4) */
	/* With an arbiter, when the standby is lost: make sure it can never
	 * take the guest over (its epochs fall behind what we release from
	 * now on); 0 when done. Until it returns 0 no output leaves. NULL:
	 * nothing to do (no arbiter: no standby takes over by itself). */
	int (*standby_lost)(void *opaque);
	void *opaque;
};

/* What replicate status shows; figures over the last REPL_WINDOW epochs. */
#define REPL_WINDOW	256
struct repl_stats {
	enum repl_state state;
	uint64_t token;
	uint64_t epochs;			/* sealed and sent */
	uint64_t acked_epoch;			/* last acknowledged */
	double epoch_rate;			/* per second, over the window */
	double pause_p50_ms, pause_p99_ms;	/* vCPUs paused per epoch */
	uint64_t bytes_per_epoch;		/* mean over the window */
	uint64_t bytes_sent;
	double lag_ms;				/* last epoch: pause to acknowledgement */
	uint64_t held_output_bytes;		/* emitted, waiting for their epoch */
	uint64_t released_output_bytes;
	double sync_s;				/* the initial synchronisation */
	char error[256];
};

/* Guest output held until its epoch is acknowledged, then released
 * through a callback (with the token and the epoch that covers it). */
typedef void (*repl_release_fn)(void *opaque, uint64_t token, uint64_t epoch,
				const char *buf, size_t len);

/* Shared between the replicating thread and whoever watches or steers it. */
struct repl_progress {
	pthread_mutex_t lock;
	struct repl_stats stats;	/* under lock */
	atomic_bool stop;		/* set by anyone: end replication cleanly */
	atomic_bool switch_over;	/* set by anyone: a last epoch with the guest
					 * stopped for good, then the standby takes it */
	repl_release_fn release;	/* set before the run */
	void *release_opaque;
	/* With an arbiter: the guest runs and its output leaves only while
	 * this is valid (NULL: no arbiter). Read by any thread: the owner sets
	 * it NULL, waits a grace period, then frees it (repl_drop_lease). */
	struct repl_lease *_Atomic lease;
	/* Serialises the epochs' pause/resume with the fence: once fenced,
	 * nothing resumes the guest. */
	pthread_mutex_t run_lock;
	atomic_bool fenced;		/* set under run_lock; read anywhere (vCPU
					 * threads emit output while an epoch holds
					 * run_lock and waits for them to pause) */
	bool abandoned;			/* replicating thread's: the run gave its
					 * standby up at fault point
					 * repl-abandon-standby, the link to be left
					 * open (tests) */
	/* output not yet released: under lock */
	struct repl_held *held, **held_tail;
	uint64_t open_epoch;		/* under lock: the epoch output goes into */
	/* window of per-epoch figures: owned by the replicating thread */
	double pause_ms[REPL_WINDOW], sealed_at[REPL_WINDOW];
	uint64_t epoch_bytes[REPL_WINDOW];
};

void repl_progress_init(struct repl_progress *p, repl_release_fn release, void *opaque);
void repl_progress_destroy(struct repl_progress *p);
void repl_progress_get(struct repl_progress *p, struct repl_stats *out);
/* The lease ran out (lease.h's fence callback): pause vm for good and
 * release no more output. Any thread. */
void repl_fence(struct repl_progress *p, struct vm *vm, const char *why);
/* May the guest run and its output leave? (No arbiter: always.) */
bool repl_may_run(struct repl_progress *p);
/* Hand the lease back: no more checks against it, then it is revoked
 * (while still valid) and freed. Returns what revoking returned. */
int repl_drop_lease(struct repl_progress *p, char *err, size_t errlen);
/* The guest emitted buf (any thread): held until its epoch is acknowledged,
 * or released at once when no replication runs. */
void repl_output(struct repl_progress *p, const char *buf, size_t len);
/* Hold output from now on: call before the initial sync, whose last pause
 * is the image the standby starts from; what the guest emits after it
 * leaves with epoch 1. repl_primary_run releases it, or, when no
 * replication follows (the sync failed), repl_output_release_all(). */
void repl_output_hold(struct repl_progress *p);
void repl_output_release_all(struct repl_progress *p);

/*
 * Primary: run epochs over x (the control channel of the standby's sync)
 * until prog->stop (then a clean end: 0) or the standby is lost (-errno,
 * the guest runs on here, unprotected). vm runs throughout, dirty tracking
 * on (left on as it came). On prog->switch_over the last epoch says SWITCH
 * and leaves vm paused: once the standby acknowledged it, prog is fenced
 * (nothing here resumes the guest or releases output again), the state is
 * REPL_SWITCHED and 0 returned; the caller hands the ownership over
 * (repl_drop_lease). Not acknowledged: as a lost standby, vm resumed.
 */
int repl_primary_run(struct vm *vm, struct xport *x, const struct repl_params *p,
		     struct repl_progress *prog);

struct repl_standby_stats {
	uint64_t applied_epoch;		/* under the caller's apply lock */
	uint64_t token;
	uint64_t applied_pages;
	double last_apply_ms;
	bool stopped_by_primary;	/* a clean end, not a lost link */
	bool handed_over;		/* the last epoch applied said SWITCH: the
					 * primary stopped for good; take over */
	bool damaged;			/* an epoch failed half applied: the image
					 * is no epoch's, it must never run */
	char error[256];
};

/*
 * Standby: apply the epochs read from x to vm (paused) until the stream
 * ends. Each epoch is applied under *apply_lock, whole, once sealed, so a
 * holder of the lock sees one consistent image. Returns 0 when the
 * primary ended it cleanly, else -errno (link lost, or a damaged or
 * fenced-off epoch refused); vm holds the last applied epoch either way,
 * unless an epoch failed half applied (st->damaged: -EIO).
 * silence_ms > 0: a primary silent that long is lost (-ETIMEDOUT).
 * st carries applied_epoch and token from run to run; its outcome fields
 * (stopped_by_primary, handed_over, error) are this run's.
 */
int repl_standby_run(struct vm *vm, struct xport *x, pthread_mutex_t *apply_lock,
		     int silence_ms, struct repl_standby_stats *st);

#endif
