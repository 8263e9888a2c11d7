/*
 * Checkpoints and restores of libvirt domains (vm/libvirt/qemu_ckpt.h for
 * the files, libvirt_save_image.h for what a restore hands libvirt).
 *
 * snapshot: QEMU's migration stream through a pipe of ours (QMP getfd and
 * migrate "fd:" through libvirt's monitor passthrough, QEMU's capabilities
 * and parameters saved before and put back after), parsed and written page
 * by page into a file that gets its name only once it is complete; the
 * domain paused for it (not live) or stopped by QEMU at the end (live),
 * and running again as soon as QEMU's stream ended, or on any failure.
 * restore: the chain read and checked, a libvirt save image synthesised
 * into a FIFO that virDomainRestoreFlags reads.
 */
#ifndef LIBVIRT_SNAPSHOT_H
#define LIBVIRT_SNAPSHOT_H

#include <json-c/json.h>

#include "libvirt_jobs.h"

/* The request ({"name","file","live","incremental","force","key_file",
 * "expect_parent"}) carried out; the reply, ok or the error. Blocks until
 * done: the service runs it in a child of its own. */
struct json_object *lvsnap_snapshot(const struct lvd_config *c, struct json_object *req);
/* {"file","key_file","paused"}: the domain of a checkpoint runs again. */
struct json_object *lvsnap_restore(const struct lvd_config *c, struct json_object *req);

#endif
