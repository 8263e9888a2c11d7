/*
 * The downtime limit of a libvirt domain's migration as a ceiling, not a
 * target: the rule migrate/source.c keeps for micro-VM guests, applied to
 * QEMU's own rounds. QEMU switches over at the first moment its remainder
 * fits its downtime limit, so with the operator's limit from the start it
 * stops after the first round that fits, however much the next would have
 * shrunk. The limit starts at a floor instead, QEMU goes on while its
 * rounds shrink, and the ceiling comes once they stop shrinking (or after
 * a bound of rounds). Pure logic: the caller reads libvirt's figures and
 * sets the limit (virDomainMigrateSetMaxDowntime).
 */
#ifndef DOWNTIME_RAMP_H
#define DOWNTIME_RAMP_H

#include <stdbool.h>
#include <stdint.h>

#define LVD_RAMP_FLOOR_MS	10	/* QEMU's limit while its rounds shrink */
#define LVD_RAMP_ROUNDS		10	/* rounds at the floor, at most */

struct lvd_ramp {
	uint64_t floor_ms, ceiling_ms;
	uint64_t round;			/* QEMU's round at the last sample */
	uint64_t due;			/* what was left when that round was first seen */
	bool raised;
};

/* The limit to start with is r->floor_ms (the ceiling when that is lower). */
void lvd_ramp_init(struct lvd_ramp *r, uint64_t ceiling_ms);
/* One sample of libvirt's job figures (memory iteration, data remaining):
 * the limit to set now, or 0 for none. It is the ceiling, once. */
uint64_t lvd_ramp_sample(struct lvd_ramp *r, uint64_t round, uint64_t remaining);

#endif
