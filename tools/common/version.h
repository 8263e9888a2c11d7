/*
 * The version of this build, shared by vmigrate and vmigrated: the Makefile
 * takes it from `git describe` at build time (VERSION, with a fallback
 * outside a git checkout).
 */
#ifndef VMIGRATE_VERSION_H
#define VMIGRATE_VERSION_H

const char *vmigrate_version(void);

#endif
