/*
 * TLS channels (OpenSSL): TLS 1.3 only, both sides authenticated by
 * certificates from one CA; the client checks the server's name (or IP
 * address) against the host it dialled, the server checks the client's
 * name against an allow-list (like QEMU's tls-authz). Handshakes have a
 * deadline, so a peer that stalls cannot hold a service. OpenSSL writes
 * with write(2): the process must ignore SIGPIPE (vmigrated does).
 */
#ifndef TRANSPORT_TLS_H
#define TRANSPORT_TLS_H

#include <stdbool.h>
#include <stddef.h>

#include "transport.h"

struct xport_tls_config {
	const char *ca_file;		/* PEM bundle of trusted CAs */
	const char *cert_file;		/* this host's certificate (PEM) */
	const char *key_file;		/* and its private key (PEM) */
	/* Server side: names (CN or DNS/IP SAN) of clients let in; NULL-ended.
	 * NULL: any client with a certificate from the CA. */
	const char *const *allowed_clients;
	int handshake_timeout_ms;	/* default 10000 */
};

struct xport_tls_ctx;

struct xport_tls_ctx *xport_tls_ctx_new(const struct xport_tls_config *cfg, bool server,
					char *err, size_t errlen);
void xport_tls_ctx_free(struct xport_tls_ctx *ctx);

/* Run the handshake on a connected socket; the channel owns fd after it
 * returns, even on failure (then closed). host: what the client dialled. */
struct xport *xport_tls_client(struct xport_tls_ctx *ctx, int fd, const char *host,
			       int io_timeout_ms, char *err, size_t errlen);
struct xport *xport_tls_server(struct xport_tls_ctx *ctx, int fd, int io_timeout_ms,
			       char *err, size_t errlen);

/* The authenticated peer's name (its certificate's CN), "" if none. */
const char *xport_tls_peer_name(const struct xport *x);

#endif
