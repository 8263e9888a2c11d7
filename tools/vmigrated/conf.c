/*
 * The configuration file through inih (conf.h). inih counts lines only for
 * its own syntax errors, so the file is fed to it through a reader that
 * counts them too: the handler then knows the line of each key, and every
 * error names its file and line.
 */
#include "conf.h"

#include <errno.h>
#include <ini.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define CONF_MAX_KEYS	64

struct conf_parse {
	FILE *f;
	const char *path;
	conf_setter set;
	void *opaque;
	int line;		/* of the line inih is working on */
	int err_line;		/* of the first error, 0 = none yet */
	int ret;
	char err[400];
	struct {
		char key[64];
		int line;
	} seen[CONF_MAX_KEYS];
	int nr_seen;
};

static void fail(struct conf_parse *c, int ret, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void fail(struct conf_parse *c, int ret, const char *fmt, ...)
{
	va_list ap;

	if (c->err_line)
		return;
	c->err_line = c->line;
	c->ret = ret;
	va_start(ap, fmt);
	vsnprintf(c->err, sizeof(c->err), fmt, ap);
	va_end(ap);
}

/* fgets for inih that counts lines and stops at one it would cut or read
 * as a continuation of the previous value (an indented line). */
static char *reader(char *str, int num, void *stream)
{
	struct conf_parse *c = stream;
	size_t len;
	const char *p;

	if (c->err_line || !fgets(str, num, c->f))
		return NULL;
	c->line++;
	len = strlen(str);
	if (len && str[len - 1] != '\n' && !feof(c->f)) {
		int next = getc(c->f);

		if (next != '\n' && next != EOF) {
			fail(c, -EINVAL, "a line of at most %d characters", num - 1);
			return NULL;
		}
	}
	for (p = str; *p == ' ' || *p == '\t'; p++)
		;
	if (p != str && *p && *p != '\n' && *p != '\r' && !strchr(";#", *p)) {
		fail(c, -EINVAL, "a key starts at the beginning of its line");
		return NULL;
	}
	return str;
}

static int handler(void *user, const char *section, const char *key, const char *value)
{
	struct conf_parse *c = user;
	char why[300];
	int ret;

	if (c->err_line)
		return 1;	/* the first error is the one reported */
	if (section[0]) {
		fail(c, -EINVAL, "[%s]: this file has no sections", section);
		return 0;
	}
	for (int i = 0; i < c->nr_seen; i++) {
		if (!strcmp(c->seen[i].key, key)) {
			fail(c, -EINVAL, "%s is set twice (first on line %d)", key,
			     c->seen[i].line);
			return 0;
		}
	}
	if (c->nr_seen < CONF_MAX_KEYS && strlen(key) < sizeof(c->seen[0].key)) {
		snprintf(c->seen[c->nr_seen].key, sizeof(c->seen[0].key), "%s", key);
		c->seen[c->nr_seen++].line = c->line;
	}
	why[0] = 0;
	ret = c->set(c->opaque, key, value, why, sizeof(why));
	if (ret) {
		fail(c, ret, "%s", why[0] ? why : "bad value");
		return 0;
	}
	return 1;
}

int conf_load(const char *path, bool optional, conf_setter set, void *opaque, char *err,
	      size_t errlen)
{
	struct conf_parse c = { .path = path, .set = set, .opaque = opaque };
	int line;

	c.f = fopen(path, "re");
	if (!c.f) {
		int e = errno;

		if (optional && e == ENOENT)
			return 1;
		snprintf(err, errlen, "%s: %s", path, strerror(e));
		return -e;
	}
	line = ini_parse_stream(reader, &c, handler, &c);
	if (!line && ferror(c.f)) {
		snprintf(err, errlen, "%s: read error", path);
		fclose(c.f);
		return -EIO;
	}
	fclose(c.f);
	if (c.err_line && (line <= 0 || line >= c.err_line)) {
		snprintf(err, errlen, "%s:%d: %s", path, c.err_line, c.err);
		return c.ret;
	}
	if (line > 0) {
		snprintf(err, errlen, "%s:%d: not a 'key = value' line", path, line);
		return -EINVAL;
	}
	return line < 0 ? -ENOMEM : 0;
}
