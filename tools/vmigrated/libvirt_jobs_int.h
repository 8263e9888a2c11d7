/*
 * What the parts of vmigrated's libvirt jobs share (libvirt_jobs.c: the
 * service's side; libvirt_out.c: the source's job; libvirt_in.c: the
 * destination's; libvirt_frames.c: the frames between the two services).
 * Private to tools/vmigrated.
 */
#ifndef LIBVIRT_JOBS_INT_H
#define LIBVIRT_JOBS_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>
#include <sys/un.h>

#include <json-c/json.h>

#include "libvirt_jobs.h"
#include "transport.h"

/* Frame types on the session (libvirt_frames.c says what each carries). */
#define LVD_FRAME_DATA		1
#define LVD_FRAME_END		2
#define LVD_FRAME_ABORT		3
#define LVD_FRAME_EVENT		4
#define LVD_FRAME_RECORDS	5
#define LVD_FRAME_ACK		6
#define LVD_FRAME_ON_DATA	7
/* ON_DATA at least every this many records a data channel */
#define LVD_ON_DATA_EVERY	2
#define LVD_ACK_LEN	16
#define LVD_FRAME_MAX	(256u << 10)
#define LVD_WHY_MAX	512

double lvd_now(void);
/* A job name or a domain name that is safe in a path. */
bool lvd_safe_word(const char *s);

/* jobs_dir/JOB.json, written whole (temp file, rename), and read back. */
void lvd_write_status(const char *jobs_dir, const char *job, struct json_object *o);
struct json_object *lvd_read_status(const char *jobs_dir, const char *job);
/* jobs_dir/JOB.cancel: the operator cancelled the job */
void lvd_cancel_path(const char *jobs_dir, const char *job, char *path, size_t len);
/* The job's first figures, written by the service before it replies. */
void lvd_announce(const struct lvd_config *c, const struct lvd_outgoing *o);

/* One frame; 0 or -errno (the session's sticky error). */
int lvd_frame_send(struct xport *x, uint32_t type, const void *buf, uint32_t len);
/* A frame's header: 0 or -errno, -EBADMSG for a frame this protocol does
 * not have in that direction (from_source: EVENT, RECORDS, ON_DATA, END, ABORT;
 * else DATA, ACK, END, ABORT), or of a length out of its bounds. */
int lvd_frame_head(struct xport *x, bool from_source, uint32_t *type, uint32_t *len);
/* What a failed lvd_frame_head or receive says, on_close for the peer's end. */
const char *lvd_frame_error(int ret, const char *on_close);

/* All of buf into a socket; 0 or -errno. */
int lvd_write_all(int fd, const void *buf, size_t len);
int lvd_unix_addr(struct sockaddr_un *a, const char *path);

#endif
