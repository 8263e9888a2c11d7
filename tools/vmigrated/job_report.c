/*
 * Reporting a job's end to the service: one request on its reports socket
 * (STATE-DIR/guests/reports.socket, which only the service's user can
 * reach), {"cmd":"job-result","id":...,"direction":...,"stats":{...}},
 * tried again each second until the service answers or JOB_REPORT_S have
 * passed. A service busy past one try may still count that try and then
 * the next: the id (this process and a sequence number) lets it count the
 * job once.
 */
#include "job_report.h"

#include <stdatomic.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#include "ipc.h"
#include "log.h"

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

void job_report(const char *control, const char *direction, const char *guest,
		const char *job, const struct mig_stats *st)
{
	static atomic_uint seq;
	struct json_object *req = json_object_new_object(), *rep = NULL;
	double deadline = now() + JOB_REPORT_S;
	char buf[2048], id[96], err[512] = "no control socket";

	if (!control || !control[0]) {
		json_object_put(req);
		return;		/* a process without a service (tests) */
	}
	mig_stats_json(st, buf, sizeof(buf));
	snprintf(id, sizeof(id), "%d-%u-%.60s", (int)getpid(), atomic_fetch_add(&seq, 1), job);
	json_object_object_add(req, "cmd", json_object_new_string("job-result"));
	json_object_object_add(req, "id", json_object_new_string(id));
	json_object_object_add(req, "direction", json_object_new_string(direction));
	json_object_object_add(req, "name", json_object_new_string(guest));
	json_object_object_add(req, "job", json_object_new_string(job));
	json_object_object_add(req, "stats", json_tokener_parse(buf));
	for (;;) {
		int left_ms = (int)((deadline - now()) * 1e3);

		if (left_ms <= 0)
			break;
		rep = ipc_call(control, req, -1, left_ms, err, sizeof(err));
		if (rep)
			break;
		sleep(1);	/* not there (restarting): again */
	}
	if (!rep)
		log_write(LOG_WARNING, guest, job, "guest %s job %s: its result did not reach the "
			"service (%s): not counted in its metrics", guest, job, err);
	json_object_put(rep);
	json_object_put(req);
}
