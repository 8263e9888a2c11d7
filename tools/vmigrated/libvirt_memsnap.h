/*
 * QEMU's stream of a libvirt domain by way of libvirt's own job: its
 * external memory snapshot (virDomainSnapshotCreateXML, memory only, no
 * metadata, live or paused by libvirt) into a FIFO of ours, libvirt's save
 * image header checked and its XML skipped, the stream handed on as it
 * comes. libvirt keeps the job, the pause and the resume.
 */
#ifndef LIBVIRT_MEMSNAP_H
#define LIBVIRT_MEMSNAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "libvirt_host.h"

struct lvmem_job {
	struct lv_host *h;
	const char *name;
	const char *dir;		/* the FIFO's directory goes in here: one libvirtd sees */
	bool live;			/* VIR_DOMAIN_SNAPSHOT_CREATE_LIVE */
	/* QEMU's stream in order, any chunk size; nonzero stops it (libvirt's
	 * job then fails and the domain runs on) */
	int (*feed)(void *opaque, const void *buf, size_t len);
	void *opaque;
	/* results */
	bool stream_began;		/* some of QEMU's stream reached feed */
	uint64_t stream_bytes;
	double t_start, t_eof, t_done;	/* CLOCK_MONOTONIC seconds: called, QEMU's stream
					 * ended, libvirt's job returned */
};

/*
 * Runs libvirt's job to its end; the FIFO and its directory are gone
 * afterwards whatever happened. 0 once libvirt reported success and the
 * save image was whole (QEMU's stream to its end, then libvirt's header
 * marked complete); else -errno with err (-ENOTSUP: libvirt compresses).
 * A failure with !stream_began happened before QEMU's stream: another way
 * of capturing may be tried.
 */
int lvmem_capture(struct lvmem_job *j, char *err, size_t errlen);

#endif
