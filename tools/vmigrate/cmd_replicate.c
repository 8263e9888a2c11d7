/*
 * vmigrate replicate: keep a standby copy of a running guest on another
 * host (replicate/replicate.h).
 *
 *   replicate NAME HOST[:PORT] [--epoch MS] [--compress lz4|off] [--channels N]
 *                              [--bandwidth RATE] [--arbiter etcd://H:P,...] [--ttl S]
 *                              [--json]
 *   replicate status NAME [--json]
 *   replicate stop NAME
 *   failover NAME [--json]       (a planned switch to the standby)
 */
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "help.h"
#include "ipc.h"
#include "units.h"

static void print_status(const char *name, struct json_object *rep)
{
	struct json_object *r;

	if (!strcmp(ipc_str(rep, "role", ""), "standby")) {
		printf("%s: standby, epoch %lld applied (token %lld), last apply %.2f ms%s%s\n",
		       ipc_str(rep, "name", "?"), ipc_int(rep, "applied_epoch", 0),
		       ipc_int(rep, "token", 0), ipc_double(rep, "last_apply_ms", 0),
		       ipc_str(rep, "error", NULL) ? "; " : "", ipc_str(rep, "error", ""));
		return;
	}
	if (!json_object_object_get_ex(rep, "replication", &r))
		return;
	printf("%s -> %s: %s, %lld epochs (%lld acknowledged), %.0f epochs/s, pause p50 %.2f ms "
	       "p99 %.2f ms, %.1f KiB/epoch, lag %.1f ms, held output %lld bytes, token %lld\n"
	       "  arbiter: %s%s%s\n",
	       ipc_str(rep, "name", "?"), ipc_str(rep, "standby", "?"), ipc_str(r, "state", "?"),
	       ipc_int(r, "epochs", 0), ipc_int(r, "acked_epoch", 0), ipc_double(r, "epoch_rate", 0),
	       ipc_double(r, "pause_p50_ms", 0), ipc_double(r, "pause_p99_ms", 0),
	       ipc_int(r, "bytes_per_epoch", 0) / 1024.0, ipc_double(r, "lag_ms", 0),
	       ipc_int(r, "held_output_bytes", 0), ipc_int(r, "token", 0),
	       ipc_str(r, "arbiter", "?"), ipc_str(r, "error", NULL) ? "\n  error: " : "",
	       ipc_str(r, "error", ""));
	if (!strcmp(ipc_str(r, "state", ""), "degraded"))
		printf("  the standby falls behind (the link is slower than the guest dirties "
		       "memory): epochs lengthened to %.0f ms, the next waits for it\n",
		       ipc_double(r, "epoch_ms", 0));
}

/* CMD NAME [--json] (status, stop, failover): one request, the reply
 * printed by print or as JSON. */
static int named(int argc, char **argv, int first, const char *cmd,
		 void (*print)(const char *name, struct json_object *rep))
{
	const char *name = NULL;
	struct json_object *req, *rep;
	bool json = false;

	if (svc_name_and_flag(argc, argv, first, "--json", &name, &json) || !name)
		return cli_usage_error(argv[0], "give one guest NAME");
	req = svc_req(cmd);
	json_object_object_add(req, "name", json_object_new_string(name));
	rep = svc_request(req, true);
	if (!rep)
		return 1;
	if (json)
		svc_print_json(rep);
	else
		print(name, rep);
	json_object_put(rep);
	return 0;
}

/* Wait for the initial sync to end: protected, or failed. */
static int wait_synced(const char *name, bool json)
{
	for (int i = 0; i < 6000; i++) {
		struct json_object *req = svc_req("replicate-status"), *rep, *r;
		const char *state;
		int status;

		json_object_object_add(req, "name", json_object_new_string(name));
		rep = svc_request(req, true);
		if (!rep)
			return 1;
		state = json_object_object_get_ex(rep, "replication", &r) ?
			ipc_str(r, "state", "?") : "?";
		if (strcmp(state, "syncing")) {
			status = strcmp(state, "protected") && strcmp(state, "degraded") ? 1 : 0;
			if (status) {	/* the sync failed: the guest runs on unprotected */
				char why[400];

				snprintf(why, sizeof(why), "replication of %s %s: %s", name, state,
					 ipc_str(r, "error", "no standby"));
				json_object_object_add(rep, "ok", json_object_new_boolean(false));
				json_object_object_add(rep, "error", json_object_new_string(why));
				if (!json)
					print_status(name, rep);
				return cli_fail_reply(status, rep);
			}
			if (json)
				svc_print_json(rep);
			else
				print_status(name, rep);
			json_object_put(rep);
			return status;
		}
		json_object_put(rep);
		usleep(100000);
	}
	return cli_fail(1, NULL, IPC_E_TIMEOUT, "the initial sync of %s takes over 10 minutes; "
			"see 'vmigrate replicate status %s'", name, name);
}

int cmd_replicate(int argc, char **argv)
{
	enum { O_EPOCH = 256, O_COMPRESS, O_CHANNELS, O_BW, O_ARBITER, O_TTL, O_JSON };
	static const struct option longopts[] = {
		{ "epoch", required_argument, NULL, O_EPOCH },
		{ "arbiter", required_argument, NULL, O_ARBITER },
		{ "ttl", required_argument, NULL, O_TTL },
		{ "compress", required_argument, NULL, O_COMPRESS },
		{ "channels", required_argument, NULL, O_CHANNELS },
		{ "bandwidth", required_argument, NULL, O_BW },
		{ "json", no_argument, NULL, O_JSON },
		{ 0 }
	};
	struct json_object *req, *rep;
	bool json = false;
	uint64_t v;
	int c;

	if (argc >= 2 && !strcmp(argv[1], "status"))
		return named(argc, argv, 2, "replicate-status", print_status);
	if (argc >= 2 && !strcmp(argv[1], "stop"))
		return named(argc, argv, 2, "replicate-stop", print_status);
	req = svc_req("replicate");
	optind = 1;
	while ((c = getopt_long(argc, argv, ":", longopts, NULL)) != -1) {
		const char *bad = NULL, *choices = NULL;

		switch (c) {
		case O_EPOCH:
			if (parse_uint(optarg, &v) || !v || v > 60000)
				bad = "--epoch", choices = "1 to 60000 ms";
			json_object_object_add(req, "epoch_ms", json_object_new_int64((int64_t)v));
			break;
		case O_COMPRESS:
			if (strcmp(optarg, "lz4") && strcmp(optarg, "off"))
				bad = "--compress", choices = "lz4 or off";
			json_object_object_add(req, "compress", json_object_new_string(optarg));
			break;
		case O_CHANNELS:
			if (parse_uint(optarg, &v) || v > 16)
				bad = "--channels", choices = "0 to 16";
			json_object_object_add(req, "channels", json_object_new_int((int)v));
			break;
		case O_BW:
			if (parse_rate(optarg, &v))
				bad = "--bandwidth";
			json_object_object_add(req, "bandwidth", json_object_new_int64((int64_t)v));
			break;
		case O_ARBITER:
			if (strncmp(optarg, "etcd://", 7) || !optarg[7])
				bad = "--arbiter", choices = "etcd://HOST:PORT[,HOST:PORT...]";
			json_object_object_add(req, "arbiter", json_object_new_string(optarg));
			break;
		case O_TTL:
			if (parse_uint(optarg, &v) || v < 2 || v > 3600)
				bad = "--ttl", choices = "2 to 3600 seconds";
			json_object_object_add(req, "ttl", json_object_new_int((int)v));
			break;
		case O_JSON: json = true; break;
		default: json_object_put(req); return cli_getopt_error("replicate", c, argv);
		}
		if (bad) {
			json_object_put(req);
			return cli_bad_value("replicate", bad, optarg, choices);
		}
	}
	if (optind != argc - 2) {
		json_object_put(req);
		return cli_usage_error("replicate", "give a guest NAME and a HOST[:PORT]");
	}
	if (!json_object_object_get_ex(req, "compress", NULL))
		json_object_object_add(req, "compress", json_object_new_string("off"));
	json_object_object_add(req, "name", json_object_new_string(argv[optind]));
	json_object_object_add(req, "dest", json_object_new_string(argv[optind + 1]));
	rep = svc_request(req, true);
	if (!rep)
		return 1;
	json_object_put(rep);
	return wait_synced(argv[optind], json);
}

static void print_handover(const char *name, struct json_object *rep)
{
	printf("%s: handed over after epoch %lld; it runs on the standby %s now (%s, token "
	       "%lld), and this host's copy, stopped for good, becomes its standby\n", name,
	       ipc_int(rep, "last_epoch", 0), ipc_str(rep, "standby", "?"),
	       ipc_str(rep, "runs_on", "?"), ipc_int(rep, "token", 0));
}

/* vmigrate failover NAME: the last epoch with the guest stopped here for
 * good, then its key moves to the standby, which runs it and protects it in
 * turn on this host. */
int cmd_failover(int argc, char **argv)
{
	return named(argc, argv, 1, "failover", print_handover);
}
