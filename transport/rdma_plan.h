/*
 * How a byte stream is cut into RDMA SENDs, apart from the verbs that post
 * them, so it can be tested without a device. Each SEND carries at most
 * send_bytes (the peer's receive buffer) in at most max_sge pieces. A large
 * piece lying inside registered memory goes straight from there (a direct
 * piece, no copy); everything else is copied into the SEND's own
 * registered slot, and neighbouring copied pieces share one SGE.
 */
#ifndef TRANSPORT_RDMA_PLAN_H
#define TRANSPORT_RDMA_PLAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#define RDMA_PLAN_MAX_SGE	4
#define RDMA_PLAN_MAX_PIECES	32
#define RDMA_PLAN_MAX_REGIONS	8
#define RDMA_DIRECT_MIN		(16 * 1024)	/* smaller pieces are cheaper copied */

struct rdma_region {
	const uint8_t *addr;
	size_t len;
};

/* Part of one iovec: region >= 0 for a direct piece, -1 for a copied one.
 * A direct piece is one SGE; a run of copied pieces is one SGE too. */
struct rdma_piece {
	const uint8_t *p;
	uint32_t len;
	int region;
};

struct rdma_send_plan {
	struct rdma_piece piece[RDMA_PLAN_MAX_PIECES];
	unsigned n;
	unsigned sges;			/* at most the planner's max_sge */
	uint32_t bytes;			/* all pieces */
	bool direct;			/* any piece sent from registered memory */
};

struct rdma_planner {
	const struct iovec *iov;
	int iovcnt, i;
	size_t off;			/* into iov[i] */
	const struct rdma_region *regions;
	unsigned nr_regions;
	uint32_t send_bytes;
	unsigned max_sge;
};

void rdma_planner_init(struct rdma_planner *pl, const struct iovec *iov, int iovcnt,
		       const struct rdma_region *regions, unsigned nr_regions,
		       uint32_t send_bytes, unsigned max_sge);

/* The next SEND; false once every byte is planned. */
bool rdma_plan_next(struct rdma_planner *pl, struct rdma_send_plan *out);

/* The registered region holding all of [p, p+len), or -1. */
int rdma_region_find(const struct rdma_region *regions, unsigned n, const void *p, size_t len);

#endif
