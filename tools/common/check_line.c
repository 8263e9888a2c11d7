/*
 * The one shape of a `vmigrate check` result line (check_line.h).
 */
#include "check_line.h"

#include <stdio.h>

struct json_object *check_line(const char *check, const char *result, const char *fmt,
			       va_list ap)
{
	struct json_object *o = json_object_new_object();
	char detail[1024];

	vsnprintf(detail, sizeof(detail), fmt, ap);
	json_object_object_add(o, "check", json_object_new_string(check));
	json_object_object_add(o, "result", json_object_new_string(result));
	json_object_object_add(o, "detail", json_object_new_string(detail));
	return o;
}
