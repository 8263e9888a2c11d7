/*
 * Full checkpoints: a paused guest's pages and state recorded as one
 * ckpt-format image with an index. A file becomes visible under its name
 * only when it is complete and on disk; a failed write leaves nothing.
 */
#include "snapshot.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int fsync_dir_of(const char *path)
{
	char *copy = strdup(path);
	int fd, ret = 0;

	if (!copy)
		return -ENOMEM;
	fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 || fsync(fd) < 0)
		ret = -errno;
	if (fd >= 0)
		close(fd);
	free(copy);
	return ret;
}

static int write_image(struct vm *vm, int fd, struct snap_result *res)
{
	struct ckpt_writer_opts opts = { .codec = ckpt_codec_default, .build_index = true };
	struct ckpt_image_info info;
	struct ckpt_sink sink;
	struct ckpt_writer *w;
	int ret;

	ckpt_fd_sink(&fd, &sink);
	w = ckpt_writer_new(&sink, &opts);
	if (!w)
		return -ENOMEM;
	vm_image_info(vm, &info);
	if (getrandom(info.image_uuid, sizeof(info.image_uuid), 0) != sizeof(info.image_uuid)) {
		ckpt_writer_free(w);
		return -errno;
	}
	{
		struct timespec ts;

		clock_gettime(CLOCK_REALTIME, &ts);
		info.created_ns = (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
	}
	ckpt_writer_header(w, &info);
	vm->ops->save_config(vm, w);
	ckpt_writer_marker(w, CKPT_MARK_ROUND, 1);
	for (unsigned r = 0; r < vm->nr_regions && !ckpt_writer_error(w); r++) {
		const struct vm_region *rg = &vm->regions[r];

		for (uint64_t p = 0; p < rg->size / VM_PAGE_SIZE; p++)
			if (ckpt_writer_page(w, rg->id, p, rg->host + p * VM_PAGE_SIZE, NULL))
				break;
	}
	if (!ckpt_writer_error(w)) {
		ret = vm->ops->save_state(vm, w);
		if (ret && !ckpt_writer_error(w)) {
			ckpt_writer_free(w);
			return ret;
		}
	}
	ret = ckpt_writer_finish(w, res->digest);
	memcpy(res->pages, ckpt_writer_stats(w)->pages, sizeof(res->pages));
	res->file_bytes = ckpt_writer_stats(w)->bytes;
	ckpt_writer_free(w);
	return ret;
}

int snap_save_paused(struct vm *vm, const char *path, struct snap_result *res,
		     char *err, size_t errlen)
{
	size_t len = strlen(path);
	char *tmp = malloc(len + 16);
	double t0 = now();
	int fd, ret;

	memset(res, 0, sizeof(*res));
	if (!tmp)
		return -ENOMEM;
	snprintf(tmp, len + 16, "%s.tmp.XXXXXX", path);
	fd = mkostemp(tmp, O_CLOEXEC);	/* 0600, never follows a symlink */
	if (fd < 0) {
		ret = -errno;
		snprintf(err, errlen, "creating %s: %s", tmp, strerror(errno));
		free(tmp);
		return ret;
	}
	ret = write_image(vm, fd, res);
	if (ret) {
		snprintf(err, errlen, "writing %s: %s", tmp, strerror(-ret));
		goto fail;
	}
	if (fsync(fd) < 0) {
		ret = -errno;
		snprintf(err, errlen, "fsync %s: %s", tmp, strerror(errno));
		goto fail;
	}
	close(fd);
	fd = -1;
	if (rename(tmp, path) < 0) {
		ret = -errno;
		snprintf(err, errlen, "renaming %s to %s: %s", tmp, path, strerror(errno));
		goto fail;
	}
	ret = fsync_dir_of(path);
	if (ret)
		snprintf(err, errlen, "fsync of the directory of %s: %s", path, strerror(-ret));
	free(tmp);
	res->seconds = now() - t0;
	return ret;
fail:
	if (fd >= 0)
		close(fd);
	unlink(tmp);
	free(tmp);
	return ret;
}

struct vm *snap_restore(const char *path, const struct snap_restore_opts *opts,
			char *err, size_t errlen)
{
	struct ckpt_source src;
	struct ckpt_reader *r = NULL;
	struct ckpt_record rec;
	struct ckpt_page_target target;
	struct ckpt_image_info info;
	struct vm_kvm_config cfg = { .dirty_mode = opts->dirty_mode, .events = opts->events };
	struct vm *vm = NULL;
	int fd, ret;

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return NULL;
	}
	ckpt_fd_source(&fd, &src);
	r = ckpt_reader_new(&src, NULL);
	if (!r) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	if (ckpt_reader_next(r, &rec) || ckpt_reader_next(r, &rec))
		goto bad_input;
	info = *ckpt_reader_info(r);
	if (info.flags & CKPT_HDRF_INCREMENTAL) {
		snprintf(err, errlen, "%s is an incremental checkpoint; restore needs a full one", path);
		goto fail;
	}
	if (vm_kvm_config_from_record(&rec, &cfg, err, errlen))
		goto fail;
	if (opts->nr_vcpus && opts->nr_vcpus != cfg.nr_vcpus) {
		snprintf(err, errlen, "vCPU count mismatch: %s holds %u vCPUs, %u were asked for",
			 path, cfg.nr_vcpus, opts->nr_vcpus);
		goto fail;
	}
	cfg.name = info.guest_name;
	vm = vm_kvm_create(&cfg, err, errlen);
	if (!vm)
		goto fail;
	memcpy(vm->uuid, info.guest_uuid, sizeof(vm->uuid));
	if (vm_page_target(vm, &info, &target)) {
		snprintf(err, errlen, "%s: memory layout differs from a %u MiB guest's", path,
			 (unsigned)(cfg.mem_bytes >> 20));
		goto fail;
	}
	target.use_fd = true;
	if (vm->ops->load_state(vm, &rec, err, errlen))
		goto fail;
	while ((ret = ckpt_reader_next(r, &rec)) == 0) {
		if (rec.type == CKPT_REC_PAGES && ckpt_reader_apply(r, &rec, &target))
			goto bad_input;
		if (rec.type == CKPT_REC_STATE && vm->ops->load_state(vm, &rec, err, errlen))
			goto fail;
	}
	if (ret != 1)
		goto bad_input;
	if (vm->ops->load_finish(vm, err, errlen))
		goto fail;
	ckpt_reader_free(r);
	close(fd);
	return vm;

bad_input:
	snprintf(err, errlen, "%s: %s", path, ckpt_reader_errmsg(r));
fail:
	vm_destroy(vm);
	ckpt_reader_free(r);
	close(fd);
	return NULL;
}
