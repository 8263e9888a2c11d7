/*
 * Cutting a byte stream into SENDs (see rdma_plan.h).
 */
#include "rdma_plan.h"

#include <string.h>

void rdma_planner_init(struct rdma_planner *pl, const struct iovec *iov, int iovcnt,
		       const struct rdma_region *regions, unsigned nr_regions,
		       uint32_t send_bytes, unsigned max_sge)
{
	memset(pl, 0, sizeof(*pl));
	pl->iov = iov;
	pl->iovcnt = iovcnt;
	pl->regions = regions;
	pl->nr_regions = nr_regions;
	pl->send_bytes = send_bytes;
	pl->max_sge = max_sge < 1 ? 1 : max_sge > RDMA_PLAN_MAX_SGE ? RDMA_PLAN_MAX_SGE : max_sge;
}

int rdma_region_find(const struct rdma_region *regions, unsigned n, const void *p, size_t len)
{
	const uint8_t *b = p;

	for (unsigned i = 0; i < n; i++)
		if (b >= regions[i].addr && len <= regions[i].len &&
		    (size_t)(b - regions[i].addr) <= regions[i].len - len)
			return (int)i;
	return -1;
}

bool rdma_plan_next(struct rdma_planner *pl, struct rdma_send_plan *out)
{
	memset(out, 0, sizeof(*out));
	while (pl->i < pl->iovcnt && out->bytes < pl->send_bytes) {
		const struct iovec *v = &pl->iov[pl->i];
		const uint8_t *p = (const uint8_t *)v->iov_base + pl->off;
		size_t left = v->iov_len - pl->off;
		uint32_t room = pl->send_bytes - out->bytes;
		uint32_t n = left < room ? (uint32_t)left : room;
		const struct rdma_piece *last = out->n ? &out->piece[out->n - 1] : NULL;
		int region = -1;
		bool new_sge;

		if (!left) {
			pl->i++;
			pl->off = 0;
			continue;
		}
		if (left >= RDMA_DIRECT_MIN)
			region = rdma_region_find(pl->regions, pl->nr_regions, v->iov_base,
						  v->iov_len);
		/* copied bytes lie end to end in the slot: one SGE for a run */
		new_sge = region >= 0 || !last || last->region >= 0;
		if (out->n == RDMA_PLAN_MAX_PIECES || (new_sge && out->sges == pl->max_sge))
			break;		/* the rest goes in the next SEND */
		out->piece[out->n++] = (struct rdma_piece){ p, n, region };
		out->sges += new_sge;
		out->direct |= region >= 0;
		out->bytes += n;
		pl->off += n;
	}
	return out->n > 0;
}
