/*
 * Retention of a backup directory (snapshot.h): the checkpoints of one
 * guest named NAME-STAMP.ckpt, whose names sort by time, and the pruning
 * of whole chains, oldest first, so that every file kept stays
 * restorable: a full checkpoint goes only with all the incrementals built
 * on it, never while one of them is kept.
 */
#include "snapshot.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int by_name(const void *a, const void *b)
{
	return strcmp(((const struct snap_backup_file *)a)->name,
		      ((const struct snap_backup_file *)b)->name);
}

int snap_backup_list(const char *dir, const char *guest, struct snap_backup_file *f,
		     unsigned max, unsigned *n)
{
	size_t plen = strlen(guest);
	DIR *d = opendir(dir);
	struct dirent *e;
	char err[256];

	*n = 0;
	if (!d)
		return -errno;
	while ((e = readdir(d)) && *n < max) {
		size_t len = strlen(e->d_name);
		char path[SNAP_PATH_MAX + 300];
		uint8_t parent[16];

		if (len <= plen + 6 || strncmp(e->d_name, guest, plen) || e->d_name[plen] != '-' ||
		    strcmp(e->d_name + len - 5, ".ckpt") || len >= sizeof(f->name))
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		if (snap_read_head(path, f[*n].uuid, &f[*n].incremental, parent, err, sizeof(err)))
			continue;	/* not ours or damaged: never counted, never removed */
		snprintf(f[*n].name, sizeof(f[*n].name), "%s", e->d_name);
		(*n)++;
	}
	closedir(d);
	qsort(f, *n, sizeof(*f), by_name);
	return 0;
}

int snap_backup_prune(const char *dir, const char *guest, unsigned keep, unsigned *removed,
		      char *err, size_t errlen)
{
	struct snap_backup_file *f = calloc(SNAP_BACKUP_MAX, sizeof(*f));
	unsigned n, start = 0;
	int ret;

	*removed = 0;
	if (!f) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	ret = snap_backup_list(dir, guest, f, SNAP_BACKUP_MAX, &n);
	if (ret) {
		snprintf(err, errlen, "%s: %s", dir, strerror(-ret));
		free(f);
		return ret;
	}
	while (start < n) {
		unsigned end = start + 1;

		while (end < n && f[end].incremental)
			end++;
		/* the chain [start, end) goes only if what follows still holds keep,
		 * and never the newest chain, the one the next run builds on */
		if (f[start].incremental || n - end < keep || end == n)
			break;
		for (unsigned i = start; i < end; i++) {
			char path[SNAP_PATH_MAX + 300];

			snprintf(path, sizeof(path), "%s/%s", dir, f[i].name);
			if (unlink(path) == 0)
				(*removed)++;
		}
		start = end;
	}
	free(f);
	return 0;
}
