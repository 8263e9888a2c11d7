/*
 * Page digests for resynchronisation (digests.h).
 */
#include "digests.h"

#include <endian.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ckpt_hash.h"
#include "protocol.h"

static void page_digest(const void *data, uint8_t out[DIGEST_BYTES])
{
	XXH128_canonical_t c;

	XXH128_canonicalFromHash(&c, XXH3_128bits(data, VM_PAGE_SIZE));
	memcpy(out, c.digest, DIGEST_BYTES);
}

static int send_run(struct xport *x, const struct vm_region *r, uint32_t slot,
		    uint64_t first, uint32_t count)
{
	uint8_t msg[DIGESTS_HEAD + DIGESTS_PER_MSG * DIGEST_BYTES];
	uint32_t le_slot = htole32(slot), le_count = htole32(count);
	uint64_t le_first = htole64(first);

	memcpy(msg, &le_slot, 4);
	memcpy(msg + 4, &le_count, 4);
	memcpy(msg + 8, &le_first, 8);
	for (uint32_t i = 0; i < count; i++)
		page_digest(r->host + (first + i) * VM_PAGE_SIZE,
			    msg + DIGESTS_HEAD + i * DIGEST_BYTES);
	return mig_msg_send(x, MIG_MSG_DIGESTS, msg, DIGESTS_HEAD + count * DIGEST_BYTES);
}

/* Pages [from, end) of r that hold data, as the next run: *first, *n. */
static bool next_data(const struct vm_region *r, uint64_t from, uint64_t end,
		      uint64_t *first, uint64_t *n)
{
	off_t base = (off_t)r->memfd_offset;
	off_t data = lseek(r->memfd, base + (off_t)(from * VM_PAGE_SIZE), SEEK_DATA);
	off_t hole;

	if (data < 0 || data >= base + (off_t)(end * VM_PAGE_SIZE))
		return false;
	hole = lseek(r->memfd, data, SEEK_HOLE);
	if (hole < 0 || hole > base + (off_t)(end * VM_PAGE_SIZE))
		hole = base + (off_t)(end * VM_PAGE_SIZE);
	*first = (uint64_t)(data - base) / VM_PAGE_SIZE;
	*n = ((uint64_t)(hole - base) + VM_PAGE_SIZE - 1) / VM_PAGE_SIZE - *first;
	return *n > 0;
}

int digests_send(struct xport *x, const struct vm *vm)
{
	for (unsigned ri = 0; vm && ri < vm->nr_regions; ri++) {
		const struct vm_region *r = &vm->regions[ri];
		uint64_t end = r->size / VM_PAGE_SIZE, p = 0, first, n;

		while (p < end && next_data(r, p, end, &first, &n)) {
			for (uint64_t i = 0; i < n; i += DIGESTS_PER_MSG) {
				uint32_t c = n - i < DIGESTS_PER_MSG ? (uint32_t)(n - i) :
								     DIGESTS_PER_MSG;
				int ret = send_run(x, r, ri, first + i, c);

				if (ret)
					return ret;
			}
			p = first + n;
		}
	}
	return send_run(x, NULL, 0, 0, 0);
}

int digests_init(struct page_digests *d, const struct vm *vm)
{
	memset(d, 0, sizeof(*d));
	for (unsigned ri = 0; ri < vm->nr_regions; ri++) {
		uint64_t pages = vm->regions[ri].size / VM_PAGE_SIZE;

		d->digest[ri] = malloc(pages * DIGEST_BYTES);
		d->known[ri] = calloc(1, vm_bitmap_bytes(&vm->regions[ri]));
		if (!d->digest[ri] || !d->known[ri]) {
			digests_free(d);
			return -ENOMEM;
		}
	}
	return 0;
}

void digests_free(struct page_digests *d)
{
	for (unsigned ri = 0; ri < VM_MAX_REGIONS; ri++) {
		free(d->digest[ri]);
		free(d->known[ri]);
	}
	memset(d, 0, sizeof(*d));
}

int digests_take(struct page_digests *d, const struct vm *vm, const void *payload,
		 uint32_t len)
{
	const uint8_t *m = payload;
	uint32_t slot, count;
	uint64_t first;

	if (len < DIGESTS_HEAD)
		return -EPROTO;
	memcpy(&slot, m, 4);
	memcpy(&count, m + 4, 4);
	memcpy(&first, m + 8, 8);
	slot = le32toh(slot);
	count = le32toh(count);
	first = le64toh(first);
	if (!count)
		return len == DIGESTS_HEAD ? 1 : -EPROTO;
	if (slot >= vm->nr_regions || count > DIGESTS_PER_MSG ||
	    len != DIGESTS_HEAD + count * DIGEST_BYTES ||
	    first > vm->regions[slot].size / VM_PAGE_SIZE - count)
		return -EPROTO;
	memcpy(d->digest[slot] + first * DIGEST_BYTES, m + DIGESTS_HEAD, count * DIGEST_BYTES);
	for (uint64_t p = first; p < first + count; p++)
		d->known[slot][p / 64] |= 1ull << (p % 64);
	d->pages += count;
	return 0;
}

bool digests_match(const struct page_digests *d, unsigned region, uint64_t page,
		   const void *data)
{
	uint8_t have[DIGEST_BYTES];

	if (!d->known[region] || !((d->known[region][page / 64] >> (page % 64)) & 1))
		return false;
	page_digest(data, have);
	return !memcmp(have, d->digest[region] + page * DIGEST_BYTES, DIGEST_BYTES);
}
