/*
 * Fault points: read once from the environment.
 */
#include "fault.h"

#include <stdlib.h>
#include <string.h>

bool mig_fault(const char *point)
{
	const char *list = getenv("VMIGRATE_FAULT");
	size_t n = strlen(point);

	while (list && *list) {
		const char *comma = strchr(list, ',');
		size_t len = comma ? (size_t)(comma - list) : strlen(list);

		if (len == n && !strncmp(list, point, n))
			return true;
		list = comma ? comma + 1 : NULL;
	}
	return false;
}
