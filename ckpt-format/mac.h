/*
 * HMAC-SHA-256 over an image's bytes, for checkpoint files at rest: the
 * checksums and the digest find damage, only a keyed MAC finds tampering.
 * Private to ckpt-format.
 */
#ifndef CKPT_MAC_H
#define CKPT_MAC_H

#include <stddef.h>
#include <stdint.h>

struct ckpt_mac;

struct ckpt_mac *ckpt_mac_new(const uint8_t *key, size_t len);
void ckpt_mac_update(struct ckpt_mac *m, const void *data, size_t len);
/* The 32-byte MAC of everything updated so far; 0 or -1. */
int ckpt_mac_final(struct ckpt_mac *m, uint8_t out[32]);
void ckpt_mac_free(struct ckpt_mac *m);

#endif
