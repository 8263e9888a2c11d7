/*
 * memtouch: each vCPU rewrites its slice of the working set page by page,
 * at a paced rate, with content derived from (page index, generation) so
 * that any page can be checked on its own. The status counter advances only
 * after a page is fully written. After every full pass over its slice the
 * vCPU re-checks the whole slice and reports the result. With FILL_FIRST
 * the first pass runs unpaced, so the working set is all written at once.
 */
#include <stdbool.h>

#include "guest_io.h"

struct slice {
	volatile uint64_t *base;	/* first page of the slice */
	uint64_t first, pages;		/* working-set page indices */
};

static void write_page(const struct vmg_boot_params *bp, const struct slice *s,
		       uint64_t j, uint64_t gen)
{
	volatile uint64_t *p = s->base + j * MT_WORDS;
	uint64_t index = s->first + j;
	uint64_t seed = bp->arg[MT_ARG_SEED];
	uint32_t content = (uint32_t)bp->arg[MT_ARG_CONTENT];

	/* ascending stores: a paused writer leaves a new prefix, old suffix */
	for (uint32_t w = 0; w < MT_WORDS; w++)
		p[w] = mt_word(seed, content, index, gen, w);
}

/* Returns the first bad slice page, or s->pages when all are right. */
static uint64_t check_slice(const struct vmg_boot_params *bp, const struct slice *s,
			    uint64_t counter)
{
	uint64_t seed = bp->arg[MT_ARG_SEED];
	uint32_t content = (uint32_t)bp->arg[MT_ARG_CONTENT];

	for (uint64_t j = 0; j < s->pages; j++) {
		volatile uint64_t *p = s->base + j * MT_WORDS;
		uint64_t gen = mt_gen_after(counter, s->pages, j);

		for (uint32_t w = 0; w < MT_WORDS; w++) {
			uint64_t want = gen ? mt_word(seed, content, s->first + j, gen, w) : 0;

			if (p[w] != want)
				return j;
		}
	}
	return s->pages;
}

void guest_main(const struct vmg_boot_params *bp, uint64_t vcpu);

void guest_main(const struct vmg_boot_params *bp, uint64_t vcpu)
{
	volatile struct vmg_vcpu_status *st =
		(volatile struct vmg_vcpu_status *)VMG_STATUS_GPA + vcpu;
	uint64_t ws_pages = bp->arg[MT_ARG_WS_PAGES];
	uint64_t rate = bp->arg[MT_ARG_RATE];
	uint64_t stop_after = bp->arg[MT_ARG_STOP_AFTER];
	bool fill_first = bp->arg[MT_ARG_FILL_FIRST] != 0;
	uint64_t ticks_per_write = 0;
	struct slice s;

	if (bp->magic != VMG_BOOT_MAGIC || vcpu >= bp->nr_vcpus ||
	    ws_pages < bp->nr_vcpus) {
		guest_event(VMG_EV_PANIC, (uint32_t)vcpu, 1);
		return;
	}
	s.first = mt_slice_first(ws_pages, bp->nr_vcpus, (uint32_t)vcpu);
	s.pages = mt_slice_pages(ws_pages, bp->nr_vcpus, (uint32_t)vcpu);
	s.base = (volatile uint64_t *)(bp->arg[MT_ARG_WS_BASE] + s.first * MT_PAGE_SIZE);
	if (rate)
		ticks_per_write = bp->tsc_khz * 1000 * bp->nr_vcpus / rate;

	/* A restored guest resumes mid-loop; a fresh one starts the clock. */
	if (!st->start_tsc) {
		st->start_counter = st->counter;
		st->start_tsc = rdtsc();
		if (vcpu == 0) {
			guest_puts("memtouch: ");
			guest_putu(ws_pages / 256);
			guest_puts(" MiB working set on ");
			guest_putu(bp->nr_vcpus);
			guest_puts(" vCPUs\n");
		}
	}
	guest_event(VMG_EV_READY, (uint32_t)vcpu, 0);

	for (;;) {
		uint64_t k = st->counter;

		if (stop_after && k >= stop_after)
			break;
		if (fill_first && k == s.pages) {
			/* the working set is full: the pace starts now */
			st->start_tsc = rdtsc();
			st->start_counter = k;
		}
		if (ticks_per_write && !(fill_first && k < s.pages)) {
			uint64_t due = st->start_tsc + (k - st->start_counter) * ticks_per_write;

			while ((int64_t)(rdtsc() - due) < 0)
				cpu_relax();
		}
		write_page(bp, &s, k % s.pages, k / s.pages + 1);
		st->counter = k + 1;
		st->heartbeat = rdtsc();

		if ((k + 1) % s.pages == 0) {
			uint64_t bad = check_slice(bp, &s, k + 1);

			st->passes = st->passes + 1;
			if (bad != s.pages) {
				st->check_errors = st->check_errors + 1;
				st->bad_page = s.first + bad;
				guest_event(VMG_EV_CHECK_BAD, (uint32_t)vcpu,
					    (uint32_t)(bad & 0xffff));
			} else {
				guest_event(VMG_EV_CHECK_OK, (uint32_t)vcpu, 0);
			}
		}
	}
	guest_event(VMG_EV_DONE, (uint32_t)vcpu, 0);
}
