/*
 * Guest RAM files (vm/guest_ram.c): huge pages back a touched range where
 * the private tmpfs can be made, 4 KiB pages when asked for, and either
 * file behaves as guest RAM must: its size, zeros where never written, a
 * punched page reads zero again while its neighbours keep their bytes.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "guest_ram.h"
#include "harness.h"

#define RAM_BYTES	(16u << 20)
#define HUGE_BYTES	(2u << 20)

/* The kB of the mapping at addr that smaps counts under field. */
static long smaps_kb(const void *addr, const char *field)
{
	FILE *f = fopen("/proc/self/smaps", "r");
	char line[256];
	bool in = false;
	long kb = -1;
	size_t flen = strlen(field);

	while (f && fgets(line, sizeof(line), f)) {
		unsigned long lo, hi;

		if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2) {
			in = (uintptr_t)addr >= lo && (uintptr_t)addr < hi;
			continue;
		}
		if (in && !strncmp(line, field, flen) && line[flen] == ':')
			kb = atol(line + flen + 1);
	}
	if (f)
		fclose(f);
	return kb;
}

/* A shared mapping of a new guest RAM file of RAM_BYTES. */
static uint8_t *map_ram(int *fd_out)
{
	char err[256] = "";
	int fd = guest_ram_create(RAM_BYTES, false, err, sizeof(err));
	struct stat st;
	uint8_t *p;

	CHECK_MSG(fd >= 0, "guest_ram_create: %s", err);
	CHECK(fstat(fd, &st) == 0);
	CHECK_EQ(st.st_size, RAM_BYTES);
	p = mmap(NULL, RAM_BYTES, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	CHECK(p != MAP_FAILED);
	*fd_out = fd;
	return p;
}

static void check_zero_and_punch(int fd, uint8_t *p)
{
	for (size_t i = 0; i < RAM_BYTES; i += 4096)
		CHECK_MSG(p[i] == 0, "byte %zu of a fresh file is %u", i, p[i]);
	memset(p, 0xa5, HUGE_BYTES);
	CHECK(fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 8192, 4096) == 0);
	for (size_t i = 0; i < HUGE_BYTES; i++)
		CHECK_MSG(p[i] == (i >= 8192 && i < 12288 ? 0 : 0xa5),
			  "byte %zu after punching 8192-12287: %u", i, p[i]);
}

TEST(huge_pages_back_a_touched_range)
{
	char how[200];
	uint8_t *p;
	int fd;

	guest_ram_set_pages(GUEST_RAM_HUGE);
	if (!guest_ram_huge(how, sizeof(how)))
		SKIP("no private tmpfs with huge pages here: guests' RAM on %s", how);
	p = map_ram(&fd);
	/* the file's 2 MiB pages line up with a 2 MiB aligned address only */
	CHECK(madvise(p, RAM_BYTES, MADV_POPULATE_WRITE) == 0);
	CHECK_MSG(smaps_kb(p, "ShmemPmdMapped") > 0 || smaps_kb(p, "FilePmdMapped") > 0,
		  "no huge page mapped: ShmemPmdMapped %ld kB, Rss %ld kB",
		  smaps_kb(p, "ShmemPmdMapped"), smaps_kb(p, "Rss"));
	munmap(p, RAM_BYTES);
	close(fd);
	p = map_ram(&fd);
	check_zero_and_punch(fd, p);
}

TEST(small_pages_when_asked)
{
	char how[200];
	uint8_t *p;
	int fd;

	guest_ram_set_pages(GUEST_RAM_SMALL);
	CHECK(!guest_ram_huge(how, sizeof(how)));
	CHECK_MSG(strstr(how, "--small-pages"), "how: %s", how);
	p = map_ram(&fd);
	CHECK(madvise(p, RAM_BYTES, MADV_POPULATE_WRITE) == 0);
	CHECK_EQ(smaps_kb(p, "ShmemPmdMapped"), 0);
	CHECK_EQ(smaps_kb(p, "Rss"), RAM_BYTES >> 10);
	check_zero_and_punch(fd, p);
}
