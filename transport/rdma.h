/*
 * RDMA channels (librdmacm + libibverbs): a reliable-connected queue pair
 * per channel, registered buffers, and credit-based flow control, behind
 * the same ops table as tcp and tls. Untested on the development machines,
 * which have no RDMA device: its tests skip there, saying so.
 */
#ifndef TRANSPORT_RDMA_H
#define TRANSPORT_RDMA_H

#include <stdbool.h>
#include <stddef.h>

#include "transport.h"

/* True when an RDMA device is present; otherwise why not. */
bool xport_rdma_available(char *why, size_t len);

struct xport_rdma_listener;

/* Listen on host:port (port "0": any; the chosen one in *bound_port). */
struct xport_rdma_listener *xport_rdma_listen(const char *host, const char *port,
					      int *bound_port, char *err, size_t errlen);
struct xport *xport_rdma_accept(struct xport_rdma_listener *l, int timeout_ms,
				char *err, size_t errlen);
void xport_rdma_listener_free(struct xport_rdma_listener *l);

struct xport *xport_rdma_connect(const char *host, const char *port, int timeout_ms,
				 char *err, size_t errlen);

#endif
