/*
 * The arbiter: who may run a replicated guest. One owner key per guest
 * (vmigrate/owner/<guest>) held on a lease in a quorum store; the revision
 * that last wrote the key (the acquire that created it, or a later
 * reissue) is the fencing token carried in every epoch. A backend is an
 * ops table (etcd first; a Pacemaker/corosync one can be added as another
 * table without touching the callers).
 *
 * How the replication engine uses it:
 *
 *   standby                                primary
 *                                          acquire(guest, me, ttl) -> token T
 *   apply epochs of token T                every ttl/3: keepalive()
 *   primary lost:                          t0 = time just BEFORE the last keepalive
 *   wait_free(guest) ... 0 (key absent)           that returned 0
 *   take_over(guest, me, ttl, T) -> T'     fence (pause, hold output) when
 *   resume the guest, ship with T'                now >= t0 + ttl_granted - margin
 *                                          standby lost, going on without it:
 *                                          mark_stale(guest, T) before releasing
 *                                          output it did not acknowledge
 *   a new standby (or the old one          a new standby to synchronise:
 *   synchronised from scratch):            reissue(guest, me) -> T2, the key
 *   apply epochs of token T2 only                 held throughout; ship with T2
 *   primary lost: take_over(.., T2)        (take_over with T, stale or not,
 *                                                 fails from then on)
 *
 * The lease expires on the store at (the moment its leader renewed it) +
 * TTL, and that moment is after the client sent the request, so a deadline
 * counted from the send time always comes first (up to clock rate drift).
 * etcd 3.4 timing (default heartbeat 100 ms, election 1 s), measured by
 * tests/unit/test_arbiter.c: TTLs below 2 s are raised to 2 s; an expired
 * lease frees its key up to 0.5 s after the TTL; a killed leader stops
 * renewals for 1 to 2.5 s (the next leader then extends every lease by an
 * election timeout); a leader cut off from its quorum goes on renewing for
 * up to about 2 s (3.4 renews without asking the quorum). So use TTL >= 5 s
 * with a margin >= 1 s, or every leader election fences the primary.
 *
 * One arbiter holds at most one lease, so it stands for one ownership: the
 * guest given to the acquire that succeeded. Use one arbiter per guest.
 *
 * Errors (every call): 0 or a negative errno, with err (if not NULL) saying
 * which endpoint failed and why. Besides the per-call meanings below:
 *   -ETIMEDOUT     no endpoint answered in time (what a member without a
 *                  quorum does: it waits for a leader that never comes)
 *   -EAGAIN        an endpoint answered that it has no leader / is not ready
 *   -ECONNREFUSED, -EHOSTUNREACH, -ENETUNREACH, -ECONNRESET: unreachable
 *   -EPROTO        what answered is not an etcd (or sent a malformed reply)
 *   -EINVAL        a bad argument (guest name, owner id, ttl)
 * When several endpoints fail, the most telling of their errors is returned
 * (EAGAIN, then ETIMEDOUT, EPROTO, ECONNRESET, unreachable) and err lists
 * every one of them.
 *
 * Threads: acquire, take_over, keepalive and revoke share the lease and are
 * serialised on one lock (a keepalive waits while an acquire or revoke of
 * the same arbiter runs); owner(), mark_stale() and reissue() share another
 * connection and lock (reissue only reads the lease's id under the first),
 * so one thread may run keepalive while another runs owner(), mark_stale()
 * or reissue(); wait_free() and leader_elsewhere() make their own
 * connections and may run concurrently with anything, any number of
 * times. repl_arbiter_free()
 * must not run concurrently with any other call.
 *
 * Keys (etcd): vmigrate/owner/<guest> = owner id, on the lease; its mod
 * revision is the token (its create revision until a reissue writes it
 * again on the same lease). vmigrate/last/<guest>, on no lease (it outlives
 * every owner): written in every transaction that writes the owner key
 * (acquire, take_over, reissue), so its mod revision is the last owner's
 * latest token, and written again by mark_stale(), which makes it differ
 * from every token a standby holds. take_over requires the owner key absent
 * and last's mod revision equal to the standby's token.
 */
#ifndef REPL_ARBITER_H
#define REPL_ARBITER_H

#include <stddef.h>
#include <stdint.h>

/* Longest guest name and owner id the arbiter stores (bytes, without NUL). */
#define REPL_ARBITER_NAME_MAX	255

struct repl_arbiter;

/* A backend. Arguments are checked by the generic calls before they get here. */
struct repl_arbiter_ops {
	const char *name;
	/* acquire (after_token 0) and take_over */
	int (*acquire)(struct repl_arbiter *a, const char *guest, const char *owner_id,
		       int ttl_s, uint64_t after_token, uint64_t *token, int *ttl_granted_s,
		       char *err, size_t errlen);
	int (*mark_stale)(struct repl_arbiter *a, const char *guest, uint64_t token,
			  char *err, size_t errlen);
	int (*reissue)(struct repl_arbiter *a, const char *guest, const char *owner_id,
		       uint64_t *token, char *err, size_t errlen);
	int (*keepalive)(struct repl_arbiter *a, char *err, size_t errlen);
	int (*revoke)(struct repl_arbiter *a, char *err, size_t errlen);
	int (*owner)(struct repl_arbiter *a, const char *guest, char *owner_id, size_t len,
		     uint64_t *token, char *err, size_t errlen);
	int (*wait_free)(struct repl_arbiter *a, const char *guest, int timeout_ms,
			 char *err, size_t errlen);
	/* NULL: a store without a leader to place (nothing ever needs doing) */
	int (*leader_elsewhere)(struct repl_arbiter *a, char *moved, size_t movedlen,
				char *err, size_t errlen);
	void (*free)(struct repl_arbiter *a);
};

/* Each backend's struct starts with this. */
struct repl_arbiter {
	const struct repl_arbiter_ops *ops;
};

/* For backends and the calls above them: err (if not NULL) = the message,
 * returns rc. */
int repl_arbiter_fail(char *err, size_t errlen, int rc, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

/*
 * etcd v3 (3.4 and later) through its JSON gateway over plain HTTP.
 * endpoints: "H:P[,H:P...]" or "etcd://H:P[,H:P...]" (H a name, an IPv4
 * address or [IPv6]; at most 16). Every request is tried on the endpoint
 * that answered last first, then on the others, within request_timeout_ms
 * (100 .. 600000) in all: each try gets an even share of the time left.
 * Nothing is sent here; a wrong address shows on the first call.
 * Returns NULL with err on bad arguments.
 */
struct repl_arbiter *repl_arbiter_etcd_new(const char *endpoints, int request_timeout_ms,
					   char *err, size_t errlen);

/* Does not revoke the lease (it runs out by itself); revoke first to hand over. */
void repl_arbiter_free(struct repl_arbiter *a);

/*
 * Take guest's owner key if nobody holds it: grant a lease of ttl_s
 * (1 .. 86400; etcd raises a TTL below its minimum, 2 s with its default
 * timing), then one transaction "create vmigrate/owner/<guest> = owner_id
 * with that lease only if create_revision == 0" (which also writes
 * vmigrate/last/<guest>, for take_over). On success *token = the
 * revision of that transaction (strictly increasing across owners) and
 * *ttl_granted_s = the lease's TTL. -EBUSY when another holds the key (err
 * names its owner id and token); -EALREADY when this arbiter holds a lease
 * already. A lease granted for a transaction that failed is revoked (or,
 * when etcd cannot be reached, left to expire). Takes up to three requests
 * (grant, transaction, revoke), each within request_timeout_ms.
 * guest and owner_id: 1 .. REPL_ARBITER_NAME_MAX bytes, no '/' in guest,
 * no control characters.
 */
int repl_arbiter_acquire(struct repl_arbiter *a, const char *guest, const char *owner_id,
			 int ttl_s, uint64_t *token, int *ttl_granted_s, char *err, size_t errlen);

/*
 * A standby taking the guest over: acquire, but the one transaction also
 * requires that the last owner of guest had token after_token (the token
 * of the epochs the standby holds) and did not mark its standby stale
 * since. -ESTALE when it did, or when another owner came after it (err
 * says which): the standby's copy is behind what the outside saw and must
 * never run. -EBUSY, -EALREADY and the rest as acquire.
 */
int repl_arbiter_take_over(struct repl_arbiter *a, const char *guest, const char *owner_id,
			   int ttl_s, uint64_t after_token, uint64_t *token, int *ttl_granted_s,
			   char *err, size_t errlen);

/*
 * The owner with token goes on without its standby (the standby's epochs
 * fall behind from now on): after this returns 0, no take_over with that
 * token succeeds. Only the owner still holding the key with that token can
 * do it: -ENOENT when guest's key is gone or has another token (ownership
 * lost); other -errno when etcd cannot be reached (then nothing is marked:
 * release no output that the standby did not acknowledge). A standby
 * synchronised again later under the same token is refused as well: that
 * needs a new token (reissue).
 */
int repl_arbiter_mark_stale(struct repl_arbiter *a, const char *guest, uint64_t token,
			    char *err, size_t errlen);

/*
 * The owner takes a new token without letting go of the guest (to
 * synchronise a new standby after mark_stale): one transaction, only if
 * vmigrate/owner/<guest> is still on this arbiter's lease, that writes the
 * owner key again (value owner_id, same lease) and vmigrate/last/<guest>;
 * *token = the revision of that transaction, greater than every token
 * before it. The ownership never lapses. Afterwards take_over(after_token
 * = the new token) can succeed (once the key is free), take_over with any
 * older token fails with -ESTALE, and mark_stale and owner() know only the
 * new token. -ENOENT when the key is gone or on another lease, or this
 * arbiter holds no lease (ownership lost); other -errno as the rest (etcd
 * unreachable: nothing changed, or, if the reply was lost, maybe changed:
 * the caller keeps its old token and must not claim the new one; if it did
 * change, the old token is dead as well, mark_stale with it answers
 * -ENOENT, and a reissue that succeeds gives the token to use). guest and
 * owner_id as acquire.
 */
int repl_arbiter_reissue(struct repl_arbiter *a, const char *guest, const char *owner_id,
			 uint64_t *token, char *err, size_t errlen);

/*
 * Renew the lease once; returns within request_timeout_ms. 0 renewed (to
 * the TTL granted); -ENOENT the lease is gone (expired or revoked: the
 * ownership is lost, and the arbiter holds no lease any more) or none is
 * held; other -errno: etcd unreachable or without a quorum (the lease is
 * still ours until it runs out, so call again).
 */
int repl_arbiter_keepalive(struct repl_arbiter *a, char *err, size_t errlen);

/*
 * Give the key up at once (planned switch): revoke the lease, which deletes
 * the key. 0 when it is revoked or was gone already (or none was held); on
 * another -errno the lease is still held and will run out unless renewed.
 */
int repl_arbiter_revoke(struct repl_arbiter *a, char *err, size_t errlen);

/*
 * Who holds guest's key (a linearizable read: a member without a quorum
 * cannot answer it): 0 with owner_id (if not NULL; NUL-terminated, -ERANGE
 * when it does not fit in len) and *token (if not NULL) = the holder's
 * token (the key's mod revision: the acquire, take_over or reissue that
 * wrote it last); -ENOENT when nobody holds it.
 */
int repl_arbiter_owner(struct repl_arbiter *a, const char *guest, char *owner_id, size_t len,
		       uint64_t *token, char *err, size_t errlen);

/*
 * Block until guest's key is absent (deleted, or its lease expired) or
 * timeout_ms passes: 0 absent; -ETIMEDOUT still held at the end; another
 * -errno when at the end the store could not be asked (a request timeout is
 * then reported as -EAGAIN, so -ETIMEDOUT always means "held"). Returns
 * within about timeout_ms + request_timeout_ms (the last read may start
 * just before the deadline).
 * etcd: a linearizable read, then a watch for the key's deletion from the
 * revision read (so a deletion in between is not missed), and a fresh read
 * at least every second, so a watch stuck on a member that lost its quorum
 * cannot hide a deletion for long; a broken watch degrades to reads every
 * 100 ms; unreachable endpoints are retried until the timeout.
 */
int repl_arbiter_wait_free(struct repl_arbiter *a, const char *guest, int timeout_ms,
			   char *err, size_t errlen);

/*
 * When the store's leader is a member on this machine, hand leadership to
 * a member that is not (one that answers), so that this host's death costs
 * no election before the lease can run out: etcd 3.4's new leader gives
 * every lease its whole TTL again, so a primary host that dies with the
 * leader delays the takeover by about a TTL (measured by failover.sh).
 * 0 when nothing needed doing (the leader is elsewhere, or is none of the
 * endpoints) or leadership moved; moved (if not NULL) is then "" or says
 * from which member to which. -errno otherwise, err saying why (the
 * caller just tries again later): -ENOENT when every member that answered
 * is on this machine, -EAGAIN when leadership changed meanwhile, and the
 * errors of the members that did not answer when none of the others
 * leads, or none elsewhere could take over.
 * etcd: POST /v3/maintenance/status to every endpoint within
 * request_timeout_ms in all (each gets an even share of the time left);
 * the leader is the member that says it leads (the higher raft term if two
 * do); it is on this machine when its endpoint's host is an address of
 * one of this machine's interfaces (in a network namespace: the
 * namespace's), a loopback or unspecified address, or a name that resolves
 * to one. Then POST /v3/maintenance/transfer-leadership to the leader,
 * naming the member elsewhere with the highest raft index that is not a
 * learner; etcd answers once the new leader leads (within
 * request_timeout_ms more). The lease keeper (lease.h) calls this.
 */
int repl_arbiter_leader_elsewhere(struct repl_arbiter *a, char *moved, size_t movedlen,
				  char *err, size_t errlen);

#endif
