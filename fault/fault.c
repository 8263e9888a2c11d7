/*
 * Fault points: each named point fires once per process, so the next
 * attempt (the retry a test makes) runs clean.
 */
#include "fault.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static bool fired_before(const char *point)
{
	static const char *fired[16];
	static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
	bool seen = false;
	unsigned i;

	pthread_mutex_lock(&lock);
	for (i = 0; i < 16 && fired[i]; i++)
		seen |= !strcmp(fired[i], point);
	if (!seen && i < 16)
		fired[i] = point;
	pthread_mutex_unlock(&lock);
	return seen;
}

bool fault_point(const char *point)
{
	const char *list = getenv("VMIGRATE_FAULT");
	size_t n = strlen(point);

	while (list && *list) {
		const char *comma = strchr(list, ',');
		size_t len = comma ? (size_t)(comma - list) : strlen(list);

		if (len == n && !strncmp(list, point, n))
			return !fired_before(point);
		list = comma ? comma + 1 : NULL;
	}
	return false;
}

#define RECORD_HEADER_BYTES	24	/* ckpt-format/FORMAT.md */

void fault_corrupt_batch(const struct iovec *iov, int iovcnt, uint64_t sent,
			     uint64_t after)
{
	static atomic_int armed = -1;	/* -1: not looked at yet */
	int a = atomic_load(&armed);

	if (a < 0) {
		const char *list = getenv("VMIGRATE_FAULT");

		a = list && strstr(list, "src-corrupt-stream") ? 1 : 0;
		atomic_store(&armed, a);
	}
	/* only a PAGES record's first piece (its 24-byte header first, type 4
	 * in its first two bytes): the pieces after it may be guest memory
	 * itself (LIVE records), which this must never change */
	if (!a || iovcnt < 4 || iov[0].iov_len != RECORD_HEADER_BYTES ||
	    memcmp(iov[0].iov_base, "\x04\x00", 2) || iov[3].iov_len <= 100 || sent <= after)
		return;
	if (fault_point("src-corrupt-stream")) {
		((uint8_t *)iov[3].iov_base)[50] ^= 0x10;
		atomic_store(&armed, 0);
	}
}
