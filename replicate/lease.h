/*
 * Ownership of a replicated guest on the arbiter, kept alive: a thread
 * renews the lease every TTL/3 and knows until when the guest is surely
 * ours: the send time of the last renewal that succeeded + TTL - margin,
 * which comes before the store can expire the lease and let another host
 * take the guest (arbiter.h). At that deadline, renewed or not, the
 * keeper calls the fence callback once, so the owner stops the guest and
 * its output before anyone else may start them. While it owns the guest it
 * also keeps the store's leader off this host (at once, then every 10 s:
 * repl_arbiter_leader_elsewhere), so that this host's death costs no
 * election before the standby may take over.
 */
#ifndef REPL_LEASE_H
#define REPL_LEASE_H

#include <stdbool.h>
#include <stdint.h>

#include "arbiter.h"

struct repl_lease;

typedef void (*repl_fence_fn)(void *opaque, const char *why);

/* Take guest's owner key (-EBUSY: another holds it) and keep it; *token
 * is the fencing token. after_token: 0 for a first owner; a standby
 * taking over gives the token of the epochs it holds, and is refused
 * (-ESTALE) when that primary marked its standby stale (arbiter.h). fence
 * is called, at most once, from the keeper's thread. The arbiter stays the
 * caller's; it outlives the lease. */
int repl_lease_take(struct repl_arbiter *a, const char *guest, const char *owner_id,
		    int ttl_s, uint64_t after_token, repl_fence_fn fence, void *opaque,
		    struct repl_lease **out, uint64_t *token, char *err, size_t errlen);

/* May the owner still act (run the guest, release output)? */
bool repl_lease_valid(struct repl_lease *l);
/* Monotonic seconds until which it may. */
double repl_lease_deadline(struct repl_lease *l);
int repl_lease_ttl(const struct repl_lease *l);
/* The fault point repl-skip-self-fence: this owner pretends to own the
 * guest for ever and never fences (tests show the checker catches it). */
bool repl_lease_skips_fence(const struct repl_lease *l);

/* Give the key up at once (a planned switch): revoke, stop the keeper. */
int repl_lease_release(struct repl_lease *l, char *err, size_t errlen);
/* Stop renewing without revoking (the lease runs out by itself). */
void repl_lease_free(struct repl_lease *l);

#endif
