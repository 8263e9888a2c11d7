/*
 * libFuzzer target for the record reader: any byte string must be either
 * decoded or refused with an error, never crash, leak or read out of bounds.
 * Regions up to 1 MiB get real memory so PAGES records are decoded too,
 * once through the reader's buffer and once read straight into memory.
 */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "ckpt.h"

#define MAPPED_MAX	(1u << 20)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* One pass over the input; into: LIVE pages read straight into memory,
 * torn pages kept owed (a migration's destination). */
static void decode(const uint8_t *data, size_t size, bool into)
{
	struct ckpt_membuf m = { .data = (uint8_t *)data, .len = size, .cap = size, .fixed = true };
	struct ckpt_page_target target = { 0 };
	struct ckpt_torn torn = { 0 };
	struct ckpt_source src;
	struct ckpt_reader *r;
	struct ckpt_record rec;

	ckpt_membuf_source(&m, &src);
	r = ckpt_reader_new(&src, NULL);
	if (!r)
		return;
	if (into) {
		target.torn = &torn;
		ckpt_reader_read_into(r, &target);	/* read at each record: filled below */
	}
	while (ckpt_reader_next(r, &rec) == 0) {
		if (rec.type == CKPT_REC_HEADER) {
			for (uint32_t i = 0; i < rec.u.header->region_count; i++) {
				uint64_t bytes = rec.u.header->regions[i].size;

				if (bytes > MAPPED_MAX)
					continue;
				target.host[i] = calloc(1, bytes);
				if (into)
					torn.owed[i] = calloc(1, (bytes / 4096 + 63) / 64 * 8 + 8);
			}
		} else if (rec.type == CKPT_REC_PAGES) {
			if (ckpt_reader_apply(r, &rec, &target))
				break;
		}
	}
	/* every failure must come with its reason */
	if (ckpt_reader_error(r) != CKPT_OK && !strlen(ckpt_reader_errmsg(r)))
		abort();
	for (unsigned i = 0; i < CKPT_MAX_REGIONS; i++) {
		free(target.host[i]);
		free(torn.owed[i]);
	}
	ckpt_reader_free(r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	decode(data, size, false);
	decode(data, size, true);
	return 0;
}
