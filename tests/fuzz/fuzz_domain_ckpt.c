/*
 * libFuzzer target for libvirt domains' checkpoint files (vm/libvirt/
 * qemu_ckpt.h) and the save image made from them (libvirt_save_image.h):
 * any file must be read into an image or refused with a reason, never
 * crash, leak or read out of bounds; an image that loads is written as a
 * save image, whose QEMU stream must parse to its end, and as a full
 * checkpoint, which must load again. Seed: corpus-domain_ckpt/seed-0.ckpt,
 * a capture (qckpt_capture) of a two-block stream with a page, a zero page
 * and a device blob.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <unistd.h>

#include "libvirt_save_image.h"
#include "qemu_ckpt.h"
#include "qemu_stream.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct parse {
	struct qstream_parser *p;
	size_t skip;			/* libvirt's header and XML, not QEMU's */
};

static int to_parser(void *opaque, const void *buf, size_t len)
{
	struct parse *x = opaque;
	size_t n = len < x->skip ? len : x->skip;

	x->skip -= n;
	if (len > n && qstream_parser_feed(x->p, (const uint8_t *)buf + n, len - n))
		abort();	/* what vmigrate writes must parse */
	return 0;
}

static int ignore(void *opaque, const struct qstream_event *ev)
{
	(void)opaque;
	(void)ev;
	return 0;
}

/* Bytes into a file with a name (the loader opens paths, never through a
 * symbolic link such as /proc/self/fd/N): one file, rewritten each run. */
static char dir[64];

static void remove_dir(void)
{
	char p[128];

	snprintf(p, sizeof(p), "%s/in.ckpt", dir);
	unlink(p);
	snprintf(p, sizeof(p), "%s/merged.ckpt", dir);
	unlink(p);
	rmdir(dir);
}

static int as_file(const uint8_t *data, size_t size, char *path, size_t len, const char *name)
{
	int fd;

	if (!dir[0]) {
		snprintf(dir, sizeof(dir), "/tmp/fuzz-domain-ckpt-XXXXXX");
		if (!mkdtemp(dir))
			abort();
		atexit(remove_dir);
	}
	snprintf(path, len, "%s/%s", dir, name);
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0 || (size && write(fd, data, size) != (ssize_t)size))
		abort();
	return fd;
}

#define RAM_CAP	(64u << 20)	/* bytes an image may have to be written back */

static uint64_t ram_bytes(const struct qckpt_image *im)
{
	uint64_t n = 0;

	for (unsigned b = 0; b < im->nblocks; b++)
		n += im->blocks[b].used_length;
	return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char path[128], path2[128], err[512], *files[1] = { path }, *again[1] = { path2 };
	struct qckpt_image im, im2;
	unsigned vcpus;
	uint64_t dev;
	int fd = as_file(data, size, path, sizeof(path), "in.ckpt"), fd2;
	bool loaded;

	qckpt_is_domain_file(path);
	qckpt_file_check(path, NULL, 0, &vcpus, &dev, err, sizeof(err));
	loaded = qckpt_image_load(files, 1, NULL, 0, false, &im, err, sizeof(err)) == 0;
	/* one that loads but is too large is not written back here: time, not a bug */
	if (loaded && ram_bytes(&im) <= RAM_CAP) {
		struct parse x = { qstream_parser_new(ignore, NULL), 0 };
		struct qstream_sink sink = { to_parser, &x };
		uint8_t uuid[16], digest[16];
		uint64_t bytes;

		if (!x.p)
			abort();
		x.skip = sizeof(struct lvsave_header) + strlen(im.xml) + 1;
		if (lvsave_write(&im, true, &sink, err, sizeof(err)) || qstream_parser_finish(x.p))
			abort();
		qstream_parser_free(x.p);
		fd2 = as_file(NULL, 0, path2, sizeof(path2), "merged.ckpt");
		if (qckpt_image_write(&im, fd2, NULL, 0, uuid, digest, &bytes, err, sizeof(err)))
			abort();
		if (qckpt_image_load(again, 1, NULL, 0, false, &im2, err, sizeof(err)))
			abort();	/* a merged image reads back */
		qckpt_image_free(&im2);
		close(fd2);
	}
	if (loaded)
		qckpt_image_free(&im);
	close(fd);
	return 0;
}
