/*
 * libFuzzer target for the dialer's side of a peer connection (peer_dial):
 * the listener's replies, i.e. the challenge and its proof with a key, then
 * {ok, data_port, token} or {error}. No data channels are asked for, so the
 * dialer never connects anywhere; the reply's fields are still parsed.
 */
#include <stdlib.h>
#include <string.h>

#include "fuzz_peer.h"
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void dial_once(const uint8_t *data, size_t size, bool with_key)
{
	struct peer_config pc;
	struct peer_session ps;
	char err[512] = "";
	int sv[2], ret;

	fuzz_peer_config(&pc, with_key);
	if (!fuzz_socketpair(sv, data, size))
		return;
	ret = peer_dial(&pc, sv[0], "fuzz-host", "migrate-in", FUZZ_DIAL_NAME, "fuzz-job", NULL,
			0, false, false, &ps, err, sizeof(err));
	if (ret == 0) {
		if (!ps.control || ps.nr_data)
			abort();
		peer_session_close(&ps);
	} else if (!err[0] || ps.control) {
		abort();	/* a refusal has its reason and leaves nothing open */
	}
	close(sv[1]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	int fds = fuzz_fd_count();

	dial_once(data, size, false);
	dial_once(data, size, true);
	fuzz_check_fds(fds, "peer_dial");
	return 0;
}
