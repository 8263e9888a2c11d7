/*
 * libFuzzer target for the record reader: any byte string must be either
 * decoded or refused with an error, never crash, leak or read out of bounds.
 * Regions up to 1 MiB get real memory so PAGES records are decoded too.
 */
#include <stdlib.h>
#include <string.h>

#include "ckpt.h"

#define MAPPED_MAX	(1u << 20)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ckpt_membuf m = { .data = (uint8_t *)data, .len = size, .cap = size, .fixed = true };
	struct ckpt_page_target target = { 0 };
	struct ckpt_source src;
	struct ckpt_reader *r;
	struct ckpt_record rec;

	ckpt_membuf_source(&m, &src);
	r = ckpt_reader_new(&src, NULL);
	if (!r)
		return 0;
	while (ckpt_reader_next(r, &rec) == 0) {
		if (rec.type == CKPT_REC_HEADER) {
			for (uint32_t i = 0; i < rec.u.header->region_count; i++)
				if (rec.u.header->regions[i].size <= MAPPED_MAX)
					target.host[i] = calloc(1, rec.u.header->regions[i].size);
		} else if (rec.type == CKPT_REC_PAGES) {
			if (ckpt_reader_apply(r, &rec, &target))
				break;
		}
	}
	/* every failure must come with its reason */
	if (ckpt_reader_error(r) != CKPT_OK && !strlen(ckpt_reader_errmsg(r)))
		abort();
	for (unsigned i = 0; i < CKPT_MAX_REGIONS; i++)
		free(target.host[i]);
	ckpt_reader_free(r);
	return 0;
}
