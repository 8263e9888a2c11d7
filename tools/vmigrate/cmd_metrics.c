/*
 * vmigrate metrics [--json]: the service's Prometheus text exposition,
 * over the control socket: the same text its --metrics listener serves
 * (with --json, as the "text" of the envelope).
 */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "help.h"
#include "ipc.h"

int cmd_metrics(int argc, char **argv)
{
	struct json_object *rep;
	bool json = argc == 2 && !strcmp(argv[1], "--json");

	if (argc > 1 && !json)
		return argv[1][0] == '-' ? cli_unknown_option("metrics", argv[1]) :
		       cli_usage_error("metrics", "it takes no arguments");
	rep = svc_request(svc_req("metrics"), true);
	if (!rep)
		return 1;
	if (json)
		svc_print_json(rep);
	else
		fputs(ipc_str(rep, "text", ""), stdout);
	json_object_put(rep);
	return 0;
}
