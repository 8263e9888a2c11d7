/*
 * The arbiter against a real 3-member etcd cluster started by each test
 * (tests/integration/lib/etcd.sh): acquire, a second owner refused, renewal
 * past the TTL, expiry and takeover with a larger token, revoke, wait_free,
 * a standby's take-over only from the last owner and never once marked
 * stale, a new token for a new standby without letting go of the key, one
 * member or the leader killed, the quorum lost, the leader moved off "this
 * machine" (a test hook says which loopback members count as on it); and
 * against endpoints
 * that are not etcd (nothing listening, HTML, garbage, silence, malformed
 * JSON for every call), which must fail with a clear error and no crash.
 * Prints what the replication engine needs to know as "# arbiter:" lines.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "replicate/arbiter.h"
#include "replicate/arbiter_etcd_test.h"

#define TIMEOUT_MS	1000

/* ---- helpers ---- */

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

static bool have_etcd(void)
{
	const char *bin = getenv("VMIGRATE_ETCD"), *path = getenv("PATH");
	char buf[4096];

	if (bin)
		return access(bin, X_OK) == 0;
	for (const char *p = path ? path : ""; *p;) {
		const char *end = strchr(p, ':');
		size_t n = end ? (size_t)(end - p) : strlen(p);

		snprintf(buf, sizeof(buf), "%.*s/etcd", (int)n, p);
		if (n && access(buf, X_OK) == 0)
			return true;
		p += n + (end != NULL);
	}
	return false;
}

struct cluster {
	char dir[600];
	char eps[256];
	char ep[3][80];		/* each member's endpoint */
};

/* Runs "etcd.sh CMD DIR [ARG]" for c; the first line of its output into out. */
static int helper(struct cluster *c, const char *cmd, int arg, char *out, size_t outlen)
{
	char line[2048] = "", num[16] = "";
	FILE *f;

	if (arg >= 0)
		snprintf(num, sizeof(num), "%d", arg);
	snprintf(line, sizeof(line), "VMIGRATE_ETCD_OWNER=%d bash '%s/tests/integration/lib/etcd.sh' "
		 "%s '%s' %s", (int)getpid(), test_srcdir(), cmd, c->dir, num);
	f = popen(line, "r");
	if (!f)
		return -1;
	if (!fgets(line, sizeof(line), f))
		line[0] = 0;
	while (fgetc(f) != EOF)
		;
	line[strcspn(line, "\n")] = 0;
	if (out)
		snprintf(out, outlen, "%s", line);
	return pclose(f);
}

static void cluster_start(struct cluster *c)
{
	char *p, *save = NULL;
	int i = 0;

	if (!have_etcd())
		SKIP("etcd is missing (Debian package etcd-server: tools/install-deps.sh)");
	snprintf(c->dir, sizeof(c->dir), "%s/etcd", test_tmpdir());
	CHECK_MSG(helper(c, "start", -1, c->eps, sizeof(c->eps)) == 0 && c->eps[0],
		  "cannot start a 3-member etcd cluster in %s (see its m*.log)", c->dir);
	char tmp[sizeof(c->eps)];

	snprintf(tmp, sizeof(tmp), "%s", c->eps);
	for (p = strtok_r(tmp, ",", &save); p && i < 3; p = strtok_r(NULL, ",", &save))
		snprintf(c->ep[i++], sizeof(c->ep[0]), "%s", p);
	CHECK_EQ(i, 3);
}

static void cluster_kill(struct cluster *c, int member)
{
	CHECK(helper(c, "kill", member, NULL, 0) == 0);
}

static void cluster_restart(struct cluster *c, int member)
{
	CHECK(helper(c, "restart", member, NULL, 0) == 0);
}

static int cluster_leader(struct cluster *c)
{
	char out[32];

	CHECK(helper(c, "leader", -1, out, sizeof(out)) == 0);
	return atoi(out);
}

static void cluster_stop(struct cluster *c)
{
	helper(c, "stop", -1, NULL, 0);
}

static struct repl_arbiter *arbiter(const char *eps)
{
	char err[512];
	struct repl_arbiter *a = repl_arbiter_etcd_new(eps, TIMEOUT_MS, err, sizeof(err));

	CHECK_MSG(a, "repl_arbiter_etcd_new(%s): %s", eps, err);
	return a;
}

static int cmp_long(const void *a, const void *b)
{
	long x = *(const long *)a, y = *(const long *)b;

	return x < y ? -1 : x > y;
}

/* ---- a hostile HTTP endpoint: canned replies per path ---- */

enum fake_mode { FAKE_HTTP, FAKE_RAW, FAKE_SILENT };

struct fake_reply {
	const char *path;	/* prefix; NULL ends the table */
	int status;
	const char *body;
};

struct fake {
	int fd, port;
	enum fake_mode mode;
	pthread_mutex_t lock;
	const struct fake_reply *table;	/* under lock */
	const char *big;		/* a body for "/big" tests, or NULL */
	atomic_int hits_revoke;
	atomic_bool stop;
	pthread_t thread;
};

static void fake_serve(struct fake *f, int c)
{
	char req[8192], path[256] = "", head[256];
	const char *body = "", *hdr_end;
	size_t got = 0;
	int status = 404;
	long clen = 0;

	if (f->mode == FAKE_SILENT) {
		while (!atomic_load(&f->stop) && read(c, req, sizeof(req)) > 0)
			;
		return;
	}
	for (;;) {
		ssize_t n = read(c, req + got, sizeof(req) - 1 - got);

		if (n <= 0)
			return;
		got += (size_t)n;
		req[got] = 0;
		hdr_end = strstr(req, "\r\n\r\n");
		if (hdr_end) {
			const char *cl = strcasestr(req, "Content-Length:");

			clen = cl ? atol(cl + 15) : 0;
			if ((size_t)(hdr_end + 4 - req) + (size_t)clen <= got)
				break;
		}
		if (got == sizeof(req) - 1)
			return;
	}
	if (f->mode == FAKE_RAW) {
		const char junk[] = "\x16\x03\x01 this is not HTTP at all\n";

		if (write(c, junk, sizeof(junk) - 1) < 0)
			return;
		return;
	}
	sscanf(req, "%*s %255s", path);
	if (!strcmp(path, "/v3/lease/revoke"))
		atomic_fetch_add(&f->hits_revoke, 1);
	pthread_mutex_lock(&f->lock);
	body = "<html><body><h1>404 Not Found</h1></body></html>";
	for (const struct fake_reply *r = f->table; r && r->path; r++) {
		if (!strncmp(path, r->path, strlen(r->path))) {
			status = r->status;
			body = !strcmp(r->body, "@big") ? f->big : r->body;
			break;
		}
	}
	pthread_mutex_unlock(&f->lock);
	snprintf(head, sizeof(head), "HTTP/1.1 %d X\r\nContent-Type: text/html\r\n"
		 "Content-Length: %zu\r\nConnection: close\r\n\r\n", status, strlen(body));
	if (write(c, head, strlen(head)) < 0 || write(c, body, strlen(body)) < 0)
		return;
}

static void *fake_main(void *arg)
{
	struct fake *f = arg;

	while (!atomic_load(&f->stop)) {
		struct pollfd p = { f->fd, POLLIN, 0 };
		int c;

		if (poll(&p, 1, 50) <= 0)
			continue;
		c = accept(f->fd, NULL, NULL);
		if (c < 0)
			continue;
		fake_serve(f, c);
		close(c);
	}
	return NULL;
}

static void fake_start(struct fake *f, enum fake_mode mode, const struct fake_reply *table)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(sa);

	memset(f, 0, sizeof(*f));
	f->mode = mode;
	f->table = table;
	pthread_mutex_init(&f->lock, NULL);
	f->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	CHECK(f->fd >= 0);
	CHECK(bind(f->fd, (struct sockaddr *)&sa, sizeof(sa)) == 0);
	CHECK(listen(f->fd, 16) == 0);
	CHECK(getsockname(f->fd, (struct sockaddr *)&sa, &len) == 0);
	f->port = ntohs(sa.sin_port);
	CHECK(pthread_create(&f->thread, NULL, fake_main, f) == 0);
}

static void fake_set(struct fake *f, const struct fake_reply *table)
{
	pthread_mutex_lock(&f->lock);
	f->table = table;
	pthread_mutex_unlock(&f->lock);
}

static void fake_stop(struct fake *f)
{
	atomic_store(&f->stop, true);
	shutdown(f->fd, SHUT_RDWR);
	pthread_join(f->thread, NULL);
	close(f->fd);
}

/* A port nobody listens on. */
static int closed_port(void)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(sa);
	int fd = socket(AF_INET, SOCK_STREAM, 0), port;

	CHECK(fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0);
	CHECK(getsockname(fd, (struct sockaddr *)&sa, &len) == 0);
	port = ntohs(sa.sin_port);
	close(fd);
	return port;
}

/* ---- against etcd ---- */

TEST(acquire_free_key)
{
	struct cluster c;
	struct repl_arbiter *a, *b;
	char err[512], who[64];
	uint64_t tok = 0, tok2 = 0, t;
	int ttl = 0, ttl2 = 0, rc;

	cluster_start(&c);
	a = arbiter(c.eps);
	rc = repl_arbiter_acquire(a, "g1", "hostA", 2, &tok, &ttl, err, sizeof(err));
	CHECK_MSG(rc == 0, "acquire: %d %s", rc, err);
	CHECK(tok > 0);
	CHECK_EQ(ttl, 2);
	rc = repl_arbiter_owner(a, "g1", who, sizeof(who), &t, err, sizeof(err));
	CHECK_MSG(rc == 0, "owner: %d %s", rc, err);
	CHECK(!strcmp(who, "hostA"));
	CHECK_EQ(t, tok);
	CHECK_EQ(repl_arbiter_owner(a, "g1", who, 3, &t, err, sizeof(err)), -ERANGE);
	/* one arbiter, one lease */
	CHECK_EQ(repl_arbiter_acquire(a, "g2", "hostA", 2, &tok2, &ttl2, err, sizeof(err)),
		 -EALREADY);
	CHECK(strstr(err, "g1"));
	/* below etcd's minimum TTL: raised */
	b = arbiter(c.eps);
	rc = repl_arbiter_acquire(b, "g2", "hostA", 1, &tok2, &ttl2, err, sizeof(err));
	CHECK_MSG(rc == 0, "acquire ttl 1: %d %s", rc, err);
	CHECK(tok2 > tok);
	CHECK(ttl2 >= 1);
	printf("# arbiter: etcd (default timing) grants a TTL of %d s when asked for 1 s\n", ttl2);
	CHECK_EQ(repl_arbiter_owner(a, "nobody", who, sizeof(who), &t, err, sizeof(err)), -ENOENT);
	/* bad arguments */
	CHECK_EQ(repl_arbiter_owner(a, "a/b", who, sizeof(who), &t, err, sizeof(err)), -EINVAL);
	CHECK_EQ(repl_arbiter_owner(a, "", who, sizeof(who), &t, err, sizeof(err)), -EINVAL);
	CHECK_EQ(repl_arbiter_acquire(b, "g3", "host\nA", 2, &tok2, &ttl2, err, sizeof(err)),
		 -EINVAL);
	CHECK_EQ(repl_arbiter_acquire(b, "g3", "hostA", 0, &tok2, &ttl2, err, sizeof(err)),
		 -EINVAL);
	CHECK_EQ(repl_arbiter_revoke(a, err, sizeof(err)), 0);
	CHECK_EQ(repl_arbiter_revoke(b, err, sizeof(err)), 0);
	repl_arbiter_free(a);
	repl_arbiter_free(b);
	cluster_stop(&c);
}

/* How many leases etcd has. */
static int lease_count(struct repl_arbiter *probe, struct cluster *c)
{
	char cmd[512], out[4096] = "";
	FILE *f;
	int n = 0;

	(void)probe;
	snprintf(cmd, sizeof(cmd), "bash -c 'exec 3<>/dev/tcp/%.*s/%s; printf \"POST "
		 "/v3/lease/leases HTTP/1.0\\r\\nContent-Length: 2\\r\\n\\r\\n{}\" >&3; cat <&3'",
		 (int)(strchr(c->ep[0], ':') - c->ep[0]), c->ep[0], strchr(c->ep[0], ':') + 1);
	f = popen(cmd, "r");
	CHECK(f);
	out[fread(out, 1, sizeof(out) - 1, f)] = 0;
	pclose(f);
	for (char *p = out; (p = strstr(p, "\"ID\"")); p++)
		n++;
	return n;
}

TEST(second_owner_busy)
{
	struct cluster c;
	struct repl_arbiter *a, *b;
	char err[512], want[64];
	uint64_t ta = 0, tb = 0;
	int ttl, rc;

	cluster_start(&c);
	a = arbiter(c.eps);
	b = arbiter(c.eps);
	CHECK(repl_arbiter_acquire(a, "g", "hostA", 5, &ta, &ttl, err, sizeof(err)) == 0);
	CHECK_EQ(lease_count(a, &c), 1);
	rc = repl_arbiter_acquire(b, "g", "hostB", 5, &tb, &ttl, err, sizeof(err));
	CHECK_MSG(rc == -EBUSY, "second acquire: %d %s", rc, err);
	snprintf(want, sizeof(want), "'hostA' (token %llu)", (unsigned long long)ta);
	CHECK_MSG(strstr(err, want), "error '%s' does not name %s", err, want);
	/* the lease granted for the failed transaction is gone */
	CHECK_EQ(lease_count(a, &c), 1);
	/* the same owner id on another lease is still another holder */
	rc = repl_arbiter_acquire(b, "g", "hostA", 5, &tb, &ttl, err, sizeof(err));
	CHECK_MSG(rc == -EBUSY, "same id, other lease: %d %s", rc, err);
	CHECK_EQ(repl_arbiter_keepalive(b, err, sizeof(err)), -ENOENT);
	CHECK_EQ(repl_arbiter_keepalive(a, err, sizeof(err)), 0);
	repl_arbiter_free(a);
	repl_arbiter_free(b);
	cluster_stop(&c);
}

TEST(keepalive_holds_past_ttl)
{
	struct cluster c;
	struct repl_arbiter *a, *b;
	char err[512], who[64];
	uint64_t tok, t, tb;
	long lat[100], t0, worst = 0;
	int ttl, rc;

	cluster_start(&c);
	a = arbiter(c.eps);
	b = arbiter(c.eps);
	CHECK(repl_arbiter_acquire(a, "g", "hostA", 2, &tok, &ttl, err, sizeof(err)) == 0);
	for (int i = 0; i < 100; i++) {
		t0 = now_ms();
		rc = repl_arbiter_keepalive(a, err, sizeof(err));
		CHECK_MSG(rc == 0, "keepalive %d: %d %s", i, rc, err);
		lat[i] = now_ms() - t0;
	}
	qsort(lat, 100, sizeof(lat[0]), cmp_long);
	printf("# arbiter: keepalive on loopback: p50 %ld ms, p99 %ld ms, max %ld ms\n",
	       lat[50], lat[98], lat[99]);
	/* 2.5 TTLs of renewals every TTL/3 */
	t0 = now_ms();
	while (now_ms() - t0 < 5000) {
		long s = now_ms();

		sleep_ms(ttl * 1000 / 3);
		rc = repl_arbiter_keepalive(a, err, sizeof(err));
		CHECK_MSG(rc == 0, "keepalive after %ld ms: %d %s", now_ms() - t0, rc, err);
		worst = now_ms() - s > worst ? now_ms() - s : worst;
	}
	CHECK(repl_arbiter_owner(b, "g", who, sizeof(who), &t, err, sizeof(err)) == 0);
	CHECK(!strcmp(who, "hostA"));
	CHECK_EQ(t, tok);
	CHECK_EQ(repl_arbiter_acquire(b, "g", "hostB", 2, &tb, &ttl, err, sizeof(err)), -EBUSY);
	repl_arbiter_free(a);
	repl_arbiter_free(b);
	cluster_stop(&c);
}

TEST(expiry_then_takeover)
{
	struct cluster c;
	struct repl_arbiter *a, *b;
	char err[512], who[64];
	uint64_t ta, tb, t;
	long t0, freed;
	int ttl, rc;

	cluster_start(&c);
	a = arbiter(c.eps);
	b = arbiter(c.eps);
	t0 = now_ms();
	CHECK(repl_arbiter_acquire(a, "g", "hostA", 2, &ta, &ttl, err, sizeof(err)) == 0);
	CHECK_EQ(ttl, 2);
	CHECK_EQ(repl_arbiter_acquire(b, "g", "hostB", 2, &tb, &ttl, err, sizeof(err)), -EBUSY);
	/* no keepalive: wait_free returns once the lease ran out, not before */
	rc = repl_arbiter_wait_free(b, "g", 6000, err, sizeof(err));
	freed = now_ms() - t0;
	CHECK_MSG(rc == 0, "wait_free: %d %s", rc, err);
	CHECK_MSG(freed >= 2000 - 10, "the key was free %ld ms after a 2 s lease", freed);
	CHECK_MSG(freed <= 2000 + 1500, "the key was free only %ld ms after a 2 s lease", freed);
	printf("# arbiter: a 2 s lease freed the key %ld ms after it was granted (wait_free)\n",
	       freed);
	rc = repl_arbiter_acquire(b, "g", "hostB", 2, &tb, &ttl, err, sizeof(err));
	CHECK_MSG(rc == 0, "takeover: %d %s", rc, err);
	CHECK_MSG(tb > ta, "token %llu after %llu", (unsigned long long)tb, (unsigned long long)ta);
	/* the old owner learns that it lost */
	rc = repl_arbiter_keepalive(a, err, sizeof(err));
	CHECK_MSG(rc == -ENOENT, "old owner's keepalive: %d %s", rc, err);
	CHECK(strstr(err, "no longer ours"));
	CHECK(repl_arbiter_owner(a, "g", who, sizeof(who), &t, err, sizeof(err)) == 0);
	CHECK(!strcmp(who, "hostB"));
	CHECK_EQ(t, tb);
	/* and may take something again */
	CHECK(repl_arbiter_acquire(a, "other", "hostA", 2, &t, &ttl, err, sizeof(err)) == 0);
	CHECK(t > tb);
	repl_arbiter_free(a);
	repl_arbiter_free(b);
	cluster_stop(&c);
}

TEST(revoke_frees_at_once)
{
	struct cluster c;
	struct repl_arbiter *a, *b;
	char err[512], who[64];
	uint64_t ta, tb, t;
	long t0;
	int ttl, rc;

	cluster_start(&c);
	a = arbiter(c.eps);
	b = arbiter(c.eps);
	CHECK(repl_arbiter_acquire(a, "g", "hostA", 30, &ta, &ttl, err, sizeof(err)) == 0);
	t0 = now_ms();
	rc = repl_arbiter_revoke(a, err, sizeof(err));
	CHECK_MSG(rc == 0, "revoke: %d %s", rc, err);
	CHECK_EQ(repl_arbiter_owner(b, "g", who, sizeof(who), &t, err, sizeof(err)), -ENOENT);
	CHECK_EQ(repl_arbiter_wait_free(b, "g", 0, err, sizeof(err)), 0);
	rc = repl_arbiter_acquire(b, "g", "hostB", 30, &tb, &ttl, err, sizeof(err));
	CHECK_MSG(rc == 0, "acquire after revoke: %d %s", rc, err);
	CHECK(tb > ta);
	printf("# arbiter: revoke to the other owner's acquire: %ld ms\n", now_ms() - t0);
	CHECK_EQ(repl_arbiter_keepalive(a, err, sizeof(err)), -ENOENT);
	CHECK_EQ(repl_arbiter_revoke(a, err, sizeof(err)), 0);
	repl_arbiter_free(a);
	repl_arbiter_free(b);
	cluster_stop(&c);
}

/* A standby takes over only from the last owner, and not once marked stale. */
TEST(take_over_and_stale)
{
	struct cluster c;
	struct repl_arbiter *p, *s1, *s2, *s3;
	char err[1024], want[64];
	uint64_t t1, t2, t3, t;
	int ttl, rc;

	cluster_start(&c);
	p = arbiter(c.eps);
	s1 = arbiter(c.eps);
	s2 = arbiter(c.eps);
	s3 = arbiter(c.eps);
	CHECK(repl_arbiter_acquire(p, "g", "primary", 2, &t1, &ttl, err, sizeof(err)) == 0);
	rc = repl_arbiter_take_over(s1, "g", "standby1", 2, t1, &t, &ttl, err, sizeof(err));
	CHECK_MSG(rc == -EBUSY && strstr(err, "'primary'"), "take_over while held: %d %s", rc, err);
	/* the primary dies: its lease runs out, the standby of its epochs takes over */
	CHECK(repl_arbiter_wait_free(s1, "g", 6000, err, sizeof(err)) == 0);
	rc = repl_arbiter_take_over(s1, "g", "standby1", 2, t1, &t2, &ttl, err, sizeof(err));
	CHECK_MSG(rc == 0, "take_over: %d %s", rc, err);
	CHECK(t2 > t1);
	CHECK_EQ(repl_arbiter_keepalive(p, err, sizeof(err)), -ENOENT);
	/* a copy of the first owner's epochs is behind the second owner: refused */
	CHECK(repl_arbiter_revoke(s1, err, sizeof(err)) == 0);
	rc = repl_arbiter_take_over(s2, "g", "standby2", 2, t1, &t, &ttl, err, sizeof(err));
	snprintf(want, sizeof(want), "token %llu", (unsigned long long)t1);
	CHECK_MSG(rc == -ESTALE && strstr(err, want), "take_over from an older owner: %d %s", rc,
		  err);
	CHECK_EQ(lease_count(s2, &c), 0);
	rc = repl_arbiter_take_over(s2, "g", "standby2", 2, t2, &t3, &ttl, err, sizeof(err));
	CHECK_MSG(rc == 0 && t3 > t2, "take_over from the last owner: %d %s", rc, err);
	/* the owner goes on without its standby: that standby may never take over */
	rc = repl_arbiter_mark_stale(s2, "g", t1, err, sizeof(err));
	CHECK_MSG(rc == -ENOENT, "mark_stale with a lost token: %d %s", rc, err);
	rc = repl_arbiter_mark_stale(s2, "g", t3, err, sizeof(err));
	CHECK_MSG(rc == 0, "mark_stale: %d %s", rc, err);
	CHECK(repl_arbiter_keepalive(s2, err, sizeof(err)) == 0);
	CHECK(repl_arbiter_owner(s3, "g", NULL, 0, &t, err, sizeof(err)) == 0 && t == t3);
	CHECK(repl_arbiter_revoke(s2, err, sizeof(err)) == 0);
	rc = repl_arbiter_take_over(s3, "g", "standby3", 2, t3, &t, &ttl, err, sizeof(err));
	CHECK_MSG(rc == -ESTALE && strstr(err, "went on without"), "take_over of a stale standby: "
		  "%d %s", rc, err);
	CHECK_EQ(lease_count(s3, &c), 0);
	CHECK_EQ(repl_arbiter_mark_stale(s3, "g", t3, err, sizeof(err)), -ENOENT);
	/* a guest never owned has no last owner to follow */
	rc = repl_arbiter_take_over(s3, "new", "standby3", 2, t3, &t, &ttl, err, sizeof(err));
	CHECK_MSG(rc == -ESTALE && strstr(err, "no record"), "%d %s", rc, err);
	CHECK_EQ(repl_arbiter_take_over(s3, "g", "standby3", 2, 0, &t, &ttl, err, sizeof(err)),
		 -EINVAL);
	/* a new protection starts as a first owner */
	rc = repl_arbiter_acquire(s3, "g", "primary again", 2, &t, &ttl, err, sizeof(err));
	CHECK_MSG(rc == 0 && t > t3, "acquire after a stale mark: %d %s", rc, err);
	repl_arbiter_free(p);
	repl_arbiter_free(s1);
	repl_arbiter_free(s2);
	repl_arbiter_free(s3);
	cluster_stop(&c);
}

/*
 * The owner takes a new token for a new standby without letting go of the
 * key: after mark_stale and reissue, only the standby of the new token may
 * take over.
 */
TEST(reissue_keeps_the_key)
{
	struct cluster c;
	struct repl_arbiter *p, *s, *q;
	char err[1024], who[64], want[64];
	uint64_t t1, t2, t3, t4, t;
	int ttl, rc;

	cluster_start(&c);
	p = arbiter(c.eps);
	s = arbiter(c.eps);
	q = arbiter(c.eps);
	CHECK(repl_arbiter_acquire(p, "g", "primary", 2, &t1, &ttl, err, sizeof(err)) == 0);
	/* a larger token, the key held by the same owner on the same lease */
	rc = repl_arbiter_reissue(p, "g", "primary", &t2, err, sizeof(err));
	CHECK_MSG(rc == 0 && t2 > t1, "reissue: %d %s (token %llu after %llu)", rc, err,
		  (unsigned long long)t2, (unsigned long long)t1);
	rc = repl_arbiter_owner(q, "g", who, sizeof(who), &t, err, sizeof(err));
	CHECK_MSG(rc == 0 && !strcmp(who, "primary") && t == t2, "owner after reissue: %d %s, "
		  "'%s' token %llu", rc, err, who, (unsigned long long)t);
	CHECK_EQ(repl_arbiter_keepalive(p, err, sizeof(err)), 0);
	rc = repl_arbiter_acquire(s, "g", "standby", 2, &t, &ttl, err, sizeof(err));
	snprintf(want, sizeof(want), "'primary' (token %llu)", (unsigned long long)t2);
	CHECK_MSG(rc == -EBUSY && strstr(err, want), "acquire of a reissued key: %d %s", rc, err);
	CHECK_EQ(repl_arbiter_mark_stale(p, "g", t1, err, sizeof(err)), -ENOENT);
	/* the standby of t2 lost: marked stale, a new one synchronised under t3 */
	rc = repl_arbiter_mark_stale(p, "g", t2, err, sizeof(err));
	CHECK_MSG(rc == 0, "mark_stale of a reissued token: %d %s", rc, err);
	rc = repl_arbiter_reissue(p, "g", "primary", &t3, err, sizeof(err));
	CHECK_MSG(rc == 0 && t3 > t2, "reissue after mark_stale: %d %s", rc, err);
	CHECK(repl_arbiter_owner(q, "g", NULL, 0, &t, err, sizeof(err)) == 0 && t == t3);
	/* the primary dies: its lease runs out, the key with it */
	CHECK(repl_arbiter_wait_free(s, "g", 6000, err, sizeof(err)) == 0);
	rc = repl_arbiter_reissue(p, "g", "primary", &t, err, sizeof(err));
	CHECK_MSG(rc == -ENOENT && strstr(err, "no owner"), "reissue on an expired lease: %d %s",
		  rc, err);
	/* only the standby of the last token takes over */
	rc = repl_arbiter_take_over(s, "g", "standby", 2, t1, &t, &ttl, err, sizeof(err));
	CHECK_MSG(rc == -ESTALE, "take_over with the first token: %d %s", rc, err);
	rc = repl_arbiter_take_over(s, "g", "standby", 2, t2, &t, &ttl, err, sizeof(err));
	CHECK_MSG(rc == -ESTALE && strstr(err, "went on without"), "take_over with the token "
		  "marked stale: %d %s", rc, err);
	rc = repl_arbiter_take_over(s, "g", "standby", 2, t3, &t4, &ttl, err, sizeof(err));
	CHECK_MSG(rc == 0 && t4 > t3, "take_over with the reissued token: %d %s", rc, err);
	/* the key on another lease; then no lease at all */
	rc = repl_arbiter_reissue(p, "g", "primary", &t, err, sizeof(err));
	CHECK_MSG(rc == -ENOENT && strstr(err, "'standby'"), "reissue of a key taken over: %d %s",
		  rc, err);
	CHECK_EQ(repl_arbiter_keepalive(p, err, sizeof(err)), -ENOENT);
	CHECK_EQ(repl_arbiter_reissue(p, "g", "primary", &t, err, sizeof(err)), -ENOENT);
	CHECK(repl_arbiter_revoke(s, err, sizeof(err)) == 0);
	rc = repl_arbiter_reissue(s, "g", "standby", &t, err, sizeof(err));
	CHECK_MSG(rc == -ENOENT && strstr(err, "no lease"), "reissue after revoke: %d %s", rc, err);
	CHECK_EQ(repl_arbiter_owner(q, "g", NULL, 0, &t, err, sizeof(err)), -ENOENT);
	repl_arbiter_free(p);
	repl_arbiter_free(s);
	repl_arbiter_free(q);
	cluster_stop(&c);
}

struct bg {
	struct repl_arbiter *a;
	const char *guest;
	int period_ms, timeout_ms, rc, fails, calls;
	long done_ms;
	atomic_bool stop;
	char err[512];
	pthread_t thread;
};

static void *keepalive_main(void *arg)
{
	struct bg *k = arg;

	while (!atomic_load(&k->stop)) {
		k->calls++;
		if (repl_arbiter_keepalive(k->a, k->err, sizeof(k->err)))
			k->fails++;
		sleep_ms(k->period_ms);
	}
	return NULL;
}

static void *owner_main(void *arg)
{
	struct bg *o = arg;
	char who[64];
	uint64_t t;

	while (!atomic_load(&o->stop)) {
		o->calls++;
		if (repl_arbiter_owner(o->a, o->guest, who, sizeof(who), &t, o->err, sizeof(o->err)))
			o->fails++;
	}
	return NULL;
}

static void *wait_main(void *arg)
{
	struct bg *w = arg;

	w->rc = repl_arbiter_wait_free(w->a, w->guest, w->timeout_ms, w->err, sizeof(w->err));
	w->done_ms = now_ms();
	return NULL;
}

TEST(wait_free_and_threads)
{
	struct cluster c;
	struct repl_arbiter *a, *b;
	struct bg k = { 0 }, o = { 0 }, w = { 0 };
	char err[512];
	uint64_t ta;
	long t0, el, revoked;
	int ttl, rc;

	cluster_start(&c);
	a = arbiter(c.eps);
	b = arbiter(c.eps);
	t0 = now_ms();
	CHECK_EQ(repl_arbiter_wait_free(b, "g", 3000, err, sizeof(err)), 0);
	CHECK(now_ms() - t0 < 500);
	CHECK(repl_arbiter_acquire(a, "g", "hostA", 2, &ta, &ttl, err, sizeof(err)) == 0);
	/* keepalive and owner() on the same arbiter from two threads at once */
	k.a = a;
	k.period_ms = 100;
	o.a = a;
	o.guest = "g";
	CHECK(pthread_create(&k.thread, NULL, keepalive_main, &k) == 0);
	CHECK(pthread_create(&o.thread, NULL, owner_main, &o) == 0);
	/* held and renewed: wait_free times out, past the TTL */
	t0 = now_ms();
	rc = repl_arbiter_wait_free(b, "g", 2500, err, sizeof(err));
	el = now_ms() - t0;
	CHECK_MSG(rc == -ETIMEDOUT, "wait_free on a held key: %d %s", rc, err);
	CHECK_MSG(el >= 2500 && el < 2500 + TIMEOUT_MS, "wait_free(2500) took %ld ms", el);
	CHECK_MSG(strstr(err, "hostA"), "'%s' does not name the holder", err);
	/* a waiter in another thread (and one on a itself) sees a revoke at once */
	w.a = b;
	w.guest = "g";
	w.timeout_ms = 10000;
	CHECK(pthread_create(&w.thread, NULL, wait_main, &w) == 0);
	sleep_ms(300);
	atomic_store(&k.stop, true);
	atomic_store(&o.stop, true);
	pthread_join(k.thread, NULL);
	pthread_join(o.thread, NULL);
	CHECK_MSG(k.fails == 0 && k.calls > 10, "keepalive: %d of %d failed: %s", k.fails, k.calls,
		  k.err);
	CHECK_MSG(o.fails == 0 && o.calls > 10, "owner: %d of %d failed: %s", o.fails, o.calls,
		  o.err);
	revoked = now_ms();
	CHECK(repl_arbiter_revoke(a, err, sizeof(err)) == 0);
	pthread_join(w.thread, NULL);
	CHECK_MSG(w.rc == 0, "wait_free across a revoke: %d %s", w.rc, w.err);
	CHECK_MSG(w.done_ms - revoked < 500, "wait_free returned %ld ms after the revoke",
		  w.done_ms - revoked);
	printf("# arbiter: wait_free (watch) returned %ld ms after a revoke; %d owner() calls "
	       "ran beside %d keepalives\n", w.done_ms - revoked, o.calls, k.calls);
	repl_arbiter_free(a);
	repl_arbiter_free(b);
	cluster_stop(&c);
}

TEST(one_member_down)
{
	struct cluster c;
	struct repl_arbiter *a, *b;
	char err[512], who[64], eps[512];
	uint64_t ta, tb, t;
	long t0, el;
	int ttl, rc, leader, f;
	struct fake html;
	static const struct fake_reply none[] = { { NULL, 0, NULL } };

	cluster_start(&c);
	/* a non-etcd endpoint and a closed port come first: passed over; then a
	 * follower (a dead leader is leader_killed's case: an election first) */
	leader = cluster_leader(&c);
	f = (leader + 1) % 3;
	fake_start(&html, FAKE_HTTP, none);
	snprintf(eps, sizeof(eps), "etcd://127.0.0.1:%d,127.0.0.1:%d,%s,%s,%s", html.port,
		 closed_port(), c.ep[f], c.ep[leader], c.ep[(leader + 2) % 3]);
	a = arbiter(eps);
	b = arbiter(c.eps);
	rc = repl_arbiter_acquire(a, "g", "hostA", 3, &ta, &ttl, err, sizeof(err));
	CHECK_MSG(rc == 0, "acquire past two bad endpoints: %d %s", rc, err);
	/* kill the member a uses now (the first one that answered) */
	cluster_kill(&c, f);
	t0 = now_ms();
	rc = repl_arbiter_keepalive(a, err, sizeof(err));
	el = now_ms() - t0;
	CHECK_MSG(rc == 0, "keepalive with a member down: %d %s", rc, err);
	CHECK(el <= TIMEOUT_MS + 250);
	CHECK(repl_arbiter_owner(b, "g", who, sizeof(who), &t, err, sizeof(err)) == 0);
	CHECK(!strcmp(who, "hostA") && t == ta);
	CHECK_EQ(repl_arbiter_acquire(b, "g", "hostB", 3, &tb, &ttl, err, sizeof(err)), -EBUSY);
	rc = repl_arbiter_acquire(b, "h", "hostB", 2, &tb, &ttl, err, sizeof(err));
	CHECK_MSG(rc == 0, "acquire with a member down: %d %s", rc, err);
	CHECK(tb > ta);
	CHECK_EQ(repl_arbiter_wait_free(a, "h", 6000, err, sizeof(err)), 0);
	CHECK(repl_arbiter_revoke(a, err, sizeof(err)) == 0);
	CHECK_EQ(repl_arbiter_owner(b, "g", who, sizeof(who), &t, err, sizeof(err)), -ENOENT);
	repl_arbiter_free(a);
	repl_arbiter_free(b);
	fake_stop(&html);
	cluster_stop(&c);
}

TEST(leader_killed)
{
	struct cluster c;
	struct repl_arbiter *a;
	char err[512], who[64];
	uint64_t ta, t;
	long t0, first_ok = -1, longest = 0, last_ok;
	int ttl, rc, leader, fails = 0;

	cluster_start(&c);
	a = arbiter(c.eps);
	CHECK(repl_arbiter_acquire(a, "g", "hostA", 5, &ta, &ttl, err, sizeof(err)) == 0);
	leader = cluster_leader(&c);
	CHECK(repl_arbiter_keepalive(a, err, sizeof(err)) == 0);
	last_ok = t0 = now_ms();
	cluster_kill(&c, leader);
	/* renew as the engine would, every 200 ms, until 1 s after it works again */
	while (now_ms() - t0 < 5000 && (first_ok < 0 || now_ms() - t0 < first_ok + 1000)) {
		long s = now_ms();

		rc = repl_arbiter_keepalive(a, err, sizeof(err));
		CHECK_MSG(rc != -ENOENT, "the lease was lost with the leader: %s", err);
		if (rc == 0) {
			if (first_ok < 0)
				first_ok = now_ms() - t0;
			longest = s - last_ok > longest ? s - last_ok : longest;
			last_ok = s;
		} else {
			fails++;
		}
		CHECK_MSG(now_ms() - s <= TIMEOUT_MS + 250, "keepalive took %ld ms", now_ms() - s);
		sleep_ms(200);
	}
	CHECK_MSG(first_ok >= 0, "no keepalive succeeded within 5 s of the leader's death: %s",
		  err);
	printf("# arbiter: leader killed: %d keepalives failed, renewed again after %ld ms, "
	       "longest gap between renewals %ld ms\n", fails, first_ok, longest);
	CHECK(repl_arbiter_owner(a, "g", who, sizeof(who), &t, err, sizeof(err)) == 0);
	CHECK(!strcmp(who, "hostA") && t == ta);
	repl_arbiter_free(a);
	cluster_stop(&c);
}

TEST(quorum_lost)
{
	struct cluster c;
	struct repl_arbiter *a, *b;
	char err[1024], who[64];
	uint64_t ta, t;
	long t0, el;
	int ttl, rc, survivor, leader;

	cluster_start(&c);
	a = arbiter(c.eps);
	b = arbiter(c.eps);
	CHECK(repl_arbiter_acquire(a, "g", "hostA", 3, &ta, &ttl, err, sizeof(err)) == 0);
	/* the leader and a follower: the survivor is a follower without a leader
	 * (a leader left alone renews for a while: minority_leader_window) */
	leader = cluster_leader(&c);
	cluster_kill(&c, leader);
	cluster_kill(&c, (leader + 1) % 3);
	survivor = (leader + 2) % 3;
	t0 = now_ms();
	rc = repl_arbiter_keepalive(a, err, sizeof(err));
	el = now_ms() - t0;
	CHECK_MSG(rc < 0 && rc != -ENOENT, "keepalive without a quorum: %d %s", rc, err);
	CHECK_MSG(el <= TIMEOUT_MS + 250, "keepalive without a quorum took %ld ms", el);
	CHECK_MSG(strstr(err, c.ep[0]) && strstr(err, c.ep[1]) && strstr(err, c.ep[2]),
		  "'%s' does not name every endpoint", err);
	CHECK_MSG(strstr(err, "cannot connect"), "'%s'", err);
	printf("# arbiter: keepalive without a quorum: %s (%d) after %ld ms: %s\n", strerror(-rc),
	       rc, el, err);
	t0 = now_ms();
	rc = repl_arbiter_owner(b, "g", who, sizeof(who), &t, err, sizeof(err));
	CHECK_MSG(rc < 0 && rc != -ENOENT, "owner without a quorum: %d %s", rc, err);
	CHECK(now_ms() - t0 <= TIMEOUT_MS + 250);
	t0 = now_ms();
	rc = repl_arbiter_acquire(b, "h", "hostB", 3, &t, &ttl, err, sizeof(err));
	CHECK_MSG(rc < 0 && rc != -EBUSY, "acquire without a quorum: %d %s", rc, err);
	CHECK(now_ms() - t0 <= 3 * TIMEOUT_MS + 300);
	t0 = now_ms();
	rc = repl_arbiter_wait_free(b, "g", 1500, err, sizeof(err));
	el = now_ms() - t0;
	CHECK_MSG(rc < 0 && rc != -ETIMEDOUT, "wait_free without a quorum: %d %s", rc, err);
	CHECK_MSG(el >= 1500 && el <= 1500 + TIMEOUT_MS + 300, "wait_free(1500) took %ld ms", el);
	/* the quorum back: the lease lived on (a new leader renews every lease) */
	CHECK_MSG(strstr(err, c.ep[survivor]), "'%s' does not name the survivor", err);
	cluster_restart(&c, leader);
	cluster_restart(&c, (leader + 1) % 3);
	t0 = now_ms();
	do {
		rc = repl_arbiter_keepalive(a, err, sizeof(err));
		if (rc)
			sleep_ms(100);
	} while (rc && rc != -ENOENT && now_ms() - t0 < 15000);
	CHECK_MSG(rc == 0, "keepalive after the quorum came back: %d %s", rc, err);
	printf("# arbiter: quorum back, keepalive renewed after %ld ms\n", now_ms() - t0);
	CHECK(repl_arbiter_owner(b, "g", who, sizeof(who), &t, err, sizeof(err)) == 0);
	CHECK(t == ta);
	repl_arbiter_free(a);
	repl_arbiter_free(b);
	cluster_stop(&c);
}

/*
 * etcd 3.4 renews a lease on the leader without asking a quorum, so a
 * leader left alone goes on renewing until it steps down (it notices the
 * lost quorum within about two election timeouts); a new leader elsewhere
 * extends every lease by an election timeout to cover that. The engine's
 * fencing margin must cover it too: measure it.
 */
TEST(minority_leader_window)
{
	struct cluster c;
	struct repl_arbiter *a;
	char err[1024];
	uint64_t ta;
	long t0, last_ok = 0, s;
	int ttl, rc, leader, fails = 0;

	cluster_start(&c);
	a = arbiter(c.eps);
	CHECK(repl_arbiter_acquire(a, "g", "hostA", 5, &ta, &ttl, err, sizeof(err)) == 0);
	leader = cluster_leader(&c);
	cluster_kill(&c, (leader + 1) % 3);
	cluster_kill(&c, (leader + 2) % 3);
	t0 = now_ms();
	while (now_ms() - t0 < 5000 && fails < 3) {
		s = now_ms();
		rc = repl_arbiter_keepalive(a, err, sizeof(err));
		CHECK_MSG(now_ms() - s <= TIMEOUT_MS + 250, "keepalive took %ld ms", now_ms() - s);
		CHECK_MSG(rc != -ENOENT, "%s", err);
		if (rc == 0)
			last_ok = now_ms() - t0;
		else
			fails++;
		sleep_ms(100);
	}
	CHECK_MSG(fails == 3, "the leader alone renewed for 5 s");
	CHECK_MSG(last_ok <= 3000, "the leader alone renewed for %ld ms", last_ok);
	printf("# arbiter: a leader left alone went on renewing for %ld ms after it lost "
	       "its quorum\n", last_ok);
	repl_arbiter_free(a);
	cluster_stop(&c);
}

/*
 * The leader kept off this machine: on loopback every member is here, so
 * the test hook names the members that count as here. Leadership moves to
 * a member elsewhere (the one not named), and stays put when the leader is
 * elsewhere already; a lease held meanwhile lives on with its token.
 */
TEST(leader_moves_off_this_host)
{
	struct cluster c;
	struct repl_arbiter *a, *o;
	char err[1024], moved[512], here[256];
	uint64_t tok, t;
	long t0, el;
	int ttl, rc, leader, lead2, other, third;

	cluster_start(&c);
	a = arbiter(c.eps);
	o = arbiter(c.eps);
	CHECK(repl_arbiter_acquire(o, "g", "hostA", 5, &tok, &ttl, err, sizeof(err)) == 0);
	leader = cluster_leader(&c);
	/* the leader alone here: it hands over to a member elsewhere */
	CHECK(repl_arbiter_etcd_set_local(a, c.ep[leader]) == 0);
	t0 = now_ms();
	rc = repl_arbiter_leader_elsewhere(a, moved, sizeof(moved), err, sizeof(err));
	el = now_ms() - t0;
	CHECK_MSG(rc == 0 && strstr(moved, c.ep[leader]), "leader_elsewhere with the leader %s "
		  "here: %d '%s' '%s'", c.ep[leader], rc, moved, err);
	lead2 = cluster_leader(&c);
	CHECK_MSG(lead2 != leader && strstr(moved, c.ep[lead2]), "member %d leads after '%s'",
		  lead2, moved);
	printf("# arbiter: leader_elsewhere moved a local leader away in %ld ms: %s\n", el, moved);
	/* the leader elsewhere: nothing to do, nothing moves */
	strcpy(moved, "x");
	rc = repl_arbiter_leader_elsewhere(a, moved, sizeof(moved), err, sizeof(err));
	CHECK_MSG(rc == 0 && !moved[0], "leader elsewhere already: %d '%s' '%s'", rc, moved, err);
	CHECK_EQ(cluster_leader(&c), lead2);
	/* the leader and another here: only the third is elsewhere */
	other = (lead2 + 1) % 3;
	third = (lead2 + 2) % 3;
	snprintf(here, sizeof(here), "%s,%s", c.ep[other], c.ep[lead2]);
	CHECK(repl_arbiter_etcd_set_local(a, here) == 0);
	rc = repl_arbiter_leader_elsewhere(a, moved, sizeof(moved), err, sizeof(err));
	CHECK_MSG(rc == 0 && strstr(moved, c.ep[third]), "two members here: %d '%s' '%s'", rc,
		  moved, err);
	CHECK_EQ(cluster_leader(&c), third);
	/* every member here: nowhere to go */
	CHECK(repl_arbiter_etcd_set_local(a, c.eps) == 0);
	rc = repl_arbiter_leader_elsewhere(a, moved, sizeof(moved), err, sizeof(err));
	CHECK_MSG(rc == -ENOENT && strstr(err, "every other member") && strstr(err, c.ep[third]),
		  "every member here: %d '%s'", rc, err);
	/* without the hook: this machine's addresses, and loopback is one */
	CHECK(repl_arbiter_etcd_set_local(a, NULL) == 0);
	rc = repl_arbiter_leader_elsewhere(a, moved, sizeof(moved), err, sizeof(err));
	CHECK_MSG(rc == -ENOENT && strstr(err, "on this machine"), "loopback members: %d '%s'",
		  rc, err);
	CHECK_EQ(cluster_leader(&c), third);
	/* the lease held through two moves: renewed (after a retry at most), same token */
	t0 = now_ms();
	while ((rc = repl_arbiter_keepalive(o, err, sizeof(err))) && rc != -ENOENT &&
	       now_ms() - t0 < 3000)
		sleep_ms(100);
	CHECK_MSG(rc == 0, "keepalive after the moves: %d %s", rc, err);
	CHECK(repl_arbiter_owner(a, "g", NULL, 0, &t, err, sizeof(err)) == 0 && t == tok);
	repl_arbiter_free(a);
	repl_arbiter_free(o);
	cluster_stop(&c);
}

/* Endpoints that do not answer: an error naming them, and nothing moved. */
TEST(leader_elsewhere_unreachable)
{
	struct cluster c;
	struct repl_arbiter *a;
	char err[1024], moved[512], eps[256], closed[64];
	int rc, leader, f;

	snprintf(closed, sizeof(closed), "127.0.0.1:%d", closed_port());
	snprintf(eps, sizeof(eps), "%s,127.0.0.1:%d", closed, closed_port());
	a = arbiter(eps);
	strcpy(moved, "x");
	rc = repl_arbiter_leader_elsewhere(a, moved, sizeof(moved), err, sizeof(err));
	CHECK_MSG(rc == -ECONNREFUSED && strstr(err, closed) && strstr(err, "refused") && !moved[0],
		  "nothing listening: %d '%s' '%s'", rc, err, moved);
	repl_arbiter_free(a);

	cluster_start(&c);
	leader = cluster_leader(&c);
	f = (leader + 1) % 3;
	/* the leader here, the only member elsewhere not answering */
	snprintf(eps, sizeof(eps), "%s,%s", c.ep[leader], closed);
	a = arbiter(eps);
	CHECK(repl_arbiter_etcd_set_local(a, c.ep[leader]) == 0);
	rc = repl_arbiter_leader_elsewhere(a, moved, sizeof(moved), err, sizeof(err));
	CHECK_MSG(rc == -ECONNREFUSED && strstr(err, "no member elsewhere answered") &&
		  strstr(err, closed), "nowhere to move: %d '%s'", rc, err);
	CHECK_EQ(cluster_leader(&c), leader);
	repl_arbiter_free(a);
	/* a follower answers, the one that may lead does not: cannot tell */
	snprintf(eps, sizeof(eps), "%s,%s", c.ep[f], closed);
	a = arbiter(eps);
	CHECK(repl_arbiter_etcd_set_local(a, "") == 0);
	rc = repl_arbiter_leader_elsewhere(a, moved, sizeof(moved), err, sizeof(err));
	CHECK_MSG(rc == -ECONNREFUSED && strstr(err, "no endpoint that answered leads"),
		  "leader unknown: %d '%s'", rc, err);
	repl_arbiter_free(a);
	/* every endpoint answered and none leads: the leader is not one of ours */
	a = arbiter(c.ep[f]);
	CHECK(repl_arbiter_etcd_set_local(a, c.ep[f]) == 0);
	rc = repl_arbiter_leader_elsewhere(a, moved, sizeof(moved), err, sizeof(err));
	CHECK_MSG(rc == 0 && !moved[0], "the leader none of the endpoints: %d '%s' '%s'", rc, err,
		  moved);
	CHECK_EQ(cluster_leader(&c), leader);
	repl_arbiter_free(a);
	cluster_stop(&c);
}

/* ---- against what is not etcd ---- */

TEST(bad_endpoints)
{
	static const struct fake_reply none[] = { { NULL, 0, NULL } };
	struct fake html, raw, silent;
	struct repl_arbiter *a;
	char err[1024], eps[128];
	uint64_t t;
	long t0, el;
	int ttl, rc;

	static const char *bad[] = {
		"", "etcd://", "localhost", "localhost:", "localhost:0", "localhost:65536",
		"host name:2379", "a:1,", ",a:1", "[::1:2379", "[::1]2379", "https://h:2379",
		"a:1,a:2,a:3,a:4,a:5,a:6,a:7,a:8,a:9,a:10,a:11,a:12,a:13,a:14,a:15,a:16,a:17",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = 0;
		a = repl_arbiter_etcd_new(bad[i], TIMEOUT_MS, err, sizeof(err));
		CHECK_MSG(!a && err[0], "endpoints '%s' were taken", bad[i]);
	}
	CHECK(!repl_arbiter_etcd_new("h:1", 10, err, sizeof(err)));
	a = repl_arbiter_etcd_new("etcd://[::1]:2379,http://10.0.0.1:2379,h-1.example:1",
				  TIMEOUT_MS, err, sizeof(err));
	CHECK_MSG(a, "%s", err);
	repl_arbiter_free(a);

	/* nothing listening */
	snprintf(eps, sizeof(eps), "127.0.0.1:%d", closed_port());
	a = arbiter(eps);
	rc = repl_arbiter_acquire(a, "g", "hostA", 2, &t, &ttl, err, sizeof(err));
	CHECK_MSG(rc == -ECONNREFUSED && strstr(err, eps) && strstr(err, "refused"), "%d %s", rc,
		  err);
	printf("# arbiter: nothing listening: %s\n", err);
	repl_arbiter_free(a);

	/* an HTTP server that is not etcd */
	fake_start(&html, FAKE_HTTP, none);
	snprintf(eps, sizeof(eps), "127.0.0.1:%d", html.port);
	a = arbiter(eps);
	rc = repl_arbiter_acquire(a, "g", "hostA", 2, &t, &ttl, err, sizeof(err));
	CHECK_MSG(rc == -EPROTO && strstr(err, "not an etcd") && strstr(err, "HTTP 404"), "%d %s",
		  rc, err);
	printf("# arbiter: a web server: %s\n", err);
	CHECK_EQ(repl_arbiter_owner(a, "g", NULL, 0, &t, err, sizeof(err)), -EPROTO);
	CHECK_EQ(repl_arbiter_wait_free(a, "g", 300, err, sizeof(err)), -EPROTO);
	CHECK_EQ(repl_arbiter_keepalive(a, err, sizeof(err)), -ENOENT);
	repl_arbiter_free(a);
	fake_stop(&html);

	/* not HTTP at all */
	fake_start(&raw, FAKE_RAW, none);
	snprintf(eps, sizeof(eps), "127.0.0.1:%d", raw.port);
	a = arbiter(eps);
	rc = repl_arbiter_owner(a, "g", NULL, 0, &t, err, sizeof(err));
	CHECK_MSG(rc == -EPROTO && strstr(err, eps), "%d %s", rc, err);
	printf("# arbiter: not HTTP: %s\n", err);
	repl_arbiter_free(a);
	fake_stop(&raw);

	/* accepts and never answers: within the request timeout */
	fake_start(&silent, FAKE_SILENT, none);
	snprintf(eps, sizeof(eps), "127.0.0.1:%d", silent.port);
	a = arbiter(eps);
	t0 = now_ms();
	rc = repl_arbiter_owner(a, "g", NULL, 0, &t, err, sizeof(err));
	el = now_ms() - t0;
	CHECK_MSG(rc == -ETIMEDOUT && strstr(err, "no reply"), "%d %s", rc, err);
	CHECK_MSG(el >= TIMEOUT_MS - 50 && el <= TIMEOUT_MS + 250, "took %ld ms", el);
	repl_arbiter_free(a);
	fake_stop(&silent);
}

#define HDR "\"header\":{\"revision\":\"7\"}"
#define KEY_G "dm1pZ3JhdGUvb3duZXIvZw=="	/* vmigrate/owner/g */
#define VAL_A "aG9zdEE="			/* hostA */
#define GRANT_OK { "/v3/lease/grant", 200, "{" HDR ",\"ID\":\"5\",\"TTL\":\"2\"}" }
#define REVOKE_OK { "/v3/lease/revoke", 200, "{" HDR "}" }
#define TXN_WON { "/v3/kv/txn", 200, "{" HDR ",\"succeeded\":true}" }

struct case_ {
	const char *what;
	struct fake_reply r[4];
};

/* Every reply here is wrong in one way; acquire must fail without a crash. */
static const struct case_ acquire_cases[] = {
	{ "grant: empty object", { { "/v3/lease/grant", 200, "{}" } } },
	{ "grant: no ID", { { "/v3/lease/grant", 200, "{" HDR ",\"TTL\":\"2\"}" } } },
	{ "grant: ID not a number", { { "/v3/lease/grant", 200, "{" HDR ",\"ID\":\"5x\",\"TTL\":\"2\"}" } } },
	{ "grant: ID overflows", { { "/v3/lease/grant", 200, "{" HDR ",\"ID\":\"99999999999999999999\",\"TTL\":\"2\"}" } } },
	{ "grant: ID an object", { { "/v3/lease/grant", 200, "{" HDR ",\"ID\":{},\"TTL\":\"2\"}" } } },
	{ "grant: negative TTL", { { "/v3/lease/grant", 200, "{" HDR ",\"ID\":\"5\",\"TTL\":\"-2\"}" } } },
	{ "grant: header a string", { { "/v3/lease/grant", 200, "{\"header\":\"x\",\"ID\":\"5\",\"TTL\":\"2\"}" } } },
	{ "grant: truncated", { { "/v3/lease/grant", 200, "{" HDR ",\"ID\":\"5\",\"TT" } } },
	{ "grant: two objects", { { "/v3/lease/grant", 200, "{" HDR ",\"ID\":\"5\",\"TTL\":\"2\"}{}" } } },
	{ "grant: an array", { { "/v3/lease/grant", 200, "[1,2]" } } },
	{ "grant: a NUL in a number", { { "/v3/lease/grant", 200, "{" HDR ",\"ID\":\"5\\u0000\",\"TTL\":\"2\"}" } } },
	{ "grant: too big", { { "/v3/lease/grant", 200, "@big" } } },
	{ "grant: error without code", { { "/v3/lease/grant", 500, "{\"error\":\"boom\"}" } } },
	{ "txn: no header", { GRANT_OK, REVOKE_OK, { "/v3/kv/txn", 200, "{\"succeeded\":true}" } } },
	{ "txn: revision 0", { GRANT_OK, REVOKE_OK, { "/v3/kv/txn", 200, "{\"header\":{\"revision\":\"0\"},\"succeeded\":true}" } } },
	{ "txn: succeeded a string", { GRANT_OK, REVOKE_OK, { "/v3/kv/txn", 200, "{" HDR ",\"succeeded\":\"yes\"}" } } },
	{ "txn: failed, no responses", { GRANT_OK, REVOKE_OK, { "/v3/kv/txn", 200, "{" HDR "}" } } },
	{ "txn: failed, empty kvs", { GRANT_OK, REVOKE_OK, { "/v3/kv/txn", 200, "{" HDR ",\"responses\":[{\"response_range\":{" HDR ",\"kvs\":[]}}]}" } } },
	{ "txn: failed, another key", { GRANT_OK, REVOKE_OK, { "/v3/kv/txn", 200, "{" HDR ",\"responses\":[{\"response_range\":{" HDR ",\"kvs\":[{\"key\":\"" VAL_A "\",\"value\":\"" VAL_A "\",\"create_revision\":\"3\",\"mod_revision\":\"3\"}]}}]}" } } },
	{ "txn: failed, value not base64", { GRANT_OK, REVOKE_OK, { "/v3/kv/txn", 200, "{" HDR ",\"responses\":[{\"response_range\":{" HDR ",\"kvs\":[{\"key\":\"" KEY_G "\",\"value\":\"a$b=\",\"create_revision\":\"3\",\"mod_revision\":\"3\"}]}}]}" } } },
	{ "txn: failed, no create_revision", { GRANT_OK, REVOKE_OK, { "/v3/kv/txn", 200, "{" HDR ",\"responses\":[{\"response_range\":{" HDR ",\"kvs\":[{\"key\":\"" KEY_G "\",\"value\":\"" VAL_A "\"}]}}]}" } } },
	{ "txn: failed, kvs an object", { GRANT_OK, REVOKE_OK, { "/v3/kv/txn", 200, "{" HDR ",\"responses\":[{\"response_range\":{" HDR ",\"kvs\":{}}}]}" } } },
	{ "txn: responses hold a number", { GRANT_OK, REVOKE_OK, { "/v3/kv/txn", 200, "{" HDR ",\"responses\":[5]}" } } },
	{ "txn: HTML 500", { GRANT_OK, REVOKE_OK, { "/v3/kv/txn", 500, "<html>oops</html>" } } },
};

TEST(malformed_replies)
{
	static const struct fake_reply none[] = { { NULL, 0, NULL } };
	struct fake f;
	struct repl_arbiter *a;
	char err[1024], eps[64], who[64];
	uint64_t t;
	int ttl, rc, revokes;
	char *big = malloc(300 * 1024 + 1);

	CHECK(big);
	memset(big, ' ', 300 * 1024);
	big[0] = '{';
	big[300 * 1024 - 1] = '}';
	big[300 * 1024] = 0;
	fake_start(&f, FAKE_HTTP, none);
	f.big = big;
	snprintf(eps, sizeof(eps), "127.0.0.1:%d", f.port);
	a = arbiter(eps);
	for (size_t i = 0; i < sizeof(acquire_cases) / sizeof(acquire_cases[0]); i++) {
		const struct case_ *c = &acquire_cases[i];

		fake_set(&f, c->r);
		revokes = atomic_load(&f.hits_revoke);
		err[0] = 0;
		rc = repl_arbiter_acquire(a, "g", "hostA", 2, &t, &ttl, err, sizeof(err));
		CHECK_MSG(rc < 0 && rc != -EBUSY && err[0], "%s: acquire gave %d '%s'", c->what, rc,
			  err);
		if (!strncmp(c->what, "txn", 3))
			CHECK_MSG(atomic_load(&f.hits_revoke) == revokes + 1,
				  "%s: the lease was not revoked", c->what);
	}
	/* held by another, said properly: -EBUSY naming it, the lease revoked */
	static const struct fake_reply busy[] = { GRANT_OK, REVOKE_OK, { "/v3/kv/txn", 200,
		"{" HDR ",\"responses\":[{\"response_range\":{" HDR ",\"kvs\":[{\"key\":\"" KEY_G
		"\",\"value\":\"" VAL_A "\",\"create_revision\":\"3\",\"mod_revision\":\"4\","
		"\"lease\":\"4\"}]}}]}" },
		{ NULL, 0, NULL } };
	fake_set(&f, busy);
	revokes = atomic_load(&f.hits_revoke);
	rc = repl_arbiter_acquire(a, "g", "hostA", 2, &t, &ttl, err, sizeof(err));
	CHECK_MSG(rc == -EBUSY && strstr(err, "'hostA' (token 4)"), "%d %s", rc, err);
	CHECK_EQ(atomic_load(&f.hits_revoke), revokes + 1);
	/* our own owner id on our own lease: an earlier try won (a retried txn) */
	static const struct fake_reply ours[] = { GRANT_OK, REVOKE_OK, { "/v3/kv/txn", 200,
		"{" HDR ",\"responses\":[{\"response_range\":{" HDR ",\"kvs\":[{\"key\":\"" KEY_G
		"\",\"value\":\"" VAL_A "\",\"create_revision\":\"6\",\"mod_revision\":\"6\","
		"\"lease\":\"5\"}]}}]}" },
		{ NULL, 0, NULL } };
	fake_set(&f, ours);
	rc = repl_arbiter_acquire(a, "g", "hostA", 2, &t, &ttl, err, sizeof(err));
	CHECK_MSG(rc == 0 && t == 6 && ttl == 2, "%d %s", rc, err);
	CHECK(repl_arbiter_revoke(a, err, sizeof(err)) == 0);

	/* a take-over refused must say why: both ranges */
	static const struct fake_reply one_range[] = { GRANT_OK, REVOKE_OK, { "/v3/kv/txn", 200,
		"{" HDR ",\"responses\":[{\"response_range\":{" HDR "}}]}" }, { NULL, 0, NULL } };
	fake_set(&f, one_range);
	rc = repl_arbiter_take_over(a, "g", "hostA", 2, 3, &t, &ttl, err, sizeof(err));
	CHECK_MSG(rc == -EPROTO, "take_over with one range: %d %s", rc, err);
	static const struct fake_reply stale[] = { GRANT_OK, REVOKE_OK, { "/v3/kv/txn", 200,
		"{" HDR ",\"responses\":[{\"response_range\":{" HDR "}},{\"response_range\":{" HDR
		",\"kvs\":[{\"key\":\"dm1pZ3JhdGUvbGFzdC9n\",\"value\":\"" VAL_A "\","
		"\"create_revision\":\"2\",\"mod_revision\":\"4\"}]}}]}" }, { NULL, 0, NULL } };
	fake_set(&f, stale);
	rc = repl_arbiter_take_over(a, "g", "hostA", 2, 3, &t, &ttl, err, sizeof(err));
	CHECK_MSG(rc == -ESTALE && strstr(err, "revision 4"), "take_over refused: %d %s", rc, err);
	rc = repl_arbiter_take_over(a, "g", "hostA", 2, 4, &t, &ttl, err, sizeof(err));
	CHECK_MSG(rc == -EPROTO, "refused though the last owner matches: %d %s", rc, err);

	/* now held through a proper grant and txn: keepalive replies that are wrong */
	static const struct case_ ka_cases[] = {
		{ "no result", { { "/v3/lease/keepalive", 200, "{" HDR ",\"ID\":\"5\",\"TTL\":\"2\"}" } } },
		{ "ID of another lease", { { "/v3/lease/keepalive", 200, "{\"result\":{" HDR ",\"ID\":\"6\",\"TTL\":\"2\"}}" } } },
		{ "TTL not a number", { { "/v3/lease/keepalive", 200, "{\"result\":{" HDR ",\"ID\":\"5\",\"TTL\":\"two\"}}" } } },
		{ "result without header", { { "/v3/lease/keepalive", 200, "{\"result\":{\"ID\":\"5\",\"TTL\":\"2\"}}" } } },
		{ "garbage", { { "/v3/lease/keepalive", 200, "\x01\x02\x03" } } },
		{ "stream error, bad code", { { "/v3/lease/keepalive", 503, "{\"error\":{\"grpc_code\":\"x\",\"message\":\"m\"}}" } } },
	};
	static const struct fake_reply won[] = { GRANT_OK, REVOKE_OK, TXN_WON, { NULL, 0, NULL } };
	fake_set(&f, won);
	rc = repl_arbiter_acquire(a, "g", "hostA", 2, &t, &ttl, err, sizeof(err));
	CHECK_MSG(rc == 0 && t == 7, "%d %s", rc, err);
	for (size_t i = 0; i < sizeof(ka_cases) / sizeof(ka_cases[0]); i++) {
		fake_set(&f, ka_cases[i].r);
		rc = repl_arbiter_keepalive(a, err, sizeof(err));
		CHECK_MSG(rc == -EPROTO, "keepalive, %s: %d %s", ka_cases[i].what, rc, err);
	}
	/* etcd's own answers: no leader is worth retrying, a missing lease is final */
	static const struct fake_reply noleader[] = { { "/v3/lease/keepalive", 503,
		"{\"error\":{\"grpc_code\":14,\"http_code\":503,\"message\":\"etcdserver: no leader\","
		"\"http_status\":\"Service Unavailable\"}}" }, { NULL, 0, NULL } };
	fake_set(&f, noleader);
	rc = repl_arbiter_keepalive(a, err, sizeof(err));
	CHECK_MSG(rc == -EAGAIN && strstr(err, "no leader"), "%d %s", rc, err);
	static const struct fake_reply gone[] = { { "/v3/lease/keepalive", 200,
		"{\"result\":{" HDR ",\"ID\":\"5\"}}\n" }, { NULL, 0, NULL } };
	fake_set(&f, gone);
	CHECK_EQ(repl_arbiter_keepalive(a, err, sizeof(err)), -ENOENT);
	CHECK_EQ(repl_arbiter_keepalive(a, err, sizeof(err)), -ENOENT);
	/* "lease not found" said as an error is gone as well: the lease dropped */
	static const struct fake_reply not_found[] = { GRANT_OK, TXN_WON, REVOKE_OK,
		{ "/v3/lease/keepalive", 404, "{\"error\":\"etcdserver: requested lease not "
		  "found\",\"message\":\"etcdserver: requested lease not found\",\"code\":5}" },
		{ NULL, 0, NULL } };
	fake_set(&f, not_found);
	CHECK(repl_arbiter_acquire(a, "g", "hostA", 2, &t, &ttl, err, sizeof(err)) == 0);
	rc = repl_arbiter_keepalive(a, err, sizeof(err));
	CHECK_MSG(rc == -ENOENT && strstr(err, "not found"), "keepalive, lease not found: %d %s",
		  rc, err);
	rc = repl_arbiter_keepalive(a, err, sizeof(err));
	CHECK_MSG(rc == -ENOENT && strstr(err, "no lease held"), "the lease not found was kept: "
		  "%d %s", rc, err);
	CHECK(repl_arbiter_acquire(a, "g", "hostA", 2, &t, &ttl, err, sizeof(err)) == 0);
	CHECK(repl_arbiter_revoke(a, err, sizeof(err)) == 0);

	/* owner(): range replies that are wrong */
	static const struct case_ range_cases[] = {
		{ "no header", { { "/v3/kv/range", 200, "{\"kvs\":[]}" } } },
		{ "kvs a string", { { "/v3/kv/range", 200, "{" HDR ",\"kvs\":\"x\"}" } } },
		{ "another key", { { "/v3/kv/range", 200, "{" HDR ",\"kvs\":[{\"key\":\"" VAL_A "\",\"value\":\"" VAL_A "\",\"create_revision\":\"3\",\"mod_revision\":\"3\"}]}" } } },
		{ "bad padding", { { "/v3/kv/range", 200, "{" HDR ",\"kvs\":[{\"key\":\"" KEY_G "\",\"value\":\"aG9=zdEE\",\"create_revision\":\"3\",\"mod_revision\":\"3\"}]}" } } },
		{ "empty value", { { "/v3/kv/range", 200, "{" HDR ",\"kvs\":[{\"key\":\"" KEY_G "\",\"create_revision\":\"3\",\"mod_revision\":\"3\"}]}" } } },
		{ "a NUL in the value", { { "/v3/kv/range", 200, "{" HDR ",\"kvs\":[{\"key\":\"" KEY_G "\",\"value\":\"aG9zdAA=\",\"create_revision\":\"3\",\"mod_revision\":\"3\"}]}" } } },
		{ "revision -1", { { "/v3/kv/range", 200, "{" HDR ",\"kvs\":[{\"key\":\"" KEY_G "\",\"value\":\"" VAL_A "\",\"create_revision\":\"-1\"}]}" } } },
		{ "no mod_revision", { { "/v3/kv/range", 200, "{" HDR ",\"kvs\":[{\"key\":\"" KEY_G "\",\"value\":\"" VAL_A "\",\"create_revision\":\"3\"}]}" } } },
		{ "written before it was made", { { "/v3/kv/range", 200, "{" HDR ",\"kvs\":[{\"key\":\"" KEY_G "\",\"value\":\"" VAL_A "\",\"create_revision\":\"3\",\"mod_revision\":\"2\"}]}" } } },
	};
	for (size_t i = 0; i < sizeof(range_cases) / sizeof(range_cases[0]); i++) {
		fake_set(&f, range_cases[i].r);
		rc = repl_arbiter_owner(a, "g", who, sizeof(who), &t, err, sizeof(err));
		CHECK_MSG(rc == -EPROTO, "owner, %s: %d %s", range_cases[i].what, rc, err);
	}
	/* a key written again (reissued): its token is the last write's revision */
	static const struct fake_reply reissued[] = { { "/v3/kv/range", 200, "{" HDR ",\"kvs\":"
		"[{\"key\":\"" KEY_G "\",\"value\":\"" VAL_A "\",\"create_revision\":\"3\","
		"\"mod_revision\":\"5\",\"lease\":\"5\"}]}" }, { NULL, 0, NULL } };
	fake_set(&f, reissued);
	rc = repl_arbiter_owner(a, "g", who, sizeof(who), &t, err, sizeof(err));
	CHECK_MSG(rc == 0 && t == 5 && !strcmp(who, "hostA"), "owner of a reissued key: %d %s",
		  rc, err);
	/* wait_free: a watch stream that is not one */
	static const struct fake_reply watch_bad[] = {
		{ "/v3/kv/range", 200, "{" HDR ",\"kvs\":[{\"key\":\"" KEY_G "\",\"value\":\"" VAL_A "\",\"create_revision\":\"3\",\"mod_revision\":\"3\"}]}" },
		{ "/v3/watch", 200, "{\"result\":{" HDR ",\"created\":true}}\n{\"result\":{" HDR ",\"events\":[{\"type\":\"DELETE\"}]}}\n" },
		{ NULL, 0, NULL } };
	fake_set(&f, watch_bad);
	rc = repl_arbiter_wait_free(a, "g", 300, err, sizeof(err));
	CHECK_MSG(rc == -ETIMEDOUT && strstr(err, "malformed message in etcd's watch"),
		  "wait_free: %d %s", rc, err);
	static const struct fake_reply watch_other[] = {
		{ "/v3/kv/range", 200, "{" HDR ",\"kvs\":[{\"key\":\"" KEY_G "\",\"value\":\"" VAL_A "\",\"create_revision\":\"3\",\"mod_revision\":\"3\"}]}" },
		{ "/v3/watch", 200, "{\"result\":{" HDR ",\"created\":true}}\n{\"result\":{" HDR ",\"events\":[{\"type\":\"DELETE\",\"kv\":{\"key\":\"" VAL_A "\"}}]}}\n" },
		{ NULL, 0, NULL } };
	fake_set(&f, watch_other);
	rc = repl_arbiter_wait_free(a, "g", 300, err, sizeof(err));
	CHECK_MSG(rc == -ETIMEDOUT, "a deletion of another key freed ours: %d %s", rc, err);
	static const struct fake_reply watch_del[] = {
		{ "/v3/kv/range", 200, "{" HDR ",\"kvs\":[{\"key\":\"" KEY_G "\",\"value\":\"" VAL_A "\",\"create_revision\":\"3\",\"mod_revision\":\"3\"}]}" },
		{ "/v3/watch", 200, "{\"result\":{" HDR ",\"created\":true}}\n{\"result\":{" HDR ",\"events\":[{\"type\":\"DELETE\",\"kv\":{\"key\":\"" KEY_G "\"}}]}}\n" },
		{ NULL, 0, NULL } };
	fake_set(&f, watch_del);
	rc = repl_arbiter_wait_free(a, "g", 300, err, sizeof(err));
	CHECK_MSG(rc == 0, "wait_free on a deletion: %d %s", rc, err);
	/* a watch etcd refuses: its error (one message, no newline) is what is said */
	static const struct fake_reply watch_refused[] = {
		{ "/v3/kv/range", 200, "{" HDR ",\"kvs\":[{\"key\":\"" KEY_G "\",\"value\":\"" VAL_A "\",\"create_revision\":\"3\",\"mod_revision\":\"3\"}]}" },
		{ "/v3/watch", 400, "{\"error\":\"invalid character 'x'\",\"message\":\"invalid "
		  "character 'x'\",\"code\":2}" },
		{ NULL, 0, NULL } };
	fake_set(&f, watch_refused);
	rc = repl_arbiter_wait_free(a, "g", 300, err, sizeof(err));
	CHECK_MSG(rc == -ETIMEDOUT && strstr(err, "etcd says: invalid character"),
		  "wait_free, watch refused: %d %s", rc, err);
	repl_arbiter_free(a);
	fake_stop(&f);
	free(big);
}

/* reissue's arguments, replies that are wrong or refuse, and an endpoint gone */
TEST(reissue_replies)
{
	static const struct fake_reply won[] = { GRANT_OK, REVOKE_OK, TXN_WON, { NULL, 0, NULL } };
	static const struct fake_reply reissued[] = { { "/v3/kv/txn", 200,
		"{\"header\":{\"revision\":\"9\"},\"succeeded\":true}" }, { NULL, 0, NULL } };
	static const struct case_ bad[] = {
		{ "no header", { { "/v3/kv/txn", 200, "{\"succeeded\":true}" } } },
		{ "succeeded a number", { { "/v3/kv/txn", 200, "{" HDR ",\"succeeded\":1}" } } },
		{ "refused, no responses", { { "/v3/kv/txn", 200, "{" HDR "}" } } },
		{ "refused, two ranges", { { "/v3/kv/txn", 200, "{" HDR ",\"responses\":[{\"response_range\":{" HDR "}},{\"response_range\":{" HDR "}}]}" } } },
		{ "refused, yet on our lease", { { "/v3/kv/txn", 200, "{" HDR ",\"responses\":[{\"response_range\":{" HDR ",\"kvs\":[{\"key\":\"" KEY_G "\",\"value\":\"" VAL_A "\",\"create_revision\":\"7\",\"mod_revision\":\"7\",\"lease\":\"5\"}]}}]}" } } },
		{ "refused, another key", { { "/v3/kv/txn", 200, "{" HDR ",\"responses\":[{\"response_range\":{" HDR ",\"kvs\":[{\"key\":\"" VAL_A "\",\"value\":\"" VAL_A "\",\"create_revision\":\"7\",\"mod_revision\":\"7\",\"lease\":\"6\"}]}}]}" } } },
	};
	static const struct fake_reply other[] = { { "/v3/kv/txn", 200, "{" HDR ",\"responses\":"
		"[{\"response_range\":{" HDR ",\"kvs\":[{\"key\":\"" KEY_G "\",\"value\":\"aG9zdEI=\","
		"\"create_revision\":\"6\",\"mod_revision\":\"6\",\"lease\":\"4\"}]}}]}" },
		{ NULL, 0, NULL } };
	static const struct fake_reply none[] = { { "/v3/kv/txn", 200, "{" HDR ",\"responses\":"
		"[{\"response_range\":{" HDR "}}]}" }, { NULL, 0, NULL } };
	static const struct fake_reply no_lease[] = { { "/v3/kv/txn", 404,
		"{\"error\":\"etcdserver: requested lease not found\",\"message\":\"etcdserver: "
		"requested lease not found\",\"code\":5}" }, { NULL, 0, NULL } };
	struct fake f;
	struct repl_arbiter *a;
	char err[1024], eps[64];
	uint64_t t;
	int ttl, rc;

	fake_start(&f, FAKE_HTTP, won);
	snprintf(eps, sizeof(eps), "127.0.0.1:%d", f.port);
	a = arbiter(eps);
	CHECK_EQ(repl_arbiter_reissue(a, "a/b", "hostA", &t, err, sizeof(err)), -EINVAL);
	CHECK_EQ(repl_arbiter_reissue(a, "g", "", &t, err, sizeof(err)), -EINVAL);
	CHECK_EQ(repl_arbiter_reissue(a, "g", "host\tA", &t, err, sizeof(err)), -EINVAL);
	CHECK_EQ(repl_arbiter_reissue(a, "g", "hostA", NULL, err, sizeof(err)), -EINVAL);
	rc = repl_arbiter_reissue(a, "g", "hostA", &t, err, sizeof(err));
	CHECK_MSG(rc == -ENOENT && strstr(err, "no lease"), "reissue before acquire: %d %s", rc,
		  err);
	CHECK(repl_arbiter_acquire(a, "g", "hostA", 2, &t, &ttl, err, sizeof(err)) == 0 && t == 7);
	fake_set(&f, reissued);
	rc = repl_arbiter_reissue(a, "g", "hostA", &t, err, sizeof(err));
	CHECK_MSG(rc == 0 && t == 9, "reissue: %d %s (token %llu)", rc, err, (unsigned long long)t);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		fake_set(&f, bad[i].r);
		t = 0;
		rc = repl_arbiter_reissue(a, "g", "hostA", &t, err, sizeof(err));
		CHECK_MSG(rc == -EPROTO && t == 0, "reissue, %s: %d %s", bad[i].what, rc, err);
	}
	fake_set(&f, other);
	rc = repl_arbiter_reissue(a, "g", "hostA", &t, err, sizeof(err));
	CHECK_MSG(rc == -ENOENT && strstr(err, "'hostB' (token 6)"), "held by another: %d %s", rc,
		  err);
	fake_set(&f, none);
	rc = repl_arbiter_reissue(a, "g", "hostA", &t, err, sizeof(err));
	CHECK_MSG(rc == -ENOENT && strstr(err, "no owner"), "nobody holds it: %d %s", rc, err);
	fake_set(&f, no_lease);
	rc = repl_arbiter_reissue(a, "g", "hostA", &t, err, sizeof(err));
	CHECK_MSG(rc == -ENOENT && strstr(err, "lease not found"), "lease gone: %d %s", rc, err);
	/* unreachable: an error that says so, nothing claimed */
	fake_stop(&f);
	t = 0;
	rc = repl_arbiter_reissue(a, "g", "hostA", &t, err, sizeof(err));
	CHECK_MSG(rc == -ECONNREFUSED && strstr(err, eps) && t == 0, "reissue, endpoint gone: "
		  "%d %s", rc, err);
	repl_arbiter_free(a);
}

/* leader_elsewhere's replies: statuses and transfers that are wrong or refuse */
#define ST(id, lead, extra) { "/v3/maintenance/status", 200, "{\"header\":{\"member_id\":\"" \
	id "\",\"revision\":\"1\"},\"leader\":\"" lead "\",\"raftTerm\":\"2\"" extra "}" }
#define MOVE(status, body) { "/v3/maintenance/transfer-leadership", status, body }
#define BIG_ID "14988587262173862809"	/* etcd's member ids are uint64s */
#define BIG_HEX "d00228b3b6d15b99"	/* as messages show them */

TEST(leader_elsewhere_replies)
{
	static const struct case_ bad_status[] = {
		{ "no header", { { "/v3/maintenance/status", 200, "{\"leader\":\"1\"}" } } },
		{ "no member id", { { "/v3/maintenance/status", 200, "{" HDR ",\"leader\":\"1\"}" } } },
		{ "member id 0", { ST("0", "1", "") } },
		{ "member id too big", { ST("18446744073709551616", "1", "") } },
		{ "member id negative", { ST("-3", "1", "") } },
		{ "leader a word", { ST("1", "one", "") } },
		{ "raft index an object", { ST("1", "1", ",\"raftIndex\":{}") } },
		{ "learner a string", { ST("1", "1", ",\"isLearner\":\"no\"") } },
		{ "HTML", { { "/v3/maintenance/status", 200, "<html></html>" } } },
	};
	static const struct fake_reply leads[] = { ST(BIG_ID, BIG_ID, ",\"raftIndex\":\"9\""),
		MOVE(200, "{}"), { NULL, 0, NULL } };
	static const struct fake_reply behind[] = { ST("2", BIG_ID, ",\"raftIndex\":\"5\""),
		{ NULL, 0, NULL } };
	static const struct fake_reply ahead[] = { ST("3", BIG_ID, ",\"raftIndex\":\"8\""),
		{ NULL, 0, NULL } };
	static const struct fake_reply learner[] = { ST("3", BIG_ID, ",\"raftIndex\":\"8\","
		"\"isLearner\":true"), { NULL, 0, NULL } };
	static const struct fake_reply none[] = { { NULL, 0, NULL } };
	static const struct case_ bad_move[] = {
		{ "HTML", { ST(BIG_ID, BIG_ID, ""), MOVE(200, "<html></html>") } },
		{ "header a string", { ST(BIG_ID, BIG_ID, ""), MOVE(200, "{\"header\":\"x\"}") } },
		{ "not found", { ST(BIG_ID, BIG_ID, ""), MOVE(404, "404 page not found") } },
		{ "bad transferee", { ST(BIG_ID, BIG_ID, ""), MOVE(412, "{\"error\":\"etcdserver: "
		  "bad leader transferee\",\"message\":\"etcdserver: bad leader transferee\","
		  "\"code\":9}") } },
	};
	static const struct fake_reply not_leader[] = { ST(BIG_ID, BIG_ID, ""), MOVE(412,
		"{\"error\":\"etcdserver: not leader\",\"message\":\"etcdserver: not leader\","
		"\"code\":9}"), { NULL, 0, NULL } };
	static const struct fake_reply old_term[] = { { "/v3/maintenance/status", 200,
		"{\"header\":{\"member_id\":\"2\"},\"leader\":\"2\",\"raftTerm\":\"1\"}" },
		{ NULL, 0, NULL } };
	static const struct fake_reply new_term[] = { { "/v3/maintenance/status", 200,
		"{\"header\":{\"member_id\":\"3\"},\"leader\":\"3\",\"raftTerm\":\"4\"}" },
		{ NULL, 0, NULL } };
	struct fake f[3];
	struct repl_arbiter *a;
	char err[1024], moved[512], eps[128], ep[3][32];
	int rc;

	for (int i = 0; i < 3; i++) {
		fake_start(&f[i], FAKE_HTTP, none);
		snprintf(ep[i], sizeof(ep[i]), "127.0.0.1:%d", f[i].port);
	}
	a = arbiter(ep[0]);
	CHECK(repl_arbiter_etcd_set_local(a, "") == 0);
	for (size_t i = 0; i < sizeof(bad_status) / sizeof(bad_status[0]); i++) {
		fake_set(&f[0], bad_status[i].r);
		rc = repl_arbiter_leader_elsewhere(a, moved, sizeof(moved), err, sizeof(err));
		CHECK_MSG(rc == -EPROTO && strstr(err, ep[0]), "status, %s: %d '%s'",
			  bad_status[i].what, rc, err);
	}
	repl_arbiter_free(a);
	/* the leader here, two followers elsewhere: the one further ahead is the target */
	snprintf(eps, sizeof(eps), "%s,%s,%s", ep[0], ep[1], ep[2]);
	a = arbiter(eps);
	CHECK(repl_arbiter_etcd_set_local(a, ep[0]) == 0);
	fake_set(&f[0], leads);
	fake_set(&f[1], behind);
	fake_set(&f[2], ahead);
	rc = repl_arbiter_leader_elsewhere(a, moved, sizeof(moved), err, sizeof(err));
	CHECK_MSG(rc == 0 && strstr(moved, ep[2]) && strstr(moved, BIG_HEX),
		  "moved: %d '%s' '%s'", rc, moved, err);
	/* a learner cannot lead: the one behind is taken */
	fake_set(&f[2], learner);
	rc = repl_arbiter_leader_elsewhere(a, moved, sizeof(moved), err, sizeof(err));
	CHECK_MSG(rc == 0 && strstr(moved, ep[1]), "past a learner: %d '%s' '%s'", rc, moved, err);
	/* only the learner elsewhere */
	fake_set(&f[1], learner);
	rc = repl_arbiter_leader_elsewhere(a, moved, sizeof(moved), err, sizeof(err));
	CHECK_MSG(rc == -ENOENT, "only a learner elsewhere: %d '%s'", rc, err);
	fake_set(&f[1], behind);
	for (size_t i = 0; i < sizeof(bad_move) / sizeof(bad_move[0]); i++) {
		fake_set(&f[0], bad_move[i].r);
		strcpy(moved, "x");
		rc = repl_arbiter_leader_elsewhere(a, moved, sizeof(moved), err, sizeof(err));
		CHECK_MSG(rc < 0 && rc != -EAGAIN && strstr(err, "handing leadership") && !moved[0],
			  "transfer, %s: %d '%s' '%s'", bad_move[i].what, rc, err, moved);
	}
	fake_set(&f[0], not_leader);
	rc = repl_arbiter_leader_elsewhere(a, moved, sizeof(moved), err, sizeof(err));
	CHECK_MSG(rc == -EAGAIN && strstr(err, "not leader"), "transfer, not leader: %d '%s'", rc,
		  err);
	/* two claim to lead: the later term's is the leader (here: the one elsewhere) */
	CHECK(repl_arbiter_etcd_set_local(a, ep[1]) == 0);
	fake_set(&f[0], behind);
	fake_set(&f[1], old_term);
	fake_set(&f[2], new_term);
	strcpy(moved, "x");
	rc = repl_arbiter_leader_elsewhere(a, moved, sizeof(moved), err, sizeof(err));
	CHECK_MSG(rc == 0 && !moved[0], "a stale leader here: %d '%s' '%s'", rc, err, moved);
	repl_arbiter_free(a);
	for (int i = 0; i < 3; i++)
		fake_stop(&f[i]);
}
