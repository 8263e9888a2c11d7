/*
 * Guest name locks: F_OFD_SETLK on guests/NAME.lock, the holder's pid
 * written inside for messages. OFD locks belong to the open file, not
 * the process, so a fork does not share them by accident (the file is
 * opened O_CLOEXEC and only by the holder) and F_OFD_GETLK can test a
 * lock without taking it. Lock files are never removed: removing one
 * while another process opens it would let two processes lock two files.
 */
#include "guest_lock.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void lock_path(const char *dir, const char *name, char *out, size_t len)
{
	snprintf(out, len, "%s/%s.lock", dir, name);
}

static pid_t read_pid(int fd)
{
	char buf[24];
	ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);

	if (n <= 0)
		return 0;
	buf[n] = 0;
	return (pid_t)strtol(buf, NULL, 10);
}

int guest_lock_take(const char *dir, const char *name, pid_t *holder, char *err,
		    size_t errlen)
{
	struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET };
	char path[600], pid[24];
	int fd, n;

	*holder = 0;
	lock_path(dir, name, path, sizeof(path));
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return -errno;
	}
	if (fcntl(fd, F_OFD_SETLK, &fl) < 0) {
		int e = errno;

		if (e == EAGAIN || e == EACCES) {
			*holder = read_pid(fd);
			snprintf(err, errlen, "the name '%s' is held by process %d", name,
				 (int)*holder);
			e = EBUSY;
		} else {
			snprintf(err, errlen, "locking %s: %s", path, strerror(e));
		}
		close(fd);
		return -e;
	}
	n = snprintf(pid, sizeof(pid), "%d\n", (int)getpid());
	if (ftruncate(fd, 0) < 0 || pwrite(fd, pid, (size_t)n, 0) != n) {
		snprintf(err, errlen, "writing %s: %s", path, strerror(errno));
		close(fd);
		return -EIO;
	}
	return fd;
}

pid_t guest_lock_holder(const char *dir, const char *name)
{
	struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET };
	char path[600];
	pid_t pid = 0;
	int fd;

	lock_path(dir, name, path, sizeof(path));
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return 0;
	if (fcntl(fd, F_OFD_GETLK, &fl) == 0 && fl.l_type != F_UNLCK) {
		pid = read_pid(fd);
		if (!pid)
			pid = -1;	/* held; the pid is not written yet */
	}
	close(fd);
	return pid;
}
