/*
 * The service's configuration file (/etc/vmigrate/vmigrated.conf): lines
 * of "key = value", read with inih. '#' or ';' starts a comment line;
 * blank lines are skipped; values are taken as written, without quotes.
 * No [sections], no key twice, no line over 199 characters (inih's
 * buffer), no indented key (inih would read it as part of the value above).
 */
#ifndef VMIGRATED_CONF_H
#define VMIGRATED_CONF_H

#include <stdbool.h>
#include <stddef.h>

#define CONF_DEFAULT_PATH	"/etc/vmigrate/vmigrated.conf"

/* Takes one key: 0, or a negative errno with err set (a sentence without
 * the file and line, which conf_load puts in front). */
typedef int (*conf_setter)(void *opaque, const char *key, const char *value, char *err,
			   size_t errlen);

/*
 * Hand every key of the file at path to set, in order. A file that does
 * not exist is fine (returns 1) when optional, an error otherwise. Returns
 * 0 when the whole file was taken; else a negative errno with err as
 * "PATH:LINE: why" (or "PATH: why" for a file that cannot be read).
 */
int conf_load(const char *path, bool optional, conf_setter set, void *opaque, char *err,
	      size_t errlen);

#endif
