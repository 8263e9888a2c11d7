/*
 * Replication between two micro-VMs in one process over a socket pair: the
 * initial sync makes a standby, epochs follow at their pace and are all
 * acknowledged, the standby's image verifies whole at any point, output is
 * released only for acknowledged epochs and never gets ahead of the
 * standby, a resync from an earlier copy sends only what differs, a
 * planned switch leaves the standby the whole guest, epochs of an older
 * fencing token are refused, a clean stop ends both sides, and a sync
 * never resumes the guest inside another pauser's pause.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"
#include "kvmguest.h"
#include "migrate.h"
#include "replicate.h"

struct standby_run {
	int base_memfd;			/* an earlier copy to build on, or -1 */
	struct xport *x;
	struct vm *vm;
	struct mig_stats mst;
	struct repl_standby_stats st;
	pthread_mutex_t lock;
	char err[512];
	int ret;
	pthread_t thread;
};

static void *standby_main(void *arg)
{
	struct standby_run *s = arg;
	struct mig_dest_opts o = { .io_timeout_ms = 5000, .standby = true,
				   .has_base = s->base_memfd >= 0, .base_memfd = s->base_memfd };

	s->vm = mig_dest_run(s->x, &o, &s->mst, s->err, sizeof(s->err));
	s->ret = s->vm ? repl_standby_run(s->vm, s->x, &s->lock, 0, &s->st) : -EIO;
	return NULL;
}

struct primary_run {
	struct vm *vm;
	struct xport *x;
	struct repl_params p;
	struct repl_progress prog;
	int ret;
	pthread_t thread;
};

static void *primary_main(void *arg)
{
	struct primary_run *p = arg;

	p->ret = repl_primary_run(p->vm, p->x, &p->p, &p->prog);
	return NULL;
}

/* What was released, checked as it is released: never an epoch the
 * standby has not applied. */
struct released {
	struct standby_run *sb;
	uint64_t last_epoch, lines, bad;
};

static void on_release(void *opaque, uint64_t token, uint64_t epoch, const char *buf,
		       size_t len)
{
	struct released *r = opaque;

	pthread_mutex_lock(&r->sb->lock);
	if (epoch > r->sb->st.applied_epoch || epoch < r->last_epoch)
		r->bad++;
	pthread_mutex_unlock(&r->sb->lock);
	r->last_epoch = epoch;
	r->lines++;
}

/* A running guest with a standby of it (built on base_memfd's copy when
 * >= 0); the primary's epochs started. The sync's figures into *sync. */
static void protect_on(struct vm *src, struct standby_run *sb, struct primary_run *pr,
		       struct released *rel, unsigned epoch_ms, uint64_t token, int base_memfd,
		       struct mig_stats *sync)
{
	struct mig_params mp;
	struct mig_progress mprog;
	int sv[2];

	CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
	memset(sb, 0, sizeof(*sb));
	sb->base_memfd = base_memfd;
	pthread_mutex_init(&sb->lock, NULL);
	sb->x = xport_tcp_from_fd(sv[1], 5000);
	CHECK(pthread_create(&sb->thread, NULL, standby_main, sb) == 0);
	memset(pr, 0, sizeof(*pr));
	pr->vm = src;
	pr->x = xport_tcp_from_fd(sv[0], 5000);
	mig_params_default(&mp);
	mp.standby = true;
	mig_progress_init(&mprog);
	memset(rel, 0, sizeof(*rel));
	rel->sb = sb;
	repl_progress_init(&pr->prog, on_release, rel);
	repl_output_hold(&pr->prog);
	CHECK_EQ(mig_source_run(src, pr->x, &mp, &mprog), 0);
	mig_progress_get(&mprog, sync);
	pr->p = (struct repl_params){ .epoch_ms = epoch_ms, .token = token };
	CHECK(pthread_create(&pr->thread, NULL, primary_main, pr) == 0);
}

static void protect(struct vm *src, struct standby_run *sb, struct primary_run *pr,
		    struct released *rel, unsigned epoch_ms, uint64_t token)
{
	struct mig_stats sync;

	protect_on(src, sb, pr, rel, epoch_ms, token, -1, &sync);
}

static void unprotect(struct standby_run *sb, struct primary_run *pr)
{
	atomic_store(&pr->prog.stop, true);
	pthread_join(pr->thread, NULL);
	pthread_join(sb->thread, NULL);
	xport_close(pr->x);
	xport_close(sb->x);
}

static void verify_standby(struct standby_run *sb)
{
	struct vm_verify_report rep;
	int ret;

	pthread_mutex_lock(&sb->lock);
	ret = vm_memtouch_verify(sb->vm, NULL, &rep);
	pthread_mutex_unlock(&sb->lock);
	CHECK_MSG(ret == 0, "standby at epoch %llu: %s",
		  (unsigned long long)sb->st.applied_epoch, rep.msg);
}

TEST_T(standby_follows_a_dirtying_guest_epoch_by_epoch, 120)
{
	struct vm *src = tg_boot(&(struct tg_opts){ .mem = 256 << 20, .vcpus = 2,
						    .working_set = 64 << 20,
						    .dirty_rate = 50 << 20 });
	struct standby_run sb;
	struct primary_run pr;
	struct released rel;
	struct repl_stats st;
	char line[64];

	CHECK_EQ(vm_start(src), 0);
	tg_sleep_ms(300);
	protect(src, &sb, &pr, &rel, 0, 7);
	/* at least 20 epochs (however long this machine takes for them), the
	 * standby checked whole between them */
	for (int i = 0; i < 3000; i++) {
		if (i < 10) {
			snprintf(line, sizeof(line), "line %d\n", i);
			repl_output(&pr.prog, line, strlen(line));
		}
		tg_sleep_ms(10);
		if (i % 10 == 0)
			verify_standby(&sb);	/* whole at any moment */
		repl_progress_get(&pr.prog, &st);
		if (i >= 10 && st.acked_epoch >= 20)
			break;
	}
	printf("#   %llu epochs, %.0f/s, pause p50 %.2f ms p99 %.2f ms, %llu bytes/epoch, "
	       "lag %.1f ms\n", (unsigned long long)st.epochs, st.epoch_rate, st.pause_p50_ms,
	       st.pause_p99_ms, (unsigned long long)st.bytes_per_epoch, st.lag_ms);
	CHECK_MSG(st.acked_epoch >= 20, "only %llu epochs acknowledged in 30 s",
		  (unsigned long long)st.acked_epoch);
	CHECK_EQ(st.token, 7);
	unprotect(&sb, &pr);
	CHECK_EQ(pr.ret, 0);
	CHECK_MSG(sb.ret == 0 && sb.st.stopped_by_primary, "standby: %d %s", sb.ret, sb.st.error);
	CHECK(!sb.st.handed_over);
	repl_progress_get(&pr.prog, &st);
	CHECK_EQ(st.acked_epoch, st.epochs);	/* a clean stop waits for every one */
	CHECK_EQ(sb.st.applied_epoch, st.epochs);
	CHECK_EQ(rel.lines, 10);
	CHECK_EQ(rel.bad, 0);
	CHECK_EQ(st.held_output_bytes, 0);
	/* the guest paused at the last epoch: the standby holds exactly it */
	vm_pause(src);
	CHECK(tg_total(sb.vm) <= tg_total(src));
	verify_standby(&sb);
	repl_progress_destroy(&pr.prog);
	vm_destroy(sb.vm);
	vm_destroy(src);
}

TEST_T(output_waits_for_the_standby, 60)
{
	struct vm *src = tg_boot(&(struct tg_opts){ .mem = 128 << 20, .vcpus = 1,
						    .working_set = 16 << 20,
						    .dirty_rate = 10 << 20 });
	struct standby_run sb;
	struct primary_run pr;
	struct released rel;
	struct repl_stats st;

	CHECK_EQ(vm_start(src), 0);
	/* a fixed, long epoch: output emitted now waits for the next one
	 * (on_release checks it never leaves before its epoch is applied) */
	protect(src, &sb, &pr, &rel, 2000, 1);
	repl_output(&pr.prog, "held\n", 5);
	repl_progress_get(&pr.prog, &st);
	CHECK(rel.lines == 0 || st.acked_epoch >= 1);
	for (int i = 0; i < 1500 && !rel.lines; i++)
		tg_sleep_ms(10);
	repl_progress_get(&pr.prog, &st);
	CHECK_EQ(rel.lines, 1);
	CHECK_EQ(rel.bad, 0);
	CHECK_EQ(st.held_output_bytes, 0);
	unprotect(&sb, &pr);
	repl_progress_destroy(&pr.prog);
	vm_destroy(sb.vm);
	vm_destroy(src);
}

/* Pages of two guests' RAM that differ. */
static uint64_t pages_differing(const struct vm *a, const struct vm *b)
{
	uint64_t n = 0;

	for (unsigned r = 0; r < a->nr_regions; r++)
		for (uint64_t off = 0; off < a->regions[r].size; off += VM_PAGE_SIZE)
			n += memcmp(a->regions[r].host + off, b->regions[r].host + off,
				    VM_PAGE_SIZE) != 0;
	return n;
}

/*
 * The old primary's copy as the base of a new standby: only the pages that
 * differ cross (hash comparison), and the result is the primary's RAM byte
 * for byte, also where the base was damaged or held data the primary's
 * RAM does not (never-written pages there).
 */
TEST_T(standby_resynchronised_from_an_earlier_copy_gets_only_what_differs, 90)
{
	/* a guest that writes its working set, then stays still */
	struct vm *src = tg_boot(&(struct tg_opts){ .mem = 128 << 20, .vcpus = 1,
						    .working_set = 16 << 20,
						    .stop_after = 40000 });
	struct standby_run sb1, sb2;
	struct primary_run pr1, pr2;
	struct released rel1, rel2;
	struct mig_stats sync1, sync2;
	const struct vm_region *r;
	uint64_t damaged = 0, before, data_pages;

	CHECK_EQ(vm_start(src), 0);
	for (int i = 0; i < 500 && tg_total(src) < 40000; i++)
		tg_sleep_ms(10);
	CHECK_EQ(tg_total(src), 40000);
	protect_on(src, &sb1, &pr1, &rel1, 0, 1, -1, &sync1);
	tg_sleep_ms(200);
	unprotect(&sb1, &pr1);
	CHECK_EQ(pr1.ret, 0);
	CHECK_EQ(pages_differing(src, sb1.vm), 0);

	/* the earlier copy went wrong in places: 100 pages of data changed,
	 * and a page the guest never wrote holds something */
	r = &sb1.vm->regions[0];
	for (uint64_t p = (16u << 20) / VM_PAGE_SIZE; damaged < 100; p += 37, damaged++)
		memset(r->host + p * VM_PAGE_SIZE + 100, 0x5a, 64);
	memset(r->host + r->size - VM_PAGE_SIZE, 0xab, VM_PAGE_SIZE);
	before = pages_differing(src, sb1.vm);
	CHECK_EQ(before, 101);

	protect_on(src, &sb2, &pr2, &rel2, 0, 2, r->memfd, &sync2);
	printf("#   full sync: %llu pages sent; resync: %llu sent, %llu matched, %llu zero, "
	       "%llu bytes\n", (unsigned long long)sync1.normal_pages,
	       (unsigned long long)sync2.normal_pages, (unsigned long long)sync2.matched_pages,
	       (unsigned long long)sync2.zero_pages, (unsigned long long)sync2.transferred_bytes);
	data_pages = sync1.normal_pages;
	CHECK_MSG(sync2.normal_pages >= 100 && sync2.normal_pages <= 100 + 16,
		  "the resync sent %llu pages for 100 that differ",
		  (unsigned long long)sync2.normal_pages);
	CHECK_MSG(sync2.matched_pages + 16 >= data_pages - 100,
		  "only %llu of %llu pages matched", (unsigned long long)sync2.matched_pages,
		  (unsigned long long)data_pages);
	CHECK(sync2.transferred_bytes < sync1.transferred_bytes / 10);
	tg_sleep_ms(200);
	unprotect(&sb2, &pr2);
	CHECK_EQ(pr2.ret, 0);
	CHECK_EQ(pages_differing(src, sb2.vm), 0);
	verify_standby(&sb2);
	repl_progress_destroy(&pr1.prog);
	repl_progress_destroy(&pr2.prog);
	vm_destroy(sb2.vm);
	vm_destroy(sb1.vm);
	vm_destroy(src);
}

/* A planned failover: the last epoch says SWITCH, the guest stays paused
 * on the primary for good, and the standby holds exactly its RAM. */
TEST_T(switch_over_leaves_the_standby_the_whole_guest, 60)
{
	struct vm *src = tg_boot(&(struct tg_opts){ .mem = 128 << 20, .vcpus = 2,
						    .working_set = 16 << 20,
						    .dirty_rate = 20 << 20 });
	struct standby_run sb;
	struct primary_run pr;
	struct released rel;
	struct repl_stats st;
	uint64_t counter;

	CHECK_EQ(vm_start(src), 0);
	protect(src, &sb, &pr, &rel, 0, 3);
	tg_sleep_ms(300);
	repl_output(&pr.prog, "before the switch\n", 18);
	atomic_store(&pr.prog.switch_over, true);
	pthread_join(pr.thread, NULL);
	pthread_join(sb.thread, NULL);
	CHECK_EQ(pr.ret, 0);
	repl_progress_get(&pr.prog, &st);
	CHECK_EQ(st.state, REPL_SWITCHED);
	CHECK(atomic_load(&pr.prog.fenced));
	CHECK_MSG(sb.ret == 0 && sb.st.handed_over, "standby: %d %s, handed over %d", sb.ret,
		  sb.st.error, sb.st.handed_over);
	CHECK_EQ(sb.st.applied_epoch, st.epochs);
	CHECK_EQ(rel.lines, 1);			/* released: its epoch was acknowledged */
	CHECK_EQ(st.held_output_bytes, 0);
	/* the primary stays paused: nothing moves there any more */
	counter = tg_total(src);
	tg_sleep_ms(200);
	CHECK_EQ(tg_total(src), counter);
	CHECK_EQ(pages_differing(src, sb.vm), 0);
	verify_standby(&sb);
	xport_close(pr.x);
	xport_close(sb.x);
	repl_progress_destroy(&pr.prog);
	vm_destroy(sb.vm);
	vm_destroy(src);
}

/* Epochs only, into a standby that exists already. */
static void *follow_main(void *arg)
{
	struct standby_run *s = arg;

	s->ret = repl_standby_run(s->vm, s->x, &s->lock, 0, &s->st);
	return NULL;
}

/* A standby that applied epochs of token 7 refuses epochs of token 5 (a
 * primary that lost the guest): nothing of them is applied, and that
 * primary hears it refused. */
TEST_T(epochs_of_an_older_token_are_refused, 60)
{
	struct vm *src = tg_boot(&(struct tg_opts){ .mem = 128 << 20, .vcpus = 1,
						    .working_set = 16 << 20,
						    .dirty_rate = 10 << 20 });
	struct standby_run sb;
	struct primary_run pr, old;
	struct released rel;
	struct repl_progress oprog;
	int sv[2];

	CHECK_EQ(vm_start(src), 0);
	protect(src, &sb, &pr, &rel, 0, 7);
	tg_sleep_ms(300);
	unprotect(&sb, &pr);
	CHECK_EQ(sb.st.token, 7);

	/* the same standby, a new stream from a primary of token 5 */
	CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
	sb.st.applied_epoch = 0;	/* its epochs are numbered from 1 again */
	sb.x = xport_tcp_from_fd(sv[1], 5000);
	memset(&old, 0, sizeof(old));
	old.vm = src;
	old.x = xport_tcp_from_fd(sv[0], 5000);
	old.p = (struct repl_params){ .token = 5 };
	repl_progress_init(&oprog, on_release, &rel);
	CHECK(pthread_create(&sb.thread, NULL, follow_main, &sb) == 0);
	old.ret = repl_primary_run(old.vm, old.x, &old.p, &oprog);
	pthread_join(sb.thread, NULL);
	CHECK_MSG(old.ret == -EPERM, "the old primary: %d (not refused)", old.ret);
	CHECK_EQ(sb.ret, -EBADMSG);
	CHECK_EQ(sb.st.applied_epoch, 0);
	CHECK_EQ(sb.st.token, 7);
	CHECK_MSG(strstr(sb.st.error, "older") != NULL, "standby: %s", sb.st.error);
	xport_close(old.x);
	xport_close(sb.x);
	repl_progress_destroy(&oprog);
	repl_progress_destroy(&pr.prog);
	vm_destroy(sb.vm);
	vm_destroy(src);
}

/* Another pauser of the primary's guest (a verify): under run_lock it
 * pauses the guest, and the guest must not move until it resumes it. */
struct pauser {
	struct vm *vm;
	pthread_mutex_t *run_lock;
	atomic_bool stop;
	atomic_uint pauses;
	unsigned moved;
	pthread_t thread;
};

static void *pauser_main(void *arg)
{
	struct pauser *p = arg;

	while (!atomic_load(&p->stop)) {
		uint64_t before;

		pthread_mutex_lock(p->run_lock);
		vm_pause(p->vm);
		before = tg_total(p->vm);
		usleep(2000);
		p->moved += tg_total(p->vm) != before;
		atomic_fetch_add(&p->pauses, 1);
		vm_resume(p->vm);
		pthread_mutex_unlock(p->run_lock);
		usleep(500);
	}
	return NULL;
}

static void *sync_dest_main(void *arg)
{
	struct standby_run *s = arg;
	struct mig_dest_opts o = { .io_timeout_ms = 5000, .standby = true };

	s->vm = mig_dest_run(s->x, &o, &s->mst, s->err, sizeof(s->err));
	return NULL;
}

/* Pauses do not nest: a standby's sync that paused and resumed the guest
 * on its own would resume it inside another pauser's pause. Under the
 * replication's run_lock it never does, sync after sync: at least 12, and
 * more (up to 100, for a minute at most) until the other pauser has paused
 * 50 times between. */
TEST_T(sync_never_resumes_the_guest_inside_another_pause, 90)
{
	struct vm *src = tg_boot(&(struct tg_opts){ .mem = 128 << 20, .vcpus = 2,
						    .working_set = 16 << 20,
						    .dirty_rate = 100 << 20 });
	struct repl_progress prog;
	struct pauser pz = { .vm = src };
	double t0;
	int syncs;

	CHECK_EQ(vm_start(src), 0);
	repl_progress_init(&prog, NULL, NULL);
	pz.run_lock = &prog.run_lock;
	CHECK(pthread_create(&pz.thread, NULL, pauser_main, &pz) == 0);
	t0 = tg_now();
	for (syncs = 0; syncs < 12 || (atomic_load(&pz.pauses) <= 50 && syncs < 100 &&
				       tg_now() - t0 < 60); syncs++) {
		struct standby_run sb = { 0 };
		struct mig_progress mprog;
		struct mig_params mp;
		struct xport *x;
		int sv[2];

		CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
		sb.x = xport_tcp_from_fd(sv[1], 5000);
		x = xport_tcp_from_fd(sv[0], 5000);
		CHECK(pthread_create(&sb.thread, NULL, sync_dest_main, &sb) == 0);
		mig_params_default(&mp);
		mp.standby = true;
		mp.run_lock = &prog.run_lock;
		mig_progress_init(&mprog);
		CHECK_EQ(mig_source_run(src, x, &mp, &mprog), 0);
		pthread_join(sb.thread, NULL);
		CHECK_MSG(sb.vm, "standby %d: %s", syncs, sb.err);
		vm_destroy(sb.vm);
		xport_close(x);
		xport_close(sb.x);
		CHECK_EQ(src->ops->dirty_stop(src), 0);	/* the next sync starts it again */
	}
	atomic_store(&pz.stop, true);
	pthread_join(pz.thread, NULL);
	printf("#   %u pauses of the other pauser over %d syncs\n", atomic_load(&pz.pauses), syncs);
	CHECK_MSG(atomic_load(&pz.pauses) > 50, "the other pauser paused only %u times in %d syncs",
		  atomic_load(&pz.pauses), syncs);
	CHECK_MSG(pz.moved == 0, "the guest ran inside %u of %u pauses", pz.moved,
		  atomic_load(&pz.pauses));
	repl_progress_destroy(&prog);
	vm_destroy(src);
}

/* An epoch that fails half applied leaves an image of no epoch: the
 * standby says it is damaged (it must never take the guest over), and the
 * primary goes on without it. */
TEST_T(half_applied_epoch_marks_the_standby_damaged, 60)
{
	struct vm *src = tg_boot(&(struct tg_opts){ .mem = 128 << 20, .vcpus = 1,
						    .working_set = 16 << 20,
						    .dirty_rate = 10 << 20 });
	struct standby_run sb;
	struct primary_run pr;
	struct released rel;

	setenv("VMIGRATE_FAULT", "standby-half-apply", 1);
	CHECK_EQ(vm_start(src), 0);
	protect(src, &sb, &pr, &rel, 0, 7);
	pthread_join(sb.thread, NULL);
	xport_close(sb.x);	/* as the standby's process ends: the primary hears it */
	pthread_join(pr.thread, NULL);
	CHECK_EQ(sb.ret, -EIO);
	CHECK_MSG(sb.st.damaged, "standby: %s", sb.st.error);
	CHECK_MSG(strstr(sb.st.error, "damaged") != NULL, "standby: %s", sb.st.error);
	CHECK_EQ(sb.st.applied_epoch, 0);
	/* refused, or its link gone first: either way it goes on without it */
	CHECK_MSG(pr.ret == -EPERM || pr.ret == -EPIPE || pr.ret == -ECONNRESET,
		  "the primary: %d", pr.ret);
	xport_close(pr.x);
	repl_progress_destroy(&pr.prog);
	vm_destroy(sb.vm);
	vm_destroy(src);
}
