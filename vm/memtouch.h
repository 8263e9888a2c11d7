/*
 * Host side of the memtouch payload: its boot arguments, loading a RAM
 * image into the memory outside its working set, and the verifier that
 * proves a paused guest's memory intact after it moved or was restored.
 */
#ifndef VM_MEMTOUCH_H
#define VM_MEMTOUCH_H

#include <stdbool.h>
#include <stdint.h>

#include "guest_abi.h"
#include "vm.h"

struct vm_memtouch_opts {
	uint64_t working_set;		/* bytes */
	uint64_t dirty_rate;		/* bytes per second, 0 = as fast as it can */
	enum mt_content content;
	uint64_t seed;
	uint64_t stop_after;		/* writes per vCPU, 0 = never stop */
	bool fill_first;		/* write the whole working set at once first */
};

/* Fill the payload arguments; -EINVAL when the working set cannot fit. */
int vm_memtouch_args(const struct vm_memtouch_opts *o, uint64_t mem_bytes,
		     uint64_t args[16], char *err, size_t errlen);
int vm_memtouch_parse_content(const char *s, enum mt_content *c);

/* Copy a file into guest RAM from the end of the working set upwards. */
int vm_memtouch_prefill(struct vm *vm, const char *path, uint64_t *bytes_loaded,
			char *err, size_t errlen);

struct vm_verify_opts {
	const char *prefill;		/* file to compare the rest of RAM with */
	const uint64_t *min_counter;	/* per vCPU: counters must not be lower */
};

struct vm_verify_report {
	unsigned nr_vcpus;
	uint64_t counter[VMG_MAX_VCPUS];
	uint64_t total;			/* sum of counters: page writes */
	uint64_t passes, guest_check_errors;
	uint64_t pages_checked;
	uint64_t in_flight;		/* pages caught mid-write, checked as such */
	uint64_t bad_pages;
	uint64_t first_bad_gpa;
	uint64_t prefill_checked, prefill_bad;
	char msg[256];			/* first problem, or "" */
};

/*
 * Check a paused memtouch guest: every working-set page holds exactly what
 * its vCPU's counter says it wrote last, the prefilled RAM matches its
 * file, counters did not go back, and the guest's own checks found nothing.
 * Returns 0 when all holds, -EBADMSG when memory is wrong (see rep->msg),
 * or another negative errno when it could not check.
 */
int vm_memtouch_verify(const struct vm *vm, const struct vm_verify_opts *opts,
		       struct vm_verify_report *rep);

/* Counters of a running or paused memtouch guest (racy but monotonic). */
int vm_memtouch_counters(const struct vm *vm, uint64_t *counters, unsigned max);
/* Their sum: page writes so far, 0 when the guest is no memtouch. */
uint64_t vm_memtouch_total(const struct vm *vm);

#endif
