/*
 * vmigrate metrics: the service's Prometheus text exposition, over the
 * control socket: the same text its --metrics listener serves.
 */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "help.h"
#include "ipc.h"

int cmd_metrics(int argc, char **argv)
{
	struct json_object *rep;

	if (argc > 1)
		return argv[1][0] == '-' ? cli_unknown_option("metrics", argv[1]) :
		       cli_usage("metrics");
	rep = svc_request(svc_req("metrics"), true);
	if (!rep)
		return 1;
	fputs(ipc_str(rep, "text", ""), stdout);
	json_object_put(rep);
	return 0;
}
