/*
 * libFuzzer target for the service's configuration file (conf.c on inih):
 * any bytes as a file, handed to conf_load with a setter that knows two
 * keys. Whatever the file holds, conf_load returns 0 or a negative errno
 * with a NUL-terminated error naming the file, never reads past a line,
 * and closes the file.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "conf.h"
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct seen {
	char listen[64];
	int keys;
};

static int set(void *opaque, const char *key, const char *value, char *err, size_t errlen)
{
	struct seen *s = opaque;

	s->keys++;
	if (!strcmp(key, "listen")) {
		snprintf(s->listen, sizeof(s->listen), "%s", value);
		return 0;
	}
	if (!strcmp(key, "insecure") && strcmp(value, "true") && strcmp(value, "false")) {
		snprintf(err, errlen, "insecure wants true or false, not '%s'", value);
		return -EINVAL;
	}
	if (!strcmp(key, "insecure"))
		return 0;
	snprintf(err, errlen, "unknown key '%s'", key);
	return -EINVAL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	int before = fuzz_fd_count();
	int fd = memfd_create("fuzz-conf", MFD_CLOEXEC);
	struct seen s = { "", 0 };
	char path[64], err[512];
	int ret;

	if (fd < 0 || (size && write(fd, data, size) != (ssize_t)size))
		abort();
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	memset(err, 'x', sizeof(err));
	err[sizeof(err) - 1] = 0;
	ret = conf_load(path, false, set, &s, err, sizeof(err));
	if (ret > 0 || (ret < 0 && (!memchr(err, 0, sizeof(err)) || !strstr(err, path))))
		abort();	/* an error must say which file; only a missing optional file is 1 */
	close(fd);
	fuzz_check_fds(before, "conf_load");
	return 0;
}
