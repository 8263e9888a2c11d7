/*
 * The finished jobs of a host (joblog.h): one JSON file in the guests
 * directory, {"jobs":[oldest, ..., newest]}, replaced atomically; writers
 * (guest processes ending a job) and readers (the service) take an
 * exclusive flock on a lock file beside it, so two jobs ending together
 * both stay.
 */
#include "joblog.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "statefile.h"

#define LOG_NAME	"completed-jobs.json"
#define LOCK_NAME	"completed-jobs.lck"	/* not .lock: those are guests' names */
#define MAX_BYTES	(1 << 20)		/* JOBLOG_KEEP records are a few KiB */

static int lock_dir(const char *dir)
{
	char path[600];
	int fd;

	snprintf(path, sizeof(path), "%s/%s", dir, LOCK_NAME);
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		return -errno;
	if (flock(fd, LOCK_EX) < 0) {
		int e = -errno;

		close(fd);
		return e;
	}
	return fd;
}

/* Set a file that is not ours to read aside, keeping it for a person. */
static void set_aside(const char *path, const char *why)
{
	char bad[620];

	snprintf(bad, sizeof(bad), "%s.bad", path);
	if (rename(path, bad) == 0)
		log_write(LOG_WARNING, NULL, NULL, "%s %s: moved to %s; finished jobs start afresh",
			path, why, bad);
	else
		log_write(LOG_WARNING, NULL, NULL, "%s %s, and cannot be moved aside: %s", path, why,
			strerror(errno));
}

/* The records under the lock: an array (empty when the file is missing or
 * was set aside), or NULL with errno when it cannot be read. */
static struct json_object *read_records(const char *path)
{
	struct json_object *o = NULL, *jobs = NULL;
	struct stat st;
	char *buf = NULL;
	ssize_t n = -1;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW), e;

	if (fd < 0)
		return errno == ENOENT ? json_object_new_array() : NULL;
	if (fstat(fd, &st) < 0) {
		e = errno;
		close(fd);
		errno = e;
		return NULL;
	}
	if (st.st_size <= MAX_BYTES && (buf = malloc((size_t)st.st_size + 1)))
		n = read(fd, buf, (size_t)st.st_size);
	e = errno;
	close(fd);
	if (st.st_size <= MAX_BYTES && n != st.st_size) {
		free(buf);
		errno = n < 0 ? e : EIO;	/* short read or no memory: try again later */
		return NULL;
	}
	if (buf) {
		buf[n] = 0;
		o = json_tokener_parse(buf);
		free(buf);
	}
	if (o && json_object_object_get_ex(o, "jobs", &jobs) &&
	    json_object_is_type(jobs, json_type_array)) {
		json_object_get(jobs);
		json_object_put(o);
		return jobs;
	}
	json_object_put(o);
	set_aside(path, st.st_size > MAX_BYTES ? "is too large" : "does not parse");
	return json_object_new_array();
}

int joblog_add(const char *dir, struct json_object *rec)
{
	struct json_object *jobs, *keep, *o;
	char path[600];
	const char *s;
	size_t n, from;
	int lock = lock_dir(dir), ret;

	if (lock < 0) {
		log_write(LOG_ERR, NULL, NULL, "%s/%s: %s", dir, LOCK_NAME, strerror(-lock));
		return lock;
	}
	snprintf(path, sizeof(path), "%s/%s", dir, LOG_NAME);
	jobs = read_records(path);
	if (!jobs) {
		ret = -errno;
		log_write(LOG_ERR, NULL, NULL, "%s: %s; job not recorded", path, strerror(errno));
		close(lock);
		return ret;
	}
	json_object_array_add(jobs, json_object_get(rec));
	n = json_object_array_length(jobs);
	from = n > JOBLOG_KEEP ? n - JOBLOG_KEEP : 0;
	keep = json_object_new_array();
	for (size_t i = from; i < n; i++)
		json_object_array_add(keep, json_object_get(json_object_array_get_idx(jobs, i)));
	json_object_put(jobs);
	o = json_object_new_object();
	json_object_object_add(o, "jobs", keep);
	s = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
	ret = statefile_replace(dir, path, s, strlen(s));
	if (ret)
		log_write(LOG_ERR, NULL, NULL, "%s: %s; job not recorded", path, strerror(-ret));
	json_object_put(o);
	close(lock);
	return ret;
}

struct json_object *joblog_list(const char *dir, char *err, size_t errlen)
{
	struct json_object *jobs;
	char path[600];
	int lock = lock_dir(dir);

	snprintf(path, sizeof(path), "%s/%s", dir, LOG_NAME);
	if (lock < 0) {
		snprintf(err, errlen, "%s/%s: %s", dir, LOCK_NAME, strerror(-lock));
		return NULL;
	}
	jobs = read_records(path);
	if (!jobs)
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
	close(lock);
	return jobs;
}
