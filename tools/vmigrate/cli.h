/*
 * vmigrate subcommands. Each takes its own argv (argv[0] is the command
 * name) and returns the process exit status: 0 done, 1 failed, 2 usage.
 */
#ifndef CLI_H
#define CLI_H

#define EXIT_USAGE	2

int cmd_run(int argc, char **argv);

#endif
