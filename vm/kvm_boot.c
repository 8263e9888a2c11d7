/*
 * First boot of a fresh micro-VM: identity page tables with 2 MiB pages,
 * a flat GDT, the boot parameters and the payload in guest RAM, and every
 * vCPU entering the payload directly in 64-bit mode (GUESTS.md has the
 * contract). No firmware, no real mode, no SIPI: the VMM sets it all.
 */
#include "kvm_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include "guest_abi.h"

#define PTE_P	0x1ull
#define PTE_RW	0x2ull
#define PTE_PS	0x80ull
#define PTE_US	0x4ull

#define CR0_PE	0x1ull
#define CR0_MP	0x2ull
#define CR0_ET	0x10ull
#define CR0_NE	0x20ull
#define CR0_WP	0x10000ull
#define CR0_PG	0x80000000ull
#define CR4_PAE	0x20ull
#define CR4_OSFXSR	0x200ull
#define CR4_OSXMMEXCPT	0x400ull
#define EFER_LME	0x100ull
#define EFER_LMA	0x400ull

int kvm_setup_cpuid(struct kvm_vm *k, char *err, size_t errlen)
{
	unsigned n = 256;
	struct kvm_cpuid2 *cpuid = calloc(1, sizeof(*cpuid) + n * sizeof(cpuid->entries[0]));

	if (!cpuid)
		return kvm_err(err, errlen, -ENOMEM, "out of memory");
	cpuid->nent = n;
	if (ioctl(k->kvm_fd, KVM_GET_SUPPORTED_CPUID, cpuid) < 0) {
		free(cpuid);
		return kvm_err(err, errlen, -errno, "KVM_GET_SUPPORTED_CPUID: %s",
			       strerror(errno));
	}
	k->cpuid = cpuid;
	return 0;
}

/* The host's supported CPUID with this vCPU's APIC id filled in. */
static int set_vcpu_cpuid(struct kvm_vm *k, struct kvm_vcpu_ctx *c, char *err, size_t errlen)
{
	size_t bytes = sizeof(*k->cpuid) + k->cpuid->nent * sizeof(k->cpuid->entries[0]);
	struct kvm_cpuid2 *cpuid = malloc(bytes);
	int ret = 0;

	if (!cpuid)
		return kvm_err(err, errlen, -ENOMEM, "out of memory");
	memcpy(cpuid, k->cpuid, bytes);
	for (unsigned i = 0; i < cpuid->nent; i++) {
		struct kvm_cpuid_entry2 *e = &cpuid->entries[i];

		if (e->function == 1)
			e->ebx = (e->ebx & 0x00ffffffu) | (c->index << 24);
		if (e->function == 0xb || e->function == 0x1f)
			e->edx = c->index;
	}
	if (ioctl(c->fd, KVM_SET_CPUID2, cpuid) < 0)
		ret = kvm_err(err, errlen, -errno, "KVM_SET_CPUID2 on vCPU %u: %s",
			      c->index, strerror(errno));
	free(cpuid);
	return ret;
}

static void *gpa_to_host(struct kvm_vm *k, uint64_t gpa)
{
	for (unsigned i = 0; i < k->pub.nr_regions; i++) {
		const struct vm_region *r = &k->pub.regions[i];

		if (gpa >= r->gpa && gpa < r->gpa + r->size)
			return r->host + (gpa - r->gpa);
	}
	return NULL;
}

static uint64_t ram_end(const struct kvm_vm *k)
{
	const struct vm_region *last = &k->pub.regions[k->pub.nr_regions - 1];

	return last->gpa + last->size;
}

static void build_page_tables(struct kvm_vm *k)
{
	uint64_t *pml4 = gpa_to_host(k, VMG_PML4_GPA);
	uint64_t *pdpt = gpa_to_host(k, VMG_PDPT_GPA);
	uint64_t gibs = (ram_end(k) + (1ull << 30) - 1) >> 30;

	pml4[0] = VMG_PDPT_GPA | PTE_P | PTE_RW | PTE_US;
	for (uint64_t g = 0; g < gibs && g < VMG_MAX_PD; g++) {
		uint64_t *pd = gpa_to_host(k, VMG_PD_GPA + g * 4096);

		pdpt[g] = (VMG_PD_GPA + g * 4096) | PTE_P | PTE_RW | PTE_US;
		for (uint64_t e = 0; e < 512; e++)
			pd[e] = ((g << 30) + (e << 21)) | PTE_P | PTE_RW | PTE_PS | PTE_US;
	}
}

static void build_gdt(struct kvm_vm *k)
{
	uint64_t *gdt = gpa_to_host(k, VMG_GDT_GPA);

	gdt[0] = 0;
	gdt[1] = 0x00affa000000ffffull;	/* 0x08: 64-bit code */
	gdt[2] = 0x00cff2000000ffffull;	/* 0x10: data */
}

int kvm_boot_setup(struct kvm_vm *k, const struct vm_kvm_config *cfg,
		   char *err, size_t errlen)
{
	struct vmg_boot_params *bp;

	if (ram_end(k) > (uint64_t)VMG_MAX_PD << 30)
		return kvm_err(err, errlen, -ERANGE, "guest RAM ends beyond what the page tables map");
	build_page_tables(k);
	build_gdt(k);
	bp = gpa_to_host(k, VMG_BOOT_GPA);
	if (!bp || !gpa_to_host(k, VMG_LOAD_GPA + cfg->payload_size - 1))
		return kvm_err(err, errlen, -ERANGE, "guest RAM too small for the payload");
	memset(bp, 0, sizeof(*bp));
	bp->magic = VMG_BOOT_MAGIC;
	bp->version = 1;
	bp->nr_vcpus = k->pub.nr_vcpus;
	bp->tsc_khz = k->tsc_khz;
	bp->nr_regions = k->pub.nr_regions;
	for (unsigned i = 0; i < k->pub.nr_regions; i++) {
		bp->regions[i].gpa = k->pub.regions[i].gpa;
		bp->regions[i].size = k->pub.regions[i].size;
	}
	bp->payload_size = cfg->payload_size;
	memcpy(bp->arg, cfg->args, sizeof(bp->arg));
	memcpy(gpa_to_host(k, VMG_LOAD_GPA), cfg->payload, cfg->payload_size);

	for (unsigned i = 0; i < k->pub.nr_vcpus; i++) {
		int ret = kvm_boot_vcpu(k, &k->vcpus[i], err, errlen);

		if (ret)
			return ret;
	}
	return 0;
}

static void flat_segment(struct kvm_segment *s, uint16_t selector, bool code)
{
	memset(s, 0, sizeof(*s));
	s->selector = selector | 3;
	s->dpl = 3;
	s->limit = 0xffffffff;
	s->present = 1;
	s->s = 1;
	s->g = 1;
	s->type = code ? 0xb : 0x3;	/* execute/read accessed, read/write accessed */
	s->l = code;
	s->db = !code;
}

int kvm_boot_vcpu(struct kvm_vm *k, struct kvm_vcpu_ctx *c, char *err, size_t errlen)
{
	struct kvm_sregs sregs;
	struct kvm_regs regs;
	struct kvm_fpu fpu;
	struct kvm_mp_state mp = { .mp_state = KVM_MP_STATE_RUNNABLE };
	int ret = set_vcpu_cpuid(k, c, err, errlen);

	if (ret)
		return ret;
	if (ioctl(c->fd, KVM_GET_SREGS, &sregs) < 0)
		return kvm_err(err, errlen, -errno, "KVM_GET_SREGS: %s", strerror(errno));
	flat_segment(&sregs.cs, 0x08, true);
	flat_segment(&sregs.ds, 0x10, false);
	sregs.es = sregs.fs = sregs.gs = sregs.ss = sregs.ds;
	sregs.gdt.base = VMG_GDT_GPA;
	sregs.gdt.limit = 3 * 8 - 1;
	sregs.idt.base = 0;
	sregs.idt.limit = 0;
	sregs.cr0 = CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_PG;
	sregs.cr3 = VMG_PML4_GPA;
	sregs.cr4 = CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT;
	sregs.efer = EFER_LME | EFER_LMA;
	if (ioctl(c->fd, KVM_SET_SREGS, &sregs) < 0)
		return kvm_err(err, errlen, -errno, "KVM_SET_SREGS: %s", strerror(errno));

	memset(&regs, 0, sizeof(regs));
	regs.rip = VMG_LOAD_GPA;
	regs.rsp = VMG_STACK_GPA + (c->index + 1) * VMG_STACK_SIZE;
	regs.rdi = VMG_BOOT_GPA;
	regs.rsi = c->index;
	regs.rflags = 0x3002;
	if (ioctl(c->fd, KVM_SET_REGS, &regs) < 0)
		return kvm_err(err, errlen, -errno, "KVM_SET_REGS: %s", strerror(errno));

	memset(&fpu, 0, sizeof(fpu));
	fpu.fcw = 0x37f;
	fpu.mxcsr = 0x1f80;
	if (ioctl(c->fd, KVM_SET_FPU, &fpu) < 0)
		return kvm_err(err, errlen, -errno, "KVM_SET_FPU: %s", strerror(errno));
	/* With an in-kernel LAPIC, APs would wait for INIT/SIPI otherwise. */
	if (ioctl(c->fd, KVM_SET_MP_STATE, &mp) < 0)
		return kvm_err(err, errlen, -errno, "KVM_SET_MP_STATE: %s", strerror(errno));
	return 0;
}
