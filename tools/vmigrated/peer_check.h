/*
 * `vmigrate check HOST`, the service's part: the path to another host's
 * service checked the way a migration would take it, with this service's
 * own TLS directory, peer key and timeouts.
 */
#ifndef PEER_CHECK_H
#define PEER_CHECK_H

#include <json-c/json.h>

#include "peer.h"

/* {"ok":true,"checks":[{"check","result":"PASS|WARN|FAIL","detail"},...]}:
 * reachability, the session (TLS), a data port, bandwidth over a second,
 * to dest; with home_port (this service's port for peers, > 0), the same
 * from dest back to this host, dest trying it. Takes seconds: run it
 * where nothing waits on it (this service must go on serving: dest dials
 * it). */
struct json_object *peer_check(const struct peer_config *pc, const char *dest, int home_port);

#endif
