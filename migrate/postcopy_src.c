/*
 * Source side of post-copy: the guest is handed over before all of its
 * memory has moved, and the pages still owed follow while it runs there.
 *
 *   source (A)                                destination (B)
 *   MARKER n; wait for ROUND n (no backlog)
 *   [pause] STATE..., POSTCOPY (owed bitmaps),
 *   MARKER n+1 --------------------------->  discard owed pages, load state,
 *                                            arm userfaultfd
 *                            <-------------  LOADED
 *   GO ----------------------------------->  resume: a first touch of an
 *                            <-------------  RUNNING   owed page faults
 *   fault channel:           <-------------  PAGE_REQ (pages a vCPU waits for)
 *   PAGES (the asked pages, at once) ----->  placed atomically, vCPU wakes
 *   control and data channels: the rest of the owed pages, nearest the
 *   last fault first, under the bandwidth cap; END, COMMIT
 *                            <-------------  ALL_IN: A lets its copy go
 *
 * From GO on A never resumes the guest (protocol.c's rule 3): it only
 * serves pages. A link that fails after GO leaves both ends waiting
 * (postcopy-paused) until mig_params.reconnect gives new links; B then
 * sends MISSING, the pages it still lacks, and only those are sent again.
 */
#include "source_internal.h"

#include <endian.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "fault.h"
#include "protocol.h"

#define PUSH_WORDS	8u	/* 512 pages (2 MiB) claimed by the push at a time */

struct postcopy_src {
	struct source *s;
	struct ckpt_image_info info;
	uint64_t *owed[VM_MAX_REGIONS];	/* atomic words: still to send */
	uint64_t *claim[VM_MAX_REGIONS];	/* the push's chunk; push thread only */
	atomic_uint_fast64_t owed_pages;
	struct xport *fault;
	struct ckpt_writer *fw;		/* answers; server thread only */
	pthread_t server;
	bool server_running;
	atomic_bool server_stop;
	atomic_int server_err;
	atomic_uint_fast64_t requests;
	atomic_uint hint_ri;		/* the last fault asked for, for the push */
	atomic_uint_fast64_t hint_page;
	atomic_bool hint;
	unsigned cur_ri;		/* the push's cursor */
	uint64_t cur_word;
	uint64_t bytes_at_pause, bytes_at_run;
};

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static uint64_t region_pages(const struct postcopy_src *pc, unsigned ri)
{
	return pc->s->vm->regions[ri].size / VM_PAGE_SIZE;
}

static uint64_t region_words(const struct postcopy_src *pc, unsigned ri)
{
	return (region_pages(pc, ri) + 63) / 64;
}

/* Page p of ri is no longer owed; true when it was (the caller sends it). */
static bool take_owed(struct postcopy_src *pc, unsigned ri, uint64_t p)
{
	uint64_t bit = 1ull << (p % 64);
	uint64_t old = __atomic_fetch_and(&pc->owed[ri][p / 64], ~bit, __ATOMIC_ACQ_REL);

	if (!(old & bit))
		return false;
	atomic_fetch_sub(&pc->owed_pages, 1);
	return true;
}

static uint64_t count_owed(struct postcopy_src *pc)
{
	uint64_t n = 0;

	for (unsigned ri = 0; ri < pc->s->vm->nr_regions; ri++)
		for (uint64_t w = 0; w < region_words(pc, ri); w++)
			n += (uint64_t)__builtin_popcountll(
				__atomic_load_n(&pc->owed[ri][w], __ATOMIC_ACQUIRE));
	return n;
}

/* ---- the fault channel: pages a vCPU there waits for ---------------------- */

static int fault_sink(void *opaque, const struct iovec *iov, int iovcnt)
{
	return xport_sendv(opaque, iov, iovcnt);
}

static int answer(struct postcopy_src *pc, const struct mig_page_req *rq, unsigned n)
{
	const struct vm *vm = pc->s->vm;

	for (unsigned i = 0; i < n; i++) {
		uint32_t ri = le32toh(rq[i].slot);
		uint64_t p = le64toh(rq[i].page);

		if (ri >= vm->nr_regions || p >= region_pages(pc, ri))
			return -EPROTO;	/* a page no region has */
		/* asked for: sent at once, even if the push sent it already
		 * (it may still be queued behind the push's backlog) */
		take_owed(pc, ri, p);
		atomic_store(&pc->hint_ri, ri);
		atomic_store(&pc->hint_page, p);
		atomic_store(&pc->hint, true);
		if (ckpt_writer_page(pc->fw, vm->regions[ri].id, p,
				     vm->regions[ri].host + p * VM_PAGE_SIZE, NULL))
			return ckpt_writer_error(pc->fw);
	}
	atomic_fetch_add(&pc->requests, n);
	return ckpt_writer_flush(pc->fw) ? ckpt_writer_error(pc->fw) : 0;
}

static void *server_main(void *arg)
{
	struct postcopy_src *pc = arg;
	struct mig_page_req rq[MIG_PAGE_REQ_MAX + 1];
	int ret = 0;

	/* a vCPU there waits for each answer: ahead of the push for a core */
	setpriority(PRIO_PROCESS, (id_t)gettid(), -10);

	while (!ret && !atomic_load(&pc->server_stop)) {
		uint16_t type;
		uint32_t len = 0;

		ret = xport_poll_in(pc->fault, 100);
		if (ret <= 0)
			continue;
		ret = mig_msg_recv(pc->fault, &type, (char *)rq, sizeof(rq), &len);
		if (!ret && (type != MIG_MSG_PAGE_REQ || len % sizeof(rq[0])))
			ret = -EPROTO;
		if (!ret)
			ret = answer(pc, rq, len / sizeof(rq[0]));
	}
	if (ret < 0)
		atomic_store(&pc->server_err, ret);
	return NULL;
}

static int server_start(struct postcopy_src *pc, struct xport *fault)
{
	struct ckpt_sink sink = { fault_sink, fault };
	struct ckpt_writer_opts wo = pc->s->wo;

	wo.lz4_auto = false;	/* a lone page: raw or LZ4, whichever is smaller */
	fault->idle_ok = true;	/* no request for a while is no failure */
	pc->fault = fault;
	pc->s->fault = fault;
	pc->fw = ckpt_writer_new(&sink, &wo);
	if (!pc->fw || ckpt_writer_header(pc->fw, &pc->info) ||
	    ckpt_writer_marker(pc->fw, CKPT_MARK_ROUND, 1) || ckpt_writer_flush(pc->fw))
		return pc->fw ? ckpt_writer_error(pc->fw) : -ENOMEM;
	atomic_store(&pc->server_stop, false);
	atomic_store(&pc->server_err, 0);
	if (pthread_create(&pc->server, NULL, server_main, pc))
		return -EAGAIN;
	pc->server_running = true;
	return 0;
}

static void server_stop(struct postcopy_src *pc, bool finish)
{
	if (pc->server_running) {
		atomic_store(&pc->server_stop, true);
		pthread_join(pc->server, NULL);
		pc->server_running = false;
	}
	if (pc->fw && finish)
		ckpt_writer_finish(pc->fw, NULL);
	ckpt_writer_free(pc->fw);
	pc->fw = NULL;
}

/* ---- the switch ------------------------------------------------------------ */

/* The owed bitmaps as POSTCOPY records, one per region. */
static int send_owed(struct postcopy_src *pc)
{
	struct source *s = pc->s;

	for (unsigned ri = 0; ri < s->vm->nr_regions; ri++) {
		uint64_t words = region_words(pc, ri);
		size_t len = sizeof(struct ckpt_postcopy_rec) + words * 8;
		struct ckpt_postcopy_rec *h = malloc(len);
		uint64_t *bm = (uint64_t *)(h + 1);
		int ret;

		if (!h)
			return -ENOMEM;
		*h = (struct ckpt_postcopy_rec){ .region_id = htole32(s->vm->regions[ri].id),
						 .count = htole64(region_pages(pc, ri)) };
		for (uint64_t w = 0; w < words; w++)
			bm[w] = htole64(pc->owed[ri][w]);
		ret = ckpt_writer_state(s->w, CKPT_STATE_POSTCOPY, ri, 1, false, h, len);
		free(h);
		if (ret)
			return ckpt_writer_error(s->w);
	}
	return 0;
}

/* Pause, state and owed pages, LOADED, GO, RUNNING. Before GO a failure
 * is the caller's to undo (the guest resumes here); *handed says whether
 * GO went out. */
static int hand_over(struct postcopy_src *pc, unsigned next, bool *handed)
{
	struct source *s = pc->s;
	uint64_t owed = 0, bytes;
	struct ckpt_writer_stats ws;
	double t[3] = { 0 };
	int ret;

	*handed = false;
	if (ckpt_writer_marker(s->w, CKPT_MARK_ROUND, next) || ckpt_writer_flush(s->w))
		return ckpt_writer_error(s->w);
	ret = page_out_marker(s->out, next);
	if (!ret)
		ret = page_out_flush(s->out);
	if (!ret)
		ret = src_wait_caught_up(s, next);
	if (ret)
		return ret;
	if (next > 1) {
		/* B drops its stale copies of what is dirty now while the guest
		 * still runs here: the pause then drops only what it adds */
		for (unsigned ri = 0; ri < s->vm->nr_regions; ri++)
			pc->owed[ri] = s->dirty[ri];
		ret = send_owed(pc);
		next++;
		if (!ret && (ckpt_writer_marker(s->w, CKPT_MARK_ROUND, next) ||
			     ckpt_writer_flush(s->w)))
			ret = ckpt_writer_error(s->w);
		if (!ret)
			ret = src_wait_caught_up(s, next);
		if (ret)
			return ret;
	}
	src_throttle_stop(s);
	src_pause(s);
	s->t_pause = now();
	s->paused = true;
	src_set_status(s, MIG_DEVICE);
	src_totals(s, &ws, &pc->bytes_at_pause);
	ret = src_sync_dirty(s, &owed, true);
	if (ret)
		return ret;
	t[0] = now();
	for (unsigned ri = 0; ri < s->vm->nr_regions; ri++)
		pc->owed[ri] = s->dirty[ri];	/* from now on: owed, atomic words */
	atomic_store(&pc->owed_pages, count_owed(pc));
	ret = s->vm->ops->save_state(s->vm, s->w);
	if (!ret)
		ret = send_owed(pc);
	if (!ret && (ckpt_writer_marker(s->w, CKPT_MARK_ROUND, next + 1) ||
		     ckpt_writer_flush(s->w)))
		ret = ckpt_writer_error(s->w);
	t[1] = now();
	if (!ret)
		ret = src_wait_msg(s, MIG_MSG_LOADED);
	t[2] = now();
	if (!ret && atomic_load(&s->prog->cancel))
		ret = -ECANCELED;
	if (ret)
		return ret;

	/* Its vCPUs fault from their first instruction on, maybe before its
	 * RUNNING (a resume may wait for them): answer from before GO. */
	ret = server_start(pc, s->p->fault_channel);
	if (ret)
		return ret;
	/* The point of no return: from GO on, the guest is the destination's. */
	src_set_status(s, MIG_POSTCOPY_ACTIVE);
	*handed = true;
	ret = mig_msg_send(s->x, MIG_MSG_GO, NULL, 0);
	if (!ret)
		ret = src_wait_msg(s, MIG_MSG_RUNNING);
	if (ret == -ECONNABORTED) {
		*handed = false;	/* B said ERROR, not RUNNING: it discarded its copy */
		return ret;
	}
	if (getenv("VMIGRATE_DEBUG"))
		fprintf(stderr, "vmigrate: post-copy switch: %llu pages owed; sync %.2f ms, state "
			"and bitmaps %.2f ms, until loaded %.2f ms, until running %.2f ms\n",
			(unsigned long long)owed, (t[0] - s->t_pause) * 1e3, (t[1] - t[0]) * 1e3,
			(t[2] - t[1]) * 1e3, (now() - t[2]) * 1e3);
	src_totals(s, &ws, &bytes);
	pc->bytes_at_run = bytes;
	pthread_mutex_lock(&s->prog->lock);
	s->prog->stats.downtime_ms = (uint64_t)((now() - s->t_pause) * 1000);
	s->prog->stats.precopy_bytes = pc->bytes_at_pause;
	s->prog->stats.downtime_bytes = bytes - pc->bytes_at_pause;
	pthread_mutex_unlock(&s->prog->lock);
	return ret;
}

/* ---- the background push ---------------------------------------------------- */

/* Send the claimed pages of [first, end) of region ri: holes of the memfd
 * (never written) as zero runs without reading them, the rest as pages. */
static int send_claimed(struct postcopy_src *pc, unsigned ri, uint64_t first, uint64_t end)
{
	struct source *s = pc->s;
	const struct vm_region *r = &s->vm->regions[ri];
	uint64_t *bm = pc->claim[ri];
	struct src_data_run data = { .ri = -1u };
	uint64_t p = first;
	int ret = 0;

	while (!ret && p < end) {
		uint64_t h = src_hole_end(&data, ri, r, p, end), d;

		for (uint64_t q = p; !ret && q < h; ) {	/* owed pages in the hole */
			uint64_t run = q;

			while (run < h && ((bm[run / 64] >> (run % 64)) & 1))
				run++;
			if (run > q)
				ret = page_out_zero(s->out, r, ri, q, run - q);
			q = run + 1;
		}
		if (ret || h >= end)
			break;
		d = src_data_end(&data, ri, r, h, end);
		if (d <= h)
			d = h + 1;
		ret = page_out_pages(s->out, r, ri, bm, h, d);
		p = d;
	}
	memset(&bm[first / 64], 0, (end - first + 63) / 64 * 8);
	return ret;
}

/* Claim up to PUSH_WORDS owed words from the cursor on; false when none
 * is left anywhere. */
static bool claim_next(struct postcopy_src *pc, unsigned *ri, uint64_t *first, uint64_t *end)
{
	const struct vm *vm = pc->s->vm;

	if (atomic_exchange(&pc->hint, false)) {
		/* near what the guest touched last: it is likely to touch more */
		pc->cur_ri = atomic_load(&pc->hint_ri);
		pc->cur_word = atomic_load(&pc->hint_page) / 64;
	}
	for (unsigned tries = 0; tries <= vm->nr_regions; tries++) {
		unsigned r = pc->cur_ri % vm->nr_regions;
		uint64_t words = region_words(pc, r);

		for (uint64_t w = pc->cur_word; w < words; w++) {
			uint64_t got = 0, last = w;

			if (!__atomic_load_n(&pc->owed[r][w], __ATOMIC_ACQUIRE))
				continue;
			for (uint64_t k = w; k < words && k < w + PUSH_WORDS; k++) {
				uint64_t bits = __atomic_exchange_n(&pc->owed[r][k], 0,
								    __ATOMIC_ACQ_REL);

				pc->claim[r][k] = bits;
				got += (uint64_t)__builtin_popcountll(bits);
				last = k;
			}
			atomic_fetch_sub(&pc->owed_pages, got);
			*ri = r;
			*first = w * 64;
			*end = (last + 1) * 64 < region_pages(pc, r) ? (last + 1) * 64 :
								       region_pages(pc, r);
			pc->cur_ri = r;
			pc->cur_word = last + 1;
			return true;
		}
		pc->cur_ri = (r + 1) % vm->nr_regions;
		pc->cur_word = 0;
	}
	return false;	/* only the server clears bits meanwhile: none left */
}

static void publish(struct postcopy_src *pc)
{
	struct source *s = pc->s;
	uint64_t owed = atomic_load(&pc->owed_pages);

	src_account(s);
	pthread_mutex_lock(&s->prog->lock);
	s->prog->stats.remaining_pages = owed;
	s->prog->stats.postcopy_requests = atomic_load(&pc->requests);
	if (s->prog->stats.transferred_bytes > pc->bytes_at_run)
		s->prog->stats.postcopy_bytes = s->prog->stats.transferred_bytes - pc->bytes_at_run;
	pthread_mutex_unlock(&s->prog->lock);
}

/* Push every owed page, then end the streams and wait for ALL_IN. */
static int push(struct postcopy_src *pc)
{
	struct source *s = pc->s;
	bool slow = fault_point("src-postcopy-slow-push");
	double deadline;
	unsigned ri;
	uint64_t first, end;
	int ret;

	src_begin_count(s, atomic_load(&pc->owed_pages), 0);
	while (claim_next(pc, &ri, &first, &end)) {
		ret = send_claimed(pc, ri, first, end);
		if (!ret)
			ret = atomic_load(&pc->server_err);
		if (!ret)
			ret = ckpt_writer_error(s->w);
		if (!ret)
			ret = src_check_peer(s);
		if (ret)
			return ret;
		publish(pc);
		if (slow)
			usleep(20000);	/* tests: a long post-copy phase */
	}
	ret = page_out_finish(s->out);
	if (!ret && ckpt_writer_finish(s->w, NULL))
		ret = ckpt_writer_error(s->w);
	/* the server answers until B has everything: ALL_IN (a link that went
	 * silent meanwhile is a broken one) */
	deadline = now() + 3.0 * (s->p->io_timeout_ms > 0 ? s->p->io_timeout_ms : 5000) / 1e3;
	while (!ret) {
		uint16_t type;

		ret = atomic_load(&pc->server_err);
		if (!ret && now() > deadline)
			ret = -ETIMEDOUT;
		if (ret)
			break;
		ret = xport_poll_in(s->x, 100);
		if (ret <= 0)
			continue;
		ret = src_take_msg(s, &type);
		if (!ret && type == MIG_MSG_ALL_IN)
			break;
	}
	publish(pc);
	return ret;
}

/* ---- recovery ------------------------------------------------------------------ */

/* B's MISSING bitmaps: what it still lacks is what is owed now. */
static int take_missing(struct postcopy_src *pc)
{
	struct source *s = pc->s;
	char msg[MIG_MSG_MAX + 1];
	double deadline = now() + (s->p->io_timeout_ms > 0 ? s->p->io_timeout_ms / 1e3 : 60);

	for (unsigned ri = 0; ri < s->vm->nr_regions; ri++)
		for (uint64_t w = 0; w < region_words(pc, ri); w++)
			__atomic_store_n(&pc->owed[ri][w], 0, __ATOMIC_RELEASE);
	for (;;) {
		struct mig_missing_hdr h;
		uint16_t type;
		uint32_t len = 0;
		int ret;

		if (now() > deadline)
			return -ETIMEDOUT;
		ret = xport_poll_in(s->x, 100);
		if (ret < 0)
			return ret;
		if (!ret)
			continue;
		ret = mig_msg_recv(s->x, &type, msg, sizeof(msg), &len);
		if (ret)
			return ret;
		if (type == MIG_MSG_ERROR) {
			snprintf(s->peer_error, sizeof(s->peer_error), "destination: %.200s", msg);
			return -ECONNABORTED;
		}
		if (type != MIG_MSG_MISSING || len < sizeof(h))
			return -EPROTO;
		memcpy(&h, msg, sizeof(h));
		h.slot = le32toh(h.slot);
		h.words = le32toh(h.words);
		h.first_word = le64toh(h.first_word);
		if (!h.words)
			break;
		if (h.slot >= s->vm->nr_regions || len != sizeof(h) + (uint64_t)h.words * 8 ||
		    h.first_word + h.words > region_words(pc, h.slot))
			return -EPROTO;
		for (uint32_t k = 0; k < h.words; k++) {
			uint64_t v;

			memcpy(&v, msg + sizeof(h) + k * 8, 8);
			__atomic_store_n(&pc->owed[h.slot][h.first_word + k], le64toh(v),
					 __ATOMIC_RELEASE);
		}
	}
	atomic_store(&pc->owed_pages, count_owed(pc));
	pc->cur_ri = 0;
	pc->cur_word = 0;
	return 0;
}

static int sink_writev(void *opaque, const struct iovec *iov, int iovcnt)
{
	struct source *s = opaque;

	return xport_sendv(s->x, iov, iovcnt);
}

/* The links are down: wait for new ones, then carry on from what B lacks. */
static int recover(struct postcopy_src *pc, struct mig_links *links)
{
	struct source *s = pc->s;
	struct ckpt_sink sink = { sink_writev, s };
	int ret;

	server_stop(pc, false);
	page_out_free(s->out);
	s->out = NULL;
	src_set_status(s, MIG_POSTCOPY_PAUSED);
	for (;;) {
		if (!s->p->reconnect ||
		    s->p->reconnect(s->p->reconnect_opaque, links) < 0)
			return -ENOLINK;
		/* from here on the new links are ours; the old ones the caller's */
		s->x = links->control;
		s->x->bucket = &s->prog->bandwidth;
		for (unsigned i = 0; i < links->nr_data; i++)
			links->data[i]->bucket = &s->prog->bandwidth;
		ckpt_writer_free(s->w);
		s->w = ckpt_writer_new(&sink, &s->wo);
		if (!s->w)
			return -ENOMEM;
		ret = ckpt_writer_header(s->w, &pc->info) || ckpt_writer_flush(s->w) ?
		      ckpt_writer_error(s->w) : take_missing(pc);
		if (!ret && !(s->out = page_out_new(s->w, links->data, links->nr_data, &pc->info,
						   &s->wo, src_tick, s)))
			ret = -ENOMEM;
		if (!ret && (ckpt_writer_marker(s->w, CKPT_MARK_ROUND, 1) ||
			     page_out_marker(s->out, 1)))
			ret = -EPIPE;
		if (!ret)
			ret = server_start(pc, links->fault);
		if (!ret)
			break;
		server_stop(pc, false);
		page_out_free(s->out);
		s->out = NULL;
		if (ret == -ECONNABORTED)
			return ret;	/* B said why: nothing to recover */
	}
	pthread_mutex_lock(&s->prog->lock);
	s->prog->stats.recoveries++;
	pthread_mutex_unlock(&s->prog->lock);
	src_set_status(s, MIG_POSTCOPY_ACTIVE);
	return 0;
}

int postcopy_src_run(struct source *s, unsigned next)
{
	struct postcopy_src pc = { .s = s };
	struct mig_links links;
	bool handed = false;
	int ret = -ENOMEM;

	if (!s->p->fault_channel)
		return -EOPNOTSUPP;
	pc.info = s->info;
	for (unsigned ri = 0; ri < s->vm->nr_regions; ri++)
		if (!(pc.claim[ri] = calloc(1, vm_bitmap_bytes(&s->vm->regions[ri]))))
			goto out;
	s->pc = &pc;
	ret = hand_over(&pc, next, &handed);
	if (!handed) {
		server_stop(&pc, false);
		goto out;	/* the guest resumes here */
	}
	for (;;) {
		if (!ret)
			ret = push(&pc);
		if (!ret)
			break;
		if (ret == -ECONNABORTED && s->peer_error[0]) {
			/* B gave up on the guest it runs: nothing here can help */
			src_fail(s, "post-copy failed at the destination (%s): the guest is lost "
				 "in flight; it stays paused here, its copy stale", s->peer_error);
			ret = -ENOLINK;
			break;
		}
		ret = recover(&pc, &links);
		if (ret) {
			src_fail(s, "post-copy lost its link to the destination and could not "
				 "re-make it: the guest is lost in flight (its memory is split "
				 "between the hosts); it stays paused here and must not be resumed");
			ret = -ENOLINK;
			break;
		}
	}
	server_stop(&pc, !ret);
	if (!ret) {
		struct mig_stats st;

		publish(&pc);
		mig_progress_get(s->prog, &st);
		src_completed(s);
		pthread_mutex_lock(&s->prog->lock);
		s->prog->stats.downtime_ms = st.downtime_ms;	/* the pause, not the job */
		pthread_mutex_unlock(&s->prog->lock);
	} else {
		src_set_status(s, MIG_LOST);
	}
out:
	if (handed && ret)
		ret = -ENOLINK;
	for (unsigned ri = 0; ri < VM_MAX_REGIONS; ri++)
		free(pc.claim[ri]);
	s->pc = NULL;
	return ret;
}
