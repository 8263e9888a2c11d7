/*
 * A guest process tells its service how a migration job ended: the
 * service keeps the counters (metrics.h), and they outlive this process.
 */
#ifndef JOB_REPORT_H
#define JOB_REPORT_H

#include "migrate.h"

#define JOB_REPORT_S	30	/* as long as a moved-away process lingers */

/* Report that job (direction "out" or "in") of guest ended as st says, on
 * the service's reports socket (control: its path). Blocks until the service has it, for at
 * most JOB_REPORT_S (it may be busy with a long request, or restarting):
 * call it from the job's own thread, never from the thread that answers
 * the service. A report that never got through is logged. */
void job_report(const char *control, const char *direction, const char *guest,
		const char *job, const struct mig_stats *st);

#endif
