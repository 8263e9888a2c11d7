/*
 * The connection between two hosts' guest processes, as it opens: TLS
 * (default) or plain TCP (--insecure on both ends), then the hello that
 * names the guest, then, with a peer key, the HMAC challenge both ways.
 * Run by the guest processes themselves, since a TLS session cannot be
 * handed from one process to another.
 */
#ifndef PEER_H
#define PEER_H

#include <stdbool.h>
#include <stddef.h>

#include <json-c/json.h>

#include "peer_auth.h"
#include "transport.h"

struct peer_config {
	bool insecure;			/* plain TCP, logged as such */
	char tls_dir[400];		/* ca.crt, cert.pem, key.pem */
	char allow[400];		/* clients let in: comma-separated names, "" = any */
	struct peer_key key;
	int io_timeout_ms;
	int handshake_timeout_ms;
};

/* The configuration travels with each migrate request to the guest
 * process (over its root-only socket), so a guest started long ago uses
 * what the service uses now. */
struct json_object *peer_config_to_json(const struct peer_config *pc);
void peer_config_from_json(struct json_object *o, struct peer_config *pc);

/* Check the configuration once, at service start (files, key, contexts). */
int peer_config_check(const struct peer_config *pc, char *err, size_t errlen);

/* Source: secure the dialled socket, name the guest, authenticate. The
 * channel owns fd from here on. NULL with err when refused. */
struct xport *peer_dial(const struct peer_config *pc, int fd, const char *host,
			const char *name, char *err, size_t errlen);

/* Destination: secure the accepted socket, read the hello, authenticate.
 * On success name holds the guest's name; answer with peer_answer(). */
struct xport *peer_accept(const struct peer_config *pc, int fd, char *name, size_t namelen,
			  char *err, size_t errlen);
int peer_answer(struct xport *x, bool ok, const char *why);

#endif
