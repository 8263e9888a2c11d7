/*
 * The payloads built from tools/guests/, linked into vmigrate so that
 * `--guest memtouch` needs no file at run time, and any other flat binary
 * loaded from a file.
 */
#include "vm.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "guest_abi.h"

#ifndef MEMTOUCH_BIN
#error "MEMTOUCH_BIN must name the built memtouch image (the Makefile sets it)"
#endif

__asm__(".section .rodata\n"
	".balign 16\n"
	".globl vm_payload_memtouch\n"
	"vm_payload_memtouch:\n"
	".incbin \"" MEMTOUCH_BIN "\"\n"
	".globl vm_payload_memtouch_end\n"
	"vm_payload_memtouch_end:\n"
	".previous\n");

extern const unsigned char vm_payload_memtouch[], vm_payload_memtouch_end[];

const void *vm_payload_find(const char *name, size_t *size)
{
	if (!strcmp(name, "memtouch")) {
		*size = (size_t)(vm_payload_memtouch_end - vm_payload_memtouch);
		return vm_payload_memtouch;
	}
	return NULL;
}

const void *vm_payload_load(const char *name_or_path, size_t *size, void **owned,
			    char *err, size_t errlen)
{
	const void *builtin = vm_payload_find(name_or_path, size);
	FILE *f;
	void *buf;

	*owned = NULL;
	if (builtin)
		return builtin;
	f = fopen(name_or_path, "rb");
	if (!f) {
		snprintf(err, errlen, "guest %s: %s", name_or_path, strerror(errno));
		return NULL;
	}
	buf = malloc(VMG_MAX_PAYLOAD + 1);
	*size = buf ? fread(buf, 1, VMG_MAX_PAYLOAD + 1, f) : 0;
	fclose(f);
	if (!buf || *size == 0 || *size > VMG_MAX_PAYLOAD) {
		snprintf(err, errlen, "guest %s must be a flat binary of 1 byte to %llu MiB",
			 name_or_path, (unsigned long long)(VMG_MAX_PAYLOAD >> 20));
		free(buf);
		return NULL;
	}
	*owned = buf;
	return buf;
}
