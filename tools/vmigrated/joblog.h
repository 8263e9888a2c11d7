/*
 * Finished migration jobs, kept after their guest process has gone (a
 * source's process ends once the guest moved): the last JOBLOG_KEEP of a
 * host, each with its final figures, in guests/completed-jobs.json. Guest
 * processes add to it when a job ends; the service reads it for `vmigrate
 * jobs --completed`.
 */
#ifndef JOBLOG_H
#define JOBLOG_H

#include <json-c/json.h>
#include <stddef.h>

#define JOBLOG_KEEP	20

/* Add rec (not taken) as the newest record in dir, dropping the oldest
 * beyond JOBLOG_KEEP; the file is replaced atomically, under a lock
 * against other processes adding at the same time. 0 or a negative errno
 * (logged). */
int joblog_add(const char *dir, struct json_object *rec);

/* The records kept in dir, oldest first: a new array, empty when there are
 * none; NULL with err when they cannot be read. A file that does not
 * parse is set aside as .bad (logged), never overwritten. */
struct json_object *joblog_list(const char *dir, char *err, size_t errlen);

#endif
