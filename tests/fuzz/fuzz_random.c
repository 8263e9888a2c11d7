/*
 * Fixed "randomness" for the peer targets: getrandom() is replaced in the
 * fuzz binary so the nonces of peer_auth.c are known in advance, and a
 * seed can carry a valid HMAC proof, which takes the fuzzer past the
 * authentication into what follows it. Never linked outside tests/fuzz.
 */
#include <string.h>
#include <sys/random.h>

#include "fuzz_peer.h"

ssize_t getrandom(void *buf, size_t buflen, unsigned int flags)
{
	memset(buf, FUZZ_RANDOM_BYTE, buflen);
	return (ssize_t)buflen;
}
