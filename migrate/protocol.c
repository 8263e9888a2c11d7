/*
 * The migration protocol. One connection; the source writes a ckpt-format
 * stream, the destination writes control messages back:
 *
 *   source (A)                               destination (B)
 *   HEADER, STATE(VM config) ------------->  build the guest (paused)
 *                            <-------------  READY
 *   MARKER 1, PAGES ... MARKER k, PAGES ...  apply pages
 *                            <-------------  ROUND n at each MARKER n
 *   MARKER final; wait for ROUND final, so B has no backlog to chew
 *   [pause] final PAGES, STATE..., END,
 *   COMMIT -------------------------------->  verify digest, load state
 *                            <-------------  LOADED
 *   A gives the guest up for good
 *   GO ------------------------------------>  resume
 *                            <-------------  RUNNING
 *   A destroys its copy
 *
 * Before A sends GO, any failure resumes A and B discards its copy. After
 * GO, A never resumes on its own: if RUNNING does not come, the outcome is
 * uncertain and an operator decides. B runs only after GO. So at no time
 * can both copies run.
 */
#include "protocol.h"

#include <endian.h>
#include <errno.h>
#include <string.h>

int mig_msg_send(struct xport *x, uint16_t type, const void *payload, uint32_t len)
{
	struct mig_msg_hdr h = {
		.magic = htole32(MIG_MSG_MAGIC),
		.type = htole16(type),
		.len = htole32(len),
	};
	struct iovec iov[2] = { { &h, sizeof(h) }, { (void *)payload, len } };

	if (len > MIG_MSG_MAX)
		return -EINVAL;
	return xport_sendv(x, iov, len ? 2 : 1);
}

int mig_msg_recv(struct xport *x, uint16_t *type, char *buf, size_t buflen)
{
	struct mig_msg_hdr h;
	char discard[MIG_MSG_MAX];
	uint32_t len;
	int ret = xport_recv_exact(x, &h, sizeof(h));

	if (ret)
		return ret;
	len = le32toh(h.len);
	if (le32toh(h.magic) != MIG_MSG_MAGIC || len > MIG_MSG_MAX || h.reserved)
		return -EPROTO;
	*type = le16toh(h.type);
	ret = xport_recv_exact(x, discard, len);
	if (ret)
		return ret;
	if (buf && buflen) {
		size_t n = len < buflen - 1 ? len : buflen - 1;

		memcpy(buf, discard, n);
		buf[n] = 0;
	}
	return 0;
}
