/*
 * vmigrate check [HOST[:PORT]] [--tls-dir DIR] [--json]: is this host fit
 * for vmigrate (like `criu check` and `virt-host-validate`), and with HOST,
 * the path to that host's service. One line a check, PASS, WARN (works,
 * but an option will not, or something is close to breaking) or FAIL;
 * exit status 1 when any check failed.
 *
 * Each check tries the real thing on a small scale (a VM, a memfd mapped
 * shared, a userfaultfd registered on it, the TLS files parsed and
 * verified, a request to the service); the path to HOST is tried by the
 * local service itself, with its own TLS directory and peer key, as a
 * migration would go, and HOST's service tries the way back to it
 * (tools/vmigrated/peer_check.c).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <infiniband/verbs.h>
#include <linux/kvm.h>
#include <linux/memfd.h>
#include <linux/userfaultfd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "check_line.h"
#include "cli.h"
#include "guest_ram.h"
#include "help.h"
#include "ipc.h"
#include "vm.h"

#define DEFAULT_CONTROL	"/run/vmigrate/vmigrated.sock"
#define EXPIRY_WARN_DAYS	30

struct check_ctx {
	bool json;
	struct json_object *lines;	/* every result, in order */
	unsigned passed, warned, failed;
	char tls_dir[512];		/* --tls-dir, else the service's */
	struct json_object *service;	/* its answer to "check", or NULL */
	const char *host;		/* HOST[:PORT], or NULL */
};

static void say(struct check_ctx *c, const char *check, const char *result, const char *fmt,
		...) __attribute__((format(printf, 4, 5)));

static void say(struct check_ctx *c, const char *check, const char *result, const char *fmt,
		...)
{
	struct json_object *o;
	va_list ap;

	va_start(ap, fmt);
	o = check_line(check, result, fmt, ap);
	va_end(ap);
	if (!strcmp(result, "PASS"))
		c->passed++;
	else if (!strcmp(result, "WARN"))
		c->warned++;
	else
		c->failed++;
	if (!c->json)
		printf("%-4s  %-19s %s\n", result, check, ipc_str(o, "detail", ""));
	json_object_array_add(c->lines, o);
}

/* ---- the host ----------------------------------------------------------------- */

static void check_kvm(struct check_ctx *c)
{
	struct vm_kvm_feature f[32];
	char err[256], missing[1024] = "", names[1024] = "";
	int n = vm_kvm_probe(f, 32, err, sizeof(err));
	unsigned required = 0;

	if (n < 0) {
		say(c, "kvm", "FAIL", "%s", err);
		return;
	}
	say(c, "kvm", "PASS", "/dev/kvm: KVM API version %d, a VM can be made", KVM_API_VERSION);
	for (int i = 0; i < n; i++) {
		char *list = f[i].value ? names : missing;
		size_t len = strlen(list);

		if (!f[i].required) {
			if (f[i].value)
				say(c, "kvm.dirty_ring", "PASS", "KVM_CAP_%s: %s works (rings up to %d KiB "
				    "a vCPU)", f[i].name, f[i].used_for, f[i].value / 1024);
			else
				say(c, "kvm.dirty_ring", "WARN", "no KVM_CAP_%s: %s unavailable; the "
				    "dirty bitmap (the default) works", f[i].name, f[i].used_for);
			continue;
		}
		required++;
		if (f[i].value)
			snprintf(list + len, 1024 - len, "%s%s", len ? " " : "", f[i].name);
		else
			snprintf(list + len, 1024 - len, "%s%s (%s)", len ? "; " : "", f[i].name,
				 f[i].used_for);
	}
	if (missing[0])
		say(c, "kvm.capabilities", "FAIL", "missing: %s", missing);
	else
		say(c, "kvm.capabilities", "PASS", "all %u that vm/kvm needs: %s", required, names);
}

static void check_memfd(struct check_ctx *c)
{
	const size_t len = 1 << 20;
	int fd = memfd_create("vmigrate-check", MFD_CLOEXEC);
	void *p = MAP_FAILED;
	FILE *f;
	char line[256];
	long total = -1, free_pages = -1, size_kb = 0;

	if (fd >= 0 && ftruncate(fd, (off_t)len) == 0)
		p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED) {
		say(c, "memfd", "FAIL", "guest RAM is a memfd mapped shared: %s", strerror(errno));
	} else {
		memset(p, 0x5a, len);
		munmap(p, len);
		say(c, "memfd", "PASS", "memfd_create and a shared mapping of it (guest RAM)");
	}
	if (fd >= 0)
		close(fd);
	if (guest_ram_huge(line, sizeof(line)))
		say(c, "thp", "PASS", "guests' RAM on %s (a private tmpfs)", line);
	else
		say(c, "thp", "WARN", "guests' RAM on %s: a migration's destination fills "
		    "memory slower", line);

	f = fopen("/proc/meminfo", "r");
	while (f && fgets(line, sizeof(line), f)) {
		sscanf(line, "HugePages_Total: %ld", &total);
		sscanf(line, "HugePages_Free: %ld", &free_pages);
		sscanf(line, "Hugepagesize: %ld kB", &size_kb);
	}
	if (f)
		fclose(f);
	fd = memfd_create("vmigrate-check-huge", MFD_CLOEXEC | MFD_HUGETLB | MFD_HUGE_2MB);
	if (fd < 0)
		say(c, "hugetlb", "WARN", "memfd_create(MFD_HUGETLB): %s: --hugetlb unavailable",
		    strerror(errno));
	else if (free_pages <= 0)
		say(c, "hugetlb", "WARN", "%ld huge pages free (of %ld): --hugetlb guests cannot "
		    "start; reserve some with sysctl vm.nr_hugepages=N", free_pages < 0 ? 0 :
		    free_pages, total < 0 ? 0 : total);
	else
		say(c, "hugetlb", "PASS", "%ld huge pages of %ld kB free: --hugetlb guests up to "
		    "%ld MiB", free_pages, size_kb, free_pages * size_kb / 1024);
	if (fd >= 0)
		close(fd);
}

/* Lazy restore registers guest RAM (a shared memfd) for missing faults. */
static void check_userfaultfd(struct check_ctx *c)
{
	struct uffdio_api api = { .api = UFFD_API };
	const size_t len = 2 * 4096;
	int uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	int fd = memfd_create("vmigrate-check-uffd", MFD_CLOEXEC);
	void *p = MAP_FAILED;
	const char *what = NULL;

	if (uffd < 0)
		what = "userfaultfd";
	else if (ioctl(uffd, UFFDIO_API, &api) < 0)
		what = "UFFDIO_API";
	else if (fd < 0 || ftruncate(fd, (off_t)len) < 0 ||
		 (p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)) == MAP_FAILED)
		what = "a shared memfd mapping";
	else {
		struct uffdio_register reg = {
			.range = { (uintptr_t)p, len }, .mode = UFFDIO_REGISTER_MODE_MISSING,
		};

		if (ioctl(uffd, UFFDIO_REGISTER, &reg) < 0)
			what = "UFFDIO_REGISTER (missing faults on shared memory)";
	}
	if (what)
		say(c, "userfaultfd", "WARN", "%s: %s: restore --lazy unavailable%s", what,
		    strerror(errno), errno == EPERM ? " (root, or sysctl vm.unprivileged_userfaultfd=1)" :
		    "");
	else
		say(c, "userfaultfd", "PASS", "missing faults on shared memory (restore --lazy), "
		    "features 0x%llx", (unsigned long long)api.features);
	if (p != MAP_FAILED)
		munmap(p, len);
	if (fd >= 0)
		close(fd);
	if (uffd >= 0)
		close(uffd);
}

static void check_rdma(struct check_ctx *c)
{
	int n = 0;
	struct ibv_device **list = ibv_get_device_list(&n);
	char names[512] = "";

	for (int i = 0; list && i < n; i++) {
		size_t len = strlen(names);

		snprintf(names + len, sizeof(names) - len, "%s%s", i ? ", " : "",
			 ibv_get_device_name(list[i]));
	}
	if (list)
		ibv_free_device_list(list);
	if (n > 0)
		say(c, "rdma", "PASS", "%d RDMA device(s): %s (--transport rdma)", n, names);
	else
		say(c, "rdma", "WARN", "no RDMA device: --transport rdma unavailable; TCP and TLS "
		    "work");
}

/* ---- the service and its TLS directory ------------------------------------------- */

static void check_control(struct check_ctx *c)
{
	const char *env = getenv("VMIGRATE_CONTROL");
	const char *path = env && *env ? env : DEFAULT_CONTROL;
	struct json_object *req;
	struct stat st;
	char err[512];

	if (stat(path, &st) < 0) {
		say(c, "control", "FAIL", "vmigrated is not running (no socket at %s)", path);
		return;
	}
	if (!S_ISSOCK(st.st_mode)) {
		say(c, "control", "FAIL", "control socket %s is not a socket", path);
		return;
	}
	req = svc_req("check");
	c->service = ipc_call(path, req, -1, 10000, err, sizeof(err));
	json_object_put(req);
	if (!c->service) {
		say(c, "control", "FAIL", "%s: vmigrated does not answer: %s", path, err);
		return;
	}
	if (!ipc_bool(c->service, "ok", false)) {
		say(c, "control", "FAIL", "%s: %s", path, ipc_str(c->service, "error", "refused"));
		json_object_put(c->service);
		c->service = NULL;
		return;
	}
	say(c, "control", "PASS", "%s: vmigrated (pid %lld) answers; %lld guest(s), peers on %s",
	    path, ipc_int(c->service, "pid", 0), ipc_int(c->service, "guests", 0),
	    ipc_str(c->service, "listen", "?"));
}

static X509 *read_cert(const char *path, char *err, size_t errlen)
{
	FILE *f = fopen(path, "r");
	X509 *x;

	if (!f) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return NULL;
	}
	x = PEM_read_X509(f, NULL, NULL, NULL);
	fclose(f);
	if (!x)
		snprintf(err, errlen, "%s: not a PEM certificate", path);
	return x;
}

/* Validity of x now: FAIL outside its dates, WARN close to the end. */
static const char *dates(X509 *x, char *detail, size_t len)
{
	const ASN1_TIME *end = X509_get0_notAfter(x);
	int days = 0, secs = 0;
	struct tm tm;
	char until[32] = "?";

	if (ASN1_TIME_to_tm(end, &tm))
		strftime(until, sizeof(until), "%Y-%m-%d", &tm);
	if (X509_cmp_current_time(X509_get0_notBefore(x)) > 0) {
		snprintf(detail, len, "not valid yet");
		return "FAIL";
	}
	if (X509_cmp_current_time(end) < 0) {
		snprintf(detail, len, "expired on %s", until);
		return "FAIL";
	}
	ASN1_TIME_diff(&days, &secs, NULL, end);
	snprintf(detail, len, "valid until %s (%d days)", until, days);
	return days < EXPIRY_WARN_DAYS ? "WARN" : "PASS";
}

static void subject(X509 *x, char *out, size_t len)
{
	X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, out, (int)len);
}

static void check_tls(struct check_ctx *c)
{
	char ca_path[600], cert_path[600], key_path[600], err[700], when[128], name[128] = "";
	X509 *ca = NULL, *cert = NULL;
	EVP_PKEY *key = NULL;
	struct stat st;
	FILE *f;

	if (!c->tls_dir[0]) {
		if (c->service && ipc_bool(c->service, "insecure", false))
			say(c, "tls", "WARN", "the service runs --insecure: plain TCP between hosts, "
			    "no host authenticated");
		else
			say(c, "tls", "WARN", "no TLS directory to check: give --tls-dir DIR (the "
			    "service's, when it answers, is used)");
		return;
	}
	snprintf(ca_path, sizeof(ca_path), "%s/ca.crt", c->tls_dir);
	snprintf(cert_path, sizeof(cert_path), "%s/cert.pem", c->tls_dir);
	snprintf(key_path, sizeof(key_path), "%s/key.pem", c->tls_dir);

	if (!(ca = read_cert(ca_path, err, sizeof(err)))) {
		say(c, "tls.ca", "FAIL", "%s", err);
	} else {
		const char *r = dates(ca, when, sizeof(when));

		subject(ca, name, sizeof(name));
		if (X509_check_ca(ca) == 0)
			say(c, "tls.ca", "FAIL", "%s: '%s' is not a CA certificate", ca_path, name);
		else
			say(c, "tls.ca", r, "%s: '%s', %s", ca_path, name, when);
	}

	if (!(cert = read_cert(cert_path, err, sizeof(err)))) {
		say(c, "tls.cert", "FAIL", "%s", err);
	} else {
		const char *r = dates(cert, when, sizeof(when));
		X509_STORE *store = X509_STORE_new();
		X509_STORE_CTX *ctx = X509_STORE_CTX_new();
		int ok = 0;

		subject(cert, name, sizeof(name));
		if (ca && store && ctx && X509_STORE_add_cert(store, ca) &&
		    X509_STORE_CTX_init(ctx, store, cert, NULL)) {
			/* dates are judged above, with their own words */
			X509_STORE_CTX_set_flags(ctx, X509_V_FLAG_NO_CHECK_TIME);
			ok = X509_verify_cert(ctx) == 1;
		}
		if (!ca)
			say(c, "tls.cert", "FAIL", "%s: '%s': no CA to check it against", cert_path,
			    name);
		else if (!ok)
			say(c, "tls.cert", "FAIL", "%s: '%s' is not signed by the CA in ca.crt: %s",
			    cert_path, name, X509_verify_cert_error_string(
				    X509_STORE_CTX_get_error(ctx)));
		else
			say(c, "tls.cert", r, "%s: '%s', signed by the CA, %s", cert_path, name, when);
		X509_STORE_CTX_free(ctx);
		X509_STORE_free(store);
	}

	if (lstat(key_path, &st) < 0) {
		say(c, "tls.key", "FAIL", "%s: %s", key_path, strerror(errno));
	} else if (!S_ISREG(st.st_mode)) {
		say(c, "tls.key", "FAIL", "%s is not a plain file", key_path);
	} else if (st.st_mode & 0077) {
		say(c, "tls.key", "FAIL", "%s may be read by others (mode %04o): chmod 600 %s",
		    key_path, (unsigned)(st.st_mode & 07777), key_path);
	} else if (!(f = fopen(key_path, "r"))) {
		say(c, "tls.key", "WARN", "%s: %s (check it as the service's user)", key_path,
		    strerror(errno));
	} else {
		key = PEM_read_PrivateKey(f, NULL, NULL, NULL);
		fclose(f);
		if (!key)
			say(c, "tls.key", "FAIL", "%s: not a PEM private key (or it has a passphrase)",
			    key_path);
		else if (cert && X509_check_private_key(cert, key) != 1)
			say(c, "tls.key", "FAIL", "%s does not belong to cert.pem", key_path);
		else
			say(c, "tls.key", cert ? "PASS" : "WARN", "%s: mode %04o%s", key_path,
			    (unsigned)(st.st_mode & 07777), cert ? ", matches cert.pem" :
			    ", no certificate to match it with");
	}
	EVP_PKEY_free(key);
	X509_free(cert);
	X509_free(ca);
}

/* ---- the path to HOST, tried by the service ---------------------------------------- */

static void check_peer(struct check_ctx *c)
{
	struct json_object *req, *rep, *lines;
	const char *env = getenv("VMIGRATE_CONTROL");
	char err[512];

	if (!c->service) {
		say(c, "peer", "FAIL", "the path to %s is checked by the local vmigrated, with its "
		    "TLS directory and peer key: it does not answer", c->host);
		return;
	}
	req = svc_req("check-peer");
	json_object_object_add(req, "dest", json_object_new_string(c->host));
	rep = ipc_call(env && *env ? env : DEFAULT_CONTROL, req, -1, 60000, err, sizeof(err));
	json_object_put(req);
	if (!rep || !ipc_bool(rep, "ok", false) ||
	    !json_object_object_get_ex(rep, "checks", &lines)) {
		say(c, "peer", "FAIL", "%s", rep ? ipc_str(rep, "error", "no answer") : err);
		json_object_put(rep);
		return;
	}
	for (size_t i = 0; i < json_object_array_length(lines); i++) {
		struct json_object *l = json_object_array_get_idx(lines, i);
		const char *r = ipc_str(l, "result", "FAIL");

		say(c, ipc_str(l, "check", "peer"), strcmp(r, "PASS") && strcmp(r, "WARN") ? "FAIL" : r,
		    "%s", ipc_str(l, "detail", ""));
	}
	json_object_put(rep);
}

int cmd_check(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "tls-dir", required_argument, NULL, 'd' },
		{ "json", no_argument, NULL, 'j' },
		{ 0 }
	};
	struct check_ctx c = { .lines = json_object_new_array() };
	int opt;

	optind = 1;
	while ((opt = getopt_long(argc, argv, ":", longopts, NULL)) != -1) {
		if (opt == 'd') {
			snprintf(c.tls_dir, sizeof(c.tls_dir), "%s", optarg);
		} else if (opt == 'j') {
			c.json = true;
		} else {
			json_object_put(c.lines);
			return cli_getopt_error("check", opt, argv);
		}
	}
	if (optind < argc - 1) {
		json_object_put(c.lines);
		return cli_usage_error("check", "give at most one HOST[:PORT]");
	}
	c.host = optind < argc ? argv[optind] : NULL;

	check_kvm(&c);
	check_memfd(&c);
	check_userfaultfd(&c);
	check_control(&c);
	if (!c.tls_dir[0] && c.service && !ipc_bool(c.service, "insecure", false))
		snprintf(c.tls_dir, sizeof(c.tls_dir), "%s", ipc_str(c.service, "tls_dir", ""));
	check_tls(&c);
	check_rdma(&c);
	if (c.host)
		check_peer(&c);

	if (c.json) {
		struct json_object *o = json_object_new_object();

		json_object_object_add(o, "ok", json_object_new_boolean(c.failed == 0));
		if (c.failed) {
			char why[64];

			snprintf(why, sizeof(why), "%u check%s failed", c.failed,
				 c.failed == 1 ? "" : "s");
			json_object_object_add(o, "error", json_object_new_string(why));
			json_object_object_add(o, "code", json_object_new_string(IPC_E_CHECK_FAILED));
		}
		json_object_object_add(o, "checks", c.lines);
		json_object_object_add(o, "passed", json_object_new_int((int)c.passed));
		json_object_object_add(o, "warnings", json_object_new_int((int)c.warned));
		json_object_object_add(o, "failed", json_object_new_int((int)c.failed));
		svc_print_json(o);
		json_object_put(o);
	} else {
		printf("vmigrate check: %u PASS, %u WARN, %u FAIL\n", c.passed, c.warned, c.failed);
		json_object_put(c.lines);
	}
	json_object_put(c.service);
	return c.failed ? 1 : 0;
}
