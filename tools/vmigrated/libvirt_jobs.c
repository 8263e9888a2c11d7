/*
 * libvirt domains in vmigrated (see libvirt_jobs.h), the service's side:
 * list and info, the checks before a migration, the jobs' files, cancel.
 * The jobs themselves run in forked children: the source's in
 * libvirt_out.c, the destination's in libvirt_in.c, and the frames
 * between them are libvirt_frames.c's.
 *
 *   source host                                   destination host
 *   libvirtd --p2p (MigrateToURI3, unix://S) ---> libvirtd: QEMU -incoming unix:S
 *   QEMU --S--> lvd_run_outgoing                  lvd_run_incoming --S--> QEMU
 *                 parser -> record encoder          record decoder -> writer
 *                 ======== peer session (TLS), frames ==============>
 *                 <======= return path, frames ======================
 *
 * The destination's service learns of the job first (the "libvirt-in"
 * hello, before libvirt is asked), and connects to S once the first bytes
 * of the stream come: by then libvirt's Prepare has the QEMU listening.
 *
 * The job's figures go to jobs_dir/JOB.json (temp file, rename), where the
 * service reads them for `jobs` and the CLI's progress.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ipc.h"
#include "libvirt_host.h"
#include "libvirt_jobs_int.h"
#include "log.h"
#include "migrate.h"

double lvd_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* ---- the service's side: list, info, the checks before a migration ---- */

void lvd_init(struct lvd_config *c, const char *state_dir)
{
	snprintf(c->jobs_dir, sizeof(c->jobs_dir), "%s/libvirt-jobs", state_dir);
	if (!c->uri[0]) {
		log_write(LOG_INFO, NULL, NULL, "libvirt: off (--libvirt none)");
		return;
	}
	if (mkdir(c->jobs_dir, 0700) < 0 && errno != EEXIST)
		log_write(LOG_WARNING, NULL, NULL, "%s: %s", c->jobs_dir, strerror(errno));
	if (mkdir(c->sock_dir, 0755) < 0 && errno != EEXIST)
		log_write(LOG_WARNING, NULL, NULL, "%s: %s", c->sock_dir, strerror(errno));
}

/* A connection, or NULL: a failure is logged when it differs from the last. */
static struct lv_host *open_host(struct lvd_config *c)
{
	char err[512];
	struct lv_host *h;

	if (!c->uri[0])
		return NULL;
	h = lv_open(c->uri, err, sizeof(err));
	if (!h && strcmp(err, c->last_err)) {
		log_write(LOG_WARNING, NULL, NULL, "%s; libvirt domains are not served until it "
			"answers", err);
		snprintf(c->last_err, sizeof(c->last_err), "%s", err);
	} else if (h && c->last_err[0]) {
		log_write(LOG_INFO, NULL, NULL, "libvirt at %s answers again", c->uri);
		c->last_err[0] = 0;
	}
	return h;
}

static struct json_object *domain_json(const struct lv_domain *d)
{
	struct json_object *o = json_object_new_object();

	json_object_object_add(o, "name", json_object_new_string(d->name));
	json_object_object_add(o, "kind", json_object_new_string("libvirt"));
	json_object_object_add(o, "state", json_object_new_string(d->state));
	json_object_object_add(o, "uuid", json_object_new_string(d->uuid));
	json_object_object_add(o, "mem", json_object_new_int64((int64_t)d->mem_bytes));
	json_object_object_add(o, "max_mem", json_object_new_int64((int64_t)d->max_mem_bytes));
	json_object_object_add(o, "vcpus", json_object_new_int((int)d->vcpus));
	json_object_object_add(o, "active", json_object_new_boolean(d->active));
	return o;
}

void lvd_list(struct lvd_config *c, struct json_object *guests)
{
	struct lv_host *h = open_host(c);
	struct lv_domain *d;
	char err[512];
	size_t n;

	if (!h)
		return;
	if (lv_list(h, &d, &n, err, sizeof(err)) == 0) {
		for (size_t i = 0; i < n; i++)
			json_object_array_add(guests, domain_json(&d[i]));
		free(d);
	} else {
		log_write(LOG_WARNING, NULL, NULL, "%s", err);
	}
	lv_close(h);
}

struct json_object *lvd_info(struct lvd_config *c, const char *name)
{
	struct lv_host *h = open_host(c);
	struct json_object *rep = NULL;
	struct lv_domain d;
	char err[512];

	if (!h)
		return NULL;
	if (lv_lookup(h, name, &d, err, sizeof(err)) == 0) {
		rep = domain_json(&d);
		json_object_object_add(rep, "ok", json_object_new_boolean(1));
	}
	lv_close(h);
	return rep;
}

bool lvd_has(struct lvd_config *c, const char *name)
{
	struct json_object *i = lvd_info(c, name);

	json_object_put(i);
	return i != NULL;
}

bool lvd_safe_word(const char *s)
{
	if (!*s || *s == '.')
		return false;
	for (; *s; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
		      (*s >= '0' && *s <= '9') || *s == '-' || *s == '_' || *s == '.'))
			return false;
	return true;
}

struct json_object *lvd_prepare(struct lvd_config *c, struct json_object *req,
				const struct peer_config *pc, int io_timeout_ms,
				struct lvd_outgoing *o)
{
	const char *name = ipc_str(req, "name", ""), *dest = ipc_str(req, "dest", "");
	const char *pcopy = ipc_str(req, "postcopy", NULL);
	const char *compress = ipc_str(req, "compress", "auto");
	enum mig_compress mode;
	struct json_object *rep = NULL;
	struct lv_host *h;
	struct lv_domain d;
	char err[512], host[256], port[32], caps[256];

	memset(o, 0, sizeof(*o));
	/* what vmigrate would add to QEMU's stream, or take the stream away for */
	if (pcopy)
		return ipc_error(IPC_E_UNSUPPORTED, "libvirt domain '%s': post-copy (QEMU's capability postcopy-ram) "
				 "alters QEMU's migration stream; vmigrate carries pre-copy only",
				 name);
	if (ipc_bool(req, "auto_converge", false))
		return ipc_error(IPC_E_UNSUPPORTED, "libvirt domain '%s': --auto-converge is not offered for libvirt "
				 "domains yet", name);
	if (mig_compress_parse(compress, &mode))
		return ipc_error(IPC_E_BAD_ARGUMENT, "compress must be " MIG_COMPRESS_CHOICES);
	if (ipc_int(req, "channels", 0) < 0 || ipc_int(req, "channels", 0) > PEER_MAX_DATA)
		return ipc_error(IPC_E_BAD_ARGUMENT, "channels must be 0 to %d", PEER_MAX_DATA);
	if (!lvd_safe_word(name) || strlen(name) > 64)
		return ipc_error(IPC_E_BAD_ARGUMENT, "libvirt domain name '%s' is not one vmigrate takes (letters, "
				 "digits, '-', '_', '.')", name);
	if (xport_split_hostport(dest, PEER_DEFAULT_PORT, host, sizeof(host), port, sizeof(port)))
		return ipc_error(IPC_E_BAD_ARGUMENT, "bad destination '%s' (HOST[:PORT])", dest);
	h = open_host(c);
	if (!h)
		return ipc_error(IPC_E_NOT_ANSWERING, "libvirt at %s does not answer: %s", c->uri, c->last_err);
	if (lv_lookup(h, name, &d, err, sizeof(err))) {
		rep = ipc_error(IPC_E_NOT_FOUND, "%s", err);
		goto out;
	}
	/* a paused domain moves too, and arrives paused (libvirt's rule) */
	if (strcmp(d.state, "running") && strcmp(d.state, "paused")) {
		rep = ipc_error(IPC_E_WRONG_STATE, "libvirt domain '%s' is %s, not running", name, d.state);
		goto out;
	}
	if (lv_stream_caps_on(h, name, caps, sizeof(caps), err, sizeof(err))) {
		rep = ipc_error(IPC_E_INTERNAL, "libvirt domain '%s': %s", name, err);
		goto out;
	}
	if (caps[0]) {
		rep = ipc_error(IPC_E_UNSUPPORTED, "libvirt domain '%s': QEMU has migration capabilit%s %s on, which "
				"alter%s its stream; vmigrate carries the plain pre-copy stream only "
				"(turn %s off)", name, strchr(caps, ',') ? "ies" : "y", caps,
				strchr(caps, ',') ? "" : "s", strchr(caps, ',') ? "them" : "it");
		goto out;
	}
	snprintf(o->name, sizeof(o->name), "%s", name);
	snprintf(o->job, sizeof(o->job), "%s-lv%ld", name, (long)time(NULL));
	snprintf(o->dest, sizeof(o->dest), "%s", dest);
	if (ipc_str(req, "libvirt_dest", NULL))
		snprintf(o->dest_uri, sizeof(o->dest_uri), "%s", ipc_str(req, "libvirt_dest", ""));
	else
		snprintf(o->dest_uri, sizeof(o->dest_uri), "qemu+tls://%s/system", host);
	snprintf(o->sock, sizeof(o->sock), "%s/qemu-%s.sock", c->sock_dir, o->job);
	o->bandwidth = (unsigned long long)ipc_int(req, "bandwidth", 0);
	o->max_downtime_ms = (unsigned long long)ipc_int(req, "max_downtime_ms", 0);
	snprintf(o->compress, sizeof(o->compress), "%s", compress);
	o->channels = json_object_object_get_ex(req, "channels", NULL) ?
		      (unsigned)ipc_int(req, "channels", 0) : peer_default_channels();
	o->rdma = !strcmp(ipc_str(req, "transport", "tcp"), "rdma");
	if (o->rdma && !o->channels)
		o->channels = 1;	/* the records need a data channel to ride RDMA */
	o->peer = *pc;
	o->io_timeout_ms = io_timeout_ms;
	lvd_announce(c, o);	/* the job is there from the reply on, for the CLI's first look */
out:
	lv_close(h);
	return rep;
}

/* ---- the job's figures: jobs_dir/JOB.json ---- */

void lvd_write_status(const char *jobs_dir, const char *job, struct json_object *o)
{
	char path[1024], tmp[1040];
	const char *text = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s.json", jobs_dir, job);
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	f = fopen(tmp, "w");
	if (!f)
		return;
	fprintf(f, "%s\n", text);
	if (fclose(f) == 0)
		rename(tmp, path);
	else
		unlink(tmp);
}

struct json_object *lvd_read_status(const char *jobs_dir, const char *job)
{
	char path[1024];

	if (!lvd_safe_word(job))
		return NULL;
	snprintf(path, sizeof(path), "%s/%s.json", jobs_dir, job);
	return json_object_from_file(path);
}

struct json_object *lvd_job(struct lvd_config *c, const char *job)
{
	struct json_object *o = lvd_read_status(c->jobs_dir, job);

	if (o)
		json_object_object_add(o, "ok", json_object_new_boolean(1));
	return o;
}

void lvd_jobs(struct lvd_config *c, struct json_object *jobs, bool running, bool completed)
{
	DIR *d = opendir(c->jobs_dir);
	struct dirent *e;

	if (!d)
		return;
	while ((e = readdir(d))) {
		size_t n = strlen(e->d_name);
		char job[256];
		struct json_object *o;

		if (n < 6 || n - 5 >= sizeof(job) || strcmp(e->d_name + n - 5, ".json"))
			continue;
		memcpy(job, e->d_name, n - 5);
		job[n - 5] = 0;
		o = lvd_read_status(c->jobs_dir, job);
		if (!o)
			continue;
		if (ipc_bool(o, "done", false) ? completed : running)
			json_object_array_add(jobs, o);
		else
			json_object_put(o);
	}
	closedir(d);
}

void lvd_cancel_path(const char *jobs_dir, const char *job, char *path, size_t len)
{
	snprintf(path, len, "%s/%s.cancel", jobs_dir, job);
}

struct json_object *lvd_cancel(struct lvd_config *c, const char *job)
{
	struct json_object *o = lvd_read_status(c->jobs_dir, job), *rep;
	struct lv_host *h;
	char err[512];

	if (!o)
		return NULL;
	if (ipc_bool(o, "done", false) || strcmp(ipc_str(o, "direction", ""), "outgoing")) {
		rep = ipc_error(IPC_E_WRONG_STATE, "job %s %s", job, ipc_bool(o, "done", false) ? "has ended" :
				"is cancelled on its source host");
		json_object_put(o);
		return rep;
	}
	h = open_host(c);
	if (!h)
		rep = ipc_error(IPC_E_NOT_ANSWERING, "libvirt at %s does not answer: %s", c->uri, c->last_err);
	else if (lv_abort_job(h, ipc_str(o, "guest", ""), err, sizeof(err)))
		rep = ipc_error(IPC_E_INTERNAL, "%s", err);
	else
		rep = ipc_ok();
	/* the job's process learns it was cancelled: QEMU's own error may only
	 * say its stream broke (a QEMU blocked writing when it is cancelled) */
	if (ipc_bool(rep, "ok", false)) {
		char path[1024];
		int fd;

		lvd_cancel_path(c->jobs_dir, job, path, sizeof(path));
		fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
		if (fd >= 0)
			close(fd);
	}
	if (ipc_bool(rep, "ok", false))
		log_write(LOG_INFO, ipc_str(o, "guest", ""), job, "cancelling job %s (libvirt "
			"aborts the migration; the domain stays here)", job);
	lv_close(h);
	json_object_put(o);
	return rep;
}

/* A job whose process is gone without a word (killed): its file says so,
 * and the QEMU socket it used goes. */
static void sweep_job(struct lvd_config *c, const char *job)
{
	struct json_object *o = lvd_read_status(c->jobs_dir, job), *st;
	long long pid = o ? ipc_int(o, "pid", 0) : 0;
	char path[1024];

	if (!o || ipc_bool(o, "done", false) || pid <= 0 || kill((pid_t)pid, 0) == 0 ||
	    errno != ESRCH) {
		json_object_put(o);
		return;
	}
	if (!json_object_object_get_ex(o, "stats", &st)) {
		st = json_object_new_object();
		json_object_object_add(o, "stats", st);
	}
	json_object_object_add(st, "status", json_object_new_string("failed"));
	json_object_object_add(st, "error", json_object_new_string(
		"the job's process ended before the job did"));
	json_object_object_add(o, "done", json_object_new_boolean(1));
	lvd_write_status(c->jobs_dir, job, o);
	log_write(LOG_WARNING, ipc_str(o, "guest", ""), job, "job %s: its process (pid %lld) "
		"ended before the job did", job, pid);
	json_object_put(o);
	snprintf(path, sizeof(path), "%s/qemu-%s.sock", c->sock_dir, job);
	unlink(path);
}

void lvd_sweep(struct lvd_config *c)
{
	DIR *d;
	struct dirent *e;

	if (!c->uri[0] || !(d = opendir(c->jobs_dir)))
		return;
	while ((e = readdir(d))) {
		size_t n = strlen(e->d_name);
		char job[256];

		if (n < 6 || n - 5 >= sizeof(job) || strcmp(e->d_name + n - 5, ".json"))
			continue;
		memcpy(job, e->d_name, n - 5);
		job[n - 5] = 0;
		sweep_job(c, job);
	}
	closedir(d);
}
