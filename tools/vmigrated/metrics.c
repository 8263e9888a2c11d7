/*
 * vmigrated's metrics: counters of the jobs that ended on this host, kept
 * by the service (metrics.h says how it learns of them), and the text
 * exposition format of Prometheus, rendered on request with what the
 * guests report at that moment.
 *
 * The HTTP listener runs in a process of its own (a child of the service,
 * gone when the service goes: PR_SET_PDEATHSIG), so that a scrape never
 * waits for the service's loop, which a long request (a checkpoint) can
 * hold for minutes, and so that the service keeps no thread: the guest
 * processes it forks start from a one-thread process. The counters are in
 * a shared mapping that both processes see, under a process-shared lock.
 *
 *   vmigrated --- counts ---> [shared: counters] <--- reads --- metrics
 *       |                                                 process (HTTP)
 *       +-- guest processes: asked for their state by either
 */
#include "metrics.h"

#include <errno.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/pidfd.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ipc.h"
#include "replicate.h"
#include "transport.h"
#include "worker.h"

/* Outgoing migrations' downtime, seconds: from a quick switchover on an
 * idle guest to the default limit (300 ms) and well past it. */
static const double downtime_le[] = {
	0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
};
#define NR_BUCKETS	(sizeof(downtime_le) / sizeof(downtime_le[0]))

/* Label values, in the order the arrays below are indexed. */
static const char *const directions[] = { "out", "in" };
static const char *const results[] = { "completed", "failed", "cancelled", "uncertain" };
static const char *const ckpt_kinds[] = { "full", "incremental" };
static const char *const outcomes[] = { "ok", "failed" };
#define NR_RESULTS	(sizeof(results) / sizeof(results[0]))

/* The states `list` shows; another one a guest reports is counted too. */
static const char *const guest_states[] = {
	"incoming", "running", "paused", "migrating", "uncertain", "migrated", "standby",
	"fenced", "not answering",
};
#define NR_STATES	(sizeof(guest_states) / sizeof(guest_states[0]))

#define SEEN_IDS	128	/* reports remembered, so a retried one counts once */
#define LIVE_JOBS	64	/* jobs whose bytes are counted one by one */

/*
 * The bytes counters move while a job runs, not only at its end, and never
 * back: each job of the last LIVE_JOBS holds the most it was seen to have
 * moved (by a scrape asking its guest process, or by its final report),
 * and a counter is what the jobs before them moved (bytes_*) plus what
 * each of them holds. Taking the maximum makes a retried report, a scrape
 * racing the report and a report after a scrape all count a job once.
 */
struct live_job {
	char job[64];				/* "" = free */
	unsigned dir;				/* 0 out, 1 in */
	uint64_t bytes;				/* the most seen */
	bool ended;				/* its final report came */
	uint64_t seq;				/* when last touched: the oldest goes first */
};

struct counters {
	uint64_t migrations[2][NR_RESULTS];	/* [direction][result] */
	uint64_t downtime[NR_BUCKETS + 1];	/* per bucket, not cumulative; last: +Inf */
	double downtime_sum;
	uint64_t bytes_sent, bytes_received;	/* of the jobs no longer in live[] */
	uint64_t checkpoints[2][2];		/* [kind][outcome] */
	uint64_t checkpoint_bytes;
	uint64_t restores[2];			/* [outcome] */
	uint64_t backups[2];			/* [outcome] */
	uint64_t backup_files_removed;
};

/* In a mapping shared with the listener's process. */
struct shared {
	pthread_mutex_t lock;			/* process-shared, robust */
	struct counters c;			/* under lock */
	char seen[SEEN_IDS][96];		/* under lock: ids of counted reports */
	unsigned seen_next;			/* under lock */
	struct live_job live[LIVE_JOBS];	/* under lock */
	uint64_t live_seq;			/* under lock */
};

struct metrics {
	char guests_dir[512];
	metrics_guests_fn guests;
	void *opaque;
	struct shared *sh;
	pid_t listener;				/* its process; 0 without one */
	int listener_fd;			/* a pidfd for it, safe from pid reuse
						 * once the service's loop reaped it */
};

/* Robust: a process that dies holding it does not stop the other. */
static void lock(struct shared *sh)
{
	if (pthread_mutex_lock(&sh->lock) == EOWNERDEAD)
		pthread_mutex_consistent(&sh->lock);
}

static void unlock(struct shared *sh)
{
	pthread_mutex_unlock(&sh->lock);
}

struct metrics *metrics_new(const char *guests_dir, metrics_guests_fn guests, void *opaque)
{
	struct metrics *m = calloc(1, sizeof(*m));
	pthread_mutexattr_t a;

	if (!m)
		return NULL;
	m->sh = mmap(NULL, sizeof(*m->sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
		     -1, 0);
	if (m->sh == MAP_FAILED) {
		free(m);
		return NULL;
	}
	snprintf(m->guests_dir, sizeof(m->guests_dir), "%s", guests_dir);
	m->guests = guests;
	m->opaque = opaque;
	pthread_mutexattr_init(&a);
	pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
	pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
	pthread_mutex_init(&m->sh->lock, &a);
	pthread_mutexattr_destroy(&a);
	return m;
}

void metrics_free(struct metrics *m)
{
	if (!m)
		return;
	if (m->listener > 0) {
		siginfo_t si;

		pidfd_send_signal(m->listener_fd, SIGTERM, NULL, 0);
		waitid(P_PIDFD, (id_t)m->listener_fd, &si, WEXITED);	/* ECHILD: reaped */
		close(m->listener_fd);
	}
	munmap(m->sh, sizeof(*m->sh));
	free(m);
}

/* ---- counting ----------------------------------------------------------------- */

static unsigned index_of(const char *const *names, unsigned n, const char *s, unsigned other)
{
	for (unsigned i = 0; i < n; i++)
		if (!strcmp(names[i], s))
			return i;
	return other;
}

/* false when this report was counted before (a retry); under lock */
static bool first_time(struct shared *sh, const char *id)
{
	for (unsigned i = 0; i < SEEN_IDS; i++)
		if (sh->seen[i][0] && !strcmp(sh->seen[i], id))
			return false;
	snprintf(sh->seen[sh->seen_next], sizeof(sh->seen[0]), "%s", id);
	sh->seen_next = (sh->seen_next + 1) % SEEN_IDS;
	return true;
}

/* Whether slot a is to be reused before b: a free one first, then the
 * oldest that ended, then the oldest. */
static bool reuse_before(const struct live_job *a, const struct live_job *b)
{
	if (!a->job[0] || !b->job[0])
		return !a->job[0] && b->job[0];
	if (a->ended != b->ended)
		return a->ended;
	return a->seq < b->seq;
}

/* Job job of direction dir moved bytes so far (final: its end); under lock. */
static void note_bytes(struct shared *sh, unsigned dir, const char *job, uint64_t bytes,
		       bool final)
{
	struct live_job *slot = NULL, *oldest = NULL;

	if (!job[0])
		return;
	for (unsigned i = 0; i < LIVE_JOBS; i++) {
		struct live_job *l = &sh->live[i];

		if (l->job[0] && l->dir == dir && !strncmp(l->job, job, sizeof(l->job) - 1)) {
			slot = l;
			break;
		}
		if (!oldest || reuse_before(l, oldest))
			oldest = l;
	}
	if (!slot) {
		slot = oldest;
		if (slot->job[0]) {	/* its bytes go into the counter for good */
			if (slot->dir == 0)
				sh->c.bytes_sent += slot->bytes;
			else
				sh->c.bytes_received += slot->bytes;
		}
		memset(slot, 0, sizeof(*slot));
		snprintf(slot->job, sizeof(slot->job), "%s", job);
		slot->dir = dir;
	}
	if (bytes > slot->bytes)
		slot->bytes = bytes;
	slot->ended |= final;
	slot->seq = ++sh->live_seq;
}

/* A counter's value: the jobs gone from live[] and those in it; under lock. */
static uint64_t bytes_total(const struct shared *sh, unsigned dir)
{
	uint64_t sum = dir == 0 ? sh->c.bytes_sent : sh->c.bytes_received;

	for (unsigned i = 0; i < LIVE_JOBS; i++)
		if (sh->live[i].job[0] && sh->live[i].dir == dir)
			sum += sh->live[i].bytes;
	return sum;
}

/* {"cmd":"job-result","id","direction":"out"|"in","stats":{...}} */
static struct json_object *count_job(struct metrics *m, struct json_object *req)
{
	const char *id = ipc_str(req, "id", "");
	unsigned dir = index_of(directions, 2, ipc_str(req, "direction", ""), 2);
	struct json_object *st = NULL;
	unsigned result;

	if (!id[0] || dir > 1 || !json_object_object_get_ex(req, "stats", &st))
		return ipc_error(IPC_E_BAD_ARGUMENT, "a job-result needs an id, a direction (out or "
				 "in) and stats");
	/* a job that ended in any other state did not complete: it failed */
	result = index_of(results, NR_RESULTS, ipc_str(st, "status", ""), 1);
	lock(m->sh);
	note_bytes(m->sh, dir, ipc_str(req, "job", ""), (uint64_t)ipc_int(st, "transferred_bytes", 0),
		   true);
	if (first_time(m->sh, id)) {
		struct counters *c = &m->sh->c;

		c->migrations[dir][result]++;
		if (dir == 0 && result == 0) {
			double s = ipc_int(st, "downtime_ms", 0) / 1e3;
			unsigned b = 0;

			while (b < NR_BUCKETS && s > downtime_le[b])
				b++;
			c->downtime[b]++;
			c->downtime_sum += s;
		}
	}
	unlock(m->sh);
	return ipc_ok();
}

void metrics_observe(struct metrics *m, struct json_object *req, struct json_object *rep)
{
	const char *cmd = ipc_str(req, "cmd", "");
	bool ok = ipc_bool(rep, "ok", false);

	if (!m)
		return;
	lock(m->sh);
	/* a refused checkpoint (nothing tried: wrong state, a parent in the
	 * way) is no failed one; the guest process marks those it tried */
	if (!strcmp(cmd, "snapshot") && (ok || ipc_bool(rep, "attempted", false))) {
		unsigned kind = ipc_bool(req, "incremental", false) ? 1 : 0;

		m->sh->c.checkpoints[kind][ok ? 0 : 1]++;
		if (ok)
			m->sh->c.checkpoint_bytes += (uint64_t)ipc_int(rep, "file_bytes", 0);
	} else if (!strcmp(cmd, "restore")) {
		m->sh->c.restores[ok ? 0 : 1]++;
	}
	/* a backup run's checkpoint: the run is over unless it will be tried
	 * again as a full one (retry_full), and the service pruned for it */
	if (!strcmp(cmd, "snapshot") && ipc_int(req, "backup_keep", 0) > 0 &&
	    (ok || !ipc_bool(rep, "retry_full", false))) {
		m->sh->c.backups[ok ? 0 : 1]++;
		m->sh->c.backup_files_removed += (uint64_t)ipc_int(rep, "removed", 0);
	}
	unlock(m->sh);
}

/* ---- the exposition ------------------------------------------------------------- */

/* A label value: backslash, double quote and newline escaped. */
static void put_label(FILE *f, const char *s)
{
	for (; *s; s++) {
		if (*s == '\\' || *s == '"')
			fputc('\\', f);
		if (*s == '\n')
			fputs("\\n", f);
		else
			fputc(*s, f);
	}
}

static void family(FILE *f, const char *name, const char *type, const char *help)
{
	fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void guests_by_state(FILE *f, struct json_object *guests)
{
	size_t n = guests ? json_object_array_length(guests) : 0;
	unsigned count[NR_STATES] = { 0 };

	family(f, "vmigrate_guests", "gauge", "Guests of this host, by state.");
	for (size_t i = 0; i < n; i++) {
		const char *s = ipc_str(json_object_array_get_idx(guests, i), "state", "?");
		unsigned k = index_of(guest_states, NR_STATES, s, NR_STATES);

		if (k < NR_STATES)
			count[k]++;
	}
	for (unsigned k = 0; k < NR_STATES; k++)
		fprintf(f, "vmigrate_guests{state=\"%s\"} %u\n", guest_states[k], count[k]);
	/* a state this list does not know, once, with its count */
	for (size_t i = 0; i < n; i++) {
		const char *s = ipc_str(json_object_array_get_idx(guests, i), "state", "?");
		unsigned same = 0;
		bool earlier = false;

		if (index_of(guest_states, NR_STATES, s, NR_STATES) < NR_STATES)
			continue;
		for (size_t j = 0; j < n; j++) {
			bool eq = !strcmp(s, ipc_str(json_object_array_get_idx(guests, j), "state", "?"));

			same += eq;
			earlier |= eq && j < i;
		}
		if (earlier)
			continue;
		fputs("vmigrate_guests{state=\"", f);
		put_label(f, s);
		fprintf(f, "\"} %u\n", same);
	}
}

/* One replicated guest's replicate-status, or NULL. */
static struct json_object *repl_status(struct metrics *m, const char *name)
{
	struct json_object *req = json_object_new_object(), *rep;
	char path[600], err[256];

	json_object_object_add(req, "cmd", json_object_new_string("replicate-status"));
	worker_sock_path(m->guests_dir, name, path, sizeof(path));
	rep = ipc_call(path, req, -1, 2000, err, sizeof(err));
	json_object_put(req);
	if (rep && !ipc_bool(rep, "ok", false)) {
		json_object_put(rep);
		rep = NULL;
	}
	return rep;
}

/* One sample of a per-guest family: whole numbers in full, others to nine
 * significant digits. */
static void guest_sample(FILE *f, const char *metric, const char *guest, double v)
{
	fprintf(f, "%s{guest=\"", metric);
	put_label(f, guest);
	if (v < 9007199254740992.0 && v > -9007199254740992.0 && v == (double)(int64_t)v)
		fprintf(f, "\"} %lld\n", (long long)v);
	else
		fprintf(f, "\"} %.9g\n", v);
}

/* A primary's figure: a field of its replicate-status, scaled to the unit
 * the metric's name says. */
struct figure {
	const char *metric, *type, *help, *field;
	double scale;
};

static const struct figure primary_figures[] = {
	{ "vmigrate_replication_epochs_total", "counter",
	  "Epochs sealed and sent by the replication job of each primary here.", "epochs", 1 },
	{ "vmigrate_replication_lag_seconds", "gauge",
	  "The last epoch of each primary here: from its pause to its acknowledgement.",
	  "lag_ms", 1e-3 },
	{ "vmigrate_replication_pause_p99_seconds", "gauge",
	  "99th percentile of the vCPU pause per epoch, over the recent epochs.",
	  "pause_p99_ms", 1e-3 },
	{ "vmigrate_replication_held_output_bytes", "gauge",
	  "Guest output held until the standby acknowledges the epoch that produced it.",
	  "held_output_bytes", 1 },
};

/* Per replicated guest: its state (one series per state, 1 for the one it
 * is in), epochs, lag, pause p99 and held output, as its process says. */
static void replication(FILE *f, struct metrics *m, struct json_object *guests)
{
	size_t n = guests ? json_object_array_length(guests) : 0;
	struct json_object *status[64];
	const char *names[64];
	unsigned k = 0;

	for (size_t i = 0; i < n && k < 64; i++) {
		struct json_object *g = json_object_array_get_idx(guests, i);

		if (!json_object_object_get_ex(g, "replication", NULL) &&
		    strcmp(ipc_str(g, "state", ""), "standby"))
			continue;
		names[k] = ipc_str(g, "name", "?");
		if ((status[k] = repl_status(m, names[k])))
			k++;
	}
	family(f, "vmigrate_replication_state", "gauge",
	       "Replication state of each replicated guest here: 1 for the state it is in.");
	for (unsigned i = 0; i < k; i++) {
		struct json_object *r = NULL;
		bool standby = !strcmp(ipc_str(status[i], "role", ""), "standby");
		const char *now;

		json_object_object_get_ex(status[i], "replication", &r);
		now = standby ? "standby" : ipc_str(r, "state", "?");
		for (unsigned s = 0; s <= REPL_UNPROTECTED + 1u; s++) {
			const char *st = s <= REPL_UNPROTECTED ? repl_state_name((enum repl_state)s) :
				"standby";

			fputs("vmigrate_replication_state{guest=\"", f);
			put_label(f, names[i]);
			fprintf(f, "\",role=\"%s\",state=\"%s\"} %d\n", standby ? "standby" : "primary",
				st, !strcmp(st, now));
		}
	}
	for (unsigned p = 0; p < sizeof(primary_figures) / sizeof(primary_figures[0]); p++) {
		const struct figure *fig = &primary_figures[p];

		family(f, fig->metric, fig->type, fig->help);
		for (unsigned i = 0; i < k; i++) {
			struct json_object *r = NULL;

			if (json_object_object_get_ex(status[i], "replication", &r))
				guest_sample(f, fig->metric, names[i],
					     ipc_double(r, fig->field, 0) * fig->scale);
		}
	}
	family(f, "vmigrate_replication_applied_epoch", "gauge",
	       "The last epoch each standby here applied.");
	for (unsigned i = 0; i < k; i++)
		if (!strcmp(ipc_str(status[i], "role", ""), "standby"))
			guest_sample(f, "vmigrate_replication_applied_epoch", names[i],
				     (double)ipc_int(status[i], "applied_epoch", 0));
	for (unsigned i = 0; i < k; i++)
		json_object_put(status[i]);
}

static void counters(FILE *f, const struct counters *c, uint64_t sent, uint64_t received)
{
	uint64_t cum = 0;

	family(f, "vmigrate_migrations_total", "counter",
	       "Migrations that ended on this host, by direction and result.");
	for (unsigned d = 0; d < 2; d++)
		for (unsigned r = 0; r < NR_RESULTS; r++)
			fprintf(f, "vmigrate_migrations_total{direction=\"%s\",result=\"%s\"} %llu\n",
				directions[d], results[r], (unsigned long long)c->migrations[d][r]);
	family(f, "vmigrate_migration_downtime_seconds", "histogram",
	       "Downtime of the outgoing migrations that completed.");
	for (unsigned b = 0; b <= NR_BUCKETS; b++) {
		cum += c->downtime[b];
		if (b < NR_BUCKETS)
			fprintf(f, "vmigrate_migration_downtime_seconds_bucket{le=\"%g\"} %llu\n",
				downtime_le[b], (unsigned long long)cum);
		else
			fprintf(f, "vmigrate_migration_downtime_seconds_bucket{le=\"+Inf\"} %llu\n",
				(unsigned long long)cum);
	}
	fprintf(f, "vmigrate_migration_downtime_seconds_sum %.9g\n", c->downtime_sum);
	fprintf(f, "vmigrate_migration_downtime_seconds_count %llu\n", (unsigned long long)cum);
	family(f, "vmigrate_bytes_sent_total", "counter",
	       "Bytes sent by outgoing migrations, counted as they run, whatever their result.");
	fprintf(f, "vmigrate_bytes_sent_total %llu\n", (unsigned long long)sent);
	family(f, "vmigrate_bytes_received_total", "counter",
	       "Bytes received by incoming migrations, counted as they run, whatever their "
	       "result.");
	fprintf(f, "vmigrate_bytes_received_total %llu\n", (unsigned long long)received);
	family(f, "vmigrate_checkpoints_total", "counter",
	       "Checkpoints written (ok) or tried and not written (failed), by kind.");
	for (unsigned k = 0; k < 2; k++)
		for (unsigned o = 0; o < 2; o++)
			fprintf(f, "vmigrate_checkpoints_total{kind=\"%s\",result=\"%s\"} %llu\n",
				ckpt_kinds[k], outcomes[o], (unsigned long long)c->checkpoints[k][o]);
	family(f, "vmigrate_checkpoint_bytes_total", "counter", "Bytes of the checkpoints written.");
	fprintf(f, "vmigrate_checkpoint_bytes_total %llu\n", (unsigned long long)c->checkpoint_bytes);
	family(f, "vmigrate_restores_total", "counter", "Guests restored from checkpoints.");
	for (unsigned o = 0; o < 2; o++)
		fprintf(f, "vmigrate_restores_total{result=\"%s\"} %llu\n", outcomes[o],
			(unsigned long long)c->restores[o]);
	family(f, "vmigrate_backups_total", "counter", "Runs of `vmigrate backup`, by result.");
	for (unsigned o = 0; o < 2; o++)
		fprintf(f, "vmigrate_backups_total{result=\"%s\"} %llu\n", outcomes[o],
			(unsigned long long)c->backups[o]);
	family(f, "vmigrate_backup_files_removed_total", "counter",
	       "Old checkpoints removed by backup rotation.");
	fprintf(f, "vmigrate_backup_files_removed_total %llu\n",
		(unsigned long long)c->backup_files_removed);
}

/* What the running jobs of the guests here moved so far, as their guest
 * processes say: into live[], so the bytes counters move while they run. */
static void running_jobs(struct metrics *m, struct json_object *guests)
{
	size_t n = guests ? json_object_array_length(guests) : 0;

	for (size_t i = 0; i < n; i++) {
		struct json_object *g = json_object_array_get_idx(guests, i), *req, *rep, *st;
		const char *state = ipc_str(g, "state", ""), *job;
		bool in = !strcmp(state, "incoming");
		char path[600], err[256];

		if (!in && strcmp(state, "migrating"))
			continue;
		job = ipc_str(g, in ? "incoming_job" : "job", "");
		req = json_object_new_object();
		json_object_object_add(req, "cmd", json_object_new_string("progress"));
		json_object_object_add(req, "job", json_object_new_string(job));
		worker_sock_path(m->guests_dir, ipc_str(g, "name", ""), path, sizeof(path));
		rep = ipc_call(path, req, -1, 2000, err, sizeof(err));
		json_object_put(req);
		if (ipc_bool(rep, "ok", false) && !strcmp(ipc_str(rep, "job", ""), job) &&
		    json_object_object_get_ex(rep, "stats", &st)) {
			lock(m->sh);
			note_bytes(m->sh, in ? 1 : 0, job, (uint64_t)ipc_int(st, "transferred_bytes", 0),
				   false);
			unlock(m->sh);
		}
		json_object_put(rep);
	}
}

char *metrics_render(struct metrics *m)
{
	struct json_object *guests = m->guests(m->opaque);
	struct counters c;
	uint64_t sent, received;
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);

	if (!f) {
		json_object_put(guests);
		return NULL;
	}
	running_jobs(m, guests);
	lock(m->sh);
	c = m->sh->c;
	sent = bytes_total(m->sh, 0);
	received = bytes_total(m->sh, 1);
	unlock(m->sh);
	counters(f, &c, sent, received);
	guests_by_state(f, guests);
	replication(f, m, guests);
	json_object_put(guests);
	if (fclose(f) != 0) {
		free(text);
		return NULL;
	}
	return text;
}

struct json_object *metrics_report(struct metrics *m, struct json_object *req)
{
	if (!strcmp(ipc_str(req, "cmd", ""), "job-result"))
		return count_job(m, req);
	return ipc_error(IPC_E_NOT_FOUND, "the reports socket takes job-result only, not '%s'",
			 ipc_str(req, "cmd", ""));
}

struct json_object *metrics_request(struct metrics *m, struct json_object *req)
{
	const char *cmd = ipc_str(req, "cmd", "");
	struct json_object *rep;
	char *text;

	if (!m)
		return NULL;
	if (strcmp(cmd, "metrics"))
		return NULL;
	text = metrics_render(m);
	if (!text)
		return ipc_error(IPC_E_INTERNAL, "out of memory");
	rep = ipc_ok();
	json_object_object_add(rep, "text", json_object_new_string(text));
	free(text);
	return rep;
}

/* ---- the HTTP listener ------------------------------------------------------------ */

static enum MHD_Result answer(void *cls, struct MHD_Connection *conn, const char *url,
			      const char *method, const char *version, const char *upload,
			      size_t *upload_len, void **per_conn)
{
	static const char not_found[] = "only /metrics here\n";
	struct metrics *m = cls;
	struct MHD_Response *r;
	enum MHD_Result ret;
	unsigned code = MHD_HTTP_OK;
	char *text = NULL;

	if (strcmp(method, "GET") && strcmp(method, "HEAD")) {
		code = MHD_HTTP_METHOD_NOT_ALLOWED;
	} else if (strcmp(url, "/metrics")) {
		code = MHD_HTTP_NOT_FOUND;
	} else if (!(text = metrics_render(m))) {
		code = MHD_HTTP_INTERNAL_SERVER_ERROR;
	}
	if (text)
		r = MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE);
	else
		r = MHD_create_response_from_buffer(sizeof(not_found) - 1, (void *)not_found,
						    MHD_RESPMEM_PERSISTENT);
	if (!r) {
		free(text);
		return MHD_NO;
	}
	MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, text ?
				"text/plain; version=0.0.4; charset=utf-8" : "text/plain");
	if (code == MHD_HTTP_METHOD_NOT_ALLOWED)
		MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
	ret = MHD_queue_response(conn, code, r);
	MHD_destroy_response(r);
	return ret;
}

/* Close every descriptor but 0-2, a and b. */
static void close_all_but(int a, int b)
{
	int lo = a < b ? a : b, hi = a < b ? b : a;

	if (lo > 3)
		close_range(3, (unsigned)lo - 1, 0);
	if (hi > lo + 1)
		close_range((unsigned)lo + 1, (unsigned)hi - 1, 0);
	close_range((unsigned)hi + 1, ~0u, 0);
}

/* The listener's process: serves until the service goes (its parent). */
static _Noreturn void listener_main(struct metrics *m, int fd, int ready, pid_t parent)
{
	struct MHD_Daemon *d;
	char ok = 1;

	prctl(PR_SET_PDEATHSIG, SIGTERM);
	if (getppid() != parent)
		_exit(0);		/* it went before the line above */
	close_all_but(fd, ready);	/* nothing of the service's but the socket */
	prctl(PR_SET_NAME, "vmigrated:http");
	signal(SIGTERM, SIG_DFL);
	signal(SIGPIPE, SIG_IGN);
	d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO, 0, NULL, NULL,
			     answer, m, MHD_OPTION_LISTEN_SOCKET, fd,
			     MHD_OPTION_CONNECTION_LIMIT, 16u,
			     MHD_OPTION_CONNECTION_TIMEOUT, 10u, MHD_OPTION_END);
	ok = d != NULL;
	if (write(ready, &ok, 1) != 1 || !d)
		_exit(1);
	close(ready);
	for (;;)
		pause();	/* the daemon's thread serves; SIGTERM ends us */
}

int metrics_listen(struct metrics *m, const char *addr, char *err, size_t errlen)
{
	char host[256], port[32], ok = 0;
	struct pollfd p;
	pid_t parent = getpid();
	int fd, pipefd[2];

	if (m->listener > 0) {
		snprintf(err, errlen, "one metrics listener a service");
		return -EBUSY;
	}
	if (xport_split_hostport(addr, "", host, sizeof(host), port, sizeof(port)) || !port[0]) {
		snprintf(err, errlen, "--metrics wants ADDR:PORT, not '%s'", addr);
		return -EINVAL;
	}
	fd = xport_tcp_listen(host, port, err, errlen);
	if (fd < 0)
		return fd;
	if (pipe2(pipefd, O_CLOEXEC) < 0) {
		snprintf(err, errlen, "pipe: %s", strerror(errno));
		close(fd);
		return -errno;
	}
	fflush(NULL);
	m->listener = fork();
	if (m->listener == 0) {
		close(pipefd[0]);
		listener_main(m, fd, pipefd[1], parent);
	}
	close(fd);		/* the listener's alone */
	close(pipefd[1]);
	p = (struct pollfd){ .fd = pipefd[0], .events = POLLIN };
	if (m->listener < 0 || poll(&p, 1, 10000) != 1 || read(pipefd[0], &ok, 1) != 1 || !ok) {
		snprintf(err, errlen, "metrics listener on %s: %s", addr, m->listener < 0 ?
			 strerror(errno) : "libmicrohttpd would not start");
		close(pipefd[0]);
		if (m->listener > 0) {
			kill(m->listener, SIGKILL);
			waitpid(m->listener, NULL, 0);
		}
		m->listener = 0;
		return -EIO;
	}
	close(pipefd[0]);
	m->listener_fd = pidfd_open(m->listener, 0);
	if (m->listener_fd < 0) {
		int e = errno;

		snprintf(err, errlen, "pidfd_open: %s", strerror(e));
		kill(m->listener, SIGKILL);	/* not reaped yet: still ours */
		waitpid(m->listener, NULL, 0);
		m->listener = 0;
		return -e;
	}
	return 0;
}
