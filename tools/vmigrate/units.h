/*
 * Operator-facing numbers: sizes with binary units (64M, 1G, 4096),
 * rates (100M, 100M/s, 1G/s) and durations in seconds (2, 0.5, 10s).
 */
#ifndef CLI_UNITS_H
#define CLI_UNITS_H

#include <stdint.h>

/* 0 on success, -EINVAL on anything that is not a clean number. */
int parse_size(const char *s, uint64_t *bytes);
int parse_rate(const char *s, uint64_t *bytes_per_s);
int parse_seconds(const char *s, double *seconds);
int parse_uint(const char *s, uint64_t *v);

#endif
