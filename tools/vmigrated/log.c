/*
 * Log lines of vmigrated and its guest processes (log.h): formatted once,
 * then sent to the journal or written to stderr with one write each, so
 * that lines of several threads and processes never interleave.
 */
#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#define SD_JOURNAL_SUPPRESS_LOCATION	/* log.c's own file and line say nothing */
#include <systemd/sd-journal.h>
#include <time.h>
#include <unistd.h>

#define LOG_LINE_MAX	4096

#define JOURNAL_SOCKET	"/run/systemd/journal/socket"

enum log_target { TARGET_PLAIN, TARGET_STAMPED, TARGET_JOURNAL, TARGET_PREFIXED };

/* Set once by log_setup before any thread or child exists. */
static struct {
	int max_level;
	enum log_target target;
} cfg = { LOG_INFO, TARGET_PLAIN };

static const char *const level_names[] = {
	[LOG_EMERG] = "emergency", [LOG_ALERT] = "alert", [LOG_CRIT] = "critical",
	[LOG_ERR] = "error", [LOG_WARNING] = "warning", [LOG_NOTICE] = "notice",
	[LOG_INFO] = "info", [LOG_DEBUG] = "debug",
};

int log_level_parse(const char *name)
{
	for (int l = LOG_ERR; l <= LOG_DEBUG; l++)
		if (!strcmp(name, level_names[l]))
			return l;
	return -EINVAL;
}

/* systemd's rule: stderr is the journal's stream when JOURNAL_STREAM
 * names its device and inode (a child may have redirected it since). */
static bool stderr_is_journal(void)
{
	const char *js = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	struct stat st;

	if (!js || sscanf(js, "%llu:%llu", &dev, &ino) != 2 || fstat(STDERR_FILENO, &st))
		return false;
	return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

void log_setup(int max_level)
{
	struct stat st;

	cfg.max_level = max_level;
	if (stderr_is_journal() && access(JOURNAL_SOCKET, F_OK) == 0)
		cfg.target = TARGET_JOURNAL;
	else if (stderr_is_journal())
		cfg.target = TARGET_PREFIXED;	/* sd_journal_send would drop them silently */
	else if (isatty(STDERR_FILENO) ||
		 (fstat(STDERR_FILENO, &st) == 0 && S_ISREG(st.st_mode)))
		cfg.target = TARGET_STAMPED;
	else
		cfg.target = TARGET_PLAIN;
}

static void write_all(const char *buf, size_t len)
{
	while (len) {
		ssize_t n = write(STDERR_FILENO, buf, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return;		/* nowhere else to say it */
		buf += n;
		len -= (size_t)n;
	}
}

static int to_journal(int level, const char *guest, const char *job, const char *msg)
{
	char prio[24], *fields[3] = { NULL, NULL, NULL };
	struct iovec iov[6];
	int n = 0, ret;

	snprintf(prio, sizeof(prio), "PRIORITY=%d", level);
	if (asprintf(&fields[0], "MESSAGE=%s", msg) < 0)
		return -ENOMEM;
	iov[n++] = (struct iovec){ fields[0], strlen(fields[0]) };
	iov[n++] = (struct iovec){ prio, strlen(prio) };
	iov[n++] = (struct iovec){ (char *)"SYSLOG_IDENTIFIER=vmigrated", 27 };
	if (guest && *guest && asprintf(&fields[1], "GUEST=%s", guest) >= 0)
		iov[n++] = (struct iovec){ fields[1], strlen(fields[1]) };
	if (job && *job && asprintf(&fields[2], "JOB=%s", job) >= 0)
		iov[n++] = (struct iovec){ fields[2], strlen(fields[2]) };
	ret = sd_journal_sendv(iov, n);
	for (int i = 0; i < 3; i++)
		free(fields[i]);
	return ret;
}

void log_write(int level, const char *guest, const char *job, const char *fmt, ...)
{
	char msg[LOG_LINE_MAX], line[LOG_LINE_MAX + 96];
	int n = 0, saved = errno;
	va_list ap;

	if (level > cfg.max_level)
		return;
	level = level < LOG_EMERG ? LOG_EMERG : level > LOG_DEBUG ? LOG_DEBUG : level;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (cfg.target == TARGET_JOURNAL && to_journal(level, guest, job, msg) >= 0)
		goto out;
	if (cfg.target == TARGET_JOURNAL || cfg.target == TARGET_PREFIXED) {
		n = snprintf(line, sizeof(line), "<%d>%s\n", level, msg);
	} else {
		if (cfg.target == TARGET_STAMPED) {
			struct timespec ts;
			struct tm tm;

			clock_gettime(CLOCK_REALTIME, &ts);
			localtime_r(&ts.tv_sec, &tm);
			n = (int)strftime(line, sizeof(line), "%Y-%m-%d %H:%M:%S", &tm);
			n += snprintf(line + n, sizeof(line) - (size_t)n, ".%03ld ",
				      ts.tv_nsec / 1000000);
		}
		n += snprintf(line + n, sizeof(line) - (size_t)n, "vmigrated[%d] %s: %s\n",
			      (int)getpid(), level_names[level], msg);
	}
	if (n > (int)sizeof(line) - 1) {
		n = (int)sizeof(line) - 1;
		line[n - 1] = '\n';	/* cut, but still one line */
	}
	write_all(line, (size_t)n);
out:
	errno = saved;
}
