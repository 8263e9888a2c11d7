/*
 * Test runner main(): forks one child per test so that a crash, an abort
 * from a sanitizer or a hang is reported as that test's failure and the
 * rest still run. Exit status 0 when nothing failed.
 */
#ifdef __SANITIZE_ADDRESS__
#include <sanitizer/lsan_interface.h>
#endif
#include "harness.h"

#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

/* Child -> parent: exit codes that mean more than pass/fail. */
#define EXIT_SKIP	77
#define EXIT_FAIL	1

static struct test_case *tests, **tests_tail = &tests;
static char tmpdir[4096];
static int report_fd = -1;	/* child writes its FAIL/SKIP reason here */

void test_register(struct test_case *tc)
{
	*tests_tail = tc;
	tests_tail = &tc->next;
}

const char *test_srcdir(void)
{
	const char *d = getenv("VMIGRATE_SRCDIR");

	return d ? d : ".";
}

const char *test_tmpdir(void)
{
	return tmpdir;
}

static _Noreturn void finish(int code, const char *file, int line,
			     const char *fmt, va_list ap)
{
	char msg[1024];
	int n = 0;

	if (file)
		n = snprintf(msg, sizeof(msg), "%s:%d: ", file, line);
	vsnprintf(msg + n, sizeof(msg) - n, fmt, ap);
	if (report_fd >= 0 && write(report_fd, msg, strlen(msg)) < 0)
		fprintf(stderr, "%s\n", msg);
	_exit(code);
}

void test_fail(const char *file, int line, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	finish(EXIT_FAIL, file, line, fmt, ap);
}

void test_skip(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	finish(EXIT_SKIP, NULL, 0, fmt, ap);
}

static void remove_tree(const char *dir)
{
	pid_t pid = fork();

	if (pid == 0) {
		execlp("rm", "rm", "-rf", "--", dir, (char *)NULL);
		_exit(127);
	}
	if (pid > 0)
		waitpid(pid, NULL, 0);
}

enum outcome { PASSED, FAILED, SKIPPED };

static enum outcome run_one(const char *suite, struct test_case *tc)
{
	char reason[1024] = "";
	int pipefd[2], status;
	pid_t pid;
	ssize_t n;
	const char *base = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";

	snprintf(tmpdir, sizeof(tmpdir), "%s/vmigrate-test-XXXXXX", base);
	if (!mkdtemp(tmpdir) || pipe2(pipefd, O_CLOEXEC)) {
		printf("FAIL %s.%s: cannot set up: %s\n", suite, tc->name, strerror(errno));
		return FAILED;
	}
	fflush(stdout);
	pid = fork();
	if (pid == 0) {
		close(pipefd[0]);
		report_fd = pipefd[1];
		setpgid(0, 0);
		alarm(tc->timeout_s);
		tc->fn();
#ifdef __SANITIZE_ADDRESS__
		/* _exit skips LeakSanitizer's own check: a leak fails the case */
		if (__lsan_do_recoverable_leak_check()) {
			dprintf(report_fd, "LeakSanitizer found leaks (above)");
			_exit(1);
		}
#endif
		_exit(0);
	}
	close(pipefd[1]);
	waitpid(pid, &status, 0);
	/* Whatever the test started in its process group goes with it. */
	kill(-pid, SIGKILL);
	/* The reason is in the pipe already; leftover children may hold it open. */
	fcntl(pipefd[0], F_SETFL, O_NONBLOCK);
	n = read(pipefd[0], reason, sizeof(reason) - 1);
	reason[n > 0 ? n : 0] = 0;
	close(pipefd[0]);
	remove_tree(tmpdir);

	if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
		printf("PASS %s.%s\n", suite, tc->name);
		return PASSED;
	}
	if (WIFEXITED(status) && WEXITSTATUS(status) == EXIT_SKIP) {
		printf("SKIP %s.%s: %s\n", suite, tc->name, reason);
		return SKIPPED;
	}
	if (WIFSIGNALED(status))
		printf("FAIL %s.%s: killed by signal %d%s %s\n", suite, tc->name,
		       WTERMSIG(status),
		       WTERMSIG(status) == SIGALRM ? " (timed out)" : "", reason);
	else
		printf("FAIL %s.%s: %s\n", suite, tc->name,
		       reason[0] ? reason : "exited with an error");
	return FAILED;
}

int main(int argc, char **argv)
{
	const char *suite = strrchr(argv[0], '/') ? strrchr(argv[0], '/') + 1 : argv[0];
	const char *filter = argc > 1 ? argv[1] : getenv("TEST_FILTER");
	unsigned counts[3] = { 0 };

	setvbuf(stdout, NULL, _IOLBF, 0);
	/* as in vmigrated: a peer that went away is an error, not a signal */
	signal(SIGPIPE, SIG_IGN);
	for (struct test_case *tc = tests; tc; tc = tc->next) {
		if (filter && *filter && fnmatch(filter, tc->name, 0))
			continue;
		counts[run_one(suite, tc)]++;
	}
	printf("# %s: %u passed, %u failed, %u skipped\n", suite,
	       counts[PASSED], counts[FAILED], counts[SKIPPED]);
	return counts[FAILED] ? 1 : 0;
}
