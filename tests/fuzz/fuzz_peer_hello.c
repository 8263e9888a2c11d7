/*
 * libFuzzer target for the listener's side of a peer connection
 * (peer_accept): the hello line, then, with a key, the answer to the
 * challenge. Each input is read twice, by a listener without a key and by
 * one with it; either must accept or refuse it with a reason, never crash,
 * leak a descriptor or wait.
 */
#include <stdlib.h>
#include <string.h>

#include "fuzz_peer.h"
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void accept_once(const uint8_t *data, size_t size, bool with_key)
{
	struct peer_config pc;
	char err[512] = "";
	struct peer_hello h;
	struct xport *x;
	int sv[2];

	fuzz_peer_config(&pc, with_key);
	if (!fuzz_socketpair(sv, data, size))
		return;
	x = peer_accept(&pc, sv[0], &h, err, sizeof(err));
	if (x) {
		/* what it accepted must be a name the service can use */
		if (!h.name[0] || strlen(h.name) >= sizeof(h.name) || strchr(h.name, '/') ||
		    h.name[0] == '.' || h.channels > PEER_MAX_DATA ||
		    (strcmp(h.op, "migrate-in") && strcmp(h.op, "replicate-in") &&
		     strcmp(h.op, "handover") && strcmp(h.op, "probe") &&
		     strcmp(h.op, "postcopy-ask") && strcmp(h.op, "libvirt-in")))
			abort();
		/* a lineage is what worker_repl.c makes, or none */
		if (h.arb.lineage[0] && (strlen(h.arb.lineage) != PEER_LINEAGE_LEN ||
		    strspn(h.arb.lineage, "0123456789abcdef") != PEER_LINEAGE_LEN ||
		    strcmp(h.op, "replicate-in")))
			abort();
		peer_answer(x, false, "fuzz");
		xport_close(x);
	} else if (!err[0]) {
		abort();	/* every refusal comes with its reason */
	}
	close(sv[1]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	int fds = fuzz_fd_count();

	accept_once(data, size, false);
	accept_once(data, size, true);
	fuzz_check_fds(fds, "peer_accept");
	return 0;
}
