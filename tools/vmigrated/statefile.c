/*
 * Atomic replacement of a small state file (statefile.h): temp file,
 * fsync, rename, fsync of the directory, as redis writes its dump.
 */
#include "statefile.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

int statefile_replace(const char *dir, const char *path, const char *data, size_t len)
{
	char tmp[1024];
	int fd, dfd, ret = 0;

	if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= sizeof(tmp))
		return -ENAMETOOLONG;
	errno = 0;	/* a short write sets none */
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0 || write(fd, data, len) != (ssize_t)len || fsync(fd) < 0 ||
	    rename(tmp, path) < 0)
		ret = errno ? -errno : -EIO;
	if (fd >= 0)
		close(fd);
	if (ret) {
		unlink(tmp);
		return ret;
	}
	dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0 || fsync(dfd) < 0)
		ret = -errno;
	if (dfd >= 0)
		close(dfd);
	return ret;
}
