/*
 * Who holds a guest's name on this host: the process that owns the guest
 * holds an open-file-description lock on guests/NAME.lock for as long as
 * it does. The kernel drops the lock when that process ends, however it
 * ends, and a stopped or hung holder still holds it; so a name is never
 * taken twice, whether or not its holder answers on its socket.
 */
#ifndef GUEST_LOCK_H
#define GUEST_LOCK_H

#include <stddef.h>
#include <sys/types.h>

/* Take the name for this process. Returns the lock's descriptor (close
 * it to give the name up), or -EBUSY with *holder set to the holder's pid
 * (0 if unknown), or another negative errno; err says why. */
int guest_lock_take(const char *dir, const char *name, pid_t *holder, char *err,
		    size_t errlen);

/* The pid holding the name, -1 when it is held but the pid is not written
 * yet, 0 when no process holds it. Takes nothing. */
pid_t guest_lock_holder(const char *dir, const char *name);

#endif
