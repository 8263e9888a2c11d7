/*
 * Local IPC of the vmigrate tools: JSON objects, one per line, over UNIX
 * stream sockets, optionally carrying one file descriptor (SCM_RIGHTS).
 * Used between the CLI and vmigrated, and between vmigrated and the
 * per-guest processes it supervises.
 */
#ifndef IPC_H
#define IPC_H

#include <json-c/json.h>
#include <stdbool.h>
#include <sys/types.h>

#define IPC_MAX_LINE	(64 * 1024)

/* A listening socket at path (replacing a stale one), with mode. */
int ipc_listen(const char *path, mode_t mode, char *err, size_t errlen);
int ipc_connect(const char *path, char *err, size_t errlen);

/* Send obj as one line, with fd attached when fd >= 0. */
int ipc_send(int sock, struct json_object *obj, int fd);
/* Receive one line as an object (caller puts it); *fd gets an attached
 * descriptor or -1 (fd may be NULL). Waits at most timeout_ms (-1 = for
 * ever). Returns NULL on end, error or timeout with errno set. */
struct json_object *ipc_recv(int sock, int *fd, int timeout_ms);

/* Send a request and wait for its reply. */
struct json_object *ipc_call(const char *path, struct json_object *req, int fd,
			     int timeout_ms, char *err, size_t errlen);
/* The same, calling tick about every IPC_TICK_MS while it waits (a
 * service's watchdog: it is alive, waiting for a slow answer). */
#define IPC_TICK_MS	1000
struct json_object *ipc_call_tick(const char *path, struct json_object *req, int fd,
				  int timeout_ms, void (*tick)(void *opaque), void *opaque,
				  char *err, size_t errlen);

/*
 * Reply helpers: {"ok":true,...} and {"ok":false,"error":msg,"code":code}.
 * The code is one of the small stable set below, for scripts to act on
 * (vmigrate(1) lists them, under JSON OUTPUT); the text is for people and
 * may change. A retired code stays reserved, never reused.
 */
#define IPC_E_BAD_ARGUMENT	"bad-argument"	/* the request cannot be right as given */
#define IPC_E_NOT_FOUND		"not-found"	/* no such guest, job, file or request */
#define IPC_E_EXISTS		"exists"	/* the name or file is taken */
#define IPC_E_WRONG_STATE	"wrong-state"	/* the guest or job is not in a state for it */
#define IPC_E_BUSY		"busy"		/* something else holds it now: try later */
#define IPC_E_PERMISSION	"permission"	/* not allowed (socket, file modes) */
#define IPC_E_NO_SERVICE	"no-service"	/* the local vmigrated is not there */
#define IPC_E_NOT_ANSWERING	"not-answering"	/* a guest's process does not answer */
#define IPC_E_PEER_UNREACHABLE	"peer-unreachable" /* no connection to the other host */
#define IPC_E_TLS		"tls"		/* TLS: handshake, certificates, keys */
#define IPC_E_REFUSED		"refused"	/* the other host, or the peer key, said no */
#define IPC_E_PEER_LOST		"peer-lost"	/* the other host went away mid-job */
#define IPC_E_CANCELLED		"cancelled"	/* cancelled: the guest stays here */
#define IPC_E_TIMEOUT		"timeout"	/* a deadline passed */
#define IPC_E_UNCERTAIN		"uncertain"	/* a handover without an answer (exit 3) */
#define IPC_E_INTEGRITY		"integrity"	/* data did not check out: checksum, MAC,
						 * a damaged file, a guest's memory */
#define IPC_E_IO		"io"		/* reading or writing a file failed */
#define IPC_E_UNSUPPORTED	"unsupported"	/* this host lacks it (KVM, RDMA, ...) */
#define IPC_E_CHECK_FAILED	"check-failed"	/* vmigrate check: a check FAILed */
#define IPC_E_INTERNAL		"internal"	/* anything else */

struct json_object *ipc_ok(void);
struct json_object *ipc_error(const char *code, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* The code that says what a negative errno means here (internal when none
 * fits). */
const char *ipc_errno_code(int err);
/* Every code, NULL-terminated: the set a reply may carry. */
extern const char *const ipc_codes[];

/* Field readers with defaults. */
const char *ipc_str(struct json_object *o, const char *key, const char *def);
long long ipc_int(struct json_object *o, const char *key, long long def);
double ipc_double(struct json_object *o, const char *key, double def);
bool ipc_bool(struct json_object *o, const char *key, bool def);

#endif
