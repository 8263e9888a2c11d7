/*
 * Source side of pre-copy: rounds of dirty pages while the guest runs,
 * then the switchover. The dirty log of a chunk is cleared just before
 * the chunk's pages are read, so a write that lands after the read is in
 * the next round's bitmap and none is lost. Round 1 skips the holes of the
 * guest's memfd (never-written RAM) without reading them.
 *
 * Convergence: after each round the next round's dirty set is known; if
 * sending it at the measured rate fits the downtime limit, the guest is
 * paused and the switchover begins (protocol.c), unless the rounds still
 * shrink: the limit is a ceiling, not a target, so while a round leaves at
 * most three quarters of what it sent to the next one, up to EXTRA_ROUNDS
 * more go out (precopy_more()). Auto-converge throttles the vCPUs when the guest dirties
 * faster than the link drains.
 *
 * Progress (src_account()): the rate on the wire and the rate of pages dirtied
 * again after they were sent, both over about the last two seconds; the
 * dirty log is peeked at a few times a second in the middle of a round, so
 * both are known from round 1 on (peek_dirty() says why that loses no
 * write). What remains and the ETA count the pages a writer has actually
 * encoded, not the ones queued for the channels.
 */
#include "migrate.h"

#include <endian.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "channels.h"
#include "digests.h"
#include "fault.h"
#include "protocol.h"
#include "source_internal.h"

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

void mig_params_default(struct mig_params *p)
{
	memset(p, 0, sizeof(*p));
	p->max_downtime_ms = 300;
	p->compress = MIG_COMPRESS_AUTO;
	p->io_timeout_ms = 5000;
	p->peer_reads_live = true;
}

int mig_params_check(const struct mig_params *p, char *err, size_t errlen)
{
	if (p->max_downtime_ms >= MIG_MIN_DOWNTIME_MS ||
	    (p->timeout_s > 0 && p->force_on_timeout))
		return 0;
	snprintf(err, errlen, "--max-downtime %llu ms can never be met: saving and loading the "
		 "guest's state alone takes about %d ms, so pre-copy would go on for ever; give "
		 "at least %d, or add --timeout S --on-timeout force to switch over after S "
		 "seconds whatever the downtime", (unsigned long long)p->max_downtime_ms,
		 MIG_MIN_DOWNTIME_MS, MIG_MIN_DOWNTIME_MS);
	return -EINVAL;
}

int mig_postcopy_parse(const char *v, struct mig_params *p)
{
	char *end;
	unsigned long n;

	p->postcopy_after = 0;
	if (!strcmp(v, "off")) {
		p->postcopy = MIG_POSTCOPY_OFF;
	} else if (!strcmp(v, "pure") || !strcmp(v, "now") || !strcmp(v, "0")) {
		p->postcopy = MIG_POSTCOPY_PURE;
	} else if (!strcmp(v, "auto")) {
		p->postcopy = MIG_POSTCOPY_AUTO;
	} else {
		errno = 0;
		n = strtoul(v, &end, 10);
		if (errno || end == v || *end || n > 1000 || v[0] == '-')
			return -EINVAL;
		p->postcopy = MIG_POSTCOPY_AFTER;
		p->postcopy_after = (unsigned)n;
	}
	return 0;
}

/* "auto" is migration's own; the compressors are named by ckpt-format. */
int mig_compress_parse(const char *name, enum mig_compress *out)
{
	enum ckpt_compressor c;

	if (!strcmp(name, "auto")) {
		*out = MIG_COMPRESS_AUTO;
		return 0;
	}
	if (ckpt_compressor_parse(name, &c))
		return -EINVAL;
	*out = c == CKPT_COMPRESSOR_ZSTD ? MIG_COMPRESS_ZSTD :
	       c == CKPT_COMPRESSOR_OFF ? MIG_COMPRESS_OFF : MIG_COMPRESS_LZ4;
	return 0;
}

const char *mig_compress_name(enum mig_compress c)
{
	if (c == MIG_COMPRESS_AUTO)
		return "auto";
	return ckpt_compressor_name(c == MIG_COMPRESS_ZSTD ? CKPT_COMPRESSOR_ZSTD :
				    c == MIG_COMPRESS_OFF ? CKPT_COMPRESSOR_OFF : CKPT_COMPRESSOR_LZ4);
}

bool mig_compress_fit_peer(enum mig_compress *c, unsigned peer_minor, char *why, size_t len)
{
	if (*c != MIG_COMPRESS_ZSTD || peer_minor >= CKPT_MINOR_ZSTD)
		return false;
	snprintf(why, len, "the destination reads record format %u.%u, zstd pages need %u.%u: "
		 "compressing with lz4 instead", CKPT_VERSION_MAJOR, peer_minor,
		 CKPT_VERSION_MAJOR, CKPT_MINOR_ZSTD);
	*c = MIG_COMPRESS_LZ4;
	return true;
}

void mig_progress_init(struct mig_progress *p)
{
	memset(p, 0, sizeof(*p));
	p->stats.eta_s = -1;	/* unknown until pages go out */
	pthread_mutex_init(&p->lock, NULL);
	xport_bucket_init(&p->bandwidth, 0);
}

void mig_progress_get(struct mig_progress *p, struct mig_stats *out)
{
	pthread_mutex_lock(&p->lock);
	*out = p->stats;
	pthread_mutex_unlock(&p->lock);
}

const char *mig_status_name(enum mig_status s)
{
	static const char *const names[] = {
		[MIG_SETUP] = "setup", [MIG_ACTIVE] = "active", [MIG_DEVICE] = "device",
		[MIG_COMPLETED] = "completed", [MIG_FAILED] = "failed",
		[MIG_CANCELLED] = "cancelled", [MIG_UNCERTAIN] = "uncertain",
		[MIG_POSTCOPY_ACTIVE] = "postcopy-active",
		[MIG_POSTCOPY_PAUSED] = "postcopy-paused", [MIG_LOST] = "lost-in-flight",
	};

	return (unsigned)s < sizeof(names) / sizeof(names[0]) ? names[s] : "unknown";
}

void src_set_status(struct source *s, enum mig_status st)
{
	pthread_mutex_lock(&s->prog->lock);
	s->prog->stats.status = st;
	pthread_mutex_unlock(&s->prog->lock);
}

void src_fail(struct source *s, const char *fmt, ...)
{
	va_list ap;

	pthread_mutex_lock(&s->prog->lock);
	if (!s->prog->stats.error[0]) {
		va_start(ap, fmt);
		vsnprintf(s->prog->stats.error, sizeof(s->prog->stats.error), fmt, ap);
		va_end(ap);
	}
	pthread_mutex_unlock(&s->prog->lock);
}

static int sink_writev(void *opaque, const struct iovec *iov, int iovcnt)
{
	struct source *s = opaque;

	fault_corrupt_batch(iov, iovcnt, s->x->bytes_sent, 4u << 20);
	return xport_sendv(s->x, iov, iovcnt);
}

/* ---- throttling for auto-converge --------------------------------------- */

static void *throttle_main(void *arg)
{
	struct source *s = arg;

	while (!atomic_load(&s->throttle_stop)) {
		unsigned pct = atomic_load(&s->throttle_pct);

		if (!pct) {
			usleep(THROTTLE_PERIOD_US);
			continue;
		}
		if (s->p->run_lock)
			pthread_mutex_lock(s->p->run_lock);
		vm_pause(s->vm);
		usleep(THROTTLE_PERIOD_US * pct / 100);
		vm_resume(s->vm);
		if (s->p->run_lock)
			pthread_mutex_unlock(s->p->run_lock);
		usleep(THROTTLE_PERIOD_US * (100 - pct) / 100);
	}
	return NULL;
}

static void throttle_set(struct source *s, unsigned pct)
{
	atomic_store(&s->throttle_pct, pct);
	if (pct && !s->throttle_running &&
	    pthread_create(&s->throttle_thread, NULL, throttle_main, s) == 0)
		s->throttle_running = true;
	pthread_mutex_lock(&s->prog->lock);
	s->prog->stats.throttle_percentage = pct;
	pthread_mutex_unlock(&s->prog->lock);
}

void src_throttle_stop(struct source *s)
{
	if (!s->throttle_running)
		return;
	atomic_store(&s->throttle_stop, true);
	pthread_join(s->throttle_thread, NULL);	/* it ends resumed: each slice does */
	s->throttle_running = false;
}

void src_pause(struct source *s)
{
	if (s->p->run_lock && !s->run_locked) {
		pthread_mutex_lock(s->p->run_lock);
		s->run_locked = true;
	}
	vm_pause(s->vm);
}

void src_resume(struct source *s)
{
	if (s->p->run_lock && !s->run_locked) {
		pthread_mutex_lock(s->p->run_lock);
		s->run_locked = true;
	}
	vm_resume(s->vm);
	if (s->run_locked) {
		s->run_locked = false;
		pthread_mutex_unlock(s->p->run_lock);
	}
}

/* ---- peer and progress checks between chunks ---------------------------- */

/* A message from the destination, acted on: READY and ROUND are noted,
 * ERROR keeps the reason and ends the run. */
static int act_on_msg(struct source *s, uint16_t type, const char *msg, uint32_t len)
{
	switch (type) {
	case MIG_MSG_READY:
		pthread_mutex_lock(&s->prog->lock);
		if (!s->prog->stats.setup_time_ms)
			s->prog->stats.setup_time_ms = (uint64_t)((now() - s->t_start) * 1000);
		pthread_mutex_unlock(&s->prog->lock);
		return 0;
	case MIG_MSG_ROUND: {
		uint64_t n;

		if (len != sizeof(n))
			return -EPROTO;	/* else a round from stack garbage */
		memcpy(&n, msg, sizeof(n));
		s->dest_round = le64toh(n);
		return 0;
	}
	case MIG_MSG_ERROR:
		snprintf(s->peer_error, sizeof(s->peer_error), "destination: %.200s", msg);
		return -ECONNABORTED;
	case MIG_MSG_ALL_IN: {
		struct mig_all_in a;

		if (len != sizeof(a))
			return -EPROTO;
		memcpy(&a, msg, sizeof(a));
		pthread_mutex_lock(&s->prog->lock);
		s->prog->stats.postcopy_requests = le64toh(a.requests);
		s->prog->stats.fault_p50_ms = le32toh(a.fault_p50_us) / 1e3;
		s->prog->stats.fault_p99_ms = le32toh(a.fault_p99_us) / 1e3;
		pthread_mutex_unlock(&s->prog->lock);
		return 0;
	}
	case MIG_MSG_LOADED:
	case MIG_MSG_RUNNING:
		return 0;	/* the switchover waits for these */
	default:
		return -EPROTO;
	}
}

/* Receive one message from the destination and act on it; sets *type. */
int src_take_msg(struct source *s, uint16_t *type)
{
	char msg[MIG_MSG_MAX + 1];
	uint32_t len = 0;
	int ret = mig_msg_recv(s->x, type, msg, sizeof(msg), &len);

	return ret ? ret : act_on_msg(s, *type, msg, len);
}

/* Messages already waiting, taken without blocking. */
int src_check_peer(struct source *s)
{
	uint16_t type;
	int ret;

	while ((ret = xport_poll_in(s->x, 0)) > 0) {
		ret = src_take_msg(s, &type);
		if (ret)
			return ret;
		if (type == MIG_MSG_LOADED || type == MIG_MSG_RUNNING)
			return -EPROTO;		/* not before the switchover */
	}
	return ret;
}

/* Wait until the destination has applied everything before MARKER round. */
int src_wait_caught_up(struct source *s, uint64_t round)
{
	double deadline = now() + (s->p->io_timeout_ms > 0 ? s->p->io_timeout_ms / 1000.0 : 60);
	int ret;

	while (s->dest_round < round) {
		if (atomic_load(&s->prog->cancel))
			return -ECANCELED;
		if (now() > deadline)
			return -ETIMEDOUT;
		ret = xport_poll_in(s->x, 50);
		if (ret < 0)
			return ret;
		ret = src_check_peer(s);
		if (ret)
			return ret;
	}
	return 0;
}

static int between_chunks(struct source *s, bool paused)
{
	int ret;

	if (atomic_load(&s->prog->cancel))
		return -ECANCELED;
	if (!paused && s->p->timeout_s > 0 && now() - s->t_start > s->p->timeout_s &&
	    !s->p->force_on_timeout) {
		s->policy_timeout = true;
		return -ETIMEDOUT;
	}
	ret = ckpt_writer_error(s->w);
	if (ret)
		return ret;
	ret = src_check_peer(s);
	if (!ret && !paused && s->p->fault_channel && atomic_load(&s->prog->postcopy_now))
		return SRC_SWITCH_NOW;
	return ret;
}

/* Page counts and bytes over the control stream and every data channel. */
void src_totals(struct source *s, struct ckpt_writer_stats *ws, uint64_t *bytes)
{
	const struct ckpt_writer_stats *c = ckpt_writer_stats(s->w);
	uint64_t data = 0;

	memset(ws, 0, sizeof(*ws));
	if (s->out)
		page_out_stats(s->out, ws, &data);
	for (int e = 0; e < CKPT_ENC_COUNT; e++)
		ws->pages[e] += c->pages[e];
	ws->page_bytes += c->page_bytes;
	ws->data_pages += c->data_pages;
	ws->bytes += c->bytes;
	ws->run_pages += c->run_pages;
	*bytes = s->x->bytes_sent + data + (s->fault ? s->fault->bytes_sent : 0);
}

static uint64_t count_bits(const uint64_t *bm, uint64_t first, uint64_t n)
{
	uint64_t c = 0;

	for (uint64_t p = first; p < first + n; p++)
		c += (bm[p / 64] >> (p % 64)) & 1;
	return c;
}

/*
 * A look at the dirty log in the middle of a round, for the dirty rate.
 * The log's dirty_sync may consume what it reports (the ring does), so
 * nothing it returns is dropped: a page still due in this round, in a
 * chunk not yet begun, is read after this look and needs nothing more;
 * every other page it names (already sent, in the chunk being sent, or
 * not in this round) goes to carry, which the round-end sync adds to the
 * next round. A page is at worst sent once more than needed, never lost.
 */
static void peek_dirty(struct source *s)
{
	uint64_t found = 0;

	for (unsigned ri = 0; ri < s->vm->nr_regions && !s->peek_failed; ri++) {
		size_t words = vm_bitmap_bytes(&s->vm->regions[ri]) / 8;
		uint64_t *peek = s->scratch[ri], *carry = s->carry[ri], *due = s->dirty[ri];
		size_t busy_lo = SIZE_MAX, busy_hi = 0;

		if (s->chunk_end && s->chunk_ri == ri) {
			busy_lo = s->chunk_first / 64;
			busy_hi = (s->chunk_end + 63) / 64;
		}
		memset(peek, 0, words * 8);
		if (s->vm->ops->dirty_sync(s->vm, ri, peek)) {
			s->peek_failed = true;	/* nothing taken: the round-end sync says why */
			break;
		}
		for (size_t w = 0; w < words; w++) {
			uint64_t keep = w >= busy_lo && w < busy_hi ? 0 : due[w];
			uint64_t add = peek[w] & ~keep & ~carry[w];

			carry[w] |= add;
			found += (uint64_t)__builtin_popcountll(add);
		}
	}
	s->carry_pages += found;
	s->redirtied += found;
}

/* The wire rate, the dirty rate and the bytes a page with content takes
 * as encoded (compression counted; what comes next looks like what came
 * last: data_pages and page_bytes both count written batches only, so
 * their ratio is exact) over the last RATE_WINDOW_S, from samples at least
 * 0.1 s apart; unknown (0) for the first 0.2 s. */
static void sample_rates(struct source *s, double t, uint64_t bytes, uint64_t data_pages,
			 uint64_t page_bytes)
{
	const struct rate_sample *from = NULL;
	unsigned n = s->win_count < RATE_SAMPLES ? s->win_count : RATE_SAMPLES;

	for (unsigned i = 0; i < n; i++) {	/* newest first */
		const struct rate_sample *e = &s->win[(s->win_count - 1 - i) % RATE_SAMPLES];

		if (t - e->t >= 0.2)
			from = e;
		if (t - e->t >= RATE_WINDOW_S)
			break;
	}
	if (from) {
		s->live_rate = (double)(bytes - from->bytes) / (t - from->t);
		s->live_dirty = (double)(s->redirtied - from->redirtied) / (t - from->t);
		if (data_pages - from->data_pages > 256)
			s->live_bpp = (double)(page_bytes - from->page_bytes) /
				      (double)(data_pages - from->data_pages);
	}
	if (!s->win_count || t - s->win[(s->win_count - 1) % RATE_SAMPLES].t >= 0.1) {
		s->win[s->win_count % RATE_SAMPLES] = (struct rate_sample){
			t, bytes, s->redirtied, data_pages, page_bytes };
		s->win_count++;
	}
}

/*
 * Seconds until the guest runs on the destination, or -1 when unknown.
 * wire_left: bytes still to send for the pages due (this round's and those
 * dirtied since they were sent). Sending them drains at the link rate b
 * while dirtying refills at d; once what is left fits the downtime limit
 * the guest is paused and the rest goes in the pause.
 */
static double eta_s(const struct source *s, double wire_left, double bpp, double elapsed)
{
	double b = s->live_rate > 0 ? s->live_rate : s->bandwidth;
	double d = s->live_dirty * bpp, fit, t = -1, t_left;
	const double state_s = STATE_OVERHEAD_MS / 1e3;

	if (b <= 0)
		return -1;
	fit = s->p->max_downtime_ms / 1e3 * b;
	if (s->paused || wire_left <= fit)
		t = wire_left / b + state_s;
	else if (d < b)
		t = (wire_left - fit) / (b - d) + fit / b + state_s;
	if (s->paused || s->p->timeout_s <= 0)
		return t;
	/* --timeout ends it first: forced over, or cancelled */
	t_left = s->p->timeout_s > elapsed ? s->p->timeout_s - elapsed : 0;
	if (t < 0 || t > t_left)
		t = s->p->force_on_timeout ? t_left + wire_left / b + state_s : t_left;
	return t;
}

/* The figures an operator watches, from what the writers have encoded. */
void src_account(struct source *s)
{
	struct ckpt_writer_stats stats, *ws = &stats;
	uint64_t bytes, encoded, done, runs, holes_left, left, data_left, normal, open_pages;
	double t = now(), elapsed = t - s->t_start, bpp, wire_left, eta, out_of_open;
	struct mig_stats *st = &s->prog->stats;

	src_totals(s, ws, &bytes);
	if (!s->paused && s->tracking && t - s->t_peek >= PEEK_EVERY_S) {
		peek_dirty(s);
		s->t_peek = t;
	}
	normal = ckpt_enc_content_pages(ws->pages);
	encoded = normal + ws->pages[CKPT_ENC_ZERO];
	sample_rates(s, t, bytes, ws->data_pages, ws->page_bytes);
	pthread_mutex_lock(&s->prog->lock);
	done = encoded + s->matched - s->round_base;
	if (done > st->round_pages)
		done = st->round_pages;
	runs = ws->run_pages - s->round_runs_base;
	holes_left = s->round_holes > runs ? s->round_holes - runs : 0;
	left = st->round_pages - done + s->carry_pages;
	data_left = left > holes_left ? left - holes_left : 0;
	/* the pages left are counted as pages with content, zero ones too */
	bpp = s->live_bpp > 0 ? s->live_bpp : VM_PAGE_SIZE;
	/* and so are the pages encoded into a batch that is not all on the
	 * wire yet (a writer's open batch; under a cap, one being sent), less
	 * what of it went out already: a batch is 4 MiB, seconds of a slow
	 * link, and leaving it out made the ETA short by that much */
	open_pages = normal > ws->data_pages ? normal - ws->data_pages : 0;
	out_of_open = bytes > ws->bytes ? (double)(bytes - ws->bytes) : 0;
	if (out_of_open > open_pages * bpp)
		out_of_open = open_pages * bpp;
	wire_left = (data_left + open_pages) * bpp - out_of_open;

	st->round_done = done;
	st->remaining_pages = left;
	st->transferred_bytes = bytes;
	st->zero_pages = ws->pages[CKPT_ENC_ZERO];
	st->normal_pages = normal;
	st->compressed_pages = ckpt_enc_compressed_pages(ws->pages);
	st->zstd_pages = ws->pages[CKPT_ENC_ZSTD];
	st->matched_pages = s->matched;
	st->total_time_ms = (uint64_t)(elapsed * 1000);
	st->mbps = s->live_rate * 8 / 1e6;
	st->dirty_pages_rate = (uint64_t)s->live_dirty;
	/* no estimate from the header alone: pages must have gone out */
	eta = bytes >= (1u << 20) ? eta_s(s, wire_left, bpp, elapsed) : -1;
	if (eta >= 0 && s->live_rate > 0)	/* QEMU's: the pause if it began now */
		st->expected_downtime_ms = (uint64_t)(wire_left / s->live_rate * 1000) +
					   STATE_OVERHEAD_MS;
	st->eta_s = eta;
	if (eta >= 0 && elapsed > 0) {
		double pct = 100.0 * elapsed / (elapsed + eta);

		if (pct > 99.9)
			pct = 99.9;	/* 100 only once the guest runs there */
		if (pct > s->percent)
			s->percent = pct;
	}
	st->percent = s->percent;
	pthread_mutex_unlock(&s->prog->lock);
}

/* While waiting for the channels: keep the figures live, and let a cancel
 * stop the wait instead of the queue draining at the link's pace. */
int src_tick(void *opaque)
{
	struct source *s = opaque;

	src_account(s);
	return atomic_load(&s->prog->cancel) ? -ECANCELED : 0;
}

/* ---- sending a round ----------------------------------------------------- */

/* From here on, progress counts against pages due (holes of them). */
void src_begin_count(struct source *s, uint64_t pages, uint64_t holes)
{
	struct ckpt_writer_stats ws;
	uint64_t bytes;

	src_totals(s, &ws, &bytes);
	s->round_base = ws.pages[CKPT_ENC_ZERO] + ckpt_enc_content_pages(ws.pages) + s->matched;
	s->round_runs_base = ws.run_pages;
	s->round_holes = holes;
	pthread_mutex_lock(&s->prog->lock);
	s->prog->stats.round_pages = pages;
	s->prog->stats.round_done = 0;
	pthread_mutex_unlock(&s->prog->lock);
}

/* Where the hole that page lies in ends (page itself when it holds data),
 * at most end: pages never written. */
uint64_t src_hole_end(struct src_data_run *run, unsigned ri, const struct vm_region *r,
		      uint64_t page, uint64_t end)
{
	off_t data;

	if (run->ri == ri && page >= run->first && page < run->end)
		return page;
	data = lseek(r->memfd, (off_t)(r->memfd_offset + page * VM_PAGE_SIZE), SEEK_DATA);
	if (data < 0)
		return errno == ENXIO ? end : page;	/* ENXIO: no data after off */
	data -= (off_t)r->memfd_offset;
	if ((uint64_t)data / VM_PAGE_SIZE > end)
		return end;
	return (uint64_t)data / VM_PAGE_SIZE;
}

uint64_t src_data_end(struct src_data_run *run, unsigned ri, const struct vm_region *r,
		      uint64_t page, uint64_t end)
{
	off_t hole;

	if (run->ri != ri || page < run->first || page >= run->end) {
		hole = lseek(r->memfd, (off_t)(r->memfd_offset + page * VM_PAGE_SIZE), SEEK_HOLE);
		if (hole < 0)
			return end;
		hole -= (off_t)r->memfd_offset;
		*run = (struct src_data_run){ ri, page,
					      ((uint64_t)hole + VM_PAGE_SIZE - 1) / VM_PAGE_SIZE };
	}
	return run->end > end ? end : run->end;
}

/* Pages of RAM never written, holes of the memfds, from the pages the
 * files hold (O(1): seeking through them costs a walk of every page);
 * round 1 sends them as bits. 0 when a file does not say. */
static uint64_t count_holes(const struct source *s)
{
	uint64_t pages = 0, held = 0;

	for (unsigned ri = 0; ri < s->vm->nr_regions; ri++) {
		const struct vm_region *r = &s->vm->regions[ri];
		bool seen = false;
		struct stat st;

		pages += r->size / VM_PAGE_SIZE;
		for (unsigned k = 0; k < ri; k++)
			seen |= s->vm->regions[k].memfd == r->memfd;
		if (seen)
			continue;
		if (fstat(r->memfd, &st) < 0)
			return 0;
		held += (uint64_t)st.st_blocks * 512 / VM_PAGE_SIZE;
	}
	return held < pages ? pages - held : 0;
}

/* Round 1 of a resynchronisation: pages the destination holds already
 * stay out of it. Read after their chunk's dirty log was cleared, so a
 * write that lands later is in the next round. */
static void drop_matching(struct source *s, unsigned ri, uint64_t first, uint64_t end)
{
	const struct vm_region *r = &s->vm->regions[ri];
	uint64_t *bm = s->dirty[ri];

	if (!s->have.pages)
		return;
	for (uint64_t p = first; p < end; p++) {
		if (((bm[p / 64] >> (p % 64)) & 1) &&
		    digests_match(&s->have, ri, p, r->host + p * VM_PAGE_SIZE)) {
			bm[p / 64] &= ~(1ull << (p % 64));
			s->matched++;
		}
	}
}

static int send_pages(struct source *s, unsigned ri, uint64_t first, uint64_t end)
{
	return page_out_pages(s->out, &s->vm->regions[ri], ri, s->dirty[ri], first, end);
}

static int send_round(struct source *s, unsigned round, bool skip_holes, bool paused,
		      bool marker)
{
	struct src_data_run run = { .ri = -1u };
	uint64_t total = 0, sent_before;
	struct ckpt_writer_stats before, after, *ws = &after;
	uint64_t pages_before, page_bytes_before;
	double t0 = now();
	int ret;

	src_totals(s, &before, &sent_before);
	pages_before = ckpt_enc_content_pages(before.pages);
	page_bytes_before = before.page_bytes;

	for (unsigned ri = 0; ri < s->vm->nr_regions; ri++)
		total += count_bits(s->dirty[ri], 0, s->vm->regions[ri].size / VM_PAGE_SIZE);
	s->paused = paused;
	src_begin_count(s, total, skip_holes ? count_holes(s) : 0);
	pthread_mutex_lock(&s->prog->lock);
	s->prog->stats.round = round;
	pthread_mutex_unlock(&s->prog->lock);

	if (marker && (ckpt_writer_marker(s->w, CKPT_MARK_ROUND, round) ||
		       ckpt_writer_flush(s->w) || page_out_marker(s->out, round)))
		return ckpt_writer_error(s->w) ? ckpt_writer_error(s->w) : -EPIPE;
	for (unsigned ri = 0; ri < s->vm->nr_regions; ri++) {
		const struct vm_region *r = &s->vm->regions[ri];
		uint64_t pages = r->size / VM_PAGE_SIZE;

		for (uint64_t c = 0; c < pages; c += CHUNK_PAGES) {
			uint64_t n = pages - c < CHUNK_PAGES ? pages - c : CHUNK_PAGES;
			uint64_t dirty = count_bits(s->dirty[ri], c, n);

			if (!dirty)
				continue;
			s->chunk_ri = ri;
			s->chunk_first = c;
			s->chunk_end = c + n;
			if (!paused) {
				ret = s->vm->ops->dirty_clear(s->vm, ri, c, n, s->dirty[ri]);
				if (ret)
					return ret;
			}
			if (!skip_holes) {
				ret = send_pages(s, ri, c, c + n);
			} else {
				uint64_t p = c;

				ret = 0;
				while (!ret && p < c + n) {
					uint64_t h = src_hole_end(&run, ri, r, p, c + n), d;

					if (h > p)
						ret = page_out_zero(s->out, r, ri, p, h - p);
					if (ret || h >= c + n)
						break;
					d = src_data_end(&run, ri, r, h, c + n);
					/* one call maps the run instead of a fault a page */
					madvise(r->host + h * VM_PAGE_SIZE,
						((d > h ? d : h + 1) - h) * VM_PAGE_SIZE,
						MADV_POPULATE_READ);
					drop_matching(s, ri, h, d > h ? d : h + 1);
					ret = send_pages(s, ri, h, d > h ? d : h + 1);
					p = d > h ? d : h + 1;
				}
			}
			memset(&s->dirty[ri][c / 64], 0, (n + 63) / 64 * 8);
			s->chunk_end = 0;
			if (ret)
				return ret;
			src_account(s);
			ret = between_chunks(s, paused);
			if (ret)
				return ret;
		}
	}
	if (ckpt_writer_flush(s->w))
		return ckpt_writer_error(s->w);
	ret = page_out_flush(s->out);
	if (ret)
		return ret;

	/* Link rate as seen through everything the round did. */
	{
		double dt = now() - t0;
		uint64_t bytes;

		src_totals(s, &after, &bytes);
		bytes -= sent_before;

		if (dt > 0.001 && bytes > (1u << 20)) {
			double bw = bytes / dt;

			s->bandwidth = s->bandwidth > 0 ? 0.5 * s->bandwidth + 0.5 * bw : bw;
		}
		s->pages_encoded += ckpt_enc_content_pages(ws->pages) - pages_before;
		s->bytes_encoded += ws->page_bytes - page_bytes_before;
	}
	src_account(s);
	return 0;
}

/* Fault point src-tear-written-page: the page sent torn counts as written,
 * as a real write during its send would be in the dirty log. */
static uint64_t take_written(struct source *s)
{
	uint32_t id;
	uint64_t page;

	if (!s->out || !page_out_take_written(s->out, &id, &page))
		return 0;
	for (unsigned ri = 0; ri < s->vm->nr_regions; ri++) {
		uint64_t bit = 1ull << (page % 64);

		if (s->vm->regions[ri].id != id || page >= s->vm->regions[ri].size / VM_PAGE_SIZE)
			continue;
		if (s->dirty[ri][page / 64] & bit)
			return 0;
		s->dirty[ri][page / 64] |= bit;
		return 1;
	}
	return 0;
}

/* Fetch the dirty bitmaps for the next round, with what peeks carried
 * over; returns dirty pages. after_round: they count as dirtied again. */
int src_sync_dirty(struct source *s, uint64_t *count, bool after_round)
{
	*count = 0;
	for (unsigned ri = 0; ri < s->vm->nr_regions; ri++) {
		size_t words = vm_bitmap_bytes(&s->vm->regions[ri]) / 8;
		int ret = s->vm->ops->dirty_sync(s->vm, ri, s->dirty[ri]);

		if (ret)
			return ret;
		for (size_t w = 0; w < words; w++) {
			s->dirty[ri][w] |= s->carry[ri][w];
			s->carry[ri][w] = 0;
		}
		*count += count_bits(s->dirty[ri], 0, s->vm->regions[ri].size / VM_PAGE_SIZE);
	}
	*count += take_written(s);
	if (after_round && *count > s->carry_pages)
		s->redirtied += *count - s->carry_pages;
	s->carry_pages = 0;
	pthread_mutex_lock(&s->prog->lock);
	s->prog->stats.dirty_sync_count++;
	pthread_mutex_unlock(&s->prog->lock);
	src_begin_count(s, *count, 0);	/* due next, none of it sent yet */
	return 0;
}

static uint64_t expected_downtime_ms(const struct source *s, uint64_t pages)
{
	double bpp = s->pages_encoded ? (double)s->bytes_encoded / s->pages_encoded : 4096;
	double bw = s->bandwidth > 0 ? s->bandwidth : 100e6;

	return (uint64_t)(pages * bpp / bw * 1000) + STATE_OVERHEAD_MS;
}

/* ---- switchover ---------------------------------------------------------- */

/* Block until the message want arrives, noting others on the way. */
int src_wait_msg(struct source *s, uint16_t want)
{
	uint16_t type;
	int ret;

	do {
		ret = src_take_msg(s, &type);
		if (!ret && type != want && (type == MIG_MSG_LOADED || type == MIG_MSG_RUNNING))
			ret = -EPROTO;	/* a switchover step out of its turn */
	} while (!ret && type != want);
	return ret;
}

/* The final figures of a completed job; mbps as QEMU's then: the average
 * over the transfer, setup excluded. */
void src_completed(struct source *s)
{
	struct ckpt_writer_stats ws;
	struct mig_stats *st = &s->prog->stats;
	uint64_t bytes;

	src_totals(s, &ws, &bytes);
	pthread_mutex_lock(&s->prog->lock);
	st->transferred_bytes = bytes;
	st->downtime_ms = (uint64_t)((now() - s->t_pause) * 1000);
	st->total_time_ms = (uint64_t)((now() - s->t_start) * 1000);
	if (st->total_time_ms > st->setup_time_ms)
		st->mbps = bytes * 8.0 / (double)(st->total_time_ms - st->setup_time_ms) / 1e3;
	st->status = MIG_COMPLETED;
	st->round_done = st->round_pages;
	st->remaining_pages = 0;
	st->eta_s = 0;
	st->percent = 100;
	pthread_mutex_unlock(&s->prog->lock);
}

/* Replication's sync is complete: B keeps its copy as a standby (it never
 * runs it on this word) and the guest goes on here. */
static int keep_running(struct source *s)
{
	int ret = mig_msg_send(s->x, MIG_MSG_STANDBY, NULL, 0);

	if (ret)
		return ret;
	src_resume(s);
	src_completed(s);
	return 0;
}

static int switchover(struct source *s, unsigned round)
{
	uint64_t remaining;
	double t[3] = { 0 };
	int ret;

	/* Let the destination drain its backlog while the guest still runs:
	 * otherwise the downtime would include it. */
	if (ckpt_writer_marker(s->w, CKPT_MARK_ROUND, round) || ckpt_writer_flush(s->w))
		return ckpt_writer_error(s->w);
	ret = page_out_marker(s->out, round);
	if (!ret)
		ret = page_out_flush(s->out);
	if (!ret)
		ret = src_wait_caught_up(s, round);
	if (ret)
		return ret;
	src_throttle_stop(s);
	src_pause(s);
	s->t_pause = now();
	src_set_status(s, MIG_DEVICE);
	ret = src_sync_dirty(s, &remaining, true);
	if (!ret)
		ret = send_round(s, round, false, true, false);
	t[0] = now();
	/* The state goes out on the control channel while the data channels
	 * still send the last pages: the destination loads the state (which
	 * touches no guest memory) as they land, and reports LOADED only once
	 * every data stream has ended too (dest.c), so nothing is lost by not
	 * waiting for them first. */
	if (!ret)
		ret = s->vm->ops->save_state(s->vm, s->w);
	if (!ret)
		ret = ckpt_writer_finish(s->w, NULL);
	if (!ret)
		ret = page_out_finish(s->out);
	t[1] = now();
	if (!ret)
		ret = src_wait_msg(s, MIG_MSG_LOADED);
	t[2] = now();
	if (!ret && fault_point("src-stall-before-go"))
		sleep(3);
	if (!ret && atomic_load(&s->prog->cancel))
		ret = -ECANCELED;
	if (!ret && now() - t[2] > MIG_GO_BOUND_MS / 2e3) {
		/* B may see this GO past its bound and discard itself, or not:
		 * better not to hand over than to leave the outcome uncertain */
		src_fail(s, "the switchover stalled %.0f ms after the destination loaded the "
			 "guest, past half the handover bound (%d ms): it resumes here",
			 (now() - t[2]) * 1e3, MIG_GO_BOUND_MS);
		ret = -ETIMEDOUT;
	}
	if (ret)
		return ret;	/* B has nothing that runs: A resumes */
	if (s->p->standby)
		return keep_running(s);

	/* The point of no return: after GO, A never resumes by itself. */
	src_set_status(s, MIG_UNCERTAIN);
	ret = mig_msg_send(s->x, MIG_MSG_GO, NULL, 0);
	if (!ret)
		ret = src_wait_msg(s, MIG_MSG_RUNNING);
	if (ret == -ECONNABORTED)
		return ret;	/* B said ERROR instead: it discarded its copy */
	if (ret) {
		src_fail(s, "no answer after handing the guest over (%s): it may run on the "
			 "destination; it stays paused here", strerror(-ret));
		return -EINPROGRESS;
	}
	if (getenv("VMIGRATE_DEBUG"))
		fprintf(stderr, "vmigrate: switchover: %llu final pages queued %.2f ms, state and "
			"their end %.2f ms, "
			"until loaded %.2f ms, until running %.2f ms\n",
			(unsigned long long)remaining, (t[0] - s->t_pause) * 1e3,
			(t[1] - t[0]) * 1e3, (t[2] - t[1]) * 1e3, (now() - t[2]) * 1e3);
	src_completed(s);
	return 0;
}

/* After a failure: the destination may have said why on the control
 * channel (a data channel's checksum, say); read it if it is there. */
static void last_words(struct source *s)
{
	uint16_t type;
	int err = s->x->err;

	s->x->err = 0;		/* the control channel may still be readable */
	while (xport_poll_in(s->x, 300) > 0 && src_take_msg(s, &type) == 0)
		;		/* until the ERROR, which take_msg keeps */
	if (err)
		s->x->err = err;
}

/* ---- the whole run -------------------------------------------------------- */

/* A standby's sync: what the destination holds already, before round 1
 * (digests.h). READY comes first; an ERROR ends the run. */
static int take_digests(struct source *s)
{
	char msg[MIG_MSG_MAX + 1];
	double deadline = now() + (s->p->io_timeout_ms > 0 ? s->p->io_timeout_ms / 1e3 : 60);
	uint16_t type;
	uint32_t len;
	int ret = digests_init(&s->have, s->vm);

	while (!ret) {
		if (now() > deadline)
			return -ETIMEDOUT;
		ret = xport_poll_in(s->x, 100);
		if (ret <= 0)
			continue;
		ret = mig_msg_recv(s->x, &type, msg, sizeof(msg), &len);
		if (ret)
			break;
		if (type == MIG_MSG_READY || type == MIG_MSG_ERROR) {
			ret = act_on_msg(s, type, msg, len);
			continue;
		}
		if (type != MIG_MSG_DIGESTS)
			return -EPROTO;
		ret = digests_take(&s->have, s->vm, msg, len);
		if (ret == 1)
			return 0;
	}
	return ret;
}

/* Post-copy's policy, after a round that did not converge: hybrid
 * switches after its rounds, auto once the rounds stopped shrinking (the
 * next one would be more than half of this one). */
static bool want_postcopy(const struct source *s, unsigned round, uint64_t due, uint64_t next)
{
	if (!s->p->fault_channel)
		return false;
	switch (s->p->postcopy) {
	case MIG_POSTCOPY_AFTER:
		return round >= s->p->postcopy_after;
	case MIG_POSTCOPY_AUTO:
		return next * 2 > due;
	default:
		return false;
	}
}

/* Rounds past the first one that fits the downtime limit, at most. */
#define EXTRA_ROUNDS	8

/* The last round fits the limit: one more round, rather than the switch,
 * while the rounds still shrink (the next is at most three quarters of
 * this one's due pages) and something beyond the state's own cost is
 * left: each such round takes time the guest runs, and leaves less for
 * the pause. */
static bool precopy_more(const struct source *s, unsigned extra, uint64_t due, uint64_t next,
			 uint64_t expect)
{
	if (extra >= EXTRA_ROUNDS || next == 0 || expect <= STATE_OVERHEAD_MS)
		return false;
	if (s->p->timeout_s > 0 && now() - s->t_start > s->p->timeout_s)
		return false;
	return next * 4 <= due * 3;
}

/* VMIGRATE_DEBUG=1: where a migration's time goes, on stderr. */
static void debug_mark(const struct source *s, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static void debug_mark(const struct source *s, const char *fmt, ...)
{
	static int on = -1;
	va_list ap;

	if (on < 0)
		on = getenv("VMIGRATE_DEBUG") != NULL;
	if (!on)
		return;
	fprintf(stderr, "vmigrate: %8.2f ms ", (now() - s->t_start) * 1e3);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

static int precopy(struct source *s)
{
	struct ckpt_image_info *info = &s->info;
	uint64_t dirty = 0;
	unsigned round = 1, extra = 0;
	int ret;

	vm_image_info(s->vm, info);
	if (getrandom(info->image_uuid, sizeof(info->image_uuid), 0) != sizeof(info->image_uuid))
		return -EIO;
	if (ckpt_writer_header(s->w, info) || s->vm->ops->save_config(s->vm, s->w) ||
	    ckpt_writer_flush(s->w))
		return ckpt_writer_error(s->w) ? ckpt_writer_error(s->w) : -EIO;
	if (s->p->standby) {
		ret = take_digests(s);
		if (ret)
			return ret;
	}
	debug_mark(s, "header sent");
	s->out = page_out_new(s->w, (struct xport **)s->p->data_channels,
			      s->p->nr_data_channels, info, &s->wo, src_tick, s);
	if (!s->out)
		return -ENOMEM;
	/* Tracking may be on already (checkpoints keep it on): either way,
	 * round 1 is all of RAM, and the sync re-arms every page. */
	ret = s->vm->ops->dirty_start(s->vm);
	if (ret && ret != -EALREADY)
		return ret;
	s->tracking = true;
	ret = src_sync_dirty(s, &dirty, false);
	if (ret)
		return ret;
	for (unsigned ri = 0; ri < s->vm->nr_regions; ri++) {
		uint64_t pages = s->vm->regions[ri].size / VM_PAGE_SIZE;

		memset(s->dirty[ri], 0xff, pages / 64 * 8);
		if (pages % 64)
			s->dirty[ri][pages / 64] = (1ull << (pages % 64)) - 1;
	}
	dirty = 0;
	for (unsigned ri = 0; ri < s->vm->nr_regions; ri++)
		dirty += s->vm->regions[ri].size / VM_PAGE_SIZE;
	src_set_status(s, MIG_ACTIVE);
	src_account(s);	/* the rates' first sample */
	debug_mark(s, "tracking on, round 1 of %llu pages", (unsigned long long)dirty);
	if (s->p->postcopy == MIG_POSTCOPY_PURE && s->p->fault_channel)
		return postcopy_src_run(s, 1);

	for (;; round++) {
		uint64_t sent_before = s->x->bytes_sent, expect, due = dirty;

		ret = send_round(s, round, round == 1, false, true);
		if (ret == SRC_SWITCH_NOW)
			return postcopy_src_run(s, round + 1);
		if (ret)
			return ret;
		ret = src_sync_dirty(s, &dirty, true);
		if (ret)
			return ret;
		expect = expected_downtime_ms(s, dirty);
		debug_mark(s, "round %u queued; %llu pages dirty, %llu ms expected", round,
			   (unsigned long long)dirty, (unsigned long long)expect);
		pthread_mutex_lock(&s->prog->lock);
		s->prog->stats.expected_downtime_ms = expect;
		pthread_mutex_unlock(&s->prog->lock);

		if (expect <= s->p->max_downtime_ms) {
			if (!precopy_more(s, extra, due, dirty, expect))
				break;
			extra++;
			continue;
		}
		if (s->p->fault_channel &&
		    (want_postcopy(s, round, due, dirty) || atomic_load(&s->prog->postcopy_now)))
			return postcopy_src_run(s, round + 1);
		if (s->p->timeout_s > 0 && now() - s->t_start > s->p->timeout_s) {
			if (!s->p->force_on_timeout) {
				s->policy_timeout = true;
				return -ETIMEDOUT;
			}
			break;
		}
		/* Dirtying outpaces the link: slow the guest down (QEMU's rule:
		 * dirtied more than half of what the round sent). */
		if (s->p->auto_converge && round >= 2) {
			double bpp = s->pages_encoded ? (double)s->bytes_encoded / s->pages_encoded : 4096;
			uint64_t sent = s->x->bytes_sent - sent_before;

			if (dirty * bpp > sent / 2.0) {
				unsigned pct = atomic_load(&s->throttle_pct);

				throttle_set(s, pct ? (pct + 10 > 99 ? 99 : pct + 10) : 20);
			}
		}
	}
	return switchover(s, round + 1);
}

/*
 * Raw pages go from guest memory as they are, not copied into a batch
 * (LIVE records, FORMAT.md), where every page read torn is sure to be sent
 * again: pre-copy's dirty log sends each page written after it was read,
 * and no post-copy switch can come (no fault channel). Not over RDMA: it
 * sends from the writer's registered buffers without a copy already. Not
 * to a destination of an earlier version, which reads format 1.0 only.
 */
static bool pages_by_reference(const struct xport *x, const struct mig_params *p)
{
	if (!p->peer_reads_live || p->fault_channel || x->ops->register_mem)
		return false;
	for (unsigned i = 0; i < p->nr_data_channels; i++)
		if (p->data_channels[i]->ops->register_mem)
			return false;
	return true;
}

int mig_source_run(struct vm *vm, struct xport *x, const struct mig_params *p,
		   struct mig_progress *prog)
{
	struct source s = { .vm = vm, .x = x, .p = p, .prog = prog };
	struct ckpt_sink sink = { sink_writev, &s };
	uint64_t ram = 0;
	int ret = -ENOMEM;

	s.wo.codec = ckpt_codec_default;
	s.wo.codec.lz4 = p->compress != MIG_COMPRESS_OFF;
	s.wo.codec.zstd = p->compress == MIG_COMPRESS_ZSTD;
	s.wo.lz4_auto = p->compress == MIG_COMPRESS_AUTO;
	s.wo.codec.delta = false;	/* no cache of sent pages yet */
	s.wo.live_pages = pages_by_reference(x, p) && !getenv("VMIGRATE_COPY_PAGES");
	s.t_start = now();
	if (!atomic_load(&prog->bandwidth.rate))
		atomic_store(&prog->bandwidth.rate, p->bandwidth);
	/* one cap over every channel of the job */
	x->bucket = &prog->bandwidth;
	for (unsigned i = 0; i < p->nr_data_channels; i++)
		p->data_channels[i]->bucket = &prog->bandwidth;
	for (unsigned i = 0; i < vm->nr_regions; i++) {
		ram += vm->regions[i].size;
		s.dirty[i] = calloc(1, vm_bitmap_bytes(&vm->regions[i]));
		s.carry[i] = calloc(1, vm_bitmap_bytes(&vm->regions[i]));
		s.scratch[i] = calloc(1, vm_bitmap_bytes(&vm->regions[i]));
		if (!s.dirty[i] || !s.carry[i] || !s.scratch[i])
			goto out;
	}
	pthread_mutex_lock(&prog->lock);
	prog->stats.status = MIG_SETUP;
	prog->stats.ram_total_bytes = ram;
	snprintf(prog->stats.compress, sizeof(prog->stats.compress), "%s",
		 mig_compress_name(p->compress));
	pthread_mutex_unlock(&prog->lock);
	s.w = ckpt_writer_new(&sink, &s.wo);
	if (!s.w)
		goto out;

	ret = precopy(&s);
	if (ret == -ENOLINK) {
		/* post-copy handed the guest over: never resumed here */
		vm->ops->dirty_stop(vm);
	} else if (ret && ret != -EINPROGRESS) {
		src_throttle_stop(&s);
		vm->ops->dirty_stop(vm);
		s.tracking = false;
		src_resume(&s);	/* the guest carries on here */
		if (!s.peer_error[0] && ret != -ECANCELED)
			last_words(&s);
		if (s.peer_error[0])
			src_fail(&s, "%s", s.peer_error);
		else if (ret == -ECANCELED)
			src_fail(&s, "cancelled");
		else if (s.policy_timeout)
			src_fail(&s, "did not converge within %.0f s", p->timeout_s);
		else
			src_fail(&s, "%s", strerror(-ret));
		if (!s.peer_error[0]) {
			/* the destination does not know yet: tell it why */
			struct mig_stats st;

			mig_progress_get(prog, &st);
			if (s.w)
				mig_abort_write(s.w, st.error);
			if (s.out)
				page_out_abort(s.out, st.error);
		}
		src_set_status(&s, ret == -ECANCELED ? MIG_CANCELLED : MIG_FAILED);
	} else if (!ret && !p->standby) {
		vm->ops->dirty_stop(vm);
	}
	if (s.w && ret) {
		src_account(&s);	/* final figures of a failed run */
		pthread_mutex_lock(&prog->lock);
		prog->stats.eta_s = -1;	/* it will not get there */
		pthread_mutex_unlock(&prog->lock);
	}
out:
	if (s.run_locked)	/* handed over, or uncertain: it stays paused */
		pthread_mutex_unlock(p->run_lock);
	page_out_free(s.out);
	digests_free(&s.have);
	ckpt_writer_free(s.w);
	for (unsigned i = 0; i < VM_MAX_REGIONS; i++) {
		free(s.dirty[i]);
		free(s.carry[i]);
		free(s.scratch[i]);
	}
	pthread_mutex_lock(&prog->lock);
	prog->stats.total_time_ms = (uint64_t)((now() - s.t_start) * 1000);
	pthread_mutex_unlock(&prog->lock);
	return ret;
}
