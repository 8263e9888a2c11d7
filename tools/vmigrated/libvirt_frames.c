/*
 * The frames between the source's and the destination's services for a
 * libvirt domain's migration (libvirt_out.c, libvirt_in.c), on the peer
 * session (TLS).
 *
 * Frames on the session: le32 type, le32 length, payload. What crosses
 * the wire (normative; the payloads of EVENT and RECORDS are the messages
 * of vm/libvirt/QEMU-STREAM.md, "Carried as records"):
 *
 *   source -> destination
 *   4 EVENT   one event of QEMU's stream that is not a page (configuration,
 *             command, RAM section begin and end, block list, device state
 *             in pieces): 4 to QSREC_EVENT_MAX bytes
 *   5 RECORDS bytes of the ckpt-format stream of QEMU's RAM pages (one
 *             record, or the magic, a frame): 1 to QSREC_RECORDS_MAX bytes
 *   7 ON_DATA with data channels only: le32 n (4 bytes, n >= 1): the next
 *             n RECORDS of the stream come over the data channels, here,
 *             before the session's next frame
 *   destination -> source
 *   1 DATA    bytes of the destination QEMU's return path, relayed as they
 *             come: 1 to LVD_FRAME_MAX bytes
 *   6 ACK     vmigrate's own end-to-end acknowledgement, right after the
 *             DATA that carried the destination QEMU's SHUT 0, only when
 *             every record arrived with its checksum and the COMMIT
 *             matched: le64 bytes of records checked, le64 bytes of device
 *             state the destination QEMU took (16 bytes). The source gives
 *             its QEMU that SHUT only on an ACK whose counts are what it
 *             sent (libvirt_out_relay.c, "The hold point"); at most one
 *   both ways
 *   2 END     the QEMU on the sender's side closed its end; no payload
 *   3 ABORT   the sender gives up; payload: why (text, at most 512 bytes)
 *
 * The order of the frames is the order of QEMU's stream: pages in RECORDS
 * frames sit between the EVENT frames of their section's begin and end.
 *
 * Data channels (the hello's "channels", made as a micro-VM migration's,
 * peer.h) carry RECORDS frames only: the session's k-th record that an
 * ON_DATA announces is the next frame of data channel k mod n (k counted
 * from 0 over the whole job), so the destination takes them in the
 * stream's order, and every page of a section reaches its QEMU before
 * the section's end and before the device state, as on one session.
 * Anything else (a type not of its direction, a length out of bounds)
 * ends the job as a protocol error: the destination QEMU's socket is
 * closed (libvirt then fails the migration and the domain stays on the
 * source). The destination hands QEMU no device state before every
 * record arrived with its checksum and the records' COMMIT matched.
 *
 */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>

#include "libvirt_jobs_int.h"
#include "qemu_stream_records.h"

int lvd_frame_send(struct xport *x, uint32_t type, const void *buf, uint32_t len)
{
	uint8_t hdr[8];
	struct iovec iov[2] = { { hdr, 8 }, { (void *)buf, len } };

	for (int i = 0; i < 4; i++) {
		hdr[i] = (uint8_t)(type >> (8 * i));
		hdr[4 + i] = (uint8_t)(len >> (8 * i));
	}
	return xport_sendv(x, iov, len ? 2 : 1);
}

int lvd_frame_head(struct xport *x, bool from_source, uint32_t *type, uint32_t *len)
{
	uint8_t hdr[8];
	int ret = xport_recv_exact(x, hdr, 8);
	uint32_t t, n;

	if (ret)
		return ret;
	t = *type = hdr[0] | hdr[1] << 8 | hdr[2] << 16 | (uint32_t)hdr[3] << 24;
	n = *len = hdr[4] | hdr[5] << 8 | hdr[6] << 16 | (uint32_t)hdr[7] << 24;
	switch (t) {
	case LVD_FRAME_END:
		return n ? -EBADMSG : 0;
	case LVD_FRAME_ABORT:
		return n > LVD_WHY_MAX ? -EBADMSG : 0;
	case LVD_FRAME_DATA:
		return from_source || n == 0 || n > LVD_FRAME_MAX ? -EBADMSG : 0;
	case LVD_FRAME_ACK:
		return from_source || n != LVD_ACK_LEN ? -EBADMSG : 0;
	case LVD_FRAME_EVENT:
		return !from_source || n < 4 || n > QSREC_EVENT_MAX ? -EBADMSG : 0;
	case LVD_FRAME_RECORDS:
		return !from_source || n == 0 || n > QSREC_RECORDS_MAX ? -EBADMSG : 0;
	case LVD_FRAME_ON_DATA:
		return !from_source || n != 4 ? -EBADMSG : 0;
	}
	return -EBADMSG;
}

const char *lvd_frame_error(int ret, const char *on_close)
{
	switch (ret) {
	case -EBADMSG:
		return "a frame this protocol does not have";
	case -EPIPE:
		return on_close;
	case -EPROTO:	/* OpenSSL's "unexpected eof", or a damaged record */
		return "the TLS session broke off (the service died, or its bytes were damaged)";
	}
	return strerror(-ret);
}


int lvd_write_all(int fd, const void *buf, size_t len)
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

int lvd_unix_addr(struct sockaddr_un *a, const char *path)
{
	memset(a, 0, sizeof(*a));
	a->sun_family = AF_UNIX;
	if (strlen(path) >= sizeof(a->sun_path))
		return -ENAMETOOLONG;
	strcpy(a->sun_path, path);
	return 0;
}
