/*
 * Peer authentication with a shared key:
 *
 *   dialer                                   listener
 *   hello {name, nonce A} ----------------->
 *                  <----------------------- {challenge: nonce B,
 *                                             proof: HMAC(k, "listener" A B name)}
 *   check the proof
 *   {proof: HMAC(k, "dialer" A B name)} --->  check it, then hand the
 *                                             connection to the guest process
 */
#include "peer_auth.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "ipc.h"

int peer_key_load(const char *path, struct peer_key *k, char *err, size_t errlen)
{
	struct stat st;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	ssize_t n;

	memset(k, 0, sizeof(*k));
	if (fd < 0 || fstat(fd, &st) < 0) {
		snprintf(err, errlen, "peer key %s: %s", path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return -errno;
	}
	if (st.st_mode & 0077) {
		snprintf(err, errlen, "peer key %s must not be readable by others (chmod 600)", path);
		close(fd);
		return -EPERM;
	}
	n = read(fd, k->key, sizeof(k->key));
	close(fd);
	if (n < 16) {
		snprintf(err, errlen, "peer key %s must hold 16 to 64 bytes", path);
		return -EINVAL;
	}
	k->len = (size_t)n;
	k->set = true;
	return 0;
}

static void new_nonce(char out[65])
{
	unsigned char b[32];

	if (getrandom(b, sizeof(b), 0) != sizeof(b))
		memset(b, 0, sizeof(b));	/* getrandom does not fail for 32 bytes */
	for (int i = 0; i < 32; i++)
		sprintf(out + 2 * i, "%02x", b[i]);
}

static void proof(const struct peer_key *k, const char *role, const char *a,
		  const char *b, const char *name, char out[65])
{
	unsigned char mac[EVP_MAX_MD_SIZE];
	unsigned int len = 0;
	char msg[512];
	int n = snprintf(msg, sizeof(msg), "vmigrate-peer %s %s %s %s", role, a, b, name);

	out[0] = 0;	/* matches no proof (same() wants 64 digits) */
	if (n < 0 || (size_t)n >= sizeof(msg))
		return;
	HMAC(EVP_sha256(), k->key, (int)k->len, (unsigned char *)msg, (size_t)n, mac, &len);
	for (unsigned i = 0; i < 32 && i < len; i++)
		sprintf(out + 2 * i, "%02x", mac[i]);
	out[64] = 0;
}

static bool same(const char *a, const char *b)
{
	return a && b && strlen(a) == 64 && strlen(b) == 64 && !CRYPTO_memcmp(a, b, 64);
}

void peer_auth_hello(const struct peer_key *k, struct json_object *hello, char nonce[65])
{
	nonce[0] = 0;
	if (!k->set)
		return;
	new_nonce(nonce);
	json_object_object_add(hello, "nonce", json_object_new_string(nonce));
}

int peer_auth_challenge(const struct peer_key *k, struct json_object *hello,
			struct json_object *challenge, char nonce[65], char *err, size_t errlen)
{
	const char *a = ipc_str(hello, "nonce", NULL), *name = ipc_str(hello, "name", "");
	char p[65];

	nonce[0] = 0;
	if (!k->set)
		return 0;
	if (!a || strlen(a) != 64) {
		snprintf(err, errlen, "this host requires peer authentication (--peer-key)");
		return -EACCES;
	}
	new_nonce(nonce);
	proof(k, "listener", a, nonce, name, p);
	json_object_object_add(challenge, "challenge", json_object_new_string(nonce));
	json_object_object_add(challenge, "proof", json_object_new_string(p));
	return 0;
}

int peer_auth_dialer(const struct peer_key *k, const char *nonce, const char *name,
		     struct json_object *challenge, struct json_object *answer,
		     char *err, size_t errlen)
{
	const char *b = ipc_str(challenge, "challenge", NULL);
	char want[65], p[65];

	if (!k->set)
		return 0;
	if (!b || strlen(b) != 64) {
		snprintf(err, errlen, "the destination did not authenticate itself "
			 "(it has no --peer-key)");
		return -EACCES;
	}
	proof(k, "listener", nonce, b, name, want);
	if (!same(want, ipc_str(challenge, "proof", NULL))) {
		snprintf(err, errlen, "the destination failed authentication (another key)");
		return -EACCES;
	}
	proof(k, "dialer", nonce, b, name, p);
	json_object_object_add(answer, "proof", json_object_new_string(p));
	return 0;
}

int peer_auth_check(const struct peer_key *k, const char *hello_nonce, const char *nonce,
		    const char *name, struct json_object *answer, char *err, size_t errlen)
{
	char want[65];

	if (!k->set)
		return 0;
	proof(k, "dialer", hello_nonce, nonce, name, want);
	if (!same(want, ipc_str(answer, "proof", NULL))) {
		snprintf(err, errlen, "the source failed authentication");
		return -EACCES;
	}
	return 0;
}
