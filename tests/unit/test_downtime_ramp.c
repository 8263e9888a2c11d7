/*
 * The downtime ramp of libvirt domains' migrations
 * (tools/vmigrated/downtime_ramp.c): the floor while QEMU's rounds
 * shrink, the ceiling once, when they stop shrinking or after the bound
 * of rounds, and nothing to raise under a ceiling at or below the floor.
 */
#include "harness.h"
#include "tools/vmigrated/downtime_ramp.h"

#define MIB	(1ull << 20)

TEST(floor_while_rounds_shrink_then_the_ceiling)
{
	struct lvd_ramp r;

	lvd_ramp_init(&r, 300);
	CHECK_EQ(r.floor_ms, LVD_RAMP_FLOOR_MS);
	CHECK_EQ(lvd_ramp_sample(&r, 1, 512 * MIB), 0);
	CHECK_EQ(lvd_ramp_sample(&r, 1, 100 * MIB), 0);	/* the same round */
	CHECK_EQ(lvd_ramp_sample(&r, 2, 24 * MIB), 0);	/* shrank */
	CHECK_EQ(lvd_ramp_sample(&r, 3, 18 * MIB), 0);	/* three quarters: still */
	CHECK_EQ(lvd_ramp_sample(&r, 4, 14 * MIB), 300);	/* more than that */
	CHECK_EQ(lvd_ramp_sample(&r, 5, 1 * MIB), 0);	/* once */
	CHECK_EQ(lvd_ramp_sample(&r, 6, 20 * MIB), 0);
}

TEST(the_ceiling_after_the_bound_of_rounds)
{
	struct lvd_ramp r;
	uint64_t left = 1ull << 40, got = 0;
	unsigned round;

	lvd_ramp_init(&r, 500);
	for (round = 1; round <= 2 * LVD_RAMP_ROUNDS && !got; round++, left /= 2)
		got = lvd_ramp_sample(&r, round, left);
	CHECK_EQ(got, 500);
	CHECK_EQ(round - 1, LVD_RAMP_ROUNDS + 1);
}

TEST(rounds_missed_between_samples_count_as_one)
{
	struct lvd_ramp r;

	lvd_ramp_init(&r, 300);
	CHECK_EQ(lvd_ramp_sample(&r, 1, 512 * MIB), 0);
	CHECK_EQ(lvd_ramp_sample(&r, 4, 500 * MIB), 300);
}

TEST(a_ceiling_at_or_below_the_floor_is_the_limit_from_the_start)
{
	struct lvd_ramp r;

	lvd_ramp_init(&r, 5);
	CHECK_EQ(r.floor_ms, 5);
	CHECK_EQ(lvd_ramp_sample(&r, 1, 512 * MIB), 0);
	CHECK_EQ(lvd_ramp_sample(&r, 2, 511 * MIB), 0);
	lvd_ramp_init(&r, LVD_RAMP_FLOOR_MS);
	CHECK_EQ(r.floor_ms, LVD_RAMP_FLOOR_MS);
	CHECK_EQ(lvd_ramp_sample(&r, 2, 511 * MIB), 0);
}
