/*
 * Handover decisions: one small JSON file per guest name holding the last
 * job decided here ({"job","decision","why"}), replaced atomically (temp
 * file, fsync, rename, fsync of the directory), so a crash leaves the old
 * decision or the new one, never none.
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
#include <json-c/json.h>
#include <stdio.h>
#include <string.h>

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

int handover_record(const char *dir, const char *name, const char *job, bool run,
		    const char *why)
{
	struct json_object *o = json_object_new_object();
	char path[600];
	const char *s;
	int ret;

	if (fault_point("dst-decision-unrecorded")) {
		json_object_put(o);
		return -EIO;
	}
	record_path(dir, name, path, sizeof(path));
	json_object_object_add(o, "job", json_object_new_string(job));
	json_object_object_add(o, "decision", json_object_new_string(
		run ? PEER_HANDOVER_RUNS : PEER_HANDOVER_DISCARDED));
	json_object_object_add(o, "why", json_object_new_string(why ? why : ""));
	s = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
	ret = statefile_replace(dir, path, s, strlen(s));
	json_object_put(o);
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
