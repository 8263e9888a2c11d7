/*
 * The payloads built from tools/guests/, linked into vmigrate so that
 * `--guest memtouch` needs no file at run time.
 */
#include "vm.h"

#include <string.h>

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
