/*
 * vmigrate backup NAME --dir DIR --keep N [--full-every K]: one run of a
 * backup schedule. It takes an incremental checkpoint on top of the newest
 * one in DIR, or a full one every K runs (or when there is nothing to build
 * on), then prunes the oldest chains while more than N checkpoints remain,
 * never a full one whose incrementals are kept, so every kept file stays
 * restorable. Files are DIR/NAME-YYYYmmddTHHMMSS.mmmZ.ckpt; DIR is made
 * (0700) when it is not there.
 */
#include <dirent.h>
#include <errno.h>
#include <stdbool.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "help.h"
#include "ipc.h"
#include "snapshot.h"
#include "units.h"

#define MAX_FILES	4096

struct file {
	char name[256];
	bool incremental;
	uint8_t uuid[16];
};

static int by_name(const void *a, const void *b)
{
	return strcmp(((const struct file *)a)->name, ((const struct file *)b)->name);
}

/* The guest's checkpoints in dir, oldest first (names sort by time). */
static int list_files(const char *dir, const char *guest, struct file *f, unsigned *n)
{
	size_t plen = strlen(guest);
	DIR *d = opendir(dir);
	struct dirent *e;
	char err[256];

	*n = 0;
	if (!d)
		return -errno;
	while ((e = readdir(d)) && *n < MAX_FILES) {
		size_t len = strlen(e->d_name);
		char path[4600];
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

/* DIR and any missing folder above it, private (0700) like the files. */
static int make_dirs(const char *dir)
{
	char path[4096];
	size_t len = strlen(dir);

	if (len == 0 || len >= sizeof(path))
		return -ENAMETOOLONG;
	memcpy(path, dir, len + 1);
	for (size_t i = 1; i <= len; i++) {
		struct stat st;

		if (path[i] != '/' && path[i] != 0)
			continue;
		path[i] = 0;
		if (mkdir(path, 0700) < 0 && errno != EEXIST)
			return -errno;
		if (stat(path, &st) < 0)
			return -errno;
		if (!S_ISDIR(st.st_mode))
			return -ENOTDIR;
		path[i] = i < len ? '/' : 0;
	}
	return 0;
}

/* The run's outcome for the service's counters (vmigrate_backups_total):
 * only this command knows whether a refused incremental was retried as a
 * full one, so it tells. Nothing to do if the service is gone. */
static void report_backup(const char *guest, bool ok, bool full, unsigned removed)
{
	struct json_object *req = svc_req("backup-result"), *rep;
	const char *control = getenv("VMIGRATE_CONTROL");
	char err[256];

	json_object_object_add(req, "name", json_object_new_string(guest));
	json_object_object_add(req, "ok", json_object_new_boolean(ok));
	json_object_object_add(req, "full", json_object_new_boolean(full));
	json_object_object_add(req, "removed", json_object_new_int((int)removed));
	rep = ipc_call(control && *control ? control : "/run/vmigrate/vmigrated.sock", req, -1,
		       10000, err, sizeof(err));
	json_object_put(req);
	json_object_put(rep);
}

static struct json_object *snapshot_request(const char *guest, const char *path,
					    const struct file *base, const char *key_file)
{
	struct json_object *req = json_object_new_object();
	char err[700];
	struct json_object *rep;

	json_object_object_add(req, "cmd", json_object_new_string("snapshot"));
	json_object_object_add(req, "name", json_object_new_string(guest));
	json_object_object_add(req, "file", json_object_new_string(path));
	json_object_object_add(req, "incremental", json_object_new_boolean(base != NULL));
	if (key_file)
		json_object_object_add(req, "key_file", json_object_new_string(key_file));
	if (base) {
		char hex[33];

		for (int i = 0; i < 16; i++)
			sprintf(hex + 2 * i, "%02x", base->uuid[i]);
		json_object_object_add(req, "expect_parent", json_object_new_string(hex));
	}
	rep = ipc_call(svc_control_path(), req, -1, 600000, err, sizeof(err));
	json_object_put(req);
	if (!rep) {
		char why[900];
		const char *code = svc_unreachable(svc_control_path(), err, why, sizeof(why));

		return ipc_error(code, "%s", why);
	}
	return rep;
}

int cmd_backup(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "dir", required_argument, NULL, 'd' },
		{ "keep", required_argument, NULL, 'k' },
		{ "full-every", required_argument, NULL, 'f' },
		{ "json", no_argument, NULL, 'j' },
		{ "key", required_argument, NULL, 'K' },
		{ 0 }
	};
	static struct file files[MAX_FILES];
	const char *dir = NULL, *guest;
	char *key_file = NULL;
	uint64_t keep = 0, full_every = 7;
	unsigned n, since_full = 0, removed = 0;
	bool json = false, full;
	struct json_object *rep;
	char path[4600], stamp[64], abs[4096];
	struct timeval tv;
	struct tm tm;
	int c;

	optind = 1;
	while ((c = getopt_long(argc, argv, ":", longopts, NULL)) != -1) {
		const char *bad = NULL;

		switch (c) {
		case 'd': dir = optarg; break;
		case 'k': if (parse_uint(optarg, &keep) || keep < 1) bad = "--keep"; break;
		case 'f':
			if (parse_uint(optarg, &full_every) || full_every < 1)
				bad = "--full-every";
			break;
		case 'j': json = true; break;
		case 'K':
			free(key_file);
			key_file = realpath(optarg, NULL);
			if (!key_file)
				return cli_fail(1, "backup", ipc_errno_code(errno), "key %s: %s",
						optarg, strerror(errno));
			break;
		default:
			free(key_file);
			return cli_getopt_error("backup", c, argv);
		}
		if (bad) {
			free(key_file);
			return cli_bad_value("backup", bad, optarg, "a whole number, 1 or more");
		}
	}
	if (optind != argc - 1 || !dir || !keep) {
		free(key_file);
		return cli_usage_error("backup", optind == argc - 1 ? "--dir and --keep are required" :
				       "give one guest NAME");
	}
	guest = argv[optind];
	if ((c = make_dirs(dir)) < 0) {
		free(key_file);
		return cli_fail(1, "backup", ipc_errno_code(c), "creating %s: %s", dir, strerror(-c));
	}
	if (!realpath(dir, abs) || (c = list_files(abs, guest, files, &n))) {
		c = c ? c : -errno;
		free(key_file);
		return cli_fail(1, "backup", ipc_errno_code(c), "%s: %s", dir, strerror(-c));
	}
	for (unsigned i = n; i-- > 0 && files[i].incremental;)
		since_full++;
	full = n == 0 || since_full + 1 >= full_every;

	gettimeofday(&tv, NULL);
	strftime(stamp, sizeof(stamp), "%Y%m%dT%H%M%S", gmtime_r(&tv.tv_sec, &tm));
	snprintf(path, sizeof(path), "%s/%s-%s.%03ldZ.ckpt", abs, guest, stamp,
		 (long)(tv.tv_usec / 1000));
	rep = snapshot_request(guest, path, full ? NULL : &files[n - 1], key_file);
	if (!full && !ipc_bool(rep, "ok", false) && strstr(ipc_str(rep, "error", ""), "full one")) {
		/* the guest's last checkpoint is not the newest here: start anew */
		json_object_put(rep);
		full = true;
		rep = snapshot_request(guest, path, NULL, key_file);
	}
	if (!ipc_bool(rep, "ok", false)) {
		report_backup(guest, false, full, 0);
		free(key_file);
		return cli_fail_reply(1, rep);
	}

	/* Prune whole chains, oldest first, while the rest still holds keep. */
	if (list_files(abs, guest, files, &n) == 0) {
		unsigned start = 0;

		while (start < n) {
			unsigned end = start + 1;

			while (end < n && files[end].incremental)
				end++;
			if (files[start].incremental || n - end < keep || end == n)
				break;
			for (unsigned i = start; i < end; i++) {
				snprintf(path, sizeof(path), "%s/%s", abs, files[i].name);
				if (unlink(path) == 0)
					removed++;
			}
			start = end;
		}
	}
	report_backup(guest, true, full, removed);
	if (json) {
		json_object_object_add(rep, "full", json_object_new_boolean(full));
		json_object_object_add(rep, "removed", json_object_new_int((int)removed));
		svc_print_json(rep);
	} else {
		printf("%s: %s checkpoint %s (%.1f MiB), %u old file(s) removed\n", guest,
		       full ? "full" : "incremental", ipc_str(rep, "file", "?"),
		       ipc_int(rep, "file_bytes", 0) / 1048576.0, removed);
	}
	json_object_put(rep);
	free(key_file);
	return 0;
}
