/*
 * What the etcd backend (arbiter_etcd.c) opens to its tests (the fuzzer,
 * tests/unit/test_arbiter.c), and to nothing else: its HTTP exchanges
 * answered by a function instead of the network, so that what etcd sends
 * back is read by the backend's own code, request by request; wait_free's
 * watch run once, without the reads and pauses around it; and which
 * members count as on this machine (a cluster on loopback is all local).
 */
#ifndef REPL_ARBITER_ETCD_TEST_H
#define REPL_ARBITER_ETCD_TEST_H

#include <stddef.h>
#include <stdint.h>

#include <curl/curl.h>

#include "arbiter.h"

/*
 * One exchange: body POSTed to url. The reply goes to sink(data, 1, n,
 * sink_arg) as it comes, in pieces (curl's write callback: taking fewer
 * than n bytes stops the transfer), and its HTTP status to *status. Returns
 * what curl_easy_perform would: CURLE_OK, CURLE_WRITE_ERROR when sink
 * stopped it, or another failure (a connection refused, a timeout...).
 */
typedef CURLcode repl_etcd_exchange_fn(void *arg, const char *url, const char *body,
				       curl_write_callback sink, void *sink_arg, long *status);

/* Every exchange of a (from repl_arbiter_etcd_new, before its first call)
 * goes to fn from now on. */
void repl_arbiter_etcd_set_exchange(struct repl_arbiter *a, repl_etcd_exchange_fn *fn,
				    void *arg);

/* From now on (between calls, never during one), leader_elsewhere counts
 * as on this machine exactly the endpoints named in endpoints ("H:P,..."
 * as given to repl_arbiter_etcd_new; "" for none) instead of those whose
 * host is an address of this machine; NULL goes back to the addresses.
 * 0 or -ENOMEM. */
int repl_arbiter_etcd_set_local(struct repl_arbiter *a, const char *endpoints);

/* wait_free's watch, once: guest's owner key watched for its deletion from
 * revision from for up to ms: 1 deleted, 0 not (cancelled, or ms passed),
 * -errno with why. */
int repl_arbiter_etcd_watch(struct repl_arbiter *a, const char *guest, int64_t from, long ms,
			    char *why, size_t whylen);

#endif
