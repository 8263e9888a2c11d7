/*
 * The help of every vmigrate command and the usage errors they share. The
 * texts follow the shape help.h describes, which the bash completion
 * relies on; the man page (tools/man/vmigrate.1.scd) says the same at
 * length.
 */
#include "help.h"

#include <ctype.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "guest_opts.h"
#include "ipc.h"

#define HELP_OPT "  -h, --help            this help\n"
#define COMPRESS_FILE_OPT \
"  --compress lz4|zstd|off  what compresses the pages; zstd: smaller files, read\n" \
"                        by versions of format 1.2 on (default lz4)\n"
#define KEY_OPT \
"  --key KEYFILE         HMAC-SHA-256 key, 16-64 bytes in a file of mode 600\n"

static const struct {
	const char *cmd;
	const char *summary;
	const char *text;
} helps[] = {
	{ "run", "run a guest in the foreground (micro-VM on /dev/kvm)",
"usage: vmigrate run [OPTIONS]\n"
"Run a guest in this process, showing its console and, each second, its\n"
"progress; Ctrl-C stops it.\n"
"\noptions:\n"
GUEST_OPTS_HELP
"  --hugetlb             back RAM with 2 MiB huge pages (default: 4 KiB pages)\n"
"  --duration S          stop after S seconds (default: at Ctrl-C)\n"
"  --verify              at the end, check every page and the counters\n"
"  --save FILE           at the end, save the paused guest to FILE\n"
"  --restore FILE        continue the guest saved in FILE instead of booting\n"
KEY_OPT
"                        (--save signs with it, --restore checks it)\n"
"  --lazy                with --restore: run at once, load memory on first touch\n"
"  --expect-counter-at-least N  with --verify: fail if fewer page writes were done\n"
"                        (default 0)\n"
"  --quiet               no progress lines\n"
"  --json                print the final statistics as one JSON line\n"
HELP_OPT },
	{ "ckpt", "show (info), check (verify) or flatten (merge) a checkpoint file",
"usage: vmigrate ckpt info FILE [--json] [--key KEYFILE]\n"
"       vmigrate ckpt verify FILE [--file-only] [--key KEYFILE] [--json]\n"
"       vmigrate ckpt merge FILE OUT [--key KEYFILE] [--json]\n"
"info: what FILE holds, and which file is its parent. verify: every\n"
"checksum, the record grammar, the index, the digest and the guest's state,\n"
"in FILE and in each parent a restore of it would read. merge: one full\n"
"checkpoint OUT from FILE and its parents. No service is needed.\n"
"\noptions:\n"
"  --json                print as JSON\n"
"  --file-only           verify: FILE alone, not its parents (default: the chain)\n"
KEY_OPT
"                        (checks the MAC; merge signs OUT with it)\n"
HELP_OPT },
	{ "start", "start a guest under the local vmigrated",
"usage: vmigrate start NAME [OPTIONS]\n"
"Start the guest NAME in a process of its own under the local vmigrated.\n"
"\noptions:\n"
GUEST_OPTS_HELP
"  --json                print the service's reply as JSON\n"
HELP_OPT },
	{ "list", "list the guests of this host",
"usage: vmigrate list [--json]\n"
"The guests of this host: name, state, RAM, vCPUs and progress counter.\n"
"\noptions:\n"
"  --json                print as JSON\n"
HELP_OPT },
	{ "info", "show one guest",
"usage: vmigrate info NAME [--json]\n"
"State, process, size, counter and uptime of the guest NAME, and its last job.\n"
"\noptions:\n"
"  --json                print as JSON\n"
HELP_OPT },
	{ "stop", "stop a guest",
"usage: vmigrate stop NAME [--json]\n"
"Stop the guest NAME and end its process.\n"
"\noptions:\n"
"  --json                print the service's reply as JSON\n"
HELP_OPT },
	{ "verify", "check a guest's memory and progress counter",
"usage: vmigrate verify NAME [--json]\n"
"Check every page of the guest NAME against what its payload wrote, and\n"
"that its progress counter never went backwards.\n"
"\noptions:\n"
"  --json                print as JSON\n"
HELP_OPT },
	{ "migrate", "move a running guest to another host",
"usage: vmigrate migrate NAME HOST[:PORT] [OPTIONS]\n"
"Move the running guest NAME live to the vmigrated on HOST (port 7480 by\n"
"default), showing progress: round, share of the job done, rate, dirty rate,\n"
"data left, expected downtime, ETA; ends with QEMU's query-migrate figures.\n"
"Ctrl-C cancels the job (the guest stays here) and waits for its end.\n"
"\noptions:\n"
"  --max-downtime MS     longest pause for the switchover, milliseconds, 2 at\n"
"                        least (default 300)\n"
"  --bandwidth RATE      cap, bytes a second in binary units: 100M, 1G/s (default: none)\n"
"  --auto-converge       slow the vCPUs down while the guest dirties memory faster\n"
"                        than it is sent (default: off)\n"
"  --timeout S           act on --on-timeout after S seconds (default: none)\n"
"  --on-timeout cancel|force  at --timeout: cancel (the guest stays here) or\n"
"                        force the switchover (default cancel)\n"
"  --compress auto|lz4|zstd|off  LZ4 on pages; auto: when the link, not LZ4, is\n"
"                        the bottleneck; zstd: smaller than LZ4 at half its\n"
"                        speed, for slow links (a destination of a version\n"
"                        before format 1.2 gets LZ4) (default auto)\n"
"  --no-compress         the same as --compress off\n"
"  --channels N          parallel data channels, 0 to 16; 0: pages on the control\n"
"                        connection (default: one a core, up to 4)\n"
"  --transport tls|rdma  data channels over the peer link (TLS, or TCP where both\n"
"                        services are --insecure) or over RDMA (default tls)\n"
"  --postcopy            post-copy at once: the guest runs on HOST after the first\n"
"                        pause, its pages follow on first touch and in the\n"
"                        background (risk: losing this host before the job\n"
"                        ends loses the guest)\n"
"  --postcopy-after N|auto|manual  pre-copy first, then post-copy after N rounds,\n"
"                        or once rounds stop shrinking (auto), or only on\n"
"                        'vmigrate migrate-postcopy JOB' (manual) (default: none)\n"
"  --quiet               no progress lines\n"
"  --detach              Ctrl-C leaves the job running (vmigrate cancel JOB stops\n"
"                        it) instead of cancelling it (default: cancel)\n"
"  --json                print the final figures as JSON, with the job; with\n"
"                        --detach and Ctrl-C, the job that goes on\n"
"  --libvirt-dest URI    a libvirt domain: the destination's libvirt, as this\n"
"                        host's libvirtd dials it (default qemu+tls://HOST/system);\n"
"                        libvirt runs the job, vmigrate carries QEMU's stream\n"
HELP_OPT
"Exit status: 0 the guest runs on the destination, or --detach left the job\n"
"running; 1 it failed and the guest still runs here; 3 uncertain: check the\n"
"destination, then 'vmigrate resume NAME' or 'vmigrate stop NAME' here.\n" },
	{ "replicate", "keep a standby copy on another host (replicate status|stop NAME)",
"usage: vmigrate replicate NAME HOST[:PORT] [OPTIONS]\n"
"       vmigrate replicate status NAME [--json]\n"
"       vmigrate replicate stop NAME [--json]\n"
"Start protecting the running guest NAME with a standby copy on HOST (port\n"
"7480 by default), kept up to date in epochs; status shows how it goes on\n"
"either host; stop sends a last epoch, then frees the standby.\n"
"\noptions:\n"
"  --epoch MS            fixed epoch length, 1 to 60000 ms (default: as short as\n"
"                        the link allows, 10 ms at least)\n"
"  --compress lz4|off    LZ4 on epoch pages (default off: epochs are small and frequent)\n"
"  --channels N          data channels of the initial sync, 0 to 16 (default: one a\n"
"                        core, up to 4)\n"
"  --bandwidth RATE      cap of the initial sync, e.g. 100M/s (default: none)\n"
"  --arbiter etcd://HOST:PORT[,HOST:PORT...]  who may run the guest: the primary\n"
"                        owns it on a lease there and fences itself before the\n"
"                        lease can run out; the standby takes the guest over\n"
"                        only once it has (default: none)\n"
"  --ttl S               the lease, 2 to 3600 seconds (default 5)\n"
"  --json                print the status as JSON\n"
HELP_OPT
"Without --arbiter, a standby is never run automatically and nothing protects\n"
"against split brain; the status says so. 'vmigrate failover NAME' moves a\n"
"protected guest to its standby, losing nothing.\n" },
	{ "failover", "hand a replicated guest to its standby (planned)",
"usage: vmigrate failover NAME [--json]\n"
"On the primary's host: the last epoch, with the guest stopped here for good;\n"
"then the standby owns the guest (needs --arbiter), runs it, and protects it\n"
"in turn on this host. Run it on the new primary to move the guest back.\n"
"\noptions:\n"
"  --json                print the service's reply as JSON\n"
HELP_OPT },
	{ "resume", "resume a guest left paused by an uncertain handover",
"usage: vmigrate resume NAME [--destination-lost] [--json]\n"
"After migrate ended with status 3: resume the guest NAME here once the\n"
"destination confirms that it does not run it.\n"
"\noptions:\n"
"  --destination-lost    that host is gone for good: resume on your word (refused\n"
"                        until the handover bound, 5 s, has passed)\n"
"  --json                print the service's reply as JSON\n"
HELP_OPT },
	{ "snapshot", "checkpoint a guest to a file (full or --incremental)",
"usage: vmigrate snapshot NAME FILE [OPTIONS]\n"
"Write a checkpoint of the guest NAME to FILE, atomically (mode 600). A FILE\n"
"that another checkpoint beside it names as its parent is not replaced, nor\n"
"one that is a directory. NAME may be a libvirt domain: QEMU's stream is\n"
"captured (paused, or --live: QEMU's live migration into vmigrate, paused at\n"
"its end), its incrementals hold the pages whose hash changed since the parent.\n"
"\noptions:\n"
"  --live                pre-copy rounds while the guest runs, then pause it only\n"
"                        for the last pages (default: paused while written)\n"
"  --background-snapshot\n"
"                        a libvirt domain, with --live: QEMU's background-snapshot\n"
"                        (a pause of milliseconds; needs userfaultfd for QEMU; a\n"
"                        failed one can leave QEMU 7.2's vCPUs blocked)\n"
"  --method libvirt-snapshot|migration\n"
"                        a libvirt domain: libvirt's own memory snapshot into a\n"
"                        FIFO of the service's, or QEMU's migration into a pipe\n"
"                        of it (default: the migration, the faster here)\n"
"  --incremental         only the pages dirtied since the guest's previous\n"
"                        checkpoint, its parent (default: full)\n"
"  --force               replace FILE even if another checkpoint builds on it;\n"
"                        never the new one's own parent (default: refused)\n"
COMPRESS_FILE_OPT
KEY_OPT
"  --json                print the service's reply as JSON\n"
HELP_OPT },
	{ "restore", "start a guest from a checkpoint file and its parents",
"usage: vmigrate restore FILE [OPTIONS]\n"
"Start a guest under the local vmigrated from FILE and the parents it names\n"
"(looked for in FILE's directory). A libvirt domain's checkpoint is restored\n"
"by the local libvirt (virDomainRestoreFlags), running if it ran when taken.\n"
"\noptions:\n"
"  --name NAME           the guest's name (default: the one in the checkpoint)\n"
"  --paused              a libvirt domain: restored paused\n"
"  --lazy                run at once, load pages on first touch (userfaultfd)\n"
KEY_OPT
"                        (checked before the guest runs; not with --lazy)\n"
"  --json                print the service's reply as JSON\n"
HELP_OPT },
	{ "backup", "one run of a backup schedule: checkpoint and prune",
"usage: vmigrate backup NAME --dir DIR --keep N [OPTIONS]\n"
"An incremental checkpoint of the guest NAME in DIR on top of the newest\n"
"one there, or a full one every K runs; then whole old chains are removed\n"
"while at least N checkpoints remain.\n"
"\noptions:\n"
"  --dir DIR             where the checkpoints are, made (mode 700) when it is\n"
"                        not there (required)\n"
"  --keep N              checkpoints to keep at least, 1 or more (required)\n"
"  --full-every K        a full checkpoint every K runs, 1 or more (default 7)\n"
COMPRESS_FILE_OPT
KEY_OPT
"  --json                print the result as JSON\n"
HELP_OPT },
	{ "jobs", "list migration jobs, running or finished",
"usage: vmigrate jobs [--completed | --all] [--json]\n"
"The migration jobs of this host's guests, outgoing and incoming: guest,\n"
"direction, status, rounds, data sent or received, data left, time, downtime.\n"
"\noptions:\n"
"  --completed           the last 20 finished jobs instead, with their final\n"
"                        figures, kept after the guest's process is gone\n"
"  --all                 the running jobs and the finished ones\n"
"  --json                print as JSON\n"
HELP_OPT },
	{ "cancel", "cancel a migration job (the guest stays here)",
"usage: vmigrate cancel JOB [--json]\n"
"Cancel the migration JOB (as 'vmigrate jobs' names it); the guest keeps\n"
"running on this host.\n"
"\noptions:\n"
"  --json                print the service's reply as JSON\n"
HELP_OPT },
	{ "migrate-postcopy", "switch a running migration to post-copy now",
"usage: vmigrate migrate-postcopy JOB [--json]\n"
"Switch JOB, started with --postcopy-after, to post-copy at once (QEMU's\n"
"migrate-start-postcopy): the guest pauses briefly, runs on the destination,\n"
"and its remaining pages follow. From then on the job cannot be cancelled,\n"
"and losing this host before it ends loses the guest.\n"
"\noptions:\n"
"  --json                print the service's reply as JSON\n"
HELP_OPT },
	{ "migrate-recover", "reconnect a paused post-copy job now",
"usage: vmigrate migrate-recover JOB [HOST[:PORT]] [--json]\n"
"A post-copy job whose link broke is postcopy-paused: both hosts keep what\n"
"they need, and this host tries to reconnect on its own, waiting longer\n"
"between tries (up to 10 s). This tries again at once, to HOST when given\n"
"(the destination's service at a new address; its data port stays). Only\n"
"pages the destination still lacks are sent again.\n"
"\noptions:\n"
"  --json                print the service's reply as JSON\n"
HELP_OPT },
	{ "set-bandwidth", "change a running job's bandwidth cap",
"usage: vmigrate set-bandwidth JOB RATE [--json]\n"
"Change the bandwidth cap of the running job JOB to RATE, bytes a second in\n"
"binary units (100M, 1G/s), spread over its channels.\n"
"\noptions:\n"
"  --json                print the service's reply as JSON\n"
HELP_OPT },
	{ "metrics", "the service's metrics (Prometheus text format)",
"usage: vmigrate metrics [--json]\n"
"The local vmigrated's counters (migrations, downtime, bytes, checkpoints,\n"
"restores, backups), its guests by state and the replication figures, in the\n"
"Prometheus text format: what its --metrics listener serves.\n"
"\noptions:\n"
"  --json                the text as the \"text\" of a JSON object\n"
HELP_OPT },
	{ "check", "check this host, and the path to a peer, for vmigrate",
"usage: vmigrate check [HOST[:PORT]] [OPTIONS]\n"
"One line a check, PASS, WARN or FAIL: /dev/kvm and the KVM capabilities\n"
"vmigrate uses, memfd, huge pages, userfaultfd, the control socket, the TLS\n"
"directory (dates, the CA, the key's mode), RDMA devices; with HOST, the local\n"
"service tries the path to HOST's service: TCP, TLS, a data port, bandwidth;\n"
"then HOST tries the same back to this host's service (peer.back.*).\n"
"\noptions:\n"
"  --tls-dir DIR         the TLS directory to check (default: the service's)\n"
"  --json                print as JSON\n"
HELP_OPT
"Exit status: 0 nothing failed (warnings allowed); 1 a check failed.\n" },
	{ "help", "the help of a command: help COMMAND (or COMMAND --help)",
"usage: vmigrate help [COMMAND]\n"
"The help of COMMAND, or the list of commands.\n" },
};

static int find(const char *cmd)
{
	for (size_t i = 0; i < sizeof(helps) / sizeof(helps[0]); i++)
		if (!strcmp(helps[i].cmd, cmd))
			return (int)i;
	return -1;
}

const char *cli_help(const char *cmd)
{
	int i = find(cmd);

	return i < 0 ? NULL : helps[i].text;
}

const char *cli_summary(const char *cmd)
{
	int i = find(cmd);

	return i < 0 ? "" : helps[i].summary;
}

bool cli_asks_help(int argc, char **argv)
{
	for (int i = 1; i < argc && strcmp(argv[i], "--"); i++)
		if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help"))
			return true;
	return false;
}

/* What was wrong, for the JSON envelope of the usage error that follows. */
static char why[512];

static void say_why(const char *cmd, const char *fmt, va_list ap)
{
	vsnprintf(why, sizeof(why), fmt, ap);
	fprintf(stderr, "vmigrate %s: %s\n", cmd, why);
}

int cli_usage(const char *cmd)
{
	const char *text = cli_help(cmd), *end;

	if (cli_json) {
		struct json_object *o = ipc_error(IPC_E_BAD_ARGUMENT, "%s; see 'vmigrate %s --help'",
						  why[0] ? why : "wrong arguments", cmd);

		svc_print_json(o);
		json_object_put(o);
	}
	if (text) {
		/* the usage lines: up to the first that does not start a form */
		for (const char *line = text; *line; line = end + 1) {
			end = strchrnul(line, '\n');
			if (strncmp(line, "usage: ", 7) && strncmp(line, "       vmigrate ", 16))
				break;
			fprintf(stderr, "%.*s\n", (int)(end - line), line);
			if (!*end)
				break;
		}
	}
	fprintf(stderr, "see 'vmigrate %s --help'\n", cmd);
	return EXIT_USAGE;
}

int cli_usage_error(const char *cmd, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	say_why(cmd, fmt, ap);
	va_end(ap);
	return cli_usage(cmd);
}

int cli_bad_value(const char *cmd, const char *opt, const char *value, const char *choices)
{
	snprintf(why, sizeof(why), "bad value '%s' for %s%s%s%s", value, opt,
		 choices ? " (" : "", choices ? choices : "", choices ? ")" : "");
	fprintf(stderr, "vmigrate %s: %s\n", cmd, why);
	if (cli_json) {
		struct json_object *o = ipc_error(IPC_E_BAD_ARGUMENT, "%s", why);

		svc_print_json(o);
		json_object_put(o);
	}
	return EXIT_USAGE;
}

int cli_unknown_option(const char *cmd, const char *arg)
{
	return cli_usage_error(cmd, "unknown option '%s'", arg);
}

int cli_missing_value(const char *cmd, const char *opt)
{
	return cli_usage_error(cmd, "option '%s' needs a value", opt);
}

int cli_getopt_error(const char *cmd, int c, char **argv)
{
	char shortopt[3] = { '-', (char)optopt, 0 };
	const char *arg = optopt > 0 && optopt < 128 && isalnum(optopt) ? shortopt :
			  argv[optind - 1];

	return c == ':' ? cli_missing_value(cmd, argv[optind - 1]) : cli_unknown_option(cmd, arg);
}
