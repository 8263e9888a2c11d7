/*
 * The standby's epochs. Records of an epoch are held (copied out of the
 * reader) from its EPOCH marker to its seal; only a seal that matches what
 * came, from a primary whose token is not older than the last applied,
 * lets them reach the guest, all under the caller's apply lock:
 *
 *   EPOCH n  PAGES...  STATE...  STATE(EPOCH seal n)  -> apply, ACK n
 *
 * A record that fails its checksum, a broken link or a bad seal ends the
 * run with nothing of that epoch applied: the guest holds epoch n-1 whole.
 */
#include "internal.h"

#include <endian.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ckpt.h"
#include "fault.h"

struct held_rec {
	struct ckpt_record rec;
	uint8_t *owned;
};

struct standby {
	struct vm *vm;
	struct xport *x;
	int silence_ms;
	struct ckpt_reader *r;
	struct ckpt_page_target target;
	struct repl_standby_stats *st;
	uint64_t epoch;			/* open epoch, 0 between epochs */
	uint64_t pages;			/* page entries held for it */
	struct held_rec *held;
	size_t nheld, cap;
	unsigned nstates;
	bool switch_seen;		/* the open epoch says SWITCH */
};

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static long source_read(void *opaque, void *buf, size_t len)
{
	struct standby *sb = opaque;

	if (sb->silence_ms > 0 && xport_poll_in(sb->x, sb->silence_ms) == 0)
		return -ETIMEDOUT;	/* no epoch, no end: the primary is lost */
	return xport_recv(sb->x, buf, len);
}

static void drop_held(struct standby *sb)
{
	for (size_t i = 0; i < sb->nheld; i++)
		free(sb->held[i].owned);
	sb->nheld = 0;
	sb->nstates = 0;
	sb->pages = 0;
	sb->switch_seen = false;
}

static int hold(struct standby *sb, const struct ckpt_record *rec)
{
	if (sb->nheld == sb->cap) {
		size_t cap = sb->cap ? sb->cap * 2 : 64;
		struct held_rec *n = realloc(sb->held, cap * sizeof(*n));

		if (!n)
			return -ENOMEM;
		sb->held = n;
		sb->cap = cap;
	}
	if (ckpt_record_dup(rec, &sb->held[sb->nheld].rec, &sb->held[sb->nheld].owned))
		return -ENOMEM;
	sb->nheld++;
	return 0;
}

static uint64_t entries_pages(const struct ckpt_record *rec)
{
	uint64_t n = 0;

	for (uint32_t i = 0; i < rec->u.pages.count; i++) {
		const struct ckpt_page_entry *e = &rec->u.pages.entries[i];

		n += e->encoding == CKPT_ENC_ZERO ? le32toh(e->size) : 1;
	}
	return n;
}

static int ack(struct standby *sb, uint32_t kind, uint64_t epoch)
{
	struct repl_ack a = {
		.magic = htole32(REPL_ACK_MAGIC), .kind = htole32(kind),
		.epoch = htole64(epoch), .token = htole64(sb->st->token),
	};
	struct iovec iov = { &a, sizeof(a) };

	return xport_sendv(sb->x, &iov, 1);
}

static int refuse(struct standby *sb, uint64_t epoch, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int refuse(struct standby *sb, uint64_t epoch, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(sb->st->error, sizeof(sb->st->error), fmt, ap);
	va_end(ap);
	ack(sb, REPL_ACK_REFUSED, epoch);
	return -EBADMSG;
}

/* The seal came: check it against what was held, then apply it all. */
static int apply_epoch(struct standby *sb, const struct ckpt_record *rec,
		       pthread_mutex_t *apply_lock)
{
	struct ckpt_epoch_seal seal;
	char err[256] = "";
	double t0;
	int ret = 0;

	if (rec->u.state.len != sizeof(seal) || rec->u.state.version != 1)
		return refuse(sb, sb->epoch, "epoch %llu: a seal of %zu bytes",
			      (unsigned long long)sb->epoch, rec->u.state.len);
	memcpy(&seal, rec->u.state.data, sizeof(seal));
	if (le64toh(seal.epoch) != sb->epoch || le64toh(seal.pages) != sb->pages ||
	    le64toh(seal.states) != sb->nstates)
		return refuse(sb, sb->epoch, "epoch %llu: its seal does not match what came "
			      "(%llu pages, %u states)", (unsigned long long)sb->epoch,
			      (unsigned long long)sb->pages, sb->nstates);
	if (le64toh(seal.token) < sb->st->token)
		return refuse(sb, sb->epoch, "epoch %llu carries token %llu, older than %llu: "
			      "from a primary that lost the guest", (unsigned long long)sb->epoch,
			      (unsigned long long)le64toh(seal.token),
			      (unsigned long long)sb->st->token);
	t0 = now();
	pthread_mutex_lock(apply_lock);
	if (sb->nstates)
		ret = sb->vm->ops->load_again(sb->vm, err, sizeof(err));
	for (size_t i = 0; !ret && i < sb->nheld; i++) {
		const struct ckpt_record *h = &sb->held[i].rec;

		if (h->type == CKPT_REC_PAGES)
			ret = ckpt_reader_apply(sb->r, h, &sb->target);
		else
			ret = sb->vm->ops->load_state(sb->vm, h, err, sizeof(err));
		if (!ret && i == 0 && fault_point("standby-half-apply")) {
			snprintf(err, sizeof(err), "fault point standby-half-apply");
			ret = -EIO;
		}
	}
	if (!ret && sb->nstates)
		ret = sb->vm->ops->load_finish(sb->vm, err, sizeof(err));
	if (!ret) {
		sb->st->applied_epoch = sb->epoch;
		sb->st->token = le64toh(seal.token);
		sb->st->applied_pages += sb->pages;
		sb->st->last_apply_ms = (now() - t0) * 1e3;
		sb->st->handed_over = sb->switch_seen;
	}
	pthread_mutex_unlock(apply_lock);
	if (ret) {
		/* half applied: this image is no longer one epoch's */
		sb->st->damaged = true;
		snprintf(sb->st->error, sizeof(sb->st->error), "applying epoch %llu failed: %s; "
			 "the standby image is damaged", (unsigned long long)sb->epoch,
			 err[0] ? err : ckpt_reader_errmsg(sb->r));
		ack(sb, REPL_ACK_REFUSED, sb->epoch);
		return -EIO;
	}
	drop_held(sb);
	ret = ack(sb, REPL_ACK_APPLIED, sb->epoch);
	sb->epoch = 0;
	return ret;
}

static int on_record(struct standby *sb, const struct ckpt_record *rec,
		     pthread_mutex_t *apply_lock)
{
	switch (rec->type) {
	case CKPT_REC_MARKER:
		if (rec->u.marker.kind != CKPT_MARK_EPOCH)
			return refuse(sb, 0, "a marker of kind %u in a replication stream",
				      rec->u.marker.kind);
		if (sb->epoch || rec->u.marker.number != sb->st->applied_epoch + 1)
			return refuse(sb, rec->u.marker.number, "epoch %llu after epoch %llu%s",
				      (unsigned long long)rec->u.marker.number,
				      (unsigned long long)sb->st->applied_epoch,
				      sb->epoch ? " was left unsealed" : "");
		sb->epoch = rec->u.marker.number;
		return 0;
	case CKPT_REC_PAGES:
		if (!sb->epoch)
			return refuse(sb, 0, "pages outside an epoch");
		sb->pages += entries_pages(rec);
		return hold(sb, rec);
	case CKPT_REC_STATE:
		if (!sb->epoch)
			return refuse(sb, 0, "state outside an epoch");
		if (rec->u.state.kind == CKPT_STATE_EPOCH)
			return apply_epoch(sb, rec, apply_lock);
		sb->nstates++;
		if (rec->u.state.kind == CKPT_STATE_SWITCH) {
			sb->switch_seen = true;		/* for the primary, not the guest */
			return 0;
		}
		return hold(sb, rec);
	default:
		return 0;
	}
}

int repl_standby_run(struct vm *vm, struct xport *x, pthread_mutex_t *apply_lock,
		     int silence_ms, struct repl_standby_stats *st)
{
	struct standby sb = { .vm = vm, .x = x, .st = st, .silence_ms = silence_ms };
	struct ckpt_source src = { source_read, &sb };
	struct ckpt_reader_opts ro = { .allow_trailing = true };
	struct ckpt_image_info info;
	struct ckpt_record rec;
	int ret;

	x->idle_ok = true;	/* between epochs; keepalives notice a dead peer */
	st->stopped_by_primary = st->handed_over = false;	/* this run's outcome */
	st->error[0] = 0;
	sb.r = ckpt_reader_new(&src, &ro);
	if (!sb.r)
		return -ENOMEM;
	ret = ckpt_reader_next(sb.r, &rec);
	if (!ret) {
		info = *ckpt_reader_info(sb.r);
		if (vm_page_target(vm, &info, &sb.target)) {
			snprintf(st->error, sizeof(st->error), "the epochs' memory layout is not "
				 "the standby's");
			ret = -EBADMSG;
		}
		sb.target.use_fd = true;	/* no fault on the standby's pages */
	}
	while (!ret && (ret = ckpt_reader_next(sb.r, &rec)) == 0) {
		if (rec.type == CKPT_REC_END || rec.type == CKPT_REC_COMMIT) {
			st->stopped_by_primary = rec.type == CKPT_REC_COMMIT;
			if (st->stopped_by_primary)
				break;
			continue;
		}
		ret = on_record(&sb, &rec, apply_lock);
	}
	if (ret > 0)
		ret = 0;
	if (ret && !st->error[0])
		snprintf(st->error, sizeof(st->error), "replication stream: %s",
			 x->err ? strerror(-x->err) : ret == -ETIMEDOUT ?
			 "the primary fell silent" : ckpt_reader_errmsg(sb.r));
	drop_held(&sb);
	free(sb.held);
	ckpt_reader_free(sb.r);
	return st->stopped_by_primary ? 0 : ret ? ret : -EPIPE;
}
