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
 * reachability, the session (TLS), a data port, bandwidth over a second.
 * Takes seconds: run it where nothing waits on it. */
struct json_object *peer_check(const struct peer_config *pc, const char *dest);

#endif
