/*
 * Full checkpoints: a paused guest's pages and state recorded as one
 * ckpt-format image with an index. A file becomes visible under its name
 * only when it is complete and on disk; a failed write leaves nothing.
 */
#include "snapshot.h"
#include "qemu_ckpt.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <dirent.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <endian.h>

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

/* Pages of region ri: all of them, holes of the memfd as zero runs, or
 * only those set in an incremental's bitmap. */
static int write_region(struct ckpt_writer *w, const struct vm_region *r, const uint64_t *dirty)
{
	uint64_t pages = r->size / VM_PAGE_SIZE, p = 0;

	while (p < pages && !ckpt_writer_error(w)) {
		if (dirty) {
			if (p % 64 == 0 && !dirty[p / 64]) {
				p += 64;	/* a clean word: 64 pages at once */
				continue;
			}
			if ((dirty[p / 64] >> (p % 64)) & 1)
				ckpt_writer_page(w, r->id, p, r->host + p * VM_PAGE_SIZE, NULL);
			p++;
			continue;
		}
		{
			off_t off = (off_t)(r->memfd_offset + p * VM_PAGE_SIZE);
			off_t data = lseek(r->memfd, off, SEEK_DATA);
			uint64_t d = data < 0 ? pages : ((uint64_t)data - r->memfd_offset) / VM_PAGE_SIZE;
			uint64_t h;
			off_t hole;

			if (d > pages)
				d = pages;
			if (d > p) {	/* never written: zero, without reading it */
				ckpt_writer_zero_run(w, r->id, p, d - p);
				p = d;
				continue;
			}
			hole = lseek(r->memfd, off, SEEK_HOLE);
			h = hole < 0 ? pages : ((uint64_t)hole - r->memfd_offset + VM_PAGE_SIZE - 1) /
						VM_PAGE_SIZE;
			if (h > pages)
				h = pages;
			for (; p < h && p < pages; p++)
				if (ckpt_writer_page(w, r->id, p, r->host + p * VM_PAGE_SIZE, NULL))
					break;
			if (h <= p)
				p++;	/* lseek disagreed with itself: move on */
		}
	}
	return ckpt_writer_error(w);
}

#define SNAP_RECORD_PAGES	256	/* pages a PAGES record holds at most */
#define LIVE_MAX_ROUNDS		8
#define LIVE_DONE_PAGES		256	/* few enough to write while paused */
#define HOLD_SLACK_PAGES	256	/* dirtied between the last sync and the pause */
#define HOLD_MAX_PAGES		16384	/* 64 MiB: more goes to the file in the pause */
#define HOLD_STATE_BYTES	(256u << 10)	/* room for every STATE record */

/*
 * Where a live checkpoint's records go. While the guest is paused for its
 * last round, into memory (held): the last pages and the state are copied
 * out in the pause, and reach the file only after the guest runs again.
 * The file is still named only once complete and on disk (snap_save_paused).
 * A last round too big to hold (a guest that did not converge) goes to the
 * file in the pause, as the service's memory must not grow with the guest's.
 */
struct hold_sink {
	int fd;
	bool holding;
	struct ckpt_membuf held;
};

static int hold_writev(void *opaque, const struct iovec *iov, int iovcnt)
{
	struct hold_sink *h = opaque;
	struct ckpt_sink to;

	if (h->holding)
		ckpt_membuf_sink(&h->held, &to);
	else
		ckpt_fd_sink(&h->fd, &to);
	return to.writev(to.opaque, iov, iovcnt);
}

/* Start holding, with room for about pages pages touched beforehand: memory
 * first touched in the pause would lengthen it (PERF-FACTS.md). */
static int hold_begin(struct hold_sink *h, uint64_t pages)
{
	size_t cap = (size_t)(pages + HOLD_SLACK_PAGES) *
		     (VM_PAGE_SIZE + sizeof(struct ckpt_page_entry)) + HOLD_STATE_BYTES;

	h->held.data = malloc(cap);
	if (!h->held.data)
		return -ENOMEM;
	memset(h->held.data, 0, cap);
	h->held.cap = cap;
	h->held.len = 0;
	h->holding = true;
	return 0;
}

/* The held records into the file, after them everything directly. */
static int hold_release(struct hold_sink *h)
{
	struct iovec v = { h->held.data, h->held.len };
	struct ckpt_sink to;
	int ret = 0;

	h->holding = false;
	ckpt_fd_sink(&h->fd, &to);
	if (h->held.len)
		ret = to.writev(to.opaque, &v, 1);
	ckpt_membuf_release(&h->held);
	return ret;
}

static uint64_t count_bits(const uint64_t *bm, uint64_t pages)
{
	uint64_t n = 0;

	for (uint64_t i = 0; i < (pages + 63) / 64; i++)
		n += (uint64_t)__builtin_popcountll(bm[i]);
	return n;
}

/*
 * After round 1 of a live checkpoint: rounds of what the guest dirtied
 * meanwhile, until little is left, then pause and write the rest into
 * memory (hold). Leaves the guest paused with res->pause_ms holding when
 * the pause began.
 */
static int live_rounds(struct vm *vm, struct ckpt_writer *w, struct hold_sink *hold,
		       struct snap_result *res)
{
	uint64_t *bm[VM_MAX_REGIONS] = { 0 };
	int ret = 0;

	for (unsigned r = 0; r < vm->nr_regions; r++)
		if (!(bm[r] = calloc(1, vm_bitmap_bytes(&vm->regions[r]))))
			ret = -ENOMEM;
	for (unsigned round = 2; !ret; round++) {
		uint64_t dirty = 0;
		bool last = false;

		for (unsigned r = 0; r < vm->nr_regions && !ret; r++) {
			memset(bm[r], 0, vm_bitmap_bytes(&vm->regions[r]));
			ret = vm->ops->dirty_sync(vm, r, bm[r]);
			dirty += count_bits(bm[r], vm->regions[r].size / VM_PAGE_SIZE);
		}
		if (ret)
			break;
		if (dirty <= LIVE_DONE_PAGES || round > LIVE_MAX_ROUNDS) {
			if (dirty <= HOLD_MAX_PAGES && (ret = hold_begin(hold, dirty)))
				break;
			/* the guest stands still from the first kick on */
			res->pause_ms = now();	/* turned into a duration at the end */
			vm_pause(vm);
			for (unsigned r = 0; r < vm->nr_regions && !ret; r++)
				ret = vm->ops->dirty_sync(vm, r, bm[r]);	/* ORs in the rest */
			last = true;
		}
		ckpt_writer_marker(w, CKPT_MARK_ROUND, round);
		res->rounds = round;
		for (unsigned r = 0; r < vm->nr_regions && !ret && !ckpt_writer_error(w); r++) {
			if (!last)
				ret = vm->ops->dirty_clear(vm, r, 0, vm->regions[r].size / VM_PAGE_SIZE,
							  bm[r]);
			if (!ret)
				write_region(w, &vm->regions[r], bm[r]);
		}
		if (last)
			break;
	}
	for (unsigned r = 0; r < VM_MAX_REGIONS; r++)
		free(bm[r]);
	if (!ret)
		ret = ckpt_writer_error(w);
	return ret;
}

static int write_image(struct vm *vm, int fd, const struct snap_save_opts *o,
		       struct snap_result *res)
{
	/* Small PAGES records: a lazy restore reads and checks a whole record
	 * to serve one page on first touch (FORMAT.md: each record carries its
	 * own checksum), and a record's header costs 32 bytes in 1 MiB. */
	struct ckpt_writer_opts opts = { .codec = ckpt_codec_default, .build_index = true,
					 .batch_pages = SNAP_RECORD_PAGES };
	struct hold_sink hold = { .fd = fd };
	struct ckpt_image_info info;
	struct ckpt_sink sink = { hold_writev, &hold };
	struct ckpt_writer *w;
	bool paused;
	int ret;

	opts.codec.delta = false;
	if (o) {
		opts.mac_key = o->mac_key;
		opts.mac_key_len = o->mac_key_len;
		ckpt_codec_use(&opts.codec, o->compress);
	}
	w = ckpt_writer_new(&sink, &opts);
	if (!w)
		return -ENOMEM;
	vm_image_info(vm, &info);
	if (getrandom(info.image_uuid, sizeof(info.image_uuid), 0) != sizeof(info.image_uuid)) {
		ckpt_writer_free(w);
		return -errno;
	}
	memcpy(res->image_uuid, info.image_uuid, 16);
	{
		struct timespec ts;

		clock_gettime(CLOCK_REALTIME, &ts);
		info.created_ns = (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
	}
	if (o && o->dirty)
		info.flags |= CKPT_HDRF_INCREMENTAL;
	ckpt_writer_header(w, &info);
	if (o && o->dirty)
		ckpt_writer_parent(w, o->parent_uuid, o->parent_digest);
	vm->ops->save_config(vm, w);
	ckpt_writer_marker(w, CKPT_MARK_ROUND, 1);
	res->rounds = 1;
	/* live: the caller re-armed the dirty log just before, so whatever the
	 * guest writes after a page is read shows in the next round */
	for (unsigned r = 0; r < vm->nr_regions && !ckpt_writer_error(w); r++)
		write_region(w, &vm->regions[r], o && o->dirty ? o->dirty[r] : NULL);
	if (o && o->live && !ckpt_writer_error(w)) {
		ret = live_rounds(vm, w, &hold, res);
		if (ret) {
			if (res->pause_ms > 0)
				vm_resume(vm);	/* it stopped for the last round: go on */
			ckpt_membuf_release(&hold.held);
			ckpt_writer_free(w);
			return ret;
		}
	}
	paused = o && o->live && res->pause_ms > 0;
	if (!ckpt_writer_error(w)) {
		ret = vm->ops->save_state(vm, w);
		if (ret && !ckpt_writer_error(w)) {
			if (paused)
				vm_resume(vm);
			ckpt_membuf_release(&hold.held);
			ckpt_writer_free(w);
			return ret;
		}
	}
	if (hold.holding) {
		/* the last pages and the state are copied out: the guest goes on
		 * while they, the index and the commit go into the file */
		res->pause_ms = (now() - res->pause_ms) * 1e3;
		vm_resume(vm);
		paused = false;
		ret = hold_release(&hold);
		if (ret && !ckpt_writer_error(w)) {
			ckpt_writer_free(w);
			return ret;
		}
	}
	ret = ckpt_writer_finish(w, res->digest);
	if (paused) {
		/* not held: the file is complete in the page cache, the guest goes on */
		res->pause_ms = (now() - res->pause_ms) * 1e3;
		vm_resume(vm);
	}
	memcpy(res->pages, ckpt_writer_stats(w)->pages, sizeof(res->pages));
	res->file_bytes = ckpt_writer_stats(w)->bytes;
	ckpt_writer_free(w);
	return ret;
}

/*
 * The file being written has no name (O_TMPFILE in the target's directory)
 * until it is complete and on disk: a writer killed while writing or
 * syncing leaves nothing behind. Only then does it get a temporary name
 * (linkat), which rename() puts in place. Where the file system has no
 * O_TMPFILE, a named temporary file (mkostemp) instead.
 */
static int create_unnamed(const char *path)
{
	char *copy = strdup(path);
	int fd;

	if (!copy)
		return -ENOMEM;
	fd = open(dirname(copy), O_TMPFILE | O_WRONLY | O_CLOEXEC, 0600);
	free(copy);
	return fd < 0 ? -errno : fd;
}

/* Give the unnamed file fd the name tmp (its XXXXXX made unique). */
static int name_unnamed(int fd, char *tmp)
{
	char proc[64];
	size_t n = strlen(tmp);

	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
	for (int tries = 0; tries < 100; tries++) {
		unsigned char r[6];

		if (getrandom(r, sizeof(r), 0) != sizeof(r))
			return -EIO;
		for (int i = 0; i < 6; i++)
			tmp[n - 6 + i] = "abcdefghijklmnopqrstuvwxyz0123456789"[r[i] % 36];
		if (linkat(AT_FDCWD, proc, AT_FDCWD, tmp, AT_SYMLINK_FOLLOW) == 0)
			return 0;
		if (errno != EEXIST)
			return -errno;
	}
	return -EEXIST;
}

int snap_commit_file(const char *path, int (*fill)(void *opaque, int fd, char *err, size_t errlen),
		     void *opaque, char *err, size_t errlen)
{
	size_t len = strlen(path);
	char *tmp = malloc(len + 16);
	bool unnamed;
	int fd, ret;

	if (!tmp)
		return -ENOMEM;
	memcpy(tmp, path, len);
	memcpy(tmp + len, ".tmp.XXXXXX", sizeof(".tmp.XXXXXX"));
	fd = create_unnamed(path);
	unnamed = fd >= 0;
	if (!unnamed)
		fd = mkostemp(tmp, O_CLOEXEC);	/* 0600, never follows a symlink */
	if (fd < 0) {
		ret = -errno;
		snprintf(err, errlen, "creating %s: %s", tmp, strerror(errno));
		free(tmp);
		return ret;
	}
	ret = fill(opaque, fd, err, errlen);
	if (ret)
		goto fail;
	if (fsync(fd) < 0) {
		ret = -errno;
		snprintf(err, errlen, "fsync %s: %s", unnamed ? path : tmp, strerror(errno));
		goto fail;
	}
	if (unnamed && (ret = name_unnamed(fd, tmp))) {
		snprintf(err, errlen, "naming the new %s: %s", path, strerror(-ret));
		unnamed = false;
		tmp[0] = 0;	/* nothing to remove */
		goto fail;
	}
	unnamed = false;
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
	return ret;
fail:
	if (fd >= 0)
		close(fd);
	if (!unnamed && tmp[0])
		unlink(tmp);
	free(tmp);
	return ret;
}

struct save_job {
	struct vm *vm;
	const char *path;
	const struct snap_save_opts *opts;
	struct snap_result *res;
};

static int save_fill(void *opaque, int fd, char *err, size_t errlen)
{
	struct save_job *j = opaque;
	int ret = write_image(j->vm, fd, j->opts, j->res);

	if (ret)
		snprintf(err, errlen, "writing %s: %s", j->path, strerror(-ret));
	return ret;
}

int snap_save_paused(struct vm *vm, const char *path, const struct snap_save_opts *opts,
		     struct snap_result *res, char *err, size_t errlen)
{
	struct save_job j = { vm, path, opts, res };
	double t0 = now();
	int ret;

	memset(res, 0, sizeof(*res));
	ret = snap_check_target(path, opts && opts->dirty ? opts->parent_uuid : NULL,
				opts && opts->force, err, errlen);
	if (ret)
		return ret;
	ret = snap_commit_file(path, save_fill, &j, err, errlen);
	res->seconds = now() - t0;
	return ret;
}

/* The head of a checkpoint file: its image, and its parent if incremental. */
struct head {
	char path[SNAP_PATH_MAX];
	uint8_t image_uuid[16];
	bool incremental;
	uint8_t parent_uuid[16], parent_digest[16];
};

static int read_head(const char *path, struct head *h, char *err, size_t errlen)
{
	struct ckpt_source src;
	struct ckpt_reader *r;
	struct ckpt_record rec;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW), ret = 0;

	memset(h, 0, sizeof(*h));
	if (fd < 0) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return -errno;
	}
	snprintf(h->path, sizeof(h->path), "%s", path);
	ckpt_fd_source(&fd, &src);
	r = ckpt_reader_new(&src, NULL);
	if (!r || ckpt_reader_next(r, &rec)) {
		snprintf(err, errlen, "%s: %s", path, r ? ckpt_reader_errmsg(r) : "out of memory");
		ret = -EBADMSG;
	} else {
		memcpy(h->image_uuid, rec.u.header->image_uuid, 16);
		h->incremental = rec.u.header->flags & CKPT_HDRF_INCREMENTAL;
		if (h->incremental) {
			if (ckpt_reader_next(r, &rec) || rec.type != CKPT_REC_PARENT) {
				snprintf(err, errlen, "%s: %s", path, ckpt_reader_errmsg(r));
				ret = -EBADMSG;
			} else {
				memcpy(h->parent_uuid, rec.u.parent.image_uuid, 16);
				memcpy(h->parent_digest, rec.u.parent.digest, 16);
			}
		}
	}
	ckpt_reader_free(r);
	close(fd);
	return ret;
}

int snap_read_head(const char *path, uint8_t image_uuid[16], bool *incremental,
		   uint8_t parent_uuid[16], char *err, size_t errlen)
{
	struct head h;
	int ret = read_head(path, &h, err, errlen);

	if (ret)
		return ret;
	memcpy(image_uuid, h.image_uuid, 16);
	*incremental = h.incremental;
	memcpy(parent_uuid, h.parent_uuid, 16);
	return 0;
}

/* A checkpoint file's name in a directory scan: not hidden, not a temporary. */
static bool candidate(const char *entry)
{
	return entry[0] != '.' && !strstr(entry, ".tmp.");
}

/* The parent of child: the file beside it that holds the named image. */
static int find_parent(const struct head *child, struct head *parent, char *err, size_t errlen)
{
	char *copy = strdup(child->path), *dir;
	DIR *d;
	struct dirent *e;
	int ret = -ENOENT;

	if (!copy)
		return -ENOMEM;
	dir = dirname(copy);
	d = opendir(dir);
	while (d && (e = readdir(d))) {
		char path[SNAP_PATH_MAX + 256], ignore[256];

		if (!candidate(e->d_name))
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		if (read_head(path, parent, ignore, sizeof(ignore)) == 0 &&
		    !memcmp(parent->image_uuid, child->parent_uuid, 16)) {
			ret = 0;
			break;
		}
	}
	if (d)
		closedir(d);
	if (ret)
		snprintf(err, errlen, "%s: its parent image is not in %s", child->path, dir);
	free(copy);
	return ret;
}

/* path's chain into chain[], newest first, down to its full checkpoint. */
static int walk_chain(const char *path, struct head *chain, unsigned max, unsigned *n,
		      char *err, size_t errlen)
{
	int ret = read_head(path, &chain[0], err, errlen);

	*n = 1;
	while (!ret && chain[*n - 1].incremental) {
		if (*n == max) {
			snprintf(err, errlen, "%s: chain longer than %u checkpoints", path, max);
			return -ELOOP;
		}
		ret = find_parent(&chain[*n - 1], &chain[*n], err, errlen);
		if (!ret)
			(*n)++;
	}
	return ret;
}

int snap_chain(const char *path, char (*files)[SNAP_PATH_MAX], unsigned max, unsigned *n,
	       char *err, size_t errlen)
{
	static struct head chain[SNAP_MAX_CHAIN];
	int ret;

	*n = 0;
	if (max > SNAP_MAX_CHAIN)
		max = SNAP_MAX_CHAIN;
	ret = walk_chain(path, chain, max, n, err, errlen);
	if (ret && *n == 1 && !chain[0].path[0])
		*n = 0;		/* not even path's head could be read */
	for (unsigned i = 0; i < *n; i++)
		snprintf(files[i], SNAP_PATH_MAX, "%s", chain[i].path);
	return ret;
}

int snap_check_target(const char *path, const uint8_t *parent_uuid, bool force,
		      char *err, size_t errlen)
{
	char *copy = strdup(path), *base_copy = strdup(path), *dir, *base;
	struct head target, h;
	struct stat st;
	struct dirent *e;
	DIR *d;
	int ret = 0;

	if (!copy || !base_copy) {
		free(copy);
		free(base_copy);
		return -ENOMEM;
	}
	if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
		snprintf(err, errlen, "%s is a directory: give the checkpoint a file name", path);
		ret = -EISDIR;
		goto out;
	}
	/* only an existing checkpoint can be somebody's parent */
	if (lstat(path, &st) != 0 || !S_ISREG(st.st_mode) ||
	    read_head(path, &target, err, errlen) != 0) {
		err[0] = 0;
		goto out;
	}
	if (parent_uuid && !memcmp(target.image_uuid, parent_uuid, 16)) {
		snprintf(err, errlen, "%s holds the parent of this incremental checkpoint: "
			 "it cannot replace it; give it another name", path);
		ret = -EEXIST;
		goto out;
	}
	if (force)
		goto out;
	dir = dirname(copy);
	base = basename(base_copy);
	d = opendir(dir);
	while (d && (e = readdir(d))) {
		char child[SNAP_PATH_MAX + 256], ignore[256];

		if (!candidate(e->d_name) || !strcmp(e->d_name, base))
			continue;
		snprintf(child, sizeof(child), "%s/%s", dir, e->d_name);
		if (read_head(child, &h, ignore, sizeof(ignore)) == 0 && h.incremental &&
		    !memcmp(h.parent_uuid, target.image_uuid, 16)) {
			snprintf(err, errlen, "%s is the parent of %s: replacing it would leave that "
				 "checkpoint unrestorable (snapshot --force replaces it anyway)", path,
				 child);
			ret = -EEXIST;
			break;
		}
	}
	if (d)
		closedir(d);
out:
	free(copy);
	free(base_copy);
	return ret;
}

/*
 * Apply one file of the chain. Pages always; state only from the newest.
 * The first file also builds the guest. Returns its COMMIT digest.
 */
static int apply_file(const char *path, bool first, bool newest,
		      const struct snap_restore_opts *opts, struct vm **vmp,
		      uint8_t digest[16], char *err, size_t errlen)
{
	struct ckpt_source src;
	struct ckpt_reader *r;
	struct ckpt_record rec;
	struct ckpt_page_target target;
	struct ckpt_image_info info;
	struct vm_kvm_config cfg = { .dirty_mode = opts->dirty_mode, .events = opts->events };
	struct ckpt_reader_opts ro = { .mac_key = opts->mac_key, .mac_key_len = opts->mac_key_len };
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW), ret;

	if (fd < 0) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return -errno;
	}
	ckpt_fd_source(&fd, &src);
	r = ckpt_reader_new(&src, &ro);
	if (!r) {
		close(fd);
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	do {	/* HEADER, [PARENT], then the VM's configuration */
		ret = ckpt_reader_next(r, &rec);
	} while (!ret && rec.type != CKPT_REC_STATE);
	if (ret)
		goto bad_input;
	info = *ckpt_reader_info(r);
	if (vm_kvm_config_from_record(&rec, &cfg, err, errlen))
		goto fail;
	if (first) {
		if (opts->nr_vcpus && opts->nr_vcpus != cfg.nr_vcpus) {
			snprintf(err, errlen, "vCPU count mismatch: %s holds %u vCPUs, %u were asked for",
				 path, cfg.nr_vcpus, opts->nr_vcpus);
			goto fail;
		}
		cfg.name = info.guest_name;
		*vmp = vm_kvm_create(&cfg, err, errlen);
		if (!*vmp)
			goto fail;
		memcpy((*vmp)->uuid, info.guest_uuid, sizeof((*vmp)->uuid));
	}
	if (vm_page_target(*vmp, &info, &target)) {
		snprintf(err, errlen, "%s: memory layout differs from the guest's", path);
		goto fail;
	}
	target.use_fd = true;
	if (newest && (*vmp)->ops->load_state(*vmp, &rec, err, errlen))
		goto fail;
	while ((ret = ckpt_reader_next(r, &rec)) == 0) {
		if (rec.type == CKPT_REC_PAGES && ckpt_reader_apply(r, &rec, &target))
			goto bad_input;
		if (rec.type == CKPT_REC_STATE && newest &&
		    (*vmp)->ops->load_state(*vmp, &rec, err, errlen))
			goto fail;
		if (rec.type == CKPT_REC_COMMIT)
			memcpy(digest, rec.u.commit.digest, 16);
	}
	if (ret != 1)
		goto bad_input;
	ckpt_reader_free(r);
	close(fd);
	return 0;
bad_input:
	snprintf(err, errlen, "%s: %s", path, ckpt_reader_errmsg(r));
fail:
	ckpt_reader_free(r);
	close(fd);
	return -EBADMSG;
}

struct vm *snap_restore(const char *path, const struct snap_restore_opts *opts,
			char *err, size_t errlen)
{
	static struct head chain[SNAP_MAX_CHAIN];	/* newest first */
	unsigned n;
	struct vm *vm = NULL;
	uint8_t digest[16];

	if (walk_chain(path, chain, SNAP_MAX_CHAIN, &n, err, errlen))
		return NULL;
	/* oldest first; each file's digest must be the one its child names */
	for (unsigned i = n; i-- > 0;) {
		if (apply_file(chain[i].path, i == n - 1, i == 0, opts, &vm, digest, err, errlen))
			goto fail;
		if (i > 0 && memcmp(digest, chain[i - 1].parent_digest, 16)) {
			snprintf(err, errlen, "%s: wrong parent: %s does not carry the digest it names",
				 chain[i - 1].path, chain[i].path);
			goto fail;
		}
	}
	if (vm->ops->load_finish(vm, err, errlen))
		goto fail;
	return vm;
fail:
	vm_destroy(vm);
	return NULL;
}

struct domain_merge {
	struct qckpt_image im;
	const uint8_t *key;
	size_t key_len;
	struct snap_result *res;
};

static int domain_fill(void *opaque, int fd, char *err, size_t errlen)
{
	struct domain_merge *m = opaque;

	return qckpt_image_write(&m->im, fd, m->key, m->key_len, m->res->image_uuid,
				 m->res->digest, &m->res->file_bytes, err, errlen);
}

/* A libvirt domain's chain: its image in memory, written as one full file. */
static int merge_domain(const char *path, const char *out, const uint8_t *key, size_t key_len,
			struct snap_result *res, char *err, size_t errlen)
{
	static char files[SNAP_MAX_CHAIN][SNAP_PATH_MAX];
	char *list[SNAP_MAX_CHAIN];
	struct domain_merge m = { .key = key, .key_len = key_len, .res = res };
	double t0 = now();
	unsigned n;
	int ret;

	memset(res, 0, sizeof(*res));
	if ((ret = snap_chain(path, files, SNAP_MAX_CHAIN, &n, err, errlen)))
		return ret;
	for (unsigned i = 0; i < n; i++)
		list[i] = files[i];
	if ((ret = qckpt_image_load(list, n, key, key_len, false, &m.im, err, errlen)))
		return ret;
	ret = snap_check_target(out, NULL, false, err, errlen);
	if (!ret)
		ret = snap_commit_file(out, domain_fill, &m, err, errlen);
	qckpt_image_free(&m.im);
	res->seconds = now() - t0;
	return ret;
}

int snap_merge(const char *path, const char *out, const uint8_t *mac_key, size_t mac_key_len,
	       struct snap_result *res, char *err, size_t errlen)
{
	struct snap_restore_opts ro = { .mac_key = mac_key, .mac_key_len = mac_key_len };
	struct snap_save_opts so = { .mac_key = mac_key, .mac_key_len = mac_key_len };
	struct vm *vm;
	int ret;

	if (qckpt_is_domain_file(path))
		return merge_domain(path, out, mac_key, mac_key_len, res, err, errlen);
	vm = snap_restore(path, &ro, err, errlen);
	if (!vm)
		return -EBADMSG;
	ret = snap_save_paused(vm, out, &so, res, err, errlen);
	vm_destroy(vm);
	return ret;
}

/* The state records of the newest file, read by skipping over its pages. */
static int load_state_only(struct vm *vm, const char *path, char *err, size_t errlen)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW), ret = 0;
	uint64_t off = CKPT_MAGIC_LEN;
	uint8_t *buf = NULL;

	if (fd < 0) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return -errno;
	}
	for (;;) {
		struct ckpt_rec_info ri;
		struct ckpt_record rec;
		struct ckpt_state_rec sr;

		if (ckpt_pread_header(fd, off, &ri)) {
			snprintf(err, errlen, "%s: truncated at %llu", path, (unsigned long long)off);
			ret = -EBADMSG;
			break;
		}
		if (ri.type == CKPT_REC_END)
			break;
		if (ri.type == CKPT_REC_STATE) {
			if (ckpt_pread_record(fd, off, &ri, &buf) || ri.length < sizeof(sr)) {
				snprintf(err, errlen, "%s: bad state record at %llu", path,
					 (unsigned long long)off);
				ret = -EBADMSG;
				break;
			}
			memcpy(&sr, buf, sizeof(sr));
			memset(&rec, 0, sizeof(rec));
			rec.type = CKPT_REC_STATE;
			rec.flags = ri.flags;
			rec.u.state.kind = le32toh(sr.kind);
			rec.u.state.instance = le32toh(sr.instance);
			rec.u.state.version = le32toh(sr.version);
			rec.u.state.data = buf + sizeof(sr);
			rec.u.state.len = ri.length - sizeof(sr);
			if (vm->ops->load_state(vm, &rec, err, errlen)) {
				ret = -EBADMSG;
				break;
			}
		}
		off += sizeof(struct ckpt_rec_hdr) + ri.length;
	}
	free(buf);
	close(fd);
	return ret;
}

/* A file of a chain, complete and unaltered: its digest, from its headers. */
static int file_digest(const char *path, uint8_t out[16], char *err, size_t errlen)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW), ret;

	if (fd < 0) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return -errno;
	}
	ret = ckpt_file_digest(fd, out);
	close(fd);
	if (ret)
		snprintf(err, errlen, "%s: incomplete, or its digest does not match", path);
	return ret;
}

/* Building the guest (KVM's VM, its memory, vCPUs) is independent of
 * reading the files: it runs on a thread of its own meanwhile. */
struct create_job {
	struct vm_kvm_config cfg;
	struct vm *vm;
	char err[256];
};

static void *create_main(void *arg)
{
	struct create_job *j = arg;

	j->vm = vm_kvm_create(&j->cfg, j->err, sizeof(j->err));
	return NULL;
}

/* The files of the chain complete, each parent the one its child names,
 * and their indexes read. */
static int lazy_open_chain(struct head *chain, unsigned n, const struct ckpt_image_info *info,
			   struct snap_lazy **lazy, char *err, size_t errlen)
{
	char *files[SNAP_MAX_CHAIN];

	for (unsigned i = 0; i < n; i++) {
		uint8_t digest[16];

		files[i] = chain[i].path;
		if (file_digest(files[i], digest, err, errlen))
			return -EBADMSG;
		if (i > 0 && memcmp(digest, chain[i - 1].parent_digest, 16)) {
			snprintf(err, errlen, "%s: wrong parent: %s does not carry the digest it names",
				 chain[i - 1].path, chain[i].path);
			return -EBADMSG;
		}
	}
	return snap_lazy_open(files, n, info, lazy, err, errlen);
}

/* The newest file's head: the image and the guest's shape. */
static int lazy_read_shape(const char *path, struct ckpt_image_info *info,
			   struct vm_kvm_config *cfg, char *err, size_t errlen)
{
	struct ckpt_source src;
	struct ckpt_reader *r;
	struct ckpt_record rec;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW), ret;

	if (fd < 0) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return -errno;
	}
	ckpt_fd_source(&fd, &src);
	r = ckpt_reader_new(&src, NULL);
	do
		ret = r ? ckpt_reader_next(r, &rec) : -ENOMEM;
	while (!ret && rec.type != CKPT_REC_STATE);
	if (!ret) {
		*info = *ckpt_reader_info(r);
		ret = vm_kvm_config_from_record(&rec, cfg, err, errlen);
	} else {
		snprintf(err, errlen, "%s: %s", path, r ? ckpt_reader_errmsg(r) : "no memory");
		ret = -EBADMSG;
	}
	ckpt_reader_free(r);
	close(fd);
	return ret;
}

struct vm *snap_restore_lazy(const char *path, const struct snap_restore_opts *opts,
			     struct snap_lazy **lazy, char *err, size_t errlen)
{
	static struct head chain[SNAP_MAX_CHAIN];
	struct create_job job = { .cfg = { .dirty_mode = opts->dirty_mode,
					   .events = opts->events } };
	struct ckpt_image_info info;
	pthread_t creator;
	bool threaded;
	unsigned n;
	int ret;

	*lazy = NULL;
	if (opts->mac_key) {
		snprintf(err, errlen, "lazy restore cannot check a MAC before the guest runs");
		return NULL;
	}
	if (walk_chain(path, chain, SNAP_MAX_CHAIN, &n, err, errlen) ||
	    lazy_read_shape(path, &info, &job.cfg, err, errlen))
		return NULL;
	if (opts->nr_vcpus && opts->nr_vcpus != job.cfg.nr_vcpus) {
		snprintf(err, errlen, "vCPU count mismatch: %s holds %u vCPUs, %u were asked for",
			 path, job.cfg.nr_vcpus, opts->nr_vcpus);
		return NULL;
	}
	job.cfg.name = info.guest_name;
	threaded = pthread_create(&creator, NULL, create_main, &job) == 0;
	if (!threaded)
		create_main(&job);
	ret = lazy_open_chain(chain, n, &info, lazy, err, errlen);
	if (threaded)
		pthread_join(creator, NULL);
	if (!job.vm) {
		if (!ret)
			snprintf(err, errlen, "%s", job.err);
		goto fail;
	}
	if (ret)
		goto fail;
	memcpy(job.vm->uuid, info.guest_uuid, sizeof(job.vm->uuid));
	if (load_state_only(job.vm, path, err, errlen) ||
	    snap_lazy_start(*lazy, job.vm, err, errlen) ||
	    job.vm->ops->load_finish(job.vm, err, errlen))
		goto fail;
	return job.vm;
fail:
	snap_lazy_abort(*lazy);	/* before the guest: its threads use its memory */
	snap_lazy_free(*lazy);
	*lazy = NULL;
	vm_destroy(job.vm);
	return NULL;
}
