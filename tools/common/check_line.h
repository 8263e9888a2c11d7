/*
 * One line of `vmigrate check`, as the CLI prints it and as the service
 * sends the lines it checked itself (check-peer):
 * {"check":NAME,"result":"PASS"|"WARN"|"FAIL","detail":TEXT}.
 */
#ifndef CHECK_LINE_H
#define CHECK_LINE_H

#include <json-c/json.h>
#include <stdarg.h>

struct json_object *check_line(const char *check, const char *result, const char *fmt,
			       va_list ap) __attribute__((format(printf, 3, 0)));

#endif
