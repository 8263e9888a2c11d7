/*
 * vmigrate: the operator's command line. Dispatches to one subcommand.
 */
#include <stdio.h>
#include <string.h>

#include "cli.h"

static const struct {
	const char *name;
	int (*fn)(int argc, char **argv);
	const char *summary;
} commands[] = {
	{ "run", cmd_run, "run a guest in the foreground (micro-VM on /dev/kvm)" },
	{ "ckpt", cmd_ckpt, "show (info) or check (verify) a checkpoint file" },
	{ "start", cmd_start, "start a guest under the local vmigrated" },
	{ "list", cmd_list, "list the guests of this host" },
	{ "info", cmd_info, "show one guest" },
	{ "stop", cmd_stop, "stop a guest" },
	{ "verify", cmd_verify, "check a guest's memory and progress counter" },
	{ "migrate", cmd_migrate, "move a running guest to another host" },
	{ "replicate", cmd_replicate, "keep a standby copy on another host (status, stop)" },
	{ "failover", cmd_failover, "hand a replicated guest to its standby (planned)" },
	{ "resume", cmd_resume, "resume a guest left paused by an uncertain handover" },
	{ "snapshot", cmd_snapshot, "checkpoint a guest to a file (full or --incremental)" },
	{ "restore", cmd_restore, "start a guest from a checkpoint file and its parents" },
	{ "backup", cmd_backup, "one run of a backup schedule: checkpoint and prune" },
	{ "jobs", cmd_jobs, "list migration jobs" },
	{ "cancel", cmd_cancel, "cancel a migration job (the guest stays here)" },
	{ "set-bandwidth", cmd_set_bandwidth, "change a running job's bandwidth cap" },
	{ "metrics", cmd_metrics, "the service's metrics (Prometheus text format)" },
	{ "check", cmd_check, "check this host (and the path to a peer) for vmigrate" },
};

static void usage(FILE *f)
{
	fprintf(f, "usage: vmigrate COMMAND [OPTIONS]\n\ncommands:\n");
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].summary);
	fprintf(f, "\nThe service commands use the control socket in $VMIGRATE_CONTROL\n"
		   "(default /run/vmigrate/vmigrated.sock).\n");
}

int main(int argc, char **argv)
{
	if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
		usage(argc < 2 ? stderr : stdout);
		return argc < 2 ? EXIT_USAGE : 0;
	}
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (!strcmp(argv[1], commands[i].name))
			return commands[i].fn(argc - 1, argv + 1);
	fprintf(stderr, "vmigrate: unknown command '%s'\n", argv[1]);
	usage(stderr);
	return EXIT_USAGE;
}
