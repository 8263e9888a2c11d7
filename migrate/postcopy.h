/*
 * The destination's post-copy phase (postcopy_dst.c), private to migrate/:
 * from the POSTCOPY records on, dest.c hands the guest's arrival over to
 * it. The source's side is in postcopy_src.c (source_internal.h).
 */
#ifndef MIGRATE_POSTCOPY_H
#define MIGRATE_POSTCOPY_H

#include <stdbool.h>
#include <stdint.h>

#include "channels.h"
#include "ckpt.h"
#include "migrate.h"

struct postcopy_dst;

/* What the destination had built when the switch came. */
struct postcopy_ctx {
	struct vm *vm;
	const struct mig_dest_opts *o;
	struct xport *x;		/* control: the source's stream in, messages out */
	struct ckpt_reader *r;		/* that stream */
	struct page_in *pi;		/* its data channels, or NULL */
	struct ckpt_page_target *target;	/* the control stream's */
	const struct ckpt_image_info *info;
	struct mig_stats *st;
	double t0;
};

struct postcopy_dst *postcopy_dst_new(struct vm *vm, const struct ckpt_image_info *info);
void postcopy_dst_free(struct postcopy_dst *d);
/* One POSTCOPY record: pages of its region owed (records add up). */
int postcopy_dst_owed(struct postcopy_dst *d, const struct ckpt_record *rec, char *err,
		      size_t errlen);
/* An early discard (a MARKER after POSTCOPY records and before the
 * state): drop what is held of the pages owed so far, while the guest
 * still runs at the source, so the switch has only the rest to drop. */
int postcopy_dst_discard(struct postcopy_dst *d, char *err, size_t errlen);

/*
 * The switch marker came: load, arm, LOADED, GO, run, and take the owed
 * pages until every one arrived. Returns 0 with the guest running here
 * (its memory complete), -EAGAIN when it was discarded before it ran
 * (err: why; the source keeps it), or another negative errno when the
 * source was lost after it ran here (err: why; the guest is lost and the
 * caller destroys it). c->pi may be replaced (a recovery's channels).
 */
int postcopy_dst_run(struct postcopy_dst *d, struct postcopy_ctx *c, char *err, size_t errlen);

/* dest.c's handover, shared with the post-copy switch. */
int dst_await_go(struct xport *x, double t_loaded, uint16_t want, char *err, size_t errlen);
double dst_boot_now(void);
void dst_publish(const struct mig_dest_opts *o, struct xport *x, struct mig_stats *st,
		 double t0);
void dst_refuse(struct xport *x, const char *why);

#endif
