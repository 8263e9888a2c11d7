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

/*
 * Make name's record ready for a decision to come, before the downtime:
 * the file holds what it held, in one block of its own, written and
 * fsync'd, so that the decision is later one write in place and an
 * fdatasync, with no rename and no journal commit to wait for while the
 * guest is paused. Returns the descriptor for handover_record(), or a
 * negative errno (the decision then replaces the file).
 */
int handover_arm(const char *dir, const char *name);

/* Record durably that job's guest runs here or was discarded, before it
 * takes effect: in place through armed_fd when it is one, else by
 * replacing the file (temp file, fsync, rename, fsync of dir). */
int handover_record(const char *dir, const char *name, int armed_fd, const char *job,
		    bool run, const char *why);

/* The answer for (name, job): a PEER_HANDOVER_* word and a detail. */
void handover_answer(const char *dir, const char *name, const char *job, char *decision,
		     size_t len, char *detail, size_t detail_len);

/* During a post-copy recovery: whether a process here still holds name
 * for job (a silent one counts as there: it may only be busy). */
bool handover_job_alive(const char *dir, const char *name, const char *job, char *detail,
			size_t len);

#endif
