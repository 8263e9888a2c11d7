/*
 * Helpers for tests that run a memtouch guest on /dev/kvm: boot one with
 * given options (skipping the test, with the reason, where /dev/kvm is
 * missing), and read its status.
 */
#ifndef KVMGUEST_H
#define KVMGUEST_H

#include "memtouch.h"
#include "vm.h"

struct tg_opts {
	uint64_t mem;
	unsigned vcpus;
	uint64_t working_set;
	uint64_t dirty_rate;
	enum mt_content content;
	enum vm_dirty_mode dirty_mode;
	bool no_fill;		/* pace the first pass too */
	uint64_t stop_after;	/* writes per vCPU, then it finishes; 0 = never */
};

/* Skip the calling test unless /dev/kvm works. */
void tg_require_kvm(void);
/* Boot (not start) a memtouch guest; fails the test on error. */
struct vm *tg_boot(const struct tg_opts *o);
uint64_t tg_total(const struct vm *vm);
const struct vmg_vcpu_status *tg_status(const struct vm *vm, unsigned vcpu);
/* Pointer to the guest memory at gpa, or NULL. */
void *tg_gpa(const struct vm *vm, uint64_t gpa);
void tg_sleep_ms(unsigned ms);
double tg_now(void);

#endif
