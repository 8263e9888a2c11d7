/*
 * vmigrate: the operator's command line. Dispatches to one subcommand;
 * -h or --help anywhere among a command's arguments shows its help
 * (help.c) instead of running it, and --json among them makes stdout
 * carry one JSON object whatever happens (reply.c), usage errors too.
 */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "help.h"
#include "ipc.h"
#include "version.h"

static int cmd_help(int argc, char **argv);

static const struct {
	const char *name;
	int (*fn)(int argc, char **argv);
} commands[] = {
	{ "run", cmd_run },
	{ "ckpt", cmd_ckpt },
	{ "start", cmd_start },
	{ "list", cmd_list },
	{ "info", cmd_info },
	{ "stop", cmd_stop },
	{ "verify", cmd_verify },
	{ "migrate", cmd_migrate },
	{ "replicate", cmd_replicate },
	{ "failover", cmd_failover },
	{ "resume", cmd_resume },
	{ "snapshot", cmd_snapshot },
	{ "restore", cmd_restore },
	{ "backup", cmd_backup },
	{ "jobs", cmd_jobs },
	{ "cancel", cmd_cancel },
	{ "migrate-postcopy", cmd_migrate_postcopy },
	{ "migrate-recover", cmd_migrate_recover },
	{ "set-bandwidth", cmd_set_bandwidth },
	{ "metrics", cmd_metrics },
	{ "check", cmd_check },
	{ "help", cmd_help },
};

static void usage(FILE *f)
{
	fprintf(f, "usage: vmigrate COMMAND [OPTIONS]\n"
		   "       vmigrate --version\n\ncommands:\n");
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		fprintf(f, "  %-14s %s\n", commands[i].name, cli_summary(commands[i].name));
	fprintf(f, "\n'vmigrate COMMAND --help' (or -h) shows a command's options; man vmigrate\n"
		   "tells more. The service commands use the control socket in\n"
		   "$VMIGRATE_CONTROL (default /run/vmigrate/vmigrated.sock).\n");
}

/* COMMAND --help: its help on stdout, exit 0. */
static int show_help(const char *cmd)
{
	const char *text = cli_help(cmd);

	if (!text) {
		fprintf(stderr, "vmigrate: no help for '%s'\n", cmd);
		return 1;
	}
	fputs(text, stdout);
	return 0;
}

static int cmd_help(int argc, char **argv)
{
	if (argc > 2)
		return cli_usage("help");
	if (argc < 2) {
		usage(stdout);
		return 0;
	}
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (!strcmp(argv[1], commands[i].name))
			return show_help(argv[1]);
	fprintf(stderr, "vmigrate: unknown command '%s'\n", argv[1]);
	return EXIT_USAGE;
}

int main(int argc, char **argv)
{
	if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
		usage(argc < 2 ? stderr : stdout);
		return argc < 2 ? EXIT_USAGE : 0;
	}
	if (!strcmp(argv[1], "--version")) {
		printf("vmigrate %s\n", vmigrate_version());
		return 0;
	}
	for (int i = 2; i < argc && strcmp(argv[i], "--"); i++)
		cli_json |= !strcmp(argv[i], "--json");
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
		if (strcmp(argv[1], commands[i].name))
			continue;
		if (cli_asks_help(argc - 1, argv + 1))
			return show_help(argv[1]);
		return commands[i].fn(argc - 1, argv + 1);
	}
	cli_fail(EXIT_USAGE, NULL, IPC_E_BAD_ARGUMENT, "unknown command '%s'", argv[1]);
	usage(stderr);
	return EXIT_USAGE;
}
