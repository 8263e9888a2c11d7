/*
 * Checkpoints and restores of libvirt domains (libvirt_snapshot.h).
 *
 *   snapshot:  libvirtd --monitor--> QEMU: getfd (our pipe), migrate fd:
 *              QEMU --pipe--> parser -> qckpt capture -> FILE (no name yet)
 *              stream ended: the domain runs again, then index, commit,
 *              fsync, rename; QEMU's capabilities and parameters put back
 *   restore:   chain -> image -> save image -> FIFO <-- virDomainRestoreFlags
 *
 * The last checkpoint of each domain is remembered (jobs_dir/snap-NAME.json)
 * so that the next incremental knows its parent.
 */
#include "libvirt_snapshot.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ipc.h"
#include "libvirt_host.h"
#include "libvirt_memsnap.h"
#include "libvirt_save_image.h"
#include "log.h"
#include "qemu_ckpt.h"
#include "qemu_stream.h"
#include "snapshot.h"

#define SNAP_FDNAME		"vmigrate-snap"
#define STREAM_STALL_MS		60000	/* QEMU sent nothing for this long: give up */
#define SETTLE_MS		10000	/* QEMU's migration state after its stream ended */
#define BIG_BANDWIDTH		(1ull << 40)	/* bytes/s: QEMU's cap off for the capture */
/* Whether a plain request tries libvirt's memory snapshot before a
 * migration into a pipe: not, as measured (bench_libvirt_snapshot.sh, the
 * rig, 2 x 5 alternating runs): libvirt's took longer in all (its
 * iohelper copies the stream once more) and paused a paused capture
 * longer; its live pauses were about the same */
#define AUTO_LIBVIRT_SNAPSHOT	false

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void hex(const uint8_t *b, char out[33])
{
	for (int i = 0; i < 16; i++)
		sprintf(out + 2 * i, "%02x", b[i]);
}

/* ---- the last checkpoint of a domain: the parent of its next incremental ---- */

static void last_path(const struct lvd_config *c, const char *name, char *p, size_t len)
{
	snprintf(p, len, "%s/snap-%s.json", c->jobs_dir, name);
}

static void remember_last(const struct lvd_config *c, const char *name, const char *file,
			  const uint8_t uuid[16])
{
	struct json_object *o = json_object_new_object();
	char path[700], tmp[720], u[33];

	hex(uuid, u);
	json_object_object_add(o, "file", json_object_new_string(file));
	json_object_object_add(o, "image_uuid", json_object_new_string(u));
	last_path(c, name, path, sizeof(path));
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	if (json_object_to_file(tmp, o) == 0)
		rename(tmp, path);
	json_object_put(o);
}

/* The parent's file: the last checkpoint taken here, or (a backup run's
 * expect_parent) the file of FILE's directory with that image. */
static int find_parent(const struct lvd_config *c, const char *name, const char *file,
		       const char *expect, char *out, size_t len)
{
	struct json_object *o;
	char path[700], *dir = strdup(file);
	int ret = -ENOENT;

	last_path(c, name, path, sizeof(path));
	o = json_object_from_file(path);
	if (o && (!expect || !strcmp(ipc_str(o, "image_uuid", ""), expect))) {
		snprintf(out, len, "%s", ipc_str(o, "file", ""));
		ret = 0;
	}
	json_object_put(o);
	if (ret && expect && dir) {
		static struct snap_backup_file f[SNAP_BACKUP_MAX];
		unsigned n = 0;
		char u[33];

		if (snap_backup_list(dirname(dir), name, f, SNAP_BACKUP_MAX, &n) == 0)
			for (unsigned i = 0; i < n && ret; i++) {
				hex(f[i].uuid, u);
				if (!strcmp(u, expect)) {
					snprintf(out, len, "%s/%s", dir, f[i].name);
					ret = 0;
				}
			}
	}
	free(dir);
	return ret;
}

/* ---- QEMU's migration settings, saved and put back ---- */

struct settings {
	bool saved;
	bool return_path, background;	/* the capabilities we change */
	long long max_bandwidth;
};

static int qmp(struct lv_host *h, const char *name, char *err, size_t errlen,
	       struct json_object **ret, const char *fmt, ...) __attribute__((format(printf, 6, 7)));

static int qmp(struct lv_host *h, const char *name, char *err, size_t errlen,
	       struct json_object **ret, const char *fmt, ...)
{
	char cmd[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	return lv_qmp(h, name, cmd, -1, ret, err, errlen);
}

static bool cap_state(struct json_object *caps, const char *which)
{
	for (size_t i = 0; caps && i < json_object_array_length(caps); i++) {
		struct json_object *e = json_object_array_get_idx(caps, i);

		if (!strcmp(ipc_str(e, "capability", ""), which))
			return ipc_bool(e, "state", false);
	}
	return false;
}

static int save_settings(struct lv_host *h, const char *name, struct settings *s, char *err,
			 size_t errlen)
{
	struct json_object *caps = NULL, *params = NULL;
	int ret = qmp(h, name, err, errlen, &caps, "{\"execute\":\"query-migrate-capabilities\"}");

	if (!ret)
		ret = qmp(h, name, err, errlen, &params, "{\"execute\":\"query-migrate-parameters\"}");
	if (!ret) {
		s->return_path = cap_state(caps, "return-path");
		s->background = cap_state(caps, "background-snapshot");
		s->max_bandwidth = ipc_int(params, "max-bandwidth", 0);
		s->saved = true;
	}
	json_object_put(caps);
	json_object_put(params);
	return ret;
}

static int set_cap(struct lv_host *h, const char *name, const char *cap, bool on, char *err,
		   size_t errlen)
{
	return qmp(h, name, err, errlen, NULL, "{\"execute\":\"migrate-set-capabilities\","
		   "\"arguments\":{\"capabilities\":[{\"capability\":\"%s\",\"state\":%s}]}}", cap,
		   on ? "true" : "false");
}

static int set_bandwidth(struct lv_host *h, const char *name, long long bps, char *err,
			 size_t errlen)
{
	return qmp(h, name, err, errlen, NULL, "{\"execute\":\"migrate-set-parameters\","
		   "\"arguments\":{\"max-bandwidth\":%lld}}", bps);
}

/* Back as they were; a failure is logged (the capture's result stands). */
static void restore_settings(struct lv_host *h, const char *name, const struct settings *s)
{
	char err[512];

	if (!s->saved)
		return;
	if (set_cap(h, name, "background-snapshot", s->background, err, sizeof(err)) ||
	    set_cap(h, name, "return-path", s->return_path, err, sizeof(err)) ||
	    (s->max_bandwidth > 0 && set_bandwidth(h, name, s->max_bandwidth, err, sizeof(err))))
		log_write(LOG_WARNING, name, NULL, "libvirt domain %s: putting QEMU's migration "
			"settings back: %s", name, err);
}

/* ---- the capture ---- */

/* How QEMU's stream is taken, in the order they are tried (issue 11): QEMU's
 * background-snapshot where asked for and QEMU may, libvirt's own memory
 * snapshot into a FIFO, a migration into a pipe of ours. */
enum method {
	M_BACKGROUND,		/* migrate fd: with QEMU's background-snapshot */
	M_LIBVIRT,		/* virDomainSnapshotCreateXML, memory into a FIFO */
	M_MIGRATE,		/* migrate fd: (live, or paused by us) */
};

struct capture {
	const struct lvd_config *c;
	struct lv_host *h;
	const char *name;
	bool live, was_running;
	enum method method;		/* the one being tried */
	bool declined;			/* it gave up before QEMU's stream: try the next */
	bool background;		/* QEMU's background-snapshot is on for it */
	char note[1600];		/* why the methods before the one used were not */
	const struct qckpt_image *parent;
	const uint8_t *key;
	size_t key_len;
	enum ckpt_compressor compress;
	char *xml;
	unsigned vcpus;
	/* results */
	struct qckpt_capture_stats st;
	double t_pause, t_eof, t_resumed;
	long long qemu_downtime_ms;
	bool resumed;
};

/* Whether QEMU's background-snapshot can be used; why not in c->note. */
static bool try_background(struct capture *c)
{
	char err[200], sysctl[16] = "?";
	FILE *f = fopen("/proc/sys/vm/unprivileged_userfaultfd", "r");

	if (f) {
		if (!fgets(sysctl, sizeof(sysctl), f))
			snprintf(sysctl, sizeof(sysctl), "?");
		sysctl[strcspn(sysctl, "\n")] = 0;
		fclose(f);
	}
	if (set_cap(c->h, c->name, "background-snapshot", true, err, sizeof(err)) == 0)
		return true;
	snprintf(c->note, sizeof(c->note), "QEMU's background-snapshot is "
		 "not available (%s): it needs userfaultfd write-protection, which QEMU may use "
		 "only where vm.unprivileged_userfaultfd is 1 or with CAP_SYS_PTRACE (here "
		 "vm.unprivileged_userfaultfd = %s; QEMU has what qemu.conf's user and "
		 "clear_emulator_capabilities leave it); "
		 "captured by the next way instead", err, sysctl);
	return false;
}

/* QEMU's migration after its stream ended: 0 completed, else its error. */
static int settle(struct capture *c, char *err, size_t errlen)
{
	double until = now_s() + SETTLE_MS / 1e3;

	while (now_s() < until) {
		struct json_object *st = NULL;
		const char *s;
		int ret = qmp(c->h, c->name, err, errlen, &st, "{\"execute\":\"query-migrate\"}");

		if (ret)
			return ret;
		s = ipc_str(st, "status", "");
		if (!strcmp(s, "completed")) {
			c->qemu_downtime_ms = ipc_int(st, "downtime", 0);
			json_object_put(st);
			return 0;
		}
		if (!strcmp(s, "failed") || !strcmp(s, "cancelled")) {
			snprintf(err, errlen, "QEMU's migration %s: %s", s,
				 ipc_str(st, "error-desc", "no reason given"));
			json_object_put(st);
			return -EIO;
		}
		json_object_put(st);
		usleep(5000);
	}
	snprintf(err, errlen, "QEMU's migration did not complete within %d s of its stream's end",
		 SETTLE_MS / 1000);
	return -ETIMEDOUT;
}

/* The domain runs again if it ran before (QEMU stopped it, or we did). */
static int resume_if_ran(struct capture *c, char *err, size_t errlen)
{
	struct lv_domain d;
	int ret;

	if (!c->was_running || c->resumed)
		return 0;
	ret = lv_lookup(c->h, c->name, &d, err, errlen);
	if (!ret && strcmp(d.state, "running"))
		ret = lv_resume(c->h, c->name, err, errlen);
	c->t_resumed = now_s();
	c->resumed = !ret;
	return ret;
}

/* QEMU's stream from rfd through the parser into the capture. */
static int pump(struct capture *c, int rfd, struct qckpt_capture *cap, char *err, size_t errlen)
{
	static uint8_t buf[256 << 10];
	struct qstream_parser *p = qstream_parser_new(qckpt_capture_event, cap);
	int ret = 0;

	if (!p) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	if (c->background)
		qstream_parser_background_snapshot(p);
	for (;;) {
		struct pollfd pfd = { .fd = rfd, .events = POLLIN };
		int n = poll(&pfd, 1, STREAM_STALL_MS);
		ssize_t len;

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			ret = n ? -errno : -ETIMEDOUT;
			if (n)
				snprintf(err, errlen, "poll: %s", strerror(errno));
			else
				snprintf(err, errlen, "QEMU's stream stalled (%d s without a byte)",
					 STREAM_STALL_MS / 1000);
			break;
		}
		len = read(rfd, buf, sizeof(buf));
		if (len < 0 && errno == EINTR)
			continue;
		if (len < 0) {
			ret = -errno;
			snprintf(err, errlen, "reading QEMU's stream: %s", strerror(errno));
			break;
		}
		if (len == 0) {
			c->t_eof = now_s();
			if (qstream_parser_finish(p))
				ret = -EBADMSG;
			break;
		}
		c->st.stream_bytes += (uint64_t)len;
		if (qstream_parser_feed(p, buf, (size_t)len)) {
			ret = -EBADMSG;
			break;
		}
	}
	if (ret == -EBADMSG)
		snprintf(err, errlen, "QEMU's stream: %s",
			 qstream_parser_error(p) == QSTREAM_E_CONSUMER ? qckpt_capture_errmsg(cap) :
			 qstream_parser_errmsg(p));
	qstream_parser_free(p);
	return ret;
}

/* QEMU's migration into a pipe of ours, from the named fd to its end. */
static int fill_by_migration(struct capture *c, struct qckpt_capture *cap, char *err,
			     size_t errlen)
{
	struct settings s = { 0 };
	bool migrating = false, fd_passed = false;
	int pipefd[2] = { -1, -1 }, ret;
	char why[512];

	ret = save_settings(c->h, c->name, &s, err, errlen);
	/* return-path would have QEMU wait for answers no one sends */
	if (!ret)
		ret = set_cap(c->h, c->name, "return-path", false, err, errlen);
	if (!ret && s.background)
		ret = set_cap(c->h, c->name, "background-snapshot", false, err, errlen);
	if (!ret)
		ret = set_bandwidth(c->h, c->name, (long long)BIG_BANDWIDTH, err, errlen);
	/* opt-in: a background snapshot that fails half-way leaves QEMU 7.2's
	 * vCPUs blocked on pages still write-protected (seen on the test rig),
	 * a live migration that fails leaves the domain running */
	if (!ret && c->method == M_BACKGROUND && !(c->background = try_background(c))) {
		c->declined = true;
		restore_settings(c->h, c->name, &s);
		snprintf(err, errlen, "%s", c->note);
		return -EAGAIN;
	}
	c->t_pause = now_s();
	if (!ret && !c->live && c->was_running)
		ret = lv_suspend(c->h, c->name, err, errlen);
	if (!ret && pipe2(pipefd, O_CLOEXEC) < 0) {
		ret = -errno;
		snprintf(err, errlen, "pipe: %s", strerror(errno));
	}
	if (!ret)
		ret = lv_qmp(c->h, c->name, "{\"execute\":\"getfd\",\"arguments\":{\"fdname\":\""
			     SNAP_FDNAME "\"}}", pipefd[1], NULL, err, errlen);
	fd_passed = !ret;
	if (pipefd[1] >= 0)
		close(pipefd[1]);	/* QEMU has its own copy now */
	if (!ret)
		ret = qmp(c->h, c->name, err, errlen, NULL, "{\"execute\":\"migrate\",\"arguments\":"
			  "{\"uri\":\"fd:" SNAP_FDNAME "\"}}");
	migrating = !ret;
	if (!ret)
		ret = pump(c, pipefd[0], cap, err, errlen);
	if (!ret)
		ret = settle(c, err, errlen);
	if (ret && migrating) {
		/* QEMU's end of the pipe breaks: its migration fails, the domain stays */
		close(pipefd[0]);
		pipefd[0] = -1;
		qmp(c->h, c->name, why, sizeof(why), NULL, "{\"execute\":\"migrate_cancel\"}");
		settle(c, why, sizeof(why));
	}
	if (fd_passed && !migrating)	/* QEMU keeps a named fd until it is used or closed */
		qmp(c->h, c->name, why, sizeof(why), NULL, "{\"execute\":\"closefd\",\"arguments\":"
		    "{\"fdname\":\"" SNAP_FDNAME "\"}}");
	{
		/* running again before the file is finished: the pause ends here */
		int rr = resume_if_ran(c, ret ? why : err, ret ? sizeof(why) : errlen);

		if (rr && ret)
			log_write(LOG_ERR, c->name, NULL, "libvirt domain %s: resuming it after a "
				"failed checkpoint: %s", c->name, why);
		if (!ret)
			ret = rr;
	}
	restore_settings(c->h, c->name, &s);
	if (pipefd[0] >= 0)
		close(pipefd[0]);
	return ret;
}

static int feed_parser(void *opaque, const void *buf, size_t len)
{
	return qstream_parser_feed(opaque, buf, len);
}

static const char *parser_why(struct qstream_parser *p, struct qckpt_capture *cap)
{
	return qstream_parser_error(p) == QSTREAM_E_CONSUMER ? qckpt_capture_errmsg(cap) :
	       qstream_parser_errmsg(p);
}

/* libvirt's own memory snapshot: its job, its pause and its resume. */
static int fill_by_libvirt(struct capture *c, struct qckpt_capture *cap, char *err,
			   size_t errlen)
{
	struct qstream_parser *p = qstream_parser_new(qckpt_capture_event, cap);
	struct lvmem_job j = { .h = c->h, .name = c->name, .dir = c->c->sock_dir,
			       .live = c->live && c->was_running, .feed = feed_parser, .opaque = p };
	struct settings s = { 0 };
	char why[512];
	int ret;

	if (!p) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	/* libvirt 9.0 leaves QEMU's max-bandwidth unlimited after a failed job */
	ret = save_settings(c->h, c->name, &s, err, errlen);
	if (!ret)
		ret = lvmem_capture(&j, err, errlen);
	if (ret && qstream_parser_error(p))
		snprintf(err, errlen, "QEMU's stream: %s", parser_why(p, cap));
	else if (!ret && qstream_parser_finish(p)) {
		snprintf(err, errlen, "QEMU's stream: %s", parser_why(p, cap));
		ret = -EBADMSG;
	}
	qstream_parser_free(p);
	restore_settings(c->h, c->name, &s);
	c->st.stream_bytes = j.stream_bytes;
	c->t_pause = j.t_start;
	c->t_eof = j.t_eof;
	c->t_resumed = j.t_done;
	c->resumed = c->was_running;
	if (!ret && c->live && c->was_running) {
		struct json_object *st = NULL;

		/* QEMU's part of the pause: the migration libvirt ran */
		if (qmp(c->h, c->name, why, sizeof(why), &st, "{\"execute\":\"query-migrate\"}") == 0)
			c->qemu_downtime_ms = ipc_int(st, "downtime", 0);
		json_object_put(st);
	}
	if (ret && !j.stream_began) {
		/* nothing of QEMU's stream came: another way may be tried */
		size_t l = strlen(c->note);

		c->declined = true;
		snprintf(c->note + l, sizeof(c->note) - l, "%slibvirt's memory snapshot gave "
			 "nothing (%s)", l ? "; " : "", err);
	}
	if (c->was_running) {
		/* libvirt resumes it on success and on failure; should it not have */
		struct lv_domain d;
		int rr = lv_lookup(c->h, c->name, &d, why, sizeof(why));

		if (!rr && strcmp(d.state, "running")) {
			rr = lv_resume(c->h, c->name, why, sizeof(why));
			c->t_resumed = now_s();
			log_write(LOG_WARNING, c->name, NULL, "libvirt domain %s: libvirt left it %s "
				"after its memory snapshot; resumed: %s", c->name, d.state,
				rr ? why : "done");
		}
		c->resumed = !rr;
		if (rr && !ret) {
			snprintf(err, errlen, "%s", why);
			ret = rr;
		}
	}
	return ret;
}

/* Everything from the file's fd to a finished capture, by c->method. */
static int capture_fill(void *opaque, int fd, char *err, size_t errlen)
{
	struct capture *c = opaque;
	struct qckpt_capture_opts co = {
		.domain_name = c->name, .xml = c->xml, .vcpus = c->vcpus,
		.was_running = c->was_running, .parent = c->parent,
		.mac_key = c->key, .mac_key_len = c->key_len, .compress = c->compress,
	};
	struct qckpt_capture *cap = qckpt_capture_new(fd, &co, err, errlen);
	int ret;

	if (!cap)
		return -ENOMEM;
	c->declined = false;
	memset(&c->st, 0, sizeof(c->st));
	ret = c->method == M_LIBVIRT ? fill_by_libvirt(c, cap, err, errlen) :
	      fill_by_migration(c, cap, err, errlen);
	if (!ret && (ret = qckpt_capture_finish(cap)))
		snprintf(err, errlen, "%s", qckpt_capture_errmsg(cap));
	{
		uint64_t bytes = c->st.stream_bytes;

		qckpt_capture_stats(cap, &c->st);
		c->st.stream_bytes = bytes;
	}
	qckpt_capture_free(cap);
	return ret;
}

static double pause_ms(const struct capture *c)
{
	if (!c->was_running)
		return 0;
	if (!c->live)
		return (c->t_resumed - c->t_pause) * 1e3;
	/* QEMU's own figure from its stop to its stream's end, then ours to the resume */
	return (double)c->qemu_downtime_ms + (c->background ? 0 : (c->t_resumed - c->t_eof) * 1e3);
}

struct json_object *lvsnap_snapshot(const struct lvd_config *c, struct json_object *req)
{
	static char files[SNAP_MAX_CHAIN][SNAP_PATH_MAX];
	const char *name = ipc_str(req, "name", ""), *file = ipc_str(req, "file", NULL);
	const char *key_file = ipc_str(req, "key_file", NULL);
	bool incremental = ipc_bool(req, "incremental", false);
	const char *how = ipc_str(req, "method", "auto");
	bool want_background = ipc_bool(req, "background_snapshot", false);
	struct capture cap = { .c = c, .name = name, .live = ipc_bool(req, "live", false) };
	enum method order[3];
	unsigned n_order = 0;
	struct qckpt_image parent;
	struct json_object *rep = NULL;
	struct lv_domain d;
	uint8_t key[64];
	int key_len = 0, ret;
	char err[1024], caps[256], pfile[SNAP_PATH_MAX];
	double t0 = now_s();
	bool have_parent = false;

	memset(&parent, 0, sizeof(parent));
	signal(SIGPIPE, SIG_IGN);
	if (!file || file[0] != '/')
		return ipc_error(IPC_E_BAD_ARGUMENT, "snapshot needs an absolute file name");
	if (!name[0] || strchr(name, '/') || strlen(name) > 200)
		return ipc_error(IPC_E_BAD_ARGUMENT, "libvirt domain name '%s' is not one vmigrate "
				 "takes", name);
	if (ckpt_compressor_parse(ipc_str(req, "compress", "lz4"), &cap.compress))
		return ipc_error(IPC_E_BAD_ARGUMENT, "compress must be " CKPT_COMPRESSOR_CHOICES);
	if (key_file && (key_len = snap_key_load(key_file, key, err, sizeof(err))) < 0)
		return ipc_error(ipc_errno_code(key_len), "%s", err);
	if (!c->uri[0])
		return ipc_error(IPC_E_UNSUPPORTED, "libvirt is off in this service (--libvirt none)");
	cap.key = key_len > 0 ? key : NULL;
	cap.key_len = key_len > 0 ? (size_t)key_len : 0;
	cap.h = lv_open(c->uri, err, sizeof(err));
	if (!cap.h)
		return ipc_error(IPC_E_NOT_ANSWERING, "%s", err);
	if ((ret = lv_lookup(cap.h, name, &d, err, sizeof(err)))) {
		rep = ipc_error(ipc_errno_code(ret), "%s", err);
		goto out;
	}
	if (strcmp(how, "auto") && strcmp(how, "libvirt-snapshot") && strcmp(how, "migration"))
		return ipc_error(IPC_E_BAD_ARGUMENT, "--method takes libvirt-snapshot or migration, "
				 "not '%s'", how);
	if (want_background && !cap.live) {
		rep = ipc_error(IPC_E_BAD_ARGUMENT, "--background-snapshot goes with --live");
		goto out;
	}
	if (strcmp(d.state, "running") && strcmp(d.state, "paused")) {
		rep = ipc_error(IPC_E_WRONG_STATE, "libvirt domain '%s' is %s: only a running or "
				"paused domain has memory to save", name, d.state);
		goto out;
	}
	cap.was_running = !strcmp(d.state, "running");
	cap.vcpus = d.vcpus;
	if ((ret = lv_stream_caps_on(cap.h, name, caps, sizeof(caps), err, sizeof(err)))) {
		rep = ipc_error(IPC_E_INTERNAL, "libvirt domain '%s': %s", name, err);
		goto out;
	}
	if (caps[0]) {
		rep = ipc_error(IPC_E_UNSUPPORTED, "libvirt domain '%s': QEMU has migration "
				"capabilities on that alter its stream (%s): turn them off", name, caps);
		goto out;
	}
	if (incremental) {
		char *list[SNAP_MAX_CHAIN];
		unsigned n = 0;

		if (find_parent(c, name, file, ipc_str(req, "expect_parent", NULL), pfile,
				sizeof(pfile))) {
			rep = ipc_error(IPC_E_WRONG_STATE, "no checkpoint of libvirt domain %s to "
					"build on: take a full one first", name);
			json_object_object_add(rep, "retry_full", json_object_new_boolean(true));
			goto out;
		}
		ret = snap_chain(pfile, files, SNAP_MAX_CHAIN, &n, err, sizeof(err));
		for (unsigned i = 0; i < n; i++)
			list[i] = files[i];
		if (!ret)
			ret = qckpt_image_load(list, n, cap.key, cap.key_len, true, &parent, err,
					       sizeof(err));
		if (ret) {
			rep = ipc_error(IPC_E_WRONG_STATE, "the last checkpoint of libvirt domain %s "
					"cannot be built on (%s): take a full one first", name, err);
			json_object_object_add(rep, "retry_full", json_object_new_boolean(true));
			goto out;
		}
		have_parent = true;
		{
			/* restore looks for a parent in its child's directory */
			char *a = strdup(pfile), *b = strdup(file);
			bool same = a && b && !strcmp(dirname(a), dirname(b));

			free(a);
			free(b);
			if (!same) {
				rep = ipc_error(IPC_E_BAD_ARGUMENT, "an incremental checkpoint goes "
						"into the directory of its parent %s", pfile);
				goto out;
			}
		}
		cap.parent = &parent;
	}
	ret = snap_check_target(file, have_parent ? parent.info.image_uuid : NULL,
				ipc_bool(req, "force", false), err, sizeof(err));
	if (ret) {
		rep = ipc_error(ipc_errno_code(ret), "%s", err);
		goto out;
	}
	if (!(cap.xml = lv_domain_xml(cap.h, name, err, sizeof(err)))) {
		rep = ipc_error(IPC_E_INTERNAL, "%s", err);
		goto out;
	}
	if (want_background && cap.was_running)
		order[n_order++] = M_BACKGROUND;
	if (!strcmp(how, "libvirt-snapshot") || (!strcmp(how, "auto") && AUTO_LIBVIRT_SNAPSHOT))
		order[n_order++] = M_LIBVIRT;
	if (strcmp(how, "libvirt-snapshot"))
		order[n_order++] = M_MIGRATE;
	for (unsigned i = 0; i < n_order; i++) {
		cap.method = order[i];
		ret = snap_commit_file(file, capture_fill, &cap, err, sizeof(err));
		if (!ret || !cap.declined)
			break;
		log_write(LOG_INFO, name, NULL, "libvirt domain %s: %s", name, err);
	}
	if (ret) {
		rep = ipc_error(ret == -EBADMSG ? IPC_E_INTEGRITY : ipc_errno_code(ret),
				"checkpoint of libvirt domain %s failed, %s: %s", name,
				!cap.was_running ? "it stays paused" :
				cap.resumed ? "the domain runs on" : "and it could not be resumed", err);
		json_object_object_add(rep, "attempted", json_object_new_boolean(true));
		log_write(LOG_WARNING, name, NULL, "%s", ipc_str(rep, "error", err));
		goto out;
	}
	remember_last(c, name, file, cap.st.image_uuid);
	rep = ipc_ok();
	json_object_object_add(rep, "file", json_object_new_string(file));
	json_object_object_add(rep, "kind", json_object_new_string("libvirt"));
	json_object_object_add(rep, "incremental", json_object_new_boolean(have_parent));
	json_object_object_add(rep, "live", json_object_new_boolean(cap.live));
	json_object_object_add(rep, "method", json_object_new_string(
		cap.method == M_BACKGROUND ? "background-snapshot" :
		cap.method == M_LIBVIRT ? "libvirt-snapshot" :
		cap.live ? "live-migration" : "paused-migration"));
	if (cap.note[0])
		json_object_object_add(rep, "note", json_object_new_string(cap.note));
	json_object_object_add(rep, "file_bytes", json_object_new_int64((int64_t)cap.st.file_bytes));
	json_object_object_add(rep, "stream_bytes", json_object_new_int64(
		(int64_t)cap.st.stream_bytes));
	json_object_object_add(rep, "device_bytes", json_object_new_int64(
		(int64_t)cap.st.device_bytes));
	json_object_object_add(rep, "pages_written", json_object_new_int64(
		(int64_t)cap.st.pages_written));
	json_object_object_add(rep, "pages_unchanged", json_object_new_int64(
		(int64_t)cap.st.pages_unchanged));
	json_object_object_add(rep, "pause_ms", json_object_new_double(pause_ms(&cap)));
	json_object_object_add(rep, "seconds", json_object_new_double(now_s() - t0));
	{
		char u[33];

		hex(cap.st.image_uuid, u);
		json_object_object_add(rep, "image_uuid", json_object_new_string(u));
	}
	log_write(LOG_INFO, name, NULL, "libvirt domain %s: %s checkpoint %s (%llu bytes, "
		"paused %.1f ms, %s)", name, have_parent ? "incremental" : "full", file,
		(unsigned long long)cap.st.file_bytes, pause_ms(&cap),
		ipc_str(rep, "method", ""));
out:
	free(cap.xml);
	qckpt_image_free(&parent);
	lv_close(cap.h);
	return rep;
}

/* ---- restore ---- */

struct feeder {
	const char *fifo;
	const struct qckpt_image *im;
	bool running;
	atomic_bool stop;
	int ret;
	uint64_t bytes;
	char err[512];
};

static int fifo_write(void *opaque, const void *buf, size_t len)
{
	int *fd = opaque;
	const uint8_t *p = buf;

	while (len) {
		ssize_t n = write(*fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* The save image into the FIFO once libvirt opened it for reading. */
static void *feed_main(void *arg)
{
	struct feeder *f = arg;
	struct qstream_sink sink;
	int fd = -1;

	while (!atomic_load(&f->stop)) {
		fd = open(f->fifo, O_WRONLY | O_NONBLOCK | O_CLOEXEC);
		if (fd >= 0 || errno != ENXIO)
			break;
		usleep(5000);	/* no reader yet: libvirt checks the domain first */
	}
	if (fd < 0) {
		f->ret = atomic_load(&f->stop) ? -ECANCELED : -errno;
		snprintf(f->err, sizeof(f->err), "%s: %s", f->fifo, strerror(-f->ret));
		return NULL;
	}
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
	sink = (struct qstream_sink){ fifo_write, &fd };
	f->ret = lvsave_write(f->im, f->running, &sink, f->err, sizeof(f->err));
	close(fd);
	return NULL;
}

struct json_object *lvsnap_restore(const struct lvd_config *c, struct json_object *req)
{
	static char files[SNAP_MAX_CHAIN][SNAP_PATH_MAX];
	const char *file = ipc_str(req, "file", ""), *key_file = ipc_str(req, "key_file", NULL);
	bool paused = ipc_bool(req, "paused", false);
	struct feeder f = { 0 };
	struct qckpt_image im;
	struct json_object *rep = NULL;
	struct lv_host *h = NULL;
	struct lv_domain d;
	char *list[SNAP_MAX_CHAIN], err[1024], dir[600], fifo[700];
	uint8_t key[64];
	int key_len = 0, ret;
	unsigned n = 0;
	pthread_t t;
	double t0 = now_s(), t_loaded;

	signal(SIGPIPE, SIG_IGN);
	memset(&im, 0, sizeof(im));
	dir[0] = 0;
	if (file[0] != '/')
		return ipc_error(IPC_E_BAD_ARGUMENT, "restore needs an absolute file name");
	if (ipc_bool(req, "lazy", false))
		return ipc_error(IPC_E_UNSUPPORTED, "--lazy is for vmigrate's own guests: libvirt "
				 "loads a domain's memory before it runs it");
	if (key_file && (key_len = snap_key_load(key_file, key, err, sizeof(err))) < 0)
		return ipc_error(ipc_errno_code(key_len), "%s", err);
	ret = snap_chain(file, files, SNAP_MAX_CHAIN, &n, err, sizeof(err));
	for (unsigned i = 0; i < n; i++)
		list[i] = files[i];
	if (!ret)
		ret = qckpt_image_load(list, n, key_len > 0 ? key : NULL,
				       key_len > 0 ? (size_t)key_len : 0, false, &im, err,
				       sizeof(err));
	if (ret)
		return ipc_error(ret == -EBADMSG ? IPC_E_INTEGRITY : ipc_errno_code(ret),
				 "restore of %s refused: %s", file, err);
	t_loaded = now_s();
	if (!c->uri[0]) {
		rep = ipc_error(IPC_E_UNSUPPORTED, "%s holds a libvirt domain, and libvirt is off in "
				"this service (--libvirt none)", file);
		goto out;
	}
	if (ipc_str(req, "name", NULL) && strcmp(ipc_str(req, "name", ""), im.info.guest_name)) {
		rep = ipc_error(IPC_E_UNSUPPORTED, "a libvirt domain is restored under its own name "
				"(%s), as its XML says", im.info.guest_name);
		goto out;
	}
	if (!(h = lv_open(c->uri, err, sizeof(err)))) {
		rep = ipc_error(IPC_E_NOT_ANSWERING, "%s", err);
		goto out;
	}
	if (lv_lookup(h, im.info.guest_name, &d, err, sizeof(err)) == 0 && d.active) {
		rep = ipc_error(IPC_E_EXISTS, "libvirt domain %s is %s here: a restore would make "
				"a second copy (stop it first)", im.info.guest_name, d.state);
		goto out;
	}
	snprintf(dir, sizeof(dir), "%s/restore-XXXXXX", c->sock_dir);
	if (!mkdtemp(dir)) {
		rep = ipc_error(ipc_errno_code(errno), "%s: %s", dir, strerror(errno));
		dir[0] = 0;
		goto out;
	}
	snprintf(fifo, sizeof(fifo), "%s/image", dir);
	if (mkfifo(fifo, 0600) < 0) {
		rep = ipc_error(ipc_errno_code(errno), "mkfifo %s: %s", fifo, strerror(errno));
		goto out;
	}
	f.fifo = fifo;
	f.im = &im;
	f.running = im.was_running;
	if (pthread_create(&t, NULL, feed_main, &f)) {
		rep = ipc_error(IPC_E_INTERNAL, "pthread_create failed");
		goto out;
	}
	ret = lv_restore(h, fifo, paused, err, sizeof(err));
	atomic_store(&f.stop, true);
	if (ret) {
		/* a feeder blocked on a full pipe: libvirt's QEMU is gone, open and
		 * close a reader so that its write fails */
		int rfd = open(fifo, O_RDONLY | O_NONBLOCK | O_CLOEXEC);

		if (rfd >= 0)
			close(rfd);
	}
	pthread_join(t, NULL);
	if (ret) {
		rep = ipc_error(IPC_E_INTERNAL, "restore of libvirt domain %s from %s failed: %s%s%s",
				im.info.guest_name, file, err, f.ret && f.err[0] ? "; " : "",
				f.ret && f.err[0] ? f.err : "");
		goto out;
	}
	rep = ipc_ok();
	json_object_object_add(rep, "name", json_object_new_string(im.info.guest_name));
	json_object_object_add(rep, "kind", json_object_new_string("libvirt"));
	json_object_object_add(rep, "file", json_object_new_string(file));
	json_object_object_add(rep, "files", json_object_new_int((int)n));
	json_object_object_add(rep, "state", json_object_new_string(
		paused || !im.was_running ? "paused" : "running"));
	json_object_object_add(rep, "load_seconds", json_object_new_double(t_loaded - t0));
	json_object_object_add(rep, "seconds", json_object_new_double(now_s() - t0));
	log_write(LOG_INFO, im.info.guest_name, NULL, "libvirt domain %s restored from %s "
		"(%u file%s, %.2f s)", im.info.guest_name, file, n, n == 1 ? "" : "s", now_s() - t0);
out:
	if (dir[0]) {
		unlink(fifo);
		rmdir(dir);
	}
	lv_close(h);
	qckpt_image_free(&im);
	return rep;
}
