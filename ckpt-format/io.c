/*
 * Sources and sinks for the record reader and writer: growable memory
 * buffers (tests, fuzzing, benchmarks, replication epochs) and plain file
 * descriptors (checkpoint files, pipes).
 */
#include "ckpt.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int membuf_writev(void *opaque, const struct iovec *iov, int iovcnt)
{
	struct ckpt_membuf *m = opaque;
	size_t need = m->len;

	for (int i = 0; i < iovcnt; i++)
		need += iov[i].iov_len;
	if (need > m->cap) {
		size_t cap = m->cap ? m->cap : 4096;
		uint8_t *nd;

		if (m->fixed)
			return -ENOSPC;
		while (cap < need)
			cap *= 2;
		nd = realloc(m->data, cap);
		if (!nd)
			return -ENOMEM;
		m->data = nd;
		m->cap = cap;
	}
	for (int i = 0; i < iovcnt; i++) {
		memcpy(m->data + m->len, iov[i].iov_base, iov[i].iov_len);
		m->len += iov[i].iov_len;
	}
	return 0;
}

static long membuf_read(void *opaque, void *buf, size_t len)
{
	struct ckpt_membuf *m = opaque;
	size_t n = m->len - m->pos;

	if (n > len)
		n = len;
	memcpy(buf, m->data + m->pos, n);
	m->pos += n;
	return (long)n;
}

void ckpt_membuf_sink(struct ckpt_membuf *m, struct ckpt_sink *sink)
{
	sink->writev = membuf_writev;
	sink->opaque = m;
}

void ckpt_membuf_source(struct ckpt_membuf *m, struct ckpt_source *src)
{
	src->read = membuf_read;
	src->opaque = m;
}

void ckpt_membuf_release(struct ckpt_membuf *m)
{
	if (!m->fixed)
		free(m->data);
	memset(m, 0, sizeof(*m));
}

static int fd_writev(void *opaque, const struct iovec *iov, int iovcnt)
{
	int fd = *(int *)opaque;
	struct iovec local[16];
	int n = iovcnt;

	if (n > 16)
		return -EINVAL;
	memcpy(local, iov, n * sizeof(*iov));
	for (struct iovec *v = local; n > 0;) {
		ssize_t w = writev(fd, v, n);

		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		while (n > 0 && (size_t)w >= v->iov_len) {
			w -= v->iov_len;
			v++;
			n--;
		}
		if (n > 0) {
			v->iov_base = (uint8_t *)v->iov_base + w;
			v->iov_len -= w;
		}
	}
	return 0;
}

static long fd_read(void *opaque, void *buf, size_t len)
{
	int fd = *(int *)opaque;
	size_t done = 0;

	while (done < len) {
		ssize_t n = read(fd, (uint8_t *)buf + done, len - done);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			break;
		done += n;
	}
	return (long)done;
}

void ckpt_fd_sink(int *fd, struct ckpt_sink *sink)
{
	sink->writev = fd_writev;
	sink->opaque = fd;
}

void ckpt_fd_source(int *fd, struct ckpt_source *src)
{
	src->read = fd_read;
	src->opaque = fd;
}
