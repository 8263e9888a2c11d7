/*
 * The checks of the path to a peer, one line each, stopping at the first
 * that fails (the next ones need it): TCP to its service, the session as
 * a migration opens it, a data channel on the port it offers, and the
 * bandwidth that channel carries for a second (peer_probe, peer.c).
 */
#include "peer_check.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "check_line.h"
#include "ipc.h"

#define PROBE_SECONDS	1.0

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void line(struct json_object *checks, const char *check, const char *result,
		 const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static void line(struct json_object *checks, const char *check, const char *result,
		 const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	json_object_array_add(checks, check_line(check, result, fmt, ap));
	va_end(ap);
}

struct json_object *peer_check(const struct peer_config *pc, const char *dest)
{
	struct json_object *rep = ipc_ok(), *checks = json_object_new_array();
	struct peer_probe r;
	char host[256], err[512];
	double t0 = now_ms();
	int fd = peer_connect(dest, pc->io_timeout_ms, host, sizeof(host), err, sizeof(err));

	json_object_object_add(rep, "checks", checks);
	if (fd < 0) {
		line(checks, "peer.reach", "FAIL", "%s", err);
		return rep;
	}
	line(checks, "peer.reach", "PASS", "%s: its service accepts connections (%.1f ms)", dest,
	     now_ms() - t0);
	peer_probe(pc, fd, host, PROBE_SECONDS, &r, err, sizeof(err));
	if (r.stage < PEER_PROBE_SESSION) {
		line(checks, "peer.tls", "FAIL", "%s", err);
		return rep;
	}
	if (pc->insecure)
		line(checks, "peer.tls", "WARN", "plain TCP (--insecure): neither host is "
		     "authenticated and nothing is encrypted; session in %.1f ms%s", r.session_ms,
		     pc->key.set ? ", peer key proven both ways" : "");
	else
		line(checks, "peer.tls", "PASS", "TLS 1.3 session in %.1f ms with '%s' (its "
		     "certificate checked against our CA and the address dialled%s)", r.session_ms,
		     r.peer_name, pc->key.set ? "; peer key proven both ways" : "");
	if (r.stage < PEER_PROBE_DATA) {
		line(checks, "peer.data_port", "FAIL", "port %d offered, no data channel: %s",
		     r.data_port, err);
		return rep;
	}
	line(checks, "peer.data_port", "PASS", "data channel on port %d%s", r.data_port,
	     pc->data_port_lo ? "" : " (its service picks any free port: --data-ports fixes a "
	     "range for firewalls)");
	if (r.stage < PEER_PROBE_DONE || r.seconds <= 0) {
		line(checks, "peer.bandwidth", "FAIL", "%s", r.stage < PEER_PROBE_DONE ? err :
		     "nothing arrived on the data channel");
		return rep;
	}
	line(checks, "peer.bandwidth", "PASS", "%.1f MiB/s on one data channel (%.1f MiB in "
	     "%.2f s, as %s received it)", r.bytes / r.seconds / 1048576.0, r.bytes / 1048576.0,
	     r.seconds, host);
	return rep;
}
