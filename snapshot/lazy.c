/*
 * Lazy restore: the guest runs before its memory is loaded. Guest RAM is
 * registered with userfaultfd (missing pages); a handler thread answers
 * each first touch with the page read through the files' indexes (newest
 * file of the chain first), and a prefetch thread copies in everything
 * else meanwhile. Only the state is read up front, by skipping over the
 * page records. Each thread reads through its own fetch context, so a
 * first touch never waits behind the prefetch reading a record.
 *
 * Random access reads single records, each checked by its own checksum;
 * the whole-file digest is not checked on this path (ckpt verify does).
 */
#include "snapshot.h"

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
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "fault.h"

#define LAZY_MAX_FILES	64
/* A PAGES record as checkpoints write them (256 pages, snapshot.c) and its
 * entries; older files' larger records grow the buffer when they come. */
#define LAZY_WARM_BYTES	(256u * (4096u + 16u) + 8u)
#define LAZY_PREFETCH_HOLD_US	20000	/* at most, for the first fault */

struct cached {
	uint64_t offset;		/* 0: empty */
	int file;
	uint8_t *payload;
	uint32_t len;
};

/* What one thread needs to read and decode pages: owned by that thread
 * (the fault handler's, the prefetch's; attach uses the handler's before
 * the threads start). */
struct fetch_ctx {
	struct cached cache[2];
	unsigned next_victim;
	uint8_t *scratch, *page;
};

struct snap_lazy {
	struct vm *vm;
	int uffd;
	unsigned nfiles;		/* newest first */
	int fd[LAZY_MAX_FILES];
	uint64_t *index[LAZY_MAX_FILES][VM_MAX_REGIONS];
	pthread_t handler, prefetch;
	bool threads;
	atomic_bool stop;
	atomic_uint_fast64_t served, prefetched;
	atomic_bool done;		/* every page is in */
	atomic_bool failed;		/* a page did not read back: never all in */
	atomic_bool first_served;	/* the guest's first fault is answered */
	struct fetch_ctx fault_ctx;	/* the handler's */
	struct fetch_ctx prefetch_ctx;	/* the prefetch's */
	pthread_mutex_t lock;		/* guards err */
	char err[256];			/* under lock: the first page that failed */
};

/* One record at offset, its checksum checked; payload in a cache slot. */
static const struct cached *record_at(struct snap_lazy *l, struct fetch_ctx *x, int file,
				      uint64_t offset, uint16_t *type)
{
	struct ckpt_rec_info ri;
	struct cached *c;

	for (int i = 0; i < 2; i++)
		if (x->cache[i].offset == offset && x->cache[i].file == file) {
			*type = CKPT_REC_PAGES;
			return &x->cache[i];
		}
	c = &x->cache[x->next_victim];
	x->next_victim ^= 1;
	c->offset = 0;
	if (ckpt_pread_record(l->fd[file], offset, &ri, &c->payload))
		return NULL;
	c->len = ri.length;
	c->offset = offset;
	c->file = file;
	*type = ri.type;
	return c;
}

/* Decode page p of region slot ri into x->page; 1 when it is zero. */
static int fetch_page(struct snap_lazy *l, struct fetch_ctx *x, unsigned ri, uint64_t p)
{
	for (unsigned f = 0; f < l->nfiles; f++) {
		uint64_t off = l->index[f][ri] ? le64toh(l->index[f][ri][p]) : 0;
		const struct cached *c;
		const uint8_t *data;
		uint32_t count;
		uint16_t type;

		if (!off)
			continue;	/* not in this file: its parent's */
		c = record_at(l, x, (int)f, off, &type);
		if (!c || type != CKPT_REC_PAGES || c->len < 8)
			return -EBADMSG;
		memcpy(&count, c->payload + 4, 4);
		count = le32toh(count);
		if ((uint64_t)count * 16 > c->len - 8)
			return -EBADMSG;
		data = c->payload + 8 + (size_t)count * 16;
		for (uint32_t e = 0; e < count; e++) {
			struct ckpt_page_entry pe;
			uint64_t first;
			uint32_t size;

			memcpy(&pe, c->payload + 8 + e * 16, sizeof(pe));
			first = le64toh(pe.page);
			size = le32toh(pe.size);
			if (pe.encoding == CKPT_ENC_ZERO) {
				if (p >= first && p - first < size)
					return 1;
				continue;
			}
			if ((size_t)(data - c->payload) + size > c->len)
				return -EBADMSG;
			if (first == p) {
				if (pe.encoding == CKPT_ENC_DELTA)
					return -EBADMSG;	/* not written by checkpoints */
				return ckpt_page_decode(pe.encoding, data, size, x->page, VM_PAGE_SIZE,
							x->scratch) ? -EBADMSG : 0;
			}
			data += size;
		}
		return -EBADMSG;	/* the index named a record without the page */
	}
	return 1;	/* in no file: zero */
}

/* Put page p of region ri in place; EEXIST (already there) is fine. A
 * zero page is left a hole when skip_zero (it reads as zero anyway). */
static int place(struct snap_lazy *l, struct fetch_ctx *x, unsigned ri, uint64_t p,
		 bool skip_zero)
{
	const struct vm_region *r = &l->vm->regions[ri];
	int ret = fetch_page(l, x, ri, p);

	if (ret == 1 && skip_zero) {
		ret = 1;	/* left as a hole: nothing copied */
	} else if (ret >= 0) {
		/* both threads may place the same page: the second gets EEXIST */
		struct uffdio_copy cp = {
			.dst = (uintptr_t)(r->host + p * VM_PAGE_SIZE),
			.src = (uintptr_t)x->page,
			.len = VM_PAGE_SIZE,
		};

		if (ret == 1)
			memset(x->page, 0, VM_PAGE_SIZE);
		ret = 0;
		if (ioctl(l->uffd, UFFDIO_COPY, &cp) < 0 && errno != EEXIST)
			ret = -errno;
	} else {
		pthread_mutex_lock(&l->lock);
		if (!l->err[0])
			snprintf(l->err, sizeof(l->err), "region %u page %llu", r->id,
				 (unsigned long long)p);
		pthread_mutex_unlock(&l->lock);
		atomic_store(&l->failed, true);
	}
	return ret;
}

/* The buffer a first fault reads its record into, touched before it comes:
 * memory touched for the first time is slow (PERF-FACTS.md), and that fault
 * is in the way of the guest's first instruction. */
static void fetch_ctx_warm(struct fetch_ctx *x)
{
	uint8_t *b = realloc(x->cache[0].payload, LAZY_WARM_BYTES);

	if (b) {
		memset(b, 0, LAZY_WARM_BYTES);
		x->cache[0].payload = b;
	}
}

static void *handler_main(void *arg)
{
	struct snap_lazy *l = arg;

	fetch_ctx_warm(&l->fault_ctx);
	while (!atomic_load(&l->stop)) {
		struct pollfd pf = { .fd = l->uffd, .events = POLLIN };
		struct uffd_msg msg;

		if (poll(&pf, 1, 100) <= 0)
			continue;
		if (read(l->uffd, &msg, sizeof(msg)) != sizeof(msg) ||
		    msg.event != UFFD_EVENT_PAGEFAULT)
			continue;
		for (unsigned ri = 0; ri < l->vm->nr_regions; ri++) {
			const struct vm_region *r = &l->vm->regions[ri];
			uint64_t a = msg.arg.pagefault.address;

			if (a >= (uintptr_t)r->host && a < (uintptr_t)r->host + r->size) {
				if (place(l, &l->fault_ctx, ri, (a - (uintptr_t)r->host) / VM_PAGE_SIZE,
					  false) == 0)
					atomic_fetch_add(&l->served, 1);
				atomic_store(&l->first_served, true);
				break;
			}
		}
	}
	return NULL;
}

static void *prefetch_main(void *arg)
{
	struct snap_lazy *l = arg;
	bool slow = fault_point("lazy-slow-prefetch");	/* tests: a long load */

	/* the guest's first touches go first: on a small host the prefetch
	 * would take the CPU they and the guest's start need */
	for (unsigned us = 0; us < LAZY_PREFETCH_HOLD_US && !atomic_load(&l->first_served) &&
			      !atomic_load(&l->stop); us += 500)
		usleep(500);
	for (unsigned ri = 0; ri < l->vm->nr_regions && !atomic_load(&l->stop); ri++) {
		uint64_t pages = l->vm->regions[ri].size / VM_PAGE_SIZE;

		for (uint64_t p = 0; p < pages && !atomic_load(&l->stop); p++) {
			bool anywhere = false;

			if (slow && p % 256 == 0)
				usleep(5000);	/* 5 ms a MiB */

			for (unsigned f = 0; f < l->nfiles && !anywhere; f++)
				anywhere = l->index[f][ri] && l->index[f][ri][p];
			/* never-written pages stay holes: they read as zero anyway */
			if (anywhere && place(l, &l->prefetch_ctx, ri, p, true) == 0)
				atomic_fetch_add(&l->prefetched, 1);
			if (atomic_load(&l->failed))
				return NULL;
		}
	}
	/* Everything is in: pages never written fault as ordinary holes now.
	 * Never after a failure: unregistering would wake the vCPU waiting on
	 * the bad page and hand it a zero page instead. */
	for (unsigned ri = 0; ri < l->vm->nr_regions; ri++) {
		struct uffdio_range rg = { (uintptr_t)l->vm->regions[ri].host,
					   l->vm->regions[ri].size };

		ioctl(l->uffd, UFFDIO_UNREGISTER, &rg);
	}
	atomic_store(&l->done, true);
	return NULL;
}

static int fetch_ctx_init(struct fetch_ctx *x)
{
	x->scratch = malloc(VM_PAGE_SIZE);
	x->page = aligned_alloc(VM_PAGE_SIZE, VM_PAGE_SIZE);
	return x->scratch && x->page ? 0 : -ENOMEM;
}

static void fetch_ctx_release(struct fetch_ctx *x)
{
	for (int i = 0; i < 2; i++)
		free(x->cache[i].payload);
	free(x->scratch);
	free(x->page);
}

/* The COMMIT at the end of a file, then its INDEX records into l. */
static int load_index(struct snap_lazy *l, unsigned f, const struct ckpt_image_info *info,
		      char *err, size_t errlen)
{
	off_t end = lseek(l->fd[f], 0, SEEK_END);
	struct ckpt_commit_rec c;
	uint64_t off;

	if (end < (off_t)CKPT_COMMIT_TOTAL ||
	    pread(l->fd[f], &c, sizeof(c), end - (off_t)sizeof(c)) != sizeof(c)) {
		snprintf(err, errlen, "file %u of the chain has no COMMIT", f);
		return -EBADMSG;
	}
	off = le64toh(c.index_offset);
	if (!off) {
		snprintf(err, errlen, "file %u of the chain has no index", f);
		return -EBADMSG;
	}
	for (unsigned r = 0; r < info->region_count; r++)
		if (!(l->index[f][r] = calloc(info->regions[r].size / VM_PAGE_SIZE, 8)))
			return -ENOMEM;
	/* each record's entries read straight into the index: no copy of it
	 * in memory touched for the first time (slow here, PERF-FACTS.md) */
	while (off < (uint64_t)end - CKPT_COMMIT_TOTAL) {
		struct ckpt_index_rec head, again;
		struct ckpt_rec_info ri;
		uint32_t count;
		uint64_t first;
		int slot;

		if (ckpt_pread_header(l->fd[f], off, &ri) || ri.type != CKPT_REC_INDEX ||
		    ri.length < sizeof(head) ||
		    pread(l->fd[f], &head, sizeof(head), (off_t)(off + sizeof(struct ckpt_rec_hdr))) !=
			    (ssize_t)sizeof(head)) {
			snprintf(err, errlen, "file %u: bad index record at %llu", f,
				 (unsigned long long)off);
			return -EBADMSG;
		}
		slot = ckpt_info_region_slot(info, le32toh(head.region_id));
		count = le32toh(head.count);
		first = le64toh(head.first_page);
		if (slot < 0 || ri.length != sizeof(head) + (uint64_t)count * 8 ||
		    first + count > info->regions[slot].size / VM_PAGE_SIZE) {
			snprintf(err, errlen, "file %u: index out of range", f);
			return -EBADMSG;
		}
		{
			struct iovec parts[2] = {
				{ &again, sizeof(again) },
				{ l->index[f][slot] + first, (size_t)count * 8 },
			};

			/* the head as checked by the checksum must be the one used */
			if (ckpt_pread_payload(l->fd[f], off, &ri, parts, 2) ||
			    memcmp(&again, &head, sizeof(head))) {
				snprintf(err, errlen, "file %u: bad index record at %llu", f,
					 (unsigned long long)off);
				return -EBADMSG;
			}
		}
		off += sizeof(struct ckpt_rec_hdr) + ri.length;
	}
	return 0;
}

int snap_lazy_open(char *const *files, unsigned nfiles, const struct ckpt_image_info *info,
		   struct snap_lazy **out, char *err, size_t errlen)
{
	struct snap_lazy *l = calloc(1, sizeof(*l));
	int ret = -EINVAL;

	*out = NULL;
	if (!l || nfiles > LAZY_MAX_FILES) {
		free(l);
		snprintf(err, errlen, "lazy restore: out of memory or a chain too long");
		return -ENOMEM;
	}
	l->uffd = -1;
	pthread_mutex_init(&l->lock, NULL);
	if (fetch_ctx_init(&l->fault_ctx) || fetch_ctx_init(&l->prefetch_ctx)) {
		snprintf(err, errlen, "out of memory");
		ret = -ENOMEM;
		goto fail;
	}
	for (unsigned f = 0; f < nfiles; f++) {
		l->fd[f] = open(files[f], O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
		if (l->fd[f] < 0) {
			ret = -errno;
			snprintf(err, errlen, "%s: %s", files[f], strerror(errno));
			goto fail;
		}
		l->nfiles = f + 1;
		if ((ret = load_index(l, f, info, err, errlen)))
			goto fail;
	}
	*out = l;
	return 0;
fail:
	snap_lazy_free(l);
	return ret ? ret : -EINVAL;
}

int snap_lazy_start(struct snap_lazy *l, struct vm *vm, char *err, size_t errlen)
{
	struct uffdio_api api = { .api = UFFD_API };

	l->vm = vm;
	l->uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	if (l->uffd < 0 || ioctl(l->uffd, UFFDIO_API, &api) < 0) {
		snprintf(err, errlen, "userfaultfd: %s", strerror(errno));
		return -errno;
	}
	for (unsigned r = 0; r < vm->nr_regions; r++) {
		struct uffdio_register reg = {
			.range = { (uintptr_t)vm->regions[r].host, vm->regions[r].size },
			.mode = UFFDIO_REGISTER_MODE_MISSING,
		};

		if (ioctl(l->uffd, UFFDIO_REGISTER, &reg) < 0) {
			snprintf(err, errlen, "registering guest RAM with userfaultfd: %s",
				 strerror(errno));
			return -errno;
		}
	}
	if (pthread_create(&l->handler, NULL, handler_main, l)) {
		snprintf(err, errlen, "cannot start the lazy restore threads");
		return -EAGAIN;
	}
	if (pthread_create(&l->prefetch, NULL, prefetch_main, l)) {
		atomic_store(&l->stop, true);
		pthread_join(l->handler, NULL);
		snprintf(err, errlen, "cannot start the lazy restore threads");
		return -EAGAIN;
	}
	l->threads = true;
	return 0;
}

int snap_lazy_poll(const struct snap_lazy *l)
{
	if (atomic_load(&l->failed))
		return -EBADMSG;
	return atomic_load(&l->done) ? 1 : 0;
}

const char *snap_lazy_error(const struct snap_lazy *l)
{
	return atomic_load(&l->failed) ? l->err : NULL;
}

int snap_lazy_wait(struct snap_lazy *l, uint64_t *served, uint64_t *prefetched)
{
	while (snap_lazy_poll(l) == 0) {
		struct timespec ts = { 0, 5000000 };

		nanosleep(&ts, NULL);
	}
	if (served)
		*served = atomic_load(&l->served);
	if (prefetched)
		*prefetched = atomic_load(&l->prefetched);
	return snap_lazy_poll(l) < 0 ? -EBADMSG : 0;
}

void snap_lazy_abort(struct snap_lazy *l)
{
	if (!l || !l->threads)
		return;
	/* stop serving; a vCPU waiting on a page stays waiting (never gets a
	 * zero page instead) until the guest is destroyed */
	atomic_store(&l->stop, true);
	pthread_join(l->prefetch, NULL);
	pthread_join(l->handler, NULL);
	l->threads = false;
}

void snap_lazy_free(struct snap_lazy *l)
{
	if (!l)
		return;
	if (l->threads) {
		pthread_join(l->prefetch, NULL);	/* every page in: faults are over */
		atomic_store(&l->stop, true);
		pthread_join(l->handler, NULL);
	}
	if (l->uffd >= 0)
		close(l->uffd);
	for (unsigned f = 0; f < l->nfiles; f++) {
		close(l->fd[f]);
		for (unsigned r = 0; r < VM_MAX_REGIONS; r++)
			free(l->index[f][r]);
	}
	fetch_ctx_release(&l->fault_ctx);
	fetch_ctx_release(&l->prefetch_ctx);
	pthread_mutex_destroy(&l->lock);
	free(l);
}
