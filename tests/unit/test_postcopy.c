/*
 * Post-copy between two micro-VMs in one process over socket pairs: pure,
 * hybrid and automatic switches, with and without data channels, leave
 * the guest running on the destination with every page intact and its
 * counters never going back; a link cut during post-copy pauses both ends
 * until new links come, and then only what is missing is sent again; a
 * destination lost during post-copy leaves the source paused (never a
 * stale copy resumed); a cancel after the switch changes nothing; and a
 * destination that maps a zero page instead of waiting is caught;
 * malformed POSTCOPY records are refused.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <endian.h>
#include <string.h>

#include "harness.h"
#include "kvmguest.h"
#include "migrate.h"
#include "postcopy.h"

#define MAX_DATA	2

struct pair {
	struct xport *src, *dst;
};

static struct pair new_pair(void)
{
	int sv[2];

	CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
	return (struct pair){ xport_tcp_from_fd(sv[0], 5000), xport_tcp_from_fd(sv[1], 5000) };
}

static void close_pair(struct pair *p)
{
	xport_close(p->src);
	xport_close(p->dst);
	p->src = p->dst = NULL;
}

/* One migration's links, both ends, and what a recovery hands out. */
struct rig {
	unsigned nr_data;
	struct pair control, fault, data[MAX_DATA];
	struct pair spare_control, spare_fault, spare_data[MAX_DATA];	/* a recovery's */
	pthread_mutex_t lock;
	pthread_cond_t cond;
	unsigned recoveries_allowed;	/* links a recovery may still get */
	bool src_waiting, dst_waiting, src_gave_up;
	unsigned src_got, dst_got;
	int dst_deny;			/* the destination's reconnect fails */
	struct vm *vm;			/* the destination's result */
	struct mig_stats dst_st;
	struct mig_progress dst_prog;
	char err[512];
	pthread_t thread;
};

static void make_links(struct rig *g, struct pair *c, struct pair *f, struct pair *d)
{
	*c = new_pair();
	*f = new_pair();
	for (unsigned i = 0; i < g->nr_data; i++)
		d[i] = new_pair();
}

static void fill_links(struct rig *g, struct mig_links *out, bool src, struct pair *c,
		       struct pair *f, struct pair *d)
{
	memset(out, 0, sizeof(*out));
	out->control = src ? c->src : c->dst;
	out->fault = src ? f->src : f->dst;
	out->nr_data = g->nr_data;
	for (unsigned i = 0; i < g->nr_data; i++)
		out->data[i] = src ? d[i].src : d[i].dst;
}

/* Both ends' reconnect: once both wait, the spare links go to them. */
static int reconnect(struct rig *g, bool src, struct mig_links *out)
{
	int ret = -1;

	pthread_mutex_lock(&g->lock);
	if (src ? g->src_got : g->dst_got) {
		pthread_mutex_unlock(&g->lock);
		return -1;	/* a second recovery: not in these tests */
	}
	if (src)
		g->src_waiting = true;
	else
		g->dst_waiting = true;
	pthread_cond_broadcast(&g->cond);
	if (!src && g->dst_deny) {
		pthread_mutex_unlock(&g->lock);
		return -1;
	}
	while (g->recoveries_allowed && !(g->src_waiting && g->dst_waiting) &&
	       !(src && g->dst_deny))
		pthread_cond_wait(&g->cond, &g->lock);
	if (g->recoveries_allowed && g->src_waiting && g->dst_waiting) {
		fill_links(g, out, src, &g->spare_control, &g->spare_fault, g->spare_data);
		if (src)
			g->src_got = 1;
		else
			g->dst_got = 1;
		ret = 0;
	} else if (src) {
		g->src_gave_up = true;
	}
	pthread_mutex_unlock(&g->lock);
	return ret;
}

static int src_reconnect(void *opaque, struct mig_links *out)
{
	return reconnect(opaque, true, out);
}

static int dst_reconnect(void *opaque, struct mig_links *out)
{
	return reconnect(opaque, false, out);
}

static void *dest_main(void *arg)
{
	struct rig *g = arg;
	struct xport *data[MAX_DATA];
	struct mig_dest_opts o = { .io_timeout_ms = 5000, .fault_channel = g->fault.dst,
				   .reconnect = dst_reconnect, .opaque = g,
				   .nr_data_channels = g->nr_data, .data_channels = data,
				   .progress = &g->dst_prog };

	for (unsigned i = 0; i < g->nr_data; i++)
		data[i] = g->data[i].dst;
	g->vm = mig_dest_run(g->control.dst, &o, &g->dst_st, g->err, sizeof(g->err));
	return NULL;
}

static void rig_start(struct rig *g, unsigned nr_data, struct mig_params *p)
{
	static struct xport *src_data[MAX_DATA];

	memset(g, 0, sizeof(*g));
	g->nr_data = nr_data;
	pthread_mutex_init(&g->lock, NULL);
	pthread_cond_init(&g->cond, NULL);
	mig_progress_init(&g->dst_prog);
	make_links(g, &g->control, &g->fault, g->data);
	make_links(g, &g->spare_control, &g->spare_fault, g->spare_data);
	for (unsigned i = 0; i < nr_data; i++)
		src_data[i] = g->data[i].src;
	p->data_channels = src_data;
	p->nr_data_channels = nr_data;
	p->fault_channel = g->fault.src;
	p->reconnect = src_reconnect;
	p->reconnect_opaque = g;
	CHECK(pthread_create(&g->thread, NULL, dest_main, g) == 0);
}

static void rig_finish(struct rig *g)
{
	/* as a real source's links do, they end with its run */
	shutdown(xport_fd(g->control.src), SHUT_RDWR);
	shutdown(xport_fd(g->fault.src), SHUT_RDWR);
	for (unsigned i = 0; i < g->nr_data; i++)
		shutdown(xport_fd(g->data[i].src), SHUT_RDWR);
	pthread_mutex_lock(&g->lock);
	g->recoveries_allowed = 0;
	pthread_cond_broadcast(&g->cond);
	pthread_mutex_unlock(&g->lock);
	pthread_join(g->thread, NULL);
	close_pair(&g->control);
	close_pair(&g->fault);
	close_pair(&g->spare_control);
	close_pair(&g->spare_fault);
	for (unsigned i = 0; i < g->nr_data; i++) {
		close_pair(&g->data[i]);
		close_pair(&g->spare_data[i]);
	}
}

static void counters_of(struct vm *vm, uint64_t *c)
{
	for (unsigned v = 0; v < vm->nr_vcpus; v++)
		c[v] = tg_status(vm, v)->counter;
}

/* 0 when the memory checks out and the counters went on from min. */
static int verify(struct vm *vm, const uint64_t *min, char *why, size_t len)
{
	struct vm_verify_report rep;
	int ret = vm_memtouch_verify(vm, &(struct vm_verify_opts){ .min_counter = min }, &rep);

	snprintf(why, len, "%s", rep.msg);
	return ret;
}

static struct vm *boot(uint64_t rate)
{
	struct vm *vm = tg_boot(&(struct tg_opts){ .mem = 256 << 20, .vcpus = 2,
						   .working_set = 64 << 20, .dirty_rate = rate });

	CHECK_EQ(vm_start(vm), 0);
	tg_sleep_ms(300);
	return vm;
}

struct outcome {
	int ret;
	struct mig_stats st;
	uint64_t at_switch[2];		/* counters when the source stopped */
};

/* Migrate src with p over a rig; the destination's guest in g->vm. */
static void run(struct vm *src, struct rig *g, unsigned nr_data, struct mig_params *p,
		struct mig_progress *prog, struct outcome *out)
{
	rig_start(g, nr_data, p);
	out->ret = mig_source_run(src, g->control.src, p, prog);
	mig_progress_get(prog, &out->st);
	counters_of(src, out->at_switch);
	rig_finish(g);
}

/* The checks every post-copy case makes of the guest that arrived, in
 * why when one fails: memory intact, counters never back, and (rate) the
 * guest goes on there. */
static int arrival_problem(struct vm *vm, const struct outcome *o, uint64_t rate, char *why,
			   size_t len)
{
	tg_sleep_ms(300);
	if (vm_pause(vm)) {
		snprintf(why, len, "cannot pause the arrived guest");
		return -1;
	}
	if (verify(vm, o->at_switch, why, len))
		return -1;
	for (unsigned v = 0; rate && v < 2; v++)
		if (tg_status(vm, v)->counter <= o->at_switch[v]) {
			snprintf(why, len, "vCPU %u did not continue on the destination", v);
			return -1;
		}
	return 0;
}

static void check_arrived(struct rig *g, struct vm *src, const struct outcome *o, uint64_t rate)
{
	char why[256];

	CHECK_MSG(o->ret == 0, "migration failed: %s", o->st.error);
	CHECK_EQ(o->st.status, MIG_COMPLETED);
	CHECK_MSG(g->vm, "destination: %s", g->err);
	vm_destroy(src);
	CHECK_MSG(arrival_problem(g->vm, o, rate, why, sizeof(why)) == 0, "%s", why);
	vm_destroy(g->vm);
}

static void postcopy_case(enum mig_postcopy mode, unsigned after, unsigned nr_data,
			  uint64_t rate, uint64_t cap)
{
	struct vm *src = boot(rate);
	struct mig_params p;
	struct mig_progress prog;
	struct outcome o;
	struct rig g;

	mig_params_default(&p);
	p.postcopy = mode;
	p.postcopy_after = after;
	p.max_downtime_ms = MIG_MIN_DOWNTIME_MS;	/* pre-copy alone does not finish */
	p.bandwidth = cap;
	mig_progress_init(&prog);
	run(src, &g, nr_data, &p, &prog, &o);
	CHECK_MSG(o.st.downtime_bytes > 0, "no switch to post-copy: %s, %u rounds, downtime %llu ms, %llu bytes", mig_status_name(o.st.status), o.st.round, (unsigned long long)o.st.downtime_ms, (unsigned long long)o.st.transferred_bytes);
	if (mode == MIG_POSTCOPY_PURE)
		CHECK_MSG(o.st.postcopy_bytes > (8u << 20), "only %llu bytes after the switch",
			  (unsigned long long)o.st.postcopy_bytes);
	if (mode == MIG_POSTCOPY_PURE)
		CHECK_MSG(o.st.precopy_bytes < (8u << 20), "pure post-copy sent %llu bytes first",
			  (unsigned long long)o.st.precopy_bytes);
	if (mode == MIG_POSTCOPY_AFTER)
		CHECK_EQ(o.st.round, after);	/* pre-copy rounds before the switch */
	check_arrived(&g, src, &o, rate);
}

TEST_T(pure_postcopy_of_a_dirtying_guest, 120)
{
	postcopy_case(MIG_POSTCOPY_PURE, 0, 0, 200 << 20, 100 << 20);
}

/* Capped: uncapped, a loaded machine that starves the guest's vCPUs
 * lets its few dirty pages fit even the least downtime, and pre-copy
 * rightly finishes without the switch. */
TEST_T(hybrid_postcopy_after_two_rounds_over_two_data_channels, 120)
{
	postcopy_case(MIG_POSTCOPY_AFTER, 2, 2, 200 << 20, 100 << 20);
}

TEST_T(auto_postcopy_when_rounds_stop_shrinking, 120)
{
	postcopy_case(MIG_POSTCOPY_AUTO, 0, 1, 300 << 20, 60 << 20);
}

/* Pure post-copy with the background push capped at cap bytes/s. */
static void pure_params(struct mig_params *p, struct mig_progress *prog, uint64_t cap)
{
	mig_params_default(p);
	p->postcopy = MIG_POSTCOPY_PURE;
	p->bandwidth = cap;
	mig_progress_init(prog);
}

/* The guest asks for pages it touches: some of them went on the fault
 * channel, answered ahead of the capped push. */
TEST_T(first_touches_are_asked_for_and_answered, 120)
{
	struct vm *src = boot(200 << 20);
	struct mig_params p;
	struct mig_progress prog;
	struct outcome o;
	struct rig g;

	pure_params(&p, &prog, 40 << 20);	/* 256 MiB: seconds of post-copy */
	run(src, &g, 0, &p, &prog, &o);
	CHECK_MSG(o.st.postcopy_requests > 0, "no page was asked for");
	CHECK(o.st.fault_p99_ms >= o.st.fault_p50_ms);
	check_arrived(&g, src, &o, 200 << 20);
}

/* Something done to a migration once post-copy moved after_bytes: every
 * link cut (cut), or a cancel. */
struct meddler {
	struct rig *g;
	struct mig_progress *prog;
	uint64_t after_bytes;
	bool cut;
	bool done;
	pthread_t thread;
};

static void *meddle_main(void *arg)
{
	struct meddler *m = arg;

	for (int i = 0; i < 3000; i++) {
		struct mig_stats st;

		mig_progress_get(m->prog, &st);
		if (st.status == MIG_POSTCOPY_ACTIVE && st.postcopy_bytes >= m->after_bytes) {
			if (m->cut) {
				shutdown(xport_fd(m->g->control.src), SHUT_RDWR);
				shutdown(xport_fd(m->g->fault.src), SHUT_RDWR);
				for (unsigned k = 0; k < m->g->nr_data; k++)
					shutdown(xport_fd(m->g->data[k].src), SHUT_RDWR);
			} else {
				atomic_store(&m->prog->cancel, true);
			}
			m->done = true;
			return NULL;
		}
		if (st.status == MIG_COMPLETED || st.status == MIG_FAILED)
			return NULL;
		tg_sleep_ms(5);
	}
	return NULL;
}

/* Pure post-copy of src, the links cut 4 MiB into it; the destination's
 * reconnect gets new links when may_recover, else it gives up. */
static void cut_case(struct vm *src, unsigned nr_data, bool may_recover, struct rig *g,
		     struct outcome *o)
{
	struct mig_params p;
	struct mig_progress prog;
	struct meddler m;

	pure_params(&p, &prog, 60 << 20);
	setenv("VMIGRATE_FAULT", "src-postcopy-slow-push", 1);	/* time to cut */
	rig_start(g, nr_data, &p);
	g->recoveries_allowed = may_recover;
	g->dst_deny = !may_recover;
	m = (struct meddler){ .g = g, .prog = &prog, .after_bytes = 4u << 20, .cut = true };
	CHECK(pthread_create(&m.thread, NULL, meddle_main, &m) == 0);
	o->ret = mig_source_run(src, g->control.src, &p, &prog);
	unsetenv("VMIGRATE_FAULT");
	pthread_join(m.thread, NULL);
	mig_progress_get(&prog, &o->st);
	counters_of(src, o->at_switch);
	rig_finish(g);
	CHECK_MSG(m.done, "the links were not cut during post-copy");
}

/* Cut every link in the middle of the push: both ends pause, then the
 * new links carry on from what the destination lacks. */
TEST_T(link_cut_during_postcopy_pauses_then_recovers, 120)
{
	struct vm *src = boot(200 << 20);
	struct outcome o;
	struct rig g;

	cut_case(src, 1, true, &g, &o);
	CHECK_EQ(o.st.recoveries, 1u);
	CHECK_EQ(g.dst_st.recoveries, 1u);
	/* what arrived before the cut is not sent again: well under 2x RAM */
	CHECK_MSG(o.st.transferred_bytes < (256u << 20) + (96u << 20),
		  "%llu bytes for a 256 MiB guest", (unsigned long long)o.st.transferred_bytes);
	check_arrived(&g, src, &o, 200 << 20);
}

/* The destination gives up (its host lost, say): the source must not
 * resume its stale copy; the guest is lost in flight, said plainly. */
TEST_T(destination_lost_during_postcopy_leaves_source_paused, 120)
{
	struct vm *src = boot(200 << 20);
	struct outcome o;
	uint64_t later[2];
	struct rig g;

	cut_case(src, 0, false, &g, &o);
	CHECK_EQ(o.ret, -ENOLINK);
	CHECK_EQ(o.st.status, MIG_LOST);
	CHECK_MSG(strstr(o.st.error, "lost in flight"), "error: %s", o.st.error);
	CHECK_MSG(!g.vm, "the destination kept a guest with pages missing");
	tg_sleep_ms(300);
	counters_of(src, later);
	for (unsigned v = 0; v < 2; v++)
		CHECK_MSG(later[v] == o.at_switch[v], "the source's stale copy ran on");
	vm_destroy(src);
}

/* Once the guest runs there, cancel cannot bring it back: it is ignored. */
TEST_T(cancel_after_the_switch_changes_nothing, 120)
{
	struct vm *src = boot(100 << 20);
	struct mig_params p;
	struct mig_progress prog;
	struct meddler m;
	struct outcome o;
	struct rig g;

	pure_params(&p, &prog, 60 << 20);
	m = (struct meddler){ .g = &g, .prog = &prog };
	CHECK(pthread_create(&m.thread, NULL, meddle_main, &m) == 0);
	run(src, &g, 0, &p, &prog, &o);
	pthread_join(m.thread, NULL);
	CHECK_MSG(m.done, "no cancel during post-copy");
	check_arrived(&g, src, &o, 100 << 20);
}

/* The check above is able to fail: a destination that maps a zero page
 * for an owed page instead of waiting gets caught by it. */
TEST_T(a_zero_page_instead_of_waiting_is_caught, 120)
{
	struct vm *src;
	struct mig_params p;
	struct mig_progress prog;
	struct outcome o;
	struct rig g;
	char why[256];

	setenv("VMIGRATE_FAULT", "dst-postcopy-zero-page", 1);
	src = boot(200 << 20);
	pure_params(&p, &prog, 60 << 20);
	run(src, &g, 0, &p, &prog, &o);
	unsetenv("VMIGRATE_FAULT");
	CHECK_MSG(o.ret == 0 && g.vm, "migration failed: %s / %s", o.st.error, g.err);
	vm_destroy(src);
	CHECK_MSG(arrival_problem(g.vm, &o, 200 << 20, why, sizeof(why)) != 0,
		  "zero pages reached the guest and the checks did not notice");
	vm_destroy(g.vm);
}

/* POSTCOPY records come from another host: each malformed one is refused
 * with a reason, a good one adds its bits, records of a region add up. */
static int owed_record(struct postcopy_dst *d, uint32_t region_id, unsigned instance,
		       uint32_t version, uint64_t first, uint64_t count, size_t words,
		       uint64_t last_word, char *err, size_t errlen)
{
	uint8_t buf[sizeof(struct ckpt_postcopy_rec) + 2048 * 8] = { 0 };
	struct ckpt_postcopy_rec h = { .region_id = htole32(region_id),
				       .first_page = htole64(first), .count = htole64(count) };
	struct ckpt_record rec = { .type = CKPT_REC_STATE };
	uint64_t w = htole64(last_word);

	memcpy(buf, &h, sizeof(h));
	if (words)
		memcpy(buf + sizeof(h) + (words - 1) * 8, &w, 8);
	rec.u.state.kind = CKPT_STATE_POSTCOPY;
	rec.u.state.instance = instance;
	rec.u.state.version = version;
	rec.u.state.data = buf;
	rec.u.state.len = sizeof(h) + words * 8;
	return postcopy_dst_owed(d, &rec, err, errlen);
}

TEST(malformed_postcopy_records_are_refused)
{
	struct vm *vm = tg_boot(&(struct tg_opts){ .mem = 64 << 20, .vcpus = 1 });
	struct ckpt_image_info info;
	struct postcopy_dst *d;
	uint64_t pages = vm->regions[0].size / VM_PAGE_SIZE, words = (pages + 63) / 64;
	uint32_t id = vm->regions[0].id;
	char err[256];

	CHECK(words <= 2048);
	vm_image_info(vm, &info);
	d = postcopy_dst_new(vm, &info);
	CHECK(d != NULL);
	CHECK_EQ(owed_record(d, id, 0, 2, 0, pages, words, 1, err, sizeof(err)), -EBADMSG);
	CHECK_EQ(owed_record(d, id + 1, 0, 1, 0, pages, words, 1, err, sizeof(err)), -EBADMSG);
	CHECK_EQ(owed_record(d, id, 9, 1, 0, pages, words, 1, err, sizeof(err)), -EBADMSG);
	CHECK_EQ(owed_record(d, id, 0, 1, 1, pages, words, 1, err, sizeof(err)), -EBADMSG);
	CHECK_EQ(owed_record(d, id, 0, 1, 0, pages + 1, words, 1, err, sizeof(err)), -EBADMSG);
	CHECK_EQ(owed_record(d, id, 0, 1, 0, pages, words - 1, 1, err, sizeof(err)), -EBADMSG);
	CHECK_MSG(strstr(err, "bytes"), "a short bitmap's reason: %s", err);
	CHECK_EQ(owed_record(d, id, 0, 1, 0, pages, 0, 0, err, sizeof(err)), -EBADMSG);
	if (pages % 64)	/* a bit past the region's last page */
		CHECK_EQ(owed_record(d, id, 0, 1, 0, pages, words, ~0ull, err, sizeof(err)),
			 -EBADMSG);
	CHECK_EQ(owed_record(d, id, 0, 1, 0, pages, words, 1, err, sizeof(err)), 0);
	CHECK_EQ(owed_record(d, id, 0, 1, 0, pages, words, 3, err, sizeof(err)), 0);
	postcopy_dst_free(d);
	vm_destroy(vm);
}
