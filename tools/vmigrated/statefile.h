/*
 * Small files of the service's state directory (handover decisions, the
 * finished jobs), replaced atomically: a crash leaves the old content or
 * the new, never a torn file or none.
 */
#ifndef STATEFILE_H
#define STATEFILE_H

#include <stddef.h>

/* Write data to path through path.tmp: fsync, rename, fsync of dir (the
 * directory path is in). 0 or a negative errno; nothing is logged. */
int statefile_replace(const char *dir, const char *path, const char *data, size_t len);

#endif
