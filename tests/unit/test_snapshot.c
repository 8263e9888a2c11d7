/*
 * Checkpoint chains: a full checkpoint and five incrementals of a guest
 * that keeps dirtying memory, each holding only the pages dirtied since
 * its parent; restoring the newest follows the chain, and the guest
 * continues with memory intact. A parent that is missing or does not
 * carry the digest its child names is refused, and so is writing over a
 * parent (snap_check_target).
 */
#include <dirent.h>
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include "harness.h"
#include "kvmguest.h"
#include "snapshot.h"
#include "testdata.h"

struct chain {
	char path[6][4200];
	uint64_t counters[6][2];
	uint64_t bytes[6];
};

static void checkpoint(struct vm *vm, const char *path, const struct snap_result *parent,
		       uint64_t **dirty, struct snap_result *res)
{
	struct snap_save_opts o = { .dirty = dirty };
	char err[512];

	if (parent) {
		memcpy(o.parent_uuid, parent->image_uuid, 16);
		memcpy(o.parent_digest, parent->digest, 16);
	}
	CHECK_MSG(snap_save_paused(vm, path, parent ? &o : NULL, res, err, sizeof(err)) == 0,
		  "%s", err);
}

/* Dirty pages since the last call, re-armed: the next incremental's set. */
static void take_dirty(struct vm *vm, uint64_t **bm)
{
	for (unsigned r = 0; r < vm->nr_regions; r++) {
		memset(bm[r], 0, vm_bitmap_bytes(&vm->regions[r]));
		CHECK_EQ(vm->ops->dirty_sync(vm, r, bm[r]), 0);
		CHECK_EQ(vm->ops->dirty_clear(vm, r, 0, vm->regions[r].size / VM_PAGE_SIZE, bm[r]), 0);
	}
}

static void make_chain(struct chain *c)
{
	struct vm *vm = tg_boot(&(struct tg_opts){ .mem = 128 << 20, .vcpus = 2,
						   .working_set = 32 << 20, .dirty_rate = 20 << 20 });
	uint64_t *bm[VM_MAX_REGIONS] = { 0 };
	struct snap_result prev, res;

	for (unsigned r = 0; r < vm->nr_regions; r++)
		bm[r] = calloc(1, vm_bitmap_bytes(&vm->regions[r]));
	CHECK_EQ(vm->ops->dirty_start(vm), 0);
	CHECK_EQ(vm_start(vm), 0);
	tg_sleep_ms(400);
	for (int i = 0; i < 6; i++) {
		CHECK_EQ(vm_pause(vm), 0);
		take_dirty(vm, bm);
		snprintf(c->path[i], sizeof(c->path[i]), "%s/ck%d.ckpt", test_tmpdir(), i);
		checkpoint(vm, c->path[i], i ? &prev : NULL, i ? bm : NULL, &res);
		c->bytes[i] = res.file_bytes;
		c->counters[i][0] = tg_status(vm, 0)->counter;
		c->counters[i][1] = tg_status(vm, 1)->counter;
		prev = res;
		CHECK_EQ(vm_resume(vm), 0);
		tg_sleep_ms(150);
	}
	vm_destroy(vm);
	for (unsigned r = 0; r < VM_MAX_REGIONS; r++)
		free(bm[r]);
}

static struct vm *restore(const char *path, char *err, size_t errlen)
{
	struct snap_restore_opts o = { 0 };

	return snap_restore(path, &o, err, errlen);
}

TEST_T(incremental_chain_restores_intact, 120)
{
	struct chain c;
	struct vm_verify_report rep;
	struct snap_inspect in;
	char err[512];
	struct vm *vm;

	make_chain(&c);
	/* an incremental holds what changed: far less than the full image */
	for (int i = 1; i < 6; i++)
		CHECK_MSG(c.bytes[i] < c.bytes[0] / 2, "incremental %d: %llu bytes, full %llu", i,
			  (unsigned long long)c.bytes[i], (unsigned long long)c.bytes[0]);
	CHECK_EQ(snap_inspect(c.path[5], NULL, 0, &in, err, sizeof(err)), 0);
	CHECK(in.has_parent);

	vm = restore(c.path[5], err, sizeof(err));
	CHECK_MSG(vm, "restore: %s", err);
	CHECK_EQ(tg_status(vm, 0)->counter, c.counters[5][0]);
	CHECK_EQ(tg_status(vm, 1)->counter, c.counters[5][1]);
	CHECK_MSG(vm_memtouch_verify(vm, NULL, &rep) == 0, "verify: %s", rep.msg);
	CHECK_EQ(vm_resume(vm), 0);
	tg_sleep_ms(200);
	CHECK_EQ(vm_pause(vm), 0);
	CHECK(tg_status(vm, 0)->counter > c.counters[5][0]);
	CHECK_MSG(vm_memtouch_verify(vm, NULL, &rep) == 0, "verify after running: %s", rep.msg);
	vm_destroy(vm);

	/* a middle link restores to its own moment */
	vm = restore(c.path[2], err, sizeof(err));
	CHECK_MSG(vm, "restore: %s", err);
	CHECK_EQ(tg_status(vm, 0)->counter, c.counters[2][0]);
	CHECK_MSG(vm_memtouch_verify(vm, NULL, &rep) == 0, "verify: %s", rep.msg);
	vm_destroy(vm);
}

TEST_T(missing_or_wrong_parent_refused, 120)
{
	struct chain c;
	struct td_stream s;
	char err[512];
	uint8_t *buf, *img;
	size_t len, ilen;
	FILE *f;

	make_chain(&c);
	/* a parent whose content changed (its digest with it) */
	f = fopen(c.path[3], "rb");
	CHECK(f);
	fseek(f, 0, SEEK_END);
	ilen = (size_t)ftell(f);
	rewind(f);
	img = malloc(ilen);
	CHECK(fread(img, 1, ilen, f) == ilen);
	fclose(f);
	CHECK_EQ(td_split(img, ilen, &s), 0);
	s.recs[td_find(&s, CKPT_REC_STATE, 1)].payload[20] ^= 1;
	td_join(&s, 0, 0, &buf, &len);
	f = fopen(c.path[3], "wb");
	CHECK(f && fwrite(buf, 1, len, f) == len);
	fclose(f);
	CHECK(!restore(c.path[5], err, sizeof(err)));
	CHECK_MSG(strstr(err, "wrong parent"), "error: %s", err);

	{
		struct snap_restore_opts lo = { 0 };
		struct snap_lazy *lazy;

		CHECK(!snap_restore_lazy(c.path[5], &lo, &lazy, err, sizeof(err)));
		CHECK_MSG(strstr(err, "wrong parent"), "lazy: %s", err);
	}

	/* a parent that is gone */
	CHECK(unlink(c.path[3]) == 0);
	CHECK(!restore(c.path[5], err, sizeof(err)));
	CHECK_MSG(strstr(err, "parent image is not in"), "error: %s", err);
	td_stream_free(&s);
	free(buf);
	free(img);
}

/* A parent is not replaced unless forced, its own child never replaces it,
 * a directory is no file name, and a refusal leaves the file as it was. */
TEST_T(parent_not_overwritten, 120)
{
	struct vm *vm = tg_boot(&(struct tg_opts){ .mem = 64 << 20, .vcpus = 1,
						   .working_set = 4 << 20, .dirty_rate = 4 << 20 });
	uint64_t *bm[VM_MAX_REGIONS] = { 0 };
	struct snap_result full, inc, res;
	struct snap_save_opts o = { 0 }, forced = { .force = true };
	struct snap_inspect before, after;
	char a[4200], b[4200], err[512];

	for (unsigned r = 0; r < vm->nr_regions; r++)
		bm[r] = calloc(1, vm_bitmap_bytes(&vm->regions[r]));
	snprintf(a, sizeof(a), "%s/a.ckpt", test_tmpdir());
	snprintf(b, sizeof(b), "%s/b.ckpt", test_tmpdir());
	CHECK_EQ(vm->ops->dirty_start(vm), 0);
	CHECK_EQ(vm_start(vm), 0);
	tg_sleep_ms(100);
	CHECK_EQ(vm_pause(vm), 0);
	take_dirty(vm, bm);
	checkpoint(vm, a, NULL, NULL, &full);
	take_dirty(vm, bm);
	checkpoint(vm, b, &full, bm, &inc);
	CHECK_EQ(snap_inspect(a, NULL, 0, &before, err, sizeof(err)), 0);

	CHECK_EQ(snap_save_paused(vm, a, &o, &res, err, sizeof(err)), -EEXIST);
	CHECK_MSG(strstr(err, "is the parent of") && strstr(err, "b.ckpt"), "error: %s", err);
	CHECK_EQ(snap_inspect(a, NULL, 0, &after, err, sizeof(err)), 0);
	CHECK(!memcmp(before.digest, after.digest, 16));	/* untouched */

	/* an incremental on top of a, written over a: never, even forced */
	forced.dirty = bm;
	memcpy(forced.parent_uuid, full.image_uuid, 16);
	memcpy(forced.parent_digest, full.digest, 16);
	CHECK_EQ(snap_save_paused(vm, a, &forced, &res, err, sizeof(err)), -EEXIST);
	CHECK_MSG(strstr(err, "holds the parent of this incremental"), "error: %s", err);

	CHECK_EQ(snap_save_paused(vm, test_tmpdir(), NULL, &res, err, sizeof(err)), -EISDIR);
	CHECK_MSG(strstr(err, "is a directory"), "error: %s", err);

	/* b is nobody's parent: replaced freely; a, forced, too */
	CHECK_MSG(snap_save_paused(vm, b, NULL, &res, err, sizeof(err)) == 0, "%s", err);
	CHECK_MSG(snap_save_paused(vm, a, &(struct snap_save_opts){ .force = true }, &res, err,
				   sizeof(err)) == 0, "%s", err);
	CHECK_EQ(snap_inspect(a, NULL, 0, &after, err, sizeof(err)), 0);
	CHECK(memcmp(before.digest, after.digest, 16));
	vm_destroy(vm);
	for (unsigned r = 0; r < VM_MAX_REGIONS; r++)
		free(bm[r]);
}

TEST_T(merge_equals_the_chain, 120)
{
	struct chain c;
	struct snap_result res;
	struct snap_inspect in;
	struct vm_verify_report rep;
	char err[512], merged[4200];
	struct vm *a, *b;

	make_chain(&c);
	snprintf(merged, sizeof(merged), "%s/merged.ckpt", test_tmpdir());
	CHECK_MSG(snap_merge(c.path[5], merged, NULL, 0, &res, err, sizeof(err)) == 0, "%s", err);
	CHECK_EQ(snap_inspect(merged, NULL, 0, &in, err, sizeof(err)), 0);
	CHECK(!in.has_parent);

	a = restore(merged, err, sizeof(err));
	CHECK_MSG(a, "merged: %s", err);
	b = restore(c.path[5], err, sizeof(err));
	CHECK_MSG(b, "chain: %s", err);
	CHECK_EQ(a->nr_regions, b->nr_regions);
	for (unsigned r = 0; r < a->nr_regions; r++)
		CHECK_MSG(!memcmp(a->regions[r].host, b->regions[r].host, a->regions[r].size),
			  "region %u differs between the merged file and the chain", r);
	CHECK_EQ(tg_status(a, 0)->counter, c.counters[5][0]);
	CHECK_MSG(vm_memtouch_verify(a, NULL, &rep) == 0, "%s", rep.msg);
	vm_destroy(a);
	vm_destroy(b);

	/* the merged file stands alone */
	for (int i = 0; i < 5; i++)
		CHECK(unlink(c.path[i]) == 0);
	a = restore(merged, err, sizeof(err));
	CHECK_MSG(a, "merged, alone: %s", err);
	vm_destroy(a);
}

TEST_T(lazy_restore_runs_first_and_loads_memory_behind, 120)
{
	struct chain c;
	struct snap_restore_opts o = { 0 };
	struct vm_verify_report rep;
	struct snap_lazy *lazy;
	uint64_t served = 0, prefetched = 0;
	char err[512];
	struct vm *vm;

	make_chain(&c);
	vm = snap_restore_lazy(c.path[5], &o, &lazy, err, sizeof(err));
	CHECK_MSG(vm, "lazy restore: %s", err);
	CHECK_EQ(tg_status(vm, 0)->counter, c.counters[5][0]);	/* the status page faults in */
	CHECK_EQ(vm_resume(vm), 0);		/* runs before its memory is loaded */
	CHECK_EQ(snap_lazy_wait(lazy, &served, &prefetched), 0);
	CHECK_MSG(prefetched > 1000, "only %llu pages prefetched", (unsigned long long)prefetched);
	tg_sleep_ms(100);
	CHECK_EQ(vm_pause(vm), 0);
	CHECK(tg_status(vm, 0)->counter > c.counters[5][0]);
	CHECK_MSG(vm_memtouch_verify(vm, NULL, &rep) == 0, "verify: %s", rep.msg);
	snap_lazy_free(lazy);
	vm_destroy(vm);
}

/* A live checkpoint: the guest dirties memory through the rounds, stops
 * only while the last pages and its state are copied out, and runs on
 * while they are written. The file holds the guest as it was in that
 * pause, intact, whatever it wrote afterwards. */
TEST_T(live_checkpoint_holds_the_paused_moment, 120)
{
	struct vm *vm = tg_boot(&(struct tg_opts){ .mem = 128 << 20, .vcpus = 2,
						   .working_set = 32 << 20, .dirty_rate = 40 << 20 });
	uint64_t *bm[VM_MAX_REGIONS] = { 0 };
	struct snap_save_opts o = { .live = true };
	struct vm_verify_report rep;
	struct snap_inspect in;
	struct snap_result res;
	uint64_t before[2], after[2];
	char path[4200], err[512];
	struct vm *r;

	for (unsigned i = 0; i < vm->nr_regions; i++)
		bm[i] = calloc(1, vm_bitmap_bytes(&vm->regions[i]));
	CHECK_EQ(vm->ops->dirty_start(vm), 0);
	CHECK_EQ(vm_start(vm), 0);
	tg_sleep_ms(400);
	snprintf(path, sizeof(path), "%s/live.ckpt", test_tmpdir());
	take_dirty(vm, bm);
	before[0] = tg_status(vm, 0)->counter;
	before[1] = tg_status(vm, 1)->counter;
	CHECK_MSG(snap_save_paused(vm, path, &o, &res, err, sizeof(err)) == 0, "%s", err);
	after[0] = tg_status(vm, 0)->counter;
	after[1] = tg_status(vm, 1)->counter;
	CHECK_MSG(res.rounds >= 2, "%u rounds", res.rounds);
	CHECK_MSG(res.pause_ms > 0 && res.pause_ms < res.seconds * 1e3, "paused %.3f ms of %.3f s",
		  res.pause_ms, res.seconds);
	/* it runs on after the checkpoint */
	tg_sleep_ms(100);
	CHECK(tg_status(vm, 0)->counter > after[0]);
	vm_destroy(vm);

	CHECK_MSG(snap_inspect(path, NULL, 0, &in, err, sizeof(err)) == 0, "inspect: %s", err);
	CHECK(in.indexed);
	CHECK_EQ(in.rounds, res.rounds);
	r = restore(path, err, sizeof(err));
	CHECK_MSG(r, "restore: %s", err);
	for (unsigned i = 0; i < 2; i++)
		CHECK_MSG(tg_status(r, i)->counter >= before[i] && tg_status(r, i)->counter <= after[i],
			  "vCPU %u restored at %llu, the source was at %llu..%llu", i,
			  (unsigned long long)tg_status(r, i)->counter, (unsigned long long)before[i],
			  (unsigned long long)after[i]);
	CHECK_MSG(vm_memtouch_verify(r, NULL, &rep) == 0, "verify: %s", rep.msg);
	{
		/* its registers and its memory from the same moment: the guest's
		 * own check of a whole pass, run after the restore, finds none
		 * stale (a pass of a 16 MiB slice at 20 MiB/s: under a second) */
		uint64_t passes = tg_status(r, 0)->passes;
		double t0 = tg_now();

		CHECK_EQ(vm_resume(r), 0);
		while (tg_status(r, 0)->passes < passes + 2 && tg_now() - t0 < 10)
			tg_sleep_ms(50);
		CHECK_EQ(vm_pause(r), 0);
		CHECK_MSG(tg_status(r, 0)->passes >= passes + 2, "%llu passes in 10 s",
			  (unsigned long long)(tg_status(r, 0)->passes - passes));
	}
	for (unsigned i = 0; i < 2; i++)
		CHECK_EQ(tg_status(r, i)->check_errors, 0);
	CHECK_MSG(vm_memtouch_verify(r, NULL, &rep) == 0, "verify after running: %s", rep.msg);
	vm_destroy(r);
	for (unsigned i = 0; i < VM_MAX_REGIONS; i++)
		free(bm[i]);
}

/* Lazy restore reads each INDEX record straight into its table: a damaged
 * one (its checksum no longer matches; the file's digest covers only the
 * record headers) is refused before the guest runs. Checkpoints keep their
 * PAGES records small, since a first touch reads and checks a whole one. */
TEST_T(lazy_restore_refuses_a_damaged_index, 120)
{
	struct vm *vm = tg_boot(&(struct tg_opts){ .mem = 128 << 20, .vcpus = 1,
						   .working_set = 16 << 20, .stop_after = 4096 });
	struct snap_restore_opts lo = { 0 };
	struct ckpt_commit_rec commit;
	struct snap_inspect in;
	struct snap_result res;
	struct snap_lazy *lazy;
	char path[4200], err[512];
	uint64_t at;
	uint8_t b;
	int fd;

	CHECK_EQ(vm_start(vm), 0);
	while (tg_total(vm) < 4096)
		tg_sleep_ms(10);
	CHECK_EQ(vm_pause(vm), 0);
	snprintf(path, sizeof(path), "%s/index.ckpt", test_tmpdir());
	CHECK_MSG(snap_save_paused(vm, path, NULL, &res, err, sizeof(err)) == 0, "%s", err);
	vm_destroy(vm);
	CHECK_MSG(snap_inspect(path, NULL, 0, &in, err, sizeof(err)) == 0, "%s", err);
	CHECK_MSG(in.records >= in.pages[CKPT_ENC_RAW] / 256, "%llu records for %llu pages",
		  (unsigned long long)in.records, (unsigned long long)in.pages[CKPT_ENC_RAW]);

	fd = open(path, O_RDWR);
	CHECK(fd >= 0);
	at = (uint64_t)lseek(fd, 0, SEEK_END) - sizeof(commit);
	CHECK(pread(fd, &commit, sizeof(commit), (off_t)at) == sizeof(commit));
	/* an entry of the first INDEX record, past its record header and head */
	at = le64toh(commit.index_offset) + sizeof(struct ckpt_rec_hdr) +
	     sizeof(struct ckpt_index_rec) + 8 * 100;
	CHECK(pread(fd, &b, 1, (off_t)at) == 1);
	b ^= 0x10;
	CHECK(pwrite(fd, &b, 1, (off_t)at) == 1);
	close(fd);

	CHECK(!snap_restore_lazy(path, &lo, &lazy, err, sizeof(err)));
	CHECK_MSG(strstr(err, "bad index record"), "lazy: %s", err);
	CHECK(lazy == NULL);
}
