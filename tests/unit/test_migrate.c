/*
 * Live migration between two micro-VMs in one process over a socket pair:
 * idle and dirtying guests arrive intact with their counters continuing;
 * a refusing or dying destination, a corrupted stream and a cancel leave
 * the guest running on the source and nothing on the destination; the
 * progress figures are live from round 1 and never run backwards.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"
#include "kvmguest.h"
#include "migrate.h"

struct dest_run {
	struct xport *x;
	struct xport *data[4];		/* destination ends of the data channels */
	struct xport *src_data[4];	/* source ends */
	unsigned nr_data;
	struct vm *vm;
	struct mig_stats st;
	char err[512];
	bool refuse;
	struct mig_progress *watch;	/* the destination's figures, when set */
	pthread_t thread;
};

static int refuse_all(void *opaque, const struct ckpt_image_info *info,
		      const struct vm_kvm_config *cfg, char *err, size_t errlen)
{
	snprintf(err, errlen, "guest %s is not welcome here", info->guest_name);
	return -EPERM;
}

static void *dest_main(void *arg)
{
	struct dest_run *d = arg;
	struct mig_dest_opts o = { .io_timeout_ms = 5000, .data_channels = d->data,
				   .nr_data_channels = d->nr_data, .progress = d->watch };

	if (d->refuse)
		o.admit = refuse_all;
	d->vm = mig_dest_run(d->x, &o, &d->st, d->err, sizeof(d->err));
	return NULL;
}

/* A connected pair: the source's end is returned, the destination runs. */
static struct xport *start_dest(struct dest_run *d, bool refuse)
{
	int sv[2];

	CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
	memset(d, 0, sizeof(*d));
	d->refuse = refuse;
	d->x = xport_tcp_from_fd(sv[1], 5000);
	CHECK(pthread_create(&d->thread, NULL, dest_main, d) == 0);
	return xport_tcp_from_fd(sv[0], 5000);
}

/* The same with n data channels; p gets the source's ends. */
static struct xport *start_dest_watched(struct dest_run *d, unsigned n, struct mig_params *p,
					struct mig_progress *watch)
{
	struct dest_run tmp;

	memset(&tmp, 0, sizeof(tmp));
	tmp.watch = watch;
	for (unsigned i = 0; i < n; i++) {
		int sv[2];

		CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
		tmp.data[i] = xport_tcp_from_fd(sv[1], 5000);
		tmp.src_data[i] = xport_tcp_from_fd(sv[0], 5000);
	}
	{
		struct xport *x;
		int sv[2];

		CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
		*d = tmp;
		d->nr_data = n;
		d->x = xport_tcp_from_fd(sv[1], 5000);
		CHECK(pthread_create(&d->thread, NULL, dest_main, d) == 0);
		x = xport_tcp_from_fd(sv[0], 5000);
		p->data_channels = d->src_data;
		p->nr_data_channels = n;
		return x;
	}
}

static struct xport *start_dest_channels(struct dest_run *d, unsigned n, struct mig_params *p)
{
	return start_dest_watched(d, n, p, NULL);
}

static void finish_dest(struct dest_run *d)
{
	/* The source's data channels end with its run, as a real source's do:
	 * a destination waiting for a marker on one of them must see it end
	 * (left open, a cancel between two channels' markers hung the test). */
	for (unsigned i = 0; i < d->nr_data; i++)
		if (d->src_data[i])
			shutdown(xport_fd(d->src_data[i]), SHUT_RDWR);
	pthread_join(d->thread, NULL);
	xport_close(d->x);
	for (unsigned i = 0; i < d->nr_data; i++) {
		xport_close(d->data[i]);
		xport_close(d->src_data[i]);
	}
}

static void counters_of(struct vm *vm, uint64_t *c)
{
	for (unsigned v = 0; v < vm->nr_vcpus; v++)
		c[v] = tg_status(vm, v)->counter;
}

static void verify(struct vm *vm, const uint64_t *min)
{
	struct vm_verify_report rep;

	CHECK_MSG(vm_memtouch_verify(vm, &(struct vm_verify_opts){ .min_counter = min }, &rep) == 0,
		  "verify: %s", rep.msg);
}

/* Returns the pages that came torn and again whole at the destination. */
static uint64_t migrate_and_check_n(uint64_t rate, unsigned channels)
{
	struct vm *src = tg_boot(&(struct tg_opts){ .mem = 256 << 20, .vcpus = 2,
						    .working_set = 64 << 20, .dirty_rate = rate });
	struct mig_params p;
	struct mig_progress prog;
	struct mig_stats st;
	struct dest_run d;
	struct xport *x;
	uint64_t before[2], at_end[2];
	int ret;

	mig_params_default(&p);
	mig_progress_init(&prog);
	CHECK_EQ(vm_start(src), 0);
	tg_sleep_ms(300);
	counters_of(src, before);
	x = channels ? start_dest_channels(&d, channels, &p) : start_dest(&d, false);
	ret = mig_source_run(src, x, &p, &prog);
	mig_progress_get(&prog, &st);
	CHECK_MSG(ret == 0, "migration failed: %s", st.error);
	CHECK_EQ(st.status, MIG_COMPLETED);
	counters_of(src, at_end);	/* the source stays paused */
	finish_dest(&d);
	CHECK_MSG(d.vm, "destination: %s", d.err);
	xport_close(x);
	vm_destroy(src);

	tg_sleep_ms(200);
	CHECK_EQ(vm_pause(d.vm), 0);
	verify(d.vm, at_end);
	for (unsigned v = 0; v < 2; v++) {
		CHECK(at_end[v] >= before[v]);
		if (rate)
			CHECK_MSG(tg_status(d.vm, v)->counter > at_end[v],
				  "vCPU %u did not continue on the destination", v);
	}
	CHECK(st.transferred_bytes > 0 && st.round >= 1);
	vm_destroy(d.vm);
	return d.st.torn_pages;
}

TEST(migrate_idle_guest)
{
	migrate_and_check_n(0, 0);
}

TEST(migrate_guest_dirtying_50mib_s)
{
	migrate_and_check_n(50 << 20, 0);
}

TEST(migrate_over_4_data_channels)
{
	migrate_and_check_n(0, 4);
}

TEST(migrate_dirtying_guest_over_2_data_channels)
{
	migrate_and_check_n(50 << 20, 2);
}

static void check_still_running(struct vm *src, const uint64_t *before);

static void *cut_data_later(void *arg)
{
	tg_sleep_ms(300);
	shutdown(xport_fd(arg), SHUT_RDWR);
	return NULL;
}

TEST(data_channel_lost_mid_round_leaves_guest_on_source)
{
	struct vm *src = tg_boot(&(struct tg_opts){ .mem = 256 << 20, .working_set = 64 << 20 });
	struct mig_params p;
	struct mig_progress prog;
	struct mig_stats st;
	struct dest_run d;
	struct xport *x;
	pthread_t t;
	uint64_t before[1];

	mig_params_default(&p);
	p.bandwidth = 20 << 20;
	p.max_downtime_ms = 1;
	mig_progress_init(&prog);
	CHECK_EQ(vm_start(src), 0);
	tg_sleep_ms(300);
	counters_of(src, before);
	x = start_dest_channels(&d, 3, &p);
	pthread_create(&t, NULL, cut_data_later, d.data[1]);
	CHECK(mig_source_run(src, x, &p, &prog) < 0);
	pthread_join(t, NULL);
	mig_progress_get(&prog, &st);
	CHECK_MSG(st.status == MIG_FAILED, "status %s", mig_status_name(st.status));
	xport_close(x);
	finish_dest(&d);
	CHECK_MSG(!d.vm, "the destination kept a guest");
	check_still_running(src, before);
	vm_destroy(src);
}

/* After a failed migration the guest runs on the source and verifies. */
static void check_still_running(struct vm *src, const uint64_t *before)
{
	uint64_t now[2];

	tg_sleep_ms(150);
	counters_of(src, now);
	CHECK_MSG(now[0] > before[0], "guest does not run on the source after the failure");
	CHECK_EQ(vm_pause(src), 0);
	counters_of(src, now);
	verify(src, before);
}

/* A migration meant to fail: a running guest, a destination listening. */
struct failing {
	struct vm *src;
	struct mig_params p;
	struct mig_progress prog;
	struct mig_stats st;
	struct dest_run d;
	struct xport *x;
	uint64_t before[2];
};

/* ... over n data channels besides the control channel */
static void failing_begin_on(struct failing *f, const struct tg_opts *o, bool refuse,
			     unsigned n)
{
	f->src = tg_boot(o);
	mig_params_default(&f->p);
	mig_progress_init(&f->prog);
	CHECK_EQ(vm_start(f->src), 0);
	tg_sleep_ms(300);
	counters_of(f->src, f->before);
	f->x = n ? start_dest_channels(&f->d, n, &f->p) : start_dest(&f->d, refuse);
}

static void failing_begin(struct failing *f, const struct tg_opts *o, bool refuse)
{
	failing_begin_on(f, o, refuse, 0);
}

/* It failed as wanted, nothing runs on the destination, the source goes on. */
static void failing_end(struct failing *f, enum mig_status want)
{
	mig_progress_get(&f->prog, &f->st);
	CHECK_MSG(f->st.status == want, "status %s, expected %s", mig_status_name(f->st.status),
		  mig_status_name(want));
	xport_close(f->x);	/* the destination sees the stream end */
	finish_dest(&f->d);
	CHECK_MSG(!f->d.vm, "the destination kept a guest");
	check_still_running(f->src, f->before);
	vm_destroy(f->src);
}

/* A guest that dirties far faster than a capped link: never converges. */
static const struct tg_opts busy_guest = { .mem = 256 << 20, .working_set = 64 << 20 };

static void never_converge(struct mig_params *p)
{
	p->bandwidth = 20 << 20;
	p->max_downtime_ms = 1;
}

TEST(refusing_destination_leaves_guest_on_source)
{
	struct failing f;

	failing_begin(&f, &(struct tg_opts){ .mem = 128 << 20, .working_set = 16 << 20,
					     .dirty_rate = 20 << 20 }, true);
	CHECK(mig_source_run(f.src, f.x, &f.p, &f.prog) < 0);
	failing_end(&f, MIG_FAILED);
	CHECK_MSG(strstr(f.st.error, "not welcome"), "error: %s", f.st.error);
}

/* A page that came torn (LIVE records) and was never sent again fails the
 * migration at the destination, before anything is loaded: the fault point
 * changes one page on the wire past a data channel's first 8 MiB, far into
 * the working set of a guest that rewrites it from its start at 64 pages a
 * second, so its dirty log has no reason to send that page again. */
TEST(torn_page_never_sent_again_fails_the_migration)
{
	struct failing f;

	failing_begin_on(&f, &(struct tg_opts){ .mem = 256 << 20, .working_set = 64 << 20,
						.dirty_rate = 256 << 10 }, false, 2);
	setenv("VMIGRATE_FAULT", "src-tear-page", 1);
	CHECK(mig_source_run(f.src, f.x, &f.p, &f.prog) < 0);
	unsetenv("VMIGRATE_FAULT");
	failing_end(&f, MIG_FAILED);
	CHECK_MSG(strstr(f.st.error, "1 pages arrived torn (checksum mismatch) and were not sent again"),
		  "error: %s", f.st.error);
}

/* The same tear as a guest's write makes it, reported by the dirty log
 * (src-tear-written-page), on a guest rewriting its working set unpaced
 * (it tears pages of its own too: up to thousands a run here): each is
 * sent again, whole, in a later round; nothing is owed at the end and the
 * guest verifies. The tear alone does not bring the page back: slowed by
 * dirty logging, a vCPU wrote 600-5,000 pages of its 8,192 during a
 * migration here, so it need not pass the torn one again. */
TEST(torn_page_of_a_dirtying_guest_is_sent_again)
{
	uint64_t torn;

	setenv("VMIGRATE_FAULT", "src-tear-written-page", 1);
	torn = migrate_and_check_n(0, 2);
	unsetenv("VMIGRATE_FAULT");
	CHECK_MSG(torn >= 1, "the torn page was not counted");
	printf("# %llu pages came torn and again whole\n", (unsigned long long)torn);
}

static void *cut_later(void *arg)
{
	tg_sleep_ms(300);
	shutdown(xport_fd(arg), SHUT_RDWR);
	return NULL;
}

TEST(destination_lost_mid_round_leaves_guest_on_source)
{
	struct failing f;
	pthread_t t;

	failing_begin(&f, &busy_guest, false);
	never_converge(&f.p);
	pthread_create(&t, NULL, cut_later, f.d.x);
	CHECK(mig_source_run(f.src, f.x, &f.p, &f.prog) < 0);
	pthread_join(t, NULL);
	failing_end(&f, MIG_FAILED);
	CHECK(f.st.round >= 1);
}

static void *cancel_later(void *arg)
{
	struct mig_progress *prog = arg;

	tg_sleep_ms(200);
	atomic_store(&prog->cancel, true);
	return NULL;
}

/* The destination hears why: with data channels it may be waiting on any
 * of them when the source gives up, so each stream says it. */
static void cancel_mid_round(unsigned channels)
{
	struct failing f;
	pthread_t t;

	failing_begin_on(&f, &busy_guest, false, channels);
	never_converge(&f.p);
	pthread_create(&t, NULL, cancel_later, &f.prog);
	CHECK_EQ(mig_source_run(f.src, f.x, &f.p, &f.prog), -ECANCELED);
	pthread_join(t, NULL);
	failing_end(&f, MIG_CANCELLED);
	CHECK_MSG(!strcmp(f.d.err, "cancelled by the source"), "destination: %s", f.d.err);
}

TEST(cancel_mid_round_leaves_guest_on_source)
{
	cancel_mid_round(0);
}

TEST(cancel_over_data_channels_tells_the_destination)
{
	cancel_mid_round(2);
}

TEST(not_converging_times_out_and_cancels)
{
	struct failing f;

	failing_begin(&f, &busy_guest, false);
	never_converge(&f.p);
	f.p.timeout_s = 1.5;
	CHECK_EQ(mig_source_run(f.src, f.x, &f.p, &f.prog), -ETIMEDOUT);
	failing_end(&f, MIG_FAILED);
	CHECK_MSG(strstr(f.st.error, "converge"), "error: %s", f.st.error);
	CHECK_MSG(!strcmp(f.d.err, "the source gave up: did not converge within 2 s"),
		  "destination: %s", f.d.err);
}

TEST_T(auto_converge_throttles_until_it_fits, 120)
{
	struct vm *src = tg_boot(&(struct tg_opts){ .mem = 256 << 20, .working_set = 16 << 20,
						    .dirty_rate = 200 << 20 });
	struct mig_params p;
	struct mig_progress prog;
	struct mig_stats st;
	struct dest_run d;
	struct xport *x;

	mig_params_default(&p);
	p.bandwidth = 20 << 20;		/* a tenth of the dirty rate */
	p.max_downtime_ms = 100;
	p.auto_converge = true;
	p.timeout_s = 90;
	mig_progress_init(&prog);
	CHECK_EQ(vm_start(src), 0);
	tg_sleep_ms(300);
	x = start_dest(&d, false);
	CHECK_EQ(mig_source_run(src, x, &p, &prog), 0);
	mig_progress_get(&prog, &st);
	CHECK_MSG(st.throttle_percentage >= 20, "converged without throttling (%u%%)",
		  st.throttle_percentage);
	finish_dest(&d);
	CHECK(d.vm);
	xport_close(x);
	CHECK_EQ(vm_pause(d.vm), 0);
	verify(d.vm, NULL);
	vm_destroy(d.vm);
	vm_destroy(src);
}

/* A thread that steers a running migration, and what it saw sent then. */
struct steer {
	struct mig_progress *prog;
	uint64_t sent;
};

static void *raise_cap_later(void *arg)
{
	struct steer *s = arg;
	struct mig_stats st;

	tg_sleep_ms(1000);
	mig_progress_get(s->prog, &st);
	s->sent = st.transferred_bytes;
	atomic_store(&s->prog->bandwidth.rate, 0);	/* lift the cap while it runs */
	tg_sleep_ms(700);
	atomic_store(&s->prog->cancel, true);
	return NULL;
}

TEST(bandwidth_cap_holds_over_all_channels_and_changes_live)
{
	struct failing f;
	struct steer st = { 0 };
	pthread_t t;
	struct xport *x;

	f.src = tg_boot(&busy_guest);
	mig_params_default(&f.p);
	f.p.bandwidth = 4 << 20;	/* 4 MiB/s for the three channels together */
	f.p.max_downtime_ms = 1;
	mig_progress_init(&f.prog);
	CHECK_EQ(vm_start(f.src), 0);
	tg_sleep_ms(300);
	counters_of(f.src, f.before);
	x = start_dest_channels(&f.d, 3, &f.p);
	f.x = x;
	st.prog = &f.prog;
	pthread_create(&t, NULL, raise_cap_later, &st);
	CHECK_EQ(mig_source_run(f.src, f.x, &f.p, &f.prog), -ECANCELED);
	pthread_join(t, NULL);
	mig_progress_get(&f.prog, &f.st);
	/* one second at 4 MiB/s plus the bucket's 50 ms: far below 3 x 4 MiB */
	CHECK_MSG(st.sent < (6u << 20), "%llu bytes in the first second under a 4 MiB/s cap",
		  (unsigned long long)st.sent);
	CHECK_MSG(f.st.transferred_bytes > st.sent + (20u << 20),
		  "lifting the cap did not speed it up: %llu then %llu bytes",
		  (unsigned long long)st.sent, (unsigned long long)f.st.transferred_bytes);
	failing_end(&f, MIG_CANCELLED);
}

struct big_send {
	struct xport *x;
	const uint8_t *buf;
	size_t len;
	int ret;
};

static void *send_all(void *arg)
{
	struct big_send *b = arg;

	b->ret = xport_send(b->x, b->buf, b->len);
	return NULL;
}

/* Under a cap a batch goes out in slices, and bytes_sent counts each one
 * as it leaves: the progress line's wire rate then moves smoothly instead
 * of in jumps of a whole batch (4 MiB, a second of a slow link). */
TEST(capped_send_counts_its_bytes_as_they_leave)
{
	enum { LEN = 2 << 20 };
	static uint8_t out[LEN], in[64 << 10];
	struct xport_bucket bucket;
	struct big_send b = { .buf = out, .len = LEN };
	size_t got = 0;
	uint64_t mid;
	pthread_t t;
	int sv[2];
	long n;

	CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
	xport_bucket_init(&bucket, 256u << 20);	/* a cap, so the send is paced */
	b.x = xport_tcp_from_fd(sv[0], 5000);
	b.x->bucket = &bucket;
	CHECK(pthread_create(&t, NULL, send_all, &b) == 0);
	/* half of it arrived: the sender is inside its one xport_send still
	 * (the socket holds far less than the other half) */
	while (got < LEN / 2) {
		n = read(sv[1], in, sizeof(in) < LEN / 2 - got ? sizeof(in) : LEN / 2 - got);
		CHECK(n > 0);
		got += (size_t)n;
	}
	mid = b.x->bytes_sent;
	while (got < LEN && (n = read(sv[1], in, sizeof(in))) > 0)
		got += (size_t)n;
	pthread_join(t, NULL);
	CHECK_EQ(b.ret, 0);
	CHECK_EQ(got, LEN);
	/* slices before the one in flight are counted (256 KiB each); a count
	 * at the end of the send would read 0 here */
	CHECK_MSG(mid >= LEN / 2 - 2 * (256 << 10) && mid < LEN,
		  "%llu of %d bytes counted once %d had arrived", (unsigned long long)mid, LEN,
		  LEN / 2);
	CHECK_EQ(b.x->bytes_sent, LEN);
	xport_close(b.x);
	close(sv[1]);
}

TEST(params_that_never_converge_are_refused)
{
	struct mig_params p;
	char err[512] = "";

	mig_params_default(&p);
	CHECK_EQ(mig_params_check(&p, err, sizeof(err)), 0);
	p.max_downtime_ms = 0;
	CHECK_EQ(mig_params_check(&p, err, sizeof(err)), -EINVAL);
	CHECK_MSG(strstr(err, "--max-downtime 0") && strstr(err, "never"), "error: %s", err);
	p.max_downtime_ms = MIG_MIN_DOWNTIME_MS - 1;
	CHECK_EQ(mig_params_check(&p, err, sizeof(err)), -EINVAL);
	p.timeout_s = 5;	/* cancelled at the timeout: it can only fail */
	CHECK_EQ(mig_params_check(&p, err, sizeof(err)), -EINVAL);
	p.force_on_timeout = true;	/* pre-copy for 5 s, then forced over */
	CHECK_EQ(mig_params_check(&p, err, sizeof(err)), 0);
	p.timeout_s = 0;
	p.max_downtime_ms = MIG_MIN_DOWNTIME_MS;
	CHECK_EQ(mig_params_check(&p, err, sizeof(err)), 0);
}

/* What a watcher sees, a sample every 50 ms. */
struct sample {
	double t;
	enum mig_status status;
	unsigned round;
	double mbps, percent, eta;
	uint64_t dirty_rate, remaining;
};

struct watcher {
	struct mig_progress *prog;
	atomic_bool stop;
	unsigned n;
	struct sample s[4000];
	pthread_t thread;
};

static void *watch_main(void *arg)
{
	struct watcher *w = arg;

	while (!atomic_load(&w->stop) && w->n < sizeof(w->s) / sizeof(w->s[0])) {
		struct mig_stats st;

		mig_progress_get(w->prog, &st);
		w->s[w->n++] = (struct sample){ tg_now(), st.status, st.round, st.mbps, st.percent,
						st.eta_s, st.dirty_pages_rate, st.remaining_pages };
		tg_sleep_ms(50);
	}
	return NULL;
}

static void watch_start(struct watcher *w, struct mig_progress *prog)
{
	w->prog = prog;
	atomic_store(&w->stop, false);
	w->n = 0;
	CHECK(pthread_create(&w->thread, NULL, watch_main, w) == 0);
}

static void watch_stop(struct watcher *w)
{
	atomic_store(&w->stop, true);
	pthread_join(w->thread, NULL);
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/* A capped migration of a dirtying guest, watched: the rates are known
 * from round 1's first second, the share done never goes back and stays
 * under 100 until the guest runs there, the ETA counts down and is of the
 * order of the time it really took, and the destination's figures are
 * published as it goes. */
TEST_T(progress_figures_are_live_and_never_run_backwards, 120)
{
	static struct watcher w;
	struct vm *src = tg_boot(&(struct tg_opts){ .mem = 256 << 20, .vcpus = 2,
						    .working_set = 96 << 20,
						    .dirty_rate = 8 << 20 });
	struct mig_params p;
	struct mig_progress prog, dprog;
	struct mig_stats st, dst;
	struct dest_run d;
	struct xport *x;
	double t_active = 0, t_end, eta_1s = -1, t_1s = 0, eta_last = -1, last_pct = 0;
	static double ratio[4000];
	bool dirty_seen = false;
	unsigned rate_lines = 0, nr_ratios = 0;

	mig_params_default(&p);
	p.bandwidth = 32 << 20;
	mig_progress_init(&prog);
	mig_progress_init(&dprog);
	CHECK_EQ(vm_start(src), 0);
	/* past its first fill of the working set, which dirties at full speed */
	for (int i = 0; i < 300 && tg_total(src) < (96u << 20) / 4096 + 4096; i++)
		tg_sleep_ms(100);
	CHECK_MSG(tg_total(src) >= (96u << 20) / 4096, "the guest did not fill its working set");
	x = start_dest_watched(&d, 2, &p, &dprog);
	watch_start(&w, &prog);
	CHECK_EQ(mig_source_run(src, x, &p, &prog), 0);
	t_end = tg_now();
	watch_stop(&w);
	mig_progress_get(&prog, &st);
	finish_dest(&d);
	CHECK_MSG(d.vm, "destination: %s", d.err);
	xport_close(x);
	vm_destroy(src);

	for (unsigned i = 0; i < w.n; i++) {
		const struct sample *e = &w.s[i];

		if (e->status == MIG_ACTIVE && !t_active)
			t_active = e->t;
		CHECK_MSG(e->percent >= last_pct, "%.1f%% after %.1f%% (sample %u)", e->percent,
			  last_pct, i);
		last_pct = e->percent;
		if (e->status != MIG_COMPLETED)
			CHECK_MSG(e->percent < 100, "%.1f%% while %s", e->percent,
				  mig_status_name(e->status));
		if (e->status != MIG_ACTIVE)
			continue;
		if (e->round == 1 && e->t - t_active >= 1.0) {
			CHECK_MSG(e->mbps > 0, "no rate %.1f s into round 1", e->t - t_active);
			rate_lines++;
			if (eta_1s < 0 && e->eta >= 0) {
				eta_1s = e->eta;
				t_1s = e->t;
			}
			if (e->eta >= 0 && t_end - e->t > 0.5)
				ratio[nr_ratios++] = e->eta / (t_end - e->t);
		}
		if (e->round == 1 && e->dirty_rate > 0)
			dirty_seen = true;
		if (e->eta >= 0)
			eta_last = e->eta;
	}
	CHECK_MSG(rate_lines >= 5, "round 1 lasted only %u samples past its first second",
		  rate_lines);
	CHECK_MSG(dirty_seen, "no dirty rate in round 1 of a guest dirtying 8 MiB/s");
	CHECK_MSG(eta_1s > 0, "no ETA a second into round 1");
	CHECK_MSG(eta_last < eta_1s, "the ETA did not count down: %.1f s then %.1f s", eta_1s,
		  eta_last);
	/* an estimate, not a measurement, but of the time really left: each
	 * sample of round 1 within 0.7-1.4 times it, their median within 20%
	 * (the batches in flight once left out made it short by a third) */
	CHECK_MSG(nr_ratios >= 5, "only %u ETAs in round 1", nr_ratios);
	qsort(ratio, nr_ratios, sizeof(ratio[0]), cmp_double);
	CHECK_MSG(ratio[0] >= 0.7 && ratio[nr_ratios - 1] <= 1.4, "ETAs from %.2f to %.2f times "
		  "the time then left (the first, %.1f s, when %.1f s were)", ratio[0],
		  ratio[nr_ratios - 1], eta_1s, t_end - t_1s);
	CHECK_MSG(ratio[nr_ratios / 2] >= 0.8 && ratio[nr_ratios / 2] <= 1.25,
		  "the median ETA is %.2f times the time left", ratio[nr_ratios / 2]);
	CHECK_MSG(st.percent == 100 && st.status == MIG_COMPLETED && st.eta_s == 0,
		  "at the end: %.1f%%, %s, ETA %.1f", st.percent, mig_status_name(st.status),
		  st.eta_s);
	CHECK_EQ(st.remaining_pages, 0);
	mig_progress_get(&dprog, &dst);
	CHECK_MSG(dst.status == MIG_COMPLETED && dst.transferred_bytes == d.st.transferred_bytes &&
		  dst.transferred_bytes > (64u << 20) && dst.ram_total_bytes == (256u << 20),
		  "destination published %s, %llu bytes, %llu total", mig_status_name(dst.status),
		  (unsigned long long)dst.transferred_bytes,
		  (unsigned long long)dst.ram_total_bytes);
	CHECK_EQ(vm_pause(d.vm), 0);
	verify(d.vm, NULL);
	vm_destroy(d.vm);
}

/* The ring hands a page over once: the mid-round peeks for the dirty rate
 * take entries out of it, and the pages they name must still reach the
 * destination (a lost one fails the verify). */
TEST_T(dirty_ring_peeks_lose_no_write, 120)
{
	struct vm *src = tg_boot(&(struct tg_opts){ .mem = 256 << 20, .vcpus = 2,
						    .working_set = 64 << 20,
						    .dirty_rate = 24 << 20,
						    .dirty_mode = VM_DIRTY_RING });
	struct mig_params p;
	struct mig_progress prog;
	struct mig_stats st;
	struct dest_run d;
	struct xport *x;
	uint64_t at_end[2];

	mig_params_default(&p);
	p.bandwidth = 48 << 20;	/* rounds of seconds: many peeks in each */
	p.timeout_s = 60;
	p.force_on_timeout = true;
	mig_progress_init(&prog);
	CHECK_EQ(vm_start(src), 0);
	tg_sleep_ms(300);
	x = start_dest_channels(&d, 2, &p);
	CHECK_EQ(mig_source_run(src, x, &p, &prog), 0);
	mig_progress_get(&prog, &st);
	counters_of(src, at_end);
	finish_dest(&d);
	CHECK_MSG(d.vm, "destination: %s", d.err);
	xport_close(x);
	vm_destroy(src);
	CHECK_MSG(st.dirty_sync_count >= 3, "only %llu dirty syncs",
		  (unsigned long long)st.dirty_sync_count);
	CHECK_EQ(vm_pause(d.vm), 0);
	verify(d.vm, at_end);
	vm_destroy(d.vm);
}

static void *cancel_later_on(void *arg)
{
	struct steer *c = arg;
	struct mig_stats st;

	tg_sleep_ms(2000);	/* round 1 is all queued by then */
	mig_progress_get(c->prog, &st);
	c->sent = st.transferred_bytes;
	atomic_store(&c->prog->cancel, true);
	return NULL;
}

/* Round 1 of this guest fits the channels' queues at once, so the source
 * waits at the round's end for the capped link to drain them: a cancel
 * must end that wait, not let the queue go out first. */
TEST(cancel_does_not_wait_for_the_queue_to_drain)
{
	struct failing f;
	struct steer c = { &f.prog, 0 };
	pthread_t t;
	uint64_t after;

	f.src = tg_boot(&(struct tg_opts){ .mem = 128 << 20, .working_set = 96 << 20,
					   .dirty_rate = 1 << 20 });
	mig_params_default(&f.p);
	f.p.bandwidth = 4 << 20;
	mig_progress_init(&f.prog);
	CHECK_EQ(vm_start(f.src), 0);
	tg_sleep_ms(300);
	counters_of(f.src, f.before);
	f.x = start_dest_channels(&f.d, 2, &f.p);
	pthread_create(&t, NULL, cancel_later_on, &c);
	CHECK_EQ(mig_source_run(f.src, f.x, &f.p, &f.prog), -ECANCELED);
	pthread_join(t, NULL);
	mig_progress_get(&f.prog, &f.st);
	after = f.st.transferred_bytes - c.sent;
	/* at most a batch in flight on each channel (4 MiB), not ~90 MiB queued */
	CHECK_MSG(after < (16u << 20), "%llu bytes went out after the cancel",
		  (unsigned long long)after);
	failing_end(&f, MIG_CANCELLED);
}
