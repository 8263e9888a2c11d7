/*
 * RDMA channels. Where a device exists (soft-RoCE or hardware) a loopback
 * connection carries data intact both ways; where none does, those tests
 * skip, saying so, and the refusal paths still run: connecting and
 * listening fail at once with an error that names the reason.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include "harness.h"
#include "rdma.h"
#include "testdata.h"

TEST(connect_without_a_device_fails_clearly)
{
	char why[256], err[512] = "";
	struct xport *x;

	if (xport_rdma_available(why, sizeof(why)))
		SKIP("an RDMA device is present: the no-device path does not apply");
	CHECK(strstr(why, "no RDMA device"));
	x = xport_rdma_connect("127.0.0.1", "7999", 1000, err, sizeof(err));
	CHECK(!x);
	CHECK_MSG(strstr(err, "no RDMA device"), "error: %s", err);
	CHECK(!xport_rdma_listen("127.0.0.1", "0", NULL, err, sizeof(err)));
	CHECK_MSG(strstr(err, "no RDMA device"), "error: %s", err);
}

struct server {
	struct xport_rdma_listener *l;
	size_t len;
	int ret;
	char err[512];
};

static void *echo_server(void *arg)
{
	struct server *s = arg;
	struct xport *x = xport_rdma_accept(s->l, 5000, s->err, sizeof(s->err));
	uint8_t *buf = malloc(s->len);

	s->ret = -1;
	if (x && !xport_recv_exact(x, buf, s->len) && !xport_send(x, buf, s->len))
		s->ret = 0;
	xport_close(x);
	free(buf);
	return NULL;
}

TEST(loopback_connection_carries_data_both_ways)
{
	char why[256], err[512], port[16];
	struct server s = { .len = 32 << 20 };
	uint8_t *out = malloc(s.len), *in = malloc(s.len);
	struct xport *x;
	pthread_t t;
	int bound = 0;

	if (!xport_rdma_available(why, sizeof(why)))
		SKIP("%s: the RDMA data path is untested on this machine", why);
	s.l = xport_rdma_listen("127.0.0.1", "0", &bound, err, sizeof(err));
	CHECK_MSG(s.l, "listen: %s", err);
	snprintf(port, sizeof(port), "%d", bound);
	pthread_create(&t, NULL, echo_server, &s);
	x = xport_rdma_connect("127.0.0.1", port, 5000, err, sizeof(err));
	CHECK_MSG(x, "connect: %s", err);
	td_fill(out, s.len, MIX_RANDOM, 9);
	CHECK_EQ(xport_send(x, out, s.len), 0);
	CHECK_EQ(xport_recv_exact(x, in, s.len), 0);
	pthread_join(t, NULL);
	CHECK_MSG(s.ret == 0, "server: %s", s.err);
	CHECK(!memcmp(in, out, s.len));
	xport_close(x);
	xport_rdma_listener_free(s.l);
	free(out);
	free(in);
}
