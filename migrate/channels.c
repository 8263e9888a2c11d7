/*
 * Parallel page channels (channels.h). The source's main thread decides
 * which pages go (dirty log, holes) and queues them by 64-page group; one
 * thread per channel encodes and sends its groups into its own stream. The
 * destination runs one reader thread per channel into guest memory; the
 * control thread waits for them at round markers and at the end.
 */
#include "channels.h"

#include <endian.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "fault.h"
#include "protocol.h"

#define QUEUE_ITEMS	512	/* 32 MiB of pages in flight per channel */

enum item_kind { IT_MARKER, IT_PAGES, IT_ZERO, IT_FLUSH, IT_FINISH, IT_ABORT };

struct item {
	uint8_t kind;
	uint32_t region_id;
	uint8_t *host;			/* the region's mapping */
	uint64_t first;			/* page, round or flush sequence */
	uint64_t arg;			/* page mask or zero-run length */
};

struct out_channel {
	struct page_out *o;
	struct xport *x;
	struct ckpt_writer *w;
	pthread_t thread;
	bool running;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct item q[QUEUE_ITEMS];	/* under lock */
	unsigned head, count;		/* under lock */
	uint64_t flushed;		/* under lock: last flush sequence done */
	int err;			/* under lock */
};

struct page_out {
	struct ckpt_writer *control;
	int (*tick)(void *opaque);
	void *opaque;
	unsigned n;
	uint64_t flush_seq;
	char abort_why[CKPT_ABORT_MAX + 1];	/* set before IT_ABORT is queued */
	/* src-tear-written-page: the page torn, as region id << 48 | page + 1
	 * (0: none); stored atomically by a channel thread before it sends,
	 * taken atomically by the main thread (page_out_take_written) */
	uint64_t written;
	struct out_channel ch[MIG_MAX_CHANNELS];
};

/*
 * Tests: the first page of a LIVE record past the first 8 MiB goes out
 * with a byte changed, as if the guest had written it while it was read.
 * src-tear-page: no dirty log will send it again, so the destination must
 * refuse the stream. src-tear-written-page: the write is reported, as the
 * dirty log reports a real one (page_out_take_written), so the page must
 * come again whole. The guest's page stays as it is.
 */
static int send_maybe_torn(struct out_channel *c, const struct iovec *iov, int iovcnt)
{
	static uint8_t torn[VM_PAGE_SIZE];
	const struct ckpt_rec_hdr *h = iov[0].iov_base;
	struct iovec first[5];
	bool written;
	size_t n;
	int ret;

	if (iovcnt < 5 || iov[0].iov_len != sizeof(*h) || le16toh(h->type) != CKPT_REC_PAGES ||
	    !(le16toh(h->flags) & CKPT_RECF_LIVE) || c->x->bytes_sent < (8u << 20))
		return xport_sendv(c->x, iov, iovcnt);
	written = fault_point("src-tear-written-page");
	if (!written && !fault_point("src-tear-page"))
		return xport_sendv(c->x, iov, iovcnt);
	if (written) {
		const struct ckpt_pages_rec *head = iov[1].iov_base;
		const struct ckpt_page_entry *e = iov[2].iov_base;
		uint32_t i = 0, count = le32toh(head->count);

		/* the data starts at the first entry that is not ZERO */
		while (i < count && e[i].encoding == CKPT_ENC_ZERO)
			i++;
		if (i < count && le32toh(head->region_id) < (1u << 16))
			__atomic_store_n(&c->o->written, (uint64_t)le32toh(head->region_id) << 48 |
					 (le64toh(e[i].page) + 1), __ATOMIC_RELEASE);
	}
	n = iov[4].iov_len < sizeof(torn) ? iov[4].iov_len : sizeof(torn);
	memcpy(torn, iov[4].iov_base, n);
	torn[0] ^= 0x10;
	memcpy(first, iov, 4 * sizeof(*iov));
	first[4] = (struct iovec){ torn, n };
	ret = xport_sendv(c->x, first, 5);
	if (ret)
		return ret;
	first[0] = (struct iovec){ (uint8_t *)iov[4].iov_base + n, iov[4].iov_len - n };
	ret = first[0].iov_len ? xport_sendv(c->x, first, 1) : 0;
	return ret || iovcnt == 5 ? ret : xport_sendv(c->x, iov + 5, iovcnt - 5);
}

bool page_out_take_written(struct page_out *o, uint32_t *region_id, uint64_t *page)
{
	uint64_t w = __atomic_exchange_n(&o->written, 0, __ATOMIC_ACQ_REL);

	if (!w)
		return false;
	*region_id = (uint32_t)(w >> 48);
	*page = (w & ((1ull << 48) - 1)) - 1;
	return true;
}

static int out_sink(void *opaque, const struct iovec *iov, int iovcnt)
{
	struct out_channel *c = opaque;

	fault_corrupt_batch(iov, iovcnt, c->x->bytes_sent, 2u << 20);
	return send_maybe_torn(c, iov, iovcnt);
}

static void process(struct out_channel *c, const struct item *it)
{
	switch (it->kind) {
	case IT_MARKER:
		ckpt_writer_marker(c->w, CKPT_MARK_ROUND, it->first);
		break;
	case IT_PAGES:
		for (uint64_t m = it->arg; m; m &= m - 1) {
			uint64_t page = it->first + (uint64_t)__builtin_ctzll(m);

			if (ckpt_writer_page(c->w, it->region_id, page,
					     it->host + page * VM_PAGE_SIZE, NULL))
				break;
		}
		break;
	case IT_ZERO:
		ckpt_writer_zero_run(c->w, it->region_id, it->first, it->arg);
		break;
	case IT_FLUSH:
		ckpt_writer_flush(c->w);
		break;
	case IT_FINISH:
		ckpt_writer_finish(c->w, NULL);
		break;
	case IT_ABORT:
		mig_abort_write(c->w, c->o->abort_why);
		break;
	}
}

static void *out_main(void *arg)
{
	struct out_channel *c = arg;

	for (;;) {
		struct item it;
		int err;

		pthread_mutex_lock(&c->lock);
		while (!c->count)
			pthread_cond_wait(&c->cond, &c->lock);
		it = c->q[c->head];
		c->head = (c->head + 1) % QUEUE_ITEMS;
		c->count--;
		err = c->err;
		pthread_cond_broadcast(&c->cond);
		pthread_mutex_unlock(&c->lock);

		if (!err)
			process(c, &it);	/* after a failure: drain until FINISH */
		pthread_mutex_lock(&c->lock);
		if (!c->err)
			c->err = ckpt_writer_error(c->w);
		if (it.kind == IT_FLUSH)
			c->flushed = it.first;
		pthread_cond_broadcast(&c->cond);
		pthread_mutex_unlock(&c->lock);
		if (it.kind == IT_FINISH)
			return NULL;
	}
}

/* Wait on a channel's condition for at most 100 ms; the lock is held. A
 * tick that asks to stop (a cancel) fails the channel: its thread drains
 * the queue without sending, so the caller need not wait for the link. */
static void wait_tick(struct out_channel *c)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_nsec += 100000000L;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	if (pthread_cond_timedwait(&c->cond, &c->lock, &ts) == ETIMEDOUT && c->o->tick) {
		int stop;

		pthread_mutex_unlock(&c->lock);
		stop = c->o->tick(c->o->opaque);
		pthread_mutex_lock(&c->lock);
		if (stop && !c->err) {
			c->err = stop;
			pthread_cond_broadcast(&c->cond);
		}
	}
}

static int push(struct out_channel *c, const struct item *it)
{
	int err;

	pthread_mutex_lock(&c->lock);
	while (c->count == QUEUE_ITEMS && (!c->err || it->kind == IT_FINISH))
		wait_tick(c);
	err = c->err;
	if (!err || it->kind == IT_FINISH) {
		c->q[(c->head + c->count) % QUEUE_ITEMS] = *it;
		c->count++;
		pthread_cond_broadcast(&c->cond);
	}
	pthread_mutex_unlock(&c->lock);
	return it->kind == IT_FINISH ? 0 : err;
}

/* Let x send w's PAGES records straight from the writer's buffers (RDMA;
 * a no-op on other transports). Unregistered before the writer is freed. */
static void writer_register(struct xport *x, const struct ckpt_writer *w)
{
	struct iovec buf[2];
	int n = ckpt_writer_buffers(w, buf);

	/* a refusal only means those records are copied, as before */
	for (int i = 0; i < n; i++)
		xport_register_mem(x, buf[i].iov_base, buf[i].iov_len);
}

static void writer_unregister(struct xport *x, const struct ckpt_writer *w)
{
	struct iovec buf[2];
	int n = w ? ckpt_writer_buffers(w, buf) : 0;

	for (int i = 0; i < n; i++)
		xport_unregister_mem(x, buf[i].iov_base);
}

struct page_out *page_out_new(struct ckpt_writer *control, struct xport **data, unsigned n,
			      const struct ckpt_image_info *info,
			      const struct ckpt_writer_opts *wo,
			      int (*tick)(void *opaque), void *opaque)
{
	struct page_out *o = calloc(1, sizeof(*o));

	if (!o || n > MIG_MAX_CHANNELS) {
		free(o);
		return NULL;
	}
	o->control = control;
	o->tick = tick;
	o->opaque = opaque;
	o->n = n;
	for (unsigned i = 0; i < n; i++) {
		struct out_channel *c = &o->ch[i];
		struct ckpt_sink sink = { out_sink, c };

		c->o = o;
		c->x = data[i];
		pthread_mutex_init(&c->lock, NULL);
		pthread_cond_init(&c->cond, NULL);
		c->w = ckpt_writer_new(&sink, wo);
		/* every data stream names the same image as the control stream */
		if (!c->w || ckpt_writer_header(c->w, info)) {
			page_out_free(o);
			return NULL;
		}
		writer_register(c->x, c->w);	/* before its thread sends */
		if (pthread_create(&c->thread, NULL, out_main, c)) {
			page_out_free(o);
			return NULL;
		}
		c->running = true;
	}
	return o;
}

void page_out_free(struct page_out *o)
{
	if (!o)
		return;
	for (unsigned i = 0; i < o->n; i++) {
		struct out_channel *c = &o->ch[i];

		if (c->running) {
			struct item fin = { .kind = IT_FINISH };

			pthread_mutex_lock(&c->lock);
			if (!c->err)
				c->err = -ECANCELED;	/* do not commit a stream we give up */
			pthread_mutex_unlock(&c->lock);
			push(c, &fin);
			pthread_join(c->thread, NULL);
		}
		if (c->w)
			writer_unregister(c->x, c->w);
		ckpt_writer_free(c->w);
		pthread_mutex_destroy(&c->lock);
		pthread_cond_destroy(&c->cond);
	}
	free(o);
}

static struct out_channel *channel_of(struct page_out *o, unsigned ri, uint64_t page)
{
	return &o->ch[(ri * 7919u + page / MIG_GROUP_PAGES) % o->n];
}

int page_out_marker(struct page_out *o, unsigned round)
{
	struct item it = { .kind = IT_MARKER, .first = round };

	for (unsigned i = 0; i < o->n; i++) {
		int ret = push(&o->ch[i], &it);

		if (ret)
			return ret;
	}
	return 0;
}

int page_out_pages(struct page_out *o, const struct vm_region *r, unsigned ri,
		   const uint64_t *bitmap, uint64_t first, uint64_t end)
{
	for (uint64_t g = first / MIG_GROUP_PAGES; g * MIG_GROUP_PAGES < end; g++) {
		uint64_t base = g * MIG_GROUP_PAGES, mask = bitmap[g];
		int ret;

		if (base < first)
			mask &= ~0ull << (first - base);
		if (end - base < MIG_GROUP_PAGES)
			mask &= (1ull << (end - base)) - 1;
		if (!mask)
			continue;
		if (!o->n) {
			for (; mask; mask &= mask - 1) {
				uint64_t page = base + (uint64_t)__builtin_ctzll(mask);

				if (ckpt_writer_page(o->control, r->id, page,
						     r->host + page * VM_PAGE_SIZE, NULL))
					return ckpt_writer_error(o->control);
			}
			continue;
		}
		ret = push(channel_of(o, ri, base), &(struct item){ .kind = IT_PAGES,
			   .region_id = r->id, .host = r->host, .first = base, .arg = mask });
		if (ret)
			return ret;
	}
	return 0;
}

int page_out_zero(struct page_out *o, const struct vm_region *r, unsigned ri,
		  uint64_t first, uint64_t count)
{
	if (!o->n)
		return ckpt_writer_zero_run(o->control, r->id, first, count);
	while (count) {
		uint64_t in_group = MIG_GROUP_PAGES - first % MIG_GROUP_PAGES;
		uint64_t n = count < in_group ? count : in_group;
		int ret = push(channel_of(o, ri, first), &(struct item){ .kind = IT_ZERO,
			       .region_id = r->id, .first = first, .arg = n });

		if (ret)
			return ret;
		first += n;
		count -= n;
	}
	return 0;
}

int page_out_flush(struct page_out *o)
{
	struct item it = { .kind = IT_FLUSH, .first = ++o->flush_seq };
	int ret = 0;

	if (!o->n)
		return ckpt_writer_flush(o->control);
	for (unsigned i = 0; i < o->n; i++) {
		ret = push(&o->ch[i], &it);
		if (ret)
			return ret;
	}
	for (unsigned i = 0; i < o->n; i++) {
		struct out_channel *c = &o->ch[i];

		pthread_mutex_lock(&c->lock);
		while (c->flushed < it.first && !c->err)
			wait_tick(c);
		if (!ret)
			ret = c->err;
		pthread_mutex_unlock(&c->lock);
	}
	return ret;
}

int page_out_abort(struct page_out *o, const char *why)
{
	struct item ab = { .kind = IT_ABORT }, fl = { .kind = IT_FLUSH, .first = ++o->flush_seq };

	snprintf(o->abort_why, sizeof(o->abort_why), "%s", why);
	/* only running channels: after page_out_finish nobody reads the queues */
	for (unsigned i = 0; i < o->n; i++)
		if (o->ch[i].running && !push(&o->ch[i], &ab))
			push(&o->ch[i], &fl);
	for (unsigned i = 0; i < o->n; i++) {
		struct out_channel *c = &o->ch[i];

		if (!c->running)
			continue;
		pthread_mutex_lock(&c->lock);
		while (c->flushed < fl.first && !c->err)
			wait_tick(c);
		pthread_mutex_unlock(&c->lock);
	}
	return 0;
}

int page_out_finish(struct page_out *o)
{
	int ret = 0;

	for (unsigned i = 0; i < o->n; i++)
		push(&o->ch[i], &(struct item){ .kind = IT_FINISH });
	for (unsigned i = 0; i < o->n; i++) {
		struct out_channel *c = &o->ch[i];

		pthread_join(c->thread, NULL);
		c->running = false;
		if (!ret)
			ret = c->err;
	}
	return ret;
}

void page_out_stats(struct page_out *o, struct ckpt_writer_stats *sum, uint64_t *data_bytes)
{
	memset(sum, 0, sizeof(*sum));
	*data_bytes = 0;
	/* read while the channels run: approximate, never used to decide */
	for (unsigned i = 0; i < o->n; i++) {
		const struct ckpt_writer_stats *st = ckpt_writer_stats(o->ch[i].w);

		for (int e = 0; e < CKPT_ENC_COUNT; e++)
			sum->pages[e] += st->pages[e];
		sum->page_bytes += st->page_bytes;
		sum->data_pages += st->data_pages;
		sum->bytes += st->bytes;
		sum->run_pages += st->run_pages;
		*data_bytes += o->ch[i].x->bytes_sent;
	}
}

/* ---- destination ----------------------------------------------------------- */

struct in_channel {
	struct page_in *pi;
	struct xport *x;
	pthread_t thread;
	bool started;
	uint64_t marker;		/* under pi->lock */
	bool done, failed;		/* under pi->lock */
	bool aborted;			/* under pi->lock: failed by the source's ABORT */
	char err[256];			/* set once before failed: why, or ABORT's reason */
};

struct page_in {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int control_fd;
	unsigned n;
	struct ckpt_image_info info;
	struct ckpt_page_target target;	/* under lock: post-copy changes it */
	struct ckpt_page_target into;	/* with read_into: LIVE pages go here as read */
	bool read_into;
	struct in_channel ch[MIG_MAX_CHANNELS];
};

static long in_read(void *opaque, void *buf, size_t len)
{
	return xport_recv(opaque, buf, len);
}

/* A data channel's stream is of the control stream's image and format
 * minor: what the control's reader allows (an older reader's minor) holds
 * for every channel. */
static bool same_image(const struct ckpt_image_info *a, const struct ckpt_image_info *b)
{
	if (memcmp(a->image_uuid, b->image_uuid, 16) || a->page_size != b->page_size ||
	    a->region_count != b->region_count || a->minor != b->minor)
		return false;
	for (unsigned i = 0; i < a->region_count; i++)
		if (a->regions[i].id != b->regions[i].id || a->regions[i].gpa != b->regions[i].gpa ||
		    a->regions[i].size != b->regions[i].size)
			return false;
	return true;
}

static void *in_main(void *arg)
{
	struct in_channel *c = arg;
	struct page_in *pi = c->pi;
	struct ckpt_source src = { in_read, c->x };
	struct ckpt_reader_opts ro = { .allow_trailing = true };
	struct ckpt_reader *r = ckpt_reader_new(&src, &ro);
	struct ckpt_record rec;
	int ret = r ? 0 : -ENOMEM;
	const char *why = NULL;
	char reason[CKPT_ABORT_MAX + 1] = "";

	if (r && pi->read_into)
		ckpt_reader_read_into(r, &pi->into);
	while (!ret && (ret = ckpt_reader_next(r, &rec)) == 0) {
		if (rec.type == CKPT_REC_HEADER) {
			if (!same_image(rec.u.header, &pi->info))
				why = "a data channel names another image";
		} else if (rec.type == CKPT_REC_PAGES) {
			struct ckpt_page_target t;

			pthread_mutex_lock(&pi->lock);
			t = pi->target;		/* post-copy changes it at the switch */
			pthread_mutex_unlock(&pi->lock);
			ret = ckpt_reader_apply(r, &rec, &t);
		} else if (rec.type == CKPT_REC_MARKER) {
			pthread_mutex_lock(&pi->lock);
			c->marker = rec.u.marker.number;
			pthread_cond_broadcast(&pi->cond);
			pthread_mutex_unlock(&pi->lock);
		} else if (rec.type == CKPT_REC_STATE && rec.u.state.kind == CKPT_STATE_ABORT) {
			mig_abort_reason(&rec, reason, sizeof(reason));
			why = reason;
		} else if (rec.type == CKPT_REC_STATE) {
			why = "state on a data channel";
		} else if (rec.type == CKPT_REC_COMMIT) {
			ret = 1;
		}
		if (why)
			break;
	}
	pthread_mutex_lock(&pi->lock);
	if (ret == 1 && !why) {
		c->done = true;
	} else if (why == reason) {
		snprintf(c->err, sizeof(c->err), "%s", reason);
		c->aborted = c->failed = true;
	} else {
		snprintf(c->err, sizeof(c->err), "data channel %u: %s", (unsigned)(c - pi->ch),
			 why ? why : c->x->err ? strerror(-c->x->err) :
			 r ? ckpt_reader_errmsg(r) : "out of memory");
		c->failed = true;
	}
	pthread_cond_broadcast(&pi->cond);
	pthread_mutex_unlock(&pi->lock);
	if (c->failed) {
		int fd = xport_fd(c->x);

		if (pi->control_fd >= 0)
			shutdown(pi->control_fd, SHUT_RD);
		if (fd >= 0)
			shutdown(fd, SHUT_RDWR);	/* the source's sends fail at once */
	}
	ckpt_reader_free(r);
	return NULL;
}

/* The first failed channel's err (only one the source aborted, if asked). */
static const char *failed_channel(struct page_in *pi, bool aborted)
{
	const char *why = NULL;

	if (!pi)
		return NULL;
	pthread_mutex_lock(&pi->lock);
	for (unsigned i = 0; i < pi->n && !why; i++)
		if (pi->ch[i].failed && (!aborted || pi->ch[i].aborted))
			why = pi->ch[i].err;
	pthread_mutex_unlock(&pi->lock);
	return why;
}

const char *page_in_failure(struct page_in *pi)
{
	return failed_channel(pi, false);
}

const char *page_in_aborted(struct page_in *pi)
{
	return failed_channel(pi, true);
}

struct page_in *page_in_start(struct xport **data, unsigned n,
			      const struct ckpt_image_info *control_info,
			      const struct ckpt_page_target *target, bool read_into,
			      struct xport *control)
{
	struct page_in *pi = calloc(1, sizeof(*pi));

	if (!pi || n > MIG_MAX_CHANNELS) {
		free(pi);
		return NULL;
	}
	pthread_mutex_init(&pi->lock, NULL);
	pthread_cond_init(&pi->cond, NULL);
	pi->n = n;
	pi->control_fd = control ? xport_fd(control) : -1;
	pi->info = *control_info;
	pi->target = *target;
	pi->into = *target;
	pi->read_into = read_into;
	for (unsigned i = 0; i < n; i++) {
		pi->ch[i].pi = pi;
		pi->ch[i].x = data[i];
		if (pthread_create(&pi->ch[i].thread, NULL, in_main, &pi->ch[i])) {
			page_in_stop(pi);
			return NULL;
		}
		pi->ch[i].started = true;
	}
	return pi;
}

void page_in_set_target(struct page_in *pi, const struct ckpt_page_target *target)
{
	pthread_mutex_lock(&pi->lock);
	pi->target = *target;
	pthread_mutex_unlock(&pi->lock);
}

/* Wait until pred holds for every channel or one failed. */
static int wait_all(struct page_in *pi, uint64_t round, bool to_end, char *err, size_t errlen)
{
	int ret = 0;

	pthread_mutex_lock(&pi->lock);
	for (;;) {
		bool all = true;

		for (unsigned i = 0; i < pi->n; i++) {
			struct in_channel *c = &pi->ch[i];

			if (c->failed) {
				snprintf(err, errlen, "%s", c->err);
				ret = -EBADMSG;
				goto out;
			}
			if (to_end ? !c->done : !c->done && c->marker < round)
				all = false;
		}
		if (all)
			break;
		pthread_cond_wait(&pi->cond, &pi->lock);
	}
out:
	pthread_mutex_unlock(&pi->lock);
	return ret;
}

int page_in_wait_marker(struct page_in *pi, uint64_t round, char *err, size_t errlen)
{
	return wait_all(pi, round, false, err, errlen);
}

int page_in_wait_end(struct page_in *pi, char *err, size_t errlen)
{
	return wait_all(pi, 0, true, err, errlen);
}

void page_in_stop(struct page_in *pi)
{
	if (!pi)
		return;
	for (unsigned i = 0; i < pi->n; i++) {
		int fd = xport_fd(pi->ch[i].x);

		if (pi->ch[i].started && fd >= 0)
			shutdown(fd, SHUT_RDWR);	/* wakes a blocked reader */
	}
	for (unsigned i = 0; i < pi->n; i++)
		if (pi->ch[i].started)
			pthread_join(pi->ch[i].thread, NULL);
	pthread_mutex_destroy(&pi->lock);
	pthread_cond_destroy(&pi->cond);
	free(pi);
}
