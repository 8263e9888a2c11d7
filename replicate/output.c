/*
 * Output commit (Remus): what the guest emits while epoch k runs is held
 * until epoch k is acknowledged by the standby, then released in order.
 * Any thread may emit (vCPU threads do); only the replicating thread
 * releases, so releases keep their order.
 */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct repl_held {
	struct repl_held *next;
	uint64_t epoch;
	size_t len;
	char data[];
};

static const char *const state_names[] = {
	[REPL_SYNCING] = "syncing", [REPL_PROTECTED] = "protected",
	[REPL_DEGRADED] = "degraded", [REPL_STOPPED] = "stopped", [REPL_FAILED] = "failed",
	[REPL_FENCED] = "fenced", [REPL_SWITCHED] = "failed-over",
	[REPL_UNPROTECTED] = "unprotected",
};

const char *repl_state_name(enum repl_state s)
{
	return (unsigned)s < sizeof(state_names) / sizeof(state_names[0]) ? state_names[s] : "?";
}

void repl_progress_init(struct repl_progress *p, repl_release_fn release, void *opaque)
{
	memset(p, 0, sizeof(*p));
	pthread_mutex_init(&p->lock, NULL);
	pthread_mutex_init(&p->run_lock, NULL);
	p->held_tail = &p->held;
	p->release = release;
	p->release_opaque = opaque;
}

void repl_progress_destroy(struct repl_progress *p)
{
	while (p->held) {
		struct repl_held *h = p->held;

		p->held = h->next;
		free(h);
	}
	p->held_tail = &p->held;
	pthread_mutex_destroy(&p->lock);
	pthread_mutex_destroy(&p->run_lock);
}

bool repl_may_run(struct repl_progress *p)
{
	struct repl_lease *l = atomic_load(&p->lease);

	return !atomic_load(&p->fenced) && (!l || repl_lease_valid(l));
}

int repl_drop_lease(struct repl_progress *p, char *err, size_t errlen)
{
	struct repl_lease *l = atomic_exchange(&p->lease, NULL);
	struct timespec grace = { 0, 100000000 };
	int ret = 0;

	if (!l)
		return 0;
	/* a reader that loaded l just before is done with it long before */
	nanosleep(&grace, NULL);
	if (repl_lease_valid(l))
		ret = repl_lease_release(l, err, errlen);
	else
		repl_lease_free(l);
	return ret;
}

void repl_fence(struct repl_progress *p, struct vm *vm, const char *why)
{
	pthread_mutex_lock(&p->run_lock);
	atomic_store(&p->fenced, true);
	if (vm)
		vm_pause(vm);
	pthread_mutex_unlock(&p->run_lock);
	pthread_mutex_lock(&p->lock);
	p->stats.state = REPL_FENCED;
	snprintf(p->stats.error, sizeof(p->stats.error), "fenced: %.240s", why);
	pthread_mutex_unlock(&p->lock);
}

void repl_progress_get(struct repl_progress *p, struct repl_stats *out)
{
	pthread_mutex_lock(&p->lock);
	*out = p->stats;
	pthread_mutex_unlock(&p->lock);
}

void repl_output_hold(struct repl_progress *p)
{
	pthread_mutex_lock(&p->lock);
	p->open_epoch = 1;
	pthread_mutex_unlock(&p->lock);
}

void repl_output_release_all(struct repl_progress *p)
{
	pthread_mutex_lock(&p->lock);
	p->open_epoch = 0;
	pthread_mutex_unlock(&p->lock);
	repl_release_upto(p, UINT64_MAX);
}

void repl_output(struct repl_progress *p, const char *buf, size_t len)
{
	struct repl_held *h;

	if (!repl_may_run(p))
		return;		/* fenced: nothing leaves any more */
	pthread_mutex_lock(&p->lock);
	if (!p->open_epoch) {		/* not replicating: nothing to wait for */
		uint64_t token = p->stats.token;

		p->stats.released_output_bytes += len;
		pthread_mutex_unlock(&p->lock);
		if (p->release)
			p->release(p->release_opaque, token, 0, buf, len);
		return;
	}
	h = malloc(sizeof(*h) + len);
	if (h) {
		h->next = NULL;
		h->epoch = p->open_epoch;
		h->len = len;
		memcpy(h->data, buf, len);
		*p->held_tail = h;
		p->held_tail = &h->next;
		p->stats.held_output_bytes += len;
	}
	pthread_mutex_unlock(&p->lock);
	/* out of memory: the output is dropped, never released early */
}

void repl_release_upto(struct repl_progress *p, uint64_t epoch)
{
	struct repl_held *list, **tail = NULL;
	uint64_t token;

	if (!repl_may_run(p))
		return;		/* held for good: another host may own the guest */
	pthread_mutex_lock(&p->lock);
	list = p->held;
	for (struct repl_held *h = p->held; h && h->epoch <= epoch; h = h->next) {
		tail = &h->next;
		p->stats.held_output_bytes -= h->len;
		p->stats.released_output_bytes += h->len;
	}
	if (!tail) {
		pthread_mutex_unlock(&p->lock);
		return;
	}
	p->held = *tail;
	if (!p->held)
		p->held_tail = &p->held;
	*tail = NULL;
	token = p->stats.token;
	pthread_mutex_unlock(&p->lock);
	while (list) {
		struct repl_held *h = list;

		list = h->next;
		if (p->release)
			p->release(p->release_opaque, token, h->epoch, h->data, h->len);
		free(h);
	}
}
