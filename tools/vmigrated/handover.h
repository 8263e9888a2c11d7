/*
 * The destination's side of rule 4 in migrate/protocol.c: what this host
 * decided for an incoming guest's job, kept durably in guests/NAME.handover
 * before the decision takes effect, and the answer a source's operator
 * gets when asking after an uncertain handover.
 */
#ifndef HANDOVER_H
#define HANDOVER_H

#include <stdbool.h>
#include <stddef.h>

/* Record (atomically, fsync'd) that job's guest runs here or was discarded. */
int handover_record(const char *dir, const char *name, const char *job, bool run,
		    const char *why);

/* The answer for (name, job): a PEER_HANDOVER_* word and a detail. */
void handover_answer(const char *dir, const char *name, const char *job, char *decision,
		     size_t len, char *detail, size_t detail_len);

/* During a post-copy recovery: whether a process here still holds name
 * for job (a silent one counts as there: it may only be busy). */
bool handover_job_alive(const char *dir, const char *name, const char *job, char *detail,
			size_t len);

#endif
