/*
 * The arbiter's etcd backend: etcd v3's JSON gateway over plain HTTP
 * (libcurl's easy interface, json-c), failing over across the cluster's
 * endpoints. Every field of every reply is checked before use: what answers
 * may not be an etcd at all.
 *
 *   acquire    POST /v3/lease/grant {TTL}                     -> ID, TTL
 *              POST /v3/kv/txn  if create_revision(owner) == 0
 *                               [take_over: and mod_revision(last) == after_token]
 *                                 then put(owner, id, lease), put(last, id)
 *                                                              -> header.revision = token
 *                                 else range(owner) [, range(last)]
 *                                                              -> holder and its token
 *              POST /v3/lease/revoke {ID}                      (when the txn failed)
 *   mark_stale POST /v3/kv/txn  if mod_revision(owner) == token
 *                                 then put(last, "stale ...")  (a revision past every token)
 *                                 else range(owner)
 *   reissue    POST /v3/kv/txn  if lease(owner) == our lease
 *                                 then put(owner, id, lease), put(last, id)
 *                                                              -> header.revision = token
 *                                 else range(owner)            -> its holder, if any
 *   keepalive  POST /v3/lease/keepalive {ID}                   -> {"result":{ID, TTL}}, TTL 0 = gone
 *   revoke     POST /v3/lease/revoke {ID}
 *   owner      POST /v3/kv/range {key}                         -> kvs[0]
 *   wait_free  range; then POST /v3/watch {create_request: key, start_revision =
 *              range's revision + 1, NOPUT}: newline-separated {"result":...}
 *              until a DELETE of the key; a fresh range every second.
 *   leader_elsewhere
 *              POST /v3/maintenance/status {} to each endpoint
 *                                  -> header.member_id, leader, raftTerm, raftIndex, isLearner
 *              POST /v3/maintenance/transfer-leadership {targetID} to the leader, when its
 *                               endpoint is on this machine  -> {} once the target leads
 *
 * int64s (and member ids, uint64s) arrive as JSON strings, false and 0
 * fields are left out, keys and
 * values are base64. An error is {"error","code","message"} or, on the
 * streaming calls, {"error":{"grpc_code","message",...}} with an HTTP status.
 *
 * A retried request may have been applied by the endpoint that timed out:
 * a grant then leaves a lease with no key that runs out by itself; a txn
 * then finds the key held by our owner id on our lease, which is success;
 * a reissue then writes the key once more, and the later revision is the
 * token (the earlier one was never given out); a revoke then finds the
 * lease gone, which is what was asked.
 *
 * The token is the owner key's mod revision: the acquire's transaction
 * created the key, a reissue's wrote it again (one put per key: etcd
 * refuses a txn with two operations on the same key).
 */
#include <errno.h>
#include <ifaddrs.h>
#include <inttypes.h>
#include <netdb.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <curl/curl.h>
#include <json-c/json.h>
#include <openssl/evp.h>

#include "arbiter.h"
#include "arbiter_etcd_test.h"

#define EP_MAX		16
#define EP_LEN		255		/* "host:port" */
#define REPLY_MAX	(256 * 1024)	/* larger replies are not etcd's answer to us */
#define VALUE_MAX	1024		/* a key or value we decode */
#define KEY_PREFIX	"vmigrate/owner/"
#define LAST_PREFIX	"vmigrate/last/"	/* shorter than KEY_PREFIX */
#define WATCH_SLICE_MS	1000		/* wait_free re-reads the key at least this often */
#define MSG_LEN		1024

struct endpoint {
	char name[EP_LEN + 1];		/* as given: host:port */
	char url[EP_LEN + 8];		/* http://host:port */
	char host[EP_LEN + 1];		/* the host alone (an IPv6 address without [ ]) */
};

struct etcd_arbiter {
	struct repl_arbiter base;
	struct endpoint ep[EP_MAX];	/* read-only after new() */
	int n_ep;
	int timeout_ms;
	struct curl_slist *headers;	/* read-only after new() */
	_Atomic int preferred;		/* the endpoint that answered last; any thread */

	pthread_mutex_t lease_lock;	/* serialises acquire, keepalive, revoke */
	CURL *lease_curl;		/* under lease_lock */
	int64_t lease_id;		/* under lease_lock; 0 = none held */
	int lease_ttl;			/* under lease_lock */
	char guest[REPL_ARBITER_NAME_MAX + 1];	/* under lease_lock: the key the lease holds */

	pthread_mutex_t query_lock;	/* serialises owner(), mark_stale, reissue */
	CURL *query_curl;		/* under query_lock */

	/* instead of HTTP, for the fuzzer (arbiter_etcd_test.h); set before any call */
	repl_etcd_exchange_fn *exchange;
	void *exchange_arg;
	/* tests: the endpoints on "this machine" (H:P,...), instead of the
	 * interfaces' addresses; NULL when not set; set between calls */
	char *local_eps;
};

static const struct repl_arbiter_ops etcd_ops;

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc;

static void curl_init(void)
{
	curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

#define fail repl_arbiter_fail	/* the many error returns, short */

static long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000L + ts.tv_nsec / 1000000;
}

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

/* What a peer sent, printable, cut to fit out (with "..." when cut). */
static void excerpt(const char *p, size_t len, char *out, size_t outlen)
{
	size_t room = outlen - 4, o = 0;

	for (size_t i = 0; i < len && o < room; i++) {
		unsigned char c = (unsigned char)p[i];

		out[o++] = (c >= 0x20 && c < 0x7f) ? (char)c : '.';
	}
	if (len > room) {
		memcpy(out + o, "...", 3);
		o += 3;
	}
	out[o] = 0;
}

/* ---- base64 (OpenSSL), strict on input ---- */

static int b64_encode(const void *in, size_t n, char *out, size_t cap)
{
	if (4 * ((n + 2) / 3) + 1 > cap)
		return -ENAMETOOLONG;
	EVP_EncodeBlock((unsigned char *)out, in, (int)n);
	return 0;
}

static bool b64_char(char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	       c == '+' || c == '/';
}

/* Decodes into out (cap bytes, NUL-terminated beyond the data); -EPROTO if not base64. */
static int b64_decode(const char *in, size_t n, char *out, size_t cap, size_t *outlen)
{
	unsigned char tmp[VALUE_MAX + 3];
	size_t pads = 0;
	int got;

	if (n % 4)
		return -EPROTO;
	if (n / 4 * 3 > sizeof(tmp) || n / 4 * 3 > cap + 2)
		return -ERANGE;
	while (pads < 2 && pads < n && in[n - 1 - pads] == '=')
		pads++;
	for (size_t i = 0; i < n - pads; i++)
		if (!b64_char(in[i]))
			return -EPROTO;
	if (n == 0) {
		*outlen = 0;
		if (cap)
			out[0] = 0;
		return 0;
	}
	got = EVP_DecodeBlock(tmp, (const unsigned char *)in, (int)n);
	if (got < 0 || (size_t)got != n / 4 * 3)
		return -EPROTO;
	*outlen = (size_t)got - pads;
	if (*outlen + 1 > cap)
		return -ERANGE;
	memcpy(out, tmp, *outlen);
	out[*outlen] = 0;
	return 0;
}

/* ---- fields of a reply: 1 present and valid, 0 absent (proto3's default), -1 malformed ---- */

static int j_field(json_object *o, const char *key, json_type t, json_object **out)
{
	json_object *f;

	*out = NULL;
	if (!json_object_object_get_ex(o, key, &f) || !f)
		return 0;
	if (!json_object_is_type(f, t))
		return -1;
	*out = f;
	return 1;
}

/* Decimal digits p (one at least, nothing else) into *x; false on overflow or junk. */
static bool dec_u64(const char *p, uint64_t *x)
{
	*x = 0;
	if (!*p)
		return false;
	for (; *p; p++) {
		if (*p < '0' || *p > '9')
			return false;
		if (*x > (UINT64_MAX - 9) / 10)
			return false;
		*x = *x * 10 + (uint64_t)(*p - '0');
	}
	return true;
}

static int j_int64(json_object *o, const char *key, int64_t *v)
{
	json_object *f;
	const char *s, *p;
	int len;
	bool neg;
	uint64_t x;

	*v = 0;
	if (!json_object_object_get_ex(o, key, &f) || !f)
		return 0;
	if (json_object_is_type(f, json_type_int)) {
		*v = json_object_get_int64(f);
		return 1;
	}
	if (!json_object_is_type(f, json_type_string))
		return -1;
	s = json_object_get_string(f);
	len = json_object_get_string_len(f);
	if (len < 1 || len > 20 || (int)strlen(s) != len)
		return -1;
	neg = s[0] == '-';
	p = s + neg;
	if (!dec_u64(p, &x) || x > (uint64_t)INT64_MAX + neg)
		return -1;
	*v = neg ? (int64_t)(0 - x) : (int64_t)x;
	return 1;
}

/* A uint64 (etcd's member ids): a decimal string, or a JSON number >= 0. */
static int j_uint64(json_object *o, const char *key, uint64_t *v)
{
	json_object *f;
	const char *s;
	int len;

	*v = 0;
	if (!json_object_object_get_ex(o, key, &f) || !f)
		return 0;
	if (json_object_is_type(f, json_type_int)) {
		if (json_object_get_int64(f) < 0)
			return -1;
		*v = json_object_get_uint64(f);
		return 1;
	}
	if (!json_object_is_type(f, json_type_string))
		return -1;
	s = json_object_get_string(f);
	len = json_object_get_string_len(f);
	if (len < 1 || len > 20 || (int)strlen(s) != len || !dec_u64(s, v))
		return -1;
	return 1;
}

static int j_bool(json_object *o, const char *key, bool *v)
{
	json_object *f;
	int r = j_field(o, key, json_type_boolean, &f);

	*v = r > 0 && json_object_get_boolean(f);
	return r;
}

/* A base64 field decoded; absent is the empty string. */
static int j_b64(json_object *o, const char *key, char *out, size_t cap, size_t *outlen)
{
	json_object *f;
	int r = j_field(o, key, json_type_string, &f);

	*outlen = 0;
	if (cap)
		out[0] = 0;
	if (r <= 0)
		return r;
	return b64_decode(json_object_get_string(f), (size_t)json_object_get_string_len(f),
			  out, cap, outlen) ? -1 : 1;
}

/* One JSON object filling all of p[0..len) but whitespace; NULL otherwise. */
static json_object *parse_object(const char *p, size_t len)
{
	json_tokener *tok = json_tokener_new_ex(32);
	json_object *o;
	size_t end;

	if (!tok)
		return NULL;
	json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
	o = json_tokener_parse_ex(tok, p, (int)len);
	if (!o || json_tokener_get_error(tok) != json_tokener_success ||
	    !json_object_is_type(o, json_type_object)) {
		json_object_put(o);
		json_tokener_free(tok);
		return NULL;
	}
	end = json_tokener_get_parse_end(tok);
	json_tokener_free(tok);
	for (; end < len; end++) {
		if (p[end] != ' ' && p[end] != '\n' && p[end] != '\r' && p[end] != '\t') {
			json_object_put(o);
			return NULL;
		}
	}
	return o;
}

/*
 * An etcd error reply: {"error":"..","code":N,"message":".."} or, from a
 * streaming call, {"error":{"grpc_code":N,"message":".."}}. True with the
 * gRPC code and message if o is one.
 */
static bool etcd_error(json_object *o, int64_t *code, const char **msg)
{
	json_object *e, *m;

	if (j_field(o, "error", json_type_object, &e) > 0) {
		if (j_int64(e, "grpc_code", code) <= 0 ||
		    j_field(e, "message", json_type_string, &m) <= 0)
			return false;
		*msg = json_object_get_string(m);
		return true;
	}
	if (j_int64(o, "code", code) <= 0)
		return false;
	if (j_field(o, "message", json_type_string, &m) <= 0 &&
	    j_field(o, "error", json_type_string, &m) <= 0)
		return false;
	*msg = json_object_get_string(m);
	return true;
}

/* gRPC status -> errno; *retry when another member may answer better. */
static int grpc_errno(int64_t code, bool *retry)
{
	*retry = true;
	switch (code) {
	case 1:  return -EAGAIN;	/* Canceled */
	case 2:  return -EIO;		/* Unknown */
	case 4:  return -ETIMEDOUT;	/* DeadlineExceeded: etcd's own request timeout */
	case 8:  return -EAGAIN;	/* ResourceExhausted: too many requests */
	case 10: return -EAGAIN;	/* Aborted */
	case 13: return -EIO;		/* Internal */
	case 14: return -EAGAIN;	/* Unavailable: no leader, leader changed, timed out */
	}
	*retry = false;
	switch (code) {
	case 3:  return -EINVAL;	/* InvalidArgument */
	case 5:  return -ENOENT;	/* NotFound: lease not found */
	case 6:  return -EEXIST;	/* AlreadyExists */
	case 7:  return -EACCES;	/* PermissionDenied */
	case 11: return -ERANGE;	/* OutOfRange */
	case 12: return -EOPNOTSUPP;	/* Unimplemented */
	case 16: return -EACCES;	/* Unauthenticated */
	}
	return -EIO;
}

/* ---- requests ---- */

struct buf {
	char *p;
	size_t len, cap;
	bool too_big;
};

static bool buf_add(struct buf *b, const char *data, size_t n)
{
	if (n > REPLY_MAX - b->len) {
		b->too_big = true;
		return false;
	}
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 4096;
		char *p;

		while (cap < b->len + n + 1)
			cap *= 2;
		p = realloc(b->p, cap);
		if (!p) {
			b->too_big = true;
			return false;
		}
		b->p = p;
		b->cap = cap;
	}
	memcpy(b->p + b->len, data, n);
	b->len += n;
	b->p[b->len] = 0;
	return true;
}

static size_t buf_write(char *data, size_t size, size_t n, void *arg)
{
	return buf_add(arg, data, size * n) ? size * n : 0;
}

static CURL *new_handle(struct etcd_arbiter *e)
{
	CURL *c = curl_easy_init();

	if (!c)
		return NULL;
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_PROXY, "");		/* never through an http_proxy */
#if LIBCURL_VERSION_NUM >= 0x075500
	curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http");
#endif
	curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(c, CURLOPT_TCP_NODELAY, 1L);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, e->headers);
	curl_easy_setopt(c, CURLOPT_POST, 1L);
	return c;
}

/*
 * One POST of body to url within ms, the reply handed to sink(sink_arg) as
 * it comes: curl's code, *status the HTTP status (0 when none came).
 */
static CURLcode http_post(struct etcd_arbiter *e, CURL *c, const char *url, const char *body,
			  long ms, curl_write_callback sink, void *sink_arg, char *ebuf,
			  long *status)
{
	CURLcode cc;

	*status = 0;
	if (e->exchange)
		return e->exchange(e->exchange_arg, url, body, sink, sink_arg, status);
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
	curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, ms);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, ms);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, sink);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, sink_arg);
	curl_easy_setopt(c, CURLOPT_ERRORBUFFER, ebuf);
	cc = curl_easy_perform(c);
	curl_easy_setopt(c, CURLOPT_ERRORBUFFER, NULL);
	if (cc == CURLE_OK)
		curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, status);
	return cc;
}

/* Errors of one try, in order of how much they tell the caller. */
static int err_rank(int rc)
{
	switch (rc) {
	case -EAGAIN:		return 6;
	case -ETIMEDOUT:	return 5;
	case -EPROTO:		return 4;
	case -EIO:		return 3;
	case -ECONNRESET:	return 2;
	default:		return 1;
	}
}

/* What a curl failure means, in words and as an errno. */
static int curl_failure(CURL *c, CURLcode cc, const struct buf *b, long share_ms,
			const char *ebuf, char *why, size_t whylen)
{
	long oserr = 0, sent = 0;

	switch (cc) {
	case CURLE_OPERATION_TIMEDOUT:
		/* (a reused connection has no connect time: ask what was sent) */
		curl_easy_getinfo(c, CURLINFO_REQUEST_SIZE, &sent);
		if (sent <= 0)
			return fail(why, whylen, -ETIMEDOUT, "could not connect within %ld ms",
				    share_ms);
		return fail(why, whylen, -ETIMEDOUT, "no reply within %ld ms (a member "
			    "without a quorum, or overloaded)", share_ms);
	case CURLE_COULDNT_CONNECT:
		curl_easy_getinfo(c, CURLINFO_OS_ERRNO, &oserr);
		if (oserr <= 0)
			oserr = ECONNREFUSED;
		return fail(why, whylen, -(int)oserr, "cannot connect: %s", strerror((int)oserr));
	case CURLE_COULDNT_RESOLVE_HOST:
		return fail(why, whylen, -EHOSTUNREACH, "cannot resolve the host name");
	case CURLE_WRITE_ERROR:
		if (b->too_big)
			return fail(why, whylen, -EPROTO, "reply larger than %d KiB: not etcd's",
				    REPLY_MAX / 1024);
		return fail(why, whylen, -EIO, "%s", ebuf[0] ? ebuf : curl_easy_strerror(cc));
	case CURLE_GOT_NOTHING:
		return fail(why, whylen, -EPROTO, "closed the connection without a reply "
			    "(not an etcd?)");
	case CURLE_WEIRD_SERVER_REPLY:
	case CURLE_UNSUPPORTED_PROTOCOL:
	case CURLE_BAD_CONTENT_ENCODING:
	case CURLE_HTTP2:
		return fail(why, whylen, -EPROTO, "not an HTTP reply (not an etcd?): %s",
			    ebuf[0] ? ebuf : curl_easy_strerror(cc));
	case CURLE_RECV_ERROR:
	case CURLE_SEND_ERROR:
	case CURLE_PARTIAL_FILE:
		return fail(why, whylen, -ECONNRESET, "connection broken: %s",
			    ebuf[0] ? ebuf : curl_easy_strerror(cc));
	default:
		return fail(why, whylen, -EIO, "%s", ebuf[0] ? ebuf : curl_easy_strerror(cc));
	}
}

enum outcome { ANSWERED, REFUSED, TRY_ELSEWHERE };

/* What a reply holds: a header (most calls), in a "result" (streaming
 * calls), or maybe nothing ({} from transfer-leadership). */
enum reply_kind { REPLY_UNARY, REPLY_STREAM, REPLY_BARE };

/*
 * One POST to endpoint i within share_ms. ANSWERED: *reply is etcd's reply
 * (the "result" of a streaming call). REFUSED: etcd answered with an error
 * that another member would give too (*rc). TRY_ELSEWHERE: *rc and why.
 */
static enum outcome post_once(struct etcd_arbiter *e, CURL *c, int i, const char *path,
			      const char *body, enum reply_kind kind, long share_ms,
			      json_object **reply, int *rc, char *why, size_t whylen)
{
	char url[sizeof(e->ep[0].url) + 64], ebuf[CURL_ERROR_SIZE] = "", ex[80];
	struct buf b = { 0 };
	json_object *o, *res;
	enum outcome out = TRY_ELSEWHERE;
	const char *msg;
	int64_t code;
	long status = 0;
	bool retry;
	CURLcode cc;

	*reply = NULL;
	snprintf(url, sizeof(url), "%s%s", e->ep[i].url, path);
	cc = http_post(e, c, url, body, share_ms, buf_write, &b, ebuf, &status);
	if (cc != CURLE_OK) {
		*rc = curl_failure(c, cc, &b, share_ms, ebuf, why, whylen);
		goto free_buf;
	}
	o = b.len ? parse_object(b.p, b.len) : NULL;
	if (!o) {
		excerpt(b.p ? b.p : "", b.len, ex, sizeof(ex));
		*rc = fail(why, whylen, -EPROTO, "not an etcd v3 gateway (HTTP %ld, reply '%s')",
			   status, ex);
		goto free_buf;
	}
	if (etcd_error(o, &code, &msg)) {
		*rc = grpc_errno(code, &retry);
		fail(why, whylen, *rc, "etcd says: %s (code %lld)", msg, (long long)code);
		out = retry ? TRY_ELSEWHERE : REFUSED;
		goto put_o;
	}
	if (status != 200) {
		excerpt(b.p, b.len, ex, sizeof(ex));
		*rc = fail(why, whylen, -EPROTO, "not an etcd v3 gateway (HTTP %ld, reply '%s')",
			   status, ex);
		goto put_o;
	}
	res = o;
	if (kind == REPLY_STREAM && j_field(o, "result", json_type_object, &res) <= 0) {
		*rc = fail(why, whylen, -EPROTO, "reply without a result: not etcd's");
		goto put_o;
	}
	if (j_field(res, "header", json_type_object, &(json_object *){ NULL }) <
	    (kind == REPLY_BARE ? 0 : 1)) {
		*rc = fail(why, whylen, -EPROTO, "reply without a header: not etcd's");
		goto put_o;
	}
	*reply = json_object_get(res);
	out = ANSWERED;
put_o:
	json_object_put(o);
free_buf:
	free(b.p);
	return out;
}

/* Appends "name: why" to a list of failures (cut short when it is full). */
static void list_add(char *list, size_t cap, size_t *used, const char *name, const char *why)
{
	*used += (size_t)snprintf(list + *used, *used < cap ? cap - *used : 0, "%s%s: %s",
				  *used ? "; " : "", name, why);
	*used = *used < cap ? *used : cap;
}

/*
 * A request to the cluster within budget_ms: the endpoint that answered
 * last first, then the others, each try getting an even share of the time
 * left. 0 with *reply, or -errno with err listing every endpoint's failure.
 */
static int etcd_post(struct etcd_arbiter *e, CURL *c, const char *path, const char *body,
		     bool stream, long budget_ms, json_object **reply, char *err, size_t errlen)
{
	char why[MSG_LEN / 2], list[MSG_LEN] = "";
	long deadline = now_ms() + budget_ms;
	int first = atomic_load(&e->preferred), best = 0, rc = 0;
	size_t used = 0;

	*reply = NULL;
	for (int k = 0; k < e->n_ep; k++) {
		int i = (first + k) % e->n_ep;
		long left = deadline - now_ms(), share;
		enum outcome out;

		if (left <= 0) {
			list_add(list, sizeof(list), &used, e->ep[i].name, "not tried, no time left");
			continue;
		}
		share = left / (e->n_ep - k);
		if (share < 100)
			share = left < 100 ? left : 100;
		out = post_once(e, c, i, path, body, stream ? REPLY_STREAM : REPLY_UNARY, share,
				reply, &rc, why, sizeof(why));
		if (out != TRY_ELSEWHERE) {
			atomic_store(&e->preferred, i);
			if (out == ANSWERED)
				return 0;
			return fail(err, errlen, rc, "%s: %s", e->ep[i].name, why);
		}
		if (!best || err_rank(rc) > err_rank(best))
			best = rc;
		list_add(list, sizeof(list), &used, e->ep[i].name, why);
	}
	return fail(err, errlen, best ? best : -ETIMEDOUT, "no etcd endpoint answered "
		    "within %ld ms: %s", budget_ms, list);
}

/* A key of guest (prefix + guest), raw and in base64. */
static int guest_key(const char *prefix, const char *guest, char *raw, size_t rawlen,
		     char *b64, size_t b64len)
{
	int n = snprintf(raw, rawlen, "%s%s", prefix, guest);

	if (n < 0 || (size_t)n >= rawlen)
		return -ENAMETOOLONG;
	return b64_encode(raw, (size_t)n, b64, b64len);
}

/* A key-value from a reply: it must be the key asked for, created and last
 * written at revisions (the owner key's mod revision is its token). */
struct kv {
	char value[VALUE_MAX + 1];
	size_t value_len;
	int64_t create_revision, mod_revision, lease;
};

static int parse_kv(json_object *kvo, const char *key, struct kv *kv, char *why, size_t whylen)
{
	char k[VALUE_MAX + 1];
	size_t klen;

	if (!json_object_is_type(kvo, json_type_object) ||
	    j_b64(kvo, "key", k, sizeof(k), &klen) <= 0 ||
	    klen != strlen(key) || memcmp(k, key, klen) ||
	    j_b64(kvo, "value", kv->value, sizeof(kv->value), &kv->value_len) < 0 ||
	    j_int64(kvo, "create_revision", &kv->create_revision) <= 0 ||
	    kv->create_revision <= 0 || j_int64(kvo, "mod_revision", &kv->mod_revision) <= 0 ||
	    kv->mod_revision < kv->create_revision || j_int64(kvo, "lease", &kv->lease) < 0)
		return fail(why, whylen, -EPROTO, "malformed key-value in etcd's reply");
	return 0;
}

/* The first of kvs (an array field of o): 1 found, 0 none, -EPROTO malformed. */
static int first_kv(json_object *o, const char *key, struct kv *kv, char *why, size_t whylen)
{
	json_object *kvs;
	int r = j_field(o, "kvs", json_type_array, &kvs);

	if (r < 0)
		return fail(why, whylen, -EPROTO, "malformed kvs in etcd's reply");
	if (r == 0 || json_object_array_length(kvs) == 0)
		return 0;
	r = parse_kv(json_object_array_get_idx(kvs, 0), key, kv, why, whylen);
	return r ? r : 1;
}

/* An owner id for a message: printable or shown as such. */
static const char *printable(const struct kv *kv, char *out, size_t outlen)
{
	excerpt(kv->value, kv->value_len, out, outlen);
	return out;
}

static int64_t header_revision(json_object *o)
{
	json_object *h;
	int64_t rev;

	if (j_field(o, "header", json_type_object, &h) <= 0 || j_int64(h, "revision", &rev) <= 0)
		return -1;
	return rev;
}

/* ---- lease calls: under lease_lock ---- */

static int revoke_locked(struct etcd_arbiter *e, int64_t id, char *err, size_t errlen)
{
	char body[64];
	json_object *r;
	int rc;

	snprintf(body, sizeof(body), "{\"ID\":\"%lld\"}", (long long)id);
	rc = etcd_post(e, e->lease_curl, "/v3/lease/revoke", body, false, e->timeout_ms, &r,
		       err, errlen);
	json_object_put(r);
	return rc == -ENOENT ? 0 : rc;	/* gone already: what was asked */
}

/* The range in responses[i] of a txn reply: 1 found (kv), 0 none, -EPROTO. */
static int txn_range(json_object *resps, size_t i, const char *key, struct kv *kv)
{
	json_object *ri = json_object_array_get_idx(resps, i), *rr;
	char why[MSG_LEN / 2];

	if (!ri || !json_object_is_type(ri, json_type_object) ||
	    j_field(ri, "response_range", json_type_object, &rr) <= 0)
		return -EPROTO;
	return first_kv(rr, key, kv, why, sizeof(why));
}

/* acquire (after_token 0) and take_over */
static int etcd_acquire(struct repl_arbiter *a, const char *guest, const char *owner_id,
			int ttl_s, uint64_t after_token, uint64_t *token, int *ttl_granted_s,
			char *err, size_t errlen)
{
	struct etcd_arbiter *e = (struct etcd_arbiter *)a;
	char raw[sizeof(KEY_PREFIX) + REPL_ARBITER_NAME_MAX], key[512], val[512];
	char lraw[sizeof(KEY_PREFIX) + REPL_ARBITER_NAME_MAX], lkey[512];
	char body[4096], cmp2[700] = "", rng2[600] = "", msg[MSG_LEN], rmsg[MSG_LEN / 2];
	char holder[REPL_ARBITER_NAME_MAX + 5];
	const char *what = after_token ? "take-over" : "owner";
	json_object *r = NULL, *resps, *rr;
	int64_t id = 0, ttl = 0, rev;
	struct kv kv;
	bool won;
	int rc, found;

	if (guest_key(KEY_PREFIX, guest, raw, sizeof(raw), key, sizeof(key)) ||
	    guest_key(LAST_PREFIX, guest, lraw, sizeof(lraw), lkey, sizeof(lkey)) ||
	    b64_encode(owner_id, strlen(owner_id), val, sizeof(val)))
		return fail(err, errlen, -EINVAL, "arbiter: guest name or owner id too long");
	if (after_token) {
		snprintf(cmp2, sizeof(cmp2), ",{\"target\":\"MOD\",\"key\":\"%s\",\"result\":"
			 "\"EQUAL\",\"mod_revision\":\"%llu\"}", lkey,
			 (unsigned long long)after_token);
		snprintf(rng2, sizeof(rng2), ",{\"request_range\":{\"key\":\"%s\"}}", lkey);
	}

	pthread_mutex_lock(&e->lease_lock);
	if (e->lease_id) {
		rc = fail(err, errlen, -EALREADY, "arbiter: this arbiter holds the lease of guest "
			  "'%s' already (revoke it, or use another arbiter)", e->guest);
		goto unlock;
	}

	snprintf(body, sizeof(body), "{\"TTL\":%d}", ttl_s);
	rc = etcd_post(e, e->lease_curl, "/v3/lease/grant", body, false, e->timeout_ms, &r,
		       msg, sizeof(msg));
	if (rc) {
		fail(err, errlen, rc, "etcd: lease grant for guest '%s': %s", guest, msg);
		goto unlock;
	}
	if (j_int64(r, "ID", &id) <= 0 || id <= 0 || j_int64(r, "TTL", &ttl) <= 0 ||
	    ttl < 1 || ttl > INT32_MAX ||
	    j_field(r, "error", json_type_string, &(json_object *){ NULL }) < 0) {
		rc = fail(err, errlen, -EPROTO, "etcd: malformed reply to the lease grant for "
			  "guest '%s'", guest);
		goto put_r;
	}
	if (json_object_object_get_ex(r, "error", &rr) && json_object_get_string_len(rr)) {
		rc = fail(err, errlen, -EIO, "etcd: lease grant for guest '%s' failed: %s",
			  guest, json_object_get_string(rr));
		goto put_r;
	}
	json_object_put(r);
	r = NULL;

	/* both puts get the txn's revision: last's mod revision is the token */
	snprintf(body, sizeof(body),
		 "{\"compare\":[{\"target\":\"CREATE\",\"key\":\"%s\",\"result\":\"EQUAL\","
		 "\"create_revision\":\"0\"}%s],"
		 "\"success\":[{\"request_put\":{\"key\":\"%s\",\"value\":\"%s\",\"lease\":\"%lld\"}},"
		 "{\"request_put\":{\"key\":\"%s\",\"value\":\"%s\"}}],"
		 "\"failure\":[{\"request_range\":{\"key\":\"%s\"}}%s]}",
		 key, cmp2, key, val, (long long)id, lkey, val, key, rng2);
	rc = etcd_post(e, e->lease_curl, "/v3/kv/txn", body, false, e->timeout_ms, &r,
		       msg, sizeof(msg));
	if (rc) {
		fail(err, errlen, rc, "etcd: %s transaction for guest '%s': %s", what, guest, msg);
		goto revoke;
	}
	rev = header_revision(r);
	if (rev <= 0 || j_bool(r, "succeeded", &won) < 0) {
		rc = fail(err, errlen, -EPROTO, "etcd: malformed reply to the %s transaction "
			  "for guest '%s'", what, guest);
		goto revoke;
	}
	if (won) {
		*token = (uint64_t)rev;
		goto owned;
	}
	/* Refused: the failure branch's ranges say why. */
	if (j_field(r, "responses", json_type_array, &resps) <= 0 ||
	    json_object_array_length(resps) != (after_token ? 2u : 1u) ||
	    (found = txn_range(resps, 0, raw, &kv)) < 0) {
		rc = fail(err, errlen, -EPROTO, "etcd: malformed reply to the %s transaction "
			  "for guest '%s' (refused, the reason not said)", what, guest);
		goto revoke;
	}
	if (found && kv.lease == id && kv.value_len == strlen(owner_id) &&
	    !memcmp(kv.value, owner_id, kv.value_len)) {
		/* A try that timed out took it for us. */
		*token = (uint64_t)kv.mod_revision;
		goto owned;
	}
	if (found) {
		rc = fail(err, errlen, -EBUSY, "guest '%s' is held by '%s' (token %lld)", guest,
			  printable(&kv, holder, sizeof(holder)), (long long)kv.mod_revision);
		goto revoke;
	}
	found = after_token ? txn_range(resps, 1, lraw, &kv) : -EPROTO;
	if (found < 0 || (found && kv.mod_revision == (int64_t)after_token)) {
		rc = fail(err, errlen, -EPROTO, "etcd: malformed reply to the %s transaction "
			  "for guest '%s' (refused, yet free)", what, guest);
		goto revoke;
	}
	if (!found)
		rc = fail(err, errlen, -ESTALE, "guest '%s' has no record of its last owner: "
			  "token %llu cannot be shown to be the last", guest,
			  (unsigned long long)after_token);
	else
		rc = fail(err, errlen, -ESTALE, "guest '%s' went on without the standby of token "
			  "%llu: its last owner record is '%s' (revision %lld)", guest,
			  (unsigned long long)after_token, printable(&kv, holder, sizeof(holder)),
			  (long long)kv.mod_revision);
revoke:
	if (revoke_locked(e, id, rmsg, sizeof(rmsg)) && err && errlen) {
		size_t n = strnlen(err, errlen);

		snprintf(err + n, errlen - n, "; its lease %lld is left to expire in %lld s",
			 (long long)id, (long long)ttl);
	}
	goto put_r;
owned:
	e->lease_id = id;
	e->lease_ttl = (int)ttl;
	snprintf(e->guest, sizeof(e->guest), "%s", guest);
	*ttl_granted_s = (int)ttl;
	rc = 0;
put_r:
	json_object_put(r);
unlock:
	pthread_mutex_unlock(&e->lease_lock);
	return rc;
}

/*
 * A transaction (mark_stale, reissue) whose failure branch reads guest's
 * owner key (raw), on the query connection: 1 it succeeded (*rev its
 * revision), 0 refused (*found: 1 with the owner key in kv, 0 absent),
 * -errno with msg.
 */
static int owner_txn(struct etcd_arbiter *e, const char *body, const char *raw, int64_t *rev,
		     int *found, struct kv *kv, char *msg, size_t msglen)
{
	json_object *r, *resps;
	bool won;
	int rc;

	pthread_mutex_lock(&e->query_lock);
	rc = etcd_post(e, e->query_curl, "/v3/kv/txn", body, false, e->timeout_ms, &r, msg,
		       msglen);
	pthread_mutex_unlock(&e->query_lock);
	if (rc)
		return rc;
	*rev = header_revision(r);
	if (*rev <= 0 || j_bool(r, "succeeded", &won) < 0)
		rc = -EPROTO;
	else if (won)
		rc = 1;
	else if (j_field(r, "responses", json_type_array, &resps) <= 0 ||
		 json_object_array_length(resps) != 1 ||
		 (*found = txn_range(resps, 0, raw, kv)) < 0)
		rc = -EPROTO;
	json_object_put(r);
	if (rc == -EPROTO)
		fail(msg, msglen, rc, "malformed reply to the transaction");
	return rc;
}

static int etcd_mark_stale(struct repl_arbiter *a, const char *guest, uint64_t token,
			   char *err, size_t errlen)
{
	struct etcd_arbiter *e = (struct etcd_arbiter *)a;
	char raw[sizeof(KEY_PREFIX) + REPL_ARBITER_NAME_MAX], key[512];
	char lraw[sizeof(KEY_PREFIX) + REPL_ARBITER_NAME_MAX], lkey[512];
	char note[96], val[160], body[2048], msg[MSG_LEN], holder[REPL_ARBITER_NAME_MAX + 5];
	struct kv kv;
	int64_t rev;
	int rc, found = 0;

	snprintf(note, sizeof(note), "stale: token %llu went on without its standby",
		 (unsigned long long)token);
	if (guest_key(KEY_PREFIX, guest, raw, sizeof(raw), key, sizeof(key)) ||
	    guest_key(LAST_PREFIX, guest, lraw, sizeof(lraw), lkey, sizeof(lkey)) ||
	    b64_encode(note, strlen(note), val, sizeof(val)))
		return fail(err, errlen, -EINVAL, "arbiter: guest name too long");
	snprintf(body, sizeof(body),
		 "{\"compare\":[{\"target\":\"MOD\",\"key\":\"%s\",\"result\":\"EQUAL\","
		 "\"mod_revision\":\"%llu\"}],"
		 "\"success\":[{\"request_put\":{\"key\":\"%s\",\"value\":\"%s\"}}],"
		 "\"failure\":[{\"request_range\":{\"key\":\"%s\"}}]}",
		 key, (unsigned long long)token, lkey, val, key);
	rc = owner_txn(e, body, raw, &rev, &found, &kv, msg, sizeof(msg));
	if (rc == 1)
		return 0;
	if (rc == 0 && found && kv.mod_revision == (int64_t)token)
		rc = fail(msg, sizeof(msg), -EPROTO, "malformed reply to the transaction "
			  "(refused, yet the key has that token)");
	if (rc < 0)
		return fail(err, errlen, rc, "etcd: marking the standby of guest '%s' stale: %s",
			    guest, msg);
	if (found)
		return fail(err, errlen, -ENOENT, "guest '%s' is held by '%s' (token %lld), not "
			    "by token %llu: nothing marked", guest,
			    printable(&kv, holder, sizeof(holder)), (long long)kv.mod_revision,
			    (unsigned long long)token);
	return fail(err, errlen, -ENOENT, "guest '%s' has no owner: token %llu is gone, "
		    "nothing marked", guest, (unsigned long long)token);
}

static int etcd_reissue(struct repl_arbiter *a, const char *guest, const char *owner_id,
			uint64_t *token, char *err, size_t errlen)
{
	struct etcd_arbiter *e = (struct etcd_arbiter *)a;
	char raw[sizeof(KEY_PREFIX) + REPL_ARBITER_NAME_MAX], key[512], val[512];
	char lraw[sizeof(KEY_PREFIX) + REPL_ARBITER_NAME_MAX], lkey[512];
	char body[4096], msg[MSG_LEN], holder[REPL_ARBITER_NAME_MAX + 5];
	struct kv kv;
	int64_t id, rev;
	int rc, found = 0;

	if (guest_key(KEY_PREFIX, guest, raw, sizeof(raw), key, sizeof(key)) ||
	    guest_key(LAST_PREFIX, guest, lraw, sizeof(lraw), lkey, sizeof(lkey)) ||
	    b64_encode(owner_id, strlen(owner_id), val, sizeof(val)))
		return fail(err, errlen, -EINVAL, "arbiter: guest name or owner id too long");
	pthread_mutex_lock(&e->lease_lock);
	id = e->lease_id;
	pthread_mutex_unlock(&e->lease_lock);
	if (!id)
		return fail(err, errlen, -ENOENT, "arbiter: no lease held (none acquired, or it "
			    "was lost): guest '%s' is not ours to reissue", guest);
	/* the same puts as acquire's: both keys get the txn's revision */
	snprintf(body, sizeof(body),
		 "{\"compare\":[{\"target\":\"LEASE\",\"key\":\"%s\",\"result\":\"EQUAL\","
		 "\"lease\":\"%lld\"}],"
		 "\"success\":[{\"request_put\":{\"key\":\"%s\",\"value\":\"%s\",\"lease\":\"%lld\"}},"
		 "{\"request_put\":{\"key\":\"%s\",\"value\":\"%s\"}}],"
		 "\"failure\":[{\"request_range\":{\"key\":\"%s\"}}]}",
		 key, (long long)id, key, val, (long long)id, lkey, val, key);
	rc = owner_txn(e, body, raw, &rev, &found, &kv, msg, sizeof(msg));
	if (rc == 1) {
		*token = (uint64_t)rev;
		return 0;
	}
	if (rc == 0 && found && kv.lease == id)
		rc = fail(msg, sizeof(msg), -EPROTO, "malformed reply to the transaction "
			  "(refused, yet the key is on our lease)");
	if (rc < 0)
		return fail(err, errlen, rc, "etcd: reissuing the token of guest '%s': %s", guest,
			    msg);
	if (found)
		return fail(err, errlen, -ENOENT, "guest '%s' is held by '%s' (token %lld) on "
			    "another lease than ours (%lld): no token reissued", guest,
			    printable(&kv, holder, sizeof(holder)), (long long)kv.mod_revision,
			    (long long)id);
	return fail(err, errlen, -ENOENT, "guest '%s' has no owner (our lease %lld ran out "
		    "or was revoked): no token reissued", guest, (long long)id);
}

static int etcd_keepalive(struct repl_arbiter *a, char *err, size_t errlen)
{
	struct etcd_arbiter *e = (struct etcd_arbiter *)a;
	char body[64], msg[MSG_LEN];
	json_object *r = NULL;
	int64_t id, ttl;
	int rc;

	pthread_mutex_lock(&e->lease_lock);
	if (!e->lease_id) {
		rc = fail(err, errlen, -ENOENT, "arbiter: no lease held (none acquired, or it "
			  "was lost)");
		goto unlock;
	}
	snprintf(body, sizeof(body), "{\"ID\":\"%lld\"}", (long long)e->lease_id);
	rc = etcd_post(e, e->lease_curl, "/v3/lease/keepalive", body, true, e->timeout_ms, &r,
		       msg, sizeof(msg));
	if (rc) {
		fail(err, errlen, rc, "etcd: keepalive of lease %lld (guest '%s'): %s",
		     (long long)e->lease_id, e->guest, msg);
		if (rc == -ENOENT)	/* etcd says "lease not found": gone, as TTL 0 */
			e->lease_id = 0;
		goto unlock;
	}
	if (j_int64(r, "ID", &id) <= 0 || id != e->lease_id || j_int64(r, "TTL", &ttl) < 0 ||
	    ttl > INT32_MAX) {
		rc = fail(err, errlen, -EPROTO, "etcd: malformed reply to the keepalive of lease "
			  "%lld (guest '%s')", (long long)e->lease_id, e->guest);
		goto put_r;
	}
	if (ttl <= 0) {
		rc = fail(err, errlen, -ENOENT, "etcd: lease %lld is gone (expired or revoked): "
			  "guest '%s' is no longer ours", (long long)e->lease_id, e->guest);
		e->lease_id = 0;
		goto put_r;
	}
	e->lease_ttl = (int)ttl;
	rc = 0;
put_r:
	json_object_put(r);
unlock:
	pthread_mutex_unlock(&e->lease_lock);
	return rc;
}

static int etcd_revoke(struct repl_arbiter *a, char *err, size_t errlen)
{
	struct etcd_arbiter *e = (struct etcd_arbiter *)a;
	char msg[MSG_LEN];
	int rc = 0;

	pthread_mutex_lock(&e->lease_lock);
	if (e->lease_id) {
		rc = revoke_locked(e, e->lease_id, msg, sizeof(msg));
		if (rc)
			fail(err, errlen, rc, "etcd: revoke of lease %lld (guest '%s'): %s",
			     (long long)e->lease_id, e->guest, msg);
		else
			e->lease_id = 0;
	}
	pthread_mutex_unlock(&e->lease_lock);
	return rc;
}

/* ---- reads ---- */

/* Range of guest's key: 1 held (kv, *rev), 0 absent (*rev), -errno. */
static int range_key(struct etcd_arbiter *e, CURL *c, const char *guest, long budget_ms,
		     struct kv *kv, int64_t *rev, char *err, size_t errlen)
{
	char raw[sizeof(KEY_PREFIX) + REPL_ARBITER_NAME_MAX], key[512], body[600];
	char msg[MSG_LEN], why[MSG_LEN / 2];
	json_object *r;
	int rc;

	if (guest_key(KEY_PREFIX, guest, raw, sizeof(raw), key, sizeof(key)))
		return fail(err, errlen, -EINVAL, "arbiter: guest name too long");
	snprintf(body, sizeof(body), "{\"key\":\"%s\"}", key);
	rc = etcd_post(e, c, "/v3/kv/range", body, false, budget_ms, &r, msg, sizeof(msg));
	if (rc)
		return fail(err, errlen, rc, "etcd: reading the owner of guest '%s': %s", guest,
			    msg);
	*rev = header_revision(r);
	rc = first_kv(r, raw, kv, why, sizeof(why));
	json_object_put(r);
	if (*rev <= 0 || rc < 0)
		return fail(err, errlen, -EPROTO, "etcd: malformed reply reading the owner of "
			    "guest '%s'%s%s", guest, rc < 0 ? ": " : "", rc < 0 ? why : "");
	return rc;
}

static int etcd_owner(struct repl_arbiter *a, const char *guest, char *owner_id, size_t len,
		      uint64_t *token, char *err, size_t errlen)
{
	struct etcd_arbiter *e = (struct etcd_arbiter *)a;
	struct kv kv;
	int64_t rev;
	int rc;

	pthread_mutex_lock(&e->query_lock);
	rc = range_key(e, e->query_curl, guest, e->timeout_ms, &kv, &rev, err, errlen);
	pthread_mutex_unlock(&e->query_lock);
	if (rc < 0)
		return rc;
	if (rc == 0)
		return fail(err, errlen, -ENOENT, "guest '%s' has no owner", guest);
	if (kv.value_len == 0 || kv.value_len > REPL_ARBITER_NAME_MAX ||
	    strlen(kv.value) != kv.value_len)
		return fail(err, errlen, -EPROTO, "etcd: the owner key of guest '%s' holds "
			    "something that is not an owner id", guest);
	if (owner_id) {
		if (kv.value_len + 1 > len)
			return fail(err, errlen, -ERANGE, "arbiter: the owner id of guest '%s' "
				    "needs %zu bytes", guest, kv.value_len + 1);
		memcpy(owner_id, kv.value, kv.value_len + 1);
	}
	if (token)
		*token = (uint64_t)kv.mod_revision;
	return 0;
}

/* ---- wait_free: a watch stream ---- */

struct watch {
	struct buf line;		/* what came after the last newline */
	const char *key;		/* raw key */
	bool created, deleted, canceled, bad;
	char why[MSG_LEN / 2];
};

/* One message of the stream. */
static void watch_message(struct watch *w, const char *p, size_t len)
{
	json_object *o = parse_object(p, len), *res, *evs, *ev, *kvo, *t;
	char k[VALUE_MAX + 1], ex[80];
	const char *msg;
	int64_t code;
	size_t klen;
	bool b;

	if (!o) {
		excerpt(p, len, ex, sizeof(ex));
		w->bad = true;
		fail(w->why, sizeof(w->why), 0, "not an etcd watch stream: '%s'", ex);
		return;
	}
	if (etcd_error(o, &code, &msg)) {
		w->bad = true;
		fail(w->why, sizeof(w->why), 0, "etcd says: %s (code %lld)", msg, (long long)code);
		goto put;
	}
	if (j_field(o, "result", json_type_object, &res) <= 0 ||
	    j_field(res, "header", json_type_object, &(json_object *){ NULL }) <= 0)
		goto malformed;
	if (j_bool(res, "created", &b) < 0)
		goto malformed;
	w->created |= b;
	if (j_bool(res, "canceled", &b) < 0)
		goto malformed;
	if (b) {
		/* compacted past our revision, or refused: read again */
		w->canceled = true;
		goto put;
	}
	if (j_field(res, "events", json_type_array, &evs) < 0)
		goto malformed;
	for (size_t i = 0; evs && i < json_object_array_length(evs); i++) {
		ev = json_object_array_get_idx(evs, i);
		if (!json_object_is_type(ev, json_type_object) ||
		    j_field(ev, "type", json_type_string, &t) < 0 ||
		    j_field(ev, "kv", json_type_object, &kvo) <= 0 ||
		    j_b64(kvo, "key", k, sizeof(k), &klen) <= 0)
			goto malformed;
		if (t && !strcmp(json_object_get_string(t), "DELETE") &&
		    klen == strlen(w->key) && !memcmp(k, w->key, klen))
			w->deleted = true;
	}
	goto put;
malformed:
	w->bad = true;
	fail(w->why, sizeof(w->why), 0, "malformed message in etcd's watch stream");
put:
	json_object_put(o);
}

static size_t watch_write(char *data, size_t size, size_t n, void *arg)
{
	struct watch *w = arg;
	char *nl;

	if (!buf_add(&w->line, data, size * n)) {
		w->bad = true;
		fail(w->why, sizeof(w->why), 0, "a watch message larger than %d KiB",
		     REPLY_MAX / 1024);
		return 0;
	}
	while (!w->bad && !w->deleted && !w->canceled &&
	       (nl = memchr(w->line.p, '\n', w->line.len))) {
		size_t len = (size_t)(nl - w->line.p);

		watch_message(w, w->line.p, len);
		memmove(w->line.p, nl + 1, w->line.len - len - 1);
		w->line.len -= len + 1;
		w->line.p[w->line.len] = 0;
	}
	return (w->bad || w->deleted || w->canceled) ? 0 : size * n;
}

/*
 * Watch for the key's deletion from revision from on the preferred
 * endpoint for up to ms: 1 deleted, 0 nothing within ms (or the watch was
 * cancelled), -errno.
 */
static int watch_delete(struct etcd_arbiter *e, CURL *c, const char *raw, int64_t from, long ms,
			char *why, size_t whylen)
{
	char key[512], body[700], url[sizeof(e->ep[0].url) + 16], ebuf[CURL_ERROR_SIZE] = "";
	struct watch w = { .key = raw };
	int i = atomic_load(&e->preferred), rc;
	long status;
	CURLcode cc;

	if (b64_encode(raw, strlen(raw), key, sizeof(key)))
		return fail(why, whylen, -EINVAL, "key too long");
	snprintf(body, sizeof(body), "{\"create_request\":{\"key\":\"%s\",\"start_revision\":"
		 "\"%lld\",\"filters\":[\"NOPUT\"]}}", key, (long long)from);
	snprintf(url, sizeof(url), "%s/v3/watch", e->ep[i].url);
	cc = http_post(e, c, url, body, ms, watch_write, &w, ebuf, &status);
	/* a last message without its newline: etcd's error for a watch it refused */
	if (cc == CURLE_OK && !w.deleted && !w.bad && !w.canceled && w.line.len)
		watch_message(&w, w.line.p, w.line.len);
	if (w.deleted)
		rc = 1;
	else if (w.bad)
		rc = fail(why, whylen, -EPROTO, "%s: %s", e->ep[i].name, w.why);
	else if (w.canceled || (cc == CURLE_OPERATION_TIMEDOUT && w.created))
		rc = 0;
	else if (cc == CURLE_OK)	/* the stream ended: the member is going away */
		rc = fail(why, whylen, -ECONNRESET, "%s: the watch stream ended", e->ep[i].name);
	else {
		char m[MSG_LEN / 2];

		rc = curl_failure(c, cc, &w.line, ms, ebuf, m, sizeof(m));
		fail(why, whylen, rc, "%s: watch: %s", e->ep[i].name, m);
	}
	free(w.line.p);
	return rc;
}

static int etcd_wait_free(struct repl_arbiter *a, const char *guest, int timeout_ms,
			  char *err, size_t errlen)
{
	struct etcd_arbiter *e = (struct etcd_arbiter *)a;
	char raw[sizeof(KEY_PREFIX) + REPL_ARBITER_NAME_MAX], msg[MSG_LEN] = "";
	char holder[REPL_ARBITER_NAME_MAX + 5];
	char wmsg[MSG_LEN / 2] = "";
	long deadline = now_ms() + timeout_ms;
	CURL *rh = new_handle(e), *wh = new_handle(e);
	struct kv kv;
	int64_t rev;
	int rc, last = 0;

	if (!rh || !wh) {
		rc = fail(err, errlen, -ENOMEM, "arbiter: cannot make a curl handle");
		goto cleanup;
	}
	snprintf(raw, sizeof(raw), KEY_PREFIX "%s", guest);
	for (;;) {
		long left, started;

		rc = range_key(e, rh, guest, e->timeout_ms, &kv, &rev, msg, sizeof(msg));
		if (rc == 0)
			goto cleanup;
		left = deadline - now_ms();
		if (rc < 0) {
			last = rc == -ETIMEDOUT ? -EAGAIN : rc;
			if (left <= 0)
				break;
			sleep_ms(left < 100 ? left : 100);
			continue;
		}
		last = -ETIMEDOUT;
		snprintf(msg, sizeof(msg), "guest '%s' is still held by '%s' (token %lld) after "
			 "%d ms%s%s%s", guest, printable(&kv, holder, sizeof(holder)),
			 (long long)kv.mod_revision, timeout_ms, wmsg[0] ? " (last watch: " : "",
			 wmsg, wmsg[0] ? ")" : "");
		if (left <= 0)
			break;
		started = now_ms();
		rc = watch_delete(e, wh, raw, rev + 1, left < WATCH_SLICE_MS ? left : WATCH_SLICE_MS,
				  wmsg, sizeof(wmsg));
		if (rc == 1) {
			rc = 0;
			goto cleanup;
		}
		if (rc < 0 || now_ms() - started < 100) {
			/* a broken (or at once cancelled) watch: poll with reads,
			 * which fail over, until it works */
			left = deadline - now_ms();
			sleep_ms(left <= 0 ? 0 : left < 100 ? left : 100);
		}
	}
	rc = fail(err, errlen, last, "%s", msg);
cleanup:
	curl_easy_cleanup(wh);
	curl_easy_cleanup(rh);
	return rc;
}

/* ---- leader_elsewhere: etcd's leader off this machine ---- */

/* What a member says of itself (/v3/maintenance/status). */
struct member {
	bool answered, learner;
	uint64_t id, leader;		/* 0: none (a member between leaders) */
	int64_t raft_term, raft_index;
};

/* Asks endpoint i within ms: 0 with *m, or -errno with why. */
static int member_status(struct etcd_arbiter *e, CURL *c, int i, long ms, struct member *m,
			 char *why, size_t whylen)
{
	json_object *r, *h;
	int rc = 0;

	if (post_once(e, c, i, "/v3/maintenance/status", "{}", REPLY_UNARY, ms, &r, &rc, why,
		      whylen) != ANSWERED)
		return rc;
	if (j_field(r, "header", json_type_object, &h) <= 0 ||
	    j_uint64(h, "member_id", &m->id) <= 0 || m->id == 0 ||
	    j_uint64(r, "leader", &m->leader) < 0 ||
	    j_int64(r, "raftTerm", &m->raft_term) < 0 || m->raft_term < 0 ||
	    j_int64(r, "raftIndex", &m->raft_index) < 0 || m->raft_index < 0 ||
	    j_bool(r, "isLearner", &m->learner) < 0)
		rc = fail(why, whylen, -EPROTO, "malformed status reply: not etcd's");
	else
		m->answered = true;
	json_object_put(r);
	return rc;
}

/* Is sa an address of this machine: loopback, unspecified, or one of ifs's? */
static bool addr_local(const struct sockaddr *sa, const struct ifaddrs *ifs)
{
	if (sa->sa_family == AF_INET) {
		const struct in_addr *in = &((const struct sockaddr_in *)sa)->sin_addr;
		uint32_t h = ntohl(in->s_addr);

		if (h >> 24 == 127 || h == INADDR_ANY)
			return true;
		for (const struct ifaddrs *i = ifs; i; i = i->ifa_next)
			if (i->ifa_addr && i->ifa_addr->sa_family == AF_INET &&
			    !memcmp(&((const struct sockaddr_in *)i->ifa_addr)->sin_addr, in,
				    sizeof(*in)))
				return true;
	} else if (sa->sa_family == AF_INET6) {
		const struct in6_addr *in6 = &((const struct sockaddr_in6 *)sa)->sin6_addr;

		if (IN6_IS_ADDR_LOOPBACK(in6) || IN6_IS_ADDR_UNSPECIFIED(in6))
			return true;
		if (IN6_IS_ADDR_V4MAPPED(in6)) {
			struct sockaddr_in v4 = { .sin_family = AF_INET };

			memcpy(&v4.sin_addr, &in6->s6_addr[12], 4);
			return addr_local((const struct sockaddr *)&v4, ifs);
		}
		for (const struct ifaddrs *i = ifs; i; i = i->ifa_next)
			if (i->ifa_addr && i->ifa_addr->sa_family == AF_INET6 &&
			    !memcmp(&((const struct sockaddr_in6 *)i->ifa_addr)->sin6_addr, in6,
				    sizeof(*in6)))
				return true;
	}
	return false;
}

/* Is name one of list's comma-separated items? */
static bool in_list(const char *list, const char *name)
{
	size_t n = strlen(name);

	for (const char *p = list; *p;) {
		const char *end = strchr(p, ',');
		size_t len = end ? (size_t)(end - p) : strlen(p);

		if (len == n && !memcmp(p, name, n))
			return true;
		if (!end)
			break;
		p = end + 1;
	}
	return false;
}

/* Is endpoint i on this machine (a name: when it resolves to an address of it)? */
static bool ep_local(struct etcd_arbiter *e, int i, const struct ifaddrs *ifs)
{
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *res;
	bool local = false;

	if (e->local_eps)
		return in_list(e->local_eps, e->ep[i].name);
	if (getaddrinfo(e->ep[i].host, NULL, &hints, &res))
		return false;
	for (struct addrinfo *r = res; r && !local; r = r->ai_next)
		local = addr_local(r->ai_addr, ifs);
	freeaddrinfo(res);
	return local;
}

static int etcd_leader_elsewhere(struct repl_arbiter *a, char *moved, size_t movedlen,
				 char *err, size_t errlen)
{
	struct etcd_arbiter *e = (struct etcd_arbiter *)a;
	struct member m[EP_MAX] = { { 0 } };
	char why[MSG_LEN / 2], list[MSG_LEN] = "", body[64];
	long deadline = now_ms() + e->timeout_ms, t0;
	struct ifaddrs *ifs = NULL;
	int lead = -1, to = -1, best = 0, rc = 0;
	size_t used = 0;
	json_object *r;
	CURL *c = new_handle(e);

	if (!c)
		return fail(err, errlen, -ENOMEM, "arbiter: cannot make a curl handle");
	for (int i = 0; i < e->n_ep; i++) {
		long left = deadline - now_ms(), share;

		if (left <= 0) {
			rc = fail(why, sizeof(why), -ETIMEDOUT, "not asked, no time left");
		} else {
			share = left / (e->n_ep - i);
			if (share < 100)
				share = left < 100 ? left : 100;
			rc = member_status(e, c, i, share, &m[i], why, sizeof(why));
		}
		if (rc) {
			if (!best || err_rank(rc) > err_rank(best))
				best = rc;
			list_add(list, sizeof(list), &used, e->ep[i].name, why);
		} else if (m[i].id == m[i].leader &&
			   (lead < 0 || m[i].raft_term > m[lead].raft_term)) {
			lead = i;
		}
	}
	rc = 0;
	if (lead < 0) {
		/* the leader is a member we were not given (not ours to move), or
		 * one that did not answer */
		if (best)
			rc = fail(err, errlen, best, "etcd: no endpoint that answered leads, and "
				  "not every one answered: %s", list);
		goto cleanup;
	}
	if (!e->local_eps && getifaddrs(&ifs)) {
		rc = fail(err, errlen, -errno, "arbiter: getifaddrs: %s", strerror(errno));
		goto cleanup;
	}
	if (!ep_local(e, lead, ifs))
		goto cleanup;
	for (int i = 0; i < e->n_ep; i++)
		if (m[i].answered && !m[i].learner && m[i].id != m[lead].id &&
		    !ep_local(e, i, ifs) && (to < 0 || m[i].raft_index > m[to].raft_index))
			to = i;
	if (to < 0) {
		if (best)
			rc = fail(err, errlen, best, "etcd: the leader (member %" PRIx64 " at %s) "
				  "is on this machine and no member elsewhere answered: %s",
				  m[lead].id, e->ep[lead].name, list);
		else
			rc = fail(err, errlen, -ENOENT, "etcd: the leader (member %" PRIx64 " at %s) "
				  "is on this machine, and so is every other member",
				  m[lead].id, e->ep[lead].name);
		goto cleanup;
	}
	/* etcd answers once the target leads, or fails (a target not caught up) */
	snprintf(body, sizeof(body), "{\"targetID\":\"%" PRIu64 "\"}", m[to].id);
	t0 = now_ms();
	if (post_once(e, c, lead, "/v3/maintenance/transfer-leadership", body, REPLY_BARE,
		      e->timeout_ms, &r, &rc, why, sizeof(why)) != ANSWERED) {
		if (strstr(why, "etcdserver: not leader"))
			rc = -EAGAIN;	/* it stepped down since the status */
		fail(err, errlen, rc, "etcd: handing leadership from member %" PRIx64 " at %s (on "
		     "this machine) to member %" PRIx64 " at %s: %s", m[lead].id, e->ep[lead].name,
		     m[to].id, e->ep[to].name, why);
		goto cleanup;
	}
	json_object_put(r);
	if (moved && movedlen)
		snprintf(moved, movedlen, "etcd's leader, member %" PRIx64 " at %s (on this "
			 "machine), handed leadership to member %" PRIx64 " at %s in %ld ms",
			 m[lead].id, e->ep[lead].name, m[to].id, e->ep[to].name, now_ms() - t0);
cleanup:
	if (ifs)
		freeifaddrs(ifs);
	curl_easy_cleanup(c);
	return rc;
}

/* ---- the fuzzer's way in (arbiter_etcd_test.h) ---- */

void repl_arbiter_etcd_set_exchange(struct repl_arbiter *a, repl_etcd_exchange_fn *fn,
				    void *arg)
{
	struct etcd_arbiter *e = (struct etcd_arbiter *)a;

	e->exchange = fn;
	e->exchange_arg = arg;
}

int repl_arbiter_etcd_set_local(struct repl_arbiter *a, const char *endpoints)
{
	struct etcd_arbiter *e = (struct etcd_arbiter *)a;
	char *copy = NULL;

	if (endpoints && !(copy = strdup(endpoints)))
		return -ENOMEM;
	free(e->local_eps);
	e->local_eps = copy;
	return 0;
}

int repl_arbiter_etcd_watch(struct repl_arbiter *a, const char *guest, int64_t from, long ms,
			    char *why, size_t whylen)
{
	struct etcd_arbiter *e = (struct etcd_arbiter *)a;
	char raw[sizeof(KEY_PREFIX) + REPL_ARBITER_NAME_MAX];
	CURL *c;
	int n, rc;

	n = snprintf(raw, sizeof(raw), KEY_PREFIX "%s", guest);
	if (n < 0 || (size_t)n >= sizeof(raw))
		return fail(why, whylen, -EINVAL, "arbiter: guest name too long");
	c = new_handle(e);
	if (!c)
		return fail(why, whylen, -ENOMEM, "arbiter: cannot make a curl handle");
	rc = watch_delete(e, c, raw, from, ms, why, whylen);
	curl_easy_cleanup(c);
	return rc;
}

/* ---- construction ---- */

static bool host_char(char c, bool v6)
{
	if (v6)
		return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F') ||
		       c == ':' || c == '.';
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	       c == '.' || c == '-';
}

/* "host:port", "[v6]:port", optionally after "http://". */
static int parse_endpoint(const char *s, size_t n, struct endpoint *ep, char *err, size_t errlen)
{
	const char *host, *colon, *p;
	size_t hlen;
	long port = 0;
	bool v6;

	if (n > 7 && !strncmp(s, "http://", 7)) {
		s += 7;
		n -= 7;
	} else if (n > 8 && !strncmp(s, "https://", 8)) {
		return fail(err, errlen, -EPROTONOSUPPORT, "arbiter: etcd endpoint '%.*s': TLS "
			    "to etcd is not supported (use http:// on a private network)",
			    (int)n, s);
	}
	if (n == 0 || n > EP_LEN)
		goto bad;
	v6 = s[0] == '[';
	if (v6) {
		const char *close = memchr(s, ']', n);

		if (!close || close + 1 >= s + n || close[1] != ':')
			goto bad;
		host = s + 1;
		hlen = (size_t)(close - host);
		colon = close + 1;
	} else {
		colon = NULL;
		for (p = s; p < s + n; p++)
			if (*p == ':')
				colon = p;
		if (!colon)
			goto bad;
		host = s;
		hlen = (size_t)(colon - s);
	}
	if (hlen == 0)
		goto bad;
	for (size_t i = 0; i < hlen; i++)
		if (!host_char(host[i], v6))
			goto bad;
	if (colon + 1 >= s + n || s + n - colon - 1 > 5)
		goto bad;
	for (p = colon + 1; p < s + n; p++) {
		if (*p < '0' || *p > '9')
			goto bad;
		port = port * 10 + (*p - '0');
	}
	if (port < 1 || port > 65535)
		goto bad;
	snprintf(ep->name, sizeof(ep->name), "%.*s", (int)n, s);
	snprintf(ep->url, sizeof(ep->url), "http://%.*s", (int)n, s);
	snprintf(ep->host, sizeof(ep->host), "%.*s", (int)hlen, host);
	return 0;
bad:
	return fail(err, errlen, -EINVAL, "arbiter: etcd endpoint '%.*s' is not HOST:PORT",
		    (int)(n < 80 ? n : 80), s);
}

static void etcd_free(struct repl_arbiter *a)
{
	struct etcd_arbiter *e = (struct etcd_arbiter *)a;

	curl_easy_cleanup(e->query_curl);
	curl_easy_cleanup(e->lease_curl);
	curl_slist_free_all(e->headers);
	free(e->local_eps);
	pthread_mutex_destroy(&e->query_lock);
	pthread_mutex_destroy(&e->lease_lock);
	free(e);
}

struct repl_arbiter *repl_arbiter_etcd_new(const char *endpoints, int request_timeout_ms,
					   char *err, size_t errlen)
{
	struct etcd_arbiter *e;
	struct curl_slist *h;
	const char *p;

	if (!endpoints || !*endpoints) {
		fail(err, errlen, -EINVAL, "arbiter: no etcd endpoints given");
		return NULL;
	}
	if (request_timeout_ms < 100 || request_timeout_ms > 600000) {
		fail(err, errlen, -EINVAL, "arbiter: request timeout %d ms is not in 100 .. "
		     "600000", request_timeout_ms);
		return NULL;
	}
	pthread_once(&curl_once, curl_init);
	if (curl_init_rc != CURLE_OK) {
		fail(err, errlen, -EIO, "arbiter: curl_global_init: %s",
		     curl_easy_strerror(curl_init_rc));
		return NULL;
	}
	e = calloc(1, sizeof(*e));
	if (!e) {
		fail(err, errlen, -ENOMEM, "arbiter: out of memory");
		return NULL;
	}
	e->base.ops = &etcd_ops;
	e->timeout_ms = request_timeout_ms;
	pthread_mutex_init(&e->lease_lock, NULL);
	pthread_mutex_init(&e->query_lock, NULL);

	p = endpoints;
	if (!strncmp(p, "etcd://", 7))
		p += 7;
	for (;;) {
		const char *end = strchr(p, ',');
		size_t n = end ? (size_t)(end - p) : strlen(p);

		if (e->n_ep == EP_MAX) {
			fail(err, errlen, -EINVAL, "arbiter: more than %d etcd endpoints", EP_MAX);
			goto free_e;
		}
		if (parse_endpoint(p, n, &e->ep[e->n_ep], err, errlen))
			goto free_e;
		e->n_ep++;
		if (!end)
			break;
		p = end + 1;
	}

	h = curl_slist_append(NULL, "Content-Type: application/json");
	e->headers = h ? curl_slist_append(h, "Expect:") : NULL;	/* no 100-continue wait */
	if (!e->headers) {
		curl_slist_free_all(h);
		fail(err, errlen, -ENOMEM, "arbiter: out of memory");
		goto free_e;
	}
	e->lease_curl = new_handle(e);
	e->query_curl = new_handle(e);
	if (!e->lease_curl || !e->query_curl) {
		fail(err, errlen, -ENOMEM, "arbiter: cannot make a curl handle");
		goto free_e;
	}
	return &e->base;
free_e:
	etcd_free(&e->base);
	return NULL;
}

static const struct repl_arbiter_ops etcd_ops = {
	.name = "etcd",
	.acquire = etcd_acquire,
	.mark_stale = etcd_mark_stale,
	.reissue = etcd_reissue,
	.keepalive = etcd_keepalive,
	.revoke = etcd_revoke,
	.owner = etcd_owner,
	.wait_free = etcd_wait_free,
	.leader_elsewhere = etcd_leader_elsewhere,
	.free = etcd_free,
};
