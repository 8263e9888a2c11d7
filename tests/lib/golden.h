/*
 * The golden image: a small, fully deterministic 1.0 stream that uses every
 * record type and every page encoding of 1.0 (golden_write_zstd: 1.2's ZSTD
 * too). tests/golden/v1.0.ckpt was written by this code; every later
 * version must still decode that file to golden_memory().
 */
#ifndef GOLDEN_H
#define GOLDEN_H

#include <stdint.h>

#include "ckpt.h"

#define GOLDEN_REGION0_PAGES	48
#define GOLDEN_REGION1_PAGES	16
#define GOLDEN_PAGE_SIZE	4096

/* The image info the golden stream carries. */
void golden_info(struct ckpt_image_info *info);
/* Guest memory after the whole stream has been applied. */
void golden_memory(uint8_t *region0, uint8_t *region1);
/* The state payload of vCPU i (i < 2), 64 bytes. */
void golden_vcpu_state(unsigned i, uint8_t out[64]);
/* Write the stream; the writer is deterministic given the same inputs. */
int golden_write(const struct ckpt_sink *sink, uint8_t digest[16]);
/* The same memory with whole pages compressed by zstd (format 1.2), not
 * LZ4; deltas stay LZ4. */
int golden_write_zstd(const struct ckpt_sink *sink, uint8_t digest[16]);

/* Small streams for the fuzzer's seed corpus; variant bits pick index,
 * incremental with PARENT, and epoch markers; GOLDEN_SEED_ZSTD zstd pages. */
#define GOLDEN_SEED_ZSTD	8u
int golden_write_seed(const struct ckpt_sink *sink, unsigned variant);

#endif
