/*
 * Backend-independent helpers of the guest interface: describing a guest's
 * memory as a ckpt image, and mapping an image's regions onto a guest.
 */
#include "vm.h"

#include <errno.h>
#include <string.h>

void vm_image_info(const struct vm *vm, struct ckpt_image_info *info)
{
	memset(info, 0, sizeof(*info));
	info->page_size = VM_PAGE_SIZE;
	memcpy(info->guest_uuid, vm->uuid, 16);
	memcpy(info->guest_name, vm->name, sizeof(info->guest_name) - 1);
	info->region_count = vm->nr_regions;
	for (unsigned i = 0; i < vm->nr_regions; i++) {
		info->regions[i].id = vm->regions[i].id;
		info->regions[i].gpa = vm->regions[i].gpa;
		info->regions[i].size = vm->regions[i].size;
	}
}

int vm_page_target(const struct vm *vm, const struct ckpt_image_info *info,
		   struct ckpt_page_target *t)
{
	memset(t, 0, sizeof(*t));
	if (info->page_size != VM_PAGE_SIZE || info->region_count != vm->nr_regions)
		return -ERANGE;
	for (unsigned i = 0; i < info->region_count; i++) {
		const struct ckpt_region *r = &info->regions[i];
		const struct vm_region *g = &vm->regions[i];

		if (r->id != g->id || r->gpa != g->gpa || r->size != g->size)
			return -ERANGE;
		t->host[i] = g->host;
		t->fd[i] = g->memfd;
		t->fd_offset[i] = g->memfd_offset;
	}
	return 0;
}
