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
 * A standby's sync (mig_params.standby) differs at both ends: right after
 * READY, B sends DIGESTS of the pages it holds already (an earlier copy
 * of the guest, or none) and A waits for them, so that round 1 skips every
 * page whose digest matches (digests.h); and after LOADED, A sends STANDBY
 * instead of GO and runs on, B keeps its copy paused.
 *
 * Who may run the guest, the one rule (MIG_GO_BOUND_MS = T):
 *
 *  1. B runs the guest only after GO, and only if GO reached it within T
 *     of sending LOADED, by B's own CLOCK_BOOTTIME (it counts while B is
 *     stopped or starved). Past T, B discards its copy, even if GO is
 *     waiting in its socket. B makes its decision durable (run or discard,
 *     per job: mig_dest_opts.decide) before it takes effect.
 *  2. A sends GO only within T/2 of receiving LOADED; later, it resumes
 *     its own copy without sending GO (B then discards by rule 1).
 *  3. Before GO, any failure resumes A; B never saw GO and cannot run.
 *     After GO, A never resumes on its own: RUNNING means B runs it; an
 *     ERROR from B means B discarded it (B sends ERROR after LOADED only
 *     when it will never run), and A resumes; anything else (silence, a
 *     broken connection) is uncertain and A stays paused.
 *  4. An uncertain A is resumed only on B's word: the operator's resume
 *     asks B's service, which answers from B's durable decision and from
 *     whether a process holds the guest's name there (tools/vmigrated:
 *     "discarded" or "never ran" allow it; "runs", "deciding" or "not
 *     answering" refuse it). Only where B's host is lost for good may the
 *     operator say so (resume --destination-lost), and even then not
 *     before T has surely passed since GO, so a B that got GO late has
 *     discarded itself by then.
 *
 * So at no time can both copies run, whatever either side's processes or
 * the operator do, short of declaring a live host lost.
 */
#include "protocol.h"

#include <endian.h>
#include <errno.h>
#include <stdio.h>
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

int mig_msg_recv(struct xport *x, uint16_t *type, char *buf, size_t buflen, uint32_t *lenp)
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
	if (lenp)
		*lenp = len;
	if (buf && buflen) {
		size_t n = len < buflen - 1 ? len : buflen - 1;

		memcpy(buf, discard, n);
		buf[n] = 0;
	}
	return 0;
}

int mig_abort_write(struct ckpt_writer *w, const char *why)
{
	size_t len;
	int ret;

	if (!why[0])
		why = "no reason";
	len = strlen(why);
	ret = ckpt_writer_state(w, CKPT_STATE_ABORT, 0, 1, true, why,
				len > CKPT_ABORT_MAX ? CKPT_ABORT_MAX : len);
	return ret ? ret : ckpt_writer_flush(w);
}

void mig_abort_reason(const struct ckpt_record *rec, char *out, size_t len)
{
	size_t n = rec->u.state.len < len - 1 ? rec->u.state.len : len - 1;

	for (size_t i = 0; i < n; i++) {
		uint8_t c = rec->u.state.data[i];

		out[i] = c < 0x20 || c == 0x7f ? '?' : (char)c;
	}
	out[n] = 0;
}

void mig_abort_explain(const char *reason, char *err, size_t errlen)
{
	if (!strcmp(reason, "cancelled"))
		snprintf(err, errlen, "cancelled by the source");
	else
		snprintf(err, errlen, "the source gave up: %s", reason);
}
