/*
 * The lease keeper (lease.h): one thread renews (a renewal that fails is
 * tried again every 200 ms until the deadline), another waits for the
 * deadline, so a renewal stuck on an unreachable store never delays the
 * fence. The deadline counts from the time just before a renewal was
 * sent, never from its answer, and once passed it never moves again. A
 * third keeps the store's leader off this host (at once, then every
 * LEADER_CHECK_S), on its own thread: a move takes up to two request
 * timeouts, longer than a renewal may wait.
 */
#include "lease.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fault.h"

/* How often the owner checks where the store's leader is. */
#define LEADER_CHECK_S	10.0

struct repl_lease {
	struct repl_arbiter *a;
	int ttl;
	double margin;
	repl_fence_fn fence;
	void *opaque;
	char guest[REPL_ARBITER_NAME_MAX + 1];	/* for the log */
	pthread_t keeper, fencer, placer;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	double deadline;		/* under lock; 0 once lost */
	bool stop;			/* under lock */
	bool fenced;			/* under lock: the deadline passed, for good */
	bool skip_fence;		/* tests: a broken owner that never fences */
	bool has_placer;		/* the owner's thread only (take, release, free) */
	char why[256];			/* under lock */
};

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Until monotonic time t (the condition runs on CLOCK_MONOTONIC: a change
 * of the wall clock moves no deadline). */
static void wait_until(struct repl_lease *l, double t)
{
	struct timespec ts = { (time_t)t, (long)((t - (double)(time_t)t) * 1e9) };

	pthread_cond_timedwait(&l->cond, &l->lock, &ts);
}

/* Renewals; they may block up to the arbiter's request timeout, so the
 * deadline is watched by the fencer, not here. */
static void *keeper_main(void *arg)
{
	struct repl_lease *l = arg;
	double next = now() + l->ttl / 3.0;

	pthread_mutex_lock(&l->lock);
	while (!l->stop && !l->fenced) {
		char err[256] = "";
		double sent;
		int ret;

		if (now() < next) {
			wait_until(l, next);
			continue;
		}
		pthread_mutex_unlock(&l->lock);
		sent = now();
		ret = repl_arbiter_keepalive(l->a, err, sizeof(err));
		pthread_mutex_lock(&l->lock);
		if (l->fenced)
			break;		/* too late: what is lost stays lost */
		if (!ret) {
			if (sent + l->ttl - l->margin > l->deadline)
				l->deadline = sent + l->ttl - l->margin;
			next = sent + l->ttl / 3.0;
			l->why[0] = 0;
		} else if (ret == -ENOENT) {
			snprintf(l->why, sizeof(l->why), "the lease is gone: %s", err);
			l->deadline = now();	/* lost now: fence at once */
		} else {
			snprintf(l->why, sizeof(l->why), "renewing the lease: %s", err);
			next = now() + 0.2;	/* again, until the deadline */
		}
		pthread_cond_broadcast(&l->cond);
	}
	pthread_mutex_unlock(&l->lock);
	return NULL;
}

/* At the deadline, whatever the renewals are doing: the fence, once. */
static void *fencer_main(void *arg)
{
	struct repl_lease *l = arg;
	bool skip = l->skip_fence;

	pthread_mutex_lock(&l->lock);
	while (!l->stop) {
		if (now() >= l->deadline) {
			l->fenced = true;
			pthread_cond_broadcast(&l->cond);
			pthread_mutex_unlock(&l->lock);
			if (!skip)
				l->fence(l->opaque, l->why[0] ? l->why :
					 "the lease could not be renewed in time");
			return NULL;
		}
		wait_until(l, l->deadline);
	}
	pthread_mutex_unlock(&l->lock);
	return NULL;
}

/*
 * Keeps the store's leader off this host, so that the host's death costs
 * no election before the lease can run out (arbiter.h). Never under the
 * lease's lock while it asks the store: the renewals and the fence go on.
 * Says what it moved each time, and a failure once until one succeeds.
 */
static void *placer_main(void *arg)
{
	struct repl_lease *l = arg;
	double next = now();
	bool failing = false;

	pthread_mutex_lock(&l->lock);
	while (!l->stop && !l->fenced) {
		char moved[512] = "", err[1024] = "";
		int ret;

		if (now() < next) {
			wait_until(l, next);
			continue;
		}
		pthread_mutex_unlock(&l->lock);
		ret = repl_arbiter_leader_elsewhere(l->a, moved, sizeof(moved), err, sizeof(err));
		if (!ret && moved[0])
			fprintf(stderr, "vmigrate: guest %s: %s\n", l->guest, moved);
		else if (ret && !failing)
			fprintf(stderr, "vmigrate: guest %s: cannot keep the arbiter's leader off "
				"this host (tried again every %.0f s): %s\n", l->guest,
				LEADER_CHECK_S, err);
		failing = ret != 0;
		pthread_mutex_lock(&l->lock);
		next = now() + LEADER_CHECK_S;
	}
	pthread_mutex_unlock(&l->lock);
	return NULL;
}

int repl_lease_take(struct repl_arbiter *a, const char *guest, const char *owner_id,
		    int ttl_s, uint64_t after_token, repl_fence_fn fence, void *opaque,
		    struct repl_lease **out, uint64_t *token, char *err, size_t errlen)
{
	struct repl_lease *l = calloc(1, sizeof(*l));
	double sent = now();
	int ttl = 0, ret;

	*out = NULL;
	if (!l)
		return -ENOMEM;
	ret = after_token ?
	      repl_arbiter_take_over(a, guest, owner_id, ttl_s, after_token, token, &ttl, err,
				     errlen) :
	      repl_arbiter_acquire(a, guest, owner_id, ttl_s, token, &ttl, err, errlen);
	if (ret) {
		free(l);
		return ret;
	}
	l->a = a;
	l->ttl = ttl;
	/* a quarter of the TTL, at least a second: etcd 3.4's leader cut off
	 * from its quorum goes on renewing for up to 1.8 s (measured), while
	 * the new leader, elected after at least an election timeout (1 s),
	 * gives the lease a whole TTL from then: the deadline must come before
	 * (cut + 1 s + TTL), so it may trail a fake renewal by TTL - 0.8 s */
	l->margin = ttl / 4.0 > 1.0 ? ttl / 4.0 : 1.0;
	l->fence = fence;
	l->opaque = opaque;
	snprintf(l->guest, sizeof(l->guest), "%s", guest);
	l->deadline = sent + ttl - l->margin;
	/* tests: an owner without the discipline, so the checker must catch it */
	l->skip_fence = fault_point("repl-skip-self-fence");
	pthread_mutex_init(&l->lock, NULL);
	{
		pthread_condattr_t ca;

		pthread_condattr_init(&ca);
		pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
		pthread_cond_init(&l->cond, &ca);
		pthread_condattr_destroy(&ca);
	}
	if (pthread_create(&l->keeper, NULL, keeper_main, l)) {
		repl_arbiter_revoke(a, NULL, 0);
		free(l);
		snprintf(err, errlen, "cannot start the lease keeper");
		return -EAGAIN;
	}
	if (pthread_create(&l->fencer, NULL, fencer_main, l)) {
		pthread_mutex_lock(&l->lock);
		l->stop = true;
		pthread_cond_broadcast(&l->cond);
		pthread_mutex_unlock(&l->lock);
		pthread_join(l->keeper, NULL);
		repl_arbiter_revoke(a, NULL, 0);
		free(l);
		snprintf(err, errlen, "cannot start the lease fencer");
		return -EAGAIN;
	}
	/* without it the lease is kept all the same, only its leader unplaced */
	l->has_placer = !pthread_create(&l->placer, NULL, placer_main, l);
	if (!l->has_placer)
		fprintf(stderr, "vmigrate: guest %s: cannot start the thread that keeps the "
			"arbiter's leader off this host\n", guest);
	*out = l;
	return 0;
}

bool repl_lease_valid(struct repl_lease *l)
{
	return l->skip_fence || now() < repl_lease_deadline(l);
}

bool repl_lease_skips_fence(const struct repl_lease *l)
{
	return l->skip_fence;
}

double repl_lease_deadline(struct repl_lease *l)
{
	double d;

	pthread_mutex_lock(&l->lock);
	d = l->fenced ? 0 : l->deadline;
	pthread_mutex_unlock(&l->lock);
	return d;
}

int repl_lease_ttl(const struct repl_lease *l)
{
	return l->ttl;
}

static void stop_keeper(struct repl_lease *l)
{
	pthread_mutex_lock(&l->lock);
	l->stop = true;
	pthread_cond_broadcast(&l->cond);
	pthread_mutex_unlock(&l->lock);
	pthread_join(l->keeper, NULL);
	pthread_join(l->fencer, NULL);
}

/* After stop_keeper: the placer may be in the middle of a move (up to two
 * request timeouts), which the revoke of a planned switch need not wait for. */
static void join_placer(struct repl_lease *l)
{
	if (l->has_placer)
		pthread_join(l->placer, NULL);
}

int repl_lease_release(struct repl_lease *l, char *err, size_t errlen)
{
	int ret;

	stop_keeper(l);
	ret = repl_arbiter_revoke(l->a, err, errlen);
	join_placer(l);
	pthread_mutex_destroy(&l->lock);
	pthread_cond_destroy(&l->cond);
	free(l);
	return ret;
}

void repl_lease_free(struct repl_lease *l)
{
	if (!l)
		return;
	stop_keeper(l);
	join_placer(l);
	pthread_mutex_destroy(&l->lock);
	pthread_cond_destroy(&l->cond);
	free(l);
}
