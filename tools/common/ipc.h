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

/* Reply helpers: {"ok":true,...} and {"ok":false,"error":msg}. */
struct json_object *ipc_ok(void);
struct json_object *ipc_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Field readers with defaults. */
const char *ipc_str(struct json_object *o, const char *key, const char *def);
long long ipc_int(struct json_object *o, const char *key, long long def);
double ipc_double(struct json_object *o, const char *key, double def);
bool ipc_bool(struct json_object *o, const char *key, bool def);

#endif
