/*
 * vmigrated: the service on each host. It starts guests, each in a process
 * of its own (worker.c), answers the CLI on a local control socket, and
 * accepts incoming migrations from peers. What runs is known from the
 * guests' sockets in the state directory, so a restarted service finds its
 * guests again and a crashed guest takes nothing else down.
 *
 * Peer connection: the source's service dials the destination's, sends one
 * JSON line {"op":"migrate-in","name":...}; the destination forks the
 * receiving guest process, which answers {"ok":true} and then reads the
 * migration stream. The source's service hands its end to its guest
 * process, which sends the stream itself.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <grp.h>
#include <dirent.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <systemd/sd-daemon.h>
#include <time.h>
#include <unistd.h>

#include "conf.h"
#include "guest_lock.h"
#include "guest_ram.h"
#include "ipc.h"
#include "libvirt_jobs.h"
#include "joblog.h"
#include "log.h"
#include "metrics.h"
#include "peer.h"
#include "peer_check.h"
#include "snapshot.h"
#include "libvirt_snapshot.h"
#include "qemu_ckpt.h"
#include "transport.h"
#include "version.h"
#include "worker.h"

#define WORKER_CALL_MS		10000
#define READY_TIMEOUT_MS	60000

#define STATUS_EVERY_S		10	/* systemd's STATUS= line, at least this often */

struct service {
	char state_dir[400];
	char guests_dir[512];
	char control_path[512];
	char report_path[600];		/* guests/reports.socket: job results of
					 * its guest processes, no one else's */
	char listen_addr[256];
	gid_t group;
	bool has_group;
	mode_t control_mode;
	int io_timeout_ms;
	int log_level;
	int control_fd, peer_fd, report_fd;
	int lock_fd;			/* state_dir/vmigrated.lock, held while we run */
	struct peer_config peer;
	char metrics_addr[256];		/* --metrics: "" for none */
	struct metrics *metrics;	/* counters, and their HTTP listener */
	struct lvd_config lv;		/* the host's libvirt (libvirt_jobs.h) */
	/* systemd (sd_notify); all of the main thread only */
	long long watchdog_ms;		/* the unit's watchdog interval, 0 = none */
	long long watchdog_at;		/* last WATCHDOG=1 */
	double status_at;		/* last STATUS= */
	bool status_due;		/* a request may have changed it */
};

static volatile sig_atomic_t quit;

static void on_quit(int sig)
{
	(void)sig;
	quit = 1;
}

static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
}

/*
 * WATCHDOG=1, from the main thread only, so a hung service is restarted:
 * at each round of the main loop, and while it waits for a guest process
 * (up to that request's own timeout), at a quarter of the interval.
 */
static void watchdog_ping(struct service *sv)
{
	long long t;

	if (!sv->watchdog_ms)
		return;
	t = now_ms();
	if (t - sv->watchdog_at >= sv->watchdog_ms / 4) {
		sd_notify(0, "WATCHDOG=1");
		sv->watchdog_at = t;
	}
}

static void watchdog_tick(void *opaque)
{
	watchdog_ping(opaque);
}

/* ---- guests, found by their sockets ------------------------------------------ */

static struct json_object *call_guest_within(struct service *sv, const char *name,
					     struct json_object *req, int fd, int timeout_ms)
{
	char path[600], err[700];
	struct json_object *rep;

	worker_sock_path(sv->guests_dir, name, path, sizeof(path));
	rep = ipc_call_tick(path, req, fd, timeout_ms, watchdog_tick, sv, err, sizeof(err));
	if (!rep) {
		pid_t holder = guest_lock_holder(sv->guests_dir, name);
		struct stat st;

		if (holder)
			return ipc_error(IPC_E_NOT_ANSWERING, "guest '%s' (process %d) is not answering: %s", name,
					 (int)holder, err);
		if (stat(path, &st) != 0)
			return ipc_error(IPC_E_NOT_FOUND, "no guest named '%s' on this host", name);
		return ipc_error(IPC_E_NOT_ANSWERING, "guest '%s' does not answer: %s", name, err);
	}
	return rep;
}

static struct json_object *call_guest(struct service *sv, const char *name,
				      struct json_object *req, int fd)
{
	return call_guest_within(sv, name, req, fd, WORKER_CALL_MS);
}

static struct json_object *simple_call(struct service *sv, const char *name, const char *cmd)
{
	struct json_object *req = json_object_new_object(), *rep;

	json_object_object_add(req, "cmd", json_object_new_string(cmd));
	rep = call_guest(sv, name, req, -1);
	json_object_put(req);
	return rep;
}

/* A guest's name from a directory entry NAME.sock or NAME.lock. */
static bool entry_name(const char *entry, char *name, size_t len)
{
	size_t n = strlen(entry);

	if (n < 6 || n - 5 >= len ||
	    (strcmp(entry + n - 5, ".sock") && strcmp(entry + n - 5, ".lock")))
		return false;
	memcpy(name, entry, n - 5);
	name[n - 5] = 0;
	return true;
}

/* One guest as list shows it, or NULL when nothing of it is left. A
 * guest whose process holds its name but does not answer is listed as
 * "not answering", never left out: a start under its name would fail. */
static struct json_object *probe_guest(struct service *sv, const char *name)
{
	struct json_object *req = json_object_new_object(), *rep;
	char path[600], err[700];
	pid_t holder;

	worker_sock_path(sv->guests_dir, name, path, sizeof(path));
	json_object_object_add(req, "cmd", json_object_new_string("info"));
	watchdog_ping(sv);	/* many guests not answering take 2 s each */
	rep = access(path, F_OK) == 0 ? ipc_call(path, req, -1, 2000, err, sizeof(err)) : NULL;
	json_object_put(req);
	if (rep)
		return rep;
	holder = guest_lock_holder(sv->guests_dir, name);
	if (!holder) {
		if (access(path, F_OK) == 0 && (errno == ECONNREFUSED ||
						strstr(err, "Connection refused"))) {
			log_write(LOG_NOTICE, name, NULL, "guest %s is gone; removing its socket",
				name);
			unlink(path);
		}
		return NULL;
	}
	rep = ipc_ok();
	json_object_object_add(rep, "name", json_object_new_string(name));
	json_object_object_add(rep, "state", json_object_new_string("not answering"));
	json_object_object_add(rep, "pid", json_object_new_int(holder > 0 ? holder : 0));
	return rep;
}

/* Every guest of this host, from the sockets and name locks. */
static struct json_object *scan_guests(struct service *sv)
{
	struct json_object *arr = json_object_new_array(), *seen = json_object_new_object();
	DIR *d = opendir(sv->guests_dir);
	struct dirent *e;

	while (d && (e = readdir(d))) {
		struct json_object *g;
		char name[64];

		if (!entry_name(e->d_name, name, sizeof(name)) ||
		    json_object_object_get_ex(seen, name, NULL))
			continue;
		json_object_object_add(seen, name, NULL);
		if ((g = probe_guest(sv, name))) {
			json_object_object_del(g, "ok");	/* the envelope's, not the item's */
			json_object_array_add(arr, g);
		}
	}
	if (d)
		closedir(d);
	json_object_put(seen);
	return arr;
}

/* NULL when the name is free here, else the error that says who has it.
 * The guest process takes the name itself (guest_lock.h), so two starts
 * racing still cannot both have it; this is for a clear message. */
static struct json_object *name_taken(struct service *sv, const char *name)
{
	pid_t holder = guest_lock_holder(sv->guests_dir, name);
	struct json_object *g;

	if (!holder)
		return NULL;
	g = probe_guest(sv, name);
	if (g && !strcmp(ipc_str(g, "state", ""), "not answering")) {
		json_object_put(g);
		return ipc_error(IPC_E_EXISTS, "a guest named '%s' already runs here (process %d) but is not "
				 "answering: it keeps the name until it ends", name, (int)holder);
	}
	json_object_put(g);
	return ipc_error(IPC_E_EXISTS, "a guest named '%s' already runs here", name);
}

/* Guests that moved away while no service watched (it was killed during
 * their migration): nobody collects their result now, so they go. */
static void reap_moved_away(struct service *sv, struct json_object *guests)
{
	for (size_t i = 0; i < json_object_array_length(guests); i++) {
		struct json_object *g = json_object_array_get_idx(guests, i);
		const char *name = ipc_str(g, "name", "");

		if (strcmp(ipc_str(g, "state", ""), "migrated"))
			continue;
		json_object_put(simple_call(sv, name, "exit"));
		log_write(LOG_INFO, name, ipc_str(g, "job", NULL), "guest %s had moved away (job "
			"%s); its process ends", name, ipc_str(g, "job", "?"));
	}
}

/* In a child of the service: drop what is the service's (its sockets, its
 * state-dir lock) and its signal handling. */
static void leave_service(const struct service *sv)
{
	close(sv->control_fd);
	close(sv->peer_fd);
	close(sv->report_fd);
	close(sv->lock_fd);
	signal(SIGTERM, SIG_DFL);
	signal(SIGCHLD, SIG_DFL);
}

/* Fork a guest process; its first line on the socket pair says how it went. */
static struct json_object *spawn(struct service *sv, const struct worker_spec *spec,
				  const char *restore_file, const char *key_file, bool lazy)
{
	int pipefd[2];
	pid_t pid;
	struct json_object *rep;

	/* a socket, not a pipe: ipc_recv reads with recvmsg */
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pipefd) < 0)
		return ipc_error(ipc_errno_code(errno), "socketpair: %s", strerror(errno));
	fflush(NULL);
	pid = fork();
	if (pid < 0) {
		close(pipefd[0]);
		close(pipefd[1]);
		return ipc_error(ipc_errno_code(errno), "fork: %s", strerror(errno));
	}
	if (pid == 0) {
		close(pipefd[0]);
		leave_service(sv);
		if (restore_file)
			worker_run_restore(spec, restore_file, key_file, lazy, pipefd[1]);
		worker_run_boot(spec, pipefd[1]);
	}
	close(pipefd[1]);
	rep = ipc_recv(pipefd[0], NULL, READY_TIMEOUT_MS);
	close(pipefd[0]);
	if (!rep) {
		kill(pid, SIGKILL);
		return ipc_error(IPC_E_TIMEOUT, "guest process for '%s' did not come up", spec->name);
	}
	return rep;
}

/* ---- control requests ----------------------------------------------------- */

/* This service's port for peers (0 when it cannot tell): where a peer
 * dials back to it. */
static int listen_port(const struct service *sv)
{
	char host[256], port[32];

	if (xport_split_hostport(sv->listen_addr, PEER_DEFAULT_PORT, host, sizeof(host), port,
				 sizeof(port)))
		return 0;
	return (int)strtol(port, NULL, 10);
}

/* What every guest process of this service gets from it. */
static void spec_from_service(const struct service *sv, struct worker_spec *spec)
{
	snprintf(spec->dir, sizeof(spec->dir), "%s", sv->guests_dir);
	spec->io_timeout_ms = sv->io_timeout_ms;
	spec->peer = sv->peer;
	snprintf(spec->control, sizeof(spec->control), "%s", sv->report_path);
	spec->home_port = listen_port(sv);
	snprintf(spec->lv_sock_dir, sizeof(spec->lv_sock_dir), "%s", sv->lv.sock_dir);
	snprintf(spec->lv_jobs_dir, sizeof(spec->lv_jobs_dir), "%s", sv->lv.jobs_dir);
}

static struct json_object *do_start(struct service *sv, struct json_object *req)
{
	struct worker_spec spec;
	char err[256];
	struct json_object *rep;

	if (worker_spec_from_json(req, &spec, err, sizeof(err)))
		return ipc_error(IPC_E_BAD_ARGUMENT, "%s", err);
	if ((rep = name_taken(sv, spec.name)))
		return rep;
	spec_from_service(sv, &spec);
	spec.vcpus = spec.vcpus ? spec.vcpus : 1;
	return spawn(sv, &spec, NULL, NULL, false);	/* the guest process logs its start */
}

static struct json_object *do_restore(struct service *sv, struct json_object *req)
{
	const char *file = ipc_str(req, "file", NULL), *name = ipc_str(req, "name", NULL);
	struct snap_inspect in;
	struct worker_spec spec;
	struct json_object *rep;
	char err[512];
	int ret;

	if (!file || file[0] != '/')
		return ipc_error(IPC_E_BAD_ARGUMENT, "restore needs an absolute file name");
	if ((ret = snap_inspect(file, NULL, 0, &in, err, sizeof(err))))
		return ipc_error(ipc_errno_code(ret), "%s", err);
	memset(&spec, 0, sizeof(spec));
	snprintf(spec.name, sizeof(spec.name), "%s", name && *name ? name : in.info.guest_name);
	if (!spec.name[0] || strchr(spec.name, '/'))
		return ipc_error(IPC_E_BAD_ARGUMENT, "restore needs a guest name (--name)");
	if ((rep = name_taken(sv, spec.name)))
		return rep;
	spec_from_service(sv, &spec);
	/* the guest process logs the restore */
	return spawn(sv, &spec, file, ipc_str(req, "key_file", NULL), ipc_bool(req, "lazy", false));
}

/* The micro-VM guests (kind kvm), then the host's libvirt domains. */
static struct json_object *do_list(struct service *sv)
{
	struct json_object *rep = ipc_ok(), *guests = scan_guests(sv);

	for (size_t i = 0; i < json_object_array_length(guests); i++)
		json_object_object_add(json_object_array_get_idx(guests, i), "kind",
				       json_object_new_string("kvm"));
	lvd_list(&sv->lv, guests);
	json_object_object_add(rep, "guests", guests);
	return rep;
}

/* Whether a micro-VM guest of that name is here (its socket or its lock). */
static bool own_guest(struct service *sv, const char *name)
{
	char path[600];
	struct stat st;

	worker_sock_path(sv->guests_dir, name, path, sizeof(path));
	return stat(path, &st) == 0 || guest_lock_holder(sv->guests_dir, name);
}

static struct json_object *do_info(struct service *sv, const char *name, const char *cmd)
{
	struct json_object *rep;

	if (!own_guest(sv, name) && !strcmp(cmd, "info") && (rep = lvd_info(&sv->lv, name)))
		return rep;
	rep = simple_call(sv, name, cmd);
	if (ipc_bool(rep, "ok", false) && !strcmp(cmd, "info"))
		json_object_object_add(rep, "kind", json_object_new_string("kvm"));
	return rep;
}

/* A libvirt domain's migration: checked here, run by a child of ours. */
static struct json_object *migrate_domain(struct service *sv, struct json_object *req)
{
	static struct lvd_outgoing o;
	struct json_object *rep = lvd_prepare(&sv->lv, req, &sv->peer, sv->io_timeout_ms, &o);
	pid_t pid;

	if (rep)
		return rep;
	fflush(NULL);
	pid = fork();
	if (pid == 0) {
		leave_service(sv);
		lvd_run_outgoing(&sv->lv, &o);
	}
	if (pid < 0)
		return ipc_error(IPC_E_INTERNAL, "fork: %s", strerror(errno));
	rep = ipc_ok();
	json_object_object_add(rep, "job", json_object_new_string(o.job));
	json_object_object_add(rep, "kind", json_object_new_string("libvirt"));
	return rep;
}

/* A libvirt domain's checkpoint or restore, run by a child of ours that
 * answers on a socket pair: a libvirt call that hangs or a crash costs
 * the request, never the service. */
static struct json_object *domain_in_child(struct service *sv, struct json_object *req,
					   struct json_object *(*fn)(const struct lvd_config *,
								     struct json_object *))
{
	struct json_object *rep;
	int sp[2];
	pid_t pid;

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) < 0)
		return ipc_error(ipc_errno_code(errno), "socketpair: %s", strerror(errno));
	fflush(NULL);
	pid = fork();
	if (pid == 0) {
		close(sp[0]);
		leave_service(sv);
		rep = fn(&sv->lv, req);
		ipc_send(sp[1], rep, -1);
		_exit(ipc_bool(rep, "ok", false) ? 0 : 1);
	}
	close(sp[1]);
	if (pid < 0) {
		close(sp[0]);
		return ipc_error(IPC_E_INTERNAL, "fork: %s", strerror(errno));
	}
	/* writing a large domain takes a while: up to ten minutes, as for a guest */
	rep = ipc_recv(sp[0], NULL, 600000);
	close(sp[0]);
	if (!rep) {
		kill(pid, SIGKILL);
		rep = ipc_error(IPC_E_TIMEOUT, "the %s of a libvirt domain ended without an answer, "
				"or gave none within ten minutes", ipc_str(req, "cmd", ""));
	}
	return rep;
}

/* migrate and replicate: dial the other host, then the guest process runs
 * the job over that connection. */
static struct json_object *do_migrate(struct service *sv, struct json_object *req)
{
	const char *name = ipc_str(req, "name", NULL), *dest = ipc_str(req, "dest", NULL);
	const char *cmd = ipc_str(req, "cmd", "migrate");
	struct json_object *info, *fwd, *rep;
	char err[512], job[128], host[256];
	struct mig_params params;
	int fd;

	if (!name || !dest)
		return ipc_error(IPC_E_BAD_ARGUMENT, "%s needs a guest name and a destination", cmd);
	if (!strcmp(cmd, "migrate") && !own_guest(sv, name) && lvd_has(&sv->lv, name))
		return migrate_domain(sv, req);
	if (worker_mig_params(req, sv->io_timeout_ms, &params, err, sizeof(err)))
		return ipc_error(IPC_E_BAD_ARGUMENT, "%s", err);	/* before anything reaches the other host */
	info = simple_call(sv, name, "info");
	if (!ipc_bool(info, "ok", false))
		return info;
	if (strcmp(ipc_str(info, "state", ""), "running")) {
		rep = ipc_error(IPC_E_WRONG_STATE, "guest '%s' is %s, not running", name,
				ipc_str(info, "state", "?"));
		json_object_put(info);
		return rep;
	}
	json_object_put(info);
	fd = peer_connect(dest, sv->io_timeout_ms, host, sizeof(host), err, sizeof(err));
	if (fd < 0)
		return ipc_error(ipc_errno_code(fd), "%s", err);
	snprintf(job, sizeof(job), "%s-%s%ld", name, strcmp(cmd, "migrate") ? "repl-" : "",
		 (long)time(NULL));
	fwd = json_object_get(req);
	json_object_object_add(fwd, "job", json_object_new_string(job));
	json_object_object_add(fwd, "dest_host", json_object_new_string(host));
	json_object_object_add(fwd, "peer", peer_config_to_json(&sv->peer));
	if (!json_object_object_get_ex(fwd, "channels", NULL))
		json_object_object_add(fwd, "channels",
				       json_object_new_int((int)peer_default_channels()));
	rep = call_guest(sv, name, fwd, fd);
	json_object_put(fwd);
	close(fd);
	if (ipc_bool(rep, "ok", false))
		log_write(LOG_INFO, name, job, "%s guest %s to %s as job %s",
			strcmp(cmd, "migrate") ? "replicating" : "migrating", name, dest, job);
	return rep;
}

/* An uncertain guest is resumed only on the destination's word: open the
 * way to ask it (the guest process asks, migrate/protocol.c rule 4). */
static struct json_object *do_resume(struct service *sv, struct json_object *req)
{
	const char *name = ipc_str(req, "name", "");
	struct json_object *info = simple_call(sv, name, "info"), *fwd, *rep;
	char err[512], host[256];
	int fd = -1;

	if (!ipc_bool(info, "ok", false))
		return info;
	fwd = json_object_get(req);
	if (!strcmp(ipc_str(info, "state", ""), "uncertain") &&
	    !ipc_bool(req, "destination_lost", false)) {
		fd = peer_connect(ipc_str(info, "dest", ""), sv->io_timeout_ms, host, sizeof(host), err,
				  sizeof(err));
		if (fd < 0)
			json_object_object_add(fwd, "dial_error", json_object_new_string(err));
	}
	json_object_put(info);
	rep = call_guest_within(sv, name, fwd, fd, 30000);
	json_object_put(fwd);
	if (fd >= 0)
		close(fd);
	return rep;
}

/* The guest that runs a job, from the job's name (sent or received). */
static struct json_object *find_job(struct service *sv, const char *job, char *name, size_t len)
{
	struct json_object *all = scan_guests(sv);

	for (size_t i = 0; i < json_object_array_length(all); i++) {
		struct json_object *g = json_object_array_get_idx(all, i);

		if (!strcmp(ipc_str(g, "job", ""), job) ||
		    !strcmp(ipc_str(g, "incoming_job", ""), job)) {
			snprintf(name, len, "%s", ipc_str(g, "name", ""));
			json_object_put(all);
			return NULL;
		}
	}
	json_object_put(all);
	return ipc_error(IPC_E_NOT_FOUND, "no job '%s' on this host", job);
}

static struct json_object *do_job(struct service *sv, struct json_object *req, const char *cmd)
{
	const char *job = ipc_str(req, "job", "");
	/* cmd may point into req's own "cmd", which the line below replaces */
	bool progress = !strcmp(cmd, "progress");
	char name[64];
	struct json_object *rep, *fwd;

	/* a libvirt domain's job has a file, not a guest process */
	if (progress && (rep = lvd_job(&sv->lv, job)))
		return rep;
	if (!strcmp(cmd, "cancel") && (rep = lvd_cancel(&sv->lv, job)))
		return rep;
	rep = find_job(sv, job, name, sizeof(name));
	if (rep)
		return rep;
	fwd = json_object_get(req);
	json_object_object_add(fwd, "cmd", json_object_new_string(cmd));
	rep = call_guest(sv, name, fwd, -1);
	json_object_put(fwd);
	/* A guest that moved has nothing left to do here once its result is read. */
	if (progress && ipc_bool(rep, "done", false) &&
	    !strcmp(ipc_str(rep, "direction", ""), "outgoing")) {
		struct json_object *st;

		if (json_object_object_get_ex(rep, "stats", &st) &&
		    !strcmp(ipc_str(st, "status", ""), "completed")) {
			json_object_put(simple_call(sv, name, "exit"));
			/* debug: the guest process logged the job's end already */
			log_write(LOG_DEBUG, name, job, "guest %s moved away (job %s)", name, job);
		}
	}
	return rep;
}

/* The job a guest process runs or ran last: its own migration, or the one
 * it is receiving. */
static struct json_object *guest_job(struct service *sv, struct json_object *g)
{
	const char *job = ipc_str(g, "job", NULL);
	struct json_object *req, *p;

	if (!job && !strcmp(ipc_str(g, "state", ""), "incoming"))
		job = ipc_str(g, "incoming_job", NULL);
	if (!job)
		return NULL;
	req = json_object_new_object();
	json_object_object_add(req, "cmd", json_object_new_string("progress"));
	json_object_object_add(req, "job", json_object_new_string(job));
	p = call_guest(sv, ipc_str(g, "name", ""), req, -1);
	json_object_put(req);
	if (!json_object_object_get_ex(p, "guest", NULL))	/* did not answer */
		json_object_object_add(p, "guest", json_object_new_string(ipc_str(g, "name", "")));
	return p;
}

/* jobs: those of the guest processes here; with completed, the finished
 * ones kept in the job log instead; with all, both. */
static struct json_object *do_jobs(struct service *sv, struct json_object *req)
{
	bool all_jobs = ipc_bool(req, "all", false);
	bool completed = all_jobs || ipc_bool(req, "completed", false);
	struct json_object *jobs = NULL, *rep;
	char err[700];

	if (completed) {
		jobs = joblog_list(sv->guests_dir, err, sizeof(err));
		if (!jobs)
			return ipc_error(IPC_E_IO, "finished jobs: %s", err);
	}
	if (!jobs)
		jobs = json_object_new_array();
	if (!completed || all_jobs) {
		struct json_object *guests = scan_guests(sv);

		for (size_t i = 0; i < json_object_array_length(guests); i++) {
			struct json_object *p = guest_job(sv, json_object_array_get_idx(guests, i));

			if (p && all_jobs && ipc_bool(p, "done", false))
				json_object_put(p);	/* in the log already */
			else if (p)
				json_object_array_add(jobs, p);
		}
		json_object_put(guests);
	}
	lvd_jobs(&sv->lv, jobs, !completed || all_jobs, completed);
	rep = ipc_ok();
	json_object_object_add(rep, "jobs", jobs);
	return rep;
}

/* `vmigrate check`: what this service runs with, so the CLI checks the
 * TLS directory it uses. */
static struct json_object *do_check(struct service *sv)
{
	struct json_object *rep = ipc_ok(), *guests = scan_guests(sv);
	char ports[32] = "";

	if (sv->peer.data_port_lo)
		snprintf(ports, sizeof(ports), "%u-%u", sv->peer.data_port_lo, sv->peer.data_port_hi);
	json_object_object_add(rep, "pid", json_object_new_int(getpid()));
	json_object_object_add(rep, "listen", json_object_new_string(sv->listen_addr));
	json_object_object_add(rep, "insecure", json_object_new_boolean(sv->peer.insecure));
	json_object_object_add(rep, "tls_dir", json_object_new_string(sv->peer.tls_dir));
	json_object_object_add(rep, "peer_key", json_object_new_boolean(sv->peer.key.set));
	json_object_object_add(rep, "data_ports", json_object_new_string(ports));
	json_object_object_add(rep, "metrics", json_object_new_string(sv->metrics_addr));
	json_object_object_add(rep, "guests", json_object_new_int(
		(int)json_object_array_length(guests)));
	json_object_put(guests);
	return rep;
}

/* `vmigrate check HOST`: a child of the service checks the path to HOST
 * (seconds, with timeouts) and answers on conn; the service goes on. */
static void check_peer(struct service *sv, struct json_object *req, int conn)
{
	const char *dest = ipc_str(req, "dest", "");
	struct json_object *rep;
	pid_t pid;

	fflush(NULL);
	pid = dest[0] ? fork() : -2;
	if (pid == 0) {
		leave_service(sv);
		rep = peer_check(&sv->peer, dest, listen_port(sv));
		ipc_send(conn, rep, -1);
		_exit(0);
	}
	rep = pid == -2 ? ipc_error(IPC_E_BAD_ARGUMENT, "check-peer needs a destination HOST[:PORT]") :
	      pid < 0 ? ipc_error(ipc_errno_code(errno), "fork: %s", strerror(errno)) : NULL;
	if (rep) {
		ipc_send(conn, rep, -1);
		json_object_put(rep);
	}
}

/* A backup run's checkpoint is written: its directory is pruned to the
 * run's --keep, here, so what the metrics count as removed is what was
 * (rep gets "removed"). A failure to prune costs the checkpoint nothing. */
static void prune_backups(struct json_object *req, struct json_object *rep)
{
	const char *file = ipc_str(rep, "file", "");
	char *dir = strdup(file), *slash, err[600];
	unsigned removed = 0;

	if (dir && (slash = strrchr(dir, '/')) && slash != dir) {
		*slash = 0;
		if (snap_backup_prune(dir, ipc_str(req, "name", ""),
				      (unsigned)ipc_int(req, "backup_keep", 1), &removed, err,
				      sizeof(err)))
			log_write(LOG_WARNING, ipc_str(req, "name", ""), NULL, "backup of %s: "
				"pruning %s: %s", ipc_str(req, "name", ""), dir, err);
	}
	free(dir);
	json_object_object_add(rep, "removed", json_object_new_int((int)removed));
}

static struct json_object *dispatch(struct service *sv, struct json_object *req)
{
	const char *cmd = ipc_str(req, "cmd", "");
	const char *name = ipc_str(req, "name", "");
	struct json_object *own = metrics_request(sv->metrics, req);

	if (own)
		return own;	/* metrics */
	if (!strcmp(cmd, "job-result") || !strcmp(cmd, "backup-result"))
		return ipc_error(IPC_E_PERMISSION, "%s: the metrics count what this service and "
				 "its guest processes did, reported on their own socket, not what a "
				 "client of the control socket says", cmd);
	if (!strcmp(cmd, "start"))
		return do_start(sv, req);
	if (!strcmp(cmd, "list"))
		return do_list(sv);
	if (!strcmp(cmd, "info") || !strcmp(cmd, "verify"))
		return do_info(sv, name, cmd);
	if (!strcmp(cmd, "resume"))
		return do_resume(sv, req);
	if (!strcmp(cmd, "stop")) {
		struct json_object *rep = simple_call(sv, name, "stop");

		if (ipc_bool(rep, "ok", false))
			log_write(LOG_INFO, name, NULL, "stopped guest %s", name);
		return rep;
	}
	if (!strcmp(cmd, "migrate") || !strcmp(cmd, "replicate"))
		return do_migrate(sv, req);
	if (!strcmp(cmd, "replicate-status") || !strcmp(cmd, "replicate-stop") ||
	    !strcmp(cmd, "failover")) {
		struct json_object *fwd = json_object_get(req), *rep;

		/* a stop waits for the last epoch's acknowledgement, a failover
		 * for the standby to take the guest (a few lease TTLs at most) */
		rep = call_guest_within(sv, name, fwd, -1, strcmp(cmd, "failover") ? 30000 : 120000);
		json_object_put(fwd);
		return rep;
	}
	if (!strcmp(cmd, "restore") && ipc_str(req, "file", NULL) &&
	    qckpt_is_domain_file(ipc_str(req, "file", "")))
		return domain_in_child(sv, req, lvsnap_restore);
	if (!strcmp(cmd, "restore"))
		return do_restore(sv, req);
	if (!strcmp(cmd, "snapshot") && !own_guest(sv, name) && lvd_has(&sv->lv, name)) {
		struct json_object *rep = domain_in_child(sv, req, lvsnap_snapshot);

		if (ipc_bool(rep, "ok", false) && ipc_int(req, "backup_keep", 0) > 0)
			prune_backups(req, rep);
		return rep;
	}
	if (!strcmp(cmd, "snapshot")) {
		struct json_object *fwd = json_object_get(req), *rep;

		/* writing a large guest takes a while: wait up to ten minutes */
		rep = call_guest_within(sv, name, fwd, -1, 600000);
		json_object_put(fwd);
		if (ipc_bool(rep, "ok", false) && ipc_int(req, "backup_keep", 0) > 0)
			prune_backups(req, rep);
		return rep;
	}
	if (!strcmp(cmd, "check"))
		return do_check(sv);
	if (!strcmp(cmd, "jobs"))
		return do_jobs(sv, req);
	if (!strcmp(cmd, "job"))
		return do_job(sv, req, "progress");
	if (!strcmp(cmd, "cancel") || !strcmp(cmd, "set-bandwidth") ||
	    !strcmp(cmd, "migrate-postcopy") || !strcmp(cmd, "migrate-recover"))
		return do_job(sv, req, cmd);
	return ipc_error(IPC_E_NOT_FOUND, "unknown request '%s'", cmd);
}

/* The guests, for the metrics (asked from the listener's process too). */
static struct json_object *metrics_guests(void *opaque)
{
	return scan_guests(opaque);
}

/* Root, or the configured group (or the service's own processes): nobody
 * else may steer guests. */
static bool client_allowed(struct service *sv, int conn)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);

	if (getsockopt(conn, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
		return false;
	/* the user the service runs as may, of course */
	return cred.uid == 0 || cred.uid == geteuid() || (sv->has_group && cred.gid == sv->group);
}

static void serve_control(struct service *sv)
{
	int conn = accept4(sv->control_fd, NULL, NULL, SOCK_CLOEXEC);
	struct json_object *req, *rep;

	if (conn < 0)
		return;
	if (!client_allowed(sv, conn)) {
		rep = ipc_error(IPC_E_PERMISSION, "permission denied: root or the service's group only");
		ipc_send(conn, rep, -1);
		json_object_put(rep);
		close(conn);
		return;
	}
	req = ipc_recv(conn, NULL, 5000);
	if (req && !strcmp(ipc_str(req, "cmd", ""), "check-peer")) {
		check_peer(sv, req, conn);
		json_object_put(req);
	} else if (req) {
		rep = dispatch(sv, req);
		sv->status_due = true;
		metrics_observe(sv->metrics, req, rep);
		ipc_send(conn, rep, -1);
		json_object_put(rep);
		json_object_put(req);
	}
	close(conn);
}

/* A guest process of this service (or of the one before it: guests
 * outlive a restart) reports a job's end. Only the service's user can
 * reach the socket (0600, in the 0700 guests directory); the peer's
 * credentials are checked too, in case the directory's mode was changed. */
static void serve_report(struct service *sv)
{
	int conn = accept4(sv->report_fd, NULL, NULL, SOCK_CLOEXEC);
	struct json_object *req, *rep;
	struct ucred cred;
	socklen_t len = sizeof(cred);

	if (conn < 0)
		return;
	if (getsockopt(conn, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0 ||
	    cred.uid != geteuid()) {
		close(conn);
		return;
	}
	req = ipc_recv(conn, NULL, 5000);
	if (req) {
		rep = metrics_report(sv->metrics, req);
		ipc_send(conn, rep, -1);
		json_object_put(rep);
		json_object_put(req);
	}
	close(conn);
}

/* A peer connected: a new guest process takes it from here (TLS, hello,
 * authentication), so a slow or hostile peer never holds the service. */
static void serve_peer(struct service *sv)
{
	int conn = accept4(sv->peer_fd, NULL, NULL, SOCK_CLOEXEC);
	struct worker_spec spec;
	pid_t pid;

	if (conn < 0)
		return;
	memset(&spec, 0, sizeof(spec));
	spec_from_service(sv, &spec);
	fflush(NULL);
	pid = fork();
	if (pid == 0) {
		leave_service(sv);
		worker_run_incoming(&spec, conn);
	}
	if (pid < 0)
		log_write(LOG_ERR, NULL, NULL, "fork for an incoming migration: %s",
			strerror(errno));
	close(conn);
}

/* ---- options: the command line and the configuration file ------------------ */

/*
 * Every option of the service is a long option and a key of the
 * configuration file, under one name and through one setter; a switch
 * (insecure) takes true or false in the file. The file is read first, then
 * the command line overrides it key by key: a key the command line sets is
 * not taken from the file at all.
 */
struct svc_option {
	const char *name;
	bool has_arg;
	int (*set)(struct service *sv, const char *name, const char *value, char *err,
		   size_t errlen);
};

static int set_listen(struct service *sv, const char *name, const char *v, char *err,
		      size_t errlen)
{
	char host[256], port[32];

	if (xport_split_hostport(v, PEER_DEFAULT_PORT, host, sizeof(host), port, sizeof(port))) {
		snprintf(err, errlen, "%s wants HOST:PORT, not '%s'", name, v);
		return -EINVAL;
	}
	snprintf(sv->listen_addr, sizeof(sv->listen_addr), "%s", v);
	return 0;
}

static int set_string(char *dst, size_t len, const char *name, const char *v, char *err,
		      size_t errlen)
{
	if (strlen(v) >= len) {
		snprintf(err, errlen, "%s: '%s' is longer than %zu characters", name, v, len - 1);
		return -ENAMETOOLONG;
	}
	snprintf(dst, len, "%s", v);
	return 0;
}

static int set_state_dir(struct service *sv, const char *name, const char *v, char *err,
			 size_t errlen)
{
	return set_string(sv->state_dir, sizeof(sv->state_dir), name, v, err, errlen);
}

static int set_tls_dir(struct service *sv, const char *name, const char *v, char *err,
		       size_t errlen)
{
	return set_string(sv->peer.tls_dir, sizeof(sv->peer.tls_dir), name, v, err, errlen);
}

static int set_tls_allow(struct service *sv, const char *name, const char *v, char *err,
			 size_t errlen)
{
	return set_string(sv->peer.allow, sizeof(sv->peer.allow), name, v, err, errlen);
}

static int set_group(struct service *sv, const char *name, const char *v, char *err,
		     size_t errlen)
{
	struct group *g = getgrnam(v);

	if (!g) {
		snprintf(err, errlen, "no group '%s'", v);
		return -ENOENT;
	}
	sv->group = g->gr_gid;
	sv->has_group = true;
	sv->control_mode = 0660;
	return 0;
}

static int set_io_timeout(struct service *sv, const char *name, const char *v, char *err,
			  size_t errlen)
{
	char *end;
	long ms = strtol(v, &end, 10);

	if (end == v || *end || ms < 1 || ms > 3600000) {
		snprintf(err, errlen, "%s wants milliseconds from 1 to 3600000, not '%s'", name, v);
		return -EINVAL;
	}
	sv->io_timeout_ms = (int)ms;
	return 0;
}

/* A switch's value: true or false (yes/no, on/off, 1/0). */
static int set_switch(bool *dst, const char *name, const char *v, char *err, size_t errlen)
{
	static const char *const yes[] = { "true", "yes", "on", "1" };
	static const char *const no[] = { "false", "no", "off", "0" };

	for (size_t i = 0; i < 4; i++) {
		if (!strcmp(v, yes[i]) || !strcmp(v, no[i])) {
			*dst = !strcmp(v, yes[i]);
			return 0;
		}
	}
	snprintf(err, errlen, "%s wants true or false, not '%s'", name, v);
	return -EINVAL;
}

static int set_insecure(struct service *sv, const char *name, const char *v, char *err,
			size_t errlen)
{
	return set_switch(&sv->peer.insecure, name, v, err, errlen);
}

static int set_small_pages(struct service *sv, const char *name, const char *v, char *err,
			   size_t errlen)
{
	bool small = false;
	int ret = set_switch(&small, name, v, err, errlen);

	if (!ret)
		guest_ram_set_pages(small ? GUEST_RAM_SMALL : GUEST_RAM_HUGE);
	return ret;
}

static int set_data_ports(struct service *sv, const char *name, const char *v, char *err,
			  size_t errlen)
{
	if (peer_parse_port_range(v, &sv->peer.data_port_lo, &sv->peer.data_port_hi)) {
		snprintf(err, errlen, "%s wants LO-HI or PORT (1-65535), not '%s'", name, v);
		return -EINVAL;
	}
	return 0;
}

static int set_peer_key(struct service *sv, const char *name, const char *v, char *err,
			size_t errlen)
{
	return peer_key_load(v, &sv->peer.key, err, errlen);
}

static int set_metrics(struct service *sv, const char *name, const char *v, char *err,
		       size_t errlen)
{
	char host[256], port[32];

	if (xport_split_hostport(v, "", host, sizeof(host), port, sizeof(port)) || !port[0]) {
		snprintf(err, errlen, "%s wants ADDR:PORT, not '%s'", name, v);
		return -EINVAL;
	}
	return set_string(sv->metrics_addr, sizeof(sv->metrics_addr), name, v, err, errlen);
}

static int set_log_level(struct service *sv, const char *name, const char *v, char *err,
			 size_t errlen)
{
	int level = log_level_parse(v);

	if (level < 0) {
		snprintf(err, errlen, "%s wants error, warning, notice, info or debug, not '%s'",
			 name, v);
		return -EINVAL;
	}
	sv->log_level = level;
	return 0;
}

static int set_libvirt(struct service *sv, const char *name, const char *v, char *err,
		       size_t errlen)
{
	if (!*v) {
		snprintf(err, errlen, "%s: give a libvirt URI, or none", name);
		return -EINVAL;
	}
	return set_string(sv->lv.uri, sizeof(sv->lv.uri), name, strcmp(v, "none") ? v : "",
			  err, errlen);
}

static int set_libvirt_sock_dir(struct service *sv, const char *name, const char *v, char *err,
				size_t errlen)
{
	if (v[0] != '/') {
		snprintf(err, errlen, "%s: an absolute path, not '%s'", name, v);
		return -EINVAL;
	}
	return set_string(sv->lv.sock_dir, sizeof(sv->lv.sock_dir), name, v, err, errlen);
}

static const struct svc_option svc_options[] = {
	{ "listen", true, set_listen },
	{ "state-dir", true, set_state_dir },
	{ "group", true, set_group },
	{ "io-timeout", true, set_io_timeout },
	{ "peer-key", true, set_peer_key },
	{ "tls-dir", true, set_tls_dir },
	{ "tls-allow", true, set_tls_allow },
	{ "insecure", false, set_insecure },
	{ "small-pages", false, set_small_pages },
	{ "data-ports", true, set_data_ports },
	{ "metrics", true, set_metrics },
	{ "log-level", true, set_log_level },
	{ "libvirt", true, set_libvirt },
	{ "libvirt-socket-dir", true, set_libvirt_sock_dir },
};
#define NR_SVC_OPTIONS	(sizeof(svc_options) / sizeof(svc_options[0]))
#define OPT_BASE	1000	/* getopt's value of svc_options[i] is OPT_BASE + i */

/* What the command line set, to apply over the file's. */
struct cli_settings {
	struct service *sv;
	const char *value[NR_SVC_OPTIONS];	/* NULL = not on the command line */
	const char *config;
};

/* conf_setter: a key of the file, unless the command line sets it. */
static int set_from_file(void *opaque, const char *key, const char *value, char *err,
			 size_t errlen)
{
	const struct cli_settings *cli = opaque;
	struct service *sv = cli->sv;

	for (size_t i = 0; i < NR_SVC_OPTIONS; i++) {
		if (strcmp(svc_options[i].name, key))
			continue;
		if (cli->value[i])
			return 0;	/* the command line overrides it */
		return svc_options[i].set(sv, key, value, err, errlen);
	}
	snprintf(err, errlen, "unknown key '%s'", key);
	return -EINVAL;
}

static void usage(FILE *f)
{
	fprintf(f,
"usage: vmigrated [OPTIONS]\n"
"  --config FILE         options as 'key = value' lines, the keys named as the long\n"
"                        options below, overridden by the command line\n"
"                        (default " CONF_DEFAULT_PATH ", if it exists)\n"
"  --listen HOST:PORT    peer connections (default 0.0.0.0:" PEER_DEFAULT_PORT ")\n"
"  --state-dir DIR       control socket and guests' sockets (default /run/vmigrate)\n"
"  --group NAME          members may use the control socket too (default: root only)\n"
"  --io-timeout MS       a silent peer fails a migration after this (default 5000)\n"
"  --tls-dir DIR         ca.crt, cert.pem and key.pem for TLS between hosts\n"
"  --tls-allow NAMES     comma-separated client names let in (default: any the CA signed)\n"
"  --insecure            plain TCP between hosts instead of TLS (both ends must say so)\n"
"  --small-pages         back guests' RAM with 4 KiB pages only (default: transparent\n"
"                        huge pages on a private tmpfs, where this service may mount)\n"
"  --data-ports LO-HI    ports an incoming guest offers its data channels on, for\n"
"                        firewalls (default: any free port)\n"
"  --peer-key FILE       shared secret (16-64 bytes, mode 600): peers must prove it\n"
"  --metrics ADDR:PORT   Prometheus metrics over HTTP at /metrics (default: none;\n"
"                        'vmigrate metrics' shows them either way)\n"
"  --log-level LEVEL     error, warning, notice, info (default) or debug\n"
"  --libvirt URI         the host's libvirt, whose domains list, info and migrate\n"
"                        serve too (default " LVD_DEFAULT_URI "; none: off)\n"
"  --libvirt-socket-dir DIR  where QEMU's migration streams meet this service, the\n"
"                        same path on every host (default " LVD_DEFAULT_SOCK_DIR ")\n"
"  --version             print the version and exit\n"
"  -h, --help            this help\n");
}

/* The command line, then the file under it: 0, or the exit status. */
static int configure(struct service *sv, int argc, char **argv)
{
	struct option longopts[NR_SVC_OPTIONS + 4];
	struct cli_settings cli = { .sv = sv };
	char err[600];
	int c;

	for (size_t i = 0; i < NR_SVC_OPTIONS; i++)
		longopts[i] = (struct option){ svc_options[i].name,
			svc_options[i].has_arg ? required_argument : no_argument, NULL,
			OPT_BASE + (int)i };
	longopts[NR_SVC_OPTIONS] = (struct option){ "config", required_argument, NULL, 'c' };
	longopts[NR_SVC_OPTIONS + 1] = (struct option){ "help", no_argument, NULL, 'h' };
	longopts[NR_SVC_OPTIONS + 2] = (struct option){ "version", no_argument, NULL, 'V' };
	longopts[NR_SVC_OPTIONS + 3] = (struct option){ 0 };
	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		if (c >= OPT_BASE && c < OPT_BASE + (int)NR_SVC_OPTIONS) {
			cli.value[c - OPT_BASE] = optarg ? optarg : "true";
		} else if (c == 'c') {
			cli.config = optarg;
		} else if (c == 'h') {
			usage(stdout);
			return -1;
		} else if (c == 'V') {
			printf("vmigrated %s\n", vmigrate_version());
			return -1;
		} else {
			usage(stderr);
			return 2;
		}
	}
	if (optind < argc) {
		log_write(LOG_ERR, NULL, NULL, "unexpected argument '%s'", argv[optind]);
		usage(stderr);
		return 2;
	}
	if (conf_load(cli.config ? cli.config : CONF_DEFAULT_PATH, !cli.config, set_from_file,
		      &cli, err, sizeof(err)) < 0) {
		log_write(LOG_ERR, NULL, NULL, "%s", err);
		return 2;
	}
	for (size_t i = 0; i < NR_SVC_OPTIONS; i++) {
		char name[64];

		if (!cli.value[i])
			continue;
		snprintf(name, sizeof(name), "--%s", svc_options[i].name);
		err[0] = 0;
		if (svc_options[i].set(sv, name, cli.value[i], err, sizeof(err))) {
			log_write(LOG_ERR, NULL, NULL, "%s", err);
			return 2;
		}
	}
	return 0;
}

/* ---- one service per state directory ---------------------------------------- */

/*
 * The lock lives as long as this process (and is closed in every child it
 * forks): a second service on the same directory would take over the
 * control socket, and delete it on its way out.
 */
static int take_state_lock(struct service *sv)
{
	char path[512], pid[32] = "";
	int fd, n;

	snprintf(path, sizeof(path), "%s/vmigrated.lock", sv->state_dir);
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
	if (fd < 0) {
		log_write(LOG_ERR, NULL, NULL, "%s: %s", path, strerror(errno));
		return -errno;
	}
	if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		int e = errno;

		n = (int)pread(fd, pid, sizeof(pid) - 1, 0);
		pid[n > 0 ? n : 0] = 0;
		pid[strcspn(pid, "\n")] = 0;
		if (e == EWOULDBLOCK)
			log_write(LOG_ERR, NULL, NULL, "already running, pid %s, on state "
				"directory %s (it holds %s)", pid[0] ? pid : "unknown",
				sv->state_dir, path);
		else
			log_write(LOG_ERR, NULL, NULL, "locking %s: %s", path, strerror(e));
		close(fd);
		return -e;
	}
	n = snprintf(pid, sizeof(pid), "%d\n", (int)getpid());
	if (ftruncate(fd, 0) < 0 || pwrite(fd, pid, (size_t)n, 0) != n)
		log_write(LOG_WARNING, NULL, NULL, "writing the pid into %s: %s", path,
			strerror(errno));
	sv->lock_fd = fd;
	return 0;
}

/* ---- systemd: readiness, status, watchdog ----------------------------------- */

static bool under_systemd(void)
{
	return getenv("NOTIFY_SOCKET") != NULL;
}

/* STATUS=: how many guests, how many of them in a job. */
static void notify_status(struct service *sv)
{
	struct json_object *all;
	size_t jobs = 0, n;

	if (!under_systemd())
		return;
	all = scan_guests(sv);
	n = json_object_array_length(all);
	for (size_t i = 0; i < n; i++) {
		struct json_object *g = json_object_array_get_idx(all, i);
		const char *st = ipc_str(g, "state", "");

		if (!strcmp(st, "migrating") || !strcmp(st, "incoming") ||
		    ipc_str(g, "replication", NULL))
			jobs++;
	}
	json_object_put(all);
	sd_notifyf(0, "STATUS=%zu guest%s, %zu job%s running", n, n == 1 ? "" : "s", jobs,
		   jobs == 1 ? "" : "s");
	sv->status_at = (double)now_ms() / 1e3;
	sv->status_due = false;
}

/* The unit's watchdog, if it asks for one (WatchdogSec=). */
static void start_watchdog(struct service *sv)
{
	uint64_t usec = 0;

	if (sd_watchdog_enabled(0, &usec) <= 0 || usec < 4000)
		return;
	sv->watchdog_ms = (long long)(usec / 1000);
	watchdog_ping(sv);
	log_write(LOG_INFO, NULL, NULL, "systemd watchdog: a sign of life every %.1f s",
		usec / 4e6);
}

int main(int argc, char **argv)
{
	struct service sv = { .io_timeout_ms = 5000, .log_level = LOG_INFO,
			      .control_mode = 0600, .lock_fd = -1, .report_fd = -1 };
	struct sigaction sa = { .sa_handler = on_quit };
	char host[256], port[32], err[512];
	int ret;

	snprintf(sv.state_dir, sizeof(sv.state_dir), "/run/vmigrate");
	snprintf(sv.listen_addr, sizeof(sv.listen_addr), "0.0.0.0:" PEER_DEFAULT_PORT);
	snprintf(sv.lv.uri, sizeof(sv.lv.uri), "%s", LVD_DEFAULT_URI);
	snprintf(sv.lv.sock_dir, sizeof(sv.lv.sock_dir), "%s", LVD_DEFAULT_SOCK_DIR);
	log_setup(LOG_INFO);	/* until the configuration says which level */
	ret = configure(&sv, argc, argv);
	if (ret)
		return ret < 0 ? 0 : ret;
	log_setup(sv.log_level);
	sv.peer.io_timeout_ms = sv.io_timeout_ms;
	sv.peer.handshake_timeout_ms = 10000;
	if (peer_config_check(&sv.peer, err, sizeof(err))) {
		log_write(LOG_ERR, NULL, NULL, "%s", err);
		return 2;
	}
	snprintf(sv.guests_dir, sizeof(sv.guests_dir), "%s/guests", sv.state_dir);
	snprintf(sv.control_path, sizeof(sv.control_path), "%s/vmigrated.sock", sv.state_dir);
	snprintf(sv.report_path, sizeof(sv.report_path), "%s/reports.socket", sv.guests_dir);
	/* the guests' sockets and the reports socket: the service's user only */
	if ((mkdir(sv.state_dir, 0755) < 0 && errno != EEXIST) ||
	    (mkdir(sv.guests_dir, 0700) < 0 && errno != EEXIST) || chmod(sv.guests_dir, 0700)) {
		log_write(LOG_ERR, NULL, NULL, "%s: %s", sv.state_dir, strerror(errno));
		return 1;
	}
	if (take_state_lock(&sv))
		return 1;
	lvd_init(&sv.lv, sv.state_dir);
	xport_split_hostport(sv.listen_addr, PEER_DEFAULT_PORT, host, sizeof(host), port,
			     sizeof(port));	/* checked by set_listen */
	sv.peer_fd = xport_tcp_listen(host, port, err, sizeof(err));
	if (sv.peer_fd < 0) {
		log_write(LOG_ERR, NULL, NULL, "%s", err);
		return 1;
	}
	sv.metrics = metrics_new(sv.guests_dir, metrics_guests, &sv);
	if (!sv.metrics || (sv.metrics_addr[0] &&
			    metrics_listen(sv.metrics, sv.metrics_addr, err, sizeof(err)))) {
		log_write(LOG_ERR, NULL, NULL, "%s", sv.metrics ? err : "out of memory");
		metrics_free(sv.metrics);
		return 1;
	}
	sv.report_fd = ipc_listen(sv.report_path, 0600, err, sizeof(err));
	if (sv.report_fd < 0) {
		log_write(LOG_ERR, NULL, NULL, "%s", err);
		metrics_free(sv.metrics);
		return 1;
	}
	/* last: once the control socket is there, the service takes peers too */
	sv.control_fd = ipc_listen(sv.control_path, sv.control_mode, err, sizeof(err));
	if (sv.control_fd < 0) {
		log_write(LOG_ERR, NULL, NULL, "%s", err);
		metrics_free(sv.metrics);
		return 1;
	}
	if (sv.has_group && chown(sv.control_path, 0, sv.group) < 0)
		log_write(LOG_WARNING, NULL, NULL, "chown of %s: %s", sv.control_path,
			strerror(errno));
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	{
		struct json_object *found = scan_guests(&sv);

		reap_moved_away(&sv, found);
		log_write(LOG_INFO, NULL, NULL, "listening on %s for peers (%s%s), control socket "
			"%s; %zu guest(s) already running", sv.listen_addr,
			sv.peer.insecure ? "INSECURE: plain TCP, peers not authenticated by TLS" :
			"TLS 1.3, mutual certificates",
			sv.peer.key.set ? ", peer key" : "", sv.control_path,
			json_object_array_length(found));
		json_object_put(found);
	}
	if (sv.metrics_addr[0])
		log_write(LOG_INFO, NULL, NULL, "metrics on http://%s/metrics", sv.metrics_addr);
	{
		char ram[200];

		/* made here, the private tmpfs is shared by every guest process forked */
		guest_ram_huge(ram, sizeof(ram));
		log_write(LOG_INFO, NULL, NULL, "guests' RAM: %s", ram);
	}
	if (under_systemd()) {
		sd_notify(0, "READY=1");
		notify_status(&sv);
		start_watchdog(&sv);
	}

	while (!quit) {
		struct pollfd p[3] = {
			{ .fd = sv.control_fd, .events = POLLIN },
			{ .fd = sv.peer_fd, .events = POLLIN },
			{ .fd = sv.report_fd, .events = POLLIN },
		};
		double t = (double)now_ms() / 1e3;

		watchdog_ping(&sv);
		{
			bool reaped = false;

			while (waitpid(-1, NULL, WNOHANG) > 0)
				reaped = true;	/* guest processes that ended */
			if (reaped)
				lvd_sweep(&sv.lv);	/* a libvirt job's killed process */
		}
		if (under_systemd() && ((sv.status_due && t - sv.status_at >= 1) ||
					t - sv.status_at >= STATUS_EVERY_S))
			notify_status(&sv);
		if (poll(p, 3, sv.watchdog_ms && sv.watchdog_ms < 2000 ?
			 (int)sv.watchdog_ms / 4 : 500) <= 0)
			continue;
		if (p[0].revents & POLLIN)
			serve_control(&sv);
		if (p[1].revents & POLLIN)
			serve_peer(&sv);
		if (p[2].revents & POLLIN)
			serve_report(&sv);
	}
	if (under_systemd())
		sd_notify(0, "STOPPING=1");
	log_write(LOG_INFO, NULL, NULL, "stopping; guests keep running and a restarted service "
		"finds them again");
	close(sv.peer_fd);
	close(sv.control_fd);
	close(sv.report_fd);
	unlink(sv.control_path);
	unlink(sv.report_path);
	metrics_free(sv.metrics);
	close(sv.lock_fd);
	return 0;
}
