/*
 * The CLI's side of the control socket: one request, one reply.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "ipc.h"

#define DEFAULT_CONTROL	"/run/vmigrate/vmigrated.sock"

static const char *control_path(void)
{
	const char *p = getenv("VMIGRATE_CONTROL");

	return p && *p ? p : DEFAULT_CONTROL;
}

struct json_object *svc_request(struct json_object *req, bool want_ok)
{
	char err[700];
	struct json_object *rep = ipc_call(control_path(), req, -1, 120000, err, sizeof(err));

	json_object_put(req);
	if (!rep) {
		fprintf(stderr, "vmigrate: cannot reach vmigrated: %s\n", err);
		return NULL;
	}
	if (want_ok && !ipc_bool(rep, "ok", false)) {
		fprintf(stderr, "vmigrate: %s\n", ipc_str(rep, "error", "request failed"));
		json_object_put(rep);
		return NULL;
	}
	return rep;
}

struct json_object *svc_req(const char *cmd)
{
	struct json_object *o = json_object_new_object();

	json_object_object_add(o, "cmd", json_object_new_string(cmd));
	return o;
}

int svc_name_and_flag(int argc, char **argv, int first, const char *flag, const char **name,
		      bool *set)
{
	*name = NULL;
	*set = false;
	for (int i = first; i < argc; i++) {
		if (!strcmp(argv[i], flag))
			*set = true;
		else if (!*name && argv[i][0] != '-')
			*name = argv[i];
		else
			return -EINVAL;
	}
	return 0;
}

void svc_print_json(struct json_object *o)
{
	printf("%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
}
