/*
 * The checks of the path to a peer, one line each, stopping at the first
 * that fails (the next ones need it): TCP to its service, the session as
 * a migration opens it, a data channel on the port it offers, and the
 * bandwidth that channel carries for a second (peer_probe, peer.c); then
 * the same the other way, as the peer tried it from its end to this
 * host's service (peer.back.*), with its own certificates and view of the
 * network.
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

/* The way back, as HOST tried it: the lines peer.back.*, or one saying
 * why there are none. */
static void way_back(struct json_object *checks, const struct peer_config *pc,
		     const char *dest, const struct peer_probe *r)
{
	const struct peer_path *b = &r->back;
	const char *what = "migrations from it to here, and a standby there protecting a "
			   "guest back here, would fail";

	if (!r->back_asked)
		return;
	if (!r->back_answered) {
		line(checks, "peer.back", "WARN", "%s did not try the way back to this host (a "
		     "vmigrated from before check-back, or it gave up): not checked", dest);
		return;
	}
	if (b->stage < PEER_PROBE_REACHED) {
		line(checks, "peer.back.reach", "FAIL", "%s cannot reach this host's service at "
		     "%s: %s; %s", dest, r->back_addr, b->error, what);
		return;
	}
	line(checks, "peer.back.reach", "PASS", "%s reaches this host's service at %s (%.1f ms)",
	     dest, r->back_addr, b->reach_ms);
	if (b->stage < PEER_PROBE_SESSION) {
		line(checks, "peer.back.tls", "FAIL", "%s to here: %s; %s", dest, b->error, what);
		return;
	}
	if (pc->insecure)
		line(checks, "peer.back.tls", "WARN", "plain TCP (--insecure) from %s too; session "
		     "in %.1f ms", dest, b->session_ms);
	else
		line(checks, "peer.back.tls", "PASS", "TLS 1.3 session from %s in %.1f ms with "
		     "'%s' (this host's certificate checked by %s against its CA and the address "
		     "it dialled)", dest, b->session_ms, b->peer_name, dest);
	if (b->stage < PEER_PROBE_DATA) {
		line(checks, "peer.back.data_port", "FAIL", "port %d offered here, no data "
		     "channel from %s: %s", b->data_port, dest, b->error);
		return;
	}
	line(checks, "peer.back.data_port", "PASS", "data channel from %s on port %d%s", dest,
	     b->data_port, pc->data_port_lo ? "" : " (any free port: --data-ports fixes a "
	     "range for firewalls)");
	if (b->stage < PEER_PROBE_DONE || b->seconds <= 0) {
		line(checks, "peer.back.bandwidth", "FAIL", "%s", b->stage < PEER_PROBE_DONE ?
		     b->error : "nothing arrived on the data channel");
		return;
	}
	line(checks, "peer.back.bandwidth", "PASS", "%.1f MiB/s on one data channel from %s "
	     "(%.1f MiB in %.2f s, as this host received it)", b->bytes / b->seconds / 1048576.0,
	     dest, b->bytes / 1048576.0, b->seconds);
}

struct json_object *peer_check(const struct peer_config *pc, const char *dest, int home_port)
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
	peer_probe(pc, fd, host, PROBE_SECONDS, home_port, &r, err, sizeof(err));
	if (r.out.stage < PEER_PROBE_SESSION) {
		line(checks, "peer.tls", "FAIL", "%s", err);
		return rep;
	}
	if (pc->insecure)
		line(checks, "peer.tls", "WARN", "plain TCP (--insecure): neither host is "
		     "authenticated and nothing is encrypted; session in %.1f ms%s", r.out.session_ms,
		     pc->key.set ? ", peer key proven both ways" : "");
	else
		line(checks, "peer.tls", "PASS", "TLS 1.3 session in %.1f ms with '%s' (its "
		     "certificate checked against our CA and the address dialled%s)", r.out.session_ms,
		     r.out.peer_name, pc->key.set ? "; peer key proven both ways" : "");
	if (r.out.stage < PEER_PROBE_DATA) {
		line(checks, "peer.data_port", "FAIL", "port %d offered, no data channel: %s",
		     r.out.data_port, err);
		return rep;
	}
	line(checks, "peer.data_port", "PASS", "data channel on port %d%s", r.out.data_port,
	     pc->data_port_lo ? "" : " (its service picks any free port: --data-ports fixes a "
	     "range for firewalls)");
	if (r.out.stage < PEER_PROBE_DONE || r.out.seconds <= 0) {
		line(checks, "peer.bandwidth", "FAIL", "%s", r.out.stage < PEER_PROBE_DONE ? err :
		     "nothing arrived on the data channel");
		return rep;
	}
	line(checks, "peer.bandwidth", "PASS", "%.1f MiB/s on one data channel (%.1f MiB in "
	     "%.2f s, as %s received it)", r.out.bytes / r.out.seconds / 1048576.0,
	     r.out.bytes / 1048576.0, r.out.seconds, host);
	way_back(checks, pc, dest, &r);
	return rep;
}
