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
#include "rdma_plan.h"
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

/* A loopback connection to an echo server on its own thread; skips, saying
 * what is untested, where there is no device. */
static struct xport *connect_to_echo(struct server *s, pthread_t *t, const char *what)
{
	char why[256], err[512], port[16];
	struct xport *x;
	int bound = 0;

	if (!xport_rdma_available(why, sizeof(why)))
		SKIP("%s: %s is untested on this machine", why, what);
	s->l = xport_rdma_listen("127.0.0.1", "0", &bound, err, sizeof(err));
	CHECK_MSG(s->l, "listen: %s", err);
	snprintf(port, sizeof(port), "%d", bound);
	pthread_create(t, NULL, echo_server, s);
	x = xport_rdma_connect("127.0.0.1", port, 5000, err, sizeof(err));
	CHECK_MSG(x, "connect: %s", err);
	return x;
}

TEST(loopback_connection_carries_data_both_ways)
{
	struct server s = { .len = 32 << 20 };
	uint8_t *out = malloc(s.len), *in = malloc(s.len);
	pthread_t t;
	struct xport *x = connect_to_echo(&s, &t, "the RDMA data path");

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

/* Zero-copy sends where a device exists: records sent from registered
 * buffers, mixed with small copied pieces, arrive byte-exact. */
TEST(registered_buffers_go_out_intact)
{
	const size_t data_len = 4 << 20;
	struct server s = { .len = 16 * (32 + data_len) };
	uint8_t *data = malloc(data_len), *in = malloc(s.len), *expect = malloc(s.len);
	pthread_t t;
	struct xport *x = connect_to_echo(&s, &t, "the zero-copy send path");

	CHECK_EQ(xport_register_mem(x, data, data_len), 0);
	for (int i = 0; i < 16; i++) {
		uint8_t hdr[32];
		struct iovec iov[2] = { { hdr, sizeof(hdr) }, { data, data_len } };

		memset(hdr, i, sizeof(hdr));
		/* the buffer is rewritten after each send, as a writer does */
		td_fill(data, data_len, MIX_TEXT, 100 + i);
		memcpy(expect + i * (32 + data_len), hdr, 32);
		memcpy(expect + i * (32 + data_len) + 32, data, data_len);
		CHECK_EQ(xport_sendv(x, iov, 2), 0);
	}
	CHECK_EQ(xport_recv_exact(x, in, s.len), 0);
	pthread_join(t, NULL);
	CHECK_MSG(s.ret == 0, "server: %s", s.err);
	CHECK(!memcmp(in, expect, s.len));
	xport_unregister_mem(x, data);
	xport_close(x);
	xport_rdma_listener_free(s.l);
	free(data);
	free(in);
	free(expect);
}

/* ---- the send planner: runs everywhere, no device needed ------------------ */

#define SEND_BYTES	(256 * 1024)

/* Plan iov and check every SEND's limits; rebuilds the stream into out and
 * returns the bytes that were copied rather than sent direct. */
static size_t plan_all(const struct iovec *iov, int n, const struct rdma_region *reg,
		       unsigned nreg, unsigned max_sge, uint8_t *out, unsigned *sends)
{
	struct rdma_planner pl;
	struct rdma_send_plan plan;
	size_t copied = 0, at = 0;

	*sends = 0;
	rdma_planner_init(&pl, iov, n, reg, nreg, SEND_BYTES, max_sge);
	while (rdma_plan_next(&pl, &plan)) {
		uint32_t bytes = 0;
		unsigned sges = 0;

		for (unsigned i = 0; i < plan.n; i++) {
			const struct rdma_piece *pc = &plan.piece[i];

			if (pc->region >= 0)
				CHECK(rdma_region_find(reg, nreg, pc->p, pc->len) == pc->region);
			else
				copied += pc->len;
			sges += pc->region >= 0 || i == 0 || plan.piece[i - 1].region >= 0;
			memcpy(out + at, pc->p, pc->len);
			at += pc->len;
			bytes += pc->len;
		}
		CHECK_EQ(bytes, plan.bytes);
		CHECK(bytes > 0 && bytes <= SEND_BYTES);
		CHECK_EQ(sges, plan.sges);
		CHECK(sges <= max_sge);
		(*sends)++;
	}
	return copied;
}

TEST(planner_sends_a_record_from_registered_buffers_without_copies)
{
	static uint8_t entries[32 * 1024], data[4 << 20], out[32 + sizeof(entries) + sizeof(data)];
	uint8_t hdr[24] = "record header", head[8] = "pages";
	struct iovec iov[4] = { { hdr, 24 }, { head, 8 }, { entries, sizeof(entries) },
				{ data, sizeof(data) } };
	struct rdma_region reg[2] = { { entries, sizeof(entries) }, { data, sizeof(data) } };
	unsigned sends;
	size_t copied;

	td_fill(entries, sizeof(entries), MIX_RANDOM, 1);
	td_fill(data, sizeof(data), MIX_TEXT, 2);
	copied = plan_all(iov, 4, reg, 2, 4, out, &sends);
	CHECK_EQ(copied, 32);		/* only the two small headers */
	CHECK_EQ(sends, (32 + sizeof(entries) + sizeof(data) + SEND_BYTES - 1) / SEND_BYTES);
	CHECK(!memcmp(out, hdr, 24) && !memcmp(out + 24, head, 8));
	CHECK(!memcmp(out + 32, entries, sizeof(entries)));
	CHECK(!memcmp(out + 32 + sizeof(entries), data, sizeof(data)));

	/* unregistered, everything is copied */
	CHECK_EQ(plan_all(iov, 4, reg, 0, 4, out, &sends), sizeof(out));
	CHECK(!memcmp(out + 32 + sizeof(entries), data, sizeof(data)));
}

TEST(planner_keeps_order_and_limits_for_any_mix)
{
	static uint8_t pool[1 << 20], out[64 << 20];
	struct rdma_region reg[2] = { { pool, sizeof(pool) / 2 },
				      { pool + sizeof(pool) / 2, sizeof(pool) / 4 } };
	uint64_t rng = 7;

	td_fill(pool, sizeof(pool), MIX_RANDOM, 3);
	for (int round = 0; round < 200; round++) {
		struct iovec iov[40];
		int n = 1 + (int)(td_rand(&rng) % 40);
		unsigned max_sge = 1 + (unsigned)(td_rand(&rng) % RDMA_PLAN_MAX_SGE), sends;
		size_t total = 0, at = 0;

		for (int i = 0; i < n; i++) {
			size_t len = td_rand(&rng) % 4 ? td_rand(&rng) % 300 : td_rand(&rng) % (300 << 10);
			size_t off = td_rand(&rng) % (sizeof(pool) - len);

			iov[i] = (struct iovec){ pool + off, len };
			total += len;
		}
		plan_all(iov, n, reg, 2, max_sge, out, &sends);
		for (int i = 0; i < n; i++) {
			CHECK_MSG(!memcmp(out + at, iov[i].iov_base, iov[i].iov_len),
				  "round %d: piece %d out of order", round, i);
			at += iov[i].iov_len;
		}
		CHECK_EQ(at, total);
	}
}
