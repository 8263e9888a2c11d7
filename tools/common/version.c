/*
 * The build's version string; only this file is compiled again when it
 * changes (the Makefile's version stamp).
 */
#include "version.h"

#ifndef VMIGRATE_VERSION
#error "VMIGRATE_VERSION is set by the Makefile"
#endif

const char *vmigrate_version(void)
{
	return VMIGRATE_VERSION;
}
