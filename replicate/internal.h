/*
 * Private to replicate/: the standby's answers, one fixed 24-byte message
 * per epoch, little-endian, on the control channel back to the primary;
 * and the release of held output.
 */
#ifndef REPLICATE_INTERNAL_H
#define REPLICATE_INTERNAL_H

#include <assert.h>
#include <stdint.h>

#include "replicate.h"

#define REPL_ACK_MAGIC	0x4b414d56u	/* "VMAK" */

/* Wire values; fixed forever. */
enum repl_ack_kind {
	REPL_ACK_APPLIED = 1,	/* epoch applied: the standby holds its image */
	REPL_ACK_REFUSED = 2,	/* epoch refused (older token, bad seal); the end */
};

struct repl_ack {
	uint32_t magic;
	uint32_t kind;
	uint64_t epoch;
	uint64_t token;		/* the standby's current token */
};
static_assert(sizeof(struct repl_ack) == 24, "an acknowledgement is 24 bytes");

/* Release what epochs up to `epoch` produced (the replicating thread). */
void repl_release_upto(struct repl_progress *p, uint64_t epoch);

#endif
