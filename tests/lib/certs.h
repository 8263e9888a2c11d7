/*
 * Test certificates made with OpenSSL's library: a CA, and leaf
 * certificates it (or another CA) signs, with chosen names and validity,
 * written as PEM files for the TLS tests.
 */
#ifndef TEST_CERTS_H
#define TEST_CERTS_H

#include <stdbool.h>

struct cert_paths {
	char cert[4200];
	char key[4200];
};

/* A self-signed CA in dir/NAME.crt and dir/NAME.key. */
int certs_make_ca(const char *dir, const char *name, struct cert_paths *out);
/* A leaf signed by ca with common name cn and one SAN (DNS name or IP),
 * valid from now + from_s to now + to_s seconds. */
int certs_make_leaf(const char *dir, const char *name, const struct cert_paths *ca,
		    const char *cn, const char *san, long from_s, long to_s,
		    struct cert_paths *out);

#endif
