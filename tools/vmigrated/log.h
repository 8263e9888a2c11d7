/*
 * The log of vmigrated and of its guest processes: one line per event,
 * with its level. Where the line goes is chosen once, from stderr:
 *
 *   the journal  stderr is the stream systemd gave (JOURNAL_STREAM names
 *                it): native journal entries with PRIORITY, GUEST and JOB
 *                fields; where the journal's socket is missing, or it does
 *                not take an entry, the line goes to stderr with a "<N>"
 *                priority prefix, which journald reads as its priority
 *   a terminal   "2025-01-31 14:05:03.123 vmigrated[PID] info: text"
 *   or a file
 *   anything     "vmigrated[PID] info: text" (a pipe's reader, a
 *   else         supervisor, stamps its own time)
 *
 * Levels are syslog's (syslog.h): LOG_ERR, LOG_WARNING, LOG_NOTICE,
 * LOG_INFO, LOG_DEBUG. A forked guest process keeps its parent's choice.
 */
#ifndef VMIGRATED_LOG_H
#define VMIGRATED_LOG_H

#include <syslog.h>

/* "error", "warning", "notice", "info" or "debug" -> LOG_*, or -EINVAL. */
int log_level_parse(const char *name);

/* Pick the target from stderr and drop lines less severe than max_level. */
void log_setup(int max_level);

/* One event; guest and job (NULL or "" for none) become journal fields.
 * A line is written whole, with one write, whatever thread writes it. */
void log_write(int level, const char *guest, const char *job, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

#endif
