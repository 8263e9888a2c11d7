/*
 * memtouch host side. The verifier relies on the payload's write order: a
 * vCPU writes page words in ascending order and bumps its counter only
 * after the last one, so in a paused guest every page is complete except
 * at most one per vCPU, which holds a prefix of the new generation over a
 * suffix of the old one.
 */
#include "memtouch.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

static void *gpa_host(const struct vm *vm, uint64_t gpa, uint64_t len)
{
	for (unsigned i = 0; i < vm->nr_regions; i++) {
		const struct vm_region *r = &vm->regions[i];

		if (gpa >= r->gpa && gpa - r->gpa + len <= r->size)
			return r->host + (gpa - r->gpa);
	}
	return NULL;
}

static const struct vmg_boot_params *boot_params(const struct vm *vm)
{
	const struct vmg_boot_params *bp = gpa_host(vm, VMG_BOOT_GPA, sizeof(*bp));

	return bp && bp->magic == VMG_BOOT_MAGIC ? bp : NULL;
}

int vm_memtouch_parse_content(const char *s, enum mt_content *c)
{
	if (!strcasecmp(s, "random"))
		*c = MT_RANDOM;
	else if (!strcasecmp(s, "text") || !strcasecmp(s, "compressible"))
		*c = MT_TEXT;
	else if (!strcasecmp(s, "zero") || !strcasecmp(s, "zero-heavy") || !strcasecmp(s, "mixed"))
		*c = MT_ZERO_HEAVY;
	else
		return -EINVAL;
	return 0;
}

int vm_memtouch_args(const struct vm_memtouch_opts *o, uint64_t mem_bytes,
		     uint64_t args[16], char *err, size_t errlen)
{
	uint64_t low = mem_bytes < VMG_LOW_LIMIT ? mem_bytes : VMG_LOW_LIMIT;
	uint64_t pages = o->working_set / MT_PAGE_SIZE;

	memset(args, 0, 16 * sizeof(args[0]));
	/* The working set lives in low RAM, above the payload's own area. */
	if (pages == 0 || VMG_FREE_GPA + o->working_set > low) {
		snprintf(err, errlen, "working set of %llu MiB does not fit in %llu MiB of guest RAM",
			 (unsigned long long)(o->working_set >> 20),
			 (unsigned long long)((low - VMG_FREE_GPA) >> 20));
		return -EINVAL;
	}
	args[MT_ARG_WS_BASE] = VMG_FREE_GPA;
	args[MT_ARG_WS_PAGES] = pages;
	args[MT_ARG_RATE] = o->dirty_rate / MT_PAGE_SIZE;
	if (o->dirty_rate && !args[MT_ARG_RATE])
		args[MT_ARG_RATE] = 1;
	args[MT_ARG_CONTENT] = o->content;
	args[MT_ARG_SEED] = o->seed;
	args[MT_ARG_STOP_AFTER] = o->stop_after;
	args[MT_ARG_FILL_FIRST] = o->fill_first;
	return 0;
}

/* Guest-physical ranges of RAM above the working set, in address order. */
static uint64_t prefill_start(const struct vmg_boot_params *bp)
{
	return bp->arg[MT_ARG_WS_BASE] + bp->arg[MT_ARG_WS_PAGES] * MT_PAGE_SIZE;
}

int vm_memtouch_prefill(struct vm *vm, const char *path, uint64_t *bytes_loaded,
			char *err, size_t errlen)
{
	const struct vmg_boot_params *bp = boot_params(vm);
	uint64_t start, loaded = 0;
	int fd, ret = 0;

	if (!bp) {
		snprintf(err, errlen, "no memtouch boot parameters in guest memory");
		return -EINVAL;
	}
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		snprintf(err, errlen, "prefill %s: %s", path, strerror(errno));
		return -errno;
	}
	start = prefill_start(bp);
	for (unsigned i = 0; i < vm->nr_regions && !ret; i++) {
		const struct vm_region *r = &vm->regions[i];
		uint64_t from = start > r->gpa ? start - r->gpa : 0;

		while (from < r->size) {
			ssize_t n = read(fd, r->host + from, r->size - from);

			if (n < 0) {
				snprintf(err, errlen, "prefill %s: %s", path, strerror(errno));
				ret = -errno;
				break;
			}
			if (n == 0)
				goto done;
			from += n;
			loaded += n;
		}
	}
done:
	close(fd);
	if (bytes_loaded)
		*bytes_loaded = loaded;
	return ret;
}

int vm_memtouch_counters(const struct vm *vm, uint64_t *counters, unsigned max)
{
	const struct vmg_boot_params *bp = boot_params(vm);
	const volatile struct vmg_vcpu_status *st;
	unsigned n;

	if (!bp)
		return -EINVAL;
	st = gpa_host(vm, VMG_STATUS_GPA, VMG_MAX_VCPUS * sizeof(*st));
	n = bp->nr_vcpus < max ? bp->nr_vcpus : max;
	for (unsigned i = 0; i < n; i++)
		counters[i] = st[i].counter;
	return (int)n;
}

uint64_t vm_memtouch_total(const struct vm *vm)
{
	uint64_t c[VMG_MAX_VCPUS], t = 0;
	int n = vm_memtouch_counters(vm, c, VMG_MAX_VCPUS);

	for (int i = 0; i < n; i++)
		t += c[i];
	return t;
}

static void bad(struct vm_verify_report *rep, uint64_t gpa, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void bad(struct vm_verify_report *rep, uint64_t gpa, const char *fmt, ...)
{
	va_list ap;

	if (!rep->msg[0]) {
		va_start(ap, fmt);
		vsnprintf(rep->msg, sizeof(rep->msg), fmt, ap);
		va_end(ap);
		rep->first_bad_gpa = gpa;
	}
}

/* Words of page p that match generation gen, from word 0 upwards. */
static uint32_t matching_prefix(const uint64_t *p, const struct vmg_boot_params *bp,
				uint64_t index, uint64_t gen)
{
	uint32_t w = 0;

	for (; w < MT_WORDS; w++) {
		uint64_t want = gen ? mt_word(bp->arg[MT_ARG_SEED], (uint32_t)bp->arg[MT_ARG_CONTENT],
					      index, gen, w) : 0;
		if (p[w] != want)
			break;
	}
	return w;
}

static bool matches_from(const uint64_t *p, const struct vmg_boot_params *bp,
			 uint64_t index, uint64_t gen, uint32_t from)
{
	for (uint32_t w = from; w < MT_WORDS; w++) {
		uint64_t want = gen ? mt_word(bp->arg[MT_ARG_SEED], (uint32_t)bp->arg[MT_ARG_CONTENT],
					      index, gen, w) : 0;
		if (p[w] != want)
			return false;
	}
	return true;
}

static void verify_slice(const struct vm *vm, const struct vmg_boot_params *bp,
			 unsigned v, uint64_t counter, struct vm_verify_report *rep)
{
	uint64_t ws_pages = bp->arg[MT_ARG_WS_PAGES];
	uint64_t first = mt_slice_first(ws_pages, bp->nr_vcpus, v);
	uint64_t n = mt_slice_pages(ws_pages, bp->nr_vcpus, v);
	uint64_t in_flight = counter % n;	/* the page write `counter` goes to */

	for (uint64_t j = 0; j < n; j++) {
		uint64_t index = first + j;
		uint64_t gpa = bp->arg[MT_ARG_WS_BASE] + index * MT_PAGE_SIZE;
		const uint64_t *p = gpa_host(vm, gpa, MT_PAGE_SIZE);
		uint64_t gen = mt_gen_after(counter, n, j);
		uint32_t prefix;

		rep->pages_checked++;
		if (!p) {
			rep->bad_pages++;
			bad(rep, gpa, "working-set page %llu is outside guest RAM",
			    (unsigned long long)index);
			continue;
		}
		prefix = matching_prefix(p, bp, index, gen);
		if (prefix == MT_WORDS)
			continue;
		/* The page being written when the guest stopped: new prefix over
		 * the previous generation. */
		if (j == in_flight) {
			uint32_t new_prefix = matching_prefix(p, bp, index, gen + 1);

			if (matches_from(p, bp, index, gen, new_prefix)) {
				rep->in_flight++;
				continue;
			}
		}
		rep->bad_pages++;
		/* a prefix of the due generation over the one before: the page
		 * was copied while that write went on, and not again after it */
		if (prefix > 1 && gen > 0 && matches_from(p, bp, index, gen - 1, prefix))
			bad(rep, gpa, "vCPU %u page %llu (gpa %#llx): words 0-%u hold generation "
			    "%llu, the rest generation %llu, a copy torn mid-write (counter %llu)",
			    v, (unsigned long long)index, (unsigned long long)gpa, prefix - 1,
			    (unsigned long long)gen, (unsigned long long)gen - 1,
			    (unsigned long long)counter);
		else
			bad(rep, gpa, "vCPU %u page %llu (gpa %#llx): word %u differs from generation "
			    "%llu (counter %llu)", v, (unsigned long long)index,
			    (unsigned long long)gpa, prefix, (unsigned long long)gen,
			    (unsigned long long)counter);
	}
}

static int verify_prefill(const struct vm *vm, const struct vmg_boot_params *bp,
			  const char *path, struct vm_verify_report *rep)
{
	uint64_t start = prefill_start(bp);
	uint8_t *buf = malloc(1 << 20);
	int fd = open(path, O_RDONLY | O_CLOEXEC), ret = 0;

	if (fd < 0 || !buf) {
		ret = fd < 0 ? -errno : -ENOMEM;
		snprintf(rep->msg, sizeof(rep->msg), "prefill %s: %s", path, strerror(-ret));
		goto out;
	}
	for (unsigned i = 0; i < vm->nr_regions; i++) {
		const struct vm_region *r = &vm->regions[i];
		uint64_t from = start > r->gpa ? start - r->gpa : 0;

		while (from < r->size) {
			uint64_t want = r->size - from < (1 << 20) ? r->size - from : (1 << 20);
			ssize_t n = read(fd, buf, want);

			if (n < 0) {
				ret = -errno;
				goto out;
			}
			if (n == 0)
				goto out;
			for (ssize_t off = 0; off < n; off += MT_PAGE_SIZE) {
				size_t len = n - off < MT_PAGE_SIZE ? (size_t)(n - off) : MT_PAGE_SIZE;

				rep->prefill_checked++;
				if (memcmp(r->host + from + off, buf + off, len)) {
					bad(rep, r->gpa + from + off,
					    "prefilled page at gpa %#llx differs from %s",
					    (unsigned long long)(r->gpa + from + off), path);
					rep->prefill_bad++;
				}
			}
			from += n;
		}
	}
out:
	if (fd >= 0)
		close(fd);
	free(buf);
	return ret;
}

int vm_memtouch_verify(const struct vm *vm, const struct vm_verify_opts *opts,
		       struct vm_verify_report *rep)
{
	const struct vmg_boot_params *bp = boot_params(vm);
	const struct vmg_vcpu_status *st;
	int ret;

	memset(rep, 0, sizeof(*rep));
	if (!bp || bp->nr_vcpus == 0 || bp->nr_vcpus > VMG_MAX_VCPUS ||
	    bp->arg[MT_ARG_WS_PAGES] < bp->nr_vcpus) {
		snprintf(rep->msg, sizeof(rep->msg), "no memtouch boot parameters in guest memory");
		return -EINVAL;
	}
	st = gpa_host(vm, VMG_STATUS_GPA, VMG_MAX_VCPUS * sizeof(*st));
	rep->nr_vcpus = bp->nr_vcpus;
	for (unsigned v = 0; v < bp->nr_vcpus; v++) {
		rep->counter[v] = st[v].counter;
		rep->total += st[v].counter;
		rep->passes += st[v].passes;
		rep->guest_check_errors += st[v].check_errors;
		if (opts && opts->min_counter && st[v].counter < opts->min_counter[v]) {
			rep->bad_pages++;
			bad(rep, VMG_STATUS_GPA, "vCPU %u counter went back: %llu, was %llu", v,
			    (unsigned long long)st[v].counter,
			    (unsigned long long)opts->min_counter[v]);
		}
		verify_slice(vm, bp, v, st[v].counter, rep);
	}
	if (rep->bad_pages > 1) {
		size_t len = strlen(rep->msg);

		snprintf(rep->msg + len, sizeof(rep->msg) - len, "; %llu bad pages in all",
			 (unsigned long long)rep->bad_pages);
	}
	if (rep->guest_check_errors)
		bad(rep, VMG_STATUS_GPA, "the guest's own check failed %llu times",
		    (unsigned long long)rep->guest_check_errors);
	if (opts && opts->prefill) {
		ret = verify_prefill(vm, bp, opts->prefill, rep);
		if (ret)
			return ret;
	}
	return rep->bad_pages || rep->prefill_bad || rep->guest_check_errors ? -EBADMSG : 0;
}
