/*
 * Number parsing for the CLI. Suffixes are binary (K = 1024) as operators
 * of VMs expect (QEMU's -m 1G is 1 GiB).
 */
#include "units.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int parse_uint(const char *s, uint64_t *v)
{
	char *end;

	if (!s || !*s || *s == '-')
		return -EINVAL;
	errno = 0;
	*v = strtoull(s, &end, 0);
	return errno || *end ? -EINVAL : 0;
}

int parse_size(const char *s, uint64_t *bytes)
{
	char *end;
	double v;
	unsigned shift = 0;

	if (!s || !*s || *s == '-')
		return -EINVAL;
	errno = 0;
	v = strtod(s, &end);
	if (errno || end == s || v < 0)
		return -EINVAL;
	switch (*end) {
	case 'k': case 'K': shift = 10; end++; break;
	case 'm': case 'M': shift = 20; end++; break;
	case 'g': case 'G': shift = 30; end++; break;
	case 't': case 'T': shift = 40; end++; break;
	}
	if (*end == 'i')
		end++;
	if (*end == 'B' || *end == 'b')
		end++;
	if (*end)
		return -EINVAL;
	v *= (double)(1ull << shift);
	if (v >= 18446744073709551615.0)
		return -EINVAL;
	*bytes = (uint64_t)v;
	return 0;
}

int parse_rate(const char *s, uint64_t *bytes_per_s)
{
	size_t n = s ? strlen(s) : 0;
	char buf[64];

	if (n >= sizeof(buf))
		return -EINVAL;
	memcpy(buf, s, n + 1);
	if (n > 2 && !strcmp(buf + n - 2, "/s"))
		buf[n - 2] = 0;
	return parse_size(buf, bytes_per_s);
}

int parse_seconds(const char *s, double *seconds)
{
	char *end;

	if (!s || !*s || *s == '-')
		return -EINVAL;
	errno = 0;
	*seconds = strtod(s, &end);
	if (errno || end == s)
		return -EINVAL;
	if (*end == 's')
		end++;
	return *end ? -EINVAL : 0;
}
