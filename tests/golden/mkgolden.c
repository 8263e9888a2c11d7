/*
 * Writes the golden image to the path given, or with --seeds DIR the fuzz
 * seed corpus. Run once per format version; what it wrote is checked in and
 * the golden file must never change afterwards.
 */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "golden.h"

static int write_seeds(const char *dir)
{
	/* 0-7: index, incremental, epochs; 8: zstd pages (format 1.2) */
	for (unsigned v = 0; v <= GOLDEN_SEED_ZSTD; v++) {
		char path[4096];
		struct ckpt_sink sink;
		int fd;

		snprintf(path, sizeof(path), "%s/seed-%u.ckpt", dir, v);
		fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		if (fd < 0) {
			perror(path);
			return 1;
		}
		ckpt_fd_sink(&fd, &sink);
		if (golden_write_seed(&sink, v) || close(fd)) {
			fprintf(stderr, "mkgolden: writing %s failed\n", path);
			return 1;
		}
	}
	return 0;
}

int main(int argc, char **argv)
{
	struct ckpt_sink sink;
	uint8_t digest[16];
	int fd, ret;

	if (argc == 3 && !strcmp(argv[1], "--seeds"))
		return write_seeds(argv[2]);
	if (argc != 2) {
		fprintf(stderr, "usage: mkgolden FILE | mkgolden --seeds DIR\n");
		return 2;
	}
	fd = open(argv[1], O_WRONLY | O_CREAT | O_EXCL, 0644);
	if (fd < 0) {
		perror(argv[1]);
		return 1;
	}
	ckpt_fd_sink(&fd, &sink);
	ret = golden_write(&sink, digest);
	if (ret || fsync(fd) || close(fd)) {
		fprintf(stderr, "mkgolden: %s\n", strerror(ret < 0 ? -ret : 5));
		return 1;
	}
	return 0;
}
