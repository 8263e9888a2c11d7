/*
 * The service's counters, and the Prometheus text exposition of them with
 * what its guests say now (guests by state, replication figures): served
 * on an optional HTTP listener (--metrics ADDR:PORT, libmicrohttpd) and to
 * `vmigrate metrics` over the control socket, the same text both ways.
 *
 * The counters live in the service, never in a guest process: a guest
 * process ends (its guest moved away, was stopped or crashed) and what it
 * did stays counted. They count only what the service or its own guest
 * processes did, never what a client of the control socket says it did.
 * The service learns of each job's end
 *   - checkpoints, restores and backup runs: from the replies it relays to
 *     the CLI (metrics_observe); a backup run's pruning is the service's
 *     own, after its checkpoint;
 *   - migrations, both directions: the guest process reports its job's end
 *     ("job-result", job_report.h) on the reports socket, which only the
 *     service's user reaches (STATE-DIR/guests/, 0700; the socket 0600),
 *     never on the control socket; from the job's own thread, retried
 *     while the service is busy or restarting; each report carries an id,
 *     so a retried one is not counted twice;
 *   - the bytes of running migrations: a scrape asks the guest processes
 *     that migrate for their figures, so the bytes counters move while a
 *     job runs (metrics.c says why they never go back).
 * A restarted service starts again from zero, as Prometheus expects of a
 * counter; a report that found no service for JOB_REPORT_S is lost (the
 * guest process logs it).
 */
#ifndef METRICS_H
#define METRICS_H

#include <json-c/json.h>
#include <stddef.h>

struct metrics;

/* The service's guests as `list` shows them: an array of info replies
 * (the caller puts it). Called in the service and in the listener's process. */
typedef struct json_object *(*metrics_guests_fn)(void *opaque);

struct metrics *metrics_new(const char *guests_dir, metrics_guests_fn guests, void *opaque);
/* Serve GET /metrics on ADDR:PORT from a process of its own, which ends
 * with the service. */
int metrics_listen(struct metrics *m, const char *addr, char *err, size_t errlen);
/* Stops the listener. NULL is fine. */
void metrics_free(struct metrics *m);

/* The control request that is the metrics' own, "metrics" (the text);
 * NULL for any other. */
struct json_object *metrics_request(struct metrics *m, struct json_object *req);
/* A report of a guest process on the reports socket: "job-result". */
struct json_object *metrics_report(struct metrics *m, struct json_object *req);
/* A request the service answered itself or relayed: checkpoints and
 * restores are counted from here. */
void metrics_observe(struct metrics *m, struct json_object *req, struct json_object *rep);

/* The exposition text (malloc'd), or NULL without memory. */
char *metrics_render(struct metrics *m);

#endif
