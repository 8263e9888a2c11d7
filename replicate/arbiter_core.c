/*
 * The arbiter's generic calls: check the arguments every backend would
 * check, then dispatch through the backend's ops table (arbiter.h).
 */
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "arbiter.h"

int repl_arbiter_fail(char *err, size_t errlen, int rc, const char *fmt, ...)
{
	va_list ap;

	if (err && errlen) {
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return rc;
}

#define fail repl_arbiter_fail	/* the many error returns, short */

/* 1 .. REPL_ARBITER_NAME_MAX bytes, no control characters, no '/' if a key part. */
static bool name_ok(const char *s, bool key_part)
{
	size_t n;

	if (!s)
		return false;
	n = strnlen(s, REPL_ARBITER_NAME_MAX + 1);
	if (n == 0 || n > REPL_ARBITER_NAME_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c < 0x20 || c == 0x7f || (key_part && c == '/'))
			return false;
	}
	return true;
}

static int check_guest(const char *guest, char *err, size_t errlen)
{
	if (!name_ok(guest, true))
		return fail(err, errlen, -EINVAL, "arbiter: a guest name needs 1 to %d "
			    "characters, no '/' and no control characters", REPL_ARBITER_NAME_MAX);
	return 0;
}

static int check_owner_id(const char *owner_id, char *err, size_t errlen)
{
	if (!name_ok(owner_id, false))
		return fail(err, errlen, -EINVAL, "arbiter: an owner id needs 1 to %d "
			    "characters and no control characters", REPL_ARBITER_NAME_MAX);
	return 0;
}

void repl_arbiter_free(struct repl_arbiter *a)
{
	if (a)
		a->ops->free(a);
}

static int take(struct repl_arbiter *a, const char *guest, const char *owner_id, int ttl_s,
		uint64_t after_token, uint64_t *token, int *ttl_granted_s, char *err, size_t errlen)
{
	int rc = check_guest(guest, err, errlen);

	if (!rc)
		rc = check_owner_id(owner_id, err, errlen);
	if (rc)
		return rc;
	if (ttl_s < 1 || ttl_s > 86400)
		return fail(err, errlen, -EINVAL, "arbiter: a lease TTL of %d s is not in "
			    "1 .. 86400", ttl_s);
	if (!token || !ttl_granted_s)
		return fail(err, errlen, -EINVAL, "arbiter: acquire needs token and ttl_granted_s");
	if (after_token > INT64_MAX)
		return fail(err, errlen, -EINVAL, "arbiter: token %llu is not a revision",
			    (unsigned long long)after_token);
	return a->ops->acquire(a, guest, owner_id, ttl_s, after_token, token, ttl_granted_s,
			       err, errlen);
}

int repl_arbiter_acquire(struct repl_arbiter *a, const char *guest, const char *owner_id,
			 int ttl_s, uint64_t *token, int *ttl_granted_s, char *err, size_t errlen)
{
	return take(a, guest, owner_id, ttl_s, 0, token, ttl_granted_s, err, errlen);
}

int repl_arbiter_take_over(struct repl_arbiter *a, const char *guest, const char *owner_id,
			   int ttl_s, uint64_t after_token, uint64_t *token, int *ttl_granted_s,
			   char *err, size_t errlen)
{
	if (after_token == 0)
		return fail(err, errlen, -EINVAL, "arbiter: a take-over needs the token of the "
			    "epochs held");
	return take(a, guest, owner_id, ttl_s, after_token, token, ttl_granted_s, err, errlen);
}

int repl_arbiter_mark_stale(struct repl_arbiter *a, const char *guest, uint64_t token,
			    char *err, size_t errlen)
{
	int rc = check_guest(guest, err, errlen);

	if (rc)
		return rc;
	if (token == 0 || token > INT64_MAX)
		return fail(err, errlen, -EINVAL, "arbiter: token %llu is not a revision",
			    (unsigned long long)token);
	return a->ops->mark_stale(a, guest, token, err, errlen);
}

int repl_arbiter_reissue(struct repl_arbiter *a, const char *guest, const char *owner_id,
			 uint64_t *token, char *err, size_t errlen)
{
	int rc = check_guest(guest, err, errlen);

	if (!rc)
		rc = check_owner_id(owner_id, err, errlen);
	if (rc)
		return rc;
	if (!token)
		return fail(err, errlen, -EINVAL, "arbiter: reissue needs token");
	return a->ops->reissue(a, guest, owner_id, token, err, errlen);
}

int repl_arbiter_keepalive(struct repl_arbiter *a, char *err, size_t errlen)
{
	return a->ops->keepalive(a, err, errlen);
}

int repl_arbiter_revoke(struct repl_arbiter *a, char *err, size_t errlen)
{
	return a->ops->revoke(a, err, errlen);
}

int repl_arbiter_owner(struct repl_arbiter *a, const char *guest, char *owner_id, size_t len,
		       uint64_t *token, char *err, size_t errlen)
{
	int rc = check_guest(guest, err, errlen);

	if (rc)
		return rc;
	if (owner_id && len == 0)
		return fail(err, errlen, -EINVAL, "arbiter: owner() was given an empty buffer");
	return a->ops->owner(a, guest, owner_id, len, token, err, errlen);
}

int repl_arbiter_wait_free(struct repl_arbiter *a, const char *guest, int timeout_ms,
			   char *err, size_t errlen)
{
	int rc = check_guest(guest, err, errlen);

	if (rc)
		return rc;
	if (timeout_ms < 0)
		return fail(err, errlen, -EINVAL, "arbiter: wait_free timeout %d ms < 0",
			    timeout_ms);
	return a->ops->wait_free(a, guest, timeout_ms, err, errlen);
}

int repl_arbiter_leader_elsewhere(struct repl_arbiter *a, char *moved, size_t movedlen,
				  char *err, size_t errlen)
{
	if (moved && movedlen)
		moved[0] = 0;
	if (!a->ops->leader_elsewhere)
		return 0;
	return a->ops->leader_elsewhere(a, moved, movedlen, err, errlen);
}
