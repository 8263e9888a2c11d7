/*
 * JSON-lines over UNIX sockets. A receiver buffers per socket only what
 * one line needs, so a message is read with one recvmsg in the common case;
 * lines longer than IPC_MAX_LINE are refused.
 */
#include "ipc.h"

#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static int fill_addr(struct sockaddr_un *sa, const char *path)
{
	memset(sa, 0, sizeof(*sa));
	sa->sun_family = AF_UNIX;
	if (strlen(path) >= sizeof(sa->sun_path))
		return -ENAMETOOLONG;
	strcpy(sa->sun_path, path);
	return 0;
}

int ipc_listen(const char *path, mode_t mode, char *err, size_t errlen)
{
	struct sockaddr_un sa;
	int fd, e;

	if (fill_addr(&sa, path)) {
		snprintf(err, errlen, "socket path too long: %s", path);
		return -ENAMETOOLONG;
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		goto fail;
	unlink(path);
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || chmod(path, mode) < 0 ||
	    listen(fd, 16) < 0)
		goto fail;
	return fd;
fail:
	e = errno;
	snprintf(err, errlen, "listening on %s: %s", path, strerror(e));
	if (fd >= 0)
		close(fd);
	return -e;
}

int ipc_connect(const char *path, char *err, size_t errlen)
{
	struct sockaddr_un sa;
	int fd, e;

	if (fill_addr(&sa, path)) {
		snprintf(err, errlen, "socket path too long: %s", path);
		return -ENAMETOOLONG;
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
		return fd;
	e = errno;
	snprintf(err, errlen, "%s: %s", path, strerror(e));
	if (fd >= 0)
		close(fd);
	return -e;
}

int ipc_send(int sock, struct json_object *obj, int fd)
{
	const char *s = json_object_to_json_string_ext(obj, JSON_C_TO_STRING_PLAIN);
	size_t len = strlen(s);
	char *line = malloc(len + 1);
	struct iovec iov;
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} ctl;
	size_t off = 0;
	int ret = 0;

	if (!line)
		return -ENOMEM;
	memcpy(line, s, len);
	line[len] = '\n';
	if (fd >= 0) {
		struct cmsghdr *c;

		msg.msg_control = ctl.buf;
		msg.msg_controllen = sizeof(ctl.buf);
		c = CMSG_FIRSTHDR(&msg);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(c), &fd, sizeof(int));
	}
	while (off < len + 1) {
		ssize_t n;

		iov.iov_base = line + off;
		iov.iov_len = len + 1 - off;
		n = sendmsg(sock, &msg, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			ret = -errno;
			break;
		}
		off += n;
		msg.msg_control = NULL;	/* the descriptor goes once */
		msg.msg_controllen = 0;
	}
	free(line);
	return ret;
}

struct json_object *ipc_recv(int sock, int *fd, int timeout_ms)
{
	char *buf = malloc(IPC_MAX_LINE);
	size_t len = 0;
	struct json_object *obj = NULL;
	struct timespec start;

	if (fd)
		*fd = -1;
	if (!buf) {
		errno = ENOMEM;
		return NULL;
	}
	clock_gettime(CLOCK_MONOTONIC, &start);
	/* Read byte-exact up to the newline so nothing of the next message
	 * (or of a raw stream that follows) is consumed. */
	while (len < IPC_MAX_LINE) {
		union {
			char buf[CMSG_SPACE(sizeof(int))];
			struct cmsghdr align;
		} ctl;
		struct iovec iov = { buf + len, 1 };
		struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1,
				      .msg_control = ctl.buf, .msg_controllen = sizeof(ctl.buf) };
		struct pollfd p = { .fd = sock, .events = POLLIN };
		ssize_t n;

		if (timeout_ms >= 0) {
			struct timespec t;
			long left;

			clock_gettime(CLOCK_MONOTONIC, &t);
			left = timeout_ms - ((t.tv_sec - start.tv_sec) * 1000 +
					     (t.tv_nsec - start.tv_nsec) / 1000000);
			if (left <= 0 || poll(&p, 1, (int)left) == 0) {
				errno = ETIMEDOUT;
				goto out;
			}
		}
		n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			goto out;
		}
		if (n == 0) {
			errno = ECONNRESET;
			goto out;
		}
		for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c))
			if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
				size_t nfd = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);

				/* the first one is the caller's; any more a peer
				 * sent would stay open in this process for ever */
				for (size_t k = 0; k < nfd; k++) {
					int got;

					memcpy(&got, CMSG_DATA(c) + k * sizeof(int), sizeof(int));
					if (fd && *fd < 0)
						*fd = got;
					else
						close(got);
				}
			}
		if (buf[len] == '\n') {
			buf[len] = 0;
			obj = json_tokener_parse(buf);
			if (!obj || !json_object_is_type(obj, json_type_object)) {
				json_object_put(obj);
				obj = NULL;
				errno = EPROTO;
			}
			goto out;
		}
		len++;
	}
	errno = EMSGSIZE;
out:
	if (!obj && fd && *fd >= 0) {
		close(*fd);
		*fd = -1;
	}
	free(buf);
	return obj;
}

struct json_object *ipc_call(const char *path, struct json_object *req, int fd,
			     int timeout_ms, char *err, size_t errlen)
{
	return ipc_call_tick(path, req, fd, timeout_ms, NULL, NULL, err, errlen);
}

/* Until the reply starts to arrive, or timeout_ms (-1: for ever) is spent:
 * the time left, calling tick about every IPC_TICK_MS meanwhile. */
static int wait_ticking(int sock, int timeout_ms, void (*tick)(void *), void *opaque)
{
	struct timespec start, t;
	long left = timeout_ms;

	clock_gettime(CLOCK_MONOTONIC, &start);
	for (;;) {
		struct pollfd p = { .fd = sock, .events = POLLIN };
		int slice = timeout_ms < 0 || left > IPC_TICK_MS ? IPC_TICK_MS : (int)left;

		if (poll(&p, 1, slice) > 0)
			return timeout_ms < 0 ? -1 : (int)left;
		tick(opaque);
		clock_gettime(CLOCK_MONOTONIC, &t);
		left = timeout_ms - ((t.tv_sec - start.tv_sec) * 1000 +
				     (t.tv_nsec - start.tv_nsec) / 1000000);
		if (timeout_ms >= 0 && left <= 0)
			return 0;
	}
}

struct json_object *ipc_call_tick(const char *path, struct json_object *req, int fd,
				  int timeout_ms, void (*tick)(void *opaque), void *opaque,
				  char *err, size_t errlen)
{
	struct json_object *rep;
	int sock = ipc_connect(path, err, errlen), ret;

	if (sock < 0)
		return NULL;
	ret = ipc_send(sock, req, fd);
	if (ret) {
		snprintf(err, errlen, "%s: %s", path, strerror(-ret));
		close(sock);
		return NULL;
	}
	if (tick)
		timeout_ms = wait_ticking(sock, timeout_ms, tick, opaque);
	rep = timeout_ms ? ipc_recv(sock, NULL, timeout_ms) : NULL;
	if (!timeout_ms)
		errno = ETIMEDOUT;
	if (!rep)
		snprintf(err, errlen, "%s: no reply: %s", path, strerror(errno));
	close(sock);
	return rep;
}

struct json_object *ipc_ok(void)
{
	struct json_object *o = json_object_new_object();

	json_object_object_add(o, "ok", json_object_new_boolean(1));
	return o;
}

struct json_object *ipc_error(const char *code, const char *fmt, ...)
{
	struct json_object *o = json_object_new_object();
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	json_object_object_add(o, "ok", json_object_new_boolean(0));
	json_object_object_add(o, "error", json_object_new_string(msg));
	json_object_object_add(o, "code", json_object_new_string(code ? code : IPC_E_INTERNAL));
	return o;
}

const char *const ipc_codes[] = {
	IPC_E_BAD_ARGUMENT, IPC_E_NOT_FOUND, IPC_E_EXISTS, IPC_E_WRONG_STATE, IPC_E_BUSY,
	IPC_E_PERMISSION, IPC_E_NO_SERVICE, IPC_E_NOT_ANSWERING, IPC_E_PEER_UNREACHABLE,
	IPC_E_TLS, IPC_E_REFUSED, IPC_E_PEER_LOST, IPC_E_CANCELLED, IPC_E_TIMEOUT,
	IPC_E_UNCERTAIN, IPC_E_INTEGRITY, IPC_E_IO, IPC_E_UNSUPPORTED, IPC_E_CHECK_FAILED,
	IPC_E_INTERNAL, NULL
};

const char *ipc_errno_code(int err)
{
	switch (err < 0 ? -err : err) {
	case EINVAL: case ERANGE: case E2BIG: case ENAMETOOLONG: case EISDIR: case ENOTDIR:
		return IPC_E_BAD_ARGUMENT;
	case ENOENT: case ESRCH: case ENXIO:
		return IPC_E_NOT_FOUND;
	case EEXIST: case ENOTEMPTY:
		return IPC_E_EXISTS;
	case EBUSY: case EAGAIN: case EALREADY: case EINPROGRESS:
		return IPC_E_BUSY;
	case EPERM: case EACCES: case ELOOP:
		return IPC_E_PERMISSION;
	case ECONNREFUSED: case EHOSTUNREACH: case ENETUNREACH: case EHOSTDOWN:
	case EADDRNOTAVAIL:
		return IPC_E_PEER_UNREACHABLE;
	case EKEYREJECTED: case EKEYEXPIRED: case EKEYREVOKED:
		return IPC_E_TLS;
	case ECONNABORTED:	/* the other end gave up, saying why (migrate/source.c) */
		return IPC_E_REFUSED;
	case EPIPE: case ECONNRESET: case ENOTCONN: case ESHUTDOWN:
		return IPC_E_PEER_LOST;
	case ECANCELED:
		return IPC_E_CANCELLED;
	case ETIMEDOUT: case ETIME:
		return IPC_E_TIMEOUT;
	case EBADMSG: case EILSEQ: case EPROTO: case EBADE: case EBADR:
		return IPC_E_INTEGRITY;
	case EIO: case ENOSPC: case EROFS: case EDQUOT: case EFBIG: case EMFILE: case ENFILE:
		return IPC_E_IO;
	case ENODEV: case ENOTSUP: case ENOSYS: case ENOPKG:
		return IPC_E_UNSUPPORTED;
	default:
		return IPC_E_INTERNAL;
	}
}

const char *ipc_str(struct json_object *o, const char *key, const char *def)
{
	struct json_object *v;

	return json_object_object_get_ex(o, key, &v) && json_object_is_type(v, json_type_string) ?
	       json_object_get_string(v) : def;
}

long long ipc_int(struct json_object *o, const char *key, long long def)
{
	struct json_object *v;

	return json_object_object_get_ex(o, key, &v) ? json_object_get_int64(v) : def;
}

double ipc_double(struct json_object *o, const char *key, double def)
{
	struct json_object *v;

	return json_object_object_get_ex(o, key, &v) ? json_object_get_double(v) : def;
}

bool ipc_bool(struct json_object *o, const char *key, bool def)
{
	struct json_object *v;

	return json_object_object_get_ex(o, key, &v) ? json_object_get_boolean(v) : def;
}
