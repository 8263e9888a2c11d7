/*
 * Checkpoint files of a guest: written atomically (temp file, fsync,
 * rename, fsync of the directory) and restored into a new guest that
 * continues where the checkpoint was taken.
 */
#ifndef SNAPSHOT_H
#define SNAPSHOT_H

#include <stdint.h>

#include "vm.h"

struct snap_result {
	uint64_t file_bytes;
	uint64_t pages[4];		/* by CKPT_ENC_* */
	double seconds;
	uint8_t digest[16];
};

/* Write a full checkpoint of a paused guest to path. */
int snap_save_paused(struct vm *vm, const char *path, struct snap_result *res,
		     char *err, size_t errlen);

struct snap_restore_opts {
	unsigned nr_vcpus;		/* 0: as in the image; else must match */
	enum vm_dirty_mode dirty_mode;
	struct vm_events events;
};

/* Build a guest from a checkpoint file; it is left paused (vm_resume runs
 * it). NULL with the reason in err on any bad input. */
struct vm *snap_restore(const char *path, const struct snap_restore_opts *opts,
			char *err, size_t errlen);

#endif
