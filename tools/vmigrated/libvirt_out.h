/*
 * The source's job for a libvirt domain, between its two files:
 * libvirt_out.c (the job: our socket, libvirt's migration, the figures)
 * and libvirt_out_relay.c (QEMU's stream out and its return path back,
 * the hold point, the watchdog). Private to tools/vmigrated.
 */
#ifndef LIBVIRT_OUT_H
#define LIBVIRT_OUT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "libvirt_host.h"
#include "libvirt_jobs_int.h"

struct outgoing {
	const struct lvd_config *c;
	const struct lvd_outgoing *o;
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
	/* the migration thread's result */
	atomic_bool mig_done;
	int mig_ret;
	char mig_err[600];
};

/* The job's first failure (later ones are dropped: the first says why). */
void outgoing_fail(struct outgoing *g, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
bool outgoing_failed(struct outgoing *g);

/* QEMU's stream (socket q) to the session x as records and events, and the
 * return path back, until both QEMU closed its end and the destination
 * said END, or something failed (then in g->error; QEMU's socket is shut). */
void lvd_relay_out(struct outgoing *g, int q, struct xport *x);

#endif
