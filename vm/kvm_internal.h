/*
 * Private to the kvm backend (vm/kvm_*.c): the VM and vCPU structures and
 * the helpers its files share. Nothing outside vm/ includes this.
 */
#ifndef VM_KVM_INTERNAL_H
#define VM_KVM_INTERNAL_H

#include <linux/kvm.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>

#include "vm.h"

/* Debian 12's uapi headers predate the x86 value (arch/x86 uapi kvm.h). */
#if KVM_DIRTY_LOG_PAGE_OFFSET == 0 && defined(__x86_64__)
#undef KVM_DIRTY_LOG_PAGE_OFFSET
#define KVM_DIRTY_LOG_PAGE_OFFSET 64
#endif

#define KVM_MAX_VCPUS	8
#define KVM_MAX_MSRS	256

struct kvm_vcpu_ctx {
	struct kvm_vm *vm;
	unsigned index;
	int fd;
	struct kvm_run *run;		/* mmap of the vCPU; immediate_exit is
					 * written by pausers under vm->lock */
	size_t run_size;
	pthread_t thread;
	bool thread_started;
	/* Owned by the vCPU thread. */
	bool io_pending;		/* last exit must be completed by KVM_RUN */
	char console[256];
	size_t console_len;
	/* Under vm->lock. */
	bool paused;
	bool done;			/* guest finished or failed: never runs again */
	/* Under vm->ring_lock. */
	struct kvm_dirty_gfn *ring;
	uint32_t ring_next;
};

struct kvm_vm {
	struct vm pub;
	int kvm_fd, vm_fd;
	int memfd;
	uint8_t *mem;			/* whole memfd mapping */
	uint64_t mem_bytes;
	struct vm_events events;
	bool incoming;			/* waiting for loaded state */
	uint32_t tsc_khz;
	struct kvm_cpuid2 *cpuid;	/* supported CPUID, for fresh guests */
	uint32_t msr_index[KVM_MAX_MSRS];	/* MSRs this host can read */
	unsigned nr_msrs;

	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool started;			/* under lock */
	bool pause_req;			/* under lock */
	bool stop_req;			/* under lock */
	unsigned nr_paused;		/* under lock: vCPUs out of KVM_RUN */

	/* Guest time at the last pause, owned by the controlling thread: a
	 * saved guest resumes at the instant it was stopped, not later. */
	bool paused_time_valid;
	uint64_t paused_tsc[KVM_MAX_VCPUS];
	struct kvm_clock_data paused_clock;

	enum vm_dirty_mode dirty_mode;
	bool dirty_on;			/* owned by the controlling thread */
	uint32_t ring_entries;
	pthread_mutex_t ring_lock;
	uint64_t *ring_pending[VM_MAX_REGIONS];	/* under ring_lock */
	uint64_t *log_buf[VM_MAX_REGIONS];	/* bitmap mode scratch */

	/* Incoming state bookkeeping, owned by the loading thread. */
	bool loaded_vm, loaded_clock, loaded_irqchip[4];
	bool loaded_vcpu[KVM_MAX_VCPUS];

	struct kvm_vcpu_ctx vcpus[KVM_MAX_VCPUS];
};

static inline struct kvm_vm *to_kvm(struct vm *vm)
{
	return (struct kvm_vm *)vm;
}

/* snprintf into an optional error buffer; returns ret for chaining. */
int kvm_err(char *err, size_t len, int ret, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

#define MSR_IA32_TSC	0x10

/* Memory slots: set or clear dirty logging on every region. */
int kvm_set_memslots(struct kvm_vm *k, bool log_dirty);

/* Guest setup for a fresh boot (kvm_boot.c). */
int kvm_boot_setup(struct kvm_vm *k, const struct vm_kvm_config *cfg,
		   char *err, size_t errlen);
int kvm_boot_vcpu(struct kvm_vm *k, struct kvm_vcpu_ctx *c, char *err, size_t errlen);
int kvm_setup_cpuid(struct kvm_vm *k, char *err, size_t errlen);

/* Dirty tracking (kvm_dirty.c). */
int kvm_dirty_init(struct kvm_vm *k, char *err, size_t errlen);
void kvm_dirty_release(struct kvm_vm *k);
int kvm_ring_harvest(struct kvm_vm *k);
int kvm_dirty_start(struct vm *vm);
int kvm_dirty_sync(struct vm *vm, unsigned region, uint64_t *bitmap);
int kvm_dirty_clear(struct vm *vm, unsigned region, uint64_t first_page,
		    uint64_t npages, const uint64_t *bitmap);
int kvm_dirty_stop(struct vm *vm);

/* State (kvm_state.c). */
int kvm_probe_msrs(struct kvm_vm *k, char *err, size_t errlen);
void kvm_snapshot_time(struct kvm_vm *k);
int kvm_save_config(struct vm *vm, struct ckpt_writer *w);
int kvm_save_state(struct vm *vm, struct ckpt_writer *w);
int kvm_load_state(struct vm *vm, const struct ckpt_record *rec, char *err, size_t errlen);
int kvm_load_finish(struct vm *vm, char *err, size_t errlen);
int kvm_load_again(struct vm *vm, char *err, size_t errlen);

#endif
