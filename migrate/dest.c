/*
 * Destination side: build the guest from the configuration at the head of
 * the stream, apply rounds of pages as they come, load the state, and run
 * the guest only when the source says GO (protocol.c). Any failure, at any
 * point, destroys what was built here: nothing runs on this side.
 */
#include "migrate.h"

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "channels.h"
#include "digests.h"
#include "fault.h"
#include "postcopy.h"
#include "protocol.h"

struct dest {
	struct xport *x;
	struct vm *vm;
};

static long source_read(void *opaque, void *buf, size_t len)
{
	return xport_recv(opaque, buf, len);
}

/* Zero runs become holes in the memfd: no memory is touched or kept. */
static int punch(void *opaque, unsigned slot, uint64_t first, uint64_t count)
{
	struct vm *vm = opaque;
	const struct vm_region *r = &vm->regions[slot];

	if (fallocate(r->memfd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
		      (off_t)(r->memfd_offset + first * VM_PAGE_SIZE),
		      (off_t)(count * VM_PAGE_SIZE)) < 0)
		return -errno;
	return 0;
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* The handover bound's clock: it counts while this process is stopped
 * (SIGSTOP, a debugger) and while the host sleeps. */
double dst_boot_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_BOOTTIME, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int decide(const struct mig_dest_opts *o, bool run, const char *why)
{
	return o->decide ? o->decide(o->opaque, run, why) : 0;
}

/*
 * After LOADED: GO (STANDBY when receiving a standby) within the bound, or
 * nothing. Returns 0 when it came in time; else err says why and the guest
 * must be discarded.
 */
int dst_await_go(struct xport *x, double t_loaded, uint16_t want, char *err, size_t errlen)
{
	const double bound = MIG_GO_BOUND_MS / 1e3;
	uint16_t type;
	int ret;

	do {
		double left = t_loaded + bound - dst_boot_now();

		if (left <= 0) {
			snprintf(err, errlen, "no GO within %d ms of LOADED: the guest is "
				 "discarded here and stays with the source", MIG_GO_BOUND_MS);
			return -ETIMEDOUT;
		}
		ret = xport_poll_in(x, left < 0.2 ? (int)(left * 1000) + 1 : 200);
	} while (ret == 0);
	if (ret > 0)
		ret = mig_msg_recv(x, &type, NULL, 0, NULL);
	if (ret || type != want) {
		snprintf(err, errlen, "no GO from the source after loading (%s); the guest "
			 "stays with the source", ret ? strerror(-ret) : "unexpected message");
		return ret ? ret : -EPROTO;
	}
	if (dst_boot_now() - t_loaded > bound) {
		/* this process was stopped or starved: the source may have given
		 * up on us and resumed its copy */
		snprintf(err, errlen, "GO came %.0f ms after LOADED, past the bound of %d ms: "
			 "the guest is discarded here and stays with the source",
			 (dst_boot_now() - t_loaded) * 1e3, MIG_GO_BOUND_MS);
		return -ETIMEDOUT;
	}
	return 0;
}

/*
 * Tell the source why, then read and drop what it still sends until it
 * stops: closing with unread data would reset the connection and the
 * source would see "connection reset" instead of the reason.
 */
void dst_refuse(struct xport *x, const char *why)
{
	int fd = xport_fd(x);
	double until = now() + 3;
	char sink[65536];

	if (mig_msg_send(x, MIG_MSG_ERROR, why, (uint32_t)strlen(why)) || fd < 0)
		return;
	shutdown(fd, SHUT_WR);
	while (now() < until) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		ssize_t n;

		if (poll(&p, 1, 100) <= 0)
			continue;
		n = recv(fd, sink, sizeof(sink), MSG_DONTWAIT);
		if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
			break;
	}
}

/* The figures so far to the watcher, bytes received on every channel. */
void dst_publish(const struct mig_dest_opts *o, struct xport *x, struct mig_stats *st,
		    double t0)
{
	st->transferred_bytes = x->bytes_received;
	for (unsigned i = 0; i < o->nr_data_channels; i++)
		st->transferred_bytes += o->data_channels[i]->bytes_received;
	st->total_time_ms = (uint64_t)((now() - t0) * 1000);
	if (!o->progress)
		return;
	pthread_mutex_lock(&o->progress->lock);
	o->progress->stats = *st;
	pthread_mutex_unlock(&o->progress->lock);
}

/* Pages that came torn (LIVE records, FORMAT.md) are owed: a bitmap a
 * region, in one block. */
static int owe_torn_pages(const struct vm *vm, struct ckpt_torn *torn, uint64_t **block)
{
	size_t words = 0;

	for (unsigned i = 0; i < vm->nr_regions; i++)
		words += vm_bitmap_bytes(&vm->regions[i]) / 8;
	*block = calloc(words, sizeof(uint64_t));
	if (!*block)
		return -ENOMEM;
	words = 0;
	for (unsigned i = 0; i < vm->nr_regions; i++) {
		torn->owed[i] = *block + words;
		words += vm_bitmap_bytes(&vm->regions[i]) / 8;
	}
	return 0;
}

/* A page that came torn and never whole after is a damaged stream: the
 * source sends every page written after it read it again. */
static bool torn_left(struct ckpt_torn *torn, struct mig_stats *st, char *err, size_t errlen)
{
	uint64_t n = __atomic_load_n(&torn->owed_pages, __ATOMIC_RELAXED);

	st->torn_pages = __atomic_load_n(&torn->torn_pages, __ATOMIC_RELAXED);
	if (!n)
		return false;
	snprintf(err, errlen, "bad migration stream: %llu pages arrived torn (checksum mismatch) "
		 "and were not sent again", (unsigned long long)n);
	return true;
}

struct vm *mig_dest_run(struct xport *x, const struct mig_dest_opts *o,
			struct mig_stats *st, char *err, size_t errlen)
{
	struct ckpt_source src = { source_read, x };
	struct ckpt_reader_opts ro = { .allow_trailing = true, .only_1_0 = o->only_1_0,
				       .only_1_1 = o->only_1_1 };
	struct ckpt_reader *r = ckpt_reader_new(&src, &ro);
	struct ckpt_record rec;
	struct ckpt_image_info info;
	struct ckpt_page_target target;
	struct vm_kvm_config cfg = { .dirty_mode = o->dirty_mode, .events = o->events };
	struct vm *vm = NULL;
	struct page_in *pi = NULL;
	struct postcopy_dst *pcd = NULL;
	bool pc_state = false;		/* post-copy: the guest's state came */
	double t0 = now(), t_loaded = 0;
	bool loaded_sent = false, based = false;
	struct ckpt_torn torn = { 0 };
	uint64_t *owed = NULL;		/* torn's bitmaps */
	int ret;

	/* Channels may idle between rounds; a dead source is still noticed by
	 * TCP keepalives (transport.h). */
	x->idle_ok = true;
	for (unsigned i = 0; i < o->nr_data_channels; i++)
		o->data_channels[i]->idle_ok = true;

	memset(st, 0, sizeof(*st));
	st->status = MIG_SETUP;
	if (!r) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	if (ckpt_reader_next(r, &rec) || ckpt_reader_next(r, &rec))
		goto bad_stream;
	info = *ckpt_reader_info(r);
	if (info.flags & CKPT_HDRF_INCREMENTAL) {
		snprintf(err, errlen, "an incremental image is no migration stream");
		goto refuse;
	}
	if (vm_kvm_config_from_record(&rec, &cfg, err, errlen))
		goto refuse;
	cfg.name = info.guest_name;
	if (o->admit && o->admit(o->opaque, &info, &cfg, err, errlen))
		goto refuse;
	if (o->standby && o->has_base) {
		cfg.adopt_memfd = true;
		cfg.memfd = o->base_memfd;
		vm = vm_kvm_create(&cfg, err, errlen);
		if (!vm)
			fprintf(stderr, "vmigrate: the earlier copy of guest %s is of no use (%s): "
				"a full sync\n", info.guest_name, err);
		based = vm != NULL;
		cfg.adopt_memfd = false;
	}
	if (!vm)
		vm = vm_kvm_create(&cfg, err, errlen);
	if (!vm)
		goto refuse;
	memcpy(vm->uuid, info.guest_uuid, sizeof(vm->uuid));
	if (vm_page_target(vm, &info, &target)) {
		snprintf(err, errlen, "memory layout differs from a %llu MiB guest's",
			 (unsigned long long)(cfg.mem_bytes >> 20));
		goto refuse;
	}
	target.zero_range = punch;
	target.opaque = vm;
	target.zero_range_min = 16;
	/* Raw pages through the memfd: fresh pages are neither faulted in nor
	 * cleared before they are overwritten. */
	target.use_fd = true;
	target.torn = &torn;
	if (owe_torn_pages(vm, &torn, &owed)) {
		snprintf(err, errlen, "out of memory");
		goto refuse;
	}
	if (vm->ops->load_state(vm, &rec, err, errlen))
		goto refuse;
	/* LIVE pages straight into guest memory, where post-copy cannot come
	 * (it changes the target at its switch) */
	if (!o->fault_channel)
		ckpt_reader_read_into(r, &target);
	if (o->nr_data_channels) {
		pi = page_in_start((struct xport **)o->data_channels, o->nr_data_channels, &info,
				   &target, !o->fault_channel, x);
		if (!pi) {
			snprintf(err, errlen, "cannot start the data channels");
			goto refuse;
		}
	}
	st->setup_time_ms = (uint64_t)((now() - t0) * 1000);
	st->ram_total_bytes = cfg.mem_bytes;
	if (mig_msg_send(x, MIG_MSG_READY, NULL, 0))
		goto lost;
	if (o->standby && digests_send(x, based ? vm : NULL))
		goto lost;
	st->status = MIG_ACTIVE;
	dst_publish(o, x, st, t0);

	while ((ret = ckpt_reader_next(r, &rec)) == 0) {
		if (rec.type == CKPT_REC_PAGES) {
			if (ckpt_reader_apply(r, &rec, &target))
				goto bad_stream;
		} else if (rec.type == CKPT_REC_STATE && rec.u.state.kind == CKPT_STATE_POSTCOPY) {
			if (!pcd && !(pcd = postcopy_dst_new(vm, &info))) {
				snprintf(err, errlen, "out of memory for post-copy");
				goto refuse;
			}
			if (postcopy_dst_owed(pcd, &rec, err, errlen))
				goto refuse;
		} else if (rec.type == CKPT_REC_MARKER && pcd && !pc_state) {
			uint64_t n = htole64(rec.u.marker.number);

			/* early: the state is still to come, the guest runs there */
			if (postcopy_dst_discard(pcd, err, errlen))
				goto refuse;
			if (mig_msg_send(x, MIG_MSG_ROUND, &n, sizeof(n)))
				goto lost;
		} else if (rec.type == CKPT_REC_MARKER && pcd && torn_left(&torn, st, err, errlen)) {
			goto refuse;	/* post-copy places pages as final */
		} else if (rec.type == CKPT_REC_MARKER && pcd) {
			struct postcopy_ctx c = { .vm = vm, .o = o, .x = x, .r = r, .pi = pi,
						  .target = &target, .info = &info, .st = st,
						  .t0 = t0 };

			ret = postcopy_dst_run(pcd, &c, err, errlen);
			pi = c.pi;
			r = c.r;
			st->transferred_bytes = 0;
			dst_publish(o, c.x, st, t0);
			if (ret == -EAGAIN) {
				loaded_sent = true;	/* maybe: the decision is "discard" */
				goto fail;
			}
			page_in_stop(pi);
			ckpt_reader_free(r);
			postcopy_dst_free(pcd);
			free(owed);
			owed = NULL;
			if (ret) {
				/* it ran here, and the pages only the source had are gone */
				st->status = MIG_LOST;
				snprintf(st->error, sizeof(st->error), "%s", err);
				dst_publish(o, x, st, t0);
				vm_destroy(vm);
				return NULL;
			}
			st->status = MIG_COMPLETED;
			dst_publish(o, x, st, t0);
			return vm;
		} else if (rec.type == CKPT_REC_STATE && rec.u.state.kind == CKPT_STATE_ABORT) {
			char why[CKPT_ABORT_MAX + 1];

			mig_abort_reason(&rec, why, sizeof(why));
			mig_abort_explain(why, err, errlen);
			goto fail;	/* the source is gone: nobody to tell */
		} else if (rec.type == CKPT_REC_STATE) {
			pc_state = true;	/* a marker after it is a post-copy switch */
			if (st->status != MIG_DEVICE) {
				st->status = MIG_DEVICE;
				dst_publish(o, x, st, t0);
			}
			if (vm->ops->load_state(vm, &rec, err, errlen))
				goto refuse;
		} else if (rec.type == CKPT_REC_MARKER) {
			uint64_t n = htole64(rec.u.marker.number);

			st->round = (unsigned)rec.u.marker.number;
			dst_publish(o, x, st, t0);
			/* the round is reached when every channel has reached it */
			if (pi && page_in_wait_marker(pi, rec.u.marker.number, err, errlen))
				goto data_failed;
			if (mig_msg_send(x, MIG_MSG_ROUND, &n, sizeof(n)))
				goto lost;
		} else if (rec.type == CKPT_REC_COMMIT) {
			break;
		}
	}
	if (ret < 0)
		goto bad_stream;
	if (pcd) {
		snprintf(err, errlen, "POSTCOPY records without the switch");
		goto refuse;
	}
	if (pi && page_in_wait_end(pi, err, errlen))
		goto data_failed;
	if (torn_left(&torn, st, err, errlen))
		goto refuse;
	if (vm->ops->load_finish(vm, err, errlen))
		goto refuse;
	if (fault_point("dst-exit-before-loaded"))
		_exit(99);
	t_loaded = dst_boot_now();
	if (mig_msg_send(x, MIG_MSG_LOADED, NULL, 0))
		goto lost;
	loaded_sent = true;
	if (fault_point("dst-stop-after-loaded"))
		raise(SIGSTOP);		/* tests: a destination stopped in the window */

	/* Run only on GO in time: without it the source may run the guest. */
	if (dst_await_go(x, t_loaded, o->standby ? MIG_MSG_STANDBY : MIG_MSG_GO, err, errlen))
		goto refuse;
	if (o->standby) {
		st->status = MIG_COMPLETED;
		dst_publish(o, x, st, t0);
		page_in_stop(pi);
		ckpt_reader_free(r);
		free(owed);
		return vm;	/* paused: a standby, never run on this word */
	}
	if (fault_point("dst-exit-before-running"))
		_exit(99);
	if (decide(o, true, "GO in time")) {
		snprintf(err, errlen, "cannot record the decision to run the guest; it is "
			 "discarded here");
		goto refuse;
	}
	if (vm_resume(vm)) {
		snprintf(err, errlen, "could not start the received guest");
		goto fail;
	}
	if (mig_msg_send(x, MIG_MSG_RUNNING, NULL, 0))
		fprintf(stderr, "vmigrate: guest %s runs here; the source did not hear it\n",
			info.guest_name);
	st->status = MIG_COMPLETED;
	dst_publish(o, x, st, t0);
	page_in_stop(pi);
	ckpt_reader_free(r);
	free(owed);
	return vm;

data_failed:
	if (page_in_aborted(pi)) {
		mig_abort_explain(page_in_aborted(pi), err, errlen);
		goto fail;
	}
	goto refuse;
bad_stream:
	if (page_in_aborted(pi)) {
		mig_abort_explain(page_in_aborted(pi), err, errlen);
		goto fail;
	}
	if (page_in_failure(pi)) {
		/* the control channel was stopped because a data channel failed */
		snprintf(err, errlen, "bad migration stream: %s", page_in_failure(pi));
		x->err = 0;
		goto refuse;
	}
	if (x->err)
		goto lost;
	snprintf(err, errlen, "bad migration stream: %s", ckpt_reader_errmsg(r));
refuse:
	dst_refuse(x, err);
	goto fail;
lost:
	snprintf(err, errlen, "connection to the source lost: %s",
		 strerror(x->err ? -x->err : EPIPE));
fail:
	postcopy_dst_free(pcd);
	if (loaded_sent)
		decide(o, false, err);
	st->status = MIG_FAILED;
	snprintf(st->error, sizeof(st->error), "%s", err);
	dst_publish(o, x, st, t0);
	page_in_stop(pi);
	vm_destroy(vm);
	ckpt_reader_free(r);
	free(owed);
	return NULL;
}
