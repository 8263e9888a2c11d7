/*
 * Random access to checkpoint files, for lazy restore: one record at an
 * offset, checked by its own checksum, and a file's digest recomputed from
 * its record headers alone. The sequential reader (reader.c) is the one
 * that checks the whole grammar; this path trusts only what it verifies.
 */
#include "ckpt.h"

#include <endian.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ckpt_hash.h"

int ckpt_pread_header(int fd, uint64_t offset, struct ckpt_rec_info *out)
{
	struct ckpt_rec_hdr h;

	if (pread(fd, &h, sizeof(h), (off_t)offset) != sizeof(h))
		return -EBADMSG;
	out->type = le16toh(h.type);
	out->flags = le16toh(h.flags);
	out->length = le32toh(h.length);
	out->checksum = le64toh(h.checksum);
	memcpy(out->summed, &h, CKPT_REC_HDR_SUMMED);
	return out->length > CKPT_MAX_PAYLOAD ? -EBADMSG : 0;
}

int ckpt_pread_record(int fd, uint64_t offset, struct ckpt_rec_info *out, uint8_t **buf)
{
	XXH3_state_t *st;
	uint8_t *nb;
	bool ok;
	int ret = ckpt_pread_header(fd, offset, out);

	if (ret)
		return ret;
	nb = realloc(*buf, out->length ? out->length : 1);
	if (!nb)
		return -ENOMEM;
	*buf = nb;
	if (pread(fd, nb, out->length, (off_t)(offset + sizeof(struct ckpt_rec_hdr))) !=
	    (ssize_t)out->length)
		return -EBADMSG;
	st = XXH3_createState();
	if (!st)
		return -ENOMEM;
	XXH3_64bits_reset(st);
	XXH3_64bits_update(st, out->summed, CKPT_REC_HDR_SUMMED);
	XXH3_64bits_update(st, nb, out->length);
	ok = XXH3_64bits_digest(st) == out->checksum;
	XXH3_freeState(st);
	return ok ? 0 : -EBADMSG;
}

int ckpt_pread_payload(int fd, uint64_t offset, const struct ckpt_rec_info *ri,
		       const struct iovec *parts, int nparts)
{
	uint64_t at = offset + sizeof(struct ckpt_rec_hdr), sum = 0;
	XXH3_state_t *st;
	bool ok;

	for (int i = 0; i < nparts; i++)
		sum += parts[i].iov_len;
	if (sum != ri->length)
		return -EBADMSG;
	st = XXH3_createState();
	if (!st)
		return -ENOMEM;
	XXH3_64bits_reset(st);
	XXH3_64bits_update(st, ri->summed, CKPT_REC_HDR_SUMMED);
	ok = true;
	for (int i = 0; i < nparts && ok; i++) {
		ok = pread(fd, parts[i].iov_base, parts[i].iov_len, (off_t)at) ==
		     (ssize_t)parts[i].iov_len;
		XXH3_64bits_update(st, parts[i].iov_base, parts[i].iov_len);
		at += parts[i].iov_len;
	}
	ok = ok && XXH3_64bits_digest(st) == ri->checksum;
	XXH3_freeState(st);
	return ok ? 0 : -EBADMSG;
}

int ckpt_file_digest(int fd, uint8_t digest[16])
{
	XXH3_state_t *st = XXH3_createState();
	uint64_t off = CKPT_MAGIC_LEN;
	char magic[CKPT_MAGIC_LEN];
	int ret = -EBADMSG;

	if (!st)
		return -ENOMEM;
	if (pread(fd, magic, sizeof(magic), 0) != sizeof(magic) ||
	    memcmp(magic, CKPT_MAGIC, CKPT_MAGIC_LEN))
		goto out;
	XXH3_128bits_reset(st);
	for (;;) {
		struct ckpt_rec_hdr h;
		struct ckpt_commit_rec c;
		XXH128_canonical_t canon;

		if (pread(fd, &h, sizeof(h), (off_t)off) != sizeof(h) ||
		    le32toh(h.length) > CKPT_MAX_PAYLOAD)
			break;
		if (le16toh(h.type) != CKPT_REC_COMMIT) {
			XXH3_128bits_update(st, &h, sizeof(h));
			off += sizeof(h) + le32toh(h.length);
			continue;
		}
		if (le32toh(h.length) != sizeof(c) ||
		    pread(fd, &c, sizeof(c), (off_t)(off + sizeof(h))) != sizeof(c))
			break;
		XXH128_canonicalFromHash(&canon, XXH3_128bits_digest(st));
		if (!memcmp(canon.digest, c.digest, 16)) {
			memcpy(digest, c.digest, 16);
			ret = 0;
		}
		break;
	}
out:
	XXH3_freeState(st);
	return ret;
}
