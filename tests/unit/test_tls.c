/*
 * TLS channels: mutual authentication works and carries data intact; an
 * unknown CA, an expired certificate, a wrong name, a client without a
 * certificate or not on the allow-list, a plaintext peer and a stalled
 * handshake are each refused with a clear error.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "certs.h"
#include "harness.h"
#include "testdata.h"
#include "tls.h"

#include <openssl/ssl.h>

struct pki {
	struct cert_paths ca, other_ca, server, client, expired, stranger, untrusted;
};

static void make_pki(struct pki *p)
{
	const char *d = test_tmpdir();

	CHECK(certs_make_ca(d, "ca", &p->ca) == 0);
	CHECK(certs_make_ca(d, "other-ca", &p->other_ca) == 0);
	CHECK(certs_make_leaf(d, "server", &p->ca, "hostb", "hostb", -60, 3600, &p->server) == 0);
	CHECK(certs_make_leaf(d, "client", &p->ca, "hosta", "hosta", -60, 3600, &p->client) == 0);
	CHECK(certs_make_leaf(d, "expired", &p->ca, "hostb", "hostb", -7200, -3600, &p->expired) == 0);
	CHECK(certs_make_leaf(d, "stranger", &p->ca, "hostz", "hostz", -60, 3600, &p->stranger) == 0);
	CHECK(certs_make_leaf(d, "untrusted", &p->other_ca, "hostb", "hostb", -60, 3600,
			      &p->untrusted) == 0);
}

struct side {
	struct xport_tls_ctx *ctx;
	int fd;
	const char *host;
	struct xport *x;
	char err[512];
	pthread_t thread;
};

static void *server_main(void *arg)
{
	struct side *s = arg;

	s->x = xport_tls_server(s->ctx, s->fd, 5000, s->err, sizeof(s->err));
	return NULL;
}

static struct xport_tls_ctx *ctx_for(const struct cert_paths *ca, const struct cert_paths *me,
				     bool server, const char *const *allow, int timeout_ms)
{
	struct xport_tls_config cfg = {
		.ca_file = ca->cert, .cert_file = me->cert, .key_file = me->key,
		.allowed_clients = allow, .handshake_timeout_ms = timeout_ms,
	};
	char err[512];
	struct xport_tls_ctx *ctx = xport_tls_ctx_new(&cfg, server, err, sizeof(err));

	CHECK_MSG(ctx, "context: %s", err);
	return ctx;
}

/* Handshake client (dialling host) against server; both results kept. */
static void pair(struct side *srv, struct side *cli)
{
	int sv[2];

	CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
	srv->fd = sv[0];
	cli->fd = sv[1];
	CHECK(pthread_create(&srv->thread, NULL, server_main, srv) == 0);
	cli->x = xport_tls_client(cli->ctx, cli->fd, cli->host, 5000, cli->err, sizeof(cli->err));
	if (!cli->x)
		shutdown(sv[0], SHUT_RDWR);	/* do not leave the server waiting */
	pthread_join(srv->thread, NULL);
}

static void finish(struct side *srv, struct side *cli)
{
	xport_close(srv->x);
	xport_close(cli->x);
	xport_tls_ctx_free(srv->ctx);
	xport_tls_ctx_free(cli->ctx);
}

static const char *const allow_hosta[] = { "hosta", NULL };

struct echo {
	struct xport *x;
	size_t len;
	int ret;
};

static void *echo_main(void *arg)
{
	struct echo *e = arg;
	uint8_t *buf = malloc(e->len);

	e->ret = xport_recv_exact(e->x, buf, e->len);
	if (!e->ret)
		e->ret = xport_send(e->x, buf, e->len);
	free(buf);
	return NULL;
}

TEST(mutual_authentication_carries_data_intact)
{
	struct pki p;
	struct side srv = { 0 }, cli = { .host = "hostb" };
	const size_t len = 8 << 20;
	uint8_t *out = malloc(len), *in = malloc(len);
	struct echo e;
	pthread_t t;
	struct iovec iov[3];

	make_pki(&p);
	srv.ctx = ctx_for(&p.ca, &p.server, true, allow_hosta, 0);
	cli.ctx = ctx_for(&p.ca, &p.client, false, NULL, 0);
	pair(&srv, &cli);
	CHECK_MSG(srv.x && cli.x, "server: %s / client: %s", srv.err, cli.err);
	CHECK(!strcmp(xport_tls_peer_name(srv.x), "hosta"));
	CHECK(!strcmp(xport_tls_peer_name(cli.x), "hostb"));

	td_fill(out, len, MIX_RANDOM, 5);
	e = (struct echo){ srv.x, len, -1 };
	pthread_create(&t, NULL, echo_main, &e);
	/* small and large pieces, as a record writer sends them */
	iov[0] = (struct iovec){ out, 24 };
	iov[1] = (struct iovec){ out + 24, 100 };
	iov[2] = (struct iovec){ out + 124, len - 124 };
	CHECK_EQ(xport_sendv(cli.x, iov, 3), 0);
	CHECK_EQ(xport_recv_exact(cli.x, in, len), 0);
	pthread_join(t, NULL);
	CHECK_EQ(e.ret, 0);
	CHECK(!memcmp(in, out, len));
	finish(&srv, &cli);
	free(out);
	free(in);
}

static void expect_refused(struct side *srv, struct side *cli, const char *where,
			   const char *needle)
{
	const char *err = !strcmp(where, "client") ? cli->err : srv->err;

	pair(srv, cli);
	CHECK_MSG(!srv->x || !cli->x, "handshake succeeded");
	CHECK_MSG(strstr(err, needle), "%s said \"%s\", not \"%s\" (other side: \"%s\")",
		  where, err, needle, !strcmp(where, "client") ? srv->err : cli->err);
	finish(srv, cli);
}

TEST(server_from_unknown_ca_refused)
{
	struct pki p;
	struct side srv = { 0 }, cli = { .host = "hostb" };

	make_pki(&p);
	srv.ctx = ctx_for(&p.other_ca, &p.untrusted, true, NULL, 0);
	cli.ctx = ctx_for(&p.ca, &p.client, false, NULL, 0);
	expect_refused(&srv, &cli, "client", "server certificate refused");
}

TEST(expired_certificate_refused)
{
	struct pki p;
	struct side srv = { 0 }, cli = { .host = "hostb" };

	make_pki(&p);
	srv.ctx = ctx_for(&p.ca, &p.expired, true, NULL, 0);
	cli.ctx = ctx_for(&p.ca, &p.client, false, NULL, 0);
	expect_refused(&srv, &cli, "client", "certificate has expired");
}

TEST(name_mismatch_refused)
{
	struct pki p;
	struct side srv = { 0 }, cli = { .host = "hostc" };

	make_pki(&p);
	srv.ctx = ctx_for(&p.ca, &p.server, true, NULL, 0);
	cli.ctx = ctx_for(&p.ca, &p.client, false, NULL, 0);
	expect_refused(&srv, &cli, "client", "mismatch");
}

/* A client with no certificate to show: plain OpenSSL, since the channel
 * refuses to be made without one. */
static void *certless_client(void *arg)
{
	struct side *c = arg;
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	SSL *ssl;

	SSL_CTX_load_verify_locations(ctx, c->host, NULL);
	ssl = SSL_new(ctx);
	SSL_set_fd(ssl, c->fd);
	SSL_connect(ssl);
	SSL_read(ssl, c->err, 1);	/* until the server gives up */
	SSL_free(ssl);
	SSL_CTX_free(ctx);
	close(c->fd);
	return NULL;
}

TEST(client_without_certificate_refused)
{
	struct pki p;
	struct side srv = { 0 }, cli = { 0 };
	struct xport_tls_config cfg = { 0 };
	char err[512];
	int sv[2];

	make_pki(&p);
	cfg.ca_file = p.ca.cert;
	CHECK(!xport_tls_ctx_new(&cfg, false, err, sizeof(err)));	/* no cert: refused */
	CHECK_MSG(strstr(err, "needs a certificate"), "refused with \"%s\"", err);
	srv.ctx = ctx_for(&p.ca, &p.server, true, NULL, 0);
	CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
	srv.fd = sv[0];
	cli.fd = sv[1];
	cli.host = p.ca.cert;
	CHECK(pthread_create(&cli.thread, NULL, certless_client, &cli) == 0);
	server_main(&srv);
	pthread_join(cli.thread, NULL);
	CHECK(!srv.x);
	CHECK_MSG(strstr(srv.err, "peer did not return a certificate"), "server said \"%s\"",
		  srv.err);
	xport_tls_ctx_free(srv.ctx);
}

TEST(client_not_on_allow_list_refused)
{
	struct pki p;
	struct side srv = { 0 }, cli = { .host = "hostb" };

	make_pki(&p);
	srv.ctx = ctx_for(&p.ca, &p.server, true, allow_hosta, 0);
	cli.ctx = ctx_for(&p.ca, &p.stranger, false, NULL, 0);
	expect_refused(&srv, &cli, "server", "client 'hostz' is not allowed");
}

TEST(plaintext_peer_refused)
{
	struct pki p;
	struct side srv = { 0 };
	int sv[2];
	const char junk[] = "VMIGCKPT plain stream where TLS was expected\n";

	make_pki(&p);
	srv.ctx = ctx_for(&p.ca, &p.server, true, NULL, 0);
	CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
	srv.fd = sv[0];
	CHECK(write(sv[1], junk, sizeof(junk)) == sizeof(junk));
	server_main(&srv);
	CHECK(!srv.x);
	CHECK_MSG(strstr(srv.err, "TLS handshake failed: the peer speaks plain TCP "
			 "(is it --insecure?)"), "server said \"%s\"", srv.err);
	close(sv[1]);
	xport_tls_ctx_free(srv.ctx);
}

/* A TLS client whose server answers in plain text (a plain JSON line). */
TEST(plaintext_server_named_as_such)
{
	struct pki p;
	struct side cli = { .host = "hosta" };
	int sv[2];
	const char reply[] = "{\"ok\":false,\"error\":\"expected a migrate-in request\"}\n";

	make_pki(&p);
	cli.ctx = ctx_for(&p.ca, &p.client, false, NULL, 0);
	CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
	CHECK(write(sv[1], reply, sizeof(reply) - 1) == sizeof(reply) - 1);
	cli.x = xport_tls_client(cli.ctx, sv[0], cli.host, 5000, cli.err, sizeof(cli.err));
	CHECK(!cli.x);
	CHECK_MSG(strstr(cli.err, "the peer speaks plain TCP (is it --insecure?)"),
		  "client said \"%s\"", cli.err);
	close(sv[1]);
	xport_tls_ctx_free(cli.ctx);
}

TEST(stalled_handshake_times_out)
{
	struct pki p;
	struct side srv = { 0 };
	int sv[2];
	double t0;

	make_pki(&p);
	srv.ctx = ctx_for(&p.ca, &p.server, true, NULL, 300);
	CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
	srv.fd = sv[0];
	t0 = (double)time(NULL);
	server_main(&srv);		/* the peer connects and says nothing */
	CHECK(!srv.x);
	CHECK_MSG(strstr(srv.err, "TLS handshake timed out after 0.3 s"), "server said \"%s\"",
		  srv.err);
	CHECK((double)time(NULL) - t0 < 5);
	close(sv[1]);
	xport_tls_ctx_free(srv.ctx);
}
