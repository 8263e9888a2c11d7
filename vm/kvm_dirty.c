/*
 * Dirty tracking, two ways KVM offers:
 *
 * bitmap: KVM_GET_DIRTY_LOG with KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2. A sync
 *   only reads the bitmap; pages are write-protected again by
 *   KVM_CLEAR_DIRTY_LOG chunk by chunk just before the caller reads them,
 *   so a write after the clear shows in the next sync and none is lost.
 *   With INITIALLY_SET every page starts dirty: round 1 is all of RAM.
 * ring: per-vCPU rings of dirtied (slot, page) entries. A sync harvests
 *   every ring into a pending bitmap and re-arms the pages at once
 *   (KVM_RESET_DIRTY_RINGS); a vCPU whose ring fills exits and harvests.
 *   dirty_start marks every page pending, to match the bitmap's start.
 */
#include "kvm_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#define RING_BYTES	(1u << 20)	/* 64 Ki entries per vCPU */

int kvm_dirty_init(struct kvm_vm *k, char *err, size_t errlen)
{
	struct kvm_enable_cap cap = { 0 };
	int max;

	if (k->dirty_mode == VM_DIRTY_BITMAP) {
		if (ioctl(k->vm_fd, KVM_CHECK_EXTENSION, KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2) <= 0)
			return kvm_err(err, errlen, -ENOTSUP,
				       "KVM lacks KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2");
		cap.cap = KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2;
		cap.args[0] = KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE | KVM_DIRTY_LOG_INITIALLY_SET;
		if (ioctl(k->vm_fd, KVM_ENABLE_CAP, &cap) < 0)
			return kvm_err(err, errlen, -errno, "enabling manual dirty-log clear: %s",
				       strerror(errno));
		return 0;
	}

	/* Prefer the ACQ_REL flavour: it is the one with defined ordering. */
	cap.cap = KVM_CAP_DIRTY_LOG_RING_ACQ_REL;
	max = ioctl(k->vm_fd, KVM_CHECK_EXTENSION, cap.cap);
	if (max <= 0) {
		cap.cap = KVM_CAP_DIRTY_LOG_RING;
		max = ioctl(k->vm_fd, KVM_CHECK_EXTENSION, cap.cap);
	}
	if (max <= 0)
		return kvm_err(err, errlen, -ENOTSUP, "KVM lacks KVM_CAP_DIRTY_LOG_RING");
	cap.args[0] = (unsigned)max < RING_BYTES ? (unsigned)max : RING_BYTES;
	if (ioctl(k->vm_fd, KVM_ENABLE_CAP, &cap) < 0)
		return kvm_err(err, errlen, -errno, "enabling the dirty ring (%llu bytes): %s",
			       (unsigned long long)cap.args[0], strerror(errno));
	k->ring_entries = (uint32_t)(cap.args[0] / sizeof(struct kvm_dirty_gfn));
	return 0;
}

void kvm_dirty_release(struct kvm_vm *k)
{
	for (unsigned i = 0; i < VM_MAX_REGIONS; i++) {
		free(k->ring_pending[i]);
		free(k->log_buf[i]);
		k->ring_pending[i] = k->log_buf[i] = NULL;
	}
}

static int alloc_bitmaps(struct kvm_vm *k, uint64_t **set, bool all_ones)
{
	for (unsigned i = 0; i < k->pub.nr_regions; i++) {
		const struct vm_region *r = &k->pub.regions[i];
		size_t bytes = vm_bitmap_bytes(r);
		uint64_t pages = r->size / VM_PAGE_SIZE;

		if (!set[i]) {
			set[i] = calloc(1, bytes);
			if (!set[i])
				return -ENOMEM;
		}
		if (all_ones) {
			memset(set[i], 0xff, bytes);
			if (pages % 64)
				set[i][pages / 64] = (1ull << (pages % 64)) - 1;
		}
	}
	return 0;
}

int kvm_ring_harvest(struct kvm_vm *k)
{
	int ret = 0;

	pthread_mutex_lock(&k->ring_lock);
	for (unsigned v = 0; v < k->pub.nr_vcpus; v++) {
		struct kvm_vcpu_ctx *c = &k->vcpus[v];

		if (!c->ring)
			continue;
		for (;;) {
			struct kvm_dirty_gfn *e = &c->ring[c->ring_next % k->ring_entries];
			uint32_t flags = __atomic_load_n(&e->flags, __ATOMIC_ACQUIRE);
			uint32_t slot = e->slot & 0xffff;

			if (!(flags & KVM_DIRTY_GFN_F_DIRTY))
				break;
			if (slot < k->pub.nr_regions && k->ring_pending[slot] &&
			    e->offset < k->pub.regions[slot].size / VM_PAGE_SIZE)
				k->ring_pending[slot][e->offset / 64] |= 1ull << (e->offset % 64);
			__atomic_store_n(&e->flags, KVM_DIRTY_GFN_F_RESET, __ATOMIC_RELEASE);
			c->ring_next++;
		}
	}
	if (ioctl(k->vm_fd, KVM_RESET_DIRTY_RINGS, 0) < 0)
		ret = -errno;
	pthread_mutex_unlock(&k->ring_lock);
	return ret;
}

int kvm_dirty_start(struct vm *vm)
{
	struct kvm_vm *k = to_kvm(vm);
	int ret;

	if (k->dirty_on)
		return -EALREADY;
	if (k->dirty_mode == VM_DIRTY_RING) {
		pthread_mutex_lock(&k->ring_lock);
		ret = alloc_bitmaps(k, k->ring_pending, true);
		pthread_mutex_unlock(&k->ring_lock);
	} else {
		ret = alloc_bitmaps(k, k->log_buf, false);
	}
	if (ret)
		return ret;
	ret = kvm_set_memslots(k, true);
	if (ret)
		return ret;
	k->dirty_on = true;
	return 0;
}

int kvm_dirty_sync(struct vm *vm, unsigned region, uint64_t *bitmap)
{
	struct kvm_vm *k = to_kvm(vm);
	size_t words;
	uint64_t *src;
	int ret;

	if (!k->dirty_on || region >= vm->nr_regions)
		return -EINVAL;
	words = vm_bitmap_bytes(&vm->regions[region]) / 8;
	if (k->dirty_mode == VM_DIRTY_RING) {
		ret = kvm_ring_harvest(k);
		if (ret)
			return ret;
		pthread_mutex_lock(&k->ring_lock);
		src = k->ring_pending[region];
		for (size_t i = 0; i < words; i++) {
			bitmap[i] |= src[i];
			src[i] = 0;
		}
		pthread_mutex_unlock(&k->ring_lock);
		return 0;
	}

	{
		struct kvm_dirty_log log = { .slot = region };

		src = k->log_buf[region];
		log.dirty_bitmap = src;
		if (ioctl(k->vm_fd, KVM_GET_DIRTY_LOG, &log) < 0)
			return -errno;
		for (size_t i = 0; i < words; i++)
			bitmap[i] |= src[i];
	}
	return 0;
}

int kvm_dirty_clear(struct vm *vm, unsigned region, uint64_t first_page,
		    uint64_t npages, const uint64_t *bitmap)
{
	struct kvm_vm *k = to_kvm(vm);
	uint64_t pages;
	struct kvm_clear_dirty_log clr = { .slot = region };

	if (!k->dirty_on || region >= vm->nr_regions)
		return -EINVAL;
	if (k->dirty_mode == VM_DIRTY_RING)
		return 0;	/* harvesting re-armed them already */
	pages = vm->regions[region].size / VM_PAGE_SIZE;
	/* KVM wants 64-page alignment, except for a range that ends the slot. */
	npages += first_page % 64;
	first_page -= first_page % 64;
	if (first_page >= pages)
		return -ERANGE;
	if (npages > pages - first_page)
		npages = pages - first_page;
	if ((first_page + npages) % 64 && first_page + npages != pages)
		npages = ((npages + 63) / 64) * 64 > pages - first_page ?
			 pages - first_page : ((npages + 63) / 64) * 64;
	clr.first_page = first_page;
	clr.num_pages = (uint32_t)npages;
	clr.dirty_bitmap = (void *)(bitmap + first_page / 64);
	if (ioctl(k->vm_fd, KVM_CLEAR_DIRTY_LOG, &clr) < 0)
		return -errno;
	return 0;
}

int kvm_dirty_stop(struct vm *vm)
{
	struct kvm_vm *k = to_kvm(vm);
	int ret;

	if (!k->dirty_on)
		return 0;
	ret = kvm_set_memslots(k, false);
	if (ret)
		return ret;
	if (k->dirty_mode == VM_DIRTY_RING)
		kvm_ring_harvest(k);	/* drop what is left */
	k->dirty_on = false;
	return 0;
}
