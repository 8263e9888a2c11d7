/*
 * Handover decisions: one small JSON file per guest name holding the last
 * job decided here ({"job","decision","why"}) in one sector, so a crash
 * leaves the old decision or the new one, never none: replaced atomically
 * (temp file, fsync, rename, fsync of the directory), or, once an incoming
 * job armed it, rewritten in place and fdatasync'd.
 *
 * Answering, in this order (a process writes "run" before it resumes the
 * guest and holds the name while the guest is here, so each step is safe
 * against the process moving on meanwhile):
 *   the record names the job            -> what it says
 *   a process holds the name for the job -> deciding, runs, or silent
 *   otherwise                           -> never ran: no process of the job
 *                                          is left and it decided nothing
 */
#include "handover.h"

#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fault.h"
#include "guest_lock.h"
#include "ipc.h"
#include "log.h"
#include "peer.h"
#include "statefile.h"
#include "worker.h"

static void record_path(const char *dir, const char *name, char *out, size_t len)
{
	snprintf(out, len, "%s/%s.handover", dir, name);
}

/*
 * A record is one JSON object padded with blanks to RECORD_BYTES, a
 * sector: rewritten in place, it reads as the old decision or the new one,
 * never a mix (and an unreadable one as none: the guest runs only after
 * the write returned).
 */
#define RECORD_BYTES	512

/* The record's bytes: the JSON, why shortened until it fits, blanks, '\n'. */
static void render(const char *job, const char *decision, const char *why,
		   char out[RECORD_BYTES])
{
	size_t why_len = strlen(why);

	for (;;) {
		struct json_object *o = json_object_new_object();
		const char *s;
		size_t n;

		if (job) {
			json_object_object_add(o, "job", json_object_new_string(job));
			json_object_object_add(o, "decision", json_object_new_string(decision));
			json_object_object_add(o, "why", json_object_new_string_len(why, (int)why_len));
		}
		s = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
		n = strlen(s);
		if (n < RECORD_BYTES || !why_len) {
			if (n >= RECORD_BYTES) {	/* no room even without why: no record */
				s = "{}";
				n = 2;
			}
			memset(out, ' ', RECORD_BYTES);
			memcpy(out, s, n);
			out[RECORD_BYTES - 1] = '\n';
			json_object_put(o);
			return;
		}
		json_object_put(o);
		why_len = why_len > 64 ? why_len - 64 : 0;
	}
}

int handover_arm(const char *dir, const char *name)
{
	char path[600], rec[RECORD_BYTES];
	struct json_object *o;
	struct stat st;
	int fd, ret;

	record_path(dir, name, path, sizeof(path));
	if (stat(path, &st) < 0 || st.st_size != RECORD_BYTES) {
		/* the last decision stays, in a file of the armed shape */
		o = json_object_from_file(path);
		render(o && ipc_str(o, "job", NULL) ? ipc_str(o, "job", "") : NULL,
		       ipc_str(o, "decision", ""), ipc_str(o, "why", ""), rec);
		json_object_put(o);
		ret = statefile_replace(dir, path, rec, sizeof(rec));
		if (ret)
			return ret;
	}
	fd = open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
	return fd < 0 ? -errno : fd;
}

int handover_record(const char *dir, const char *name, int armed_fd, const char *job,
		    bool run, const char *why)
{
	char path[600], rec[RECORD_BYTES];
	int ret;

	if (fault_point("dst-decision-unrecorded"))
		return -EIO;
	record_path(dir, name, path, sizeof(path));
	render(job, run ? PEER_HANDOVER_RUNS : PEER_HANDOVER_DISCARDED, why ? why : "", rec);
	if (armed_fd >= 0) {
		errno = 0;
		ret = pwrite(armed_fd, rec, sizeof(rec), 0) == (ssize_t)sizeof(rec) &&
		      fdatasync(armed_fd) == 0 ? 0 : errno ? -errno : -EIO;
	} else {
		ret = statefile_replace(dir, path, rec, sizeof(rec));
	}
	if (ret)
		log_write(LOG_ERR, name, job, "guest %s: recording the handover decision in %s: %s",
			name, path, strerror(-ret));
	return ret;
}

/* The recorded decision for job, or NULL. */
static const char *recorded(const char *dir, const char *name, const char *job,
			    char *why, size_t len)
{
	char path[600];
	struct json_object *o;
	const char *d = NULL;

	record_path(dir, name, path, sizeof(path));
	o = json_object_from_file(path);
	if (o && !strcmp(ipc_str(o, "job", ""), job)) {
		d = !strcmp(ipc_str(o, "decision", ""), PEER_HANDOVER_RUNS) ?
			PEER_HANDOVER_RUNS : PEER_HANDOVER_DISCARDED;
		snprintf(why, len, "%s", ipc_str(o, "why", ""));
	}
	json_object_put(o);
	return d;
}

/* What the process holding name here says of itself ("info"), or NULL
 * when it does not answer. */
static struct json_object *holder_info(const char *dir, const char *name)
{
	struct json_object *req = json_object_new_object(), *info;
	char sock[600], err[256];

	worker_sock_path(dir, name, sock, sizeof(sock));
	json_object_object_add(req, "cmd", json_object_new_string("info"));
	info = ipc_call(sock, req, -1, 2000, err, sizeof(err));
	json_object_put(req);
	return info;
}

void handover_answer(const char *dir, const char *name, const char *job, char *decision,
		     size_t len, char *detail, size_t detail_len)
{
	struct json_object *info;
	const char *d;
	pid_t holder;

	if ((d = recorded(dir, name, job, detail, detail_len)))
		goto out;
	holder = guest_lock_holder(dir, name);
	if (!holder) {
		d = PEER_HANDOVER_NEVER;
		snprintf(detail, detail_len, "no process holds guest %s here and job %s "
			 "decided nothing", name, job);
		goto out;
	}
	info = holder_info(dir, name);
	if (!info) {
		d = PEER_HANDOVER_SILENT;
		snprintf(detail, detail_len, "process %d holds guest %s here but is not "
			 "answering", (int)holder, name);
	} else if (strcmp(ipc_str(info, "incoming_job", ""), job)) {
		d = PEER_HANDOVER_NEVER;
		snprintf(detail, detail_len, "guest %s here came by another job (%s)", name,
			 ipc_str(info, "incoming_job", "none"));
	} else if (!strcmp(ipc_str(info, "state", ""), "incoming")) {
		d = PEER_HANDOVER_DECIDING;
		snprintf(detail, detail_len, "process %d still receives job %s", (int)holder, job);
	} else {
		d = PEER_HANDOVER_RUNS;
		snprintf(detail, detail_len, "guest %s is %s here (process %d)", name,
			 ipc_str(info, "state", "?"), (int)holder);
	}
	json_object_put(info);
	/* the process may have decided while we looked */
	if (strcmp(d, PEER_HANDOVER_RUNS)) {
		const char *again = recorded(dir, name, job, detail, detail_len);

		d = again ? again : d;
	}
out:
	snprintf(decision, len, "%s", d);
}

bool handover_job_alive(const char *dir, const char *name, const char *job, char *detail,
			size_t len)
{
	struct json_object *info;
	pid_t holder = guest_lock_holder(dir, name);
	bool alive;

	if (!holder) {
		snprintf(detail, len, "no process holds guest %s here", name);
		return false;
	}
	info = holder_info(dir, name);
	if (!info) {
		snprintf(detail, len, "process %d holds guest %s here but is not answering",
			 (int)holder, name);
		return true;
	}
	alive = !strcmp(ipc_str(info, "incoming_job", ""), job);
	if (alive)
		snprintf(detail, len, "process %d of job %s is %s", (int)holder, job,
			 ipc_str(info, "state", "?"));
	else
		snprintf(detail, len, "guest %s here came by another job", name);
	json_object_put(info);
	return alive;
}
