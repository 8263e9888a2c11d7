/*
 * Post-copy's recovery, for the guest processes at both ends of a job
 * (migrate/ asks through its reconnect callbacks). The destination keeps
 * the session's data port listening; after a broken link the source dials
 * it again, n connections proven by the session's token (control, fault,
 * data channels), retrying with backoff, at once on `vmigrate
 * migrate-recover JOB [HOST]`, and giving up only when the destination's
 * service says no process of the job is left (the guest is lost then).
 * The destination waits for as long as it takes: its guest cannot run on
 * without the pages only the source has.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "guest_lock.h"
#include "handover.h"
#include "ipc.h"
#include "log.h"
#include "worker_internal.h"

#define RETRY_MAX_S	10	/* the longest wait between two tries */

static pthread_cond_t recover_cond = PTHREAD_COND_INITIALIZER;	/* with W.lock */

/* The links a recovery made: the caller of mig_*_run owns links, so they
 * are closed here once the next recovery or the job's end replaces them. */
static void keep_links(struct xport **xs, unsigned n)
{
	struct xport *old[PEER_MAX_DATA + 2];
	unsigned nold;

	pthread_mutex_lock(&W.lock);
	nold = W.pc_nlinks;
	memcpy(old, W.pc_links, sizeof(old));
	if (n)
		memcpy(W.pc_links, xs, n * sizeof(*xs));
	W.pc_nlinks = n;
	pthread_mutex_unlock(&W.lock);
	for (unsigned i = 0; i < nold; i++)
		xport_close(old[i]);
}

void worker_postcopy_close(void)
{
	keep_links(NULL, 0);
}

static void fill_links(struct mig_links *out, struct xport **xs, unsigned n)
{
	memset(out, 0, sizeof(*out));
	out->control = xs[0];
	out->fault = xs[1];
	out->nr_data = n - 2;
	for (unsigned i = 2; i < n; i++)
		out->data[i - 2] = xs[i];
}

/* ---- source -------------------------------------------------------------------- */

/* Ask the destination's service whether the job's process is still there;
 * true only when it answered that it is not. */
static bool job_gone(const char *dest, char *detail, size_t len)
{
	char host[256], err[256], decision[32];
	int fd = peer_connect(dest, W.mig_peer.io_timeout_ms, host, sizeof(host), err,
			      sizeof(err));

	if (fd < 0)
		return false;	/* unreachable: the link, or the host, is down */
	if (peer_ask_handover(&W.mig_peer, fd, host, "postcopy-ask", W.spec.name, W.job,
			      decision, sizeof(decision), detail, len, err, sizeof(err)))
		return false;
	return !strcmp(decision, PEER_POSTCOPY_GONE);
}

int worker_postcopy_redial(void *opaque, struct mig_links *out)
{
	unsigned n = 2 + W.params.nr_data_channels, wait_s = 1;
	struct xport *xs[PEER_MAX_DATA + 2];
	char err[512], detail[256];

	for (unsigned attempt = 1;; attempt++) {
		char dest[300], host[256], port[32];
		struct timespec until;

		pthread_mutex_lock(&W.lock);
		snprintf(dest, sizeof(dest), "%s", W.recover_dest[0] ? W.recover_dest : W.dest);
		W.recover_now = false;
		pthread_mutex_unlock(&W.lock);
		if (xport_split_hostport(dest, PEER_DEFAULT_PORT, host, sizeof(host), port,
					 sizeof(port)))
			snprintf(host, sizeof(host), "%s", W.dest_host);
		if (!peer_redial(&W.mig_peer, host, W.mig_session.data_port, W.mig_session.token,
				 n, xs, err, sizeof(err))) {
			keep_links(xs, n);
			fill_links(out, xs, n);
			log_write(LOG_NOTICE, W.spec.name, W.job, "guest %s job %s: post-copy link to "
				"%s made again (try %u)", W.spec.name, W.job, host, attempt);
			return 0;
		}
		if (job_gone(dest, detail, sizeof(detail))) {
			log_write(LOG_ERR, W.spec.name, W.job, "guest %s job %s: the destination "
				"has no process of the job any more (%s)", W.spec.name, W.job, detail);
			return -1;
		}
		log_write(LOG_WARNING, W.spec.name, W.job, "guest %s job %s: post-copy paused, "
			"%s unreachable (%s); trying again in %u s, or at once on 'vmigrate "
			"migrate-recover %s [HOST]'", W.spec.name, W.job, host, err, wait_s, W.job);
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_sec += wait_s;
		pthread_mutex_lock(&W.lock);
		while (!W.recover_now && !W.exit_requested &&
		       pthread_cond_timedwait(&recover_cond, &W.lock, &until) != ETIMEDOUT)
			;
		pthread_mutex_unlock(&W.lock);
		wait_s = wait_s * 2 > RETRY_MAX_S ? RETRY_MAX_S : wait_s * 2;
	}
}

struct json_object *worker_postcopy_recover(struct json_object *req)
{
	struct mig_stats st;
	const char *dest = ipc_str(req, "dest", "");

	mig_progress_get(&W.prog, &st);
	if (st.status != MIG_POSTCOPY_PAUSED)
		return ipc_error(IPC_E_WRONG_STATE, "job %s is %s, not postcopy-paused: nothing to "
				 "recover",
				 W.job[0] ? W.job : "(none)", mig_status_name(st.status));
	pthread_mutex_lock(&W.lock);
	if (dest[0])
		snprintf(W.recover_dest, sizeof(W.recover_dest), "%s", dest);
	W.recover_now = true;
	pthread_cond_broadcast(&recover_cond);
	pthread_mutex_unlock(&W.lock);
	return ipc_ok();
}

/* ---- destination ----------------------------------------------------------------- */

/* While post-copy runs: a recovery's first connection on the listener
 * means the source gave the links up (it may see them broken before this
 * end does, say behind a firewall that drops): break them here too. */
static void *watch_main(void *arg)
{
	struct incoming *in = arg;

	for (;;) {
		struct pollfd p = { .fd = in->session.listen_fd, .events = POLLIN };
		struct xport *live[PEER_MAX_DATA + 2];
		unsigned n = 0;
		bool over;

		pthread_mutex_lock(&W.lock);
		over = W.pc_watch_stop || W.exit_requested;
		if (!W.pc_recovering) {
			n = W.pc_nlive;
			memcpy(live, W.pc_live, sizeof(live));
		}
		pthread_mutex_unlock(&W.lock);
		if (over)
			return NULL;
		if (poll(&p, 1, 200) <= 0 || !(p.revents & POLLIN) || !n)
			continue;
		log_write(LOG_NOTICE, W.spec.name, W.incoming_job, "guest %s: the source "
			"reconnects: its old post-copy links are given up", W.spec.name);
		for (unsigned i = 0; i < n; i++)
			if (xport_fd(live[i]) >= 0)
				shutdown(xport_fd(live[i]), SHUT_RDWR);
		usleep(200000);	/* for the receiving thread to notice */
	}
}

static void set_live(struct xport **xs, unsigned n)
{
	pthread_mutex_lock(&W.lock);
	memcpy(W.pc_live, xs, n * sizeof(*xs));
	W.pc_nlive = n;
	W.pc_recovering = false;
	pthread_mutex_unlock(&W.lock);
}

int worker_postcopy_watch(struct incoming *in)
{
	struct xport *xs[PEER_MAX_DATA + 2];
	unsigned n = 0;

	xs[n++] = in->session.control;
	xs[n++] = in->opts.fault_channel;
	for (unsigned i = 0; i < in->opts.nr_data_channels; i++)
		xs[n++] = in->session.data[i];
	set_live(xs, n);
	W.pc_watch_stop = false;
	if (pthread_create(&W.pc_watch, NULL, watch_main, in))
		return -EAGAIN;
	W.pc_watching = true;
	return 0;
}

void worker_postcopy_unwatch(void)
{
	if (!W.pc_watching)
		return;
	pthread_mutex_lock(&W.lock);
	W.pc_watch_stop = true;
	W.pc_nlive = 0;
	pthread_mutex_unlock(&W.lock);
	pthread_join(W.pc_watch, NULL);
	W.pc_watching = false;
}

int worker_postcopy_accept(void *opaque, struct mig_links *out)
{
	struct incoming *in = opaque;
	unsigned n = 2 + in->opts.nr_data_channels;
	struct xport *xs[PEER_MAX_DATA + 2];
	double since = worker_now(), said = since;
	char err[256];

	pthread_mutex_lock(&W.lock);
	W.pc_recovering = true;
	pthread_mutex_unlock(&W.lock);
	log_write(LOG_WARNING, W.spec.name, W.incoming_job, "guest %s: post-copy paused, the "
		"link to the source is down; its vCPUs wait for their pages until the source "
		"reconnects", W.spec.name);
	for (;;) {
		bool quit;

		pthread_mutex_lock(&W.lock);
		quit = W.exit_requested;
		pthread_mutex_unlock(&W.lock);
		if (quit)
			return -1;
		if (!peer_take_resume(&in->peer, &in->session, n, xs, 1000, err, sizeof(err)))
			break;
		if (worker_now() - said > 60) {
			said = worker_now();
			log_write(LOG_WARNING, W.spec.name, W.incoming_job, "guest %s: still "
				"waiting for the source, %.0f s now", W.spec.name, said - since);
		}
	}
	keep_links(xs, n);
	set_live(xs, n);
	fill_links(out, xs, n);
	log_write(LOG_NOTICE, W.spec.name, W.incoming_job, "guest %s: the source is back "
		"after %.1f s; post-copy goes on", W.spec.name, worker_now() - since);
	return 0;
}

_Noreturn void worker_postcopy_answer(const struct worker_spec *s, const struct peer_hello *h,
				      struct xport *x)
{
	char detail[256];
	bool alive = handover_job_alive(s->dir, h->name, h->job, detail, sizeof(detail));

	peer_answer_handover(x, alive ? PEER_POSTCOPY_ALIVE : PEER_POSTCOPY_GONE, detail);
	xport_close(x);
	_exit(0);
}
