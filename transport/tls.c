/*
 * TLS channels over OpenSSL. The socket is non-blocking and every wait is
 * a poll with a deadline, for the handshake as for reads and writes.
 * Small pieces of a send (record headers, page entries) are gathered into
 * one buffer so that a TLS record is not spent on a 24-byte header.
 */
#include "tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#define GATHER_BYTES	(64 * 1024)
#define DIRECT_MIN	(16 * 1024)	/* pieces this large go straight out */
/* Encrypted records are read and written this many bytes per syscall:
 * one read or write per 16 KiB record cost more than the cipher did. */
#define SOCKET_BUF_BYTES	(256 * 1024)

/* AES-128-GCM first: the fastest suite where the CPU has AES-NI (about
 * 1.5x AES-256 here), as strong as TLS 1.3 asks; the peer may still pick
 * another of the three. */
#define TLS13_SUITES	"TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"

struct xport_tls_ctx {
	SSL_CTX *ssl;
	bool server;
	char **allowed;			/* NULL-ended copy, or NULL */
	int handshake_timeout_ms;
};

struct tls_xport {
	struct xport x;
	SSL *ssl;
	int fd;
	int io_timeout_ms;
	char peer[256];
	uint8_t *gather;
	size_t gathered;
};

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* The reason of the last OpenSSL failure, for humans: what the operator
 * can do about the ones a wrong set-up causes, OpenSSL's words for the rest. */
static void ssl_reason(char *buf, size_t len, const char *what)
{
	unsigned long e = ERR_get_error();
	char detail[256] = "unknown error";

	if (e && ERR_GET_LIB(e) == ERR_LIB_SSL && ERR_GET_REASON(e) == SSL_R_WRONG_VERSION_NUMBER)
		snprintf(detail, sizeof(detail), "the peer speaks plain TCP (is it --insecure?)");
	else if (e && ERR_GET_LIB(e) == ERR_LIB_SSL && ERR_GET_REASON(e) == SSL_R_HTTP_REQUEST)
		snprintf(detail, sizeof(detail), "the peer speaks HTTP, not TLS");
	else if (e)
		ERR_error_string_n(e, detail, sizeof(detail));
	snprintf(buf, len, "%s: %s", what, detail);
	ERR_clear_error();
}

struct xport_tls_ctx *xport_tls_ctx_new(const struct xport_tls_config *cfg, bool server,
					char *err, size_t errlen)
{
	struct xport_tls_ctx *ctx = calloc(1, sizeof(*ctx));

	if (!ctx) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	/* OpenSSL hands these names to fopen(), which must not get NULL. */
	if (!cfg->ca_file || !cfg->cert_file || !cfg->key_file) {
		snprintf(err, errlen, "TLS needs %s", !cfg->ca_file ? "a CA file" :
			 !cfg->cert_file ? "a certificate" : "a private key");
		goto fail;
	}
	ctx->server = server;
	ctx->handshake_timeout_ms = cfg->handshake_timeout_ms > 0 ? cfg->handshake_timeout_ms : 10000;
	ctx->ssl = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
	if (!ctx->ssl) {
		ssl_reason(err, errlen, "TLS context");
		goto fail;
	}
	/* TLS 1.3 only: no downgrade, no renegotiation, forward secrecy. */
	SSL_CTX_set_min_proto_version(ctx->ssl, TLS1_3_VERSION);
	SSL_CTX_set_max_proto_version(ctx->ssl, TLS1_3_VERSION);
	SSL_CTX_set_mode(ctx->ssl, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	SSL_CTX_set_ciphersuites(ctx->ssl, TLS13_SUITES);
	/* Read as many records per syscall as the buffer holds. */
	SSL_CTX_set_read_ahead(ctx->ssl, 1);
	SSL_CTX_set_default_read_buffer_len(ctx->ssl, SOCKET_BUF_BYTES);
	SSL_CTX_set_num_tickets(ctx->ssl, 0);
	/* A peer that closes without close_notify ends the stream like EOF
	 * (our records carry their own integrity); the channel stays usable
	 * for sending the reason of a failure. */
	SSL_CTX_set_options(ctx->ssl, SSL_OP_IGNORE_UNEXPECTED_EOF);
	SSL_CTX_set_session_cache_mode(ctx->ssl, SSL_SESS_CACHE_OFF);
	if (SSL_CTX_load_verify_locations(ctx->ssl, cfg->ca_file, NULL) != 1) {
		ssl_reason(err, errlen, cfg->ca_file);
		goto fail;
	}
	if (SSL_CTX_use_certificate_chain_file(ctx->ssl, cfg->cert_file) != 1) {
		ssl_reason(err, errlen, cfg->cert_file);
		goto fail;
	}
	if (SSL_CTX_use_PrivateKey_file(ctx->ssl, cfg->key_file, SSL_FILETYPE_PEM) != 1 ||
	    SSL_CTX_check_private_key(ctx->ssl) != 1) {
		ssl_reason(err, errlen, cfg->key_file);
		goto fail;
	}
	SSL_CTX_set_verify(ctx->ssl, SSL_VERIFY_PEER |
			   (server ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0), NULL);
	if (cfg->allowed_clients) {
		size_t n = 0;

		while (cfg->allowed_clients[n])
			n++;
		ctx->allowed = calloc(n + 1, sizeof(char *));
		for (size_t i = 0; ctx->allowed && i < n; i++)
			ctx->allowed[i] = strdup(cfg->allowed_clients[i]);
	}
	return ctx;
fail:
	xport_tls_ctx_free(ctx);
	return NULL;
}

void xport_tls_ctx_free(struct xport_tls_ctx *ctx)
{
	if (!ctx)
		return;
	for (size_t i = 0; ctx->allowed && ctx->allowed[i]; i++)
		free(ctx->allowed[i]);
	free(ctx->allowed);
	SSL_CTX_free(ctx->ssl);
	free(ctx);
}

/* Wait for what OpenSSL asked for, up to the deadline (0: none). */
static int wait_ssl(struct tls_xport *t, int ssl_err, double deadline)
{
	struct pollfd p = { .fd = t->fd };
	double left = deadline > 0 ? deadline - now_ms() : -1;
	int n;

	if (ssl_err == SSL_ERROR_WANT_READ)
		p.events = POLLIN;
	else if (ssl_err == SSL_ERROR_WANT_WRITE)
		p.events = POLLOUT;
	else
		return -EPROTO;
	if (deadline > 0 && left <= 0)
		return -ETIMEDOUT;
	do {
		n = poll(&p, 1, deadline > 0 ? (int)left + 1 : -1);
	} while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	return n ? 0 : -ETIMEDOUT;
}

static double io_deadline(const struct tls_xport *t)
{
	return t->io_timeout_ms > 0 ? now_ms() + t->io_timeout_ms : 0;
}

static int write_all(struct tls_xport *t, const void *buf, size_t len)
{
	const uint8_t *p = buf;
	double deadline = io_deadline(t);

	while (len) {
		size_t done = 0;
		int ret;

		if (SSL_write_ex(t->ssl, p, len, &done) == 1) {
			p += done;
			len -= done;
			deadline = io_deadline(t);
			continue;
		}
		ret = SSL_get_error(t->ssl, 0);
		if (ret == SSL_ERROR_SYSCALL || ret == SSL_ERROR_SSL) {
			ERR_clear_error();
			return errno ? -errno : -EPIPE;
		}
		ret = wait_ssl(t, ret, deadline);
		if (ret)
			return ret;
	}
	return 0;
}

static int flush_gather(struct tls_xport *t)
{
	int ret = t->gathered ? write_all(t, t->gather, t->gathered) : 0;

	t->gathered = 0;
	return ret;
}

/* Push the records the write buffer holds out to the socket. */
static int flush_socket(struct tls_xport *t)
{
	BIO *wbio = SSL_get_wbio(t->ssl);
	double deadline = io_deadline(t);

	while (BIO_flush(wbio) <= 0) {
		int ret;

		if (!BIO_should_retry(wbio))
			return errno ? -errno : -EPIPE;
		ret = wait_ssl(t, SSL_ERROR_WANT_WRITE, deadline);
		if (ret)
			return ret;
	}
	return 0;
}

static int tls_sendv(struct xport *x, const struct iovec *iov, int iovcnt)
{
	struct tls_xport *t = (struct tls_xport *)x;
	int ret;

	for (int i = 0; i < iovcnt; i++) {
		const uint8_t *p = iov[i].iov_base;
		size_t len = iov[i].iov_len;

		if (len >= DIRECT_MIN) {
			ret = flush_gather(t);
			if (!ret)
				ret = write_all(t, p, len);
			if (ret)
				return ret;
			continue;
		}
		if (t->gathered + len > GATHER_BYTES && (ret = flush_gather(t)))
			return ret;
		memcpy(t->gather + t->gathered, p, len);
		t->gathered += len;
	}
	ret = flush_gather(t);
	return ret ? ret : flush_socket(t);
}

static long tls_recv(struct xport *x, void *buf, size_t len)
{
	struct tls_xport *t = (struct tls_xport *)x;
	uint8_t *p = buf;
	size_t got = 0;
	double deadline = x->idle_ok ? 0 : io_deadline(t);

	while (got < len) {
		size_t n = 0;
		int ret;

		if (SSL_read_ex(t->ssl, p + got, len - got, &n) == 1) {
			got += n;
			deadline = x->idle_ok ? 0 : io_deadline(t);
			continue;
		}
		ret = SSL_get_error(t->ssl, 0);
		if (ret == SSL_ERROR_ZERO_RETURN)
			break;		/* the peer closed cleanly */
		if (ret == SSL_ERROR_SYSCALL && !ERR_peek_error() && errno == 0)
			break;		/* closed without close_notify */
		if (ret == SSL_ERROR_SYSCALL || ret == SSL_ERROR_SSL) {
			ERR_clear_error();
			return -EPROTO;
		}
		ret = wait_ssl(t, ret, deadline);
		if (ret)
			return ret;
	}
	return (long)got;
}

static int tls_poll_in(struct xport *x, int timeout_ms)
{
	struct tls_xport *t = (struct tls_xport *)x;
	struct pollfd p = { .fd = t->fd, .events = POLLIN };
	int n;

	if (SSL_has_pending(t->ssl))	/* records already read ahead */
		return 1;
	do {
		n = poll(&p, 1, timeout_ms);
	} while (n < 0 && errno == EINTR);
	return n < 0 ? -errno : n > 0;
}

static void tls_close(struct xport *x)
{
	struct tls_xport *t = (struct tls_xport *)x;

	if (t->ssl) {
		SSL_shutdown(t->ssl);	/* best effort: the socket is non-blocking */
		BIO_flush(SSL_get_wbio(t->ssl));
		SSL_free(t->ssl);
	}
	close(t->fd);
	free(t->gather);
	free(t);
}

static int tls_fd(const struct xport *x)
{
	return ((const struct tls_xport *)x)->fd;
}

static const struct xport_ops tls_ops = {
	.name = "tls",
	.sendv = tls_sendv,
	.recv = tls_recv,
	.poll_in = tls_poll_in,
	.fd = tls_fd,
	.close = tls_close,
};

const char *xport_tls_peer_name(const struct xport *x)
{
	return x->ops == &tls_ops ? ((const struct tls_xport *)x)->peer : "";
}

static bool allowed(const struct xport_tls_ctx *ctx, X509 *peer, const char *cn)
{
	if (!ctx->allowed)
		return true;
	for (size_t i = 0; ctx->allowed[i]; i++) {
		const char *name = ctx->allowed[i];
		unsigned char ip[16];

		if (!strcmp(name, cn))
			return true;
		if ((inet_pton(AF_INET, name, ip) == 1 || inet_pton(AF_INET6, name, ip) == 1) ?
		    X509_check_ip_asc(peer, name, 0) == 1 : X509_check_host(peer, name, 0, 0, NULL) == 1)
			return true;
	}
	return false;
}

/* Whether this kernel offers TLS in the kernel (the "tls" upper layer). */
static bool ktls_offered(void)
{
	static int offered = -1;

	if (offered < 0) {
		char ulps[256] = "";
		FILE *f = fopen("/proc/sys/net/ipv4/tcp_available_ulp", "r");

		if (f) {
			if (!fgets(ulps, sizeof(ulps), f))
				ulps[0] = 0;
			fclose(f);
		}
		offered = 0;
		for (char *w = strtok(ulps, " \n"); w; w = strtok(NULL, " \n"))
			offered |= !strcmp(w, "tls");
	}
	return offered;
}

/*
 * Records are read straight from the socket (with read-ahead) but written
 * through a buffer, so a batch of records leaves in one syscall; every send
 * ends with a flush. Where the kernel does TLS itself, OpenSSL hands it the
 * keys after the handshake (SSL_OP_ENABLE_KTLS) and the kernel encrypts on
 * its way to the wire, with no copy of ours: that needs the socket itself
 * as the BIO, no buffer. OpenSSL falls back to doing it in user space where
 * the kernel refuses a cipher.
 */
static int attach_socket(SSL *ssl, int fd)
{
	BIO *sock = BIO_new_socket(fd, BIO_NOCLOSE);
	BIO *buffered = ktls_offered() ? NULL : BIO_new(BIO_f_buffer());

	if (sock && ktls_offered()) {
		SSL_set_options(ssl, SSL_OP_ENABLE_KTLS);
		SSL_set_bio(ssl, sock, sock);	/* one reference, both directions */
		return 0;
	}
	if (!sock || !buffered || BIO_set_write_buffer_size(buffered, SOCKET_BUF_BYTES) != 1) {
		BIO_free(sock);
		BIO_free(buffered);
		return -ENOMEM;
	}
	BIO_up_ref(sock);		/* one reference each for reading and writing */
	BIO_push(buffered, sock);
	SSL_set_bio(ssl, sock, buffered);
	return 0;
}

static struct xport *handshake(struct xport_tls_ctx *ctx, int fd, const char *host,
			       int io_timeout_ms, char *err, size_t errlen)
{
	struct tls_xport *t = calloc(1, sizeof(*t));
	double deadline = now_ms() + ctx->handshake_timeout_ms;
	X509 *peer;

	if (!t || !(t->gather = malloc(GATHER_BYTES)) || !(t->ssl = SSL_new(ctx->ssl))) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	t->x.ops = &tls_ops;
	t->fd = fd;
	t->io_timeout_ms = io_timeout_ms;
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
	xport_tcp_tune(fd, io_timeout_ms);
	if (attach_socket(t->ssl, fd)) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	if (!ctx->server) {
		unsigned char ip[16];

		if (inet_pton(AF_INET, host, ip) == 1 || inet_pton(AF_INET6, host, ip) == 1) {
			X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(t->ssl), host);
		} else {
			SSL_set_tlsext_host_name(t->ssl, host);
			SSL_set1_host(t->ssl, host);
		}
	}
	for (;;) {
		int ret = ctx->server ? SSL_accept(t->ssl) : SSL_connect(t->ssl);
		int e;

		if (ret == 1)
			break;
		e = SSL_get_error(t->ssl, ret);
		if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
			if (wait_ssl(t, e, deadline)) {
				snprintf(err, errlen, "TLS handshake timed out after %.1f s",
					 ctx->handshake_timeout_ms / 1e3);
				goto fail;
			}
			continue;
		}
		if (SSL_get_verify_result(t->ssl) != X509_V_OK) {
			snprintf(err, errlen, "TLS: %s certificate refused: %s",
				 ctx->server ? "client" : "server",
				 X509_verify_cert_error_string(SSL_get_verify_result(t->ssl)));
			ERR_clear_error();
		} else {
			ssl_reason(err, errlen, "TLS handshake failed");
		}
		goto fail;
	}
	peer = SSL_get0_peer_certificate(t->ssl);
	if (peer)
		X509_NAME_get_text_by_NID(X509_get_subject_name(peer), NID_commonName,
					  t->peer, sizeof(t->peer));
	if (ctx->server && (!peer || !allowed(ctx, peer, t->peer))) {
		snprintf(err, errlen, "TLS: client '%s' is not allowed here", t->peer);
		goto fail;
	}
	return &t->x;
fail:
	if (t) {
		if (t->ssl)
			SSL_free(t->ssl);
		free(t->gather);
		free(t);
	}
	close(fd);
	return NULL;
}

struct xport *xport_tls_client(struct xport_tls_ctx *ctx, int fd, const char *host,
			       int io_timeout_ms, char *err, size_t errlen)
{
	return handshake(ctx, fd, host, io_timeout_ms, err, errlen);
}

struct xport *xport_tls_server(struct xport_tls_ctx *ctx, int fd, int io_timeout_ms,
			       char *err, size_t errlen)
{
	return handshake(ctx, fd, NULL, io_timeout_ms, err, errlen);
}
