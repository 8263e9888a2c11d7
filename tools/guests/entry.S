/*
 * Entry of every payload built here: the VMM starts each vCPU at the load
 * address in 64-bit mode at CPL 3 with RDI = boot params, RSI = vCPU index
 * and RSP at the top of that vCPU's stack. Nothing to set up but a call
 * into C; after it returns the vCPU idles (HLT would fault at CPL 3).
 */
	.section .text.entry, "ax"
	.globl _start
_start:
	cld
	call	guest_main
1:	pause
	jmp	1b
