/*
 * The primary's epochs. One thread does everything on the channel (a TLS
 * session takes no concurrent reads and writes):
 *
 *   epoch n:  pause; sync and clear the dirty log; EPOCH marker n, the
 *             dirty pages (raw: a copy and a checksum), the state and the
 *             seal into a memory buffer; open epoch n+1 for output; resume
 *             -> send the buffer -> read acknowledgements until the next
 *             epoch is due -> release the output of acknowledged epochs
 *
 * The vCPUs are paused only while the dirty pages are copied; encoding for
 * the link (LZ4, encryption) happens on the copy, with the guest running.
 * The next epoch starts epoch_ms after the last one began, or, with no
 * fixed length, once the last one is sent (never sooner than
 * MIN_EPOCH_MS): a slow link lengthens epochs instead of queueing them. A
 * standby more than max_inflight epochs behind holds the next epoch back
 * until it catches up. Either way the state says degraded (epochs more
 * than twice their length, or waiting); protection is never dropped
 * silently.
 *
 * A planned failover (switch_over) ends with an epoch that says SWITCH and
 * leaves the guest paused. Acknowledged, the guest stays paused here for
 * good and the caller moves the ownership; not acknowledged, the guest
 * resumes here, as after any lost standby.
 */
#include "internal.h"

#include <endian.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "ckpt.h"
#include "fault.h"

#define MIN_EPOCH_MS		10
#define DEFAULT_INFLIGHT	4
#define ACK_TIMEOUT_MS		5000	/* a standby silent this long is lost */

struct primary {
	struct vm *vm;
	struct xport *x;
	const struct repl_params *p;
	struct repl_progress *prog;
	struct ckpt_membuf buf;		/* one epoch, as it goes on the wire */
	struct ckpt_writer *w;
	uint64_t *dirty[VM_MAX_REGIONS];
	uint64_t sealed, acked;
	double sealed_at[REPL_WINDOW];	/* by epoch % REPL_WINDOW: its pause */
	double last_ack;
};

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/* The window's figures into prog->stats (under its lock). */
static void update_stats(struct primary *pr, double pause_ms, uint64_t bytes)
{
	struct repl_progress *pg = pr->prog;
	unsigned n = pr->sealed < REPL_WINDOW ? (unsigned)pr->sealed : REPL_WINDOW;
	unsigned slot = (unsigned)((pr->sealed - 1) % REPL_WINDOW);
	double sorted[REPL_WINDOW], span;
	uint64_t total = 0;

	pg->pause_ms[slot] = pause_ms;
	pg->epoch_bytes[slot] = bytes;
	pg->sealed_at[slot] = pr->sealed_at[pr->sealed % REPL_WINDOW];
	memcpy(sorted, pg->pause_ms, n * sizeof(double));
	qsort(sorted, n, sizeof(double), cmp_double);
	for (unsigned i = 0; i < n; i++)
		total += pg->epoch_bytes[i];
	span = pr->sealed_at[pr->sealed % REPL_WINDOW] -
	       pr->sealed_at[(pr->sealed - n + 1) % REPL_WINDOW];
	pthread_mutex_lock(&pg->lock);
	pg->stats.epochs = pr->sealed;
	pg->stats.pause_p50_ms = sorted[n / 2];
	pg->stats.pause_p99_ms = sorted[(n * 99) / 100 < n ? (n * 99) / 100 : n - 1];
	pg->stats.bytes_per_epoch = total / n;
	pg->stats.bytes_sent += bytes;
	pg->stats.epoch_rate = n > 1 && span > 0 ? (n - 1) / span : 0;
	pthread_mutex_unlock(&pg->lock);
}

static void set_state(struct primary *pr, enum repl_state st)
{
	pthread_mutex_lock(&pr->prog->lock);
	pr->prog->stats.state = st;
	pthread_mutex_unlock(&pr->prog->lock);
}

static void fail_msg(struct primary *pr, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void fail_msg(struct primary *pr, const char *fmt, ...)
{
	va_list ap;

	pthread_mutex_lock(&pr->prog->lock);
	if (!pr->prog->stats.error[0]) {
		va_start(ap, fmt);
		vsnprintf(pr->prog->stats.error, sizeof(pr->prog->stats.error), fmt, ap);
		va_end(ap);
	}
	pthread_mutex_unlock(&pr->prog->lock);
}

/* One acknowledgement, already waiting on the channel. */
static int take_ack(struct primary *pr)
{
	struct repl_ack a;
	int ret = xport_recv_exact(pr->x, &a, sizeof(a));
	uint64_t epoch;

	if (ret)
		return ret;
	epoch = le64toh(a.epoch);
	if (le32toh(a.magic) != REPL_ACK_MAGIC || epoch > pr->sealed || epoch <= pr->acked) {
		fail_msg(pr, "the standby sent a bad acknowledgement (epoch %llu)",
			 (unsigned long long)epoch);
		return -EPROTO;
	}
	if (le32toh(a.kind) != REPL_ACK_APPLIED) {
		fail_msg(pr, "the standby refused epoch %llu (its token %llu, ours %llu)",
			 (unsigned long long)epoch, (unsigned long long)le64toh(a.token),
			 (unsigned long long)pr->p->token);
		return -EPERM;
	}
	pr->acked = epoch;
	pr->last_ack = now();
	pthread_mutex_lock(&pr->prog->lock);
	pr->prog->stats.acked_epoch = epoch;
	pr->prog->stats.lag_ms = (pr->last_ack - pr->sealed_at[epoch % REPL_WINDOW]) * 1e3;
	pthread_mutex_unlock(&pr->prog->lock);
	repl_release_upto(pr->prog, epoch);
	return 0;
}

/* Read acknowledgements until `until` (monotonic seconds), or, with
 * need_ack, until the standby is within max_inflight epochs. */
static int read_acks(struct primary *pr, double until, unsigned max_inflight)
{
	for (;;) {
		double left = until - now();
		bool behind = pr->sealed - pr->acked >= max_inflight;
		int ret;

		if (!behind && left <= 0)
			return 0;
		if (behind && now() - pr->last_ack > ACK_TIMEOUT_MS / 1e3) {
			fail_msg(pr, "the standby acknowledged nothing for %d ms", ACK_TIMEOUT_MS);
			return -ETIMEDOUT;
		}
		ret = xport_poll_in(pr->x, behind ? 50 : (int)(left * 1000) + 1);
		if (ret < 0)
			return ret;
		if (ret > 0 && (ret = take_ack(pr)))
			return ret;
	}
}

/* The standby falls behind: epochs wait for its acknowledgements, or the
 * link stretches them well past their length (over the last LAG_SPAN). */
#define LAG_SPAN	8
static bool falling_behind(const struct primary *pr, unsigned max_inflight)
{
	double want = (pr->p->epoch_ms ? pr->p->epoch_ms : MIN_EPOCH_MS) / 1e3, mean;

	if (pr->sealed - pr->acked >= max_inflight - 1)
		return true;
	if (pr->sealed <= LAG_SPAN)
		return false;
	mean = (pr->sealed_at[pr->sealed % REPL_WINDOW] -
		pr->sealed_at[(pr->sealed - LAG_SPAN) % REPL_WINDOW]) / LAG_SPAN;
	return mean > 2 * want + 0.02;
}

/* Pages dirtied since the last epoch, into the epoch (guest paused). */
static int capture_pages(struct primary *pr, uint64_t *pages)
{
	struct vm *vm = pr->vm;

	*pages = 0;
	for (unsigned r = 0; r < vm->nr_regions; r++) {
		const struct vm_region *rg = &vm->regions[r];
		uint64_t n = rg->size / VM_PAGE_SIZE, *bm = pr->dirty[r];
		int ret;

		memset(bm, 0, vm_bitmap_bytes(rg));
		ret = vm->ops->dirty_sync(vm, r, bm);
		if (!ret)
			ret = vm->ops->dirty_clear(vm, r, 0, n, bm);
		if (ret)
			return ret;
		for (uint64_t w = 0; w < (n + 63) / 64; w++) {
			for (uint64_t bits = bm[w]; bits; bits &= bits - 1) {
				uint64_t page = w * 64 + (uint64_t)__builtin_ctzll(bits);

				if (ckpt_writer_page(pr->w, rg->id, page, rg->host + page * VM_PAGE_SIZE,
						     NULL))
					return ckpt_writer_error(pr->w);
				(*pages)++;
			}
		}
	}
	return 0;
}

/* Epoch n: pause, capture, seal, resume (the last, with handing_over:
 * SWITCH before the seal, and the guest left paused). Returns the pause in
 * ms or <0. */
static int seal_epoch(struct primary *pr, uint64_t n, bool handing_over, double *pause_ms)
{
	struct ckpt_epoch_seal seal;
	uint64_t pages = 0, records;
	double t0, t_paused, t_pages;
	int ret;

	pr->buf.len = 0;
	t0 = now();
	pthread_mutex_lock(&pr->prog->run_lock);
	if (atomic_load(&pr->prog->fenced)) {
		pthread_mutex_unlock(&pr->prog->run_lock);
		return -EPERM;
	}
	vm_pause(pr->vm);
	t_paused = now();
	ret = ckpt_writer_marker(pr->w, CKPT_MARK_EPOCH, n);
	if (!ret)
		ret = capture_pages(pr, &pages);
	t_pages = now();
	if (!ret)
		ret = ckpt_writer_flush(pr->w);
	records = ckpt_writer_stats(pr->w)->records;
	if (!ret)
		ret = pr->vm->ops->save_state(pr->vm, pr->w);
	if (!ret && handing_over) {
		uint64_t token = htole64(pr->p->token);

		ret = ckpt_writer_state(pr->w, CKPT_STATE_SWITCH, 0, 1, false, &token,
					sizeof(token));
	}
	if (!ret)
		ret = ckpt_writer_flush(pr->w);
	seal = (struct ckpt_epoch_seal){
		.token = htole64(pr->p->token),
		.epoch = htole64(n),
		.pages = htole64(pages),
		.states = htole64(ckpt_writer_stats(pr->w)->records - records),
	};
	if (!ret)
		ret = ckpt_writer_state(pr->w, CKPT_STATE_EPOCH, 0, 1, false, &seal, sizeof(seal));
	if (!ret)
		ret = ckpt_writer_flush(pr->w);
	/* output from here on belongs to the next epoch */
	pthread_mutex_lock(&pr->prog->lock);
	pr->prog->open_epoch = n + 1;
	pthread_mutex_unlock(&pr->prog->lock);
	pr->sealed_at[n % REPL_WINDOW] = t0;
	/* past the lease's deadline another host may own the guest: fence */
	if (!repl_may_run(pr->prog))
		atomic_store(&pr->prog->fenced, true);
	if (!atomic_load(&pr->prog->fenced) && !handing_over)
		vm_resume(pr->vm);
	pthread_mutex_unlock(&pr->prog->run_lock);
	*pause_ms = (now() - t0) * 1e3;
	if (getenv("VMIGRATE_DEBUG"))
		fprintf(stderr, "vmigrate: epoch %llu: %llu pages, paused %.2f ms (stop %.2f, "
			"pages %.2f)\n", (unsigned long long)n, (unsigned long long)pages,
			*pause_ms, (t_paused - t0) * 1e3, (t_pages - t_paused) * 1e3);
	return ret ? ret : ckpt_writer_error(pr->w);
}

static int send_buf(struct primary *pr)
{
	struct iovec iov = { pr->buf.data, pr->buf.len };

	return pr->buf.len ? xport_sendv(pr->x, &iov, 1) : 0;
}

static int stream_header(struct primary *pr)
{
	struct ckpt_image_info info;

	vm_image_info(pr->vm, &info);
	if (getrandom(info.image_uuid, sizeof(info.image_uuid), 0) != sizeof(info.image_uuid))
		return -EIO;
	if (ckpt_writer_header(pr->w, &info) || ckpt_writer_flush(pr->w))
		return ckpt_writer_error(pr->w);
	return send_buf(pr);
}

/* The last epoch, every acknowledgement, then the stream's end. Handing
 * over: the guest stays paused, and once the standby holds the last epoch
 * (all output released) it stays so for good. */
static int finish(struct primary *pr, bool handing_over)
{
	double pause_ms;
	int ret = seal_epoch(pr, ++pr->sealed, handing_over, &pause_ms);

	if (!ret)
		ret = send_buf(pr);
	if (!ret)
		update_stats(pr, pause_ms, pr->buf.len);
	pr->buf.len = 0;
	if (!ret)
		ret = read_acks(pr, 0, 1);	/* until all are acknowledged */
	if (!ret && handing_over) {
		pthread_mutex_lock(&pr->prog->run_lock);
		atomic_store(&pr->prog->fenced, true);
		pthread_mutex_unlock(&pr->prog->run_lock);
	}
	if (!ret && ckpt_writer_finish(pr->w, NULL))
		ret = ckpt_writer_error(pr->w);
	if (!ret)
		ret = send_buf(pr);
	return ret;
}

int repl_primary_run(struct vm *vm, struct xport *x, const struct repl_params *p,
		     struct repl_progress *prog)
{
	struct ckpt_writer_opts wo = { .codec = ckpt_codec_default };
	struct primary pr = { .vm = vm, .x = x, .p = p, .prog = prog };
	struct ckpt_sink sink;
	unsigned inflight = p->max_inflight ? p->max_inflight : DEFAULT_INFLIGHT;
	bool handing_over = false;
	double due;
	int ret = -ENOMEM;

	wo.codec.lz4 = p->compress;
	wo.codec.delta = false;
	ckpt_membuf_sink(&pr.buf, &sink);
	for (unsigned r = 0; r < vm->nr_regions; r++)
		if (!(pr.dirty[r] = calloc(1, vm_bitmap_bytes(&vm->regions[r]))))
			goto out;
	pr.w = ckpt_writer_new(&sink, &wo);
	if (!pr.w)
		goto out;
	x->idle_ok = true;	/* acknowledgements are timed here */
	x->bucket = NULL;	/* the sync's cap is not the epochs': they wait for no one */
	pthread_mutex_lock(&prog->lock);
	prog->stats.token = p->token;
	prog->stats.state = REPL_PROTECTED;
	prog->open_epoch = 1;		/* held since the sync (repl_output_hold) */
	pthread_mutex_unlock(&prog->lock);
	pr.last_ack = now();
	ret = stream_header(&pr);
	due = now();
	while (!ret && !atomic_load(&prog->stop) && !atomic_load(&prog->switch_over)) {
		double pause_ms;

		ret = seal_epoch(&pr, ++pr.sealed, false, &pause_ms);
		if (!ret)
			ret = send_buf(&pr);
		if (ret)
			break;
		update_stats(&pr, pause_ms, pr.buf.len);
		if (pr.sealed == 50 && fault_point("repl-abandon-standby")) {
			fail_msg(&pr, "fault point repl-abandon-standby");
			prog->abandoned = true;
			ret = -ETIMEDOUT;
			break;
		}
		/* epochs on a fixed beat; one that ran late moves the beat
		 * instead of starting a burst to catch up */
		due += (p->epoch_ms ? p->epoch_ms : MIN_EPOCH_MS) / 1e3;
		if (due < now())
			due = now();
		ret = read_acks(&pr, due, inflight);
		set_state(&pr, falling_behind(&pr, inflight) ? REPL_DEGRADED : REPL_PROTECTED);
	}
	if (!ret) {
		handing_over = !atomic_load(&prog->stop);
		ret = finish(&pr, handing_over);
		if (!ret)
			set_state(&pr, handing_over ? REPL_SWITCHED : REPL_STOPPED);
	}
	if (ret) {
		fail_msg(&pr, "replication lost: %s", strerror(-ret));
		set_state(&pr, REPL_FAILED);
		/* the standby falls behind from here: it must never take over */
		while (p->standby_lost && p->standby_lost(p->opaque) && repl_may_run(prog)) {
			struct timespec ts = { 0, 200000000 };

			nanosleep(&ts, NULL);
		}
		/* a handover that did not complete: the guest goes on here */
		pthread_mutex_lock(&prog->run_lock);
		if (handing_over && !atomic_load(&prog->fenced) && repl_may_run(prog))
			vm_resume(vm);
		pthread_mutex_unlock(&prog->run_lock);
	}
	/* Output stays held no longer: protected or not, the guest runs here
	 * and, while its lease holds (or without an arbiter), is the only
	 * copy that may run. (Fenced: nothing leaves, repl_may_run says.) */
	repl_output_release_all(prog);
out:
	ckpt_writer_free(pr.w);
	ckpt_membuf_release(&pr.buf);
	for (unsigned r = 0; r < VM_MAX_REGIONS; r++)
		free(pr.dirty[r]);
	return ret;
}
