/* QEMU's downtime limit from a floor up to the ceiling (downtime_ramp.h). */
#include "downtime_ramp.h"

void lvd_ramp_init(struct lvd_ramp *r, uint64_t ceiling_ms)
{
	*r = (struct lvd_ramp){
		.floor_ms = ceiling_ms < LVD_RAMP_FLOOR_MS ? ceiling_ms : LVD_RAMP_FLOOR_MS,
		.ceiling_ms = ceiling_ms,
		.raised = ceiling_ms <= LVD_RAMP_FLOOR_MS,	/* nothing to raise */
	};
}

uint64_t lvd_ramp_sample(struct lvd_ramp *r, uint64_t round, uint64_t remaining)
{
	bool shrinks;

	if (r->raised || round <= r->round)
		return 0;
	/* a new round: what it has to send against what the last one had
	 * (shrinking: at most three quarters, as for micro-VM guests) */
	shrinks = !r->round || remaining * 4 <= r->due * 3;
	r->round = round;
	r->due = remaining;
	if (shrinks && round <= LVD_RAMP_ROUNDS)
		return 0;
	r->raised = true;
	return r->ceiling_ms;
}
