/*
 * Resynchronising a standby that holds an earlier copy of the guest (the
 * old primary after a failover): right after READY the destination sends
 * the digest of every page it has, and round 1 of the source skips each
 * page whose digest matches, so only pages that differ cross the link.
 * Private to migrate/.
 *
 * MIG_MSG_DIGESTS payload, little-endian: slot u32 (region, in the order of
 * the stream's region table), count u32 (0: no more digests), first u64
 * (page index), then count XXH3-128 digests of consecutive pages (16 bytes
 * each, canonical form). Pages never named have no digest: always sent.
 */
#ifndef MIGRATE_DIGESTS_H
#define MIGRATE_DIGESTS_H

#include <stdbool.h>
#include <stdint.h>

#include "transport.h"
#include "vm.h"

#define DIGEST_BYTES	16
#define DIGESTS_HEAD	16
#define DIGESTS_PER_MSG	((1024 - DIGESTS_HEAD) / DIGEST_BYTES)

/* Destination: the digests of vm's pages that hold data (holes of its
 * memfd are skipped: they read as zero and are cheap to send), then the
 * end; without vm, only the end. */
int digests_send(struct xport *x, const struct vm *vm);

/* Source: what the destination has. */
struct page_digests {
	uint8_t *digest[VM_MAX_REGIONS];	/* DIGEST_BYTES a page */
	uint64_t *known[VM_MAX_REGIONS];	/* bitmap: a digest came */
	uint64_t pages;				/* digests received */
};

int digests_init(struct page_digests *d, const struct vm *vm);
void digests_free(struct page_digests *d);
/* One message's payload; 1 when it was the last, 0 for more, -EPROTO for
 * one that names pages outside vm. */
int digests_take(struct page_digests *d, const struct vm *vm, const void *payload,
		 uint32_t len);
/* Does the destination already hold exactly this page? */
bool digests_match(const struct page_digests *d, unsigned region, uint64_t page,
		   const void *data);

#endif
