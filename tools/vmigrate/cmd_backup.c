/*
 * vmigrate backup NAME --dir DIR --keep N [--full-every K]: one run of a
 * backup schedule. It takes an incremental checkpoint on top of the newest
 * one in DIR, or a full one every K runs (or when there is nothing to build
 * on); with it the service prunes the oldest chains while more than N
 * checkpoints remain, never a full one whose incrementals are kept, so
 * every kept file stays restorable (snap_backup_prune), and counts the run
 * and what it removed in its metrics from what it did itself. Files are
 * DIR/NAME-YYYYmmddTHHMMSS.mmmZ.ckpt; DIR is made (0700) when it is not
 * there.
 */
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

static struct json_object *snapshot_request(const char *guest, const char *path,
					    const struct snap_backup_file *base, const char *key_file,
					    unsigned keep, const char *compress)
{
	struct json_object *req = json_object_new_object();
	char err[700];
	struct json_object *rep;

	json_object_object_add(req, "cmd", json_object_new_string("snapshot"));
	json_object_object_add(req, "name", json_object_new_string(guest));
	json_object_object_add(req, "file", json_object_new_string(path));
	json_object_object_add(req, "incremental", json_object_new_boolean(base != NULL));
	/* a backup run's: the service prunes to keep once it is written */
	json_object_object_add(req, "backup_keep", json_object_new_int((int)keep));
	if (key_file)
		json_object_object_add(req, "key_file", json_object_new_string(key_file));
	if (compress)
		json_object_object_add(req, "compress", json_object_new_string(compress));
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
		{ "compress", required_argument, NULL, 'c' },
		{ 0 }
	};
	static struct snap_backup_file files[SNAP_BACKUP_MAX];
	const char *dir = NULL, *guest, *compress = NULL;
	enum ckpt_compressor compressor;
	char *key_file = NULL;
	uint64_t keep = 0, full_every = 7;
	unsigned n, since_full = 0;
	bool json = false, full;
	struct json_object *rep;
	char path[4600], stamp[64], abs[4096];
	struct timeval tv;
	struct tm tm;
	int c;

	optind = 1;
	while ((c = getopt_long(argc, argv, ":", longopts, NULL)) != -1) {
		const char *bad = NULL, *choices = "a whole number, 1 or more";

		switch (c) {
		case 'd': dir = optarg; break;
		case 'c':
			compress = optarg;
			if (ckpt_compressor_parse(optarg, &compressor))
				bad = "--compress", choices = CKPT_COMPRESSOR_CHOICES;
			break;
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
			return cli_bad_value("backup", bad, optarg, choices);
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
	if (!realpath(dir, abs) || (c = snap_backup_list(abs, guest, files, SNAP_BACKUP_MAX, &n))) {
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
	rep = snapshot_request(guest, path, full ? NULL : &files[n - 1], key_file, (unsigned)keep,
			       compress);
	if (!full && !ipc_bool(rep, "ok", false) && ipc_bool(rep, "retry_full", false)) {
		/* the guest's last checkpoint is not the newest here: start anew */
		json_object_put(rep);
		full = true;
		rep = snapshot_request(guest, path, NULL, key_file, (unsigned)keep, compress);
	}
	free(key_file);
	if (!ipc_bool(rep, "ok", false))
		return cli_fail_reply(1, rep);

	if (json) {
		json_object_object_add(rep, "full", json_object_new_boolean(full));
		svc_print_json(rep);	/* "removed": what the service pruned */
	} else {
		printf("%s: %s checkpoint %s (%.1f MiB), %u old file(s) removed\n", guest,
		       full ? "full" : "incremental", ipc_str(rep, "file", "?"),
		       ipc_int(rep, "file_bytes", 0) / 1048576.0, (unsigned)ipc_int(rep, "removed", 0));
	}
	json_object_put(rep);
	return 0;
}
