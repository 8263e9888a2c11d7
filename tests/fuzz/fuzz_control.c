/*
 * libFuzzer target for the control sockets' requests: ipc_recv's framing
 * (byte-exact JSON lines, descriptors passed with SCM_RIGHTS), then the
 * fields a start or migrate request carries, read as vmigrated and the
 * guest process read them (worker_spec_from_json, peer_config_from_json,
 * worker_mig_params, peer_parse_port_range).
 *
 * Input: one control byte, then the bytes of the stream.
 *   bits 0-1  descriptors attached to the first line (0-3)
 *   bits 2-3  descriptors attached to what follows the first newline
 *   bit 4     receive as vmigrated does, refusing descriptors (fd NULL)
 * Every descriptor received must be handed to the caller or closed.
 */
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_util.h"
#include "ipc.h"
#include "migrate.h"
#include "peer.h"
#include "worker.h"

#define MAX_MESSAGES	8

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int null_fd = -1;

/* Send data with n descriptors attached (copies of null_fd). */
static void send_with_fds(int sock, const uint8_t *data, size_t size, unsigned n)
{
	union {
		char buf[CMSG_SPACE(3 * sizeof(int))];
		struct cmsghdr align;
	} ctl;
	struct iovec iov = { (void *)data, size };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
	int fds[3] = { null_fd, null_fd, null_fd };
	ssize_t sent;

	if (!size)
		return;
	if (n) {
		struct cmsghdr *c;

		msg.msg_control = ctl.buf;
		msg.msg_controllen = CMSG_SPACE(n * sizeof(int));
		c = CMSG_FIRSTHDR(&msg);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(n * sizeof(int));
		memcpy(CMSG_DATA(c), fds, n * sizeof(int));
	}
	sent = sendmsg(sock, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
	if (sent > 0 && (size_t)sent < size)
		fuzz_write(sock, data + sent, size - (size_t)sent);
}

/* The peer settings of a migrate request survive the trip to the guest
 * process: encoding what was decoded decodes to the same settings (the
 * key's bytes count only when there is a key). */
static void check_peer_config(struct json_object *o)
{
	struct peer_config a, b;
	struct json_object *enc;

	if (peer_config_from_json(o, &a) && a.key.set)
		abort();	/* a refused key is no key at all */
	enc = peer_config_to_json(&a);
	if (peer_config_from_json(enc, &b))
		abort();	/* what we encode we must read back */
	json_object_put(enc);
	if (a.insecure != b.insecure || strcmp(a.tls_dir, b.tls_dir) || strcmp(a.allow, b.allow) ||
	    a.io_timeout_ms != b.io_timeout_ms || a.handshake_timeout_ms != b.handshake_timeout_ms ||
	    a.data_port_lo != b.data_port_lo || a.data_port_hi != b.data_port_hi ||
	    a.key.set != b.key.set || (a.key.set && (a.key.len != b.key.len ||
						     memcmp(a.key.key, b.key.key, a.key.len))))
		abort();
}

static void parse_request(struct json_object *req)
{
	struct worker_spec spec;
	struct json_object *peer = NULL;
	struct mig_params mp;
	char err[512] = "";
	uint16_t lo, hi;

	if (worker_spec_from_json(req, &spec, err, sizeof(err))) {
		if (!err[0])
			abort();
	} else if (!spec.name[0] || strchr(spec.name, '/') || spec.name[0] == '.') {
		abort();
	}
	json_object_object_get_ex(req, "peer", &peer);
	check_peer_config(peer);
	check_peer_config(req);
	err[0] = 0;
	if (worker_mig_params(req, 5000, &mp, err, sizeof(err))) {
		if (!err[0])
			abort();	/* a refusal says why */
	} else if (mp.max_downtime_ms < MIG_MIN_DOWNTIME_MS &&
		   !(mp.timeout_s > 0 && mp.force_on_timeout)) {
		abort();	/* one that can never finish got through */
	}
	if (!peer_parse_port_range(ipc_str(req, "data_ports", ""), &lo, &hi) && (!lo || lo > hi))
		abort();
	(void)ipc_int(req, "channels", 0);
	(void)ipc_bool(req, "lazy", false);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *nl;
	size_t first;
	int fds, sv[2];
	bool refuse_fds;

	if (null_fd < 0)
		null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (!size || null_fd < 0)
		return 0;
	fds = fuzz_fd_count();
	refuse_fds = data[0] & 0x10;
	nl = memchr(data + 1, '\n', size - 1);
	first = nl ? (size_t)(nl - data) : size - 1;
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		return 0;
	send_with_fds(sv[1], data + 1, first, data[0] & 3);
	send_with_fds(sv[1], data + 1 + first, size - 1 - first, (data[0] >> 2) & 3);
	shutdown(sv[1], SHUT_WR);
	for (int i = 0; i < MAX_MESSAGES; i++) {
		int fd = -1;
		struct json_object *req = ipc_recv(sv[0], refuse_fds ? NULL : &fd, 100);

		if (!req) {
			if (fd != -1)
				abort();	/* no message, no descriptor */
			break;
		}
		parse_request(req);
		json_object_put(req);
		if (fd >= 0)
			close(fd);
	}
	close(sv[0]);
	close(sv[1]);
	fuzz_check_fds(fds, "ipc_recv");
	return 0;
}
