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
	uint64_t pages[CKPT_ENC_COUNT];	/* by CKPT_ENC_* */
	double seconds;
	uint8_t image_uuid[16];		/* what an incremental child names as parent */
	double pause_ms;		/* live: how long the guest stood still */
	unsigned rounds;
	uint8_t digest[16];
};

/* An incremental checkpoint: the pages set in dirty (one bitmap a region),
 * on top of the parent image named here. */
struct snap_save_opts {
	uint64_t *const *dirty;		/* NULL: a full checkpoint */
	uint8_t parent_uuid[16];
	uint8_t parent_digest[16];
	/* With a key, the file carries an HMAC-SHA-256 (snap_key_load). */
	const uint8_t *mac_key;
	size_t mac_key_len;
	/* Live: the guest runs while pre-copy rounds go into the file; it is
	 * paused only while the last dirty pages and the state are copied
	 * into memory, and runs again before they, the index and the commit
	 * are written and the file synced. The caller turns dirty tracking on and
	 * re-arms it (sync and clear) just before; for an incremental, that
	 * sync is `dirty`. */
	bool live;
	/* Replace a checkpoint that others name as parent (snap_check_target). */
	bool force;
	/* What compresses the pages (0: LZ4). zstd makes a file of format 1.2,
	 * which readers of earlier versions refuse. */
	enum ckpt_compressor compress;
};

/*
 * May a new checkpoint be written at path? Restore finds an incremental's
 * parent in the incremental's own directory by image uuid, so the file at
 * path is the parent of another checkpoint when a file of that directory
 * names its image as parent: replacing it would leave that child (and all
 * built on it) unrestorable. Refused unless force. Refused even with force:
 * path holding the new checkpoint's own parent (parent_uuid; NULL for a
 * full one), since the new file would be born without it; and path being a
 * directory. Anything else (no file, not a checkpoint, a checkpoint nobody
 * builds on) may be replaced. 0, or a negative errno with err (-EISDIR,
 * -EEXIST for a parent). snap_save_paused() checks this itself; a caller
 * that consumes state to write (dirty bitmaps) checks first too.
 */
int snap_check_target(const char *path, const uint8_t *parent_uuid, bool force,
		      char *err, size_t errlen);

/*
 * The file at path, written atomically: fill writes it through fd (a file
 * with no name yet, or a temporary one, in path's directory; 0 or -errno
 * with err), then it is synced, named path and its directory synced. On
 * any failure nothing is left under path or beside it, and a file that
 * was at path is untouched. 0, or a negative errno with err.
 */
int snap_commit_file(const char *path, int (*fill)(void *opaque, int fd, char *err, size_t errlen),
		     void *opaque, char *err, size_t errlen);

/* Write a checkpoint of a paused guest, or of a running one with live, to
 * path (opts NULL: full, paused). */
int snap_save_paused(struct vm *vm, const char *path, const struct snap_save_opts *opts,
		     struct snap_result *res, char *err, size_t errlen);

struct snap_restore_opts {
	unsigned nr_vcpus;		/* 0: as in the image; else must match */
	enum vm_dirty_mode dirty_mode;
	struct vm_events events;
	/* With a key, every file of the chain must carry a matching MAC. */
	const uint8_t *mac_key;
	size_t mac_key_len;
};

/* A key for checkpoint MACs: 16 to 64 bytes in a file no one else may
 * read. Returns its length, or a negative errno with err. */
int snap_key_load(const char *path, uint8_t key[64], char *err, size_t errlen);

struct snap_lazy;

/*
 * Lazy restore: build the guest from the state alone and let it run at
 * once; pages come in on first touch (userfaultfd) and from a background
 * prefetch. snap_lazy_wait() returns once every page is in (with how many
 * faults were served and pages prefetched); snap_lazy_free() after that,
 * before the guest is destroyed.
 */
struct vm *snap_restore_lazy(const char *path, const struct snap_restore_opts *opts,
			     struct snap_lazy **lazy, char *err, size_t errlen);
int snap_lazy_wait(struct snap_lazy *l, uint64_t *served, uint64_t *prefetched);
/* Without waiting: 1 every page is in, 0 still loading, -EBADMSG a page did
 * not read back intact (the vCPU that touched it waits for ever; pause the
 * guest at once). The wait above returns at once on such a failure too. */
int snap_lazy_poll(const struct snap_lazy *l);
/* Which page failed, or NULL. */
const char *snap_lazy_error(const struct snap_lazy *l);
/* After a failed wait (a page could not be read back): stop serving pages,
 * then destroy the guest, then snap_lazy_free(). The guest never sees a
 * page that was not read back intact. */
void snap_lazy_abort(struct snap_lazy *l);
void snap_lazy_free(struct snap_lazy *l);
/* Internal to snapshot/: lazy loading from files (their indexes read, no
 * guest needed yet, so that it can be built meanwhile), then started on the
 * guest built from them. snap_lazy_free() either way. */
int snap_lazy_open(char *const *files, unsigned nfiles, const struct ckpt_image_info *info,
		   struct snap_lazy **out, char *err, size_t errlen);
int snap_lazy_start(struct snap_lazy *l, struct vm *vm, char *err, size_t errlen);

/* Build a guest from a checkpoint file, following the parent chain of an
 * incremental one (parents are found in the same directory by image uuid
 * and must carry the digest their child names). It is left paused
 * (vm_resume runs it). NULL with the reason in err on any bad input. */
struct vm *snap_restore(const char *path, const struct snap_restore_opts *opts,
			char *err, size_t errlen);

/* Flatten a checkpoint and its parent chain into one full checkpoint at
 * out (the guest is rebuilt in memory, never run; a libvirt domain's
 * chain as its image, vm/libvirt/qemu_ckpt.h). */
int snap_merge(const char *path, const char *out, const uint8_t *mac_key, size_t mac_key_len,
	       struct snap_result *res, char *err, size_t errlen);

/* The head of a checkpoint file, read cheaply: its image and parent. */
int snap_read_head(const char *path, uint8_t image_uuid[16], bool *incremental,
		   uint8_t parent_uuid[16], char *err, size_t errlen);

#define SNAP_MAX_CHAIN	64
#define SNAP_PATH_MAX	4096

/* The files of path's chain as restore finds them, newest first: path,
 * its parent, ... down to a full checkpoint (at most max). Only the heads
 * are read: what each file holds is for snap_inspect(). 0, or a negative
 * errno with err (a parent not in the directory, -ELOOP: longer than max);
 * either way the *n files found are in files. */
int snap_chain(const char *path, char (*files)[SNAP_PATH_MAX], unsigned max, unsigned *n,
	       char *err, size_t errlen);

/* What a checkpoint file holds, read and checked from end to end. */
struct snap_inspect {
	struct ckpt_image_info info;
	bool has_parent;
	uint8_t parent_uuid[16], parent_digest[16];
	uint8_t digest[16];
	uint64_t file_bytes;
	uint64_t records;
	uint64_t pages[CKPT_ENC_COUNT];	/* entries by CKPT_ENC_*, zero runs by pages */
	uint64_t page_bytes;		/* encoded page data */
	unsigned rounds;
	unsigned vcpus;			/* from the VM's configuration record */
	uint64_t mem_bytes;
	unsigned state_records;
	bool indexed;
	bool domain;			/* a libvirt domain's (vm/libvirt/qemu_ckpt.h) */
	uint64_t device_bytes;		/* a domain's: QEMU's device state */
};

/*
 * Read the whole file: every checksum, the record grammar, the index, the
 * digest (and the MAC, given a key), and that the VM's configuration and
 * every vCPU's state are there (a domain's: its config, XML and device
 * state, each of them as the domain's layout allows). 0, or a negative errno with err naming
 * what is wrong.
 */
int snap_inspect(const char *path, const uint8_t *mac_key, size_t mac_key_len,
		 struct snap_inspect *out, char *err, size_t errlen);

/* ---- retention (retention.c) ------------------------------------------------- */

/* A backup directory holds a guest's checkpoints as NAME-STAMP.ckpt, the
 * stamp sorting by time (vmigrate backup names them so). */
struct snap_backup_file {
	char name[256];			/* in the directory */
	bool incremental;
	uint8_t uuid[16];		/* its image */
};

#define SNAP_BACKUP_MAX	4096

/* guest's checkpoints in dir, oldest first: at most max of them; a file
 * that does not read as a checkpoint is left out (never counted, never
 * removed). 0 or a negative errno. */
int snap_backup_list(const char *dir, const char *guest, struct snap_backup_file *f,
		     unsigned max, unsigned *n);
/* Remove guest's oldest whole chains in dir (a full checkpoint and the
 * incrementals on it) while at least keep checkpoints remain after them,
 * never the newest chain; *removed says how many files went. */
int snap_backup_prune(const char *dir, const char *guest, unsigned keep, unsigned *removed,
		      char *err, size_t errlen);

#endif
