/*
 * Destination side of post-copy (postcopy.h; the protocol is drawn in
 * postcopy_src.c). The guest runs before all of its memory is here: every
 * page still owed is discarded at the switch and guest RAM is registered
 * with userfaultfd, so a first touch of an owed page stops that vCPU until
 * the page arrives whole. A handler thread asks the source for it on the
 * fault channel; pages from any stream (the answers, the background push
 * on control and data channels) are placed with UFFDIO_COPY, which maps a
 * complete page and wakes whoever waits for it in one step. A page not
 * owed is final here already; if it is a hole (a zero page), a touch gets
 * UFFDIO_ZEROPAGE. An owed page never reads as anything but its content:
 * when the links fail the waiting vCPUs keep waiting until they are back.
 */
#include "postcopy.h"

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "fault.h"
#include "protocol.h"

#define MAX_SAMPLES	(1u << 18)	/* fault waits kept for the percentiles */

struct postcopy_dst {
	struct vm *vm;
	struct ckpt_image_info info;
	int uffd;
	uint64_t *owed[VM_MAX_REGIONS];		/* atomic words: not here yet */
	uint64_t *discarded[VM_MAX_REGIONS];	/* control thread: punched already */
	uint64_t *asked[VM_MAX_REGIONS];	/* changed under lock (atomic words, so
						 * arrived() may look without it):
						 * requested, not here */
	uint64_t *asked_at[VM_MAX_REGIONS];	/* under lock: when, ns */
	atomic_uint_fast64_t owed_pages;
	bool have_owed[VM_MAX_REGIONS];
	pthread_t fault_thread;
	bool fault_running;			/* under lock */
	pthread_cond_t cond;			/* fault_seen moved */
	unsigned fault_gen, fault_seen;		/* under lock: links given, taken */
	atomic_bool stop;
	pthread_mutex_t lock;
	struct xport *fault;			/* under lock; NULL while the link is down */
	uint64_t requests;			/* under lock */
	uint32_t *samples;			/* under lock: µs waited, first touches */
	unsigned nsamples;			/* under lock */
	atomic_int answers_err;
	bool zero_instead;			/* fault point: the bug tests must catch */
	struct mig_links links;			/* the last recovery's (the caller's) */
};

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t pages_of(const struct postcopy_dst *d, unsigned ri)
{
	return d->vm->regions[ri].size / VM_PAGE_SIZE;
}

struct postcopy_dst *postcopy_dst_new(struct vm *vm, const struct ckpt_image_info *info)
{
	struct postcopy_dst *d = calloc(1, sizeof(*d));

	if (!d)
		return NULL;
	d->vm = vm;
	d->info = *info;
	d->uffd = -1;
	pthread_mutex_init(&d->lock, NULL);
	pthread_cond_init(&d->cond, NULL);
	d->samples = malloc(MAX_SAMPLES * sizeof(*d->samples));
	for (unsigned ri = 0; ri < vm->nr_regions; ri++) {
		d->owed[ri] = calloc(1, vm_bitmap_bytes(&vm->regions[ri]));
		d->discarded[ri] = calloc(1, vm_bitmap_bytes(&vm->regions[ri]));
		d->asked[ri] = calloc(1, vm_bitmap_bytes(&vm->regions[ri]));
		d->asked_at[ri] = calloc(pages_of(d, ri), sizeof(uint64_t));
		if (!d->owed[ri] || !d->discarded[ri] || !d->asked[ri] || !d->asked_at[ri] ||
		    !d->samples) {
			postcopy_dst_free(d);
			return NULL;
		}
	}
	return d;
}

void postcopy_dst_free(struct postcopy_dst *d)
{
	if (!d)
		return;
	atomic_store(&d->stop, true);
	if (d->fault_running)
		pthread_join(d->fault_thread, NULL);
	pthread_cond_destroy(&d->cond);
	if (d->uffd >= 0)
		close(d->uffd);
	for (unsigned ri = 0; ri < VM_MAX_REGIONS; ri++) {
		free(d->owed[ri]);
		free(d->discarded[ri]);
		free(d->asked[ri]);
		free(d->asked_at[ri]);
	}
	free(d->samples);
	pthread_mutex_destroy(&d->lock);
	free(d);
}

int postcopy_dst_owed(struct postcopy_dst *d, const struct ckpt_record *rec, char *err,
		      size_t errlen)
{
	struct ckpt_postcopy_rec h = { 0 };
	size_t len = rec->u.state.len;
	unsigned ri = rec->u.state.instance;
	uint64_t words, n = 0;

	if (len >= sizeof(h))
		memcpy(&h, rec->u.state.data, sizeof(h));
	if (rec->u.state.version != 1 || len < sizeof(h) || ri >= d->vm->nr_regions ||
	    le32toh(h.region_id) != d->vm->regions[ri].id || h.reserved || h.first_page ||
	    le64toh(h.count) != pages_of(d, ri)) {
		snprintf(err, errlen, "bad POSTCOPY record for region slot %u", ri);
		return -EBADMSG;
	}
	words = (pages_of(d, ri) + 63) / 64;
	if (len != sizeof(h) + words * 8) {
		snprintf(err, errlen, "POSTCOPY record for region slot %u of %zu bytes", ri, len);
		return -EBADMSG;
	}
	for (uint64_t w = 0; w < words; w++) {
		uint64_t v;

		memcpy(&v, rec->u.state.data + sizeof(h) + w * 8, 8);
		v = le64toh(v);
		if (w == words - 1 && pages_of(d, ri) % 64 && v >> (pages_of(d, ri) % 64)) {
			snprintf(err, errlen, "POSTCOPY record owes pages past region slot %u", ri);
			return -EBADMSG;
		}
		/* records add up: an early one, then the switch's */
		n += (uint64_t)__builtin_popcountll(v & ~d->owed[ri][w]);
		d->owed[ri][w] |= v;
	}
	d->have_owed[ri] = true;
	atomic_fetch_add(&d->owed_pages, n);
	return 0;
}

static bool is_owed(struct postcopy_dst *d, unsigned ri, uint64_t p)
{
	return (__atomic_load_n(&d->owed[ri][p / 64], __ATOMIC_ACQUIRE) >> (p % 64)) & 1;
}

/* Page p of ri is here (mapped whole): no longer owed; a wait ends. */
static void arrived(struct postcopy_dst *d, unsigned ri, uint64_t p)
{
	uint64_t bit = 1ull << (p % 64);
	uint64_t old = __atomic_fetch_and(&d->owed[ri][p / 64], ~bit, __ATOMIC_ACQ_REL);

	if (!(old & bit))
		return;
	atomic_fetch_sub(&d->owed_pages, 1);
	if (!(__atomic_load_n(&d->asked[ri][p / 64], __ATOMIC_ACQUIRE) & bit))
		return;		/* the push's pages: nobody waits, no lock */
	pthread_mutex_lock(&d->lock);
	if (d->asked[ri][p / 64] & bit) {
		__atomic_fetch_and(&d->asked[ri][p / 64], ~bit, __ATOMIC_RELEASE);
		if (d->nsamples < MAX_SAMPLES)
			d->samples[d->nsamples++] =
				(uint32_t)((now_ns() - d->asked_at[ri][p]) / 1000);
	}
	pthread_mutex_unlock(&d->lock);
}

/* UFFDIO_COPY (data) or UFFDIO_ZEROPAGE (NULL) of n pages at p; a page
 * that is there already (EEXIST: another stream brought it) is skipped. */
static int fill(struct postcopy_dst *d, unsigned ri, uint64_t p, uint64_t n, const uint8_t *data)
{
	uint8_t *host = d->vm->regions[ri].host;

	while (n) {
		int64_t done;
		int ret;

		if (data) {
			struct uffdio_copy cp = { .dst = (uintptr_t)(host + p * VM_PAGE_SIZE),
						  .src = (uintptr_t)data,
						  .len = n * VM_PAGE_SIZE };

			ret = ioctl(d->uffd, UFFDIO_COPY, &cp);
			done = cp.copy;
		} else {
			struct uffdio_zeropage zp = {
				.range = { (uintptr_t)(host + p * VM_PAGE_SIZE), n * VM_PAGE_SIZE } };

			ret = ioctl(d->uffd, UFFDIO_ZEROPAGE, &zp);
			done = zp.zeropage;
		}
		if (ret < 0 && errno != EEXIST && errno != EAGAIN)
			return -errno;
		if (done < 0)
			done = 0;
		done /= VM_PAGE_SIZE;
		for (int64_t k = 0; k < done; k++)
			arrived(d, ri, p + (uint64_t)k);
		if (ret < 0 && errno == EEXIST && !done) {
			arrived(d, ri, p);	/* there already: as good as arrived */
			done = 1;
		}
		p += (uint64_t)done;
		n -= (uint64_t)done;
		if (data)
			data += done * VM_PAGE_SIZE;
	}
	return 0;
}

/* ckpt_page_target.place after the switch: owed pages only. */
static int place(void *opaque, unsigned slot, uint64_t first, uint64_t count, const void *data)
{
	struct postcopy_dst *d = opaque;
	const uint8_t *src = data;

	if (slot >= d->vm->nr_regions || first + count > pages_of(d, slot))
		return -ERANGE;
	for (uint64_t p = first; p < first + count; ) {
		uint64_t run = p;
		int ret;

		while (run < first + count && is_owed(d, slot, run))
			run++;
		if (run > p) {
			ret = fill(d, slot, p, run - p, src ? src + (p - first) * VM_PAGE_SIZE : NULL);
			if (ret)
				return ret;
		}
		p = run + 1;	/* a page not owed is final: never overwritten */
	}
	return 0;
}

/* ---- first touches ------------------------------------------------------------ */

/* A vCPU touched page p of ri: ask for it if owed (into rq), else map a
 * zero page (it is a hole) and wake the vCPU. */
static void touched(struct postcopy_dst *d, unsigned ri, uint64_t p, struct mig_page_req *rq,
		    unsigned *n)
{
	uint64_t bit = 1ull << (p % 64);
	bool ask = false;

	if (is_owed(d, ri, p) && !d->zero_instead) {
		pthread_mutex_lock(&d->lock);
		if (!(d->asked[ri][p / 64] & bit)) {
			__atomic_fetch_or(&d->asked[ri][p / 64], bit, __ATOMIC_RELEASE);
			d->asked_at[ri][p] = now_ns();
			d->requests++;
			ask = true;
		}
		pthread_mutex_unlock(&d->lock);
		if (ask)
			rq[(*n)++] = (struct mig_page_req){ .slot = htole32(ri), .page = htole64(p) };
		/* it may have arrived since it was found owed: then no one wakes
		 * the vCPU but us */
		if (!is_owed(d, ri, p)) {
			struct uffdio_range wr = {
				(uintptr_t)(d->vm->regions[ri].host + p * VM_PAGE_SIZE), VM_PAGE_SIZE };

			ioctl(d->uffd, UFFDIO_WAKE, &wr);
		}
		return;
	}
	{
		struct uffdio_zeropage zp = {
			.range = { (uintptr_t)(d->vm->regions[ri].host + p * VM_PAGE_SIZE),
				   VM_PAGE_SIZE } };

		if (ioctl(d->uffd, UFFDIO_ZEROPAGE, &zp) < 0 && errno == EEXIST)
			ioctl(d->uffd, UFFDIO_WAKE, &zp.range);
		if (d->zero_instead)
			arrived(d, ri, p);
	}
}

/* The faults waiting now, without blocking; requests into rq. */
static void take_faults(struct postcopy_dst *d, struct mig_page_req *rq, unsigned *n)
{
	struct uffd_msg msg[16];
	ssize_t got;

	while (*n + 16 <= MIG_PAGE_REQ_MAX &&
	       (got = read(d->uffd, msg, sizeof(msg))) > 0) {
		for (ssize_t i = 0; i < got / (ssize_t)sizeof(msg[0]); i++) {
			uint64_t a = msg[i].arg.pagefault.address;

			if (msg[i].event != UFFD_EVENT_PAGEFAULT)
				continue;
			for (unsigned ri = 0; ri < d->vm->nr_regions; ri++) {
				const struct vm_region *r = &d->vm->regions[ri];

				if (a >= (uintptr_t)r->host && a < (uintptr_t)r->host + r->size) {
					touched(d, ri, (a - (uintptr_t)r->host) / VM_PAGE_SIZE, rq, n);
					break;
				}
			}
		}
	}
}

/* After a recovery: the pages asked for and still owed, asked again. */
static int ask_again(struct postcopy_dst *d, struct xport *x)
{
	struct mig_page_req rq[MIG_PAGE_REQ_MAX];
	unsigned n = 0;
	int ret = 0;

	for (unsigned ri = 0; ri < d->vm->nr_regions && !ret; ri++)
		for (uint64_t p = 0; p < pages_of(d, ri) && !ret; p++) {
			bool want;

			pthread_mutex_lock(&d->lock);
			want = (d->asked[ri][p / 64] >> (p % 64)) & 1;
			pthread_mutex_unlock(&d->lock);
			if (!want || !is_owed(d, ri, p))
				continue;
			rq[n++] = (struct mig_page_req){ .slot = htole32(ri), .page = htole64(p) };
			if (n == MIG_PAGE_REQ_MAX) {
				ret = mig_msg_send(x, MIG_MSG_PAGE_REQ, rq, n * sizeof(rq[0]));
				n = 0;
			}
		}
	return ret || !n ? ret : mig_msg_send(x, MIG_MSG_PAGE_REQ, rq, n * sizeof(rq[0]));
}

/* ---- the fault channel ------------------------------------------------------------ */

static long fault_read(void *opaque, void *buf, size_t len)
{
	return xport_recv(opaque, buf, len);
}

/* One answer record from the fault channel, placed: 0, 1 at its end. */
static int take_answer(struct postcopy_dst *d, struct ckpt_reader *r)
{
	struct ckpt_page_target t = { .place = place, .opaque = d };
	struct ckpt_record rec;
	int ret = ckpt_reader_next(r, &rec);

	if (ret)
		return ret < 0 ? ret : -EPIPE;
	if (rec.type == CKPT_REC_HEADER && memcmp(rec.u.header->image_uuid, d->info.image_uuid, 16))
		return -EBADMSG;
	if (rec.type == CKPT_REC_PAGES)
		return ckpt_reader_apply(r, &rec, &t);
	return rec.type == CKPT_REC_COMMIT;
}

/*
 * The fault channel's one user (a TLS session is for one thread at a
 * time): first touches go out as requests, answers come in and are placed.
 * The link it serves changes with recoveries (d->fault, d->fault_gen).
 */
static void *fault_main(void *arg)
{
	struct postcopy_dst *d = arg;
	struct ckpt_reader_opts ro = { .allow_trailing = true };
	struct ckpt_reader *r = NULL;
	struct xport *x = NULL;
	unsigned gen = 0;
	bool resend = false, live = false;

	/* vCPUs wait on it: ahead of the page streams for a core (where the
	 * service may; else it runs as it is) */
	setpriority(PRIO_PROCESS, (id_t)gettid(), -10);

	while (!atomic_load(&d->stop)) {
		struct mig_page_req rq[MIG_PAGE_REQ_MAX];
		struct pollfd pf[2] = { { .fd = d->uffd, .events = POLLIN }, { .fd = -1 } };
		unsigned n = 0;
		int ret = 0;

		pthread_mutex_lock(&d->lock);
		if (d->fault_gen != gen) {
			struct ckpt_source src = { fault_read, d->fault };

			ckpt_reader_free(r);
			x = d->fault;
			r = x ? ckpt_reader_new(&src, &ro) : NULL;
			live = r != NULL;
			resend = x != NULL;
			gen = d->fault_gen;
			atomic_store(&d->answers_err, 0);	/* the old link's failure is past */
			pthread_cond_broadcast(&d->cond);
		}
		d->fault_seen = gen;
		pthread_mutex_unlock(&d->lock);

		take_faults(d, rq, &n);
		if (live && resend) {
			ret = ask_again(d, x);
			resend = false;
		}
		if (live && !ret && n)
			ret = mig_msg_send(x, MIG_MSG_PAGE_REQ, rq, n * sizeof(rq[0]));
		while (live && !ret && xport_poll_in(x, 0) > 0) {
			ret = take_answer(d, r);
			if (ret == 1) {
				live = false;	/* the source is done answering */
				ret = 0;
			}
		}
		if (ret) {
			fprintf(stderr, "vmigrate: post-copy of guest %s: the fault channel failed: "
				"%s\n", d->vm->name, x->err ? strerror(-x->err) : ckpt_reader_errmsg(r));
			atomic_store(&d->answers_err, ret);
			live = false;
		}
		if (live)
			pf[1] = (struct pollfd){ .fd = xport_fd(x), .events = POLLIN };
		poll(pf, 2, 20);
	}
	ckpt_reader_free(r);
	return NULL;
}

/* Serve the fault channel fault (NULL: none, the link is down: cut it),
 * and wait until the fault thread took it. */
static void set_fault(struct postcopy_dst *d, struct xport *fault, bool cut)
{
	struct xport *old;
	unsigned gen;

	if (fault)
		fault->idle_ok = true;	/* no first touch for a while is no failure */
	pthread_mutex_lock(&d->lock);
	old = d->fault;
	d->fault = fault;
	gen = ++d->fault_gen;
	pthread_mutex_unlock(&d->lock);
	if (old && cut && xport_fd(old) >= 0)
		shutdown(xport_fd(old), SHUT_RDWR);	/* a read blocked on it ends */
	pthread_mutex_lock(&d->lock);
	while (d->fault_running && d->fault_seen != gen)
		pthread_cond_wait(&d->cond, &d->lock);
	pthread_mutex_unlock(&d->lock);
}

/* ---- the switch --------------------------------------------------------------- */

static bool to_discard(const struct postcopy_dst *d, unsigned ri, uint64_t p)
{
	return ((d->owed[ri][p / 64] & ~d->discarded[ri][p / 64]) >> (p % 64)) & 1;
}

int postcopy_dst_discard(struct postcopy_dst *d, char *err, size_t errlen)
{
	for (unsigned ri = 0; ri < d->vm->nr_regions; ri++) {
		const struct vm_region *r = &d->vm->regions[ri];

		for (uint64_t p = 0; p < pages_of(d, ri); ) {
			uint64_t run = p;

			while (run < pages_of(d, ri) && to_discard(d, ri, run))
				run++;
			if (run > p && fallocate(r->memfd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
						 (off_t)(r->memfd_offset + p * VM_PAGE_SIZE),
						 (off_t)((run - p) * VM_PAGE_SIZE)) < 0) {
				snprintf(err, errlen, "discarding owed pages: %s", strerror(errno));
				return -errno;
			}
			p = run + 1;
		}
		for (uint64_t w = 0; w < (pages_of(d, ri) + 63) / 64; w++)
			d->discarded[ri][w] |= d->owed[ri][w];
	}
	return 0;
}

/* Discard what is held of every owed page (what an early discard left),
 * then register guest RAM: from here on a touch of an owed page waits. */
static int arm(struct postcopy_dst *d, char *err, size_t errlen)
{
	struct uffdio_api api = { .api = UFFD_API };
	int ret;

	for (unsigned ri = 0; ri < d->vm->nr_regions; ri++)
		if (!d->have_owed[ri]) {
			snprintf(err, errlen, "no POSTCOPY record for region slot %u", ri);
			return -EBADMSG;
		}
	ret = postcopy_dst_discard(d, err, errlen);
	if (ret)
		return ret;
	d->uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	if (d->uffd < 0 || ioctl(d->uffd, UFFDIO_API, &api) < 0) {
		snprintf(err, errlen, "userfaultfd: %s (post-copy needs it: vm.unprivileged_"
			 "userfaultfd=1, or CAP_SYS_PTRACE)", strerror(errno));
		return -errno;
	}
	for (unsigned ri = 0; ri < d->vm->nr_regions; ri++) {
		struct uffdio_register reg = {
			.range = { (uintptr_t)d->vm->regions[ri].host, d->vm->regions[ri].size },
			.mode = UFFDIO_REGISTER_MODE_MISSING,
		};

		if (ioctl(d->uffd, UFFDIO_REGISTER, &reg) < 0) {
			snprintf(err, errlen, "registering guest RAM with userfaultfd: %s",
				 strerror(errno));
			return -errno;
		}
	}
	d->zero_instead = fault_point("dst-postcopy-zero-page");
	if (pthread_create(&d->fault_thread, NULL, fault_main, d)) {
		snprintf(err, errlen, "cannot start the post-copy fault handler");
		return -EAGAIN;
	}
	pthread_mutex_lock(&d->lock);
	d->fault_running = true;
	pthread_mutex_unlock(&d->lock);
	return 0;
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

/* The figures for the watcher and for ALL_IN. */
static void fault_figures(struct postcopy_dst *d, struct mig_stats *st, struct mig_all_in *a)
{
	uint32_t p50 = 0, p99 = 0;

	pthread_mutex_lock(&d->lock);
	if (d->nsamples) {
		qsort(d->samples, d->nsamples, sizeof(d->samples[0]), cmp_u32);
		p50 = d->samples[d->nsamples / 2];
		p99 = d->samples[(uint64_t)d->nsamples * 99 / 100];
	}
	st->postcopy_requests = d->requests;
	pthread_mutex_unlock(&d->lock);
	st->fault_p50_ms = p50 / 1e3;
	st->fault_p99_ms = p99 / 1e3;
	st->remaining_pages = atomic_load(&d->owed_pages);
	if (a)
		*a = (struct mig_all_in){ .requests = htole64(st->postcopy_requests),
					  .fault_p50_us = htole32(p50), .fault_p99_us = htole32(p99) };
}

/* Read the control stream until its COMMIT; 0, or < 0 when a link failed. */
static int take_pages(struct postcopy_dst *d, struct postcopy_ctx *c, char *err, size_t errlen)
{
	struct ckpt_record rec;
	int ret;

	while ((ret = ckpt_reader_next(c->r, &rec)) == 0) {
		if (rec.type == CKPT_REC_PAGES) {
			if (ckpt_reader_apply(c->r, &rec, c->target))
				return -EBADMSG;
		} else if (rec.type == CKPT_REC_COMMIT) {
			break;
		} else if (rec.type == CKPT_REC_HEADER &&
			   memcmp(rec.u.header->image_uuid, d->info.image_uuid, 16)) {
			snprintf(err, errlen, "a recovery stream of another image");
			return -EBADMSG;
		} else if (rec.type == CKPT_REC_STATE) {
			return -EBADMSG;	/* the state came before the switch */
		}
		if (atomic_load(&d->answers_err))
			return atomic_load(&d->answers_err);
		fault_figures(d, c->st, NULL);
	}
	if (ret)
		return ret;
	if (c->pi && page_in_wait_end(c->pi, err, errlen))
		return -EPIPE;
	/* the last answers may still be on their way */
	for (int i = 0; i < 5000 && atomic_load(&d->owed_pages); i++) {
		if (atomic_load(&d->answers_err))
			return atomic_load(&d->answers_err);
		usleep(1000);
	}
	if (atomic_load(&d->owed_pages)) {
		snprintf(err, errlen, "the source ended its streams with %llu pages still owed",
			 (unsigned long long)atomic_load(&d->owed_pages));
		return -EPIPE;
	}
	return 0;
}

/* What is still missing, for the source after a recovery. */
static int send_missing(struct postcopy_dst *d, struct xport *x)
{
	char msg[MIG_MSG_MAX];
	struct mig_missing_hdr h;

	for (unsigned ri = 0; ri < d->vm->nr_regions; ri++) {
		uint64_t words = (pages_of(d, ri) + 63) / 64;

		for (uint64_t w = 0; w < words; w += MIG_MISSING_WORDS) {
			uint32_t n = (uint32_t)(words - w < MIG_MISSING_WORDS ? words - w :
						MIG_MISSING_WORDS);

			h = (struct mig_missing_hdr){ htole32(ri), htole32(n), htole64(w) };
			memcpy(msg, &h, sizeof(h));
			for (uint32_t k = 0; k < n; k++) {
				uint64_t v = htole64(__atomic_load_n(&d->owed[ri][w + k],
								     __ATOMIC_ACQUIRE));

				memcpy(msg + sizeof(h) + k * 8, &v, 8);
			}
			if (mig_msg_send(x, MIG_MSG_MISSING, msg, (uint32_t)(sizeof(h) + n * 8)))
				return -EPIPE;
		}
	}
	h = (struct mig_missing_hdr){ 0 };
	return mig_msg_send(x, MIG_MSG_MISSING, &h, sizeof(h));
}

static long control_read(void *opaque, void *buf, size_t len)
{
	return xport_recv(opaque, buf, len);
}

/* The links failed: wait (postcopy-paused) for the source to come back
 * with new ones, tell it what is missing, and take pages again. */
static int recover(struct postcopy_dst *d, struct postcopy_ctx *c, struct ckpt_source *src,
		   char *err, size_t errlen)
{
	struct mig_links *links = &d->links;
	struct ckpt_reader_opts ro = { .allow_trailing = true };
	struct ckpt_record rec;

	set_fault(d, NULL, true);
	page_in_stop(c->pi);
	c->pi = NULL;
	c->st->status = MIG_POSTCOPY_PAUSED;
	dst_publish(c->o, c->x, c->st, c->t0);
	fprintf(stderr, "vmigrate: post-copy of guest %s paused: %s; %llu pages still owed, "
		"waiting for the source to reconnect\n", d->vm->name, err[0] ? err : "link lost",
		(unsigned long long)atomic_load(&d->owed_pages));
	if (!c->o->reconnect || c->o->reconnect(c->o->opaque, links) < 0) {
		snprintf(err, errlen, "the source did not come back during post-copy: the guest "
			 "is lost (%llu of its pages were only there)",
			 (unsigned long long)atomic_load(&d->owed_pages));
		return -ENOLINK;
	}
	c->x = links->control;
	*src = (struct ckpt_source){ control_read, c->x };
	ckpt_reader_free(c->r);
	c->r = ckpt_reader_new(src, &ro);
	if (!c->r || ckpt_reader_next(c->r, &rec) || rec.type != CKPT_REC_HEADER ||
	    memcmp(rec.u.header->image_uuid, d->info.image_uuid, 16)) {
		snprintf(err, errlen, "the reconnected source sent no stream of this guest");
		return -EPROTO;
	}
	if (send_missing(d, c->x))
		return -EPIPE;
	set_fault(d, links->fault, false);	/* it asks again what it asked before */
	if (links->nr_data &&
	    !(c->pi = page_in_start(links->data, links->nr_data, &d->info, c->target, false, c->x)))
		return -ENOMEM;
	c->st->recoveries++;
	c->st->status = MIG_POSTCOPY_ACTIVE;
	err[0] = 0;
	return 0;
}

int postcopy_dst_run(struct postcopy_dst *d, struct postcopy_ctx *c, char *err, size_t errlen)
{
	struct ckpt_page_target placed = { .place = place, .opaque = d };
	struct ckpt_source src;
	struct mig_all_in all;
	double t_loaded, t0 = dst_boot_now(), t_go, t_run;
	int ret;

	if (!c->o->fault_channel) {
		snprintf(err, errlen, "the source switched to post-copy, which needs a fault "
			 "channel this destination was not given");
		dst_refuse(c->x, err);
		return -EAGAIN;
	}
	if (c->vm->ops->load_finish(c->vm, err, errlen) || arm(d, err, errlen)) {
		dst_refuse(c->x, err);
		return -EAGAIN;
	}
	*c->target = placed;
	if (c->pi)
		page_in_set_target(c->pi, &placed);
	set_fault(d, c->o->fault_channel, false);
	t_loaded = dst_boot_now();
	if (mig_msg_send(c->x, MIG_MSG_LOADED, NULL, 0)) {
		snprintf(err, errlen, "connection to the source lost at the switch");
		return -EAGAIN;
	}
	if (dst_await_go(c->x, t_loaded, MIG_MSG_GO, err, errlen)) {
		dst_refuse(c->x, err);
		return -EAGAIN;
	}
	t_go = dst_boot_now();
	if (c->o->decide && c->o->decide(c->o->opaque, true, "GO in time (post-copy)")) {
		snprintf(err, errlen, "cannot record the decision to run the guest; it is "
			 "discarded here");
		dst_refuse(c->x, err);
		return -EAGAIN;
	}
	if (vm_resume(c->vm)) {
		snprintf(err, errlen, "could not start the received guest");
		dst_refuse(c->x, err);
		return -EAGAIN;
	}
	t_run = dst_boot_now();
	/* From here on the guest runs here: it is never discarded for a link. */
	mig_msg_send(c->x, MIG_MSG_RUNNING, NULL, 0);
	if (getenv("VMIGRATE_DEBUG"))
		fprintf(stderr, "vmigrate: post-copy switch here: load and arm %.2f ms, until GO "
			"%.2f ms, decision and resume %.2f ms\n", (t_loaded - t0) * 1e3,
			(t_go - t_loaded) * 1e3, (t_run - t_go) * 1e3);
	c->st->status = MIG_POSTCOPY_ACTIVE;
	dst_publish(c->o, c->x, c->st, c->t0);

	for (;;) {
		err[0] = 0;
		ret = take_pages(d, c, err, errlen);
		if (!ret)
			break;
		if (!err[0])
			snprintf(err, errlen, "%s (%d)", c->x->err ? strerror(-c->x->err) :
				 ckpt_reader_errmsg(c->r), ret);
		ret = recover(d, c, &src, err, errlen);
		if (ret)
			return ret;
	}
	/* Every page is here: holes fault no more, nothing waits on anyone. */
	for (unsigned ri = 0; ri < d->vm->nr_regions; ri++) {
		struct uffdio_range rg = { (uintptr_t)d->vm->regions[ri].host,
					   d->vm->regions[ri].size };

		ioctl(d->uffd, UFFDIO_UNREGISTER, &rg);
	}
	set_fault(d, NULL, false);	/* the source answers until ALL_IN */
	atomic_store(&d->stop, true);
	pthread_join(d->fault_thread, NULL);
	pthread_mutex_lock(&d->lock);
	d->fault_running = false;
	pthread_mutex_unlock(&d->lock);
	fault_figures(d, c->st, &all);
	if (mig_msg_send(c->x, MIG_MSG_ALL_IN, &all, sizeof(all)))
		fprintf(stderr, "vmigrate: guest %s has all its memory; the source did not hear "
			"it (it lets its copy go once it gives up)\n", d->vm->name);
	return 0;
}
