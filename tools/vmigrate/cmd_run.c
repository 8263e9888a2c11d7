/*
 * vmigrate run: a guest in the foreground. Shows the guest's console and,
 * once a second, its progress; stops cleanly on Ctrl-C or after
 * --duration, optionally verifying its memory and saving it to a file.
 * --restore FILE continues a guest saved that way, in this new process.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "guest_opts.h"
#include "help.h"
#include "ipc.h"
#include "memtouch.h"
#include "snapshot.h"
#include "units.h"
#include "vm.h"

static volatile sig_atomic_t stop_requested;
static atomic_int guest_failures;

struct run_opts {
	struct guest_opts g;
	bool hugetlb;
	double duration;
	const char *save;
	const char *restore;
	bool verify;
	bool quiet;
	bool json;
	uint64_t min_total;		/* --expect-counter-at-least */
	uint8_t key[64];		/* --key: MAC of --save, checked on --restore */
	int key_len;
	bool lazy;			/* --restore: run first, load memory behind */
};

static void on_signal(int sig)
{
	(void)sig;
	stop_requested = 1;
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* The guest's console: on stdout, or on stderr when stdout carries only
 * the JSON result (opaque: the run's options). */
static void on_console(void *opaque, const char *buf, size_t len)
{
	FILE *f = ((const struct run_opts *)opaque)->json ? stderr : stdout;

	fprintf(f, "[guest] %.*s%s", (int)len, buf, len && buf[len - 1] == '\n' ? "" : "\n");
	fflush(f);
}

static void on_guest_event(void *opaque, unsigned vcpu, uint32_t code, uint32_t arg)
{
	if (code == VMG_EV_CHECK_BAD) {
		atomic_fetch_add(&guest_failures, 1);
		fprintf(stderr, "vmigrate: guest vCPU %u self-check FAILED (page %u of its slice)\n",
			vcpu, arg);
	} else if (code == VMG_EV_PANIC) {
		atomic_fetch_add(&guest_failures, 1);
		fprintf(stderr, "vmigrate: guest vCPU %u panicked (code %u)\n", vcpu, arg);
	}
}

static void on_stopped(void *opaque, unsigned vcpu, int err, const char *why)
{
	if (err) {
		atomic_fetch_add(&guest_failures, 1);
		fprintf(stderr, "vmigrate: vCPU %u stopped: %s\n", vcpu, why);
	}
}

static int parse_args(int argc, char **argv, struct run_opts *o)
{
	enum { O_HUGE = GO_END, O_DUR, O_VERIFY, O_SAVE, O_RESTORE, O_QUIET, O_JSON, O_MIN,
	       O_KEY, O_LAZY };
	static const struct option longopts[] = {
		GUEST_LONGOPTS,
		{ "hugetlb", no_argument, NULL, O_HUGE },
		{ "duration", required_argument, NULL, O_DUR },
		{ "verify", no_argument, NULL, O_VERIFY },
		{ "save", required_argument, NULL, O_SAVE },
		{ "restore", required_argument, NULL, O_RESTORE },
		{ "quiet", no_argument, NULL, O_QUIET },
		{ "json", no_argument, NULL, O_JSON },
		{ "expect-counter-at-least", required_argument, NULL, O_MIN },
		{ "key", required_argument, NULL, O_KEY },
		{ "lazy", no_argument, NULL, O_LAZY },
		{ 0 }
	};
	int c, ret;

	memset(o, 0, sizeof(*o));
	guest_opts_init(&o->g);
	optind = 1;
	while ((c = getopt_long(argc, argv, ":", longopts, NULL)) != -1) {
		const char *bad = NULL;

		ret = guest_opts_parse(&o->g, c, optarg, "run");
		if (ret < 0)
			return ret;
		if (ret)
			continue;
		switch (c) {
		case O_HUGE: o->hugetlb = true; break;
		case O_DUR: if (parse_seconds(optarg, &o->duration)) bad = "--duration"; break;
		case O_VERIFY: o->verify = true; break;
		case O_SAVE: o->save = optarg; break;
		case O_RESTORE: o->restore = optarg; break;
		case O_QUIET: o->quiet = true; break;
		case O_JSON: o->json = true; break;
		case O_MIN: if (parse_uint(optarg, &o->min_total)) bad = "--expect-counter-at-least"; break;
		case O_KEY: {
			char err[256];

			o->key_len = snap_key_load(optarg, o->key, err, sizeof(err));
			if (o->key_len < 0)
				return cli_fail(-EINVAL, "run", ipc_errno_code(o->key_len), "%s", err);
			break;
		}
		case O_LAZY: o->lazy = true; break;
		default: cli_getopt_error("run", c, argv); return -EINVAL;
		}
		if (bad) {
			cli_bad_value("run", bad, optarg, NULL);
			return -EINVAL;
		}
	}
	if (optind < argc) {
		cli_usage_error("run", "unexpected argument '%s'", argv[optind]);
		return -EINVAL;
	}
	return 0;
}

static struct vm *boot_guest(const struct run_opts *o, const struct vm_events *ev,
			     void **owned_payload)
{
	struct vm_kvm_config cfg = {
		.name = "run", .mem_bytes = o->g.mem, .nr_vcpus = o->g.vcpus ? o->g.vcpus : 1,
		.dirty_mode = o->g.dirty_mode, .hugetlb = o->hugetlb, .events = *ev,
	};
	char err[256];
	struct vm *vm;

	cfg.payload = vm_payload_load(o->g.guest, &cfg.payload_size, owned_payload, err, sizeof(err));
	if (!cfg.payload) {
		cli_fail(1, "run", IPC_E_BAD_ARGUMENT, "%s", err);
		return NULL;
	}
	if (vm_memtouch_args(&o->g.mt, o->g.mem, cfg.args, err, sizeof(err))) {
		cli_fail(1, "run", IPC_E_BAD_ARGUMENT, "%s", err);
		return NULL;
	}
	vm = vm_kvm_create(&cfg, err, sizeof(err));
	if (!vm) {
		cli_fail(1, "run", IPC_E_INTERNAL, "%s", err);
		return NULL;
	}
	if (o->g.prefill) {
		uint64_t loaded;

		if (vm_memtouch_prefill(vm, o->g.prefill, &loaded, err, sizeof(err))) {
			cli_fail(1, "run", IPC_E_IO, "%s", err);
			vm_destroy(vm);
			return NULL;
		}
		if (!o->quiet)
			fprintf(stderr, "vmigrate: prefilled %llu MiB from %s\n",
				(unsigned long long)(loaded >> 20), o->g.prefill);
	}
	return vm;
}

/* The run's end with --json: its figures in the envelope, ok only when
 * nothing failed (why: the first failure, with its code). */
static void print_figures(const struct vm_verify_report *rep, const struct run_opts *o,
			  double seconds, uint64_t first_total, double restore_ms,
			  const char *why, const char *code)
{
	struct json_object *j = json_object_new_object();
	uint64_t writes = rep->total - first_total;

	json_object_object_add(j, "ok", json_object_new_boolean(!why));
	if (why) {
		json_object_object_add(j, "error", json_object_new_string(why));
		json_object_object_add(j, "code", json_object_new_string(code));
	}
	json_object_object_add(j, "status", json_object_new_string(why ? "failed" : "ok"));
	json_object_object_add(j, "seconds", json_object_new_double(seconds));
	json_object_object_add(j, "vcpus", json_object_new_int((int)rep->nr_vcpus));
	json_object_object_add(j, "counter", json_object_new_int64((int64_t)rep->total));
	json_object_object_add(j, "page_writes", json_object_new_int64((int64_t)writes));
	json_object_object_add(j, "dirty_mib_per_s", json_object_new_double(
		seconds > 0 ? writes * 4096.0 / seconds / (1 << 20) : 0.0));
	json_object_object_add(j, "passes", json_object_new_int64((int64_t)rep->passes));
	json_object_object_add(j, "guest_check_errors",
			       json_object_new_int64((int64_t)rep->guest_check_errors));
	json_object_object_add(j, "restore_ms", json_object_new_double(restore_ms));
	json_object_object_add(j, "verified", o->verify ? json_object_new_boolean(!why) : NULL);
	svc_print_json(j);
	json_object_put(j);
}

static int finish(struct vm *vm, const struct run_opts *o, double seconds,
		  uint64_t first_total, double restore_ms)
{
	struct vm_verify_report rep;
	const char *code = NULL;
	char why[600] = "";
	int status = 0, ret;

	vm_pause(vm);
	ret = vm_memtouch_verify(vm, &(struct vm_verify_opts){ .prefill = o->g.prefill }, &rep);
	if (o->verify) {
		if (ret) {
			snprintf(why, sizeof(why), "verify FAILED: %s", rep.msg);
			code = IPC_E_INTEGRITY;
		} else if (rep.total < o->min_total) {
			snprintf(why, sizeof(why), "verify FAILED: %llu page writes, expected at "
				 "least %llu", (unsigned long long)rep.total,
				 (unsigned long long)o->min_total);
			code = IPC_E_INTEGRITY;
		} else if (!o->quiet) {
			fprintf(stderr, "vmigrate: verified %llu pages (%llu caught mid-write)"
				"%s, counter %llu\n", (unsigned long long)rep.pages_checked,
				(unsigned long long)rep.in_flight,
				o->g.prefill ? " and the prefill" : "",
				(unsigned long long)rep.total);
		}
	}
	if (o->save) {
		struct snap_save_opts so = { .mac_key = o->key_len > 0 ? o->key : NULL,
					     .mac_key_len = o->key_len > 0 ? (size_t)o->key_len : 0 };
		struct snap_result res;
		char err[512];

		if ((ret = snap_save_paused(vm, o->save, &so, &res, err, sizeof(err)))) {
			if (!code) {
				snprintf(why, sizeof(why), "save failed: %s", err);
				code = ipc_errno_code(ret);
			} else {
				fprintf(stderr, "vmigrate run: save failed: %s\n", err);
			}
		} else if (!o->quiet) {
			fprintf(stderr, "vmigrate: saved to %s: %llu MiB in %.3f s\n", o->save,
				(unsigned long long)(res.file_bytes >> 20), res.seconds);
		}
	}
	if (!code && atomic_load(&guest_failures)) {
		snprintf(why, sizeof(why), "the guest failed %d time(s): a self-check, a panic or "
			 "a vCPU that stopped (said above)", atomic_load(&guest_failures));
		code = IPC_E_INTEGRITY;
	}
	if (code) {
		status = 1;
		fprintf(stderr, "vmigrate run: %s\n", why);
	}
	if (o->json)
		print_figures(&rep, o, seconds, first_total, restore_ms, code ? why : NULL, code);
	return status;
}

/* A page of the file did not read back: the vCPU that touched it never
 * resumes, the others stop now, and nothing of the guest is used again. */
static int lazy_failed(struct vm *vm, struct snap_lazy *lazy, const char *file)
{
	vm_pause(vm);
	cli_fail(1, "run", IPC_E_INTEGRITY, "lazy restore FAILED: %s of %s could not be read "
		 "back intact; the guest is stopped", snap_lazy_error(lazy), file);
	snap_lazy_abort(lazy);
	vm_destroy(vm);
	snap_lazy_free(lazy);
	return 1;
}

int cmd_run(int argc, char **argv)
{
	struct run_opts o;
	struct vm_events ev = { on_console, on_guest_event, on_stopped, &o };
	struct sigaction sa = { .sa_handler = on_signal };
	void *payload = NULL;
	struct vm *vm;
	uint64_t first_total = 0, last_total;
	struct snap_lazy *lazy = NULL;
	double t0, last, t_restore = 0, restore_ms;
	char why[256];
	int status;

	if (parse_args(argc, argv, &o))
		return EXIT_USAGE;
	if (!vm_kvm_available(why, sizeof(why)))
		return cli_fail(1, "run", IPC_E_UNSUPPORTED, "%s", why);
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);

	if (o.restore) {
		struct snap_restore_opts ro = { .nr_vcpus = o.g.vcpus, .dirty_mode = o.g.dirty_mode,
						.events = ev,
						.mac_key = o.key_len > 0 ? o.key : NULL,
						.mac_key_len = o.key_len > 0 ? (size_t)o.key_len : 0 };
		char err[512];

		t_restore = now();
		vm = o.lazy ? snap_restore_lazy(o.restore, &ro, &lazy, err, sizeof(err)) :
			      snap_restore(o.restore, &ro, err, sizeof(err));
		if (!vm)
			return cli_fail(1, "run", IPC_E_INTEGRITY, "restore refused: %s", err);
		first_total = vm_memtouch_total(vm);
		if (!o.quiet)
			fprintf(stderr, "vmigrate: restored %s, counter at %llu\n", o.restore,
				(unsigned long long)first_total);
		if (o.verify && !o.lazy) {	/* lazy: checked at the end, once it is all in */
			struct vm_verify_report rep;

			if (vm_memtouch_verify(vm, NULL, &rep)) {
				vm_destroy(vm);
				return cli_fail(1, "run", IPC_E_INTEGRITY, "restored memory FAILED to "
						"verify: %s", rep.msg);
			}
		}
	} else {
		vm = boot_guest(&o, &ev, &payload);
		if (!vm) {
			free(payload);
			return 1;
		}
	}

	if ((o.restore ? vm_resume(vm) : vm_start(vm)) < 0) {
		vm_destroy(vm);
		free(payload);
		return cli_fail(1, "run", IPC_E_INTERNAL, "cannot start the guest");
	}
	t0 = last = now();
	last_total = first_total;
	if (o.restore && !o.quiet)
		fprintf(stderr, "vmigrate: the guest runs %.1f ms after the restore began (%s)\n",
			(t0 - t_restore) * 1e3, o.lazy ? "lazy" : "eager");
	restore_ms = o.restore ? (t0 - t_restore) * 1e3 : 0;
	while (!stop_requested && !(o.duration > 0 && now() - t0 >= o.duration)) {
		double t;
		uint64_t total;

		usleep(o.duration > 0 && o.duration < 1 ? 10000 : 100000);
		if (lazy && snap_lazy_poll(lazy) < 0)
			return lazy_failed(vm, lazy, o.restore);
		t = now();
		if (t - last < 1.0)
			continue;
		total = vm_memtouch_total(vm);
		if (!o.quiet)
			fprintf(stderr, "vmigrate: %6.1f s  counter %llu  dirtying %.1f MiB/s\n",
				t - t0, (unsigned long long)total,
				(total - last_total) * 4096.0 / (t - last) / (1 << 20));
		last = t;
		last_total = total;
	}
	if (lazy) {
		uint64_t served = 0, prefetched = 0;

		if (snap_lazy_wait(lazy, &served, &prefetched))
			return lazy_failed(vm, lazy, o.restore);
		if (!o.quiet)
			fprintf(stderr, "vmigrate: lazy restore done: %llu pages on first touch, "
				"%llu prefetched\n", (unsigned long long)served,
				(unsigned long long)prefetched);
	}
	status = finish(vm, &o, now() - t0, first_total, restore_ms);
	snap_lazy_free(lazy);
	vm_destroy(vm);
	free(payload);
	return status;
}
