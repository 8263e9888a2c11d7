/*
 * The CLI's side of the control socket: one request, one reply.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "ipc.h"

#define DEFAULT_CONTROL	"/run/vmigrate/vmigrated.sock"

const char *svc_control_path(void)
{
	const char *p = getenv("VMIGRATE_CONTROL");

	return p && *p ? p : DEFAULT_CONTROL;
}

const char *svc_unreachable(const char *path, const char *err, char *out, size_t len)
{
	struct stat st;
	char ignored[600];
	int fd;

	if (stat(path, &st) < 0) {
		if (errno == ENOENT) {
			snprintf(out, len, "vmigrated is not running (no socket at %s)", path);
			return IPC_E_NO_SERVICE;
		}
		snprintf(out, len, "control socket %s: %s", path, strerror(errno));
		return errno == EACCES ? IPC_E_PERMISSION : IPC_E_NO_SERVICE;
	}
	if (!S_ISSOCK(st.st_mode)) {
		snprintf(out, len, "control socket %s is not a socket", path);
		return IPC_E_NO_SERVICE;
	}
	fd = ipc_connect(path, ignored, sizeof(ignored));
	if (fd >= 0)
		close(fd);
	if (fd == -ECONNREFUSED) {
		snprintf(out, len, "vmigrated is not running (nothing listens on %s, left "
			 "behind by a service that ended)", path);
		return IPC_E_NO_SERVICE;
	}
	if (fd == -EACCES || fd == -EPERM) {
		snprintf(out, len, "permission denied on %s: root or vmigrated's --group only",
			 path);
		return IPC_E_PERMISSION;
	}
	snprintf(out, len, "cannot reach vmigrated: %s", err);
	/* it took the request and gave no answer in time: it is there, busy */
	return fd >= 0 ? IPC_E_TIMEOUT : IPC_E_NO_SERVICE;
}

struct json_object *svc_request(struct json_object *req, bool want_ok)
{
	char err[700], why[900];
	struct json_object *rep = ipc_call(svc_control_path(), req, -1, 120000, err, sizeof(err));

	json_object_put(req);
	if (!rep) {
		const char *code = svc_unreachable(svc_control_path(), err, why, sizeof(why));

		cli_fail(1, NULL, code, "%s", why);
		return NULL;
	}
	if (want_ok && !ipc_bool(rep, "ok", false)) {
		cli_fail_reply(1, rep);
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

