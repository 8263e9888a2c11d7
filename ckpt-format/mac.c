/*
 * HMAC-SHA-256 with OpenSSL 3's EVP_MAC interface.
 */
#include "mac.h"

#include <stdlib.h>

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>

struct ckpt_mac {
	EVP_MAC *mac;
	EVP_MAC_CTX *ctx;
};

struct ckpt_mac *ckpt_mac_new(const uint8_t *key, size_t len)
{
	struct ckpt_mac *m = calloc(1, sizeof(*m));
	OSSL_PARAM params[2] = {
		OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
		OSSL_PARAM_construct_end(),
	};

	if (!m)
		return NULL;
	m->mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
	m->ctx = m->mac ? EVP_MAC_CTX_new(m->mac) : NULL;
	if (!m->ctx || !EVP_MAC_init(m->ctx, key, len, params)) {
		ckpt_mac_free(m);
		return NULL;
	}
	return m;
}

void ckpt_mac_update(struct ckpt_mac *m, const void *data, size_t len)
{
	if (m && len)
		EVP_MAC_update(m->ctx, data, len);
}

int ckpt_mac_final(struct ckpt_mac *m, uint8_t out[32])
{
	size_t n = 0;

	return m && EVP_MAC_final(m->ctx, out, &n, 32) && n == 32 ? 0 : -1;
}

void ckpt_mac_free(struct ckpt_mac *m)
{
	if (!m)
		return;
	EVP_MAC_CTX_free(m->ctx);
	EVP_MAC_free(m->mac);
	free(m);
}
