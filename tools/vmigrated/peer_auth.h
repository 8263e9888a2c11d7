/*
 * Mutual authentication of two vmigrated services that share a secret key
 * (--peer-key FILE): each proves it holds the key with an HMAC-SHA-256
 * over both sides' fresh nonces and the guest's name, so neither a replay
 * nor a service without the key gets a guest. It authenticates the peers
 * only; the stream itself is protected by TLS (the transport issue).
 */
#ifndef PEER_AUTH_H
#define PEER_AUTH_H

#include <json-c/json.h>
#include <stdbool.h>
#include <stddef.h>

struct peer_key {
	bool set;
	unsigned char key[64];
	size_t len;
};

/* Read a key file (16 to 64 bytes, not readable by others). */
int peer_key_load(const char *path, struct peer_key *k, char *err, size_t errlen);

/* Dialer: add our nonce to the hello; then check the listener's reply and
 * produce our proof. */
void peer_auth_hello(const struct peer_key *k, struct json_object *hello, char nonce[65]);
int peer_auth_dialer(const struct peer_key *k, const char *nonce, const char *name,
		     struct json_object *challenge, struct json_object *answer,
		     char *err, size_t errlen);

/* Listener: the challenge for a hello, and the check of the answer. */
int peer_auth_challenge(const struct peer_key *k, struct json_object *hello,
			struct json_object *challenge, char nonce[65], char *err, size_t errlen);
int peer_auth_check(const struct peer_key *k, const char *hello_nonce, const char *nonce,
		    const char *name, struct json_object *answer, char *err, size_t errlen);

#endif
