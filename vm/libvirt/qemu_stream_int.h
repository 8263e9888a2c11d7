/*
 * What the parser, the writer and the return path of qemu_stream share:
 * big-endian field access and the sticky error with its message.
 */
#ifndef QEMU_STREAM_INT_H
#define QEMU_STREAM_INT_H

#include <endian.h>
#include <stdarg.h>
#include <stdint.h>
#include <string.h>

#include "qemu_stream.h"

static inline uint16_t qs_be16(const uint8_t *p)
{
	uint16_t v;

	memcpy(&v, p, sizeof(v));
	return be16toh(v);
}

static inline uint32_t qs_be32(const uint8_t *p)
{
	uint32_t v;

	memcpy(&v, p, sizeof(v));
	return be32toh(v);
}

static inline uint64_t qs_be64(const uint8_t *p)
{
	uint64_t v;

	memcpy(&v, p, sizeof(v));
	return be64toh(v);
}

static inline void qs_put_be16(uint8_t *p, uint16_t v)
{
	v = htobe16(v);
	memcpy(p, &v, sizeof(v));
}

static inline void qs_put_be32(uint8_t *p, uint32_t v)
{
	v = htobe32(v);
	memcpy(p, &v, sizeof(v));
}

static inline void qs_put_be64(uint8_t *p, uint64_t v)
{
	v = htobe64(v);
	memcpy(p, &v, sizeof(v));
}

/* The first failure of a parser: it sticks, and is reported once. */
struct qs_err {
	int ret;			/* 0, -EBADMSG, or the consumer's errno */
	enum qstream_error code;
	char msg[256];
};

/* Record the first failure at stream offset off; returns its errno. */
int qs_vfail(struct qs_err *e, enum qstream_error code, int ret, uint64_t off,
	     const char *fmt, va_list ap) __attribute__((format(printf, 5, 0)));
int qs_fail(struct qs_err *e, enum qstream_error code, int ret, uint64_t off,
	    const char *fmt, ...) __attribute__((format(printf, 5, 6)));

#endif
