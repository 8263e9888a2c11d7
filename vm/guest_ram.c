/*
 * Guest RAM files. Huge pages come from a private tmpfs with
 * huge=within_size, made with the new mount API (fsopen, fsmount) and never
 * attached anywhere: nothing shows in any mount table, nothing is left
 * behind, and the host's shmem_enabled (here "never") does not apply to
 * it. Each guest's file is an O_TMPFILE on it, as unnamed as a memfd.
 *
 * Why: on this nested machine a page first touched costs several µs, and
 * a migration's destination touches every page it receives. First-touching
 * 400 MiB of a memfd took 320-460 ms in 4 KiB pages against 40 ms in 2 MiB
 * pages (QEMU gets the same from MADV_HUGEPAGE on its anonymous RAM).
 * Mounting needs CAP_SYS_ADMIN; without it guests get a memfd, as before.
 */
#include "guest_ram.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/memfd.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <unistd.h>

#define SHMEM_ENABLED	"/sys/kernel/mm/transparent_hugepage/shmem_enabled"

static enum guest_ram_pages chosen = GUEST_RAM_HUGE;
static pthread_once_t mount_once = PTHREAD_ONCE_INIT;
static int huge_mount = -1;		/* the private tmpfs, for the process's life */
static char no_huge_reason[128];

void guest_ram_set_pages(enum guest_ram_pages pages)
{
	chosen = pages;
}

/* "deny" forces huge pages off on every tmpfs, ours included. */
static bool thp_denied(void)
{
	char line[128] = "";
	FILE *f = fopen(SHMEM_ENABLED, "r");

	if (!f)
		return false;	/* no THP at all: fsconfig refuses "huge" below */
	if (!fgets(line, sizeof(line), f))
		line[0] = 0;
	fclose(f);
	return strstr(line, "[deny]") != NULL;
}

static void make_huge_mount(void)
{
	int fs, mnt;

	if (thp_denied()) {
		snprintf(no_huge_reason, sizeof(no_huge_reason), "%s is \"deny\"", SHMEM_ENABLED);
		return;
	}
	fs = fsopen("tmpfs", FSOPEN_CLOEXEC);
	if (fs < 0) {
		snprintf(no_huge_reason, sizeof(no_huge_reason), "fsopen(tmpfs): %s", strerror(errno));
		return;
	}
	/* size=0: no limit of its own, like a memfd. */
	if (fsconfig(fs, FSCONFIG_SET_STRING, "huge", "within_size", 0) < 0 ||
	    fsconfig(fs, FSCONFIG_SET_STRING, "size", "0", 0) < 0 ||
	    fsconfig(fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0) {
		snprintf(no_huge_reason, sizeof(no_huge_reason), "tmpfs with huge pages: %s",
			 strerror(errno));
		close(fs);
		return;
	}
	mnt = fsmount(fs, FSMOUNT_CLOEXEC, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC);
	if (mnt < 0)
		snprintf(no_huge_reason, sizeof(no_huge_reason), "fsmount: %s", strerror(errno));
	close(fs);
	huge_mount = mnt;
}

static bool huge_available(void)
{
	if (chosen != GUEST_RAM_HUGE)
		return false;
	pthread_once(&mount_once, make_huge_mount);
	return huge_mount >= 0;
}

int guest_ram_create(uint64_t bytes, bool hugetlb, char *err, size_t errlen)
{
	int fd = -1;

	if (!hugetlb && huge_available())
		fd = openat(huge_mount, ".", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (fd < 0)	/* a memfd: without huge pages, or if the tmpfs refuses */
		fd = memfd_create("vmigrate-guest-ram",
				  MFD_CLOEXEC | (hugetlb ? MFD_HUGETLB | MFD_HUGE_2MB : 0));
	if (fd < 0) {
		snprintf(err, errlen, "memfd_create%s: %s", hugetlb ? " (hugetlb)" : "",
			 strerror(errno));
		return -errno;
	}
	if (ftruncate(fd, (off_t)bytes) < 0) {
		int ret = -errno;

		snprintf(err, errlen, "sizing guest RAM to %llu bytes: %s",
			 (unsigned long long)bytes, strerror(errno));
		close(fd);
		return ret;
	}
	return fd;
}

bool guest_ram_huge(char *how, size_t len)
{
	bool huge = huge_available();

	if (huge)
		snprintf(how, len, "transparent huge pages");
	else
		snprintf(how, len, "4 KiB pages (%s)", chosen == GUEST_RAM_SMALL ?
			 "small pages asked: --small-pages or small-pages = true" : no_huge_reason);
	return huge;
}
