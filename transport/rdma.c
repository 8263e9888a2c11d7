/*
 * RDMA channels. Each side registers one memory area holding SLOTS receive
 * buffers and SLOTS send buffers and keeps SLOTS receives posted. A SEND
 * carries up to SLOT_BYTES of the byte stream; its immediate value returns
 * credits (receive buffers the sender has posted again). A side sends data
 * only while it holds more than one credit: the last one is kept for a
 * credit-only message, so the two sides can never both wait for credits.
 *
 *   sender                                 receiver
 *   credits = SLOTS (peer's posted recvs)
 *   SEND(data, imm = credits owed) ------>  copy out, repost, owed++
 *                         <--------------   SEND(0 bytes, imm = owed) when owed >= SLOTS/2
 *
 * Waits go through the completion channel and the CM event channel with a
 * poll deadline, like the other transports.
 *
 * Sending: small pieces are copied into the send slot; large pieces that
 * lie in memory the caller registered (xport_register_mem: a writer's batch
 * buffers) go straight from there as extra SGEs of the same SEND, without a
 * copy (rdma_plan.c cuts the stream). sendv returns only once such SENDs
 * completed, because the caller reuses the buffer at once. Receiving copies
 * out of the slots. Guest RAM itself is not sent from: a page's record
 * carries a checksum, and a running guest could change the page between the
 * checksum and the DMA; the writer's copy is what makes the two agree.
 */
#include "rdma.h"
#include "rdma_plan.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <infiniband/verbs.h>
#include <rdma/rdma_cma.h>

#define SLOTS		16
#define SLOT_BYTES	(256 * 1024)
#define WR_DIRECT	(1u << 16)	/* in a SEND's wr_id: it reads caller memory */

struct rdma_xport {
	struct xport x;
	struct rdma_event_channel *ec;
	struct rdma_cm_id *id;
	struct ibv_pd *pd;
	struct ibv_comp_channel *cc;
	struct ibv_cq *cq;
	struct ibv_mr *mr;
	uint8_t *area;			/* SLOTS recv slots, then SLOTS send slots */
	int timeout_ms;
	unsigned credits;		/* sends the peer can take now */
	unsigned owed;			/* receives posted again, not yet told */
	bool send_busy[SLOTS];
	unsigned max_sge;		/* per SEND, as the device allows */
	unsigned direct_inflight;	/* SENDs reading caller memory */
	struct rdma_region regions[RDMA_PLAN_MAX_REGIONS];
	struct ibv_mr *region_mr[RDMA_PLAN_MAX_REGIONS];
	unsigned nr_regions;
	/* received slots, in arrival order, with what is left of the first */
	unsigned ready[SLOTS];
	uint32_t ready_len[SLOTS];
	unsigned ready_head, ready_count;
	uint32_t consumed;		/* of ready[ready_head] */
	bool peer_gone;
};

struct xport_rdma_listener {
	struct rdma_event_channel *ec;
	struct rdma_cm_id *id;
};

bool xport_rdma_available(char *why, size_t len)
{
	int n = 0;
	struct ibv_device **list = ibv_get_device_list(&n);

	if (list)
		ibv_free_device_list(list);
	if (!list || n == 0) {
		snprintf(why, len, "no RDMA device (ibv_get_device_list found none)");
		return false;
	}
	return true;
}

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* The next CM event of the wanted type, within timeout_ms. */
static int wait_cm(struct rdma_event_channel *ec, enum rdma_cm_event_type want,
		   int timeout_ms, struct rdma_cm_id **new_id, char *err, size_t errlen)
{
	double deadline = now_ms() + timeout_ms;

	for (;;) {
		struct pollfd p = { .fd = ec->fd, .events = POLLIN };
		struct rdma_cm_event *ev;
		enum rdma_cm_event_type got;
		int left = (int)(deadline - now_ms());

		if (left <= 0 || poll(&p, 1, left) <= 0) {
			snprintf(err, errlen, "RDMA: timed out waiting for %s", rdma_event_str(want));
			return -ETIMEDOUT;
		}
		if (rdma_get_cm_event(ec, &ev)) {
			if (errno == EAGAIN)
				continue;
			snprintf(err, errlen, "RDMA: %s", strerror(errno));
			return -errno;
		}
		got = ev->event;
		if (new_id)
			*new_id = ev->id;
		rdma_ack_cm_event(ev);
		if (got == want)
			return 0;
		snprintf(err, errlen, "RDMA: %s while waiting for %s", rdma_event_str(got),
			 rdma_event_str(want));
		return -ECONNREFUSED;
	}
}

static uint8_t *recv_slot(struct rdma_xport *t, unsigned i)
{
	return t->area + (size_t)i * SLOT_BYTES;
}

static uint8_t *send_slot(struct rdma_xport *t, unsigned i)
{
	return t->area + (size_t)(SLOTS + i) * SLOT_BYTES;
}

static int post_recv(struct rdma_xport *t, unsigned i)
{
	struct ibv_sge sge = { (uintptr_t)recv_slot(t, i), SLOT_BYTES, t->mr->lkey };
	struct ibv_recv_wr wr = { .wr_id = i, .sg_list = &sge, .num_sge = 1 }, *bad;

	return ibv_post_recv(t->id->qp, &wr, &bad) ? -errno : 0;
}

/* Queue pair, buffers and posted receives on a resolved or requested id. */
static int setup(struct rdma_xport *t, char *err, size_t errlen)
{
	struct ibv_qp_init_attr qa = { 0 };
	struct ibv_device_attr dev;
	size_t bytes = (size_t)2 * SLOTS * SLOT_BYTES;

	t->pd = ibv_alloc_pd(t->id->verbs);
	t->cc = t->pd ? ibv_create_comp_channel(t->id->verbs) : NULL;
	t->cq = t->cc ? ibv_create_cq(t->id->verbs, 4 * SLOTS, NULL, t->cc, 0) : NULL;
	if (!t->cq) {
		snprintf(err, errlen, "RDMA: protection domain or completion queue: %s",
			 strerror(errno));
		return -errno;
	}
	fcntl(t->cc->fd, F_SETFL, fcntl(t->cc->fd, F_GETFL) | O_NONBLOCK);
	qa.send_cq = t->cq;
	qa.recv_cq = t->cq;
	qa.qp_type = IBV_QPT_RC;
	qa.cap.max_send_wr = 2 * SLOTS;
	qa.cap.max_recv_wr = SLOTS;
	t->max_sge = 1;
	if (ibv_query_device(t->id->verbs, &dev) == 0 && dev.max_sge > 1)
		t->max_sge = dev.max_sge < RDMA_PLAN_MAX_SGE ? (unsigned)dev.max_sge : RDMA_PLAN_MAX_SGE;
	qa.cap.max_send_sge = t->max_sge;
	qa.cap.max_recv_sge = 1;
	if (rdma_create_qp(t->id, t->pd, &qa)) {
		snprintf(err, errlen, "RDMA: queue pair: %s", strerror(errno));
		return -errno;
	}
	t->area = aligned_alloc(4096, bytes);
	t->mr = t->area ? ibv_reg_mr(t->pd, t->area, bytes, IBV_ACCESS_LOCAL_WRITE) : NULL;
	if (!t->mr) {
		snprintf(err, errlen, "RDMA: registering %zu bytes: %s", bytes, strerror(errno));
		return -ENOMEM;
	}
	for (unsigned i = 0; i < SLOTS; i++)
		if (post_recv(t, i)) {
			snprintf(err, errlen, "RDMA: posting receives: %s", strerror(errno));
			return -errno;
		}
	t->credits = SLOTS;
	return ibv_req_notify_cq(t->cq, 0) ? -errno : 0;
}

/* Take in completions; wait for one (up to the deadline) when block. */
static int progress(struct rdma_xport *t, bool block, double deadline)
{
	struct ibv_wc wc[8];
	int n;

	for (;;) {
		n = ibv_poll_cq(t->cq, 8, wc);
		if (n < 0)
			return -EIO;
		for (int i = 0; i < n; i++) {
			if (wc[i].status != IBV_WC_SUCCESS) {
				t->peer_gone = true;	/* flushed: the connection ended */
				continue;
			}
			if (wc[i].opcode == IBV_WC_SEND) {
				if (wc[i].wr_id & WR_DIRECT)
					t->direct_inflight--;
				t->send_busy[(wc[i].wr_id & ~WR_DIRECT) - SLOTS] = false;
			} else if (wc[i].opcode == IBV_WC_RECV) {
				if (wc[i].wc_flags & IBV_WC_WITH_IMM)
					t->credits += ntohl(wc[i].imm_data);
				if (wc[i].byte_len) {
					unsigned k = (t->ready_head + t->ready_count) % SLOTS;

					t->ready[k] = (unsigned)wc[i].wr_id;
					t->ready_len[k] = wc[i].byte_len;
					t->ready_count++;
				} else if (post_recv(t, (unsigned)wc[i].wr_id) == 0) {
					t->owed++;	/* a credit-only message: slot free at once */
				}
			}
		}
		if (n > 0 || !block)
			return 0;
		if (t->peer_gone)
			return -ECONNRESET;
		{
			struct pollfd p[2] = { { t->cc->fd, POLLIN, 0 }, { t->ec->fd, POLLIN, 0 } };
			int left = deadline > 0 ? (int)(deadline - now_ms()) : -1;
			struct ibv_cq *cq;
			void *ctx;

			if (deadline > 0 && left <= 0)
				return -ETIMEDOUT;
			if (poll(p, 2, left) == 0)
				return -ETIMEDOUT;
			if (p[1].revents & POLLIN) {
				struct rdma_cm_event *ev;

				if (!rdma_get_cm_event(t->ec, &ev)) {
					if (ev->event == RDMA_CM_EVENT_DISCONNECTED)
						t->peer_gone = true;
					rdma_ack_cm_event(ev);
				}
			}
			if ((p[0].revents & POLLIN) && !ibv_get_cq_event(t->cc, &cq, &ctx)) {
				ibv_ack_cq_events(cq, 1);
				ibv_req_notify_cq(cq, 0);
			}
		}
	}
}

/* Post a SEND of the given SGEs from slot; credit-only when n == 0. */
static int post_send_sges(struct rdma_xport *t, unsigned slot, struct ibv_sge *sge, int n,
			  bool direct)
{
	struct ibv_send_wr wr = { .wr_id = SLOTS + slot + (direct ? WR_DIRECT : 0),
				  .sg_list = sge, .num_sge = n,
				  .opcode = IBV_WR_SEND_WITH_IMM,
				  .send_flags = IBV_SEND_SIGNALED }, *bad;

	wr.imm_data = htonl(t->owed);
	if (ibv_post_send(t->id->qp, &wr, &bad))
		return -errno;
	t->owed = 0;
	t->credits--;
	t->send_busy[slot] = true;
	t->direct_inflight += direct;
	return 0;
}

static int post_send(struct rdma_xport *t, unsigned slot, uint32_t len)
{
	struct ibv_sge sge = { (uintptr_t)send_slot(t, slot), len, t->mr->lkey };

	return post_send_sges(t, slot, &sge, len ? 1 : 0, false);
}

/* A free send slot, when the peer can take data (keeping one credit). */
static int acquire_slot(struct rdma_xport *t, unsigned min_credits, double deadline)
{
	for (;;) {
		int ret;

		if (t->peer_gone)
			return -ECONNRESET;
		if (t->credits >= min_credits)
			for (unsigned i = 0; i < SLOTS; i++)
				if (!t->send_busy[i])
					return (int)i;
		ret = progress(t, true, deadline);
		if (ret)
			return ret;
	}
}

/* One planned SEND: copied runs into the slot, direct pieces by reference. */
static int post_plan(struct rdma_xport *t, unsigned slot, const struct rdma_send_plan *plan)
{
	struct ibv_sge sge[RDMA_PLAN_MAX_SGE];
	uint8_t *fill = send_slot(t, slot);
	int n = 0;

	for (unsigned i = 0; i < plan->n; i++) {
		const struct rdma_piece *pc = &plan->piece[i];

		if (pc->region >= 0) {
			sge[n++] = (struct ibv_sge){ (uintptr_t)pc->p, pc->len,
						     t->region_mr[pc->region]->lkey };
			continue;
		}
		if (i == 0 || plan->piece[i - 1].region >= 0)
			sge[n++] = (struct ibv_sge){ (uintptr_t)fill, 0, t->mr->lkey };
		memcpy(fill, pc->p, pc->len);
		fill += pc->len;
		sge[n - 1].length += pc->len;
	}
	return post_send_sges(t, slot, sge, n, plan->direct);
}

static int rdma_sendv(struct xport *x, const struct iovec *iov, int iovcnt)
{
	struct rdma_xport *t = (struct rdma_xport *)x;
	double deadline = t->timeout_ms > 0 ? now_ms() + t->timeout_ms : 0;
	struct rdma_planner pl;
	struct rdma_send_plan plan;
	int ret = 0;

	rdma_planner_init(&pl, iov, iovcnt, t->regions, t->nr_regions, SLOT_BYTES, t->max_sge);
	while (!ret && rdma_plan_next(&pl, &plan)) {
		int slot = acquire_slot(t, 2, deadline);

		ret = slot < 0 ? slot : post_plan(t, (unsigned)slot, &plan);
	}
	/* The caller may overwrite what direct SENDs read once we return. */
	while (t->direct_inflight && !t->peer_gone) {
		int err = progress(t, true, deadline);

		if (err)
			return ret ? ret : err;
	}
	if (!ret && t->peer_gone)
		ret = -ECONNRESET;
	return ret;
}

static int rdma_register_mem(struct xport *x, const void *addr, size_t len)
{
	struct rdma_xport *t = (struct rdma_xport *)x;
	struct ibv_mr *mr;

	if (t->nr_regions == RDMA_PLAN_MAX_REGIONS)
		return -ENOSPC;
	/* Only ever read by the device, for SENDs: no access rights needed. */
	mr = ibv_reg_mr(t->pd, (void *)addr, len, 0);
	if (!mr)
		return -errno;
	t->regions[t->nr_regions] = (struct rdma_region){ addr, len };
	t->region_mr[t->nr_regions++] = mr;
	return 0;
}

static void rdma_unregister_mem(struct xport *x, const void *addr)
{
	struct rdma_xport *t = (struct rdma_xport *)x;

	for (unsigned i = 0; i < t->nr_regions; i++) {
		if (t->regions[i].addr != addr)
			continue;
		ibv_dereg_mr(t->region_mr[i]);
		t->nr_regions--;
		t->regions[i] = t->regions[t->nr_regions];
		t->region_mr[i] = t->region_mr[t->nr_regions];
		return;
	}
}

/* Tell the peer about receives posted again, when enough piled up. */
static int return_credits(struct rdma_xport *t)
{
	int slot;

	if (t->owed < SLOTS / 2)
		return 0;
	slot = acquire_slot(t, 1, now_ms() + (t->timeout_ms > 0 ? t->timeout_ms : 60000));
	return slot < 0 ? slot : post_send(t, (unsigned)slot, 0);
}

static long rdma_recv(struct xport *x, void *buf, size_t len)
{
	struct rdma_xport *t = (struct rdma_xport *)x;
	size_t got = 0;

	while (got < len) {
		double deadline = x->idle_ok || t->timeout_ms <= 0 ? 0 : now_ms() + t->timeout_ms;
		int ret;

		if (t->ready_count) {
			unsigned slot = t->ready[t->ready_head];
			uint32_t avail = t->ready_len[t->ready_head] - t->consumed;
			size_t n = avail < len - got ? avail : len - got;

			memcpy((uint8_t *)buf + got, recv_slot(t, slot) + t->consumed, n);
			got += n;
			t->consumed += (uint32_t)n;
			if (t->consumed == t->ready_len[t->ready_head]) {
				t->ready_head = (t->ready_head + 1) % SLOTS;
				t->ready_count--;
				t->consumed = 0;
				if (post_recv(t, slot))
					return -EIO;
				t->owed++;
				ret = return_credits(t);
				if (ret)
					return ret;
			}
			continue;
		}
		ret = progress(t, true, deadline);
		if (ret == -ECONNRESET && !t->ready_count)
			break;		/* the peer closed: end of stream */
		if (ret && ret != -ECONNRESET)
			return ret;
	}
	return (long)got;
}

static int rdma_poll_in(struct xport *x, int timeout_ms)
{
	struct rdma_xport *t = (struct rdma_xport *)x;
	int ret;

	if (t->ready_count)
		return 1;
	ret = progress(t, timeout_ms != 0, timeout_ms > 0 ? now_ms() + timeout_ms : 0);
	if (ret && ret != -ETIMEDOUT)
		return ret;
	return t->ready_count > 0;
}

static int rdma_fd(const struct xport *x)
{
	return -1;	/* no socket underneath */
}

static void rdma_close(struct xport *x)
{
	struct rdma_xport *t = (struct rdma_xport *)x;

	if (t->id) {
		rdma_disconnect(t->id);
		if (t->id->qp)
			rdma_destroy_qp(t->id);
	}
	while (t->nr_regions)
		rdma_unregister_mem(x, t->regions[0].addr);
	if (t->mr)
		ibv_dereg_mr(t->mr);
	free(t->area);
	if (t->cq)
		ibv_destroy_cq(t->cq);
	if (t->cc)
		ibv_destroy_comp_channel(t->cc);
	if (t->pd)
		ibv_dealloc_pd(t->pd);
	if (t->id)
		rdma_destroy_id(t->id);
	if (t->ec)
		rdma_destroy_event_channel(t->ec);
	free(t);
}

static const struct xport_ops rdma_ops = {
	.name = "rdma",
	.sendv = rdma_sendv,
	.recv = rdma_recv,
	.poll_in = rdma_poll_in,
	.fd = rdma_fd,
	.close = rdma_close,
	.register_mem = rdma_register_mem,
	.unregister_mem = rdma_unregister_mem,
};

static struct rdma_xport *new_xport(int timeout_ms)
{
	struct rdma_xport *t = calloc(1, sizeof(*t));

	if (!t)
		return NULL;
	t->x.ops = &rdma_ops;
	t->timeout_ms = timeout_ms;
	t->ec = rdma_create_event_channel();
	if (!t->ec) {
		free(t);
		return NULL;
	}
	fcntl(t->ec->fd, F_SETFL, fcntl(t->ec->fd, F_GETFL) | O_NONBLOCK);
	return t;
}

struct xport *xport_rdma_connect(const char *host, const char *port, int timeout_ms,
				 char *err, size_t errlen)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM }, *ai;
	struct rdma_conn_param cp = { .initiator_depth = 1, .responder_resources = 1,
				      .retry_count = 7, .rnr_retry_count = 7 };
	struct rdma_xport *t;
	int gai;

	if (!xport_rdma_available(err, errlen))
		return NULL;
	gai = getaddrinfo(host, port, &hints, &ai);
	if (gai) {
		snprintf(err, errlen, "%s:%s: %s", host, port, gai_strerror(gai));
		return NULL;
	}
	t = new_xport(timeout_ms);
	if (!t || rdma_create_id(t->ec, &t->id, NULL, RDMA_PS_TCP)) {
		snprintf(err, errlen, "RDMA: %s", strerror(errno));
		goto fail;
	}
	if (rdma_resolve_addr(t->id, NULL, ai->ai_addr, timeout_ms) ||
	    wait_cm(t->ec, RDMA_CM_EVENT_ADDR_RESOLVED, timeout_ms, NULL, err, errlen) ||
	    rdma_resolve_route(t->id, timeout_ms) ||
	    wait_cm(t->ec, RDMA_CM_EVENT_ROUTE_RESOLVED, timeout_ms, NULL, err, errlen) ||
	    setup(t, err, errlen) || rdma_connect(t->id, &cp) ||
	    wait_cm(t->ec, RDMA_CM_EVENT_ESTABLISHED, timeout_ms, NULL, err, errlen)) {
		if (!err[0])
			snprintf(err, errlen, "RDMA connect to %s:%s: %s", host, port, strerror(errno));
		goto fail;
	}
	freeaddrinfo(ai);
	return &t->x;
fail:
	freeaddrinfo(ai);
	if (t)
		rdma_close(&t->x);
	return NULL;
}

struct xport_rdma_listener *xport_rdma_listen(const char *host, const char *port,
					      int *bound_port, char *err, size_t errlen)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
				  .ai_flags = AI_PASSIVE }, *ai;
	struct xport_rdma_listener *l;
	int gai;

	if (!xport_rdma_available(err, errlen))
		return NULL;
	gai = getaddrinfo(host && *host ? host : NULL, port, &hints, &ai);
	if (gai) {
		snprintf(err, errlen, "%s:%s: %s", host ? host : "*", port, gai_strerror(gai));
		return NULL;
	}
	l = calloc(1, sizeof(*l));
	if (!l || !(l->ec = rdma_create_event_channel()) ||
	    rdma_create_id(l->ec, &l->id, NULL, RDMA_PS_TCP) ||
	    rdma_bind_addr(l->id, ai->ai_addr) || rdma_listen(l->id, 16)) {
		snprintf(err, errlen, "RDMA listen on %s:%s: %s", host ? host : "*", port,
			 strerror(errno));
		freeaddrinfo(ai);
		xport_rdma_listener_free(l);
		return NULL;
	}
	freeaddrinfo(ai);
	fcntl(l->ec->fd, F_SETFL, fcntl(l->ec->fd, F_GETFL) | O_NONBLOCK);
	if (bound_port)
		*bound_port = ntohs(rdma_get_src_port(l->id));
	return l;
}

struct xport *xport_rdma_accept(struct xport_rdma_listener *l, int timeout_ms,
				char *err, size_t errlen)
{
	struct rdma_conn_param cp = { .initiator_depth = 1, .responder_resources = 1,
				      .rnr_retry_count = 7 };
	struct rdma_xport *t = new_xport(timeout_ms);
	struct rdma_cm_id *id = NULL;

	if (!t) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	if (wait_cm(l->ec, RDMA_CM_EVENT_CONNECT_REQUEST, timeout_ms, &id, err, errlen))
		goto fail;
	/* the new connection reports its events on a channel of its own */
	if (rdma_migrate_id(id, t->ec)) {
		snprintf(err, errlen, "RDMA: %s", strerror(errno));
		rdma_destroy_id(id);
		goto fail;
	}
	t->id = id;
	if (setup(t, err, errlen) || rdma_accept(t->id, &cp) ||
	    wait_cm(t->ec, RDMA_CM_EVENT_ESTABLISHED, timeout_ms, NULL, err, errlen)) {
		if (!err[0])
			snprintf(err, errlen, "RDMA accept: %s", strerror(errno));
		goto fail;
	}
	return &t->x;
fail:
	rdma_close(&t->x);
	return NULL;
}

void xport_rdma_listener_free(struct xport_rdma_listener *l)
{
	if (!l)
		return;
	if (l->id)
		rdma_destroy_id(l->id);
	if (l->ec)
		rdma_destroy_event_channel(l->ec);
	free(l);
}
