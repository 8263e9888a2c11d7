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
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "guest_opts.h"
#include "help.h"
#include "ipc.h"
#include "migrate.h"
#include "units.h"

/* Options shared by the simple commands: NAME and --json. */
static int name_and_json(int argc, char **argv, const char **name, bool *json, const char *what)
{
	if (svc_name_and_flag(argc, argv, 1, "--json", name, json) || (!*name && what[0])) {
		cli_usage(argv[0]);
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
	while ((c = getopt_long(argc, argv, ":", longopts, NULL)) != -1) {
		ret = guest_opts_parse(&g, c, optarg, "start");
		if (ret < 0)
			return EXIT_USAGE;
		if (ret)
			continue;
		if (c != O_JSON)
			return cli_getopt_error("start", c, argv);
		json = true;
	}
	if (optind != argc - 1)
		return cli_usage_error("start", "give exactly one guest NAME");
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
		printf("%-20s %-8s %-13s %8s %6s %14s\n", "NAME", "KIND", "STATE", "MEM(MiB)", "VCPUS",
		       "COUNTER");
		for (size_t i = 0; i < json_object_array_length(guests); i++) {
			struct json_object *g = json_object_array_get_idx(guests, i);

			const char *kind = ipc_str(g, "kind", "kvm");

			if (!json_object_object_get_ex(g, "mem", NULL)) {	/* not answering */
				printf("%-20s %-8s %-13s %8s %6s %14s  (pid %lld)\n",
				       ipc_str(g, "name", "?"), kind, ipc_str(g, "state", "?"), "-",
				       "-", "-", ipc_int(g, "pid", 0));
				continue;
			}
			if (!strcmp(kind, "libvirt")) {	/* no counter: not our payload */
				printf("%-20s %-8s %-13s %8lld %6lld %14s\n", ipc_str(g, "name", "?"),
				       kind, ipc_str(g, "state", "?"), ipc_int(g, "mem", 0) >> 20,
				       ipc_int(g, "vcpus", 0), "-");
				continue;
			}
			printf("%-20s %-8s %-13s %8lld %6lld %14lld\n", ipc_str(g, "name", "?"), kind,
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
	if (!ipc_bool(rep, "ok", false))
		return cli_fail_reply(1, rep);
	status = 0;
	if (json) {
		svc_print_json(rep);
	} else if (!strcmp(cmd, "info") && !strcmp(ipc_str(rep, "kind", ""), "libvirt")) {
		printf("%s: libvirt domain, %s, %lld MiB (at most %lld MiB), %lld vCPUs, uuid %s\n",
		       name, ipc_str(rep, "state", "?"), ipc_int(rep, "mem", 0) >> 20,
		       ipc_int(rep, "max_mem", 0) >> 20, ipc_int(rep, "vcpus", 0),
		       ipc_str(rep, "uuid", "?"));
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
	bool lost = false, json = false;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--destination-lost"))
			lost = true;
		else if (!strcmp(argv[i], "--json"))
			json = true;
		else if (argv[i][0] == '-')
			return cli_unknown_option("resume", argv[i]);
		else if (!name)
			name = argv[i];
		else
			return cli_usage_error("resume", "give one guest NAME");
	}
	if (!name)
		return cli_usage_error("resume", "give the guest's NAME");
	req = svc_req("resume");
	json_object_object_add(req, "name", json_object_new_string(name));
	json_object_object_add(req, "destination_lost", json_object_new_boolean(lost));
	rep = svc_request(req, true);
	if (!rep)
		return 1;
	if (json)
		svc_print_json(rep);
	else
		printf("%s: resumed here (destination: %s)\n", name,
		       ipc_str(rep, "destination", "?"));
	json_object_put(rep);
	return 0;
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/*
 * One progress line: the round; the share of the job's expected time gone
 * by (the service's figure: it never goes back and is 100 only once the
 * guest runs there); the rate on the wire and the rate of pages dirtied
 * again, both recent; what is left (QEMU's ram remaining: the rest of this
 * round and the pages dirtied again since they were sent); QEMU's expected
 * downtime (the pause if it began now); the time until the guest runs
 * there, "?" while dirtying outpaces the link.
 */
static void show_progress(struct json_object *p, bool tty)
{
	struct json_object *st;
	double eta = ipc_double(p, "eta_s", -1);
	char eta_text[32];

	if (!json_object_object_get_ex(p, "stats", &st))
		return;
	if (!strcmp(ipc_str(st, "status", ""), "completed"))
		eta = 0;
	if (eta < 0)
		snprintf(eta_text, sizeof(eta_text), "%7s", "?");
	else
		snprintf(eta_text, sizeof(eta_text), "%5.1f s", eta);
	fprintf(stderr, "%s%-9s round %lld %5.1f%%  %7.1f MiB/s  dirty %6.1f MiB/s  "
		"%8.1f MiB left  expected downtime %6lld ms  ETA %s%s",
		tty ? "\r" : "", ipc_str(st, "status", "?"), ipc_int(p, "round", 0),
		ipc_double(p, "percent", 0), ipc_double(st, "mbps", 0) * 1e6 / 8 / (1 << 20),
		ipc_int(st, "dirty_pages_rate", 0) * 4096.0 / (1 << 20),
		ipc_int(st, "remaining_bytes", 0) / 1048576.0,
		ipc_int(st, "expected_downtime_ms", 0), eta_text, tty ? "  " : "\n");
}

static volatile sig_atomic_t interrupts;

static void on_interrupt(int sig)
{
	(void)sig;
	interrupts++;
}

/* Ctrl-C, SIGTERM or a hang-up while migrate waits: noted, not fatal. */
static void catch_interrupts(void)
{
	struct sigaction sa = { .sa_handler = on_interrupt, .sa_flags = SA_RESTART };

	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
}

static int cancel_job(const char *job)
{
	struct json_object *req = svc_req("cancel"), *rep;
	bool json = cli_json;

	json_object_object_add(req, "job", json_object_new_string(job));
	cli_json = false;	/* not the command's outcome: that is printed at its end */
	rep = svc_request(req, true);
	cli_json = json;
	json_object_put(rep);
	return rep ? 0 : -1;
}

/* migrate --json: the job's final figures (QEMU's query-migrate) in the
 * envelope, with the job; ok only when the guest runs on the destination. */
static void print_outcome(struct json_object *rep, struct json_object *st, const char *name)
{
	struct json_object *o = st ? json_object_get(st) : json_object_new_object();
	const char *status = ipc_str(st, "status", "?");
	bool ok = !strcmp(status, "completed");

	json_object_object_add(o, "ok", json_object_new_boolean(ok));
	json_object_object_add(o, "job", json_object_new_string(ipc_str(rep, "job", "")));
	json_object_object_add(o, "guest", json_object_new_string(name));
	if (!ok) {
		const char *code = ipc_str(rep, "code", NULL);

		if (!code)
			code = !strcmp(status, "cancelled") ? IPC_E_CANCELLED :
			       !strcmp(status, "uncertain") ? IPC_E_UNCERTAIN :
			       !strcmp(status, "lost-in-flight") ? IPC_E_PEER_LOST : IPC_E_INTERNAL;
		if (!ipc_str(o, "error", NULL))
			json_object_object_add(o, "error", json_object_new_string(status));
		json_object_object_add(o, "code", json_object_new_string(code));
	}
	svc_print_json(o);
	json_object_put(o);
}

/* migrate --json --detach, interrupted: the job goes on; what to follow it by. */
static void print_detached(struct json_object *rep, const char *name)
{
	struct json_object *o = ipc_ok(), *st = NULL;

	json_object_object_add(o, "job", json_object_new_string(ipc_str(rep, "job", "")));
	json_object_object_add(o, "guest", json_object_new_string(name));
	json_object_object_add(o, "detached", json_object_new_boolean(true));
	if (json_object_object_get_ex(rep, "stats", &st))
		json_object_object_add(o, "stats", json_object_get(st));
	svc_print_json(o);
	json_object_put(o);
}

int cmd_migrate(int argc, char **argv)
{
	enum { O_DOWNTIME = 256, O_BW, O_AUTO, O_TIMEOUT, O_ON_TIMEOUT, O_COMPRESS, O_NOCOMP,
	       O_JSON, O_QUIET, O_CHANNELS, O_TRANSPORT, O_DETACH, O_POSTCOPY, O_POSTCOPY_AFTER,
	       O_LIBVIRT_DEST };
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
		{ "detach", no_argument, NULL, O_DETACH },
		{ "postcopy", no_argument, NULL, O_POSTCOPY },
		{ "postcopy-after", required_argument, NULL, O_POSTCOPY_AFTER },
		{ "libvirt-dest", required_argument, NULL, O_LIBVIRT_DEST },
		{ 0 }
	};
	struct json_object *req = svc_req("migrate"), *rep, *st = NULL;
	const char *what, *why;
	bool json = false, quiet = false, detach = false, tty = isatty(2);
	double last_line = 0, seconds;
	int asked = 0;
	char job[128];
	uint64_t v;
	int c, idx = 0, status;

	optind = 1;
	while ((c = getopt_long(argc, argv, ":", longopts, &idx)) != -1) {
		const char *choices = NULL;	/* named with a bad value */
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
			choices = "cancel or force";
			json_object_object_add(req, "on_timeout", json_object_new_string(optarg));
			break;
		case O_COMPRESS: {
			enum mig_compress mode;

			bad = mig_compress_parse(optarg, &mode);
			choices = MIG_COMPRESS_CHOICES;
			json_object_object_add(req, "compress", json_object_new_string(optarg));
			break;
		}
		case O_NOCOMP:
			json_object_object_add(req, "compress", json_object_new_string("off"));
			break;
		case O_TRANSPORT:
			bad = strcmp(optarg, "tcp") && strcmp(optarg, "tls") && strcmp(optarg, "rdma");
			choices = "tls or rdma";
			json_object_object_add(req, "transport", json_object_new_string(
				strcmp(optarg, "rdma") ? "tcp" : "rdma"));
			break;
		case O_CHANNELS:
			bad = parse_uint(optarg, &v) || v > 16;
			choices = "0 to 16";
			json_object_object_add(req, "channels", json_object_new_int((int)v));
			break;
		case O_POSTCOPY:
			json_object_object_add(req, "postcopy", json_object_new_string("pure"));
			break;
		case O_POSTCOPY_AFTER: {
			struct mig_params pp;

			bad = strcmp(optarg, "manual") && (mig_postcopy_parse(optarg, &pp) ||
							   pp.postcopy == MIG_POSTCOPY_PURE);
			choices = "a number of rounds (1 or more), auto or manual";
			json_object_object_add(req, "postcopy", json_object_new_string(optarg));
			break;
		}
		case O_LIBVIRT_DEST:
			json_object_object_add(req, "libvirt_dest", json_object_new_string(optarg));
			break;
		case O_JSON: json = true; break;
		case O_QUIET: quiet = true; break;
		case O_DETACH: detach = true; break;
		default:
			json_object_put(req);
			return cli_getopt_error("migrate", c, argv);
		}
		if (bad) {
			char opt[32];

			snprintf(opt, sizeof(opt), "--%s", longopts[idx].name);
			json_object_put(req);
			return cli_bad_value("migrate", opt, optarg, choices);
		}
	}
	if (optind != argc - 2) {
		json_object_put(req);
		return cli_usage_error("migrate", "give a guest NAME and a HOST[:PORT]");
	}
	json_object_object_add(req, "name", json_object_new_string(argv[optind]));
	json_object_object_add(req, "dest", json_object_new_string(argv[optind + 1]));
	catch_interrupts();	/* from here on, a job may run: never leave it silently */
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
		cli_json = false;	/* a failure here is not the command's: said below */
		rep = svc_request(q, true);
		cli_json = json;
		if (!rep)
			return cli_fail(EXIT_UNCERTAIN, NULL, IPC_E_UNCERTAIN, "lost track of job %s; "
					"see 'vmigrate info %s'", job, argv[optind]);
		if (!quiet && (tty || now() - last_line >= 1.0)) {
			show_progress(rep, tty);
			last_line = now();
		}
		if (ipc_bool(rep, "done", false))
			break;
		if (interrupts && detach) {
			fprintf(stderr, "%svmigrate: the migration continues as job %s; vmigrate "
				"cancel %s\n", tty && !quiet ? "\n" : "", job, job);
			if (json)
				print_detached(rep, argv[optind]);
			json_object_put(rep);
			return 0;
		}
		json_object_put(rep);
		if (interrupts > asked && asked)
			return cli_fail(1, NULL, IPC_E_CANCELLED, "no longer waiting; job %s was asked "
					"to cancel: 'vmigrate jobs --all' shows how it ends", job);
		if (interrupts > asked) {
			/* as virsh: the job is cancelled, the guest stays here (a
			 * handover already under way ends as it ends) */
			asked = interrupts;
			fprintf(stderr, "%svmigrate: interrupted: cancelling job %s; the guest stays "
				"here (Ctrl-C again to stop waiting)\n", tty && !quiet ? "\n" : "", job);
			if (cancel_job(job))
				fprintf(stderr, "vmigrate: job %s could not be cancelled; it continues: "
					"vmigrate cancel %s\n", job, job);
			continue;
		}
		usleep(200000);
	}
	if (!quiet) {
		show_progress(rep, tty);
		if (tty)
			fputc('\n', stderr);
	}
	json_object_object_get_ex(rep, "stats", &st);
	what = ipc_str(st, "status", "?");
	why = ipc_str(st, "error", "");
	if (!strcmp(why, what))
		why = "";	/* not "cancelled: cancelled" */
	if (json)
		print_outcome(rep, st, argv[optind]);
	else if (!ipc_int(st, "rounds", 0) && !ipc_int(st, "transferred_bytes", 0))
		/* it ended before the first round: only the reason means anything */
		printf("%s: %s%s%s\n", argv[optind], what, *why ? ": " : "", why);
	else
		printf("%s: %s in %lld ms, downtime %lld ms, %lld rounds, %.1f MiB sent%s%s\n",
		       argv[optind], what, ipc_int(st, "total_time_ms", 0),
		       ipc_int(st, "downtime_ms", 0), ipc_int(st, "rounds", 0),
		       ipc_int(st, "transferred_bytes", 0) / 1048576.0, *why ? ": " : "", why);
	if (!strcmp(ipc_str(st, "status", ""), "completed"))
		status = 0;
	else if (!strcmp(ipc_str(st, "status", ""), "uncertain"))
		status = EXIT_UNCERTAIN;
	else
		status = 1;
	json_object_put(rep);
	return status;
}

/* One row of the jobs table: running or finished, either way. */
static void print_job(struct json_object *j)
{
	struct json_object *st = NULL;
	bool done = ipc_bool(j, "done", false);
	bool out = !strcmp(ipc_str(j, "direction", ""), "outgoing");
	char left[32] = "-", down[32] = "-";

	json_object_object_get_ex(j, "stats", &st);
	if (!done && out)
		snprintf(left, sizeof(left), "%.1f", ipc_int(st, "remaining_bytes", 0) / 1048576.0);
	if (done && out && !strcmp(ipc_str(st, "status", ""), "completed"))
		snprintf(down, sizeof(down), "%lld", ipc_int(st, "downtime_ms", 0));
	printf("%-32s %-16s %-9s %-10s %6lld %10.1f %10s %8.1f %9s  %s\n", ipc_str(j, "job", "?"),
	       ipc_str(j, "guest", "?"), ipc_str(j, "direction", "?"), ipc_str(st, "status", "?"),
	       ipc_int(st, "rounds", 0), ipc_int(st, "transferred_bytes", 0) / 1048576.0, left,
	       ipc_int(st, "total_time_ms", 0) / 1000.0, down,
	       done ? ipc_str(j, "finished_at", "-") : "-");
	if (ipc_str(st, "error", NULL))
		printf("    %s\n", ipc_str(st, "error", ""));
}

/* jobs [--completed | --all] [--json]: the jobs of this host's guests, the
 * finished ones kept by the service (the last few, with their final
 * figures), or both. */
int cmd_jobs(int argc, char **argv)
{
	bool json = false, completed = false, all = false;
	struct json_object *req, *rep, *jobs;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--json")) {
			json = true;
		} else if (!strcmp(argv[i], "--completed")) {
			completed = true;
		} else if (!strcmp(argv[i], "--all")) {
			all = true;
		} else {
			return cli_unknown_option("jobs", argv[i]);
		}
	}
	req = svc_req("jobs");
	json_object_object_add(req, "completed", json_object_new_boolean(completed));
	json_object_object_add(req, "all", json_object_new_boolean(all));
	rep = svc_request(req, true);
	if (!rep)
		return 1;
	if (json) {
		svc_print_json(rep);
	} else if (json_object_object_get_ex(rep, "jobs", &jobs)) {
		printf("%-32s %-16s %-9s %-10s %6s %10s %10s %8s %9s  %s\n", "JOB", "GUEST",
		       "DIRECTION", "STATUS", "ROUNDS", "DATA(MiB)", "LEFT(MiB)", "TIME(s)",
		       "DOWN(ms)", "FINISHED");
		for (size_t i = 0; i < json_object_array_length(jobs); i++)
			print_job(json_object_array_get_idx(jobs, i));
	}
	json_object_put(rep);
	return 0;
}

/* The words of a command that takes them and --json: *n of them in
 * words (at most max); EXIT_USAGE, said, for an unknown option or a word
 * too many. */
static int words_and_json(int argc, char **argv, const char **words, int max, int *n,
			  bool *json)
{
	*n = 0;
	*json = false;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--json"))
			*json = true;
		else if (argv[i][0] == '-' && argv[i][1])
			return cli_unknown_option(argv[0], argv[i]);
		else if (*n < max)
			words[(*n)++] = argv[i];
		else
			return cli_usage_error(argv[0], "one argument too many: '%s'", argv[i]);
	}
	return 0;
}

/*
 * A request about one job: cmd JOB [DEST] (DEST only where dest_ok), sent
 * to the service; said is what the text output says it asked for.
 */
static int job_request(const char *cmd, int argc, char **argv, bool dest_ok, const char *usage,
		       const char *said)
{
	struct json_object *req, *rep;
	const char *w[2];
	bool json;
	int n;

	if (words_and_json(argc, argv, w, dest_ok ? 2 : 1, &n, &json))
		return EXIT_USAGE;
	if (n < 1 || (!dest_ok && n != 1))
		return cli_usage_error(cmd, "%s", usage);
	req = svc_req(cmd);
	json_object_object_add(req, "job", json_object_new_string(w[0]));
	if (n == 2)
		json_object_object_add(req, "dest", json_object_new_string(w[1]));
	rep = svc_request(req, true);
	if (!rep)
		return 1;
	if (json) {
		json_object_object_add(rep, "job", json_object_new_string(w[0]));
		svc_print_json(rep);
	} else {
		printf("%s: %s%s%s\n", w[0], said, n == 2 ? " to " : "", n == 2 ? w[1] : "");
	}
	json_object_put(rep);
	return 0;
}

int cmd_cancel(int argc, char **argv)
{
	return job_request("cancel", argc, argv, false,
			   "give the JOB ('vmigrate jobs' lists them)", "cancel requested");
}

int cmd_migrate_postcopy(int argc, char **argv)
{
	return job_request("migrate-postcopy", argc, argv, false,
			   "give the JOB ('vmigrate jobs' lists them)", "switching to post-copy");
}

int cmd_migrate_recover(int argc, char **argv)
{
	return job_request("migrate-recover", argc, argv, true,
			   "give the JOB, and maybe a HOST[:PORT]", "reconnecting");
}

int cmd_set_bandwidth(int argc, char **argv)
{
	struct json_object *req, *rep;
	const char *w[2];
	uint64_t rate;
	bool json;
	int n;

	if (words_and_json(argc, argv, w, 2, &n, &json))
		return EXIT_USAGE;
	if (n != 2)
		return cli_usage_error("set-bandwidth", "give the JOB and the RATE");
	if (parse_rate(w[1], &rate))
		return cli_bad_value("set-bandwidth", "RATE", w[1], "e.g. 100M or 1G/s");
	req = svc_req("set-bandwidth");
	json_object_object_add(req, "job", json_object_new_string(w[0]));
	json_object_object_add(req, "bandwidth", json_object_new_int64((int64_t)rate));
	rep = svc_request(req, true);
	if (!rep)
		return 1;
	if (json) {
		json_object_object_add(rep, "job", json_object_new_string(w[0]));
		json_object_object_add(rep, "bandwidth", json_object_new_int64((int64_t)rate));
		svc_print_json(rep);
	} else {
		printf("%s: bandwidth %s\n", w[0], w[1]);
	}
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
		cli_fail(1, cmd, ipc_errno_code(errno), "key %s: %s", key, strerror(errno));
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
	bool incremental = false, json = false, live = false, force = false, background = false;
	const char *name = NULL, *file = NULL, *key = NULL, *method = NULL, *compress = NULL;
	enum ckpt_compressor compressor;
	struct json_object *req, *rep;
	struct stat st;
	char *abs;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--incremental"))
			incremental = true;
		else if (!strcmp(argv[i], "--method") && i + 1 < argc)
			method = argv[++i];
		else if (!strcmp(argv[i], "--compress") && i + 1 < argc)
			compress = argv[++i];
		else if (!strcmp(argv[i], "--force"))
			force = true;
		else if (!strcmp(argv[i], "--live"))
			live = true;
		else if (!strcmp(argv[i], "--background-snapshot"))
			background = true;
		else if (!strcmp(argv[i], "--key") && i + 1 < argc)
			key = argv[++i];
		else if (!strcmp(argv[i], "--json"))
			json = true;
		else if (!strcmp(argv[i], "--key") || !strcmp(argv[i], "--method") ||
			 !strcmp(argv[i], "--compress"))
			return cli_missing_value("snapshot", argv[i]);
		else if (argv[i][0] == '-')
			return cli_unknown_option("snapshot", argv[i]);
		else if (!name)
			name = argv[i];
		else if (!file)
			file = argv[i];
		else
			name = NULL, i = argc;
	}
	if (!name || !file)
		return cli_usage_error("snapshot", "give a guest NAME and a FILE");
	if (compress && ckpt_compressor_parse(compress, &compressor))
		return cli_bad_value("snapshot", "--compress", compress, CKPT_COMPRESSOR_CHOICES);
	if (stat(file, &st) == 0 && S_ISDIR(st.st_mode))
		return cli_fail(1, "snapshot", IPC_E_BAD_ARGUMENT, "%s is a directory: give the "
				"checkpoint a file name", file);
	abs = absolute(file);
	if (!abs)
		return cli_fail(1, "snapshot", IPC_E_NOT_FOUND, "%s: no such directory", file);
	req = svc_req("snapshot");
	json_object_object_add(req, "name", json_object_new_string(name));
	json_object_object_add(req, "file", json_object_new_string(abs));
	json_object_object_add(req, "incremental", json_object_new_boolean(incremental));
	json_object_object_add(req, "live", json_object_new_boolean(live));
	if (background)
		json_object_object_add(req, "background_snapshot", json_object_new_boolean(true));
	if (method)
		json_object_object_add(req, "method", json_object_new_string(method));
	if (compress)
		json_object_object_add(req, "compress", json_object_new_string(compress));
	if (force)	/* may replace a checkpoint others build on (snap_check_target) */
		json_object_object_add(req, "force", json_object_new_boolean(true));
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
	bool json = false, lazy = false, paused = false;
	struct json_object *req, *rep;
	char *abs;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--name") && i + 1 < argc)
			name = argv[++i];
		else if (!strcmp(argv[i], "--key") && i + 1 < argc)
			key = argv[++i];
		else if (!strcmp(argv[i], "--lazy"))
			lazy = true;
		else if (!strcmp(argv[i], "--paused"))
			paused = true;
		else if (!strcmp(argv[i], "--json"))
			json = true;
		else if (!strcmp(argv[i], "--key") || !strcmp(argv[i], "--name"))
			return cli_missing_value("restore", argv[i]);
		else if (argv[i][0] == '-')
			return cli_unknown_option("restore", argv[i]);
		else if (!file)
			file = argv[i];
		else
			file = NULL, i = argc;
	}
	if (!file)
		return cli_usage_error("restore", "give one checkpoint FILE");
	abs = realpath(file, NULL);
	if (!abs)
		return cli_fail(1, "restore", ipc_errno_code(errno), "%s: %s", file, strerror(errno));
	req = svc_req("restore");
	json_object_object_add(req, "file", json_object_new_string(abs));
	if (name)
		json_object_object_add(req, "name", json_object_new_string(name));
	json_object_object_add(req, "lazy", json_object_new_boolean(lazy));
	if (paused)
		json_object_object_add(req, "paused", json_object_new_boolean(true));
	free(abs);
	rep = request_with_key(req, key, "restore");
	if (!rep)
		return 1;
	if (json)
		svc_print_json(rep);
	else if (!strcmp(ipc_str(rep, "kind", ""), "libvirt"))
		printf("restored libvirt domain %s from %s (%s, %.2f s)\n", ipc_str(rep, "name", "?"),
		       file, ipc_str(rep, "state", "?"), ipc_double(rep, "seconds", 0));
	else
		printf("restored %s (pid %lld)\n", file, ipc_int(rep, "pid", 0));
	json_object_put(rep);
	return 0;
}
