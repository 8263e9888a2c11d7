/*
 * Channel throughput over loopback TCP: plain TCP against TLS 1.3 (the
 * same socket options, the same 4 MiB sends a page batch makes), best and
 * median of BENCH_REPEAT runs of BENCH_TRANSPORT_MIB (default 1024) MiB.
 * One JSON line per transport, with TLS as a share of plain TCP.
 */
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "certs.h"
#include "timing.h"
#include "tls.h"

#define CHUNK	(4u << 20)

struct peer {
	int listen_fd;
	struct xport_tls_ctx *tls;
	size_t total;
	int ret;
};

static void *receiver(void *arg)
{
	struct peer *p = arg;
	int fd = accept(p->listen_fd, NULL, NULL);
	char err[512];
	struct xport *x = p->tls ? xport_tls_server(p->tls, fd, 10000, err, sizeof(err)) :
				   xport_tcp_from_fd(fd, 10000);
	uint8_t *buf = malloc(CHUNK);
	size_t got = 0;

	p->ret = x ? 0 : -1;
	while (x && got < p->total) {
		long n = xport_recv(x, buf, CHUNK);

		if (n <= 0) {
			p->ret = -1;
			break;
		}
		got += (size_t)n;
	}
	xport_close(x);
	free(buf);
	return NULL;
}

static double run(struct xport_tls_ctx *server, struct xport_tls_ctx *client, size_t total)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t sl = sizeof(sa);
	struct peer p = { .tls = server, .total = total };
	uint8_t *buf = malloc(CHUNK);
	char err[512], port[16];
	struct xport *x;
	pthread_t t;
	double t0, dt;

	p.listen_fd = xport_tcp_listen("127.0.0.1", "0", err, sizeof(err));
	getsockname(p.listen_fd, (struct sockaddr *)&sa, &sl);
	snprintf(port, sizeof(port), "%u", ntohs(sa.sin_port));
	for (size_t i = 0; i < CHUNK; i++)
		buf[i] = (uint8_t)(i * 131 + (i >> 12));
	pthread_create(&t, NULL, receiver, &p);
	t0 = tm_now();
	x = xport_tcp_connect("127.0.0.1", port, 5000, 10000, err, sizeof(err));
	if (x && client) {
		int fd = dup(xport_fd(x));

		xport_close(x);
		x = xport_tls_client(client, fd, "localhost", 10000, err, sizeof(err));
	}
	for (size_t sent = 0; x && sent < total; sent += CHUNK)
		if (xport_send(x, buf, CHUNK))
			break;
	pthread_join(t, NULL);
	dt = tm_now() - t0;
	xport_close(x);
	close(p.listen_fd);
	free(buf);
	if (!x || p.ret) {
		fprintf(stderr, "bench_transport: %s failed: %s\n", client ? "tls" : "tcp", err);
		exit(1);
	}
	return total / dt / 1e9;
}

int main(void)
{
	size_t mib = getenv("BENCH_TRANSPORT_MIB") ? strtoul(getenv("BENCH_TRANSPORT_MIB"), NULL, 0) : 1024;
	int reps = getenv("BENCH_REPEAT") ? atoi(getenv("BENCH_REPEAT")) : 5;
	char dir[] = "/tmp/vmigrate-bench-XXXXXX";
	struct cert_paths ca, srv, cli;
	struct xport_tls_ctx *sctx, *cctx;
	double tcp[16], tls[16];
	char err[512];

	if (reps < 1 || reps > 16 || !mkdtemp(dir))
		return 1;
	signal(SIGPIPE, SIG_IGN);
	if (certs_make_ca(dir, "ca", &ca) || certs_make_leaf(dir, "srv", &ca, "localhost",
							      "localhost", -60, 3600, &srv) ||
	    certs_make_leaf(dir, "cli", &ca, "client", "client", -60, 3600, &cli))
		return 1;
	sctx = xport_tls_ctx_new(&(struct xport_tls_config){ .ca_file = ca.cert,
		.cert_file = srv.cert, .key_file = srv.key }, true, err, sizeof(err));
	cctx = xport_tls_ctx_new(&(struct xport_tls_config){ .ca_file = ca.cert,
		.cert_file = cli.cert, .key_file = cli.key }, false, err, sizeof(err));
	if (!sctx || !cctx) {
		fprintf(stderr, "bench_transport: %s\n", err);
		return 1;
	}
	printf("# transport benchmark: %zu MiB over loopback, one stream, best of %d\n", mib, reps);
	for (int i = 0; i < reps; i++) {
		tcp[i] = run(NULL, NULL, mib << 20);
		tls[i] = run(sctx, cctx, mib << 20);
	}
	qsort(tcp, reps, sizeof(double), tm_cmp_double);
	qsort(tls, reps, sizeof(double), tm_cmp_double);
	printf("{\"bench\":\"transport\",\"kind\":\"tcp\",\"gbs_best\":%.2f,\"gbs_median\":%.2f}\n",
	       tcp[reps - 1], tcp[reps / 2]);
	printf("{\"bench\":\"transport\",\"kind\":\"tls13\",\"cipher_default\":true,"
	       "\"gbs_best\":%.2f,\"gbs_median\":%.2f,\"share_of_tcp\":%.2f}\n",
	       tls[reps - 1], tls[reps / 2], tls[reps / 2] / tcp[reps / 2]);
	xport_tls_ctx_free(sctx);
	xport_tls_ctx_free(cctx);
	{
		char cmd[128];

		snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
		if (system(cmd))
			fprintf(stderr, "bench_transport: could not remove %s\n", dir);
	}
	return 0;
}
