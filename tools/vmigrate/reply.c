/*
 * What a command prints when it ends: for people, text (errors on stderr);
 * with --json, one JSON object on stdout in the one envelope every command
 * shares, {"ok":true,...} or {"ok":false,"error":TEXT,"code":CODE}, the
 * codes those of ipc.h. A failure says so on stderr in both modes, so a
 * person running a script still reads why.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "ipc.h"

bool cli_json;

/* o, once, in the envelope: "ok" as given, and a failure's code. */
static void print_envelope(struct json_object *o, bool ok)
{
	if (!json_object_object_get_ex(o, "ok", NULL))
		json_object_object_add(o, "ok", json_object_new_boolean(ok));
	if (!ipc_bool(o, "ok", false) && !ipc_str(o, "code", NULL))
		json_object_object_add(o, "code", json_object_new_string(IPC_E_INTERNAL));
	if (!ipc_bool(o, "ok", false) && !ipc_str(o, "error", NULL))
		json_object_object_add(o, "error", json_object_new_string("failed"));
	printf("%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN |
							JSON_C_TO_STRING_NOSLASHESCAPE));
	fflush(stdout);
}

void svc_print_json(struct json_object *o)
{
	print_envelope(o, true);
}

int cli_fail(int status, const char *cmd, const char *code, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	fprintf(stderr, "vmigrate%s%s: %s\n", cmd ? " " : "", cmd ? cmd : "", msg);
	if (cli_json) {
		struct json_object *o = ipc_error(code, "%s", msg);

		print_envelope(o, false);
		json_object_put(o);
	}
	return status;
}

int cli_fail_reply(int status, struct json_object *rep)
{
	fprintf(stderr, "vmigrate: %s\n", ipc_str(rep, "error", "request failed"));
	if (cli_json) {
		if (ipc_bool(rep, "ok", false))	/* a reply that is not the failure */
			json_object_object_add(rep, "ok", json_object_new_boolean(false));
		print_envelope(rep, false);
	}
	json_object_put(rep);
	return status;
}
