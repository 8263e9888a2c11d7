/*
 * libvirt domains in vmigrated (see libvirt_jobs.h): list and info, and
 * the live migration of a domain with vmigrate carrying QEMU's stream.
 *
 *   source host                                   destination host
 *   libvirtd --p2p (MigrateToURI3, unix://S) ---> libvirtd: QEMU -incoming unix:S
 *   QEMU --S--> lvd_run_outgoing                  lvd_run_incoming --S--> QEMU
 *                 parser -> record encoder          record decoder -> writer
 *                 ======== peer session (TLS), frames below ========>
 *                 <======= return path, frames ======================
 *
 * The destination's service learns of the job first (the "libvirt-in"
 * hello, before libvirt is asked), and connects to S once the first bytes
 * of the stream come: by then libvirt's Prepare has the QEMU listening.
 *
 * Frames on the session: le32 type, le32 length, payload. What crosses
 * the wire (normative; the payloads of EVENT and RECORDS are the messages
 * of vm/libvirt/QEMU-STREAM.md, "Carried as records"):
 *
 *   source -> destination
 *   4 EVENT   one event of QEMU's stream that is not a page (configuration,
 *             command, RAM section begin and end, block list, device state
 *             in pieces): 4 to QSREC_EVENT_MAX bytes
 *   5 RECORDS bytes of the ckpt-format stream of QEMU's RAM pages (one
 *             record, or the magic, a frame): 1 to QSREC_RECORDS_MAX bytes
 *   destination -> source
 *   1 DATA    bytes of the destination QEMU's return path, relayed as they
 *             come: 1 to LVD_FRAME_MAX bytes
 *   both ways
 *   2 END     the QEMU on the sender's side closed its end; no payload
 *   3 ABORT   the sender gives up; payload: why (text, at most 512 bytes)
 *
 * The order of the frames is the order of QEMU's stream: pages in RECORDS
 * frames sit between the EVENT frames of their section's begin and end.
 * Anything else (a type not of its direction, a length out of bounds)
 * ends the job as a protocol error: the destination QEMU's socket is
 * closed (libvirt then fails the migration and the domain stays on the
 * source). The destination hands QEMU no device state before every
 * record arrived with its checksum and the records' COMMIT matched.
 *
 * The job's figures go to jobs_dir/JOB.json (temp file, rename), where the
 * service reads them for `jobs` and the CLI's progress.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <dirent.h>
#include <time.h>
#include <unistd.h>

#include "fault.h"
#include "ipc.h"
#include "libvirt_host.h"
#include "libvirt_jobs.h"
#include "log.h"
#include "qemu_stream.h"
#include "qemu_stream_records.h"

#define LVD_FRAME_DATA		1
#define LVD_FRAME_END		2
#define LVD_FRAME_ABORT		3
#define LVD_FRAME_EVENT		4
#define LVD_FRAME_RECORDS	5
#define LVD_FRAME_MAX	(256u << 10)
#define LVD_WHY_MAX	512

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void announce(const struct lvd_config *c, const struct lvd_outgoing *o);

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

static bool safe_word(const char *s)
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
	if (!strcmp(ipc_str(req, "transport", "tcp"), "rdma"))
		return ipc_error(IPC_E_UNSUPPORTED, "libvirt domain '%s': --transport rdma is not offered for libvirt "
				 "domains (QEMU's stream rides the TLS session)", name);
	if (ipc_bool(req, "auto_converge", false))
		return ipc_error(IPC_E_UNSUPPORTED, "libvirt domain '%s': --auto-converge is not offered for libvirt "
				 "domains yet", name);
	if (strcmp(compress, "auto") && strcmp(compress, "lz4") && strcmp(compress, "off"))
		return ipc_error(IPC_E_BAD_ARGUMENT, "compress must be auto, lz4 or off");
	if (!safe_word(name) || strlen(name) > 64)
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
	o->peer = *pc;
	o->io_timeout_ms = io_timeout_ms;
	announce(c, o);	/* the job is there from the reply on, for the CLI's first look */
out:
	lv_close(h);
	return rep;
}

/* ---- the job's figures: jobs_dir/JOB.json ---- */

static void write_status(const char *jobs_dir, const char *job, struct json_object *o)
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

static struct json_object *read_status(const char *jobs_dir, const char *job)
{
	char path[1024];

	if (!safe_word(job))
		return NULL;
	snprintf(path, sizeof(path), "%s/%s.json", jobs_dir, job);
	return json_object_from_file(path);
}

struct json_object *lvd_job(struct lvd_config *c, const char *job)
{
	struct json_object *o = read_status(c->jobs_dir, job);

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
		o = read_status(c->jobs_dir, job);
		if (!o)
			continue;
		if (ipc_bool(o, "done", false) ? completed : running)
			json_object_array_add(jobs, o);
		else
			json_object_put(o);
	}
	closedir(d);
}

/* jobs_dir/JOB.cancel: the operator cancelled the job */
static void cancel_path(const char *jobs_dir, const char *job, char *path, size_t len)
{
	snprintf(path, len, "%s/%s.cancel", jobs_dir, job);
}

struct json_object *lvd_cancel(struct lvd_config *c, const char *job)
{
	struct json_object *o = read_status(c->jobs_dir, job), *rep;
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

		cancel_path(c->jobs_dir, job, path, sizeof(path));
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
	struct json_object *o = read_status(c->jobs_dir, job), *st;
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
	write_status(c->jobs_dir, job, o);
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

/* ---- frames on the session ---- */

static int frame_send(struct xport *x, uint32_t type, const void *buf, uint32_t len)
{
	uint8_t hdr[8];
	struct iovec iov[2] = { { hdr, 8 }, { (void *)buf, len } };

	for (int i = 0; i < 4; i++) {
		hdr[i] = (uint8_t)(type >> (8 * i));
		hdr[4 + i] = (uint8_t)(len >> (8 * i));
	}
	return xport_sendv(x, iov, len ? 2 : 1);
}

/* A frame's header: 0 or -errno, -EPROTO for a frame this protocol does
 * not have in that direction (from_source: EVENT, RECORDS, END, ABORT;
 * else DATA, END, ABORT), or of a length out of its bounds. */
static int frame_head(struct xport *x, bool from_source, uint32_t *type, uint32_t *len)
{
	uint8_t hdr[8];
	int ret = xport_recv_exact(x, hdr, 8);
	uint32_t t, n;

	if (ret)
		return ret;
	t = *type = hdr[0] | hdr[1] << 8 | hdr[2] << 16 | (uint32_t)hdr[3] << 24;
	n = *len = hdr[4] | hdr[5] << 8 | hdr[6] << 16 | (uint32_t)hdr[7] << 24;
	switch (t) {
	case LVD_FRAME_END:
		return n ? -EPROTO : 0;
	case LVD_FRAME_ABORT:
		return n > LVD_WHY_MAX ? -EPROTO : 0;
	case LVD_FRAME_DATA:
		return from_source || n == 0 || n > LVD_FRAME_MAX ? -EPROTO : 0;
	case LVD_FRAME_EVENT:
		return !from_source || n < 4 || n > QSREC_EVENT_MAX ? -EPROTO : 0;
	case LVD_FRAME_RECORDS:
		return !from_source || n == 0 || n > QSREC_RECORDS_MAX ? -EPROTO : 0;
	}
	return -EPROTO;
}

/* The encoder's messages as frames: EVENT or RECORDS. */
static int send_message(void *opaque, unsigned kind, const struct iovec *iov, int iovcnt)
{
	struct xport *x = opaque;
	uint32_t type = kind == QSREC_MSG_EVENT ? LVD_FRAME_EVENT : LVD_FRAME_RECORDS, len = 0;
	struct iovec v[10];
	uint8_t hdr[8];

	if (iovcnt > 9)
		return -EINVAL;
	for (int i = 0; i < iovcnt; i++)
		len += (uint32_t)iov[i].iov_len;
	if (type == LVD_FRAME_RECORDS)
		fault_corrupt_batch(iov, iovcnt, x->bytes_sent, 4u << 20);
	for (int i = 0; i < 4; i++) {
		hdr[i] = (uint8_t)(type >> (8 * i));
		hdr[4 + i] = (uint8_t)(len >> (8 * i));
	}
	v[0] = (struct iovec){ hdr, 8 };
	memcpy(v + 1, iov, (size_t)iovcnt * sizeof(*iov));
	return xport_sendv(x, v, iovcnt + 1);
}

static int write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;

	while (len) {
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static int unix_addr(struct sockaddr_un *a, const char *path)
{
	memset(a, 0, sizeof(*a));
	a->sun_family = AF_UNIX;
	if (strlen(path) >= sizeof(a->sun_path))
		return -ENAMETOOLONG;
	strcpy(a->sun_path, path);
	return 0;
}

/* ---- the source: libvirt's job, QEMU's stream out through the parser ---- */

struct outgoing {
	const struct lvd_config *c;
	const struct lvd_outgoing *o;
	pthread_mutex_t lock;
	/* under lock */
	uint64_t stream_bytes, wire_bytes, rp_bytes;
	uint64_t pages, zero_pages, device_bytes;
	uint64_t record_bytes, lz4_pages, raw_pages;	/* the encoder's */
	struct lv_job_stats lv;		/* libvirt's, while it runs */
	char status[16];
	char error[700];
	double started;
	bool done;
	/* the migration thread's result */
	atomic_bool mig_done;
	int mig_ret;
	char mig_err[600];
};

static struct json_object *outgoing_json(struct outgoing *g)
{
	struct json_object *o = json_object_new_object(), *st = json_object_new_object();
	double elapsed = now_s() - g->started;

	json_object_object_add(o, "job", json_object_new_string(g->o->job));
	json_object_object_add(o, "guest", json_object_new_string(g->o->name));
	json_object_object_add(o, "kind", json_object_new_string("libvirt"));
	json_object_object_add(o, "direction", json_object_new_string("outgoing"));
	json_object_object_add(o, "peer", json_object_new_string(g->o->dest));
	json_object_object_add(o, "pid", json_object_new_int(getpid()));
	json_object_object_add(o, "done", json_object_new_boolean(g->done));
	json_object_object_add(o, "round", json_object_new_int64((int64_t)g->lv.memory_iteration));
	json_object_object_add(o, "percent", json_object_new_double(g->done ? 100.0 :
		g->lv.data_total ? 100.0 * (double)g->lv.data_processed /
		(double)(g->lv.data_processed + g->lv.data_remaining + 1) : 0));
	json_object_object_add(st, "status", json_object_new_string(g->status));
	json_object_object_add(st, "error", json_object_new_string(g->error));
	json_object_object_add(st, "total_time_ms", json_object_new_int64(
		g->lv.elapsed_ms ? (int64_t)g->lv.elapsed_ms : (int64_t)(elapsed * 1000)));
	json_object_object_add(st, "downtime_ms", json_object_new_int64((int64_t)g->lv.downtime_ms));
	json_object_object_add(st, "rounds", json_object_new_int64((int64_t)g->lv.memory_iteration));
	json_object_object_add(st, "transferred_bytes", json_object_new_int64(
		(int64_t)g->wire_bytes));
	json_object_object_add(st, "remaining_bytes", json_object_new_int64(
		(int64_t)g->lv.data_remaining));
	json_object_object_add(st, "ram_total_bytes", json_object_new_int64(
		(int64_t)g->lv.data_total));
	json_object_object_add(st, "dirty_pages_rate", json_object_new_int64(
		(int64_t)g->lv.dirty_rate));
	json_object_object_add(st, "mbps", json_object_new_double(
		g->done ? (elapsed > 0 ? (double)g->wire_bytes * 8 / 1e6 / elapsed : 0) :
		(double)g->lv.memory_bps * 8 / 1e6));
	json_object_object_add(st, "qemu_stream_bytes", json_object_new_int64(
		(int64_t)g->stream_bytes));
	json_object_object_add(st, "return_path_bytes", json_object_new_int64(
		(int64_t)g->rp_bytes));
	json_object_object_add(st, "normal_pages", json_object_new_int64((int64_t)g->pages));
	json_object_object_add(st, "zero_pages", json_object_new_int64((int64_t)g->zero_pages));
	json_object_object_add(st, "device_bytes", json_object_new_int64((int64_t)g->device_bytes));
	json_object_object_add(st, "record_bytes", json_object_new_int64((int64_t)g->record_bytes));
	json_object_object_add(st, "compressed_pages", json_object_new_int64((int64_t)g->lz4_pages));
	json_object_object_add(st, "raw_pages", json_object_new_int64((int64_t)g->raw_pages));
	json_object_object_add(st, "compress", json_object_new_string(g->o->compress));
	json_object_object_add(st, "libvirt_data_processed", json_object_new_int64(
		(int64_t)g->lv.data_processed));
	json_object_object_add(o, "stats", st);
	return o;
}

static void outgoing_publish(struct outgoing *g)
{
	struct json_object *o;

	pthread_mutex_lock(&g->lock);
	o = outgoing_json(g);
	pthread_mutex_unlock(&g->lock);
	write_status(g->c->jobs_dir, g->o->job, o);
	json_object_put(o);
}

/* The job's first figures, written by the service before it replies. */
static void announce(const struct lvd_config *c, const struct lvd_outgoing *o)
{
	struct outgoing g = { .c = c, .o = o, .started = now_s() };
	struct json_object *j;

	snprintf(g.status, sizeof(g.status), "setup");
	j = outgoing_json(&g);
	write_status(c->jobs_dir, o->job, j);
	json_object_put(j);
}

static void *migrate_thread(void *opaque)
{
	struct outgoing *g = opaque;
	struct lv_host *h;
	char uri[420];
	/* no bandwidth for libvirt: the cap is vmigrate's, on the wire (the
	 * records, compressed), not on QEMU's stream before them */
	struct lv_migrate_params p = { .dest_uri = g->o->dest_uri, .migrate_uri = uri,
				       .max_downtime_ms = g->o->max_downtime_ms };

	snprintf(uri, sizeof(uri), "unix://%s", g->o->sock);
	h = lv_open(g->c->uri, g->mig_err, sizeof(g->mig_err));
	g->mig_ret = h ? lv_migrate(h, g->o->name, &p, g->mig_err, sizeof(g->mig_err)) : -EIO;
	lv_close(h);
	atomic_store(&g->mig_done, true);
	return NULL;
}

/* libvirt's figures twice a second, into the job's file. */
static void *stats_thread(void *opaque)
{
	struct outgoing *g = opaque;
	struct lv_host *h = lv_open(g->c->uri, (char[256]){ 0 }, 256);

	while (!atomic_load(&g->mig_done)) {
		struct lv_job_stats s;
		char err[256];

		if (h && lv_job_stats(h, g->o->name, false, &s, err, sizeof(err)) == 0 && s.active) {
			pthread_mutex_lock(&g->lock);
			g->lv = s;
			if (!strcmp(g->status, "setup") && s.data_processed)
				snprintf(g->status, sizeof(g->status), "active");
			pthread_mutex_unlock(&g->lock);
		}
		outgoing_publish(g);
		/* half a second, but the job's end is not kept waiting for it */
		for (int i = 0; i < 10 && !atomic_load(&g->mig_done); i++)
			usleep(50000);
	}
	lv_close(h);
	return NULL;
}

static void outgoing_fail(struct outgoing *g, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static void outgoing_fail(struct outgoing *g, const char *fmt, ...)
{
	va_list ap;

	pthread_mutex_lock(&g->lock);
	if (!g->error[0]) {
		va_start(ap, fmt);
		vsnprintf(g->error, sizeof(g->error), fmt, ap);
		va_end(ap);
	}
	pthread_mutex_unlock(&g->lock);
}

static bool outgoing_failed(struct outgoing *g)
{
	bool f;

	pthread_mutex_lock(&g->lock);
	f = g->error[0] != 0;
	pthread_mutex_unlock(&g->lock);
	return f;
}

static int src_rp(void *opaque, const struct qstream_rp_msg *m)
{
	(void)opaque;
	(void)m;
	return 0;
}

/* Wait for the source QEMU on the listening socket, as long as libvirt's
 * job runs (its Prepare on the destination comes first). */
static int accept_qemu(struct outgoing *g, int l)
{
	while (!atomic_load(&g->mig_done)) {
		struct pollfd p = { .fd = l, .events = POLLIN };
		int n = poll(&p, 1, 200);

		if (n < 0 && errno != EINTR)
			return -errno;
		if (n == 1)
			return accept4(l, NULL, NULL, SOCK_CLOEXEC);
	}
	return -ECANCELED;
}

/* What a failed send on the session says: a peer that went away, by name. */
static void session_failed(struct outgoing *g, int err)
{
	if (err == -EPIPE || err == -ECONNRESET)
		outgoing_fail(g, "the destination's service: it closed the session (%s)",
			      strerror(-err));
	else
		outgoing_fail(g, "the session to %s: %s", g->o->dest, strerror(-err));
}

/* The parser stopped: QEMU's stream was refused, or the encoder (or the
 * session under it) failed. */
static void stream_failed(struct outgoing *g, struct qstream_parser *p,
			  struct qsrec_encoder *enc, struct xport *x)
{
	if (qstream_parser_error(p) != QSTREAM_E_CONSUMER)
		outgoing_fail(g, "QEMU's stream: %s", qstream_parser_errmsg(p));
	else if (x->err)
		session_failed(g, x->err);
	else
		outgoing_fail(g, "QEMU's stream: %s", qsrec_encoder_errmsg(enc));
}

static void outgoing_count(struct outgoing *g, struct qstream_parser *p,
			   struct qsrec_encoder *enc, struct xport *x, size_t len)
{
	const struct qstream_stats *s = qstream_parser_stats(p);
	struct qsrec_enc_stats es;

	qsrec_encoder_stats(enc, &es);
	pthread_mutex_lock(&g->lock);
	g->stream_bytes += (uint64_t)len;
	g->wire_bytes = x->bytes_sent;
	g->pages = s->pages;
	g->zero_pages = s->zero_pages;
	g->device_bytes = s->device_bytes;
	g->record_bytes = es.record_bytes;
	g->lz4_pages = es.pages[CKPT_ENC_LZ4];
	g->raw_pages = es.pages[CKPT_ENC_RAW];
	pthread_mutex_unlock(&g->lock);
}

/* QEMU's stream to the session as records and events, and the return path
 * back, until both QEMU closed its end and the destination said END, or
 * something failed. */
static void relay_out(struct outgoing *g, int q, struct xport *x)
{
	static uint8_t buf[LVD_FRAME_MAX];
	struct qsrec_out out = { send_message, x };
	struct qsrec_enc_opts eo = {
		.guest_name = g->o->name,
		.lz4 = strcmp(g->o->compress, "off") != 0,
		.lz4_auto = strcmp(g->o->compress, "auto") == 0,
	};
	struct qsrec_encoder *enc = qsrec_encoder_new(&out, &eo);
	struct qstream_parser *p = enc ? qstream_parser_new(qsrec_encoder_event, enc) : NULL;
	struct qstream_rp_parser *rp = qstream_rp_parser_new(src_rp, g);
	bool q_eof = false, dest_end = false;

	if (!p || !rp) {
		outgoing_fail(g, "out of memory");
		goto out;
	}
	while (!(q_eof && dest_end) && !outgoing_failed(g)) {
		struct pollfd pfd[2] = {
			{ .fd = q_eof ? -1 : q, .events = POLLIN },
			{ .fd = xport_fd(x), .events = POLLIN },
		};
		int n;

		if (xport_poll_in(x, 0) > 0) {
			uint32_t type, len;
			int ret = frame_head(x, false, &type, &len);

			if (!ret && len)
				ret = xport_recv_exact(x, buf, len);
			if (ret) {
				outgoing_fail(g, "the destination's service: %s", ret == -EPROTO ?
					      "a frame this protocol does not have" :
					      ret == -EPIPE ? "it closed the session" : strerror(-ret));
				break;
			}
			if (type == LVD_FRAME_ABORT) {
				outgoing_fail(g, "the destination gave up: %.*s", (int)len, buf);
				break;
			}
			if (type == LVD_FRAME_END) {
				dest_end = true;
				continue;
			}
			pthread_mutex_lock(&g->lock);
			g->rp_bytes += len;
			pthread_mutex_unlock(&g->lock);
			if (qstream_rp_parser_feed(rp, buf, len)) {
				outgoing_fail(g, "the destination QEMU's return path: %s",
					      qstream_rp_parser_errmsg(rp));
				break;
			}
			/* a source QEMU that closed needs no more answers */
			if (!q_eof) {
				ret = write_all(q, buf, len);
				if (ret && ret != -EPIPE && ret != -ECONNRESET) {
					outgoing_fail(g, "writing QEMU's return path: %s",
						      strerror(-ret));
					break;
				}
			}
			continue;
		}
		n = poll(pfd, 2, 200);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			outgoing_fail(g, "poll: %s", strerror(errno));
			break;
		}
		if (n == 0) {
			/* libvirt ended its job with QEMU's stream still open */
			if (atomic_load(&g->mig_done) && g->mig_ret && !q_eof)
				break;
			continue;
		}
		if (!q_eof && pfd[0].revents) {
			ssize_t len = read(q, buf, sizeof(buf));

			if (len < 0 && errno == EINTR)
				continue;
			if (len < 0 && errno != ECONNRESET) {
				outgoing_fail(g, "reading QEMU's stream: %s", strerror(errno));
				break;
			}
			if (len <= 0) {
				q_eof = true;
				if (qstream_parser_finish(p)) {
					stream_failed(g, p, enc, x);
					break;
				}
				if (frame_send(x, LVD_FRAME_END, NULL, 0)) {
					session_failed(g, x->err);
					break;
				}
				continue;
			}
			/* the encoder sends what the parser hands it */
			if (qstream_parser_feed(p, buf, (size_t)len)) {
				stream_failed(g, p, enc, x);
				break;
			}
			outgoing_count(g, p, enc, x, (size_t)len);
		}
	}
	if (outgoing_failed(g)) {
		char why[LVD_WHY_MAX];

		pthread_mutex_lock(&g->lock);
		snprintf(why, sizeof(why), "%.500s", g->error);
		pthread_mutex_unlock(&g->lock);
		frame_send(x, LVD_FRAME_ABORT, why, (uint32_t)strlen(why));
	}
	pthread_mutex_lock(&g->lock);
	g->wire_bytes = x->bytes_sent;
	pthread_mutex_unlock(&g->lock);
out:
	qstream_parser_free(p);
	qsrec_encoder_free(enc);
	qstream_rp_parser_free(rp);
}

_Noreturn void lvd_run_outgoing(const struct lvd_config *c, const struct lvd_outgoing *o)
{
	static struct outgoing g;
	struct peer_session ps;
	struct sockaddr_un a;
	pthread_t mt, stt;
	char err[512], host[256], title[16];
	int l = -1, q = -1, fd;
	bool have_mt = false, have_stt = false, cancelled;

	setsid();
	snprintf(title, sizeof(title), "vmg:lv:%.8s", o->name);
	prctl(PR_SET_NAME, title);
	signal(SIGPIPE, SIG_IGN);
	g.c = c;
	g.o = o;
	pthread_mutex_init(&g.lock, NULL);
	g.started = now_s();
	snprintf(g.status, sizeof(g.status), "setup");
	outgoing_publish(&g);

	/* our socket first: QEMU dials it as soon as libvirt says so */
	if (unix_addr(&a, o->sock)) {
		outgoing_fail(&g, "socket path too long: %s", o->sock);
		goto end;
	}
	l = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	unlink(o->sock);
	if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof(a)) || listen(l, 1)) {
		outgoing_fail(&g, "%s: %s", o->sock, strerror(errno));
		goto end;
	}
	chmod(o->sock, 0600);
	/* then the destination's service learns of the job */
	fd = peer_connect(o->dest, o->io_timeout_ms, host, sizeof(host), err, sizeof(err));
	if (fd < 0 || peer_dial(&o->peer, fd, host, "libvirt-in", o->name, o->job, NULL, 0, false,
				false, &ps, err, sizeof(err))) {
		outgoing_fail(&g, "%s", err);
		goto end;
	}
	ps.control->idle_ok = true;	/* libvirt's Prepare may take a while */
	if (o->bandwidth) {
		static struct xport_bucket bucket;

		xport_bucket_init(&bucket, o->bandwidth);
		ps.control->bucket = &bucket;
	}
	log_write(LOG_INFO, o->name, o->job, "migrating libvirt domain %s to %s (libvirt at %s) "
		"as job %s, QEMU's stream through %s", o->name, o->dest, o->dest_uri, o->job,
		o->sock);
	if (pthread_create(&mt, NULL, migrate_thread, &g)) {
		outgoing_fail(&g, "pthread_create: %s", strerror(errno));
		peer_session_close(&ps);
		goto end;
	}
	have_mt = true;
	have_stt = pthread_create(&stt, NULL, stats_thread, &g) == 0;
	q = accept_qemu(&g, l);
	close(l);
	l = -1;
	unlink(o->sock);
	if (q >= 0) {
		relay_out(&g, q, ps.control);
		close(q);	/* a failed relay: QEMU's migration fails, the domain stays */
	}
	peer_session_close(&ps);
end:
	if (l >= 0) {
		close(l);
		unlink(o->sock);
	}
	if (have_mt)
		pthread_join(mt, NULL);
	else
		atomic_store(&g.mig_done, true);
	if (have_stt)
		pthread_join(stt, NULL);
	{
		/* libvirt's final figures: where the domain is now (a transient
		 * domain that moved is gone from here, and its job with it) */
		bool moved = have_mt && !g.mig_ret;
		struct lv_host *h = lv_open(moved ? o->dest_uri : c->uri, err, sizeof(err));
		struct lv_job_stats s;

		if (h && lv_job_stats(h, o->name, true, &s, err, sizeof(err)) == 0 && s.active) {
			pthread_mutex_lock(&g.lock);
			g.lv = s;
			pthread_mutex_unlock(&g.lock);
		}
		lv_close(h);
	}
	pthread_mutex_lock(&g.lock);
	{
		char path[1024];

		cancel_path(c->jobs_dir, o->job, path, sizeof(path));
		cancelled = unlink(path) == 0;
	}
	if (have_mt && g.mig_ret && (cancelled || strstr(g.mig_err, "cancel")))
		snprintf(g.status, sizeof(g.status), "cancelled");
	else
		snprintf(g.status, sizeof(g.status), have_mt && !g.mig_ret ? "completed" : "failed");
	if (have_mt && g.mig_ret && !g.error[0])
		snprintf(g.error, sizeof(g.error), "%s", g.mig_err);
	else if (have_mt && g.mig_ret && strlen(g.error) + 3 < sizeof(g.error))
		snprintf(g.error + strlen(g.error), sizeof(g.error) - strlen(g.error), " (%s)",
			 g.mig_err);
	g.done = true;
	pthread_mutex_unlock(&g.lock);
	outgoing_publish(&g);
	if (!strcmp(g.status, "completed"))
		log_write(LOG_INFO, o->name, o->job, "libvirt domain %s runs on %s now (job %s, "
			"%llu bytes of QEMU's stream, %llu on the wire)", o->name, o->dest, o->job,
			(unsigned long long)g.stream_bytes, (unsigned long long)g.wire_bytes);
	else
		log_write(LOG_WARNING, o->name, o->job, "job %s %s: %s; the domain stays here",
			o->job, g.status, g.error);
	_exit(strcmp(g.status, "completed") ? 1 : 0);
}

/* ---- the destination: the stream re-synthesised into QEMU ---- */

struct incoming {
	int q;
	struct qstream_writer *w;
	uint64_t bytes;
	const char *path;		/* the destination QEMU's socket */
	char err[400];			/* why it could not be reached */
};

static int connect_qemu(const char *path, char *err, size_t errlen);

/* Why the decoder stopped, or the writer when only a flush failed. */
static const char *decode_error_text(const struct qsrec_decoder *d,
					    const struct qstream_writer *w)
{
	return qstream_writer_error(w) && !strcmp(qsrec_decoder_errmsg(d), "no error") ?
	       qstream_writer_errmsg(w) : qsrec_decoder_errmsg(d);
}

/* The first bytes the writer has for QEMU open its socket: a stream the
 * parser rejects at once never reaches QEMU at all. */
static int to_qemu(void *opaque, const void *buf, size_t len)
{
	struct incoming *in = opaque;

	if (in->q < 0 && (in->q = connect_qemu(in->path, in->err, sizeof(in->err))) < 0)
		return -EIO;
	in->bytes += len;
	return write_all(in->q, buf, len);
}

/* The destination QEMU's socket: libvirt's Prepare made it listen before
 * the source QEMU sent a byte, so it is there; a few tries for a slow one. */
static int connect_qemu(const char *path, char *err, size_t errlen)
{
	struct sockaddr_un a;
	int s;

	if (unix_addr(&a, path)) {
		snprintf(err, errlen, "socket path too long: %s", path);
		return -1;
	}
	for (int i = 0; i < 50; i++) {
		s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (s < 0)
			break;
		if (connect(s, (struct sockaddr *)&a, sizeof(a)) == 0)
			return s;
		close(s);
		if (errno != ENOENT && errno != ECONNREFUSED)
			break;
		usleep(100000);
	}
	snprintf(err, errlen, "the destination QEMU's socket %s: %s", path, strerror(errno));
	return -1;
}

/* After an ABORT, read what the source still sends until it reads the
 * ABORT and closes (at most a few seconds): closing with its frames
 * unread would reset the connection, and the reset can discard the ABORT
 * before the source reads why. */
static void drain_source(struct xport *x, uint8_t *buf)
{
	double until = now_s() + 5;

	while (now_s() < until && xport_poll_in(x, 200) > 0) {
		uint32_t type, len;

		if (frame_head(x, true, &type, &len))
			return;
		while (len) {
			uint32_t n = len < LVD_FRAME_MAX ? len : LVD_FRAME_MAX;

			if (xport_recv_exact(x, buf, n))
				return;
			len -= n;
		}
	}
}

_Noreturn void lvd_run_incoming(const char *sock_dir, const char *jobs_dir,
				const struct peer_config *pc, struct xport *x,
				const struct peer_hello *h)
{
	static uint8_t buf[LVD_FRAME_MAX];
	struct incoming in = { .q = -1 };
	struct qstream_sink sink = { to_qemu, &in };
	struct qsrec_decoder *dec = NULL;
	char path[400], err[600] = "", title[16];
	bool src_end = false, q_eof = false;
	double started = now_s();

	(void)pc;
	snprintf(title, sizeof(title), "vmg:lv-in");
	prctl(PR_SET_NAME, title);
	if (!safe_word(h->job) || !safe_word(h->name)) {
		peer_answer(x, false, "a libvirt-in hello with a job or name that is not a plain word");
		log_write(LOG_WARNING, NULL, NULL, "refused a libvirt migration: bad job name");
		_exit(1);
	}
	snprintf(path, sizeof(path), "%s/qemu-%s.sock", sock_dir, h->job);
	in.path = path;
	in.w = qstream_writer_new(&sink);
	dec = in.w ? qsrec_decoder_new(in.w) : NULL;
	if (!dec) {
		peer_answer(x, false, "out of memory");
		_exit(1);
	}
	if (peer_answer(x, true, NULL))
		_exit(1);
	x->idle_ok = true;	/* libvirt's Prepare here, then the stream */
	log_write(LOG_INFO, h->name, h->job, "incoming libvirt domain %s (job %s): its stream "
		"goes into %s", h->name, h->job, path);
	{
		struct json_object *o = json_object_new_object();

		json_object_object_add(o, "job", json_object_new_string(h->job));
		json_object_object_add(o, "guest", json_object_new_string(h->name));
		json_object_object_add(o, "kind", json_object_new_string("libvirt"));
		json_object_object_add(o, "direction", json_object_new_string("incoming"));
		json_object_object_add(o, "pid", json_object_new_int(getpid()));
		json_object_object_add(o, "done", json_object_new_boolean(0));
		write_status(jobs_dir, h->job, o);
		json_object_put(o);
	}
	while (!(src_end && q_eof) && !err[0]) {
		struct pollfd pfd[2] = {
			{ .fd = in.q < 0 || q_eof ? -1 : in.q, .events = POLLIN },
			{ .fd = src_end ? -1 : xport_fd(x), .events = POLLIN },
		};
		int n;

		if (!src_end && xport_poll_in(x, 0) > 0) {
			uint32_t type, len;
			int ret = frame_head(x, true, &type, &len);
			uint8_t *space = buf;

			if (!ret && (type == LVD_FRAME_EVENT || type == LVD_FRAME_RECORDS)) {
				space = qsrec_decoder_space(dec, type == LVD_FRAME_EVENT ?
							    QSREC_MSG_EVENT : QSREC_MSG_RECORDS, len);
				if (!space)
					ret = -ENOMEM;
			}
			if (!ret && len)
				ret = xport_recv_exact(x, space, len);
			if (ret) {
				snprintf(err, sizeof(err), "the source's service: %s", ret == -EPROTO ?
					 "a frame this protocol does not have" : ret == -EPIPE ?
					 "it closed the session before the stream ended" :
					 strerror(-ret));
				break;
			}
			if (type == LVD_FRAME_ABORT) {
				snprintf(err, sizeof(err), "the source gave up: %.*s", (int)len, buf);
				break;
			}
			if (type == LVD_FRAME_END) {
				src_end = true;
				ret = qsrec_decoder_finish(dec);
			} else {
				ret = qsrec_decoder_message(dec, type == LVD_FRAME_EVENT ?
							    QSREC_MSG_EVENT : QSREC_MSG_RECORDS, len);
				if (!ret)
					ret = qstream_writer_flush(in.w);
			}
			/* refused input (-EBADMSG, or -EINVAL from the writer's
			 * rules) is the source's; a failed write is QEMU's */
			if (ret)
				snprintf(err, sizeof(err), "%s: %s", in.err[0] ? "the destination QEMU" :
					 ret == -EBADMSG || ret == -EINVAL ? "the source's stream" :
					 "the destination QEMU", in.err[0] ? in.err :
					 decode_error_text(dec, in.w));
			if (src_end && !err[0]) {
				if (in.q >= 0)
					shutdown(in.q, SHUT_WR);
				else
					q_eof = true;
			}
			continue;
		}
		n = poll(pfd, 2, 1000);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			snprintf(err, sizeof(err), "poll: %s", strerror(errno));
			break;
		}
		if (in.q >= 0 && !q_eof && pfd[0].revents) {
			ssize_t len = read(in.q, buf, sizeof(buf));

			if (len < 0 && errno == EINTR)
				continue;
			if (len <= 0) {
				q_eof = true;
				if (!src_end && !qsrec_decoder_device_begun(dec))
					snprintf(err, sizeof(err), "the destination QEMU closed "
						 "before the stream ended");
				continue;
			}
			if (frame_send(x, LVD_FRAME_DATA, buf, (uint32_t)len))
				snprintf(err, sizeof(err), "the session back to the source: %s",
					 strerror(-x->err));
		}
	}
	if (err[0]) {
		frame_send(x, LVD_FRAME_ABORT, err, (uint32_t)strnlen(err, LVD_WHY_MAX));
		if (!src_end)
			drain_source(x, buf);
	} else {
		frame_send(x, LVD_FRAME_END, NULL, 0);
	}
	if (in.q >= 0)
		close(in.q);	/* on a failure the destination QEMU fails its incoming */
	/* QEMU listens once: connected to or gone (a cancelled job), its
	 * socket file is of no more use, and it lies in our directory */
	unlink(path);
	{
		struct json_object *o = json_object_new_object(), *st = json_object_new_object();

		json_object_object_add(o, "job", json_object_new_string(h->job));
		json_object_object_add(o, "guest", json_object_new_string(h->name));
		json_object_object_add(o, "kind", json_object_new_string("libvirt"));
		json_object_object_add(o, "direction", json_object_new_string("incoming"));
		json_object_object_add(o, "done", json_object_new_boolean(1));
		json_object_object_add(st, "status", json_object_new_string(err[0] ? "failed" :
									    "completed"));
		json_object_object_add(st, "error", json_object_new_string(err));
		json_object_object_add(st, "total_time_ms", json_object_new_int64(
			(int64_t)((now_s() - started) * 1000)));
		json_object_object_add(st, "transferred_bytes", json_object_new_int64(
			(int64_t)x->bytes_received));
		json_object_object_add(st, "qemu_stream_bytes", json_object_new_int64(
			(int64_t)in.bytes));
		json_object_object_add(st, "record_bytes", json_object_new_int64(
			(int64_t)qsrec_decoder_record_bytes(dec)));
		json_object_object_add(o, "stats", st);
		write_status(jobs_dir, h->job, o);
		json_object_put(o);
	}
	if (err[0])
		log_write(LOG_WARNING, h->name, h->job, "incoming libvirt job %s failed: %s", h->job,
			err);
	else
		log_write(LOG_INFO, h->name, h->job, "incoming libvirt job %s: %llu bytes of QEMU's "
			"stream written", h->job, (unsigned long long)in.bytes);
	xport_close(x);
	qsrec_decoder_free(dec);
	qstream_writer_free(in.w);
	_exit(err[0] ? 1 : 0);
}
