/*
 * Private to the guest process (worker.c, worker_repl.c): its one state,
 * W, shared by its threads under W.lock where marked.
 */
#ifndef WORKER_INTERNAL_H
#define WORKER_INTERNAL_H

#include <pthread.h>

#include "migrate.h"
#include "peer.h"
#include "replicate.h"
#include "arbiter.h"
#include "snapshot.h"
#include "worker.h"

enum wstate { W_INCOMING, W_RUNNING, W_PAUSED, W_MIGRATING, W_UNCERTAIN, W_GONE,
	      W_STANDBY, W_FENCED, W_LOST };

extern const char *const worker_state_names[];

struct worker {
	struct worker_spec spec;
	char sock_path[600];
	struct vm *_Atomic events_vm;	/* W.vm for the vCPU threads' callbacks */
	int listen_fd;
	int name_fd;			/* the name lock; -1 once the guest left */
	double started;
	double gone_at;			/* under lock: when the guest left (W_GONE) */
	pthread_mutex_t lock;
	struct vm *vm;			/* under lock */
	enum wstate state;		/* under lock */
	bool exit_requested;		/* under lock */

	char incoming_job[64];		/* the job that brought the guest here */
	int handover_fd;		/* the armed handover record, or -1 */
	char incoming_from[64];		/* the source's address */
	struct mig_progress inprog;	/* the receiving side's figures (own lock) */
	struct peer_session *in_session;	/* under lock: the incoming job's
					 * channels, while it receives */
	double in_started;

	/* The current or last migration job. */
	char job[64];
	struct mig_params params;
	struct mig_progress prog;
	struct peer_session mig_session;	/* control and data channels of the job */
	unsigned mig_channels;
	bool mig_rdma;			/* data channels over RDMA */
	bool mig_postcopy;		/* a fault channel too: post-copy may switch */
	int mig_fd;			/* dialled socket, before the peer protocol */
	struct peer_config mig_peer;	/* the service's peer settings, as of this job */
	char dest_host[256];
	char dest[300];			/* HOST[:PORT] as the operator gave it */
	double uncertain_since;		/* under lock: when the handover became uncertain */
	pthread_t mig_thread;
	bool mig_started;
	int mig_result;			/* under lock once done */
	bool mig_done;			/* under lock */

	/* Replication, primary side: the job runs on repl_thread, its figures
	 * and held output in rprog (its own lock). */
	bool repl_active;		/* under lock */
	bool repl_keep_trying;		/* a lost or unreachable standby is replaced,
					 * not given up (once protected, or after a
					 * takeover) */
	bool stale_marked;		/* the last standby of this token was marked
					 * stale: a new one needs a new token */
	char handover[256];		/* a planned failover's outcome */
	uint64_t handover_token;	/* the new owner's, 0 when it did not happen */
	struct peer_arbiter arb;	/* the job's arbiter ("" = none); a standby's:
					 * its primary's, and that primary's lineage */
	char repl_lineage[PEER_LINEAGE_LEN + 1];	/* this process's, once it
					 * replicated (repl_job_start): its standbys
					 * know it by that */
	struct repl_arbiter *arbiter;	/* the replication job's; its lease in rprog */
	struct repl_params rparams;
	struct repl_progress rprog;
	const char *repl_code;		/* under rprog.lock: why the job failed
					 * (ipc.h), NULL while it has not */
	double repl_t0;			/* when the replication job began */
	pthread_t repl_thread;
	bool repl_started;		/* repl_thread to be joined */
	bool repl_ran;			/* a replication job ran: its figures stay */
	int repl_result;		/* under lock once !repl_active */
	/* Standby side: figures of the epochs applied (under lock). */
	struct repl_standby_stats standby;
	struct xport *standby_link;	/* under lock: the primary's epochs come on
					 * it; NULL once the standby's run ended */
	bool standby_orphaned;		/* under lock: the run ended, its primary
					 * lost; the copy stays paused here */
	int output_fd;			/* guests/NAME.output: released output */
	int reply_fd;			/* sent with the reply to the current request */

	/* The last checkpoint, parent of the next incremental; dirty tracking
	 * stays on from it. Under lock. */
	bool snap_base_valid;
	struct snap_result snap_base;

	/* A lazy restore still loading memory behind the running guest (NULL
	 * once every page is in; under lock). Until then, pages not yet loaded
	 * are holes in the memfd that read as zero: nothing may copy memory. */
	struct snap_lazy *lazy;
	bool lazy_failed;		/* under lock: memory is incomplete for good */
	pthread_t lazy_thread;
	bool lazy_started;

	/* Post-copy recovery (worker_postcopy.c), both ends; under lock. */
	bool recover_now;		/* migrate-recover: try again at once */
	char recover_dest[300];		/* HOST[:PORT] it gave ("": the job's) */
	struct xport *pc_links[PEER_MAX_DATA + 2];	/* the last recovery's, to close */
	unsigned pc_nlinks;
	struct xport *pc_live[PEER_MAX_DATA + 2];	/* destination: the links in use */
	unsigned pc_nlive;
	bool pc_recovering;		/* destination: waiting for the source */
	bool pc_watch_stop;		/* destination: the job is over */
	pthread_t pc_watch;
	bool pc_watching;		/* the receiving thread's: pc_watch to join */
};

extern struct worker W;

/* A guest arriving: its peer session and how to receive it. */
struct incoming {
	struct peer_session session;
	struct mig_dest_opts opts;
	struct peer_config peer;
};

double worker_now(void);
/* Keep a finished job's record (rec, taken: job, guest, direction, kind,
 * peer, stats, and what else it has) in the host's job log, with the time
 * it finished and, when it did not succeed, its code (ipc.h). */
void worker_keep_job(struct json_object *rec, const char *code);
/* Reset W for guest s: its name (-EBUSY when held), socket and output. */
int worker_setup(const struct worker_spec *s, char *err, size_t errlen);
/* Open the job's peer session (op: migrate-in or replicate-in) over
 * W.mig_fd; on failure the job is over and the guest runs on here. */
int worker_dial_job(const char *op);

/* worker_postcopy.c: post-copy's recovery. The source's reconnect
 * callback (mig_params.reconnect) and migrate-recover; the destination's
 * (mig_dest_opts.reconnect, opaque: the struct incoming), the watcher of
 * its kept listener, and the answer to a source's postcopy-ask; closing
 * what recoveries opened, at the job's end. */
int worker_postcopy_redial(void *opaque, struct mig_links *out);
struct json_object *worker_postcopy_recover(struct json_object *req);
int worker_postcopy_accept(void *opaque, struct mig_links *out);
int worker_postcopy_watch(struct incoming *in);
_Noreturn void worker_postcopy_answer(const struct worker_spec *s, const struct peer_hello *h,
				      struct xport *x);
void worker_postcopy_close(void);
/* The destination's job ended: no more watching (before its links close). */
void worker_postcopy_unwatch(void);

/* worker_repl.c: replication jobs. */
/* Start the replication job set up in W (under W.lock). */
int repl_job_start(void);
struct json_object *repl_job_status(void);
struct json_object *repl_job_stop(void);
struct json_object *repl_job_failover(void);
/* A fenced copy's RAM for a new standby of this host (reply_fd), or, with
 * no arbiter, a standby's for a new sync proven to come from its primary
 * (req's lineage); then this process ends. */
struct json_object *repl_give_copy(struct json_object *req);
/* The standby side, once in sync: apply epochs; take over when the primary
 * is lost or hands the guest over. */
void repl_follow_epochs(struct incoming *in, struct vm *vm);
/* A new standby arriving where a fenced copy of the guest, or a standby
 * of the same primary (lineage: the new sync's hello's), still holds its
 * name: take that copy's RAM (*base_fd) and then the name. */
int repl_take_fenced_copy(const struct worker_spec *s, const char *lineage, int *base_fd,
			  char *err, size_t errlen);

#endif
