/*
 * The commands that talk to the local vmigrated: start, list, info, stop,
 * verify, migrate, jobs, cancel, set-bandwidth. Each sends one request on
 * the control socket; migrate then follows its job until it ends, showing
 * progress that never runs backwards.
 *
 * Exit status: 0 done; 1 failed (for migrate: the guest still runs on
 * this host); 2 usage; 3 migrate's outcome is uncertain (the guest was
 * handed over and no answer came: check the destination, then `vmigrate
 * resume NAME` here or `vmigrate stop NAME` here).
 */
#include <errno.h>
#include <getopt.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "guest_opts.h"
#include "ipc.h"
#include "migrate.h"
#include "units.h"

/* Options shared by the simple commands: NAME and --json. */
static int name_and_json(int argc, char **argv, const char **name, bool *json, const char *what)
{
	if (svc_name_and_flag(argc, argv, 1, "--json", name, json) || (!*name && what[0])) {
		fprintf(stderr, "usage: vmigrate %s %s [--json]\n", argv[0], what);
		return -EINVAL;
	}
	return 0;
}

int cmd_start(int argc, char **argv)
{
	enum { O_JSON = GO_END };
	static const struct option longopts[] = {
		GUEST_LONGOPTS,
		{ "json", no_argument, NULL, O_JSON },
		{ 0 }
	};
	struct guest_opts g;
	struct json_object *req, *rep;
	bool json = false;
	int c, ret;

	guest_opts_init(&g);
	optind = 1;
	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		ret = guest_opts_parse(&g, c, optarg, "start");
		if (ret < 0)
			return EXIT_USAGE;
		if (ret)
			continue;
		if (c != O_JSON) {
			fprintf(stderr, "usage: vmigrate start NAME [OPTIONS] [--json]\n" GUEST_OPTS_HELP);
			return EXIT_USAGE;
		}
		json = true;
	}
	if (optind != argc - 1) {
		fprintf(stderr, "vmigrate start: give exactly one guest NAME\n");
		return EXIT_USAGE;
	}
	req = svc_req("start");
	json_object_object_add(req, "name", json_object_new_string(argv[optind]));
	if (guest_opts_to_json(&g, req, "start")) {
		json_object_put(req);
		return 1;
	}
	rep = svc_request(req, true);
	if (!rep)
		return 1;
	if (json)
		svc_print_json(rep);
	else
		printf("started %s (pid %lld)\n", argv[optind], ipc_int(rep, "pid", 0));
	json_object_put(rep);
	return 0;
}

int cmd_list(int argc, char **argv)
{
	const char *unused;
	bool json;
	struct json_object *rep, *guests;

	if (name_and_json(argc, argv, &unused, &json, ""))
		return EXIT_USAGE;
	rep = svc_request(svc_req("list"), true);
	if (!rep)
		return 1;
	if (json) {
		svc_print_json(rep);
	} else if (json_object_object_get_ex(rep, "guests", &guests)) {
		printf("%-20s %-13s %8s %6s %14s\n", "NAME", "STATE", "MEM(MiB)", "VCPUS", "COUNTER");
		for (size_t i = 0; i < json_object_array_length(guests); i++) {
			struct json_object *g = json_object_array_get_idx(guests, i);

			if (!json_object_object_get_ex(g, "mem", NULL)) {	/* not answering */
				printf("%-20s %-13s %8s %6s %14s  (pid %lld)\n", ipc_str(g, "name", "?"),
				       ipc_str(g, "state", "?"), "-", "-", "-", ipc_int(g, "pid", 0));
				continue;
			}
			printf("%-20s %-13s %8lld %6lld %14lld\n", ipc_str(g, "name", "?"),
			       ipc_str(g, "state", "?"), ipc_int(g, "mem", 0) >> 20,
			       ipc_int(g, "vcpus", 0), ipc_int(g, "counter", 0));
		}
	}
	json_object_put(rep);
	return 0;
}

/* info, stop and verify: NAME in, the reply out. */
static int simple(int argc, char **argv, const char *cmd)
{
	const char *name;
	bool json;
	struct json_object *req, *rep;
	int status;

	if (name_and_json(argc, argv, &name, &json, "NAME"))
		return EXIT_USAGE;
	req = svc_req(cmd);
	json_object_object_add(req, "name", json_object_new_string(name));
	rep = svc_request(req, false);
	if (!rep)
		return 1;
	status = ipc_bool(rep, "ok", false) ? 0 : 1;
	if (json) {
		svc_print_json(rep);
	} else if (status) {
		fprintf(stderr, "vmigrate: %s\n", ipc_str(rep, "error", "failed"));
	} else if (!strcmp(cmd, "info")) {
		printf("%s: %s, pid %lld, %lld MiB, %lld vCPUs, counter %lld, up %.1f s%s%s\n",
		       name, ipc_str(rep, "state", "?"), ipc_int(rep, "pid", 0),
		       ipc_int(rep, "mem", 0) >> 20, ipc_int(rep, "vcpus", 0),
		       ipc_int(rep, "counter", 0), ipc_double(rep, "uptime_s", 0),
		       ipc_str(rep, "job", NULL) ? ", last job " : "", ipc_str(rep, "job", ""));
	} else if (!strcmp(cmd, "verify")) {
		printf("%s: verified %lld pages (%lld caught mid-write), counter %lld, "
		       "%lld self-checks by the guest, %lld failed\n", name,
		       ipc_int(rep, "pages_checked", 0), ipc_int(rep, "in_flight", 0),
		       ipc_int(rep, "counter", 0), ipc_int(rep, "guest_self_checks", 0),
		       ipc_int(rep, "guest_check_errors", 0));
	} else {
		printf("%s: %s\n", name, cmd);
	}
	json_object_put(rep);
	return status;
}

int cmd_info(int argc, char **argv) { return simple(argc, argv, "info"); }
int cmd_stop(int argc, char **argv) { return simple(argc, argv, "stop"); }
int cmd_verify(int argc, char **argv) { return simple(argc, argv, "verify"); }
/* resume NAME [--destination-lost]: after an uncertain handover, the
 * service asks the destination first (migrate/protocol.c, rule 4). */
int cmd_resume(int argc, char **argv)
{
	struct json_object *req, *rep;
	const char *name = NULL;
	bool lost = false;
	int status;

	if (svc_name_and_flag(argc, argv, 1, "--destination-lost", &name, &lost) || !name) {
		fprintf(stderr, "usage: vmigrate resume NAME [--destination-lost]\n"
			"  resumes a guest left paused by an uncertain handover, once the\n"
			"  destination confirms it does not run it; --destination-lost: that\n"
			"  host is gone for good (your word; refused until the handover bound\n"
			"  has passed)\n");
		return EXIT_USAGE;
	}
	req = svc_req("resume");
	json_object_object_add(req, "name", json_object_new_string(name));
	json_object_object_add(req, "destination_lost", json_object_new_boolean(lost));
	rep = svc_request(req, false);
	if (!rep)
		return 1;
	status = ipc_bool(rep, "ok", false) ? 0 : 1;
	if (status)
		fprintf(stderr, "vmigrate: %s\n", ipc_str(rep, "error", "failed"));
	else
		printf("%s: resumed here (destination: %s)\n", name,
		       ipc_str(rep, "destination", "?"));
	json_object_put(rep);
	return status;
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* One progress line: the round and how much of it is sent, and the share of
 * everything sent so far, which only grows. */
static void show_progress(struct json_object *p, double *shown_pct, bool tty)
{
	struct json_object *st;
	double pct, total, sent, round_pct;

	if (!json_object_object_get_ex(p, "stats", &st))
		return;
	sent = (double)ipc_int(st, "transferred_bytes", 0);
	total = sent + (ipc_int(p, "round_pages", 0) - ipc_int(p, "round_done", 0)) * 4096.0;
	pct = total > 0 ? 100.0 * sent / total : 0;
	if (!strcmp(ipc_str(st, "status", ""), "completed"))
		pct = 100;
	if (pct < *shown_pct)
		pct = *shown_pct;
	*shown_pct = pct;
	round_pct = ipc_int(p, "round_pages", 0) > 0 ?
		    100.0 * ipc_int(p, "round_done", 0) / ipc_int(p, "round_pages", 0) : 0;
	fprintf(stderr, "%s%-9s round %lld %5.1f%% (all %5.1f%%)  %8.1f MiB/s  dirty %7.1f MiB/s  "
		"expected downtime %5lld ms  ETA %5.1f s%s",
		tty ? "\r" : "", ipc_str(st, "status", "?"), ipc_int(p, "round", 0), round_pct, pct,
		ipc_double(st, "mbps", 0) * 1e6 / 8 / (1 << 20),
		ipc_int(st, "dirty_pages_rate", 0) * 4096.0 / (1 << 20),
		ipc_int(st, "expected_downtime_ms", 0), ipc_double(p, "eta_s", 0),
		tty ? "  " : "\n");
}

int cmd_migrate(int argc, char **argv)
{
	enum { O_DOWNTIME = 256, O_BW, O_AUTO, O_TIMEOUT, O_ON_TIMEOUT, O_COMPRESS, O_NOCOMP,
	       O_JSON, O_QUIET, O_CHANNELS, O_TRANSPORT };
	static const struct option longopts[] = {
		{ "max-downtime", required_argument, NULL, O_DOWNTIME },
		{ "bandwidth", required_argument, NULL, O_BW },
		{ "auto-converge", no_argument, NULL, O_AUTO },
		{ "timeout", required_argument, NULL, O_TIMEOUT },
		{ "on-timeout", required_argument, NULL, O_ON_TIMEOUT },
		{ "compress", required_argument, NULL, O_COMPRESS },
		{ "no-compress", no_argument, NULL, O_NOCOMP },
		{ "channels", required_argument, NULL, O_CHANNELS },
		{ "transport", required_argument, NULL, O_TRANSPORT },
		{ "json", no_argument, NULL, O_JSON },
		{ "quiet", no_argument, NULL, O_QUIET },
		{ 0 }
	};
	struct json_object *req = svc_req("migrate"), *rep, *st = NULL;
	bool json = false, quiet = false, tty = isatty(2);
	double shown = 0, last_line = 0, seconds;
	char job[128];
	uint64_t v;
	int c, status;

	optind = 1;
	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		int bad = 0;

		switch (c) {
		case O_DOWNTIME:
			bad = parse_uint(optarg, &v);
			json_object_object_add(req, "max_downtime_ms", json_object_new_int64((int64_t)v));
			break;
		case O_BW:
			bad = parse_rate(optarg, &v);
			json_object_object_add(req, "bandwidth", json_object_new_int64((int64_t)v));
			break;
		case O_AUTO:
			json_object_object_add(req, "auto_converge", json_object_new_boolean(1));
			break;
		case O_TIMEOUT:
			bad = parse_seconds(optarg, &seconds);
			json_object_object_add(req, "timeout_s", json_object_new_double(seconds));
			break;
		case O_ON_TIMEOUT:
			bad = strcmp(optarg, "cancel") && strcmp(optarg, "force");
			json_object_object_add(req, "on_timeout", json_object_new_string(optarg));
			break;
		case O_COMPRESS: {
			enum mig_compress mode;

			bad = mig_compress_parse(optarg, &mode);
			json_object_object_add(req, "compress", json_object_new_string(optarg));
			break;
		}
		case O_NOCOMP:
			json_object_object_add(req, "compress", json_object_new_string("off"));
			break;
		case O_TRANSPORT:
			bad = strcmp(optarg, "tcp") && strcmp(optarg, "tls") && strcmp(optarg, "rdma");
			json_object_object_add(req, "transport", json_object_new_string(
				strcmp(optarg, "rdma") ? "tcp" : "rdma"));
			break;
		case O_CHANNELS:
			bad = parse_uint(optarg, &v) || v > 16;
			json_object_object_add(req, "channels", json_object_new_int((int)v));
			break;
		case O_JSON: json = true; break;
		case O_QUIET: quiet = true; break;
		default: bad = 1; break;
		}
		if (bad) {
			json_object_put(req);
			fprintf(stderr, "usage: vmigrate migrate NAME HOST[:PORT] [--max-downtime MS] "
				"[--bandwidth RATE] [--auto-converge] [--timeout S] "
				"[--on-timeout cancel|force] [--compress auto|lz4|off] [--no-compress] "
				"[--channels N] [--transport tls|rdma] "
				"[--json] [--quiet]\n");
			return EXIT_USAGE;
		}
	}
	if (optind != argc - 2) {
		fprintf(stderr, "vmigrate migrate: give a guest NAME and a HOST[:PORT]\n");
		json_object_put(req);
		return EXIT_USAGE;
	}
	json_object_object_add(req, "name", json_object_new_string(argv[optind]));
	json_object_object_add(req, "dest", json_object_new_string(argv[optind + 1]));
	rep = svc_request(req, true);
	if (!rep)
		return 1;	/* nothing started: the guest runs here */
	snprintf(job, sizeof(job), "%s", ipc_str(rep, "job", ""));
	json_object_put(rep);
	if (!quiet)
		fprintf(stderr, "vmigrate: job %s: %s -> %s\n", job, argv[optind], argv[optind + 1]);

	for (;;) {
		struct json_object *q = svc_req("job");

		json_object_object_add(q, "job", json_object_new_string(job));
		rep = svc_request(q, true);
		if (!rep) {
			fprintf(stderr, "vmigrate: lost track of job %s; see 'vmigrate info %s'\n",
				job, argv[optind]);
			return EXIT_UNCERTAIN;
		}
		if (!quiet && (tty || now() - last_line >= 1.0)) {
			show_progress(rep, &shown, tty);
			last_line = now();
		}
		if (ipc_bool(rep, "done", false))
			break;
		json_object_put(rep);
		usleep(200000);
	}
	if (!quiet) {
		show_progress(rep, &shown, tty);
		if (tty)
			fputc('\n', stderr);
	}
	json_object_object_get_ex(rep, "stats", &st);
	if (json)
		svc_print_json(st);
	else if (!ipc_int(st, "rounds", 0) && !ipc_int(st, "transferred_bytes", 0)) {
		/* it ended before the first round: only the reason means anything */
		const char *what = ipc_str(st, "status", "?"), *why = ipc_str(st, "error", "");

		printf("%s: %s%s%s\n", argv[optind], what, *why && strcmp(why, what) ? ": " : "",
		       strcmp(why, what) ? why : "");
	} else
		printf("%s: %s in %lld ms, downtime %lld ms, %lld rounds, %.1f MiB sent%s%s\n",
		       argv[optind], ipc_str(st, "status", "?"), ipc_int(st, "total_time_ms", 0),
		       ipc_int(st, "downtime_ms", 0), ipc_int(st, "rounds", 0),
		       ipc_int(st, "transferred_bytes", 0) / 1048576.0,
		       ipc_str(st, "error", NULL) ? ": " : "", ipc_str(st, "error", ""));
	if (!strcmp(ipc_str(st, "status", ""), "completed"))
		status = 0;
	else if (!strcmp(ipc_str(st, "status", ""), "uncertain"))
		status = EXIT_UNCERTAIN;
	else
		status = 1;
	json_object_put(rep);
	return status;
}

int cmd_jobs(int argc, char **argv)
{
	const char *unused;
	bool json;
	struct json_object *rep, *jobs;

	if (name_and_json(argc, argv, &unused, &json, ""))
		return EXIT_USAGE;
	rep = svc_request(svc_req("jobs"), true);
	if (!rep)
		return 1;
	if (json) {
		svc_print_json(rep);
	} else if (json_object_object_get_ex(rep, "jobs", &jobs)) {
		printf("%-32s %-16s %-10s %6s %10s\n", "JOB", "GUEST", "STATUS", "ROUND", "SENT(MiB)");
		for (size_t i = 0; i < json_object_array_length(jobs); i++) {
			struct json_object *j = json_object_array_get_idx(jobs, i), *st = NULL;

			json_object_object_get_ex(j, "stats", &st);
			printf("%-32s %-16s %-10s %6lld %10.1f\n", ipc_str(j, "job", "?"),
			       ipc_str(j, "guest", "?"), ipc_str(st, "status", "?"),
			       ipc_int(j, "round", 0),
			       ipc_int(st, "transferred_bytes", 0) / 1048576.0);
		}
	}
	json_object_put(rep);
	return 0;
}

int cmd_cancel(int argc, char **argv)
{
	struct json_object *req, *rep;

	if (argc != 2) {
		fprintf(stderr, "usage: vmigrate cancel JOB\n");
		return EXIT_USAGE;
	}
	req = svc_req("cancel");
	json_object_object_add(req, "job", json_object_new_string(argv[1]));
	rep = svc_request(req, true);
	if (!rep)
		return 1;
	printf("%s: cancel requested\n", argv[1]);
	json_object_put(rep);
	return 0;
}

int cmd_set_bandwidth(int argc, char **argv)
{
	struct json_object *req, *rep;
	uint64_t rate;

	if (argc != 3 || parse_rate(argv[2], &rate)) {
		fprintf(stderr, "usage: vmigrate set-bandwidth JOB RATE\n");
		return EXIT_USAGE;
	}
	req = svc_req("set-bandwidth");
	json_object_object_add(req, "job", json_object_new_string(argv[1]));
	json_object_object_add(req, "bandwidth", json_object_new_int64((int64_t)rate));
	rep = svc_request(req, true);
	if (!rep)
		return 1;
	printf("%s: bandwidth %s\n", argv[1], argv[2]);
	json_object_put(rep);
	return 0;
}

/* An absolute path for the service, which has another working directory. */
static char *absolute(const char *path)
{
	char *dir_copy = strdup(path), *base_copy = strdup(path), *dir, *abs = NULL;

	if (dir_copy && base_copy) {
		char *d = realpath(dirname(dir_copy), NULL);

		dir = d;
		if (dir && asprintf(&abs, "%s/%s", dir, basename(base_copy)) < 0)
			abs = NULL;
		free(d);
	}
	free(dir_copy);
	free(base_copy);
	return abs;
}

/* The key file travels by name: the guest process reads it itself. */
/* svc_request(req, true), naming the key file (key: a path, or NULL) first. */
static struct json_object *request_with_key(struct json_object *req, const char *key,
					    const char *cmd)
{
	char *abs = key ? realpath(key, NULL) : NULL;

	if (key && !abs) {
		fprintf(stderr, "vmigrate %s: key %s: %s\n", cmd, key, strerror(errno));
		json_object_put(req);
		return NULL;
	}
	if (abs)
		json_object_object_add(req, "key_file", json_object_new_string(abs));
	free(abs);
	return svc_request(req, true);
}

int cmd_snapshot(int argc, char **argv)
{
	bool incremental = false, json = false, live = false;
	const char *name = NULL, *file = NULL, *key = NULL;
	struct json_object *req, *rep;
	char *abs;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--incremental"))
			incremental = true;
		else if (!strcmp(argv[i], "--live"))
			live = true;
		else if (!strcmp(argv[i], "--key") && i + 1 < argc)
			key = argv[++i];
		else if (!strcmp(argv[i], "--json"))
			json = true;
		else if (!name)
			name = argv[i];
		else if (!file)
			file = argv[i];
		else
			name = NULL, i = argc;
	}
	if (!name || !file) {
		fprintf(stderr, "usage: vmigrate snapshot NAME FILE [--live] [--incremental] [--key KEYFILE] [--json]\n");
		return EXIT_USAGE;
	}
	abs = absolute(file);
	if (!abs) {
		fprintf(stderr, "vmigrate snapshot: %s: no such directory\n", file);
		return 1;
	}
	req = svc_req("snapshot");
	json_object_object_add(req, "name", json_object_new_string(name));
	json_object_object_add(req, "file", json_object_new_string(abs));
	json_object_object_add(req, "incremental", json_object_new_boolean(incremental));
	json_object_object_add(req, "live", json_object_new_boolean(live));
	free(abs);
	rep = request_with_key(req, key, "snapshot");
	if (!rep)
		return 1;
	if (json)
		svc_print_json(rep);
	else
		printf("%s: %s%s checkpoint %s, %.1f MiB, guest paused %.1f ms\n", name,
		       live ? "live " : "", incremental ? "incremental" : "full", ipc_str(rep, "file", "?"),
		       ipc_int(rep, "file_bytes", 0) / 1048576.0, ipc_double(rep, "pause_ms", 0));
	json_object_put(rep);
	return 0;
}

int cmd_restore(int argc, char **argv)
{
	const char *file = NULL, *name = NULL, *key = NULL;
	bool json = false, lazy = false;
	struct json_object *req, *rep;
	char *abs;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--name") && i + 1 < argc)
			name = argv[++i];
		else if (!strcmp(argv[i], "--key") && i + 1 < argc)
			key = argv[++i];
		else if (!strcmp(argv[i], "--lazy"))
			lazy = true;
		else if (!strcmp(argv[i], "--json"))
			json = true;
		else if (!file)
			file = argv[i];
		else
			file = NULL, i = argc;
	}
	if (!file) {
		fprintf(stderr, "usage: vmigrate restore FILE [--name NAME] [--lazy] [--key KEYFILE] [--json]\n");
		return EXIT_USAGE;
	}
	abs = realpath(file, NULL);
	if (!abs) {
		fprintf(stderr, "vmigrate restore: %s: %s\n", file, strerror(errno));
		return 1;
	}
	req = svc_req("restore");
	json_object_object_add(req, "file", json_object_new_string(abs));
	if (name)
		json_object_object_add(req, "name", json_object_new_string(name));
	json_object_object_add(req, "lazy", json_object_new_boolean(lazy));
	free(abs);
	rep = request_with_key(req, key, "restore");
	if (!rep)
		return 1;
	if (json)
		svc_print_json(rep);
	else
		printf("restored %s (pid %lld)\n", file, ipc_int(rep, "pid", 0));
	json_object_put(rep);
	return 0;
}
