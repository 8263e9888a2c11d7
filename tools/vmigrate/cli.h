/*
 * vmigrate subcommands. Each takes its own argv (argv[0] is the command
 * name) and returns the process exit status: 0 done, 1 failed, 2 usage.
 */
#ifndef CLI_H
#define CLI_H

#include <json-c/json.h>
#include <stdbool.h>

#define EXIT_USAGE	2
#define EXIT_UNCERTAIN	3

/*
 * What a command prints at its end (reply.c). With --json (cli_json, set
 * by main when --json is among the arguments) stdout carries exactly one
 * JSON object, in the envelope every command shares: {"ok":true,...}, or
 * {"ok":false,"error":TEXT,"code":CODE} with a code of ipc.h; the text for
 * people goes to stderr either way.
 */
extern bool cli_json;
/* A success: o printed as JSON, "ok":true added when it has no "ok"; a
 * reply with "ok":false printed gets a code when it has none. */
void svc_print_json(struct json_object *o);
/* A failure: "vmigrate[ CMD]: TEXT" on stderr, and with --json the
 * envelope on stdout; returns status, the command's exit status. */
int cli_fail(int status, const char *cmd, const char *code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
/* The service refused: its reply is the failure (takes rep). */
int cli_fail_reply(int status, struct json_object *rep);

/* One request to the local service (service_client.c). NULL on failure,
 * said through cli_fail (no service, no permission), or on a refusal when
 * want_ok (cli_fail_reply); otherwise the reply, ok or not. */
struct json_object *svc_request(struct json_object *req, bool want_ok);
struct json_object *svc_req(const char *cmd);
/* $VMIGRATE_CONTROL, or the service's default socket. */
const char *svc_control_path(void);
/* Why the control socket at path cannot be used (err: what the call
 * said), in words an operator can act on; returns its code. */
const char *svc_unreachable(const char *path, const char *err, char *out, size_t len);
/* argv[first..] holds at most one NAME (*name NULL without one) and,
 * maybe, flag: 0, or -EINVAL for anything else. */
int svc_name_and_flag(int argc, char **argv, int first, const char *flag, const char **name,
		      bool *set);

int cmd_run(int argc, char **argv);
int cmd_ckpt(int argc, char **argv);
int cmd_start(int argc, char **argv);
int cmd_list(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_stop(int argc, char **argv);
int cmd_verify(int argc, char **argv);
int cmd_resume(int argc, char **argv);
int cmd_migrate(int argc, char **argv);
int cmd_jobs(int argc, char **argv);
int cmd_cancel(int argc, char **argv);
int cmd_migrate_postcopy(int argc, char **argv);
int cmd_migrate_recover(int argc, char **argv);
int cmd_set_bandwidth(int argc, char **argv);
int cmd_snapshot(int argc, char **argv);
int cmd_restore(int argc, char **argv);
int cmd_backup(int argc, char **argv);
int cmd_replicate(int argc, char **argv);
int cmd_failover(int argc, char **argv);
int cmd_metrics(int argc, char **argv);
int cmd_check(int argc, char **argv);

#endif
