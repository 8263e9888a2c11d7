/*
 * What a freestanding payload needs from the machine: port I/O, the TSC,
 * and the console. Header-only so every payload stays one flat image.
 */
#ifndef GUEST_IO_H
#define GUEST_IO_H

#include "vm/guest_abi.h"

static inline void outb(uint16_t port, uint8_t v)
{
	__asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port));
}

static inline void outl(uint16_t port, uint32_t v)
{
	__asm__ volatile("outl %0, %1" : : "a"(v), "Nd"(port));
}

static inline uint64_t rdtsc(void)
{
	uint32_t lo, hi;

	__asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
	return (uint64_t)hi << 32 | lo;
}

static inline void cpu_relax(void)
{
	__asm__ volatile("pause" ::: "memory");
}

static inline void guest_event(uint32_t code, uint32_t vcpu, uint32_t arg)
{
	outl(VMG_PORT_EVENT, VMG_EVENT(code, vcpu, arg));
}

static inline void guest_puts(const char *s)
{
	while (*s)
		outb(VMG_PORT_CONSOLE, (uint8_t)*s++);
}

static inline void guest_putu(uint64_t v)
{
	char buf[21];
	int i = 20;

	buf[i] = 0;
	do {
		buf[--i] = (char)('0' + v % 10);
		v /= 10;
	} while (v);
	guest_puts(buf + i);
}

#endif
