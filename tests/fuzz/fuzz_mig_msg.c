/*
 * libFuzzer target for the migration control messages (mig_msg_recv): a
 * stream of 12-byte headers and payloads over a TCP channel, read until the
 * first error, into a buffer of the size the first input byte picks (none,
 * 1, 9 or MIG_MSG_MAX + 1 bytes as migrate/source.c has it), allocated to
 * exactly that size so a write past it is caught.
 */
#include <stdlib.h>
#include <string.h>

#include "fuzz_util.h"
#include "protocol.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const size_t sizes[4] = { 0, 1, 9, MIG_MSG_MAX + 1 };
	int fds = fuzz_fd_count(), sv[2];
	size_t buflen;
	struct xport *x;
	char *buf;

	if (!size)
		return 0;
	buflen = sizes[data[0] & 3];
	buf = buflen ? malloc(buflen) : NULL;
	if (!fuzz_socketpair(sv, data + 1, size - 1)) {
		free(buf);
		return 0;
	}
	x = xport_tcp_from_fd(sv[0], 100);
	if (x) {
		uint16_t type;
		int ret;

		while ((ret = mig_msg_recv(x, &type, buf, buflen, NULL)) == 0)
			if (buf && strlen(buf) >= buflen)
				abort();	/* text payloads come back terminated */
		if (ret != -EPIPE && ret != -EPROTO)
			abort();	/* end of input or a bad header, nothing else */
		xport_close(x);
	} else {
		close(sv[0]);
	}
	close(sv[1]);
	free(buf);
	fuzz_check_fds(fds, "mig_msg_recv");
	return 0;
}
