/*
 * Opening a peer connection:
 *
 *   dialer (source guest process)            listener (destination guest process)
 *   TCP connect (by vmigrated)  -----------> accept (by vmigrated), fork
 *   TLS 1.3 handshake, mutual certificates, name and allow-list checks
 *   hello {migrate-in, name, job[, nonce]} -> name free here?
 *   (replicate-in: the same, for a standby copy)
 *   [with a peer key: challenge / proof both ways, peer_auth.c]
 *                            <-------------- {ok, data_port, token} or {error}
 *   per data channel: TCP to data_port, TLS, {migrate-data, token, i} -> {ok}
 *   migration stream (migrate/protocol.c)
 *
 * After an uncertain handover the source asks, on a connection of its own
 * opened the same way, what the destination decided:
 *   hello {handover, name, job[, nonce]} ->
 *                            <-------------- {ok, decision, detail}
 *
 * `vmigrate check HOST` opens the path the same way, then measures it:
 *   hello {probe, name, job, channels:1[, home_port, check_back]}
 *                                         -> <- {ok, data_port, token}
 *   one data channel, as above; bytes on it for a second or so, then its end
 *                            <-------------- {ok, bytes, seconds}
 *   with check_back, the listener probes the dialer's service the same way
 *   (its address as the listener sees it, home_port), then
 *                            <-------------- {ok, addr, back: {stage, ...}}
 */
#include "peer.h"

#include <errno.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>

#include <openssl/crypto.h>

#include "ckpt_wire.h"
#include "conf.h"
#include "ipc.h"
#include "rdma.h"
#include "tls.h"

#define HELLO_TIMEOUT_MS	10000

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int line_send(struct xport *x, struct json_object *o)
{
	const char *s = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
	struct iovec iov[2] = { { (void *)s, strlen(s) }, { "\n", 1 } };

	return xport_sendv(x, iov, 2);
}

/* One JSON line, read a byte at a time so nothing after it is consumed. */
static struct json_object *line_recv(struct xport *x)
{
	char buf[4096];
	size_t len = 0;

	while (len < sizeof(buf) - 1) {
		if (xport_recv_exact(x, buf + len, 1))
			return NULL;
		if (buf[len] == '\n') {
			struct json_object *o;

			buf[len] = 0;
			o = json_tokener_parse(buf);
			if (o && !json_object_is_type(o, json_type_object)) {
				json_object_put(o);
				o = NULL;
			}
			return o;
		}
		len++;
	}
	return NULL;
}

static void tls_paths(const struct peer_config *pc, char *ca, char *cert, char *key, size_t len)
{
	snprintf(ca, len, "%s/ca.crt", pc->tls_dir);
	snprintf(cert, len, "%s/cert.pem", pc->tls_dir);
	snprintf(key, len, "%s/key.pem", pc->tls_dir);
}

static struct xport_tls_ctx *tls_ctx(const struct peer_config *pc, bool server,
				     char *err, size_t errlen)
{
	char ca[512], cert[512], key[512], allow[400], *names[32], *save = NULL;
	struct xport_tls_config cfg = { .ca_file = ca, .cert_file = cert, .key_file = key,
					.handshake_timeout_ms = pc->handshake_timeout_ms };
	unsigned n = 0;

	tls_paths(pc, ca, cert, key, sizeof(ca));
	snprintf(allow, sizeof(allow), "%s", pc->allow);
	for (char *t = strtok_r(allow, ",", &save); t && n < 31; t = strtok_r(NULL, ",", &save))
		names[n++] = t;
	names[n] = NULL;
	if (server && n)
		cfg.allowed_clients = (const char *const *)names;
	return xport_tls_ctx_new(&cfg, server, err, errlen);
}

struct json_object *peer_config_to_json(const struct peer_config *pc)
{
	struct json_object *o = json_object_new_object();
	char hex[2 * sizeof(pc->key.key) + 1] = "";

	for (size_t i = 0; pc->key.set && i < pc->key.len; i++)
		sprintf(hex + 2 * i, "%02x", pc->key.key[i]);
	json_object_object_add(o, "insecure", json_object_new_boolean(pc->insecure));
	json_object_object_add(o, "tls_dir", json_object_new_string(pc->tls_dir));
	json_object_object_add(o, "allow", json_object_new_string(pc->allow));
	json_object_object_add(o, "key", json_object_new_string(hex));
	json_object_object_add(o, "io_timeout_ms", json_object_new_int(pc->io_timeout_ms));
	json_object_object_add(o, "handshake_timeout_ms",
			       json_object_new_int(pc->handshake_timeout_ms));
	json_object_object_add(o, "data_port_lo", json_object_new_int(pc->data_port_lo));
	json_object_object_add(o, "data_port_hi", json_object_new_int(pc->data_port_hi));
	return o;
}

int peer_config_from_json(struct json_object *o, struct peer_config *pc)
{
	const char *hex = ipc_str(o, "key", "");
	size_t n = 0;

	memset(pc, 0, sizeof(*pc));
	pc->insecure = ipc_bool(o, "insecure", false);
	snprintf(pc->tls_dir, sizeof(pc->tls_dir), "%s", ipc_str(o, "tls_dir", ""));
	snprintf(pc->allow, sizeof(pc->allow), "%s", ipc_str(o, "allow", ""));
	pc->io_timeout_ms = (int)ipc_int(o, "io_timeout_ms", 5000);
	pc->handshake_timeout_ms = (int)ipc_int(o, "handshake_timeout_ms", 10000);
	pc->data_port_lo = (uint16_t)ipc_int(o, "data_port_lo", 0);
	pc->data_port_hi = (uint16_t)ipc_int(o, "data_port_hi", 0);
	if (!hex[0])
		return 0;
	/* strict hex, no separators: a bad key must not quietly mean none */
	if (!OPENSSL_hexstr2buf_ex(pc->key.key, sizeof(pc->key.key), &n, hex, '\0') ||
	    n < 16) {
		memset(&pc->key, 0, sizeof(pc->key));
		return -EINVAL;
	}
	pc->key.len = n;
	pc->key.set = true;
	return 0;
}

int peer_config_check(const struct peer_config *pc, char *err, size_t errlen)
{
	struct xport_tls_ctx *ctx;

	if (pc->insecure)
		return 0;
	if (!pc->tls_dir[0]) {
		snprintf(err, errlen, "TLS is the default between hosts: give --tls-dir DIR "
			 "(or tls-dir in " CONF_DEFAULT_PATH "; tools/mkcerts.sh makes one) "
			 "or --insecure");
		return -EINVAL;
	}
	ctx = tls_ctx(pc, true, err, errlen);
	if (!ctx)
		return -EINVAL;
	xport_tls_ctx_free(ctx);
	return 0;
}

static struct xport *secure(const struct peer_config *pc, int fd, const char *host,
			    bool server, char *err, size_t errlen)
{
	struct xport_tls_ctx *ctx;
	struct xport *x;

	if (pc->insecure)
		return xport_tcp_from_fd(fd, pc->io_timeout_ms);
	ctx = tls_ctx(pc, server, err, errlen);
	if (!ctx) {
		close(fd);
		return NULL;
	}
	x = server ? xport_tls_server(ctx, fd, pc->io_timeout_ms, err, errlen) :
		     xport_tls_client(ctx, fd, host, pc->io_timeout_ms, err, errlen);
	xport_tls_ctx_free(ctx);
	return x;
}

void peer_session_close(struct peer_session *ps)
{
	if (ps->has_listener)
		close(ps->listen_fd);
	xport_close(ps->control);
	for (unsigned i = 0; i < ps->nr_data; i++)
		xport_close(ps->data[i]);
	memset(ps, 0, sizeof(*ps));
}

static void new_token(char out[33])
{
	unsigned char b[16];

	if (getrandom(b, sizeof(b), 0) != sizeof(b))
		memset(b, 0, sizeof(b));
	for (int i = 0; i < 16; i++)
		sprintf(out + 2 * i, "%02x", b[i]);
}

/* One data channel to host:port, proven part of the session by token. */
static struct xport *dial_data(const struct peer_config *pc, const char *host, const char *port,
			       const char *op, const char *token, unsigned i, bool rdma, char *err,
			       size_t errlen)
{
	struct json_object *o, *rep;
	struct xport *x;

	if (rdma) {
		/* RDMA fabrics are trusted networks: no TLS on the data path */
		x = xport_rdma_connect(host, port, 5000, err, errlen);
		if (!x)
			return NULL;
	} else {
		struct xport *tcp = xport_tcp_connect(host, port, 5000, pc->io_timeout_ms, err,
						      errlen);
		int fd;

		if (!tcp)
			return NULL;
		fd = dup(xport_fd(tcp));
		xport_close(tcp);
		if (fd < 0 || !(x = secure(pc, fd, host, false, err, errlen)))
			return NULL;
	}
	o = json_object_new_object();
	json_object_object_add(o, "op", json_object_new_string(op));
	json_object_object_add(o, "token", json_object_new_string(token));
	json_object_object_add(o, "channel", json_object_new_int((int)i));
	line_send(x, o);
	json_object_put(o);
	rep = line_recv(x);
	if (!rep || !ipc_bool(rep, "ok", false)) {
		snprintf(err, errlen, "data channel %u refused: %s", i,
			 rep ? ipc_str(rep, "error", "no reason") : "connection closed");
		json_object_put(rep);
		xport_close(x);
		return NULL;
	}
	json_object_put(rep);
	return x;
}

unsigned peer_default_channels(void)
{
	long cores = sysconf(_SC_NPROCESSORS_ONLN);

	return cores < 1 ? 1 : cores > 4 ? 4 : (unsigned)cores;
}

/* A hello naming op, the guest and the job. */
static struct json_object *new_hello(const char *op, const char *name, const char *job)
{
	struct json_object *hello = json_object_new_object();

	json_object_object_add(hello, "op", json_object_new_string(op));
	json_object_object_add(hello, "name", json_object_new_string(name));
	json_object_object_add(hello, "job", json_object_new_string(job));
	return hello;
}

/*
 * Dialer: secure fd, send the hello (taking it), prove the key if there
 * is one, and return the listener's {ok:true,...} with *xo the connection;
 * NULL with err when refused (the connection is closed then), *why saying
 * how: -EKEYREJECTED the TLS session did not open, -ECONNABORTED the
 * listener said no, saying why (or our key did not prove it), -ECONNRESET
 * it went silent.
 */
static struct json_object *greet(const struct peer_config *pc, int fd, const char *host,
				 struct json_object *hello, struct xport **xo, int *why,
				 char *err, size_t errlen)
{
	struct xport *x = secure(pc, fd, host, false, err, errlen);
	const char *name = ipc_str(hello, "name", "");
	struct json_object *rep = NULL;
	char nonce[65];

	*xo = NULL;
	*why = -ECONNABORTED;
	if (!x) {
		*why = pc->insecure ? -ECONNRESET : -EKEYREJECTED;
		json_object_put(hello);
		return NULL;
	}
	peer_auth_hello(&pc->key, hello, nonce);
	if (line_send(x, hello)) {
		snprintf(err, errlen, "%s: sending the hello failed", host);
		*why = -ECONNRESET;
		goto fail;
	}
	rep = line_recv(x);
	if (rep && pc->key.set && !ipc_str(rep, "error", NULL)) {
		struct json_object *answer = json_object_new_object();
		int ret = peer_auth_dialer(&pc->key, nonce, name, rep, answer, err, errlen);

		if (!ret)
			ret = line_send(x, answer);
		json_object_put(answer);
		json_object_put(rep);
		rep = NULL;
		if (ret)
			goto fail;
		rep = line_recv(x);
	}
	if (!rep || !ipc_bool(rep, "ok", false)) {
		snprintf(err, errlen, "%s refused: %s", host,
			 rep ? ipc_str(rep, "error", "no reason") :
			 "the connection closed (TLS on one end only?)");
		if (!rep)
			*why = -ECONNRESET;
		goto fail;
	}
	json_object_put(hello);
	*xo = x;
	return rep;
fail:
	json_object_put(rep);
	json_object_put(hello);
	xport_close(x);
	return NULL;
}

int peer_connect(const char *dest, int io_timeout_ms, char *host, size_t hostlen,
		 char *err, size_t errlen)
{
	char port[32];
	struct xport *x;
	int fd;

	if (xport_split_hostport(dest, PEER_DEFAULT_PORT, host, hostlen, port, sizeof(port))) {
		snprintf(err, errlen, "bad destination '%s' (HOST[:PORT])", dest);
		return -EINVAL;
	}
	x = xport_tcp_connect(host, port, 5000, io_timeout_ms, err, errlen);
	if (!x)
		return -ECONNREFUSED;
	fd = dup(xport_fd(x));
	xport_close(x);
	if (fd < 0) {
		snprintf(err, errlen, "dup: %s", strerror(errno));
		return -EIO;
	}
	return fd;
}

int peer_dial(const struct peer_config *pc, int fd, const char *host, const char *op,
	      const char *name, const char *job, const struct peer_arbiter *arb,
	      unsigned channels, bool rdma, bool postcopy, struct peer_session *ps, char *err,
	      size_t errlen)
{
	struct json_object *hello, *rep;
	char port[16], token[65];
	struct xport *x;
	int why;

	memset(ps, 0, sizeof(*ps));
	if (channels > PEER_MAX_DATA)
		channels = PEER_MAX_DATA;
	hello = new_hello(op, name, job);
	if (arb && arb->endpoints[0]) {
		json_object_object_add(hello, "arbiter", json_object_new_string(arb->endpoints));
		json_object_object_add(hello, "ttl", json_object_new_int(arb->ttl_s));
		json_object_object_add(hello, "epoch_ms", json_object_new_int((int)arb->epoch_ms));
		if (arb->home_port > 0)
			json_object_object_add(hello, "home_port", json_object_new_int(arb->home_port));
	}
	if (arb && arb->lineage[0] && !strcmp(op, "replicate-in"))
		json_object_object_add(hello, "lineage", json_object_new_string(arb->lineage));
	json_object_object_add(hello, "channels", json_object_new_int((int)channels));
	json_object_object_add(hello, "transport", json_object_new_string(rdma ? "rdma" : "tcp"));
	if (postcopy)
		json_object_object_add(hello, "postcopy", json_object_new_boolean(1));
	rep = greet(pc, fd, host, hello, &x, &why, err, errlen);
	if (!rep)
		return why;
	snprintf(port, sizeof(port), "%lld", ipc_int(rep, "data_port", 0));
	snprintf(token, sizeof(token), "%s", ipc_str(rep, "token", ""));
	ps->peer_minor = (unsigned)ipc_int(rep, "format_minor", 0);
	json_object_put(rep);
	ps->control = x;
	ps->data_port = atoi(port);
	snprintf(ps->token, sizeof(ps->token), "%s", token);
	for (unsigned i = 0; i < channels; i++) {
		ps->data[i] = dial_data(pc, host, port, "migrate-data", token, i, rdma, err, errlen);
		if (!ps->data[i]) {
			peer_session_close(ps);
			return -ECONNREFUSED;
		}
		ps->nr_data = i + 1;
	}
	return 0;
}

int peer_ask_handover(const struct peer_config *pc, int fd, const char *host, const char *op,
		      const char *name, const char *job, char *decision, size_t len,
		      char *detail, size_t detail_len, char *err, size_t errlen)
{
	struct xport *x;
	int why;
	struct json_object *rep = greet(pc, fd, host, new_hello(op, name, job), &x,
					&why, err, errlen);

	if (!rep)
		return why;
	snprintf(decision, len, "%s", ipc_str(rep, "decision", ""));
	snprintf(detail, detail_len, "%s", ipc_str(rep, "detail", ""));
	json_object_put(rep);
	xport_close(x);
	return decision[0] ? 0 : -EPROTO;
}

/* The dialer's service: its address as this connection sees it, and the
 * port it says it listens on. */
static void primary_address(int fd, int port, char *out, size_t len)
{
	struct sockaddr_storage sa;
	socklen_t sl = sizeof(sa);
	char ip[INET6_ADDRSTRLEN] = "";

	out[0] = 0;
	if (getpeername(fd, (struct sockaddr *)&sa, &sl) < 0)
		return;
	if (sa.ss_family == AF_INET)
		inet_ntop(AF_INET, &((struct sockaddr_in *)&sa)->sin_addr, ip, sizeof(ip));
	else if (sa.ss_family == AF_INET6)
		inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&sa)->sin6_addr, ip, sizeof(ip));
	if (ip[0])
		snprintf(out, len, sa.ss_family == AF_INET6 ? "[%s]:%d" : "%s:%d", ip, port);
}

/* PEER_LINEAGE_LEN lowercase hex digits, as worker_repl.c makes them */
static bool is_lineage(const char *s)
{
	size_t n = strspn(s, "0123456789abcdef");

	return n == PEER_LINEAGE_LEN && !s[n];
}

struct xport *peer_accept(const struct peer_config *pc, int fd, struct peer_hello *h,
			  char *err, size_t errlen)
{
	struct xport *x = secure(pc, fd, NULL, true, err, errlen);
	struct json_object *hello, *challenge, *answer;
	const char *n, *op, *job;
	char nonce[65];

	memset(h, 0, sizeof(*h));
	if (!x)
		return NULL;
	hello = line_recv(x);
	n = hello ? ipc_str(hello, "name", NULL) : NULL;
	op = hello ? ipc_str(hello, "op", "") : "";
	job = hello ? ipc_str(hello, "job", "") : "";
	if (!hello || (strcmp(op, "migrate-in") && strcmp(op, "replicate-in") &&
		       strcmp(op, "handover") && strcmp(op, "probe") &&
		       strcmp(op, "postcopy-ask") && strcmp(op, "libvirt-in")) || !n || !*n ||
	    strlen(n) >= sizeof(h->name) || strchr(n, '/') || n[0] == '.' ||
	    strlen(job) >= sizeof(h->job)) {
		snprintf(err, errlen, "expected a migrate-in, replicate-in, handover or probe request%s",
			 pc->insecure ? " (a TLS peer talking to a plain port?)" : "");
		goto refuse;
	}
	snprintf(h->op, sizeof(h->op), "%s", op);
	snprintf(h->name, sizeof(h->name), "%s", n);
	snprintf(h->job, sizeof(h->job), "%s", job);
	snprintf(h->arb.endpoints, sizeof(h->arb.endpoints), "%s", ipc_str(hello, "arbiter", ""));
	h->arb.ttl_s = (int)ipc_int(hello, "ttl", 0);
	h->arb.epoch_ms = (unsigned)ipc_int(hello, "epoch_ms", 0);
	if (ipc_int(hello, "home_port", 0) > 0 && ipc_int(hello, "home_port", 0) < 65536)
		primary_address(fd, (int)ipc_int(hello, "home_port", 0), h->arb.primary,
				sizeof(h->arb.primary));
	if (!strcmp(op, "replicate-in") && is_lineage(ipc_str(hello, "lineage", "")))
		snprintf(h->arb.lineage, sizeof(h->arb.lineage), "%s", ipc_str(hello, "lineage", ""));
	h->check_back = !strcmp(op, "probe") && ipc_bool(hello, "check_back", false) &&
			h->arb.primary[0];
	if (h->arb.endpoints[0] && (h->arb.ttl_s < 1 || h->arb.ttl_s > 3600 ||
				    ipc_int(hello, "epoch_ms", 0) < 0 ||
				    h->arb.epoch_ms > 60000)) {
		snprintf(err, errlen, "a replicate-in hello with a TTL of %d s", h->arb.ttl_s);
		goto refuse;
	}
	if (ipc_int(hello, "channels", 0) < 0) {
		snprintf(err, errlen, "a hello asked for %lld data channels",
			 ipc_int(hello, "channels", 0));
		goto refuse;
	}
	h->channels = (unsigned)ipc_int(hello, "channels", 0);
	h->rdma = !strcmp(ipc_str(hello, "transport", "tcp"), "rdma");
	h->postcopy = ipc_bool(hello, "postcopy", false);
	if (h->channels > PEER_MAX_DATA)
		h->channels = PEER_MAX_DATA;
	if (pc->key.set) {
		challenge = json_object_new_object();
		if (peer_auth_challenge(&pc->key, hello, challenge, nonce, err, errlen)) {
			json_object_put(challenge);
			goto refuse;
		}
		line_send(x, challenge);
		json_object_put(challenge);
		answer = line_recv(x);
		if (!answer || peer_auth_check(&pc->key, ipc_str(hello, "nonce", ""), nonce, h->name,
					       answer, err, errlen)) {
			if (!answer)
				snprintf(err, errlen, "no answer to the challenge");
			json_object_put(answer);
			goto refuse;
		}
		json_object_put(answer);
	}
	json_object_put(hello);
	return x;
refuse:
	json_object_put(hello);
	peer_answer(x, false, err);
	xport_close(x);
	return NULL;
}

int peer_answer_handover(struct xport *x, const char *decision, const char *detail)
{
	struct json_object *o = ipc_ok();
	int ret;

	json_object_object_add(o, "decision", json_object_new_string(decision));
	json_object_object_add(o, "detail", json_object_new_string(detail));
	ret = line_send(x, o);
	json_object_put(o);
	return ret;
}

int peer_answer(struct xport *x, bool ok, const char *why)
{
	struct json_object *o = ok ? ipc_ok() : ipc_error(IPC_E_REFUSED, "%s", why);
	int ret = line_send(x, o);

	json_object_put(o);
	return ret;
}

/* One data connection, TLS/TCP from lfd or RDMA from rl; NULL if none. */
static struct xport *accept_one(const struct peer_config *pc, int lfd,
				struct xport_rdma_listener *rl, int left_ms, char *err, size_t errlen)
{
	struct pollfd p = { .fd = lfd, .events = POLLIN };
	int fd;

	if (rl)
		return xport_rdma_accept(rl, left_ms, err, errlen);
	if (poll(&p, 1, left_ms) <= 0)
		return NULL;
	fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
	return fd < 0 ? NULL : secure(pc, fd, NULL, true, err, errlen);
}

/* Take the data channels until all came or the deadline passed. */
static int take_data(const struct peer_config *pc, int lfd, struct xport_rdma_listener *rl,
		     const char *op, const char *token, unsigned channels, struct xport **slot,
		     int timeout_ms, char *err, size_t errlen)
{
	double deadline = now_ms() + timeout_ms;
	unsigned got = 0;

	while (got < channels) {
		struct json_object *o;
		struct xport *x;
		int left = (int)(deadline - now_ms());
		long i;

		if (left <= 0) {
			snprintf(err, errlen, "only %u of %u data channels came", got, channels);
			return -ETIMEDOUT;
		}
		x = accept_one(pc, lfd, rl, left, err, errlen);
		if (!x)
			continue;	/* a stranger, or nothing yet */
		o = line_recv(x);
		i = o ? ipc_int(o, "channel", -1) : -1;
		if (!o || strcmp(ipc_str(o, "op", ""), op) ||
		    strcmp(ipc_str(o, "token", ""), token) || i < 0 || i >= (long)channels ||
		    slot[i]) {
			peer_answer(x, false, "not a data channel of this migration");
			json_object_put(o);
			xport_close(x);
			continue;
		}
		json_object_put(o);
		peer_answer(x, true, NULL);
		slot[i] = x;
		got++;
	}
	return 0;
}

int peer_parse_port_range(const char *s, uint16_t *lo, uint16_t *hi)
{
	unsigned a, b;
	int end = 0;

	if (sscanf(s, "%u-%u%n", &a, &b, &end) == 2 && !s[end]) {
		/* LO-HI */
	} else if (sscanf(s, "%u%n", &a, &end) == 1 && !s[end]) {
		b = a;
	} else {
		return -EINVAL;
	}
	if (a < 1 || b > 65535 || a > b)
		return -EINVAL;
	*lo = (uint16_t)a;
	*hi = (uint16_t)b;
	return 0;
}

static void set_port(struct sockaddr_storage *sa, uint16_t port)
{
	if (sa->ss_family == AF_INET)
		((struct sockaddr_in *)sa)->sin_port = htons(port);
	else
		((struct sockaddr_in6 *)sa)->sin6_port = htons(port);
}

/* A listening socket for the data channels on the control connection's
 * address: the first free port of the configured range, or any. */
static int listen_data_port(const struct peer_config *pc, const struct xport *control,
			    int *port, char *err, size_t errlen)
{
	struct sockaddr_storage sa;
	socklen_t sl = sizeof(sa);
	unsigned lo = pc->data_port_lo, hi = pc->data_port_lo ? pc->data_port_hi : 0;

	if (getsockname(xport_fd(control), (struct sockaddr *)&sa, &sl) < 0 ||
	    (sa.ss_family != AF_INET && sa.ss_family != AF_INET6)) {
		snprintf(err, errlen, "data channels need a TCP control connection");
		return -EINVAL;
	}
	for (unsigned p = lo; p <= hi; p++) {
		int lfd = socket(sa.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
		int e;

		set_port(&sa, (uint16_t)p);
		if (lfd >= 0 && bind(lfd, (struct sockaddr *)&sa, sl) == 0 && listen(lfd, 16) == 0 &&
		    getsockname(lfd, (struct sockaddr *)&sa, &sl) == 0) {
			*port = ntohs(sa.ss_family == AF_INET ? ((struct sockaddr_in *)&sa)->sin_port :
				      ((struct sockaddr_in6 *)&sa)->sin6_port);
			return lfd;
		}
		e = errno;
		if (lfd >= 0)
			close(lfd);
		if (e != EADDRINUSE || p == hi) {
			if (e == EADDRINUSE)
				snprintf(err, errlen, "no free data port in %u-%u", lo, hi);
			else
				snprintf(err, errlen, "data port: %s", strerror(e));
			return -e;
		}
	}
	return -EINVAL;		/* not reached: the range holds at least port 0 */
}

/* The RDMA listener for the data channels, on the same terms. */
static struct xport_rdma_listener *listen_data_rdma(const struct peer_config *pc,
						    const struct xport *control, int *port,
						    char *err, size_t errlen)
{
	struct sockaddr_storage sa;
	socklen_t sl = sizeof(sa);
	char addr[INET6_ADDRSTRLEN] = "";
	unsigned lo = pc->data_port_lo, hi = pc->data_port_lo ? pc->data_port_hi : 0;

	if (getsockname(xport_fd(control), (struct sockaddr *)&sa, &sl) == 0)
		inet_ntop(sa.ss_family, sa.ss_family == AF_INET ?
			  (void *)&((struct sockaddr_in *)&sa)->sin_addr :
			  (void *)&((struct sockaddr_in6 *)&sa)->sin6_addr, addr, sizeof(addr));
	for (unsigned p = lo; p <= hi; p++) {
		struct xport_rdma_listener *rl;
		char ps[8];

		snprintf(ps, sizeof(ps), "%u", p);
		rl = xport_rdma_listen(addr, ps, port, err, errlen);
		if (rl || !xport_rdma_available(err, errlen))
			return rl;
	}
	return NULL;		/* err names the last port's failure */
}

int peer_welcome(const struct peer_config *pc, struct xport *control, unsigned channels,
		 bool rdma, bool keep_listener, unsigned format_minor, struct peer_session *ps,
		 char *err, size_t errlen)
{
	struct xport_rdma_listener *rl = NULL;
	struct json_object *o;
	char token[33];
	int lfd = -1, ret, port = 0;

	memset(ps, 0, sizeof(*ps));
	ps->control = control;
	new_token(token);
	if (channels && rdma) {
		rl = listen_data_rdma(pc, control, &port, err, errlen);
		if (!rl) {
			peer_answer(control, false, err);
			return -ENODEV;
		}
	} else if (channels) {
		lfd = listen_data_port(pc, control, &port, err, errlen);
		if (lfd < 0) {
			peer_answer(control, false, err);
			return lfd;
		}
	}
	o = ipc_ok();
	json_object_object_add(o, "data_port", json_object_new_int(port));
	json_object_object_add(o, "token", json_object_new_string(token));
	if (format_minor)	/* versions before 1.1 said nothing: 1.0 */
		json_object_object_add(o, "format_minor", json_object_new_int((int)format_minor));
	ret = line_send(control, o);
	json_object_put(o);
	if (!ret && channels)
		ret = take_data(pc, lfd, rl, "migrate-data", token, channels, ps->data,
				pc->handshake_timeout_ms > 0 ? pc->handshake_timeout_ms : 10000,
				err, errlen);
	if (!ret)
		ps->nr_data = channels;
	ps->data_port = port;
	snprintf(ps->token, sizeof(ps->token), "%s", token);
	if (!ret && keep_listener && lfd >= 0) {
		ps->listen_fd = lfd;	/* a post-copy recovery comes back there */
		ps->has_listener = true;
	} else if (lfd >= 0) {
		close(lfd);
	}
	xport_rdma_listener_free(rl);
	if (ret) {
		for (unsigned i = 0; i < PEER_MAX_DATA; i++)
			xport_close(ps->data[i]);
		memset(ps, 0, sizeof(*ps));
	}
	return ret;
}

int peer_redial(const struct peer_config *pc, const char *host, int port, const char *token,
		unsigned n, struct xport **out, char *err, size_t errlen)
{
	char ps[16];

	snprintf(ps, sizeof(ps), "%d", port);
	memset(out, 0, n * sizeof(*out));
	for (unsigned i = 0; i < n; i++) {
		out[i] = dial_data(pc, host, ps, PEER_RESUME_OP, token, i, false, err, errlen);
		if (!out[i]) {
			for (unsigned k = 0; k < i; k++)
				xport_close(out[k]);
			return -ECONNREFUSED;
		}
	}
	return 0;
}

int peer_take_resume(const struct peer_config *pc, const struct peer_session *ps, unsigned n,
		     struct xport **out, int timeout_ms, char *err, size_t errlen)
{
	int ret;

	memset(out, 0, n * sizeof(*out));
	if (!ps->has_listener) {
		snprintf(err, errlen, "no listener kept for a recovery");
		return -EINVAL;
	}
	ret = take_data(pc, ps->listen_fd, NULL, PEER_RESUME_OP, ps->token, n, out, timeout_ms,
			err, errlen);
	if (ret)
		for (unsigned i = 0; i < n; i++)
			xport_close(out[i]);
	return ret;
}

#define PROBE_MAX_S	5
#define PROBE_CHUNK	(64 * 1024)
/* the way back takes a connection, a TLS session and a data channel, each
 * bounded (5 s, the handshake timeout), and its second of bytes */
#define PROBE_BACK_WAIT_MS	30000

/* What one probe found, as a JSON object for the one that asked. */
static struct json_object *path_to_json(const struct peer_path *p)
{
	struct json_object *o = json_object_new_object();

	json_object_object_add(o, "stage", json_object_new_int(p->stage));
	json_object_object_add(o, "peer_name", json_object_new_string(p->peer_name));
	json_object_object_add(o, "reach_ms", json_object_new_double(p->reach_ms));
	json_object_object_add(o, "session_ms", json_object_new_double(p->session_ms));
	json_object_object_add(o, "data_port", json_object_new_int(p->data_port));
	json_object_object_add(o, "bytes", json_object_new_int64((int64_t)p->bytes));
	json_object_object_add(o, "seconds", json_object_new_double(p->seconds));
	json_object_object_add(o, "error", json_object_new_string(p->error));
	return o;
}

/* ... and back; every figure bounded, as from any peer. */
static void path_from_json(struct json_object *o, struct peer_path *p)
{
	long long stage = ipc_int(o, "stage", 0);

	memset(p, 0, sizeof(*p));
	p->stage = stage < 0 || stage > PEER_PROBE_DONE ? 0 : (int)stage;
	snprintf(p->peer_name, sizeof(p->peer_name), "%s", ipc_str(o, "peer_name", ""));
	p->reach_ms = ipc_double(o, "reach_ms", 0);
	p->session_ms = ipc_double(o, "session_ms", 0);
	p->data_port = (int)(ipc_int(o, "data_port", 0) & 0xffff);
	p->bytes = (uint64_t)(ipc_int(o, "bytes", 0) > 0 ? ipc_int(o, "bytes", 0) : 0);
	p->seconds = ipc_double(o, "seconds", 0);
	snprintf(p->error, sizeof(p->error), "%s", ipc_str(o, "error", ""));
}

int peer_probe(const struct peer_config *pc, int fd, const char *host, double seconds,
	       int back_port, struct peer_probe *r, char *err, size_t errlen)
{
	struct json_object *hello = new_hello("probe", "probe", "check"), *rep, *back;
	static const uint8_t zeros[PROBE_CHUNK];
	char port[16], token[65];
	struct xport *x, *data;
	double t0 = now_ms();
	int why;

	memset(r, 0, sizeof(*r));
	if (seconds > PROBE_MAX_S)
		seconds = PROBE_MAX_S;
	json_object_object_add(hello, "channels", json_object_new_int(1));
	if (back_port > 0) {
		json_object_object_add(hello, "home_port", json_object_new_int(back_port));
		json_object_object_add(hello, "check_back", json_object_new_boolean(true));
		r->back_asked = true;
	}
	rep = greet(pc, fd, host, hello, &x, &why, err, errlen);
	if (!rep)
		return why;
	r->out.stage = PEER_PROBE_SESSION;
	r->out.session_ms = now_ms() - t0;
	if (!pc->insecure)
		snprintf(r->out.peer_name, sizeof(r->out.peer_name), "%s", xport_tls_peer_name(x));
	r->out.data_port = (int)ipc_int(rep, "data_port", 0);
	snprintf(port, sizeof(port), "%d", r->out.data_port);
	snprintf(token, sizeof(token), "%s", ipc_str(rep, "token", ""));
	json_object_put(rep);
	data = dial_data(pc, host, port, "migrate-data", token, 0, false, err, errlen);
	if (!data) {
		xport_close(x);
		return -ECONNREFUSED;
	}
	r->out.stage = PEER_PROBE_DATA;
	t0 = now_ms();
	while (now_ms() - t0 < seconds * 1e3)
		if (xport_send(data, zeros, sizeof(zeros))) {
			snprintf(err, errlen, "the data channel broke after %llu bytes",
				 (unsigned long long)data->bytes_sent);
			xport_close(data);
			xport_close(x);
			return -EPIPE;
		}
	xport_close(data);	/* its end is what the listener waits for */
	rep = line_recv(x);
	if (!rep || !ipc_bool(rep, "ok", false)) {
		snprintf(err, errlen, "%s did not say what it received: %s", host,
			 rep ? ipc_str(rep, "error", "no reason") : "the connection closed");
		json_object_put(rep);
		xport_close(x);
		return -EPROTO;
	}
	r->out.bytes = (uint64_t)ipc_int(rep, "bytes", 0);
	r->out.seconds = ipc_double(rep, "seconds", 0);
	json_object_put(rep);
	r->out.stage = PEER_PROBE_DONE;
	/* the way back: a second line once the listener tried it (a peer that
	 * does not know the question closes the connection instead) */
	if (r->back_asked && xport_poll_in(x, PROBE_BACK_WAIT_MS) > 0 && (rep = line_recv(x))) {
		if (json_object_object_get_ex(rep, "back", &back)) {
			path_from_json(back, &r->back);
			snprintf(r->back_addr, sizeof(r->back_addr), "%s", ipc_str(rep, "addr", ""));
			r->back_answered = true;
		}
		json_object_put(rep);
	}
	xport_close(x);
	return 0;
}

/* The listener's way back to the dialer's service at addr (HOST:PORT), as
 * a migration back would take it; its outcome in p. */
static void probe_back(const struct peer_config *pc, const char *addr, struct peer_path *p)
{
	char host[256], err[512] = "";
	struct peer_probe r;
	double t0 = now_ms();
	int fd = peer_connect(addr, pc->io_timeout_ms, host, sizeof(host), err, sizeof(err));

	memset(p, 0, sizeof(*p));
	if (fd < 0) {
		snprintf(p->error, sizeof(p->error), "%.250s", err);
		return;
	}
	p->reach_ms = now_ms() - t0;
	peer_probe(pc, fd, host, 1.0, 0, &r, err, sizeof(err));	/* never asks back again */
	r.out.reach_ms = p->reach_ms;
	*p = r.out;
	if (p->stage < PEER_PROBE_SESSION)
		p->stage = PEER_PROBE_REACHED;
	if (p->stage < PEER_PROBE_DONE)
		snprintf(p->error, sizeof(p->error), "%.250s", err);
}

int peer_answer_probe(const struct peer_config *pc, struct xport *x, const char *back,
		      char *err, size_t errlen)
{
	struct peer_session ps;
	struct json_object *o;
	uint8_t *buf = malloc(PROBE_CHUNK);
	double first = 0, last = 0;
	uint64_t bytes = 0;
	int ret;

	if (!buf) {
		peer_answer(x, false, "out of memory");
		xport_close(x);
		return -ENOMEM;
	}
	ret = peer_welcome(pc, x, 1, false, false, CKPT_VERSION_MINOR, &ps, err, errlen);
	if (ret) {
		free(buf);
		xport_close(x);
		return ret;
	}
	/* until the dialer ends the channel, or for longer than it may send */
	for (;;) {
		long n = xport_recv(ps.data[0], buf, PROBE_CHUNK);

		if (n > 0) {
			if (!bytes)
				first = now_ms();
			bytes += (uint64_t)n;
			last = now_ms();
		}
		if (n < PROBE_CHUNK || (first && last - first > 2e3 * PROBE_MAX_S))
			break;
	}
	free(buf);
	xport_close(ps.data[0]);
	ps.data[0] = NULL;
	ps.nr_data = 0;
	o = ipc_ok();
	json_object_object_add(o, "bytes", json_object_new_int64((int64_t)bytes));
	json_object_object_add(o, "seconds", json_object_new_double((last - first) / 1e3));
	ret = line_send(x, o);
	json_object_put(o);
	if (!ret && back && back[0]) {
		struct peer_path p;

		probe_back(pc, back, &p);
		o = ipc_ok();
		json_object_object_add(o, "addr", json_object_new_string(back));
		json_object_object_add(o, "back", path_to_json(&p));
		ret = line_send(x, o);
		json_object_put(o);
	}
	peer_session_close(&ps);
	return ret;
}
