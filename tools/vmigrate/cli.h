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

/* One request to the local service (service_client.c); prints the error
 * and returns NULL on failure, or on a refusal when want_ok. */
struct json_object *svc_request(struct json_object *req, bool want_ok);
struct json_object *svc_req(const char *cmd);
/* $VMIGRATE_CONTROL, or the service's default socket. */
const char *svc_control_path(void);
/* Why the control socket at path cannot be used (err: what the call
 * said), in words an operator can act on. */
void svc_unreachable(const char *path, const char *err, char *out, size_t len);
void svc_print_json(struct json_object *o);
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
