/*
 * Golden stream contents. Round 1 carries all of both regions (zero runs,
 * text pages that LZ4 shrinks, random pages that go raw); round 2 changes a
 * few words in some pages, which go as deltas. Then a VM-wide and two vCPU
 * state records, END, INDEX and COMMIT.
 */
#include "golden.h"

#include <string.h>

#include "testdata.h"

void golden_info(struct ckpt_image_info *info)
{
	memset(info, 0, sizeof(*info));
	info->page_size = GOLDEN_PAGE_SIZE;
	for (int i = 0; i < 16; i++) {
		info->guest_uuid[i] = (uint8_t)(0x10 + i);
		info->image_uuid[i] = (uint8_t)(0xa0 + i);
	}
	strcpy(info->guest_name, "golden-guest");
	info->created_ns = 1795000000000000000ull;
	info->region_count = 2;
	info->regions[0] = (struct ckpt_region){ .id = 0, .gpa = 0,
		.size = GOLDEN_REGION0_PAGES * GOLDEN_PAGE_SIZE };
	info->regions[1] = (struct ckpt_region){ .id = 7, .gpa = 1u << 20,
		.size = GOLDEN_REGION1_PAGES * GOLDEN_PAGE_SIZE };
}

/* Round-1 content: page p of region r. */
static void round1_page(unsigned r, unsigned p, uint8_t *page)
{
	unsigned kind = (p * 7 + r * 3) % 5;
	uint64_t seed = 1000u * r + p;

	if (kind == 0 || kind == 3)
		memset(page, 0, GOLDEN_PAGE_SIZE);
	else
		td_fill(page, GOLDEN_PAGE_SIZE, kind == 4 ? MIX_RANDOM : MIX_TEXT, seed);
}

static int round2_touches(unsigned r, unsigned p)
{
	return (p % 3 == 1) && (r == 0 || p < 8);
}

void golden_memory(uint8_t *region0, uint8_t *region1)
{
	uint8_t *regions[2] = { region0, region1 };
	unsigned pages[2] = { GOLDEN_REGION0_PAGES, GOLDEN_REGION1_PAGES };

	for (unsigned r = 0; r < 2; r++) {
		for (unsigned p = 0; p < pages[r]; p++) {
			uint8_t *page = regions[r] + (size_t)p * GOLDEN_PAGE_SIZE;

			round1_page(r, p, page);
			if (round2_touches(r, p))
				td_touch(page, GOLDEN_PAGE_SIZE, 77u + p);
		}
	}
}

void golden_vcpu_state(unsigned i, uint8_t out[64])
{
	for (unsigned k = 0; k < 64; k++)
		out[k] = (uint8_t)(i * 64 + k);
}

static int write_golden(const struct ckpt_sink *sink, bool zstd, uint8_t digest[16])
{
	struct ckpt_writer_opts opts = {
		.codec = ckpt_codec_default,
		.batch_pages = 16,
		.build_index = true,
	};
	struct ckpt_image_info info;
	struct ckpt_writer *w;
	unsigned pages[2] = { GOLDEN_REGION0_PAGES, GOLDEN_REGION1_PAGES };
	uint32_t ids[2] = { 0, 7 };
	uint8_t page[GOLDEN_PAGE_SIZE], prev[GOLDEN_PAGE_SIZE], vcpu[64];
	const char vm_state[] = "vcpus=2";
	int ret;

	opts.codec.zstd = zstd;
	w = ckpt_writer_new(sink, &opts);
	if (!w)
		return -1;
	golden_info(&info);
	ckpt_writer_header(w, &info);
	ckpt_writer_marker(w, CKPT_MARK_ROUND, 1);
	for (unsigned r = 0; r < 2; r++)
		for (unsigned p = 0; p < pages[r]; p++) {
			round1_page(r, p, page);
			ckpt_writer_page(w, ids[r], p, page, NULL);
		}
	ckpt_writer_marker(w, CKPT_MARK_ROUND, 2);
	for (unsigned r = 0; r < 2; r++)
		for (unsigned p = 0; p < pages[r]; p++) {
			if (!round2_touches(r, p))
				continue;
			round1_page(r, p, prev);
			memcpy(page, prev, sizeof(page));
			td_touch(page, GOLDEN_PAGE_SIZE, 77u + p);
			ckpt_writer_page(w, ids[r], p, page, prev);
		}
	ckpt_writer_state(w, CKPT_STATE_VM, 0, 1, false, vm_state, sizeof(vm_state));
	for (unsigned i = 0; i < 2; i++) {
		golden_vcpu_state(i, vcpu);
		ckpt_writer_state(w, CKPT_STATE_VCPU, i, 1, false, vcpu, sizeof(vcpu));
	}
	ret = ckpt_writer_finish(w, digest);
	ckpt_writer_free(w);
	return ret;
}

int golden_write(const struct ckpt_sink *sink, uint8_t digest[16])
{
	return write_golden(sink, false, digest);
}

int golden_write_zstd(const struct ckpt_sink *sink, uint8_t digest[16])
{
	return write_golden(sink, true, digest);
}

int golden_write_seed(const struct ckpt_sink *sink, unsigned variant)
{
	struct ckpt_writer_opts opts = {
		.codec = ckpt_codec_default,
		.batch_pages = 4,
		.build_index = variant & 1,
	};
	struct ckpt_image_info info;
	struct ckpt_writer *w;
	uint8_t page[GOLDEN_PAGE_SIZE], prev[GOLDEN_PAGE_SIZE];
	const uint8_t parent[16] = { 9, 9, 9 };
	int ret;

	opts.codec.zstd = variant & GOLDEN_SEED_ZSTD;
	w = ckpt_writer_new(sink, &opts);
	if (!w)
		return -1;
	golden_info(&info);
	info.regions[0].size = 6 * GOLDEN_PAGE_SIZE;
	info.regions[1].size = 2 * GOLDEN_PAGE_SIZE;
	if (variant & 2)
		info.flags |= CKPT_HDRF_INCREMENTAL;
	ckpt_writer_header(w, &info);
	if (variant & 2)
		ckpt_writer_parent(w, parent, parent);
	ckpt_writer_marker(w, variant & 4 ? CKPT_MARK_EPOCH : CKPT_MARK_ROUND, 1);
	ckpt_writer_zero_run(w, 0, 0, 2);
	td_fill(page, sizeof(page), MIX_TEXT, variant);
	ckpt_writer_page(w, 0, 2, page, NULL);
	memcpy(prev, page, sizeof(page));
	td_touch(page, sizeof(page), variant);
	ckpt_writer_page(w, 0, 3, page, prev);
	ckpt_writer_page(w, 7, 1, page, NULL);
	ckpt_writer_state(w, CKPT_STATE_VCPU, 0, 1, variant & 1, "regs", 4);
	ret = ckpt_writer_finish(w, NULL);
	ckpt_writer_free(w);
	return ret;
}
