/*
 * rigmem: the memory workload of the Linux test guest (lib/linux_guest.sh
 * builds it static and puts it in the initramfs; the guest's init runs it).
 * It fills memory (a random and a text file in tmpfs beside the real files
 * the initramfs carries, and an anonymous working set), dirties the working
 * set at a set rate, checks every page before it rewrites it, prints a
 * progress line every second, and on a request read from a control tty
 * checks everything it filled and prints the verdict.
 *
 * Output (stdout, the serial console), one line each, always "RIG " first:
 *   RIG filled files=N file_bytes=B random_mib=R text_mib=T work_mib=W rate_mib=X
 *   RIG progress seq=S uptime_ms=U dirtied=D rate_mib=X errors=E
 *   RIG verify id=ID result=ok|BAD files_ok=N/N pages_ok=P/P errors=E
 *   RIG rate id=ID rate_mib=X
 *   RIG corrupt id=ID page=I file=PATH
 *   RIG error page=I want_gen=G ...            (the first few mismatches)
 * Requests on the control tty, one a line: "verify ID", "rate ID MIB",
 * "corrupt ID" (spoils one page and one file on purpose, so that a test
 * can show the check catches it).
 *
 * A page of the working set holds its own index and generation and 510
 * words derived from both, so a page that went missing, stale (an older
 * generation) or moved is told apart from a good one; the generation of
 * every page is also kept in a table. seq in the progress line only grows:
 * a guest that goes on after a migration keeps counting from where it was.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096u
#define WORDS (PAGE / 8)
#define MAGIC 0x5249474d454d2121ull /* "RIGMEM!!" */
#define MAX_ERROR_LINES 10
#define TICK_MS 2

struct file_sum {
	char *path;
	uint64_t size;
	uint64_t hash;
};

struct rig {
	uint64_t *work;          /* npages pages */
	uint32_t *gen;           /* generation of each page */
	size_t npages;
	size_t next;             /* the next page to dirty */
	uint64_t dirtied;        /* pages rewritten since the start */
	uint64_t errors;         /* mismatches found, ever */
	unsigned rate_mib;       /* MiB/s; 0: no dirtying */
	struct file_sum *files;
	size_t nfiles, cap_files;
	uint64_t file_bytes;
	int ctl;                 /* control tty, or -1 */
	char line[256];
	size_t line_len;
};

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
	char buf[512];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof(buf) - 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n > sizeof(buf) - 2)
		n = sizeof(buf) - 2;
	buf[n++] = '\n';
	/* one write a line, so lines from the kernel do not split ours */
	if (write(STDOUT_FILENO, buf, (size_t)n) < 0)
		return;
}

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static uint64_t splitmix(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static uint64_t hash_words(uint64_t h, const uint64_t *w, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		h ^= w[i];
		h *= 0x100000001b3ull;
		h ^= h >> 29;
	}
	return h;
}

/* what page i holds at generation g */
static void page_fill(uint64_t *p, size_t i, uint32_t g)
{
	uint64_t s = ((uint64_t)i << 32) ^ g ^ MAGIC;

	p[0] = MAGIC ^ i;
	p[1] = g;
	for (size_t k = 2; k < WORDS; k++)
		p[k] = splitmix(&s);
}

static int page_check(const uint64_t *p, size_t i, uint32_t g)
{
	uint64_t s = ((uint64_t)i << 32) ^ g ^ MAGIC;

	if (p[0] != (MAGIC ^ i) || p[1] != g)
		return -1;
	for (size_t k = 2; k < WORDS; k++)
		if (p[k] != splitmix(&s))
			return -1;
	return 0;
}

static void page_error(struct rig *r, size_t i)
{
	const uint64_t *p = r->work + i * WORDS;

	if (++r->errors <= MAX_ERROR_LINES)
		say("RIG error page=%zu want_gen=%" PRIu32 " has_index=%" PRIu64
		    " has_gen=%" PRIu64, i, r->gen[i], (uint64_t)(p[0] ^ MAGIC), p[1]);
}

/*
 * Rewrite the next page. The system call after it is deliberate: the
 * guest runs with PTI (linux_guest_cmdline), so every entry into the
 * kernel reloads CR3, and QEMU's TCG flushes its whole software TLB on each
 * CR3 write. QEMU before 9.0 (Debian 12 has 7.2) misses stores made through
 * TLB entries filled before a migration's dirty-bitmap sync (fixed upstream
 * by "physmem: Fix migration dirty bitmap coherency with TCG memory
 * access"); flushing after every page leaves such a store no time to
 * happen, so a check that fails points at the migration, not at QEMU.
 */
static void dirty_one(struct rig *r)
{
	size_t i = r->next;
	uint64_t *p = r->work + i * WORDS;

	if (page_check(p, i, r->gen[i]) < 0)
		page_error(r, i);
	r->gen[i]++;
	page_fill(p, i, r->gen[i]);
	r->next = (i + 1) % r->npages;
	r->dirtied++;
	(void)getppid();
}

static int hash_file(const char *path, uint64_t *size, uint64_t *hash)
{
	static uint64_t buf[65536 / 8];
	uint64_t h = 0xcbf29ce484222325ull, total = 0;
	ssize_t n;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return -errno;
	while ((n = read(fd, buf, sizeof(buf))) > 0) {
		size_t words = ((size_t)n + 7) / 8;

		if ((size_t)n % 8)	/* the tail, zero-padded to a word */
			memset((char *)buf + n, 0, words * 8 - (size_t)n);
		h = hash_words(h, buf, words);
		total += (uint64_t)n;
	}
	close(fd);
	if (n < 0)
		return -EIO;
	*size = total;
	*hash = h ^ total;
	return 0;
}

static struct rig *walk_rig; /* nftw has no user pointer */

static int walk_add(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	(void)ftw;
	struct rig *r = walk_rig;
	struct file_sum *f;

	if (type != FTW_F || !S_ISREG(st->st_mode))
		return 0;
	if (r->nfiles == r->cap_files) {
		size_t cap = r->cap_files ? r->cap_files * 2 : 256;
		struct file_sum *n = realloc(r->files, cap * sizeof(*n));

		if (!n)
			return -1;
		r->files = n;
		r->cap_files = cap;
	}
	f = &r->files[r->nfiles];
	f->path = strdup(path);
	if (!f->path || hash_file(path, &f->size, &f->hash) < 0) {
		say("RIG fatal: cannot read %s", path);
		return -1;
	}
	r->file_bytes += f->size;
	r->nfiles++;
	return 0;
}

static const char *const words[] = {
	"the", "of", "and", "to", "in", "is", "that", "for", "it", "as", "was", "with",
	"be", "by", "on", "not", "he", "this", "are", "or", "his", "from", "at", "which",
	"but", "have", "an", "had", "they", "you", "were", "their", "one", "all", "we",
	"can", "her", "has", "there", "been", "if", "more", "when", "will", "would",
	"who", "so", "no", "memory", "page", "guest", "host", "migration", "kernel",
	"network", "socket", "device", "buffer", "stream", "record", "checkpoint",
	"standby", "primary", "epoch", "round", "dirty", "bandwidth", "downtime",
	"channel", "transport", "compress", "region", "state", "machine", "virtual",
	"process", "thread", "signal", "timer", "clock", "interrupt", "register",
	"address", "physical", "mapping", "table", "entry", "index", "value", "counter",
	"library", "function", "return", "error", "message", "server", "client",
	"request", "response", "header", "payload", "length", "offset", "checksum",
};

static int write_all(int fd, const void *p, size_t n)
{
	const char *c = p;

	while (n) {
		ssize_t w = write(fd, c, n);

		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		c += w;
		n -= (size_t)w;
	}
	return 0;
}

/* a file of MIB MiB: random words or lines of text */
static int make_file(const char *path, unsigned mib, int text, uint64_t seed)
{
	static char buf[1 << 16];
	uint64_t left = (uint64_t)mib << 20, s = seed;
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	int ret = 0;

	if (fd < 0)
		return -errno;
	while (left && !ret) {
		size_t n = 0;

		if (text) {
			size_t col = 0;

			while (n < sizeof(buf) - 32) {
				uint64_t x = splitmix(&s);
				const char *w = words[x % (sizeof(words) / sizeof(words[0]))];
				size_t l = strlen(w);

				memcpy(buf + n, w, l);
				n += l;
				col += l + 1;
				buf[n++] = col > 64 + (x >> 60) ? (col = 0, '\n') : ' ';
			}
		} else {
			for (; n < sizeof(buf); n += 8) {
				uint64_t x = splitmix(&s);

				memcpy(buf + n, &x, 8);
			}
		}
		if (n > left)
			n = (size_t)left;
		ret = write_all(fd, buf, n);
		left -= n;
	}
	if (close(fd) < 0 && !ret)
		ret = -errno;
	return ret;
}

static void verify(struct rig *r, const char *id)
{
	size_t pages_ok = 0, files_ok = 0;

	for (size_t i = 0; i < r->npages; i++) {
		if (page_check(r->work + i * WORDS, i, r->gen[i]) == 0)
			pages_ok++;
		else
			page_error(r, i);
	}
	for (size_t i = 0; i < r->nfiles; i++) {
		uint64_t size, hash;

		if (hash_file(r->files[i].path, &size, &hash) == 0 &&
		    size == r->files[i].size && hash == r->files[i].hash)
			files_ok++;
	}
	say("RIG verify id=%s result=%s files_ok=%zu/%zu pages_ok=%zu/%zu errors=%" PRIu64,
	    id, pages_ok == r->npages && files_ok == r->nfiles && r->errors == 0 ? "ok" : "BAD",
	    files_ok, r->nfiles, pages_ok, r->npages, r->errors);
}

/* flip a bit of one page and of the last file, keeping the records as they were */
static void corrupt(struct rig *r, const char *id)
{
	size_t i = r->npages / 2;
	const char *path = r->nfiles ? r->files[r->nfiles - 1].path : "-";
	int fd;

	r->work[i * WORDS + 100] ^= 1;
	fd = r->nfiles ? open(path, O_RDWR | O_CLOEXEC) : -1;
	if (fd >= 0) {
		unsigned char c;

		if (pread(fd, &c, 1, 0) == 1) {
			c ^= 1;
			if (pwrite(fd, &c, 1, 0) != 1)
				path = "-";
		}
		close(fd);
	}
	say("RIG corrupt id=%s page=%zu file=%s", id, i, path);
}

static void handle_line(struct rig *r, char *line)
{
	char cmd[32], id[64];
	unsigned v;
	int n = sscanf(line, "%31s %63s %u", cmd, id, &v);

	if (n >= 2 && strcmp(cmd, "verify") == 0) {
		verify(r, id);
	} else if (n == 3 && strcmp(cmd, "rate") == 0) {
		r->rate_mib = v;
		say("RIG rate id=%s rate_mib=%u", id, v);
	} else if (n >= 2 && strcmp(cmd, "corrupt") == 0) {
		corrupt(r, id);
	} else if (n >= 1) {
		say("RIG unknown request '%s'", cmd);
	}
}

static void read_ctl(struct rig *r)
{
	char buf[128];
	ssize_t n = read(r->ctl, buf, sizeof(buf));

	for (ssize_t k = 0; k < n; k++) {
		char c = buf[k];

		if (c == '\n' || c == '\r') {
			r->line[r->line_len] = 0;
			if (r->line_len)
				handle_line(r, r->line);
			r->line_len = 0;
		} else if (r->line_len < sizeof(r->line) - 1) {
			r->line[r->line_len++] = c;
		}
	}
}

static int open_ctl(const char *path)
{
	struct termios t;
	int fd = open(path, O_RDWR | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);

	if (fd < 0)
		return -1;
	if (tcgetattr(fd, &t) == 0) {
		cfmakeraw(&t);
		tcsetattr(fd, TCSANOW, &t);
	}
	return fd;
}

static unsigned arg_num(const char *s, const char *what)
{
	char *end;
	unsigned long v = strtoul(s, &end, 10);

	if (*s == 0 || *end || v > 1u << 20) {
		say("RIG fatal: bad %s '%s'", what, s);
		exit(2);
	}
	return (unsigned)v;
}

int main(int argc, char **argv)
{
	struct rig r = { .ctl = -1 };
	const char *data = "/data", *ctl = "/dev/ttyS1";
	unsigned random_mib = 0, text_mib = 0, work_mib = 16;
	char path[512];
	int opt;

	while ((opt = getopt(argc, argv, "d:R:T:W:r:f:c:")) != -1) {
		switch (opt) {
		case 'd': data = optarg; break;
		case 'R': random_mib = arg_num(optarg, "random MiB"); break;
		case 'T': text_mib = arg_num(optarg, "text MiB"); break;
		case 'W': work_mib = arg_num(optarg, "work MiB"); break;
		case 'r': r.rate_mib = arg_num(optarg, "rate"); break;
		case 'c': ctl = optarg; break;
		case 'f':
			break;	/* handled below, after the files exist */
		default:
			say("RIG fatal: usage: rigmem [-d DIR] [-R MiB] [-T MiB] [-W MiB] [-r MiB/s] [-f DIR]... [-c TTY]");
			return 2;
		}
	}
	if (work_mib == 0)
		work_mib = 1;

	snprintf(path, sizeof(path), "%s/random.bin", data);
	if (random_mib && make_file(path, random_mib, 0, 0x1234) < 0) {
		say("RIG fatal: cannot write %s: %s", path, strerror(errno));
		return 1;
	}
	snprintf(path, sizeof(path), "%s/text.txt", data);
	if (text_mib && make_file(path, text_mib, 1, 0x5678) < 0) {
		say("RIG fatal: cannot write %s: %s", path, strerror(errno));
		return 1;
	}

	walk_rig = &r;
	if (nftw(data, walk_add, 16, FTW_PHYS) < 0)
		return 1;
	optind = 1;
	while ((opt = getopt(argc, argv, "d:R:T:W:r:f:c:")) != -1)
		if (opt == 'f' && nftw(optarg, walk_add, 16, FTW_PHYS) < 0)
			return 1;

	r.npages = ((size_t)work_mib << 20) / PAGE;
	r.work = mmap(NULL, r.npages * PAGE, PROT_READ | PROT_WRITE,
		      MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	r.gen = calloc(r.npages, sizeof(*r.gen));
	if (r.work == MAP_FAILED || !r.gen) {
		say("RIG fatal: cannot allocate %u MiB", work_mib);
		return 1;
	}
	for (size_t i = 0; i < r.npages; i++) {
		r.gen[i] = 1;
		page_fill(r.work + i * WORDS, i, 1);
	}
	r.ctl = open_ctl(ctl);
	if (r.ctl < 0)
		say("RIG note: no control tty %s (%s): requests cannot reach this guest",
		    ctl, strerror(errno));
	say("RIG filled files=%zu file_bytes=%" PRIu64 " random_mib=%u text_mib=%u work_mib=%u rate_mib=%u",
	    r.nfiles, r.file_bytes, random_mib, text_mib, work_mib, r.rate_mib);

	/*
	 * The loop: dirty what the rate allows for the time gone by, then
	 * wait for a request or the next tick. A guest that falls behind (a
	 * paused vCPU, a busy host) does not burst to catch up: it forgets
	 * the lost time, so the rate stays a ceiling.
	 */
	uint64_t start = now_ms(), next_print = start + 1000, seq = 0;
	uint64_t base_t = start, base_done = 0, done = 0;
	unsigned base_rate = r.rate_mib;

	for (;;) {
		uint64_t t = now_ms(), pages_per_s, target;
		struct pollfd pfd = { .fd = r.ctl, .events = POLLIN };
		int timeout;

		if (r.rate_mib != base_rate) {
			base_rate = r.rate_mib;
			base_t = t;
			base_done = done;
		}
		pages_per_s = (uint64_t)r.rate_mib * ((1u << 20) / PAGE);
		target = base_done + pages_per_s * (t - base_t) / 1000;
		if (target > done + pages_per_s / 2) {	/* behind by > 0.5 s */
			base_t = t;
			base_done = done;
			target = done + pages_per_s * TICK_MS / 1000;
		}
		while (done < target) {
			dirty_one(&r);
			done++;
		}
		if (t >= next_print) {
			say("RIG progress seq=%" PRIu64 " uptime_ms=%" PRIu64 " dirtied=%" PRIu64
			    " rate_mib=%u errors=%" PRIu64, ++seq, t - start, r.dirtied,
			    r.rate_mib, r.errors);
			next_print = t + 1000;
		}
		/* short sleeps even when idle: see dirty_one() (a wake-up leaves
		 * the kernel, which flushes QEMU's TLB) */
		timeout = (int)(next_print - t);
		if (timeout > TICK_MS)
			timeout = TICK_MS;
		if (poll(&pfd, r.ctl >= 0 ? 1 : 0, timeout) > 0 && (pfd.revents & POLLIN))
			read_ctl(&r);
	}
}
