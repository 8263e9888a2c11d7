/*
 * Clock and sorting helpers for tests and benchmarks.
 */
#ifndef TEST_TIMING_H
#define TEST_TIMING_H

#include <time.h>

static inline double tm_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* qsort comparator for doubles, for min/median reporting. */
static inline int tm_cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

#endif
