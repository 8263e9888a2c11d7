/*
 * The guest interface that migration, checkpoints and replication are
 * written against: RAM regions, dirty tracking, pause/resume, and save/load
 * of all non-memory state as ckpt-format STATE records. One ops table per
 * backend (kvm here; libvirt later).
 */
#ifndef VM_H
#define VM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ckpt.h"

#define VM_MAX_REGIONS	4
#define VM_PAGE_SIZE	4096u

struct vm_region {
	uint32_t id;
	uint64_t gpa;
	uint64_t size;
	uint8_t *host;		/* shared mapping of the guest's RAM */
	int memfd;		/* backing memfd, for other processes */
	uint64_t memfd_offset;
};

enum vm_dirty_mode {
	VM_DIRTY_BITMAP,	/* KVM_GET_DIRTY_LOG with manual clear */
	VM_DIRTY_RING,		/* KVM_CAP_DIRTY_LOG_RING */
};

struct vm;

/* Callbacks from the vCPU threads; may be NULL. Called without locks held. */
struct vm_events {
	void (*console)(void *opaque, const char *buf, size_t len);
	void (*guest_event)(void *opaque, unsigned vcpu, uint32_t code, uint32_t arg);
	void (*stopped)(void *opaque, unsigned vcpu, int err, const char *why);
	void *opaque;
};

struct vm_ops {
	const char *name;
	/* Start every vCPU; a loaded (incoming) VM runs from its loaded state. */
	int (*start)(struct vm *vm);
	/* Stop all vCPUs within bounded time and keep them stopped. */
	int (*pause)(struct vm *vm);
	int (*resume)(struct vm *vm);

	/* Dirty tracking: start; per region, fetch the bitmap of pages written
	 * since they were last cleared (bitmap is ORed into, one bit a page);
	 * clear a page range just before reading it; stop. */
	int (*dirty_start)(struct vm *vm);
	int (*dirty_sync)(struct vm *vm, unsigned region, uint64_t *bitmap);
	int (*dirty_clear)(struct vm *vm, unsigned region, uint64_t first_page,
			   uint64_t npages, const uint64_t *bitmap);
	int (*dirty_stop)(struct vm *vm);

	/* The VM's configuration (CKPT_STATE_VM), written before any page so a
	 * receiver can build the guest first; vm_kvm_config_from_record() and
	 * load_state() read it back. */
	int (*save_config)(struct vm *vm, struct ckpt_writer *w);
	/* Non-memory state of a paused VM as STATE records, and back. */
	int (*save_state)(struct vm *vm, struct ckpt_writer *w);
	int (*load_state)(struct vm *vm, const struct ckpt_record *rec,
			  char *err, size_t errlen);
	/* After the last STATE record: refuse if anything required is missing. */
	int (*load_finish)(struct vm *vm, char *err, size_t errlen);
	/* A loaded guest that never ran takes a new full set of STATE records
	 * (a standby applying a replication epoch); load_finish() after them. */
	int (*load_again)(struct vm *vm, char *err, size_t errlen);

	void (*destroy)(struct vm *vm);
};

struct vm {
	const struct vm_ops *ops;
	unsigned nr_regions;
	struct vm_region regions[VM_MAX_REGIONS];
	unsigned nr_vcpus;
	uint8_t uuid[16];
	char name[CKPT_NAME_LEN];
};

/* What a kvm micro-VM is made of. */
struct vm_kvm_config {
	const char *name;
	uint64_t mem_bytes;		/* 64 MiB to 8 GiB */
	unsigned nr_vcpus;		/* 1 to 8 */
	enum vm_dirty_mode dirty_mode;
	bool hugetlb;			/* back RAM with 2 MiB huge pages */
	/* A fresh guest: payload image and its boot arguments. An incoming
	 * guest (payload NULL) gets its memory and state loaded instead. */
	const void *payload;
	size_t payload_size;
	uint64_t args[16];
	struct vm_events events;
	/* RAM to adopt instead of a fresh memfd (a copy of this guest's
	 * memory kept elsewhere, as the base of a resynchronisation): its
	 * size must be mem_bytes. The VM maps a duplicate: the caller keeps
	 * and closes its own descriptor. */
	bool adopt_memfd;
	int memfd;
};

/* Create a kvm micro-VM; on failure NULL with the reason in err. */
struct vm *vm_kvm_create(const struct vm_kvm_config *cfg, char *err, size_t errlen);

/* Read a CKPT_STATE_VM record into cfg's nr_vcpus and mem_bytes. */
int vm_kvm_config_from_record(const struct ckpt_record *rec, struct vm_kvm_config *cfg,
			      char *err, size_t errlen);

/* True when /dev/kvm can be opened; otherwise why not in why. */
bool vm_kvm_available(char *why, size_t len);

/* One KVM capability the kvm backend relies on, as the host answers. */
struct vm_kvm_feature {
	const char *name;		/* without KVM_CAP_ */
	const char *used_for;
	bool required;			/* false: only an option needs it */
	int value;			/* KVM_CHECK_EXTENSION on a VM: 0 = absent */
};

/* Ask the host, as vmigrate check does: /dev/kvm, its API version, a VM,
 * then each capability kvm_*.c uses (kvm_probe.c lists them beside the
 * ioctls that need them). Fills up to max entries and returns how many,
 * or a negative errno with err when no VM can be made. */
int vm_kvm_probe(struct vm_kvm_feature *out, unsigned max, char *err, size_t errlen);

/* Inline wrappers, so callers read as vm_pause(vm) etc. */
static inline int vm_start(struct vm *vm) { return vm->ops->start(vm); }
static inline int vm_pause(struct vm *vm) { return vm->ops->pause(vm); }
static inline int vm_resume(struct vm *vm) { return vm->ops->resume(vm); }
static inline void vm_destroy(struct vm *vm) { if (vm) vm->ops->destroy(vm); }

/* Fill info (regions, identity, page size) for a ckpt header of this VM. */
void vm_image_info(const struct vm *vm, struct ckpt_image_info *info);
/* Map vm regions to a reader's page target (with their memfds, for
 * use_fd); -ERANGE when they differ. */
int vm_page_target(const struct vm *vm, const struct ckpt_image_info *info,
		   struct ckpt_page_target *t);

/* Bytes of the dirty bitmap for a region. */
static inline size_t vm_bitmap_bytes(const struct vm_region *r)
{
	return ((r->size / VM_PAGE_SIZE + 63) / 64) * 8;
}

/* Built-in payloads from tools/guests, by name ("memtouch"), or NULL. */
const void *vm_payload_find(const char *name, size_t *size);
/* A built-in payload by name, or else a flat binary read from a file
 * (*owned is then set to the buffer to free). NULL with err on failure. */
const void *vm_payload_load(const char *name_or_path, size_t *size, void **owned,
			    char *err, size_t errlen);

#endif
