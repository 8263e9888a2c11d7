/*
 * What the peer targets and their seeds agree on: the key, the byte every
 * nonce is made of (fuzz_random.c) and the guest's name the dialer uses.
 * tests/fuzz/mkseeds.py computes the seeds' proofs from the same values.
 */
#ifndef FUZZ_PEER_H
#define FUZZ_PEER_H

#include <string.h>

#include "peer.h"

#define FUZZ_RANDOM_BYTE	0x5a	/* every nonce reads "5a5a...5a" */
#define FUZZ_KEY		"vmigrate-fuzz-key-0123456789abc"	/* 31 bytes */
#define FUZZ_DIAL_NAME		"g1"

/* Plain TCP over the socketpair, with or without the key; short timeouts
 * in case something waits after all. */
static inline void fuzz_peer_config(struct peer_config *pc, bool with_key)
{
	memset(pc, 0, sizeof(*pc));
	pc->insecure = true;
	pc->io_timeout_ms = 100;
	pc->handshake_timeout_ms = 100;
	if (with_key) {
		pc->key.set = true;
		pc->key.len = strlen(FUZZ_KEY);
		memcpy(pc->key.key, FUZZ_KEY, pc->key.len);
	}
}

#endif
