/*
 * qstream-relay: stands between two QEMUs for tests/integration/qemu_stream.sh.
 * It accepts the source QEMU's outgoing migration on a unix socket, parses
 * it with vm/libvirt/qemu_stream into events, and writes the stream those
 * events make into the destination QEMU's `-incoming` socket; the
 * destination's return path goes back through the return path parser and
 * encoder. At the end it writes what it saw as one JSON object.
 *
 *   qstream-relay --listen SOCK --connect SOCK [--stats FILE] [--idle-s N]
 */
#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "ckpt_hash.h"
#include "qemu_stream.h"

struct relay {
	int src, dst;			/* source QEMU, destination QEMU */
	struct qstream_parser *p;
	struct qstream_writer *w;
	struct qstream_rp_parser *rp;
	XXH3_state_t *in_sum, *out_sum;
	uint64_t bytes_in, bytes_out, rp_bytes;
	char machine[QSTREAM_NAME_MAX + 1];
	char uuid[37];			/* of configuration/uuid, when sent */
	unsigned blocks;
	bool rp_open;
	unsigned pings, pongs, shuts, resume_acks;
	unsigned rp_dropped;		/* messages the source was gone for */
	uint32_t shut_value;
	char error[512];
};

static int write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;

	while (len) {
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static int to_destination(void *opaque, const void *buf, size_t len)
{
	struct relay *r = opaque;

	XXH3_64bits_update(r->out_sum, buf, len);
	r->bytes_out += len;
	return write_all(r->dst, buf, len);
}

static int on_event(void *opaque, const struct qstream_event *ev)
{
	struct relay *r = opaque;

	if (ev->type == QSTREAM_EV_CONFIG) {
		const uint8_t *u = ev->u.config->uuid;

		if (ev->u.config->has_machine)
			snprintf(r->machine, sizeof(r->machine), "%s", ev->u.config->machine);
		if (ev->u.config->has_uuid)
			snprintf(r->uuid, sizeof(r->uuid), "%02x%02x%02x%02x-%02x%02x-%02x%02x-"
				 "%02x%02x-%02x%02x%02x%02x%02x%02x", u[0], u[1], u[2], u[3], u[4],
				 u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13], u[14],
				 u[15]);
	} else if (ev->type == QSTREAM_EV_RAM_BLOCKS)
		r->blocks = ev->u.blocks.count;
	else if (ev->type == QSTREAM_EV_COMMAND && ev->u.command.cmd == QSTREAM_CMD_OPEN_RETURN_PATH)
		r->rp_open = true;
	else if (ev->type == QSTREAM_EV_COMMAND)
		r->pings++;
	return qstream_writer_event(r->w, ev);
}

static int on_rp(void *opaque, const struct qstream_rp_msg *m)
{
	struct relay *r = opaque;
	uint8_t buf[QSTREAM_RP_MSG_LEN];
	size_t n = qstream_rp_encode(m, buf);
	int ret;

	if (m->type == QSTREAM_RP_PONG)
		r->pongs++;
	else if (m->type == QSTREAM_RP_SHUT)
		r->shuts++, r->shut_value = m->value;
	else
		r->resume_acks++;
	if (!n)
		return -EINVAL;
	ret = write_all(r->src, buf, n);
	/* A source that has closed needs no more answers: QEMU 7.2 sends
	 * OPEN_RETURN_PATH again after a failed migration that had it, but
	 * nobody reads it. Whether its stream was whole, the parser says. */
	if (ret == -EPIPE || ret == -ECONNRESET) {
		r->rp_dropped++;
		return 0;
	}
	return ret;
}

static void json_str(FILE *f, const char *s)
{
	fputc('"', f);
	for (; *s; s++) {
		if (*s == '"' || *s == '\\')
			fprintf(f, "\\%c", *s);
		else if ((unsigned char)*s < 0x20)
			fprintf(f, "\\u%04x", *s);
		else
			fputc(*s, f);
	}
	fputc('"', f);
}

static void write_stats(const struct relay *r, const char *path)
{
	const struct qstream_stats *s = qstream_parser_stats(r->p);
	FILE *f = path ? fopen(path, "w") : stdout;

	if (!f) {
		perror(path);
		return;
	}
	fprintf(f, "{\"ok\":%s,\"error\":", r->error[0] ? "false" : "true");
	json_str(f, r->error);
	fprintf(f, ",\"machine\":");
	json_str(f, r->machine);
	fprintf(f, ",\"uuid\":");
	json_str(f, r->uuid);
	fprintf(f, ",\"blocks\":%u,\"pages\":%llu,\"zero_pages\":%llu,\"page_bytes\":%llu,"
		"\"ram_sections\":%llu,\"device_bytes\":%llu,\"bytes_in\":%llu,\"bytes_out\":%llu,"
		"\"identical\":%s,\"return_path\":%s,\"pings\":%u,\"pongs\":%u,\"shuts\":%u,"
		"\"shut_value\":%u,\"resume_acks\":%u,\"rp_dropped\":%u}\n",
		r->blocks, (unsigned long long)s->pages, (unsigned long long)s->zero_pages,
		(unsigned long long)s->pages * QSTREAM_PAGE_SIZE,
		(unsigned long long)s->ram_sections, (unsigned long long)s->device_bytes,
		(unsigned long long)r->bytes_in, (unsigned long long)r->bytes_out,
		r->bytes_in == r->bytes_out &&
		XXH3_64bits_digest(r->in_sum) == XXH3_64bits_digest(r->out_sum) ? "true" : "false",
		r->rp_open ? "true" : "false", r->pings, r->pongs, r->shuts, r->shut_value,
		r->resume_acks, r->rp_dropped);
	if (path)
		fclose(f);
}

static int unix_addr(struct sockaddr_un *a, const char *path)
{
	memset(a, 0, sizeof(*a));
	a->sun_family = AF_UNIX;
	if (strlen(path) >= sizeof(a->sun_path)) {
		fprintf(stderr, "qstream-relay: socket path too long: %s\n", path);
		return -1;
	}
	strcpy(a->sun_path, path);
	return 0;
}

/* Accept the source's one connection, waiting at most idle_ms. */
static int accept_source(const char *path, int idle_ms)
{
	struct sockaddr_un a;
	struct pollfd pfd;
	int l, c;

	if (unix_addr(&a, path))
		return -1;
	l = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (l < 0)
		return -1;
	unlink(path);
	if (bind(l, (struct sockaddr *)&a, sizeof(a)) || listen(l, 1)) {
		perror(path);
		close(l);
		return -1;
	}
	pfd = (struct pollfd){ .fd = l, .events = POLLIN };
	if (poll(&pfd, 1, idle_ms) != 1) {
		fprintf(stderr, "qstream-relay: no source connected to %s\n", path);
		close(l);
		return -1;
	}
	c = accept4(l, NULL, NULL, SOCK_CLOEXEC);
	close(l);
	unlink(path);
	return c;
}

static int connect_destination(const char *path)
{
	struct sockaddr_un a;
	int s;

	if (unix_addr(&a, path))
		return -1;
	s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (s < 0)
		return -1;
	if (connect(s, (struct sockaddr *)&a, sizeof(a))) {
		perror(path);
		close(s);
		return -1;
	}
	return s;
}

static void fail(struct relay *r, const char *what, const char *why)
{
	if (!r->error[0])
		snprintf(r->error, sizeof(r->error), "%s: %s", what, why);
}

/* Move bytes both ways until both QEMUs closed their ends. */
static void run(struct relay *r, int idle_ms)
{
	static uint8_t buf[256 << 10];
	bool src_eof = false, dst_eof = false;

	while (!(src_eof && dst_eof) && !r->error[0]) {
		struct pollfd pfd[2] = {
			{ .fd = src_eof ? -1 : r->src, .events = POLLIN },
			{ .fd = dst_eof ? -1 : r->dst, .events = POLLIN },
		};
		int n = poll(pfd, 2, idle_ms);
		ssize_t len;

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			fail(r, "relay", n ? strerror(errno) : "no data from either QEMU");
			break;
		}
		if (pfd[0].revents) {
			len = read(r->src, buf, sizeof(buf));
			if (len < 0 && errno == EINTR)
				continue;
			/* A source that closes with our return path messages unread
			 * resets the connection: for the stream, that is its end
			 * (the parser says whether it was complete). */
			if (len < 0 && errno != ECONNRESET) {
				fail(r, "reading the source", strerror(errno));
				break;
			}
			if (len <= 0) {
				src_eof = true;
				if (qstream_parser_finish(r->p))
					fail(r, "source stream", qstream_parser_errmsg(r->p));
				else if (qstream_writer_flush(r->w))
					fail(r, "destination", qstream_writer_errmsg(r->w));
				shutdown(r->dst, SHUT_WR);
				continue;
			}
			r->bytes_in += (size_t)len;
			XXH3_64bits_update(r->in_sum, buf, (size_t)len);
			if (qstream_parser_feed(r->p, buf, (size_t)len)) {
				if (qstream_parser_error(r->p) == QSTREAM_E_CONSUMER)
					fail(r, "destination", qstream_writer_errmsg(r->w));
				else
					fail(r, "source stream", qstream_parser_errmsg(r->p));
			} else if (qstream_writer_flush(r->w)) {
				fail(r, "destination", qstream_writer_errmsg(r->w));
			}
		}
		if (pfd[1].revents && !r->error[0]) {
			len = read(r->dst, buf, sizeof(buf));
			if (len < 0 && errno == EINTR)
				continue;
			if (len <= 0) {
				dst_eof = true;
				if (qstream_rp_parser_finish(r->rp))
					fail(r, "return path", qstream_rp_parser_errmsg(r->rp));
				if (!src_eof && !qstream_parser_in_device_state(r->p))
					fail(r, "destination", "it closed before the stream ended");
				continue;
			}
			r->rp_bytes += (size_t)len;
			if (qstream_rp_parser_feed(r->rp, buf, (size_t)len))
				fail(r, "return path", qstream_rp_parser_errmsg(r->rp));
		}
	}
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "listen", required_argument, NULL, 'l' },
		{ "connect", required_argument, NULL, 'c' },
		{ "stats", required_argument, NULL, 's' },
		{ "idle-s", required_argument, NULL, 'i' },
		{ NULL, 0, NULL, 0 },
	};
	const char *listen_path = NULL, *connect_path = NULL, *stats = NULL;
	struct relay r = { .src = -1, .dst = -1 };
	struct qstream_sink sink = { to_destination, &r };
	int idle_ms = 60000, c;

	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'l': listen_path = optarg; break;
		case 'c': connect_path = optarg; break;
		case 's': stats = optarg; break;
		case 'i': idle_ms = atoi(optarg) * 1000; break;
		default: return 2;
		}
	}
	if (!listen_path || !connect_path || idle_ms <= 0) {
		fprintf(stderr, "usage: qstream-relay --listen SOCK --connect SOCK "
			"[--stats FILE] [--idle-s N]\n");
		return 2;
	}
	r.p = qstream_parser_new(on_event, &r);
	r.w = qstream_writer_new(&sink);
	r.rp = qstream_rp_parser_new(on_rp, &r);
	r.in_sum = XXH3_createState();
	r.out_sum = XXH3_createState();
	if (!r.p || !r.w || !r.rp || !r.in_sum || !r.out_sum) {
		fprintf(stderr, "qstream-relay: out of memory\n");
		return 1;
	}
	XXH3_64bits_reset(r.in_sum);
	XXH3_64bits_reset(r.out_sum);
	r.src = accept_source(listen_path, idle_ms);
	if (r.src < 0)
		fail(&r, "source", "no connection");
	else if ((r.dst = connect_destination(connect_path)) < 0)
		fail(&r, "destination", "cannot connect");
	else
		run(&r, idle_ms);
	if (r.error[0])
		fprintf(stderr, "qstream-relay: %s\n", r.error);
	write_stats(&r, stats);
	if (r.src >= 0)
		close(r.src);
	if (r.dst >= 0)
		close(r.dst);
	qstream_parser_free(r.p);
	qstream_writer_free(r.w);
	qstream_rp_parser_free(r.rp);
	XXH3_freeState(r.in_sum);
	XXH3_freeState(r.out_sum);
	return r.error[0] ? 1 : 0;
}
