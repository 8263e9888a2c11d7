/*
 * Pre-copy live migration: both ends of the protocol over one channel.
 * The source sends a ckpt-format stream (rounds of dirty pages, then the
 * state) and the destination answers on the same channel with small
 * control messages. See protocol.c for the switchover handshake that keeps
 * exactly one copy of the guest running.
 */
#ifndef MIGRATE_H
#define MIGRATE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "transport.h"
#include "vm.h"

enum mig_compress {
	MIG_COMPRESS_AUTO,		/* LZ4 while it pays, by measured costs */
	MIG_COMPRESS_LZ4,		/* LZ4 on every page, raw where it does not shrink */
	MIG_COMPRESS_OFF,
	MIG_COMPRESS_ZSTD,		/* zstd on every page (format 1.2: the
					 * destination must read it), raw where it
					 * does not shrink */
};

/* When pre-copy hands over to post-copy (--postcopy, --postcopy-after). */
enum mig_postcopy {
	MIG_POSTCOPY_OFF,		/* pre-copy only; a manual switch still may */
	MIG_POSTCOPY_PURE,		/* switch at once, before round 1 */
	MIG_POSTCOPY_AFTER,		/* after postcopy_after rounds */
	MIG_POSTCOPY_AUTO,		/* once the next round would not fit and rounds
					 * stopped shrinking */
};

/* A migration's connections: ordered control, post-copy's fault channel,
 * and the parallel data channels. */
struct mig_links {
	struct xport *control;
	struct xport *fault;
	struct xport *data[16];
	unsigned nr_data;
};

struct mig_params {
	uint64_t max_downtime_ms;	/* default 300, like QEMU */
	uint64_t bandwidth;		/* bytes/s, 0 = unlimited */
	bool auto_converge;
	double timeout_s;		/* 0 = none */
	bool force_on_timeout;		/* else cancel on timeout */
	enum mig_compress compress;	/* default auto */
	int io_timeout_ms;		/* a silent peer fails the migration after this */
	/* Data channels, opened by the caller: pages go there in parallel,
	 * the channel given to mig_source_run keeps the ordered control. */
	struct xport *const *data_channels;
	unsigned nr_data_channels;
	/* Replication's initial synchronisation: once the destination has
	 * loaded the guest it keeps its copy paused, as a standby, and the
	 * guest resumes here; dirty tracking stays on for the epochs that
	 * follow on the same control channel (replicate/). */
	bool standby;
	/* Post-copy needs fault_channel, its own connection: the destination
	 * asks for the pages its guest touches there and the answers come
	 * back on it, never queued behind the background push and never
	 * under the bandwidth cap. Without it no switch happens. */
	enum mig_postcopy postcopy;
	unsigned postcopy_after;	/* rounds, MIG_POSTCOPY_AFTER */
	struct xport *fault_channel;
	/* After the switch a link failed (status postcopy-paused): called
	 * until it gives new links (0; they stay the caller's, to close
	 * after the run, as the first ones do) or gives up (< 0: the guest is lost in flight). NULL: give
	 * up at once. */
	int (*reconnect)(void *opaque, struct mig_links *out);
	void *reconnect_opaque;
	/* Held from each pause of the guest to its resume (auto-converge's
	 * slices, the switchover to the guest's going on here), when others
	 * pause it too (replication's epochs, a verify): pauses do not nest,
	 * so without it one would resume the guest inside another's pause. */
	pthread_mutex_t *run_lock;
	/* The destination reads format 1.1's LIVE records (it said so when
	 * it welcomed us; one of an earlier version reads 1.0 only, and would
	 * refuse the stream). Default true, for a destination of this build. */
	bool peer_reads_live;
};

/* "off", "pure" (or "now"), "auto" or a number of rounds, into p. */
int mig_postcopy_parse(const char *s, struct mig_params *p);

void mig_params_default(struct mig_params *p);

/* The least downtime the switchover can have (the state's save and load):
 * a smaller --max-downtime is never met, so pre-copy would never end. */
#define MIG_MIN_DOWNTIME_MS	2

/* Parameters a migration can finish with: 0, or -EINVAL with why in err
 * (a downtime limit below MIG_MIN_DOWNTIME_MS, unless a forced timeout
 * ends pre-copy). mig_source_run does not check: tests use such limits to
 * keep a migration going. */
int mig_params_check(const struct mig_params *p, char *err, size_t errlen);

/*
 * The handover bound (protocol.c): the destination runs the guest only if
 * GO reaches it within MIG_GO_BOUND_MS of its LOADED, by its own clock; the
 * source sends GO only within half of that after LOADED reached it.
 */
#define MIG_GO_BOUND_MS	5000
/* "auto", "lz4", "zstd" or "off"; -EINVAL for anything else. */
int mig_compress_parse(const char *name, enum mig_compress *out);
const char *mig_compress_name(enum mig_compress c);
/* What a destination that reads record format 1.peer_minor can take:
 * zstd pages need 1.2, so to an older one they go as LZ4, which every
 * version reads. True when *c changed, with why in why (for a warning). */
bool mig_compress_fit_peer(enum mig_compress *c, unsigned peer_minor, char *why, size_t len);
/* The choices, for an error that lists them. */
#define MIG_COMPRESS_CHOICES	"auto, lz4, zstd or off"

enum mig_status {
	MIG_SETUP,
	MIG_ACTIVE,		/* pre-copy rounds */
	MIG_DEVICE,		/* guest paused, final round and state */
	MIG_COMPLETED,		/* guest runs on the destination */
	MIG_FAILED,		/* guest still runs on the source */
	MIG_CANCELLED,		/* guest still runs on the source */
	MIG_UNCERTAIN,		/* switchover began; no copy may be resumed blindly */
	MIG_POSTCOPY_ACTIVE,	/* the guest runs there; pages still come from here */
	MIG_POSTCOPY_PAUSED,	/* post-copy with the link down: both ends wait */
	MIG_LOST,		/* post-copy failed for good: the guest is lost in flight */
};

const char *mig_status_name(enum mig_status s);

/* The figures operators know from QEMU's query-migrate, plus progress. */
struct mig_stats {
	enum mig_status status;
	uint64_t total_time_ms, setup_time_ms, downtime_ms, expected_downtime_ms;
	uint64_t transferred_bytes, ram_total_bytes;
	uint64_t zero_pages, normal_pages;
	uint64_t compressed_pages;			/* of normal_pages, sent compressed */
	uint64_t zstd_pages;				/* of compressed_pages, as zstd */
	char compress[8];				/* a source's: what the pages get (zstd
							 * asked of a destination that cannot
							 * read it is lz4); "" at a destination */
	uint64_t matched_pages;				/* not sent: a standby had them */
	uint64_t dirty_sync_count, dirty_pages_rate;	/* pages per second */
	double mbps;					/* megabits per second */
	unsigned throttle_percentage;
	unsigned round;
	uint64_t round_pages, round_done;		/* pages due / encoded of this round */
	uint64_t remaining_pages;			/* QEMU's ram remaining, in pages: the
							 * rest of this round and those dirtied
							 * again since they were sent */
	double eta_s;					/* until the guest runs there; -1: unknown
							 * (dirtying outpaces the link) */
	double percent;					/* of the job's expected time: grows, 100
							 * only once completed */
	/* Post-copy: bytes before the pause, in it, and after the switch;
	 * the destination's page requests and how long its guest waited for
	 * the pages it asked for (p50 and p99 of first touches). */
	uint64_t precopy_bytes, downtime_bytes, postcopy_bytes;
	uint64_t postcopy_requests;
	double fault_p50_ms, fault_p99_ms;
	unsigned recoveries;				/* post-copy links re-made */
	uint64_t torn_pages;				/* destination: pages that came torn
							 * (written while read) and again whole */
	char error[256];
};

/* Shared between the migrating thread and whoever watches or steers it. */
struct mig_progress {
	pthread_mutex_t lock;
	struct mig_stats stats;			/* under lock */
	atomic_bool cancel;			/* set by anyone: stop, resume on the source
						 * (refused once post-copy began) */
	atomic_bool postcopy_now;		/* set by anyone: switch to post-copy at the
						 * next chunk (needs a fault channel) */
	struct xport_bucket bandwidth;		/* the cap over all channels; its rate
						 * may change while it runs */
};

void mig_progress_init(struct mig_progress *p);
void mig_progress_get(struct mig_progress *p, struct mig_stats *out);

/*
 * Migrate vm out over x. Returns 0 when the guest runs on the destination
 * (vm is left paused and must be destroyed), -ECANCELED or another negative
 * errno when it failed and the guest runs on the source again, or
 * -EINPROGRESS when the outcome is uncertain (vm is left paused). With
 * p->standby, 0 means the destination holds a standby copy and vm runs on
 * here, dirty tracking on.
 */
int mig_source_run(struct vm *vm, struct xport *x, const struct mig_params *p,
		   struct mig_progress *prog);

struct mig_dest_opts {
	enum vm_dirty_mode dirty_mode;
	struct vm_events events;
	int io_timeout_ms;
	/* Called once the configuration arrived, before any page: may refuse
	 * (a guest name already taken, not enough memory) with an error. */
	int (*admit)(void *opaque, const struct ckpt_image_info *info,
		     const struct vm_kvm_config *cfg, char *err, size_t errlen);
	void *opaque;
	/* The destination ends of the source's data channels, in order. */
	struct xport *const *data_channels;
	unsigned nr_data_channels;
	/* Receive a standby (mig_params.standby on the source): after LOADED
	 * wait for STANDBY, never GO, and return the guest paused. */
	bool standby;
	/* A standby only: RAM of an earlier copy of this guest (the old
	 * primary's, after a failover) to build on. Its pages' digests go to
	 * the source, which sends only the pages that differ. Ignored (a
	 * full sync) when its size is not the guest's. The caller keeps fd. */
	bool has_base;
	int base_memfd;
	/* After LOADED: the decision, made durable before it takes effect:
	 * run = true just before the guest is resumed (a failure discards it
	 * instead), run = false when it is discarded. The source's operator
	 * asks for it after an uncertain handover (protocol.c). */
	int (*decide)(void *opaque, bool run, const char *why);
	/* When set, the figures so far are copied there (under its lock) at
	 * each step and at the end, for whoever watches the job. */
	struct mig_progress *progress;
	/* Post-copy's fault channel (mig_params.fault_channel's other end):
	 * without it a source's switch is refused. After the switch a failed
	 * link calls reconnect (status postcopy-paused) until it gives new
	 * links; < 0: the source is gone, and with it the pages still owed. */
	struct xport *fault_channel;
	int (*reconnect)(void *opaque, struct mig_links *out);
	/* Read the stream as a destination of format 1.0 (1.1) would (tests:
	 * one of an earlier version, which must be sent no LIVE records, or
	 * no zstd pages). */
	bool only_1_0;
	bool only_1_1;
};

/* Receive a guest over x. Returns it running, or NULL with err set; on
 * NULL nothing of it runs here. */
struct vm *mig_dest_run(struct xport *x, const struct mig_dest_opts *o,
			struct mig_stats *st, char *err, size_t errlen);

/* One JSON object with the stats, QEMU's names. */
int mig_stats_json(const struct mig_stats *s, char *buf, size_t len);

#endif
