/*
 * The source's job for a libvirt domain, between its two files:
 * libvirt_out.c (the job: our socket, libvirt's migration, the figures)
 * libvirt_out_relay.c (QEMU's stream out and its return path back, the
 * hold point, the watchdog) and libvirt_out_channels.c (the pages' data
 * channels). Private to tools/vmigrated.
 */
#ifndef LIBVIRT_OUT_H
#define LIBVIRT_OUT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "downtime_ramp.h"
#include "libvirt_host.h"
#include "libvirt_jobs_int.h"
#include "peer.h"

struct outgoing {
	const struct lvd_config *c;
	const struct lvd_outgoing *o;
	/* What the pages get: o->compress, but lz4 for zstd to a destination
	 * that reads no format 1.2. Set before the job's threads start. */
	char compress[8];
	pthread_mutex_t lock;
	/* under lock */
	uint64_t stream_bytes, wire_bytes, rp_bytes;
	uint64_t pages, zero_pages, device_bytes;
	uint64_t record_bytes, lz4_pages, raw_pages;	/* the encoder's */
	struct lv_job_stats lv;		/* libvirt's, while it runs */
	char status[16];
	char error[700];
	double started;
	bool done;
	bool stalled;			/* the watchdog gave the job up */
	/* QEMU's downtime limit: the ramp is the figures thread's once the
	 * job runs; the limit before ours comes back if the domain stays */
	struct lvd_ramp ramp;
	uint64_t downtime_before;
	bool downtime_set;
	/* the migration thread's result */
	atomic_bool mig_done;
	int mig_ret;
	char mig_err[600];
};

/* The job's first failure (later ones are dropped: the first says why). */
void outgoing_fail(struct outgoing *g, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
bool outgoing_failed(struct outgoing *g);

/* QEMU's stream (socket q) to the session as records and events (the
 * records over its data channels when it has any), and the return path
 * back, until both QEMU closed its end and the destination said END, or
 * something failed (then in g->error; QEMU's socket is shut). */
void lvd_relay_out(struct outgoing *g, int q, struct peer_session *ps);

/* The data channels: one thread and queue each, records dealt round robin
 * (the k-th RECORDS message on channel k mod n). A failed send fails the
 * job (outgoing_fail) and cancels that channel's queue. NULL: no memory
 * or no thread. */
struct lvd_data_out;
struct lvd_data_out *lvd_data_out_start(struct outgoing *g, struct xport **x, unsigned n);
unsigned lvd_data_out_count(const struct lvd_data_out *d);
/* The reader's: the next RECORDS message onto its channel's queue (waits
 * while it is full); 0 or -ECANCELED, -ENOMEM. */
int lvd_data_out_push(struct lvd_data_out *d, const struct iovec *iov, int iovcnt);
/* RECORDS payload bytes sent over all channels, for the ACK. */
uint64_t lvd_data_out_records_sent(struct lvd_data_out *d);
/* The last frame sent on any channel (CLOCK_MONOTONIC ns), for the watchdog. */
uint64_t lvd_data_out_progress_ns(struct lvd_data_out *d);
/* Bytes on the data connections so far. */
uint64_t lvd_data_out_bytes_sent(struct lvd_data_out *d);
/* Give up: the queues cancelled (a reader waiting on one returns), the
 * sockets shut (a thread waiting in a send returns); NULL is fine. */
void lvd_data_out_cancel(struct lvd_data_out *d);
/* Cancel, join the threads and free. */
void lvd_data_out_stop(struct lvd_data_out *d);

#endif
