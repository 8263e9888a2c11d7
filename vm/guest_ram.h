/*
 * Guest RAM: one shared, unnamed shmem file per guest, so that KVM can map
 * it, another process can be handed it, holes can be punched in it and
 * userfaultfd can watch it. Which pages back it is the process's choice,
 * made once at start-up.
 */
#ifndef VM_GUEST_RAM_H
#define VM_GUEST_RAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum guest_ram_pages {
	GUEST_RAM_HUGE,		/* transparent 2 MiB pages where the process may mount a tmpfs */
	GUEST_RAM_SMALL,	/* 4 KiB pages only (a memfd) */
};

/* The process's choice for guests created from now on (default: huge). */
void guest_ram_set_pages(enum guest_ram_pages pages);

/*
 * A new file of bytes zero bytes for guest RAM: hugetlb asks for reserved
 * 2 MiB huge pages (MFD_HUGETLB), otherwise the process's choice. Returns
 * the descriptor (close-on-exec) or a negative errno with err.
 */
int guest_ram_create(uint64_t bytes, bool hugetlb, char *err, size_t errlen);

/* Whether guest_ram_create() gives transparent huge pages now (without
 * hugetlb); how says it for humans: "transparent huge pages" or
 * "4 KiB pages (REASON)". */
bool guest_ram_huge(char *how, size_t len);

#endif
