/*
 * A small test harness. Each TEST() registers itself; main() (harness.c)
 * runs every test in a forked child with a time limit, so a crash or a hang
 * fails that test alone, and prints one line per test:
 *
 *   PASS suite.name | FAIL suite.name: why | SKIP suite.name: reason
 *
 * tests/run-tests.sh adds the lines of every suite into the summary.
 */
#ifndef TEST_HARNESS_H
#define TEST_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

struct test_case {
	const char *name;
	void (*fn)(void);
	unsigned timeout_s;
	struct test_case *next;
};

void test_register(struct test_case *tc);
_Noreturn void test_fail(const char *file, int line, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
_Noreturn void test_skip(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Directory of the source tree (for golden files, corpora), set by make. */
const char *test_srcdir(void);
/* A fresh private temporary directory for this test, removed afterwards. */
const char *test_tmpdir(void);

#define TEST_T(name, secs)						\
	static void test_##name(void);					\
	static struct test_case tc_##name = { #name, test_##name, secs, NULL }; \
	__attribute__((constructor)) static void reg_##name(void)	\
	{								\
		test_register(&tc_##name);				\
	}								\
	static void test_##name(void)

#define TEST(name) TEST_T(name, 60)

#define CHECK(cond)							\
	do {								\
		if (!(cond))						\
			test_fail(__FILE__, __LINE__, "%s", #cond);	\
	} while (0)

#define CHECK_MSG(cond, ...)						\
	do {								\
		if (!(cond))						\
			test_fail(__FILE__, __LINE__, __VA_ARGS__);	\
	} while (0)

#define CHECK_EQ(a, b)							\
	do {								\
		long long _a = (long long)(a), _b = (long long)(b);	\
		if (_a != _b)						\
			test_fail(__FILE__, __LINE__, "%s == %lld, expected %s == %lld", \
				  #a, _a, #b, _b);			\
	} while (0)

#define SKIP(...) test_skip(__VA_ARGS__)

#endif
