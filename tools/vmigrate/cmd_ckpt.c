/*
 * vmigrate ckpt info FILE [--json] and vmigrate ckpt verify FILE: what a
 * checkpoint file holds, and whether every checksum, the record grammar,
 * the index, the digest and the guest's state are all in order, in FILE
 * and in every parent a restore of it would read (--file-only: FILE alone).
 * vmigrate ckpt merge FILE OUT: one full checkpoint from a chain.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <json-c/json.h>

#include "cli.h"
#include "help.h"
#include "ipc.h"
#include "snapshot.h"

static void hex(const uint8_t *b, size_t n, char *out)
{
	for (size_t i = 0; i < n; i++)
		sprintf(out + 2 * i, "%02x", b[i]);
}

/* The file restore would take as path's parent; false with why not. */
static bool parent_file(const char *path, char *out, size_t len)
{
	static char files[2][SNAP_PATH_MAX];
	unsigned n;

	if (snap_chain(path, files, 2, &n, out, len) != 0 && n < 2)
		return false;
	snprintf(out, len, "%s", files[1]);
	return true;
}

static void print_json(const char *path, const struct snap_inspect *s)
{
	struct json_object *o = json_object_new_object(), *regions = json_object_new_array();
	char buf[40];

	json_object_object_add(o, "file", json_object_new_string(path));
	json_object_object_add(o, "guest", json_object_new_string(s->info.guest_name));
	hex(s->info.guest_uuid, 16, buf);
	json_object_object_add(o, "guest_uuid", json_object_new_string(buf));
	hex(s->info.image_uuid, 16, buf);
	json_object_object_add(o, "image_uuid", json_object_new_string(buf));
	hex(s->digest, 16, buf);
	json_object_object_add(o, "digest", json_object_new_string(buf));
	snprintf(buf, sizeof(buf), "%u.%u", s->info.major, s->info.minor);
	json_object_object_add(o, "format", json_object_new_string(buf));
	json_object_object_add(o, "incremental", json_object_new_boolean(s->has_parent));
	if (s->has_parent) {
		char parent[SNAP_PATH_MAX + 600];
		bool found;

		hex(s->parent_uuid, 16, buf);
		json_object_object_add(o, "parent_uuid", json_object_new_string(buf));
		hex(s->parent_digest, 16, buf);
		json_object_object_add(o, "parent_digest", json_object_new_string(buf));
		found = parent_file(path, parent, sizeof(parent));
		json_object_object_add(o, found ? "parent_file" : "parent_error",
				       json_object_new_string(parent));
	}
	json_object_object_add(o, "created_ns", json_object_new_int64((int64_t)s->info.created_ns));
	json_object_object_add(o, "vcpus", json_object_new_int((int)s->vcpus));
	json_object_object_add(o, "mem_bytes", json_object_new_int64((int64_t)s->mem_bytes));
	for (unsigned i = 0; i < s->info.region_count; i++) {
		struct json_object *r = json_object_new_object();

		json_object_object_add(r, "id", json_object_new_int((int)s->info.regions[i].id));
		json_object_object_add(r, "gpa", json_object_new_int64((int64_t)s->info.regions[i].gpa));
		json_object_object_add(r, "size", json_object_new_int64((int64_t)s->info.regions[i].size));
		json_object_array_add(regions, r);
	}
	json_object_object_add(o, "regions", regions);
	json_object_object_add(o, "file_bytes", json_object_new_int64((int64_t)s->file_bytes));
	json_object_object_add(o, "records", json_object_new_int64((int64_t)s->records));
	json_object_object_add(o, "zero_pages", json_object_new_int64((int64_t)s->pages[CKPT_ENC_ZERO]));
	json_object_object_add(o, "raw_pages", json_object_new_int64((int64_t)s->pages[CKPT_ENC_RAW]));
	json_object_object_add(o, "lz4_pages", json_object_new_int64((int64_t)s->pages[CKPT_ENC_LZ4]));
	json_object_object_add(o, "delta_pages", json_object_new_int64((int64_t)s->pages[CKPT_ENC_DELTA]));
	json_object_object_add(o, "zstd_pages", json_object_new_int64((int64_t)s->pages[CKPT_ENC_ZSTD]));
	json_object_object_add(o, "page_bytes", json_object_new_int64((int64_t)s->page_bytes));
	json_object_object_add(o, "rounds", json_object_new_int((int)s->rounds));
	json_object_object_add(o, "indexed", json_object_new_boolean(s->indexed));
	json_object_object_add(o, "kind", json_object_new_string(s->domain ? "libvirt" : "kvm"));
	if (s->domain)
		json_object_object_add(o, "device_bytes", json_object_new_int64((int64_t)s->device_bytes));
	svc_print_json(o);
	json_object_put(o);
}

static void print_text(const char *path, const struct snap_inspect *s)
{
	char uuid[40], digest[40], when[64], parent[SNAP_PATH_MAX + 600];
	bool found;
	time_t t = (time_t)(s->info.created_ns / 1000000000ull);
	struct tm tm;

	hex(s->info.guest_uuid, 16, uuid);
	hex(s->digest, 16, digest);
	strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S UTC", gmtime_r(&t, &tm));
	printf("%s: checkpoint of %s '%s' (%s), taken %s\n", path, s->domain ? "libvirt domain" :
	       "guest", s->info.guest_name, uuid, when);
	if (s->domain)
		printf("  QEMU's device state: %llu bytes, kept intact\n",
		       (unsigned long long)s->device_bytes);
	printf("  %s, %u vCPUs, %llu MiB in %u region(s), digest %s\n",
	       s->has_parent ? "incremental" : "full", s->vcpus,
	       (unsigned long long)(s->mem_bytes >> 20), s->info.region_count, digest);
	if (s->has_parent) {
		hex(s->parent_uuid, 16, uuid);
		hex(s->parent_digest, 16, digest);
		found = parent_file(path, parent, sizeof(parent));
		printf("  parent: image %s, digest %s, %s %s\n", uuid, digest,
		       found ? "file" : "NOT FOUND:", parent);
	}
	printf("  pages: %llu zero, %llu raw, %llu lz4, %llu zstd, %llu delta; %.1f MiB of page "
	       "data, %.1f MiB file, %llu records%s\n",
	       (unsigned long long)s->pages[CKPT_ENC_ZERO], (unsigned long long)s->pages[CKPT_ENC_RAW],
	       (unsigned long long)s->pages[CKPT_ENC_LZ4], (unsigned long long)s->pages[CKPT_ENC_ZSTD],
	       (unsigned long long)s->pages[CKPT_ENC_DELTA],
	       s->page_bytes / 1048576.0, s->file_bytes / 1048576.0,
	       (unsigned long long)s->records, s->indexed ? ", indexed" : "");
}

/* FILE and, unless file_only, each parent a restore would read: every file
 * whole, and each the very parent its child names (by digest). */
static int verify(const char *file, bool file_only, const uint8_t *key, size_t key_len)
{
	static char files[SNAP_MAX_CHAIN][SNAP_PATH_MAX];
	struct snap_inspect s, parent;
	unsigned n = 1, records = 0;
	char err[SNAP_PATH_MAX + 600];
	int ret;

	if ((ret = snap_inspect(file, key, key_len, &s, err, sizeof(err))))
		return cli_fail(1, "ckpt", ipc_errno_code(ret), "%s", err);
	records = (unsigned)s.records;
	if (!file_only && s.has_parent &&
	    (ret = snap_chain(file, files, SNAP_MAX_CHAIN, &n, err, sizeof(err))))
		return cli_fail(1, "ckpt", ipc_errno_code(ret), "%s: the chain is broken: %s", file,
				err);
	for (unsigned i = 1; !file_only && i < n; i++) {
		if (snap_inspect(files[i], key, key_len, &parent, err, sizeof(err)))
			return cli_fail(1, "ckpt", IPC_E_INTEGRITY, "%s: its parent %s is damaged: %s",
					file, files[i], err);
		if (memcmp(parent.digest, s.parent_digest, 16))
			return cli_fail(1, "ckpt", IPC_E_INTEGRITY, "%s: %s is not the parent it names "
					"(its digest differs)", files[i - 1], files[i]);
		records += (unsigned)parent.records;
		s = parent;
	}
	if (cli_json) {
		struct json_object *o = json_object_new_object();

		json_object_object_add(o, "file", json_object_new_string(file));
		json_object_object_add(o, "intact", json_object_new_boolean(true));
		json_object_object_add(o, "parents_checked", json_object_new_int((int)n - 1));
		json_object_object_add(o, "records", json_object_new_int64(records));
		json_object_object_add(o, "mac_checked", json_object_new_boolean(key_len > 0));
		svc_print_json(o);
		json_object_put(o);
	} else if (n > 1)
		printf("%s: intact, with its %u parent(s) (%u files, %u records: every checksum, "
		       "the index, the digest%s, the state and each parent's digest checked)\n",
		       file, n - 1, n, records, key_len ? ", the MAC" : "");
	else
		printf("%s: intact (%u records, every checksum, the index, the digest%s and "
		       "the state of %u vCPUs checked)%s\n", file, records, key_len ? ", the MAC" : "",
		       s.vcpus, file_only && s.has_parent ? "; its parents not checked (--file-only)" :
		       "");
	return 0;
}

int cmd_ckpt(int argc, char **argv)
{
	const char *cmd = argc > 1 ? argv[1] : "", *file = NULL, *out = NULL, *key_file = NULL;
	struct snap_inspect s;
	uint8_t key[64];
	int key_len = 0;
	bool json = false, file_only = false;
	char err[512];
	int c;

	for (int i = 2; i < argc; i++) {
		if (!strcmp(argv[i], "--json"))
			json = true;
		else if (!strcmp(argv[i], "--file-only"))
			file_only = true;
		else if (!strcmp(argv[i], "--key") && i + 1 < argc)
			key_file = argv[++i];
		else if (!strcmp(argv[i], "--key"))
			return cli_missing_value("ckpt", argv[i]);
		else if (argv[i][0] == '-')
			return cli_unknown_option("ckpt", argv[i]);
		else if (!file)
			file = argv[i];
		else if (!out)
			out = argv[i];
		else
			file = NULL, i = argc;
	}
	if (strcmp(cmd, "info") && strcmp(cmd, "verify") && strcmp(cmd, "merge"))
		return cli_usage_error("ckpt", "info, verify or merge, not '%s'", cmd);
	if (!file || (!strcmp(cmd, "merge") != !!out))
		return cli_usage_error("ckpt", "%s takes %s", cmd, strcmp(cmd, "merge") ? "one FILE" :
				       "a FILE and an OUT file");
	if (key_file && (key_len = snap_key_load(key_file, key, err, sizeof(err))) < 0)
		return cli_fail(1, "ckpt", ipc_errno_code(key_len), "%s", err);
	if (!strcmp(cmd, "merge")) {
		struct snap_result res;
		struct stat st;
		int ret;

		/* snap_merge() says a chain it cannot read is damaged: a FILE that
		 * is not there is another matter */
		if (stat(file, &st))
			return cli_fail(1, "ckpt merge", ipc_errno_code(errno), "%s: %s", file,
					strerror(errno));
		ret = snap_merge(file, out, key_len ? key : NULL, (size_t)key_len, &res, err,
				 sizeof(err));
		if (ret)
			return cli_fail(1, "ckpt merge", ipc_errno_code(ret), "%s", err);
		if (cli_json) {
			struct json_object *o = json_object_new_object();

			json_object_object_add(o, "file", json_object_new_string(out));
			json_object_object_add(o, "from", json_object_new_string(file));
			json_object_object_add(o, "file_bytes",
					       json_object_new_int64((int64_t)res.file_bytes));
			svc_print_json(o);
			json_object_put(o);
		} else {
			printf("%s: full checkpoint of %s and its parents, %.1f MiB\n", out, file,
			       res.file_bytes / 1048576.0);
		}
		return 0;
	}
	if (!strcmp(cmd, "verify"))
		return verify(file, file_only, key_len ? key : NULL, (size_t)key_len);
	c = snap_inspect(file, key_len ? key : NULL, (size_t)key_len, &s, err, sizeof(err));
	if (c)
		return cli_fail(1, "ckpt", ipc_errno_code(c), "%s", err);
	if (json)
		print_json(file, &s);
	else
		print_text(file, &s);
	return 0;
}
