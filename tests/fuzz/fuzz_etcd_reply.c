/*
 * libFuzzer target for what etcd sends back to the arbiter: lease grant,
 * keepalive and revoke replies, range and txn replies, member statuses and
 * leadership transfers, etcd's errors and the watch stream, read by the
 * etcd backend's own code (arbiter_etcd.c) with its HTTP exchanges
 * answered from the input (arbiter_etcd_test.h).
 *
 * Input: a script. Its first line: the calls, made in order on one arbiter
 * of two endpoints, a letter each, with an optional number N after it:
 *   a acquire      t take_over(N)     i reissue    s mark_stale(N)
 *   k keepalive    r revoke           o owner      w watch from revision N
 *   l leader_elsewhere, the endpoints of bits N & 3 on "this machine"
 *     (1: the first, 2: the second; without N: the first)
 * (N, when not given, is the last token a call returned, 1 before any;
 * other bytes are skipped). Then a reply per exchange, in the order the
 * calls make them, each after a line "@STATUS [CHUNK [CODE]]": its HTTP
 * status, the body (up to the next line that starts with '@', without the
 * newline before it) handed over CHUNK bytes at a time (all at once if 0),
 * then CODE as curl's result (0: CURLE_OK; 7: refused, 28: timed out...).
 * Once the replies run out, every exchange finds its connection refused.
 *
 * Besides crashes and leaks it checks what arbiter.h promises: 0 or a
 * negative errno with a message; tokens and TTLs in range; owner ids that
 * fit; the one lease held, dropped and refused again without asking etcd;
 * leadership handed over only by a member on this machine, to a member id,
 * once per call, and said when (and only when) it moved; and that every
 * request we send is JSON. FUZZ_VERBOSE=1 in the environment
 * prints what each call answered (to see what a seed reaches).
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "arbiter.h"
#include "arbiter_etcd_test.h"

#define GUEST		"g"
#define OWNER		"hostA"
#define MAX_CALLS	16

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct script {
	const uint8_t *p, *end;		/* the replies not served yet */
	int exchanges;
	int transfers;			/* transfer-leadership requests */
	unsigned local;			/* leader_elsewhere's endpoints here: bit i, endpoint i */
};

static const char *const endpoint[2] = { "http://127.0.0.1:1/", "http://127.0.0.1:2/" };

/* A transfer goes to a member here (the leader), naming a member id. */
static void check_transfer(const struct script *s, const char *url, json_object *req)
{
	json_object *t;
	const char *id;
	bool here = false;

	for (int i = 0; i < 2; i++)
		here |= (s->local >> i & 1) && !strncmp(url, endpoint[i], strlen(endpoint[i]));
	if (!here || !json_object_object_get_ex(req, "targetID", &t) ||
	    !json_object_is_type(t, json_type_string) || json_object_object_length(req) != 1)
		goto bad;
	id = json_object_get_string(t);
	if (!*id || strspn(id, "0123456789") != strlen(id) || strlen(id) > 20 || id[0] == '0')
		goto bad;
	return;
bad:
	fprintf(stderr, "fuzz: a transfer of leadership that is wrong: %s '%s' (here: %u)\n",
		url, json_object_to_json_string(req), s->local);
	abort();
}

/* A decimal number at *p (at most 18 digits, so it fits an int64); 0 if none. */
static uint64_t number(const uint8_t **p, const uint8_t *end)
{
	uint64_t v = 0;

	for (int n = 0; *p < end && **p >= '0' && **p <= '9'; (*p)++)
		if (n++ < 18)
			v = v * 10 + (uint64_t)(**p - '0');
	return v;
}

static void skip_spaces(const uint8_t **p, const uint8_t *end)
{
	while (*p < end && **p == ' ')
		(*p)++;
}

/* The next reply of s; false when there is none. */
static bool next_reply(struct script *s, long *status, size_t *chunk, CURLcode *code,
		       const uint8_t **body, size_t *len)
{
	const uint8_t *p = s->p, *nl, *next;
	uint64_t v;

	if (p >= s->end || *p != '@')
		return false;
	p++;
	*status = (long)(number(&p, s->end) % 1000);
	skip_spaces(&p, s->end);
	*chunk = (size_t)number(&p, s->end);
	skip_spaces(&p, s->end);
	v = number(&p, s->end);
	*code = v < CURL_LAST ? (CURLcode)v : CURLE_RECV_ERROR;
	nl = memchr(p, '\n', (size_t)(s->end - p));
	*body = nl ? nl + 1 : s->end;
	for (next = *body; next < s->end; next++)
		if (*next == '\n' && next + 1 < s->end && next[1] == '@')
			break;
	*len = (size_t)(next - *body);
	s->p = next < s->end ? next + 1 : s->end;
	return true;
}

static CURLcode serve(void *arg, const char *url, const char *body, curl_write_callback sink,
		      void *sink_arg, long *status)
{
	struct script *s = arg;
	const uint8_t *reply;
	json_object *req;
	size_t chunk, len;
	CURLcode code;

	req = json_tokener_parse(body);
	if (!req || !strstr(url, "/v3/")) {
		fprintf(stderr, "fuzz: we sent %s '%s'\n", url, body);
		abort();
	}
	if (strstr(url, "/v3/maintenance/transfer-leadership")) {
		check_transfer(s, url, req);
		s->transfers++;
	}
	json_object_put(req);
	s->exchanges++;
	if (!next_reply(s, status, &chunk, &code, &reply, &len))
		return CURLE_COULDNT_CONNECT;
	for (size_t off = 0; off < len;) {
		size_t n = chunk && chunk < len - off ? chunk : len - off;
		/* each piece in a buffer of its own: a read past it is caught */
		char *piece = malloc(n);
		size_t took;

		if (!piece)
			return CURLE_OUT_OF_MEMORY;
		memcpy(piece, reply + off, n);
		took = sink(piece, 1, n, sink_arg);
		free(piece);
		if (took != n)
			return CURLE_WRITE_ERROR;
		off += n;
	}
	return code;
}

static void fail_check(const char *call, int rc, const char *err, const char *what)
{
	fprintf(stderr, "fuzz: %s returned %d '%s': %s\n", call, rc, err, what);
	abort();
}

/* 0 or a negative errno; a failure says why. */
static void check_rc(const char *call, int rc, const char *err)
{
	if (rc > 0 || rc < -4095)
		fail_check(call, rc, err, "not 0 or a negative errno");
	if (rc < 0 && !err[0])
		fail_check(call, rc, err, "failed without a message");
}

static void check_token(const char *call, int rc, const char *err, uint64_t token)
{
	if (!rc && (token == 0 || token > INT64_MAX))
		fail_check(call, rc, err, "a token that is not a revision");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *calls = data, *calls_end = memchr(data, '\n', size), *p;
	struct script s = { .p = calls_end ? calls_end + 1 : data + size, .end = data + size };
	struct repl_arbiter *a;
	uint64_t last = 1, tok;
	char err[2048], who[REPL_ARBITER_NAME_MAX + 1], moved[512] = "";
	bool held = false, verbose = getenv("FUZZ_VERBOSE") != NULL;
	int n_calls = 0;

	if (!calls_end)
		calls_end = data + size;
	a = repl_arbiter_etcd_new("127.0.0.1:1,127.0.0.1:2", 600000, err, sizeof(err));
	if (!a)
		abort();
	repl_arbiter_etcd_set_exchange(a, serve, &s);
	for (p = calls; p < calls_end && n_calls < MAX_CALLS;) {
		uint8_t op = *p++;
		const uint8_t *digits = p;
		uint64_t n = number(&p, calls_end), given = n;
		int before = s.exchanges, transfers = s.transfers, rc, ttl = 0;
		const char *call;

		if (!n)
			n = last;
		err[0] = 0;
		tok = 0;
		switch (op) {
		case 'a':
		case 't':
			call = op == 'a' ? "acquire" : "take_over";
			rc = op == 'a' ?
			     repl_arbiter_acquire(a, GUEST, OWNER, 5, &tok, &ttl, err, sizeof(err)) :
			     repl_arbiter_take_over(a, GUEST, OWNER, 5, n, &tok, &ttl, err,
						    sizeof(err));
			check_rc(call, rc, err);
			check_token(call, rc, err, tok);
			if (!rc && ttl < 1)
				fail_check(call, rc, err, "a TTL granted below 1 s");
			if (held && (rc != -EALREADY || s.exchanges != before))
				fail_check(call, rc, err, "a second lease, or etcd asked for it");
			if (!rc) {
				held = true;
				last = tok;
			}
			break;
		case 'i':
			rc = repl_arbiter_reissue(a, GUEST, OWNER, &tok, err, sizeof(err));
			check_rc("reissue", rc, err);
			check_token("reissue", rc, err, tok);
			if (!held && (rc != -ENOENT || s.exchanges != before))
				fail_check("reissue", rc, err, "reissued without a lease");
			if (!rc)
				last = tok;
			break;
		case 's':
			rc = repl_arbiter_mark_stale(a, GUEST, n, err, sizeof(err));
			check_rc("mark_stale", rc, err);
			break;
		case 'k':
			rc = repl_arbiter_keepalive(a, err, sizeof(err));
			check_rc("keepalive", rc, err);
			if (!held && (rc != -ENOENT || s.exchanges != before))
				fail_check("keepalive", rc, err, "renewed a lease not held");
			if (rc == -ENOENT)
				held = false;	/* "the arbiter holds no lease any more" */
			break;
		case 'r':
			rc = repl_arbiter_revoke(a, err, sizeof(err));
			check_rc("revoke", rc, err);
			if (!held && (rc || s.exchanges != before))
				fail_check("revoke", rc, err, "revoked a lease not held");
			if (!rc)
				held = false;
			break;
		case 'o':
			who[0] = 0;
			rc = repl_arbiter_owner(a, GUEST, who, sizeof(who), &tok, err, sizeof(err));
			check_rc("owner", rc, err);
			check_token("owner", rc, err, tok);
			if (!rc && (!who[0] || strnlen(who, sizeof(who)) == sizeof(who)))
				fail_check("owner", rc, err, "an owner id that is empty or unterminated");
			break;
		case 'w':
			rc = repl_arbiter_etcd_watch(a, GUEST, (int64_t)n, 1000, err, sizeof(err));
			if (rc > 1 || rc < -4095 || (rc < 0 && !err[0]))
				fail_check("watch", rc, err, "not 1, 0 or a negative errno with a message");
			break;
		case 'l': {
			static const char *const here[4] = { "", "127.0.0.1:1", "127.0.0.1:2",
							     "127.0.0.1:1,127.0.0.1:2" };

			s.local = p > digits ? (unsigned)(given & 3) : 1;
			if (repl_arbiter_etcd_set_local(a, here[s.local]))
				abort();
			memset(moved, 'x', sizeof(moved));
			rc = repl_arbiter_leader_elsewhere(a, moved, sizeof(moved), err, sizeof(err));
			check_rc("leader_elsewhere", rc, err);
			if (!memchr(moved, 0, sizeof(moved)) || (rc && moved[0]))
				fail_check("leader_elsewhere", rc, err, "moved unterminated, or said "
					   "on a failure");
			if (s.transfers - transfers > 1 ||
			    (!rc && !!moved[0] != (s.transfers > transfers)))
				fail_check("leader_elsewhere", rc, err, "a move not said, said without "
					   "a transfer, or two transfers");
			if (s.local == 3 && s.transfers > transfers)
				fail_check("leader_elsewhere", rc, err, "handed leadership to a member "
					   "on this machine");
			break;
		}
		default:
			continue;
		}
		if (verbose)
			fprintf(stderr, "%c%llu: %d %s%s (token %llu, %d exchanges)\n", op,
				(unsigned long long)n, rc, err, op == 'l' ? moved : "",
				(unsigned long long)tok, s.exchanges - before);
		n_calls++;
	}
	repl_arbiter_free(a);
	return 0;
}
