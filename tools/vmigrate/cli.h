/*
 * vmigrate subcommands. Each takes its own argv (argv[0] is the command
 * name) and returns the process exit status: 0 done, 1 failed, 2 usage.
 */
#ifndef CLI_H
#define CLI_H

#define EXIT_USAGE	2

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
int cmd_set_bandwidth(int argc, char **argv);
int cmd_snapshot(int argc, char **argv);
int cmd_restore(int argc, char **argv);
int cmd_backup(int argc, char **argv);

#endif
