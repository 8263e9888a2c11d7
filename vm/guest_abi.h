/*
 * The contract between the kvm micro-VM and the flat 64-bit guest payloads
 * it runs (tools/guests/GUESTS.md explains it for payload writers). Shared
 * by the VMM, the host-side verifier and the freestanding payloads, so it
 * holds only fixed-width types and inline arithmetic.
 */
#ifndef VM_GUEST_ABI_H
#define VM_GUEST_ABI_H

#include <stdint.h>

/* Guest-physical memory map. */
#define VMG_GDT_GPA		0x1000ull
#define VMG_PML4_GPA		0x2000ull
#define VMG_PDPT_GPA		0x3000ull
#define VMG_PD_GPA		0x4000ull	/* VMG_MAX_PD tables, 2 MiB pages */
#define VMG_MAX_PD		32		/* maps up to 32 GiB */
#define VMG_BOOT_GPA		0x30000ull	/* struct vmg_boot_params */
#define VMG_STATUS_GPA		0x31000ull	/* struct vmg_vcpu_status[] */
#define VMG_STACK_GPA		0x40000ull	/* VMG_STACK_SIZE per vCPU */
#define VMG_STACK_SIZE		0x4000ull
#define VMG_LOAD_GPA		0x100000ull	/* payload image and entry */
#define VMG_FREE_GPA		0x1000000ull	/* first byte free for payload data */
#define VMG_MAX_PAYLOAD		(VMG_FREE_GPA - VMG_LOAD_GPA)
#define VMG_MAX_VCPUS		16
#define VMG_MAX_REGIONS		4
#define VMG_HIGH_GPA		0x100000000ull	/* RAM above 3 GiB continues here */
#define VMG_LOW_LIMIT		0xc0000000ull

/* I/O ports. */
#define VMG_PORT_CONSOLE	0x3f8	/* outb: one character */
#define VMG_PORT_EVENT		0x501	/* outl: VMG_EVENT(code, vcpu, arg) */

#define VMG_EVENT(code, vcpu, arg) \
	((uint32_t)(code) | ((uint32_t)(vcpu) << 8) | ((uint32_t)(arg) << 16))
#define VMG_EVENT_CODE(v)	((v) & 0xff)
#define VMG_EVENT_VCPU(v)	(((v) >> 8) & 0xff)
#define VMG_EVENT_ARG(v)	((v) >> 16)

enum vmg_event {
	VMG_EV_READY = 1,	/* vCPU started its work */
	VMG_EV_CHECK_OK = 2,	/* self-check of a pass found nothing wrong */
	VMG_EV_CHECK_BAD = 3,	/* self-check found a bad page: see status */
	VMG_EV_DONE = 4,	/* vCPU finished; it will not run again */
	VMG_EV_PANIC = 5,	/* the payload hit an impossible condition */
};

#define VMG_BOOT_MAGIC		0x31544f4f42474d56ull	/* "VMGBOOT1" */

struct vmg_region {
	uint64_t gpa;
	uint64_t size;
};

/* At VMG_BOOT_GPA, written by the VMM before the first instruction. */
struct vmg_boot_params {
	uint64_t magic;
	uint32_t version;		/* 1 */
	uint32_t nr_vcpus;
	uint64_t tsc_khz;
	uint32_t nr_regions;
	uint32_t reserved;
	struct vmg_region regions[VMG_MAX_REGIONS];
	uint64_t payload_size;
	uint64_t arg[16];		/* payload-specific; memtouch: MT_ARG_* */
};

/* One per vCPU at VMG_STATUS_GPA; written by the guest only. */
struct vmg_vcpu_status {
	uint64_t counter;		/* units of work completed (memtouch: page writes) */
	uint64_t passes;		/* self-checks completed */
	uint64_t check_errors;		/* self-checks that failed */
	uint64_t bad_page;		/* first bad page index found, if any */
	uint64_t start_tsc;		/* pacing origin */
	uint64_t start_counter;
	uint64_t heartbeat;		/* TSC at the last update */
	uint64_t state;			/* payload-defined */
};

/* ---- memtouch ------------------------------------------------------------ */

/* Boot argument slots. */
#define MT_ARG_WS_BASE		0	/* gpa of the working set */
#define MT_ARG_WS_PAGES		1	/* 4 KiB pages in the working set */
#define MT_ARG_RATE		2	/* pages per second, all vCPUs; 0 = unlimited */
#define MT_ARG_CONTENT		3	/* enum mt_content */
#define MT_ARG_SEED		4
#define MT_ARG_STOP_AFTER	5	/* writes per vCPU, 0 = run for ever */
#define MT_ARG_FILL_FIRST	6	/* 1: the first pass runs flat out, then the pace */

enum mt_content { MT_RANDOM = 0, MT_TEXT = 1, MT_ZERO_HEAVY = 2 };

#define MT_PAGE_SIZE		4096u
#define MT_WORDS		(MT_PAGE_SIZE / 8)
#define MT_TAG			0x4d54000000000000ull	/* "MT" in the top bytes */

static inline uint64_t mt_mix(uint64_t z)
{
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* Eight-byte words that make text-like, LZ4-friendly pages. */
static inline uint64_t mt_text_word(uint64_t pick)
{
	static const char words[32][8] = {
		"the     ", "guest   ", "memory  ", "page    ", "kernel  ",
		"of the  ", "and     ", "dirty   ", "round   ", "state   ",
		"return  ", "struct  ", "static  ", "int     ", "if (err)",
		"\n\t\t    ", "buffer  ", "offset  ", "length  ", "error   ",
		"{\n      ", "}\n      ", "/* a */ ", "migrate ", "vcpu    ",
		"host    ", "stream  ", "#define ", "0x7f    ", "NULL    ",
		"EINVAL  ", "        ",
	};
	uint64_t v;

	__builtin_memcpy(&v, words[pick & 31], 8);	/* x86: little-endian */
	return v;
}

/*
 * Word w of the page with the given index in generation gen (gen >= 1).
 * Generation 0 is the all-zero page the guest starts from.
 */
static inline uint64_t mt_word(uint64_t seed, uint32_t content, uint64_t index,
			       uint64_t gen, uint32_t w)
{
	uint64_t h;

	if (w == 0)
		return MT_TAG | index;
	if (w == 1)
		return gen;
	h = mt_mix(seed ^ (index * 0x9e3779b97f4a7c15ull) ^ (gen << 40) ^ (w >> 3));
	switch (content) {
	case MT_TEXT:
		return mt_text_word(h >> ((w & 7) * 5));
	case MT_ZERO_HEAVY:
		/* three pages in four are their header and zeros */
		if (mt_mix(seed ^ index) & 3)
			return 0;
		return mt_text_word(h >> ((w & 7) * 5));
	default:
		return mt_mix(h + w);
	}
}

/* Which page write k of a vCPU touches, and with which generation. */
static inline uint64_t mt_slice_first(uint64_t ws_pages, uint32_t nr_vcpus, uint32_t vcpu)
{
	return ws_pages * vcpu / nr_vcpus;
}

static inline uint64_t mt_slice_pages(uint64_t ws_pages, uint32_t nr_vcpus, uint32_t vcpu)
{
	return mt_slice_first(ws_pages, nr_vcpus, vcpu + 1) -
	       mt_slice_first(ws_pages, nr_vcpus, vcpu);
}

/* Generation of slice page j after `counter` writes (0: never written). */
static inline uint64_t mt_gen_after(uint64_t counter, uint64_t slice_pages, uint64_t j)
{
	return counter > j ? (counter - j - 1) / slice_pages + 1 : 0;
}

#endif
