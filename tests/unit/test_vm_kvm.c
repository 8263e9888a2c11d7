/*
 * The kvm micro-VM with the memtouch payload: it runs and progresses on 1
 * and 4 vCPUs, pauses and resumes, reports exactly the pages the guest
 * wrote as dirty (bitmap and ring), saves and restores its state (in this
 * process and in a new one) with memory intact and the counter and TSC
 * continuing, and refuses bad images. The verifier itself must catch
 * corruption, or none of this proves anything.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "guest_ram.h"
#include "harness.h"
#include "kvmguest.h"
#include "snapshot.h"
#include "testdata.h"

static void verify_ok(struct vm *vm, const uint64_t *min)
{
	struct vm_verify_report rep;
	struct vm_verify_opts o = { .min_counter = min };

	CHECK_MSG(vm_memtouch_verify(vm, &o, &rep) == 0, "verify: %s", rep.msg);
	CHECK(rep.pages_checked > 0);
}

TEST(guest_runs_and_progresses)
{
	struct vm *vm = tg_boot(&(struct tg_opts){ .working_set = 8 << 20 });

	CHECK_EQ(vm_start(vm), 0);
	tg_sleep_ms(300);
	CHECK_EQ(vm_pause(vm), 0);
	CHECK_MSG(tg_total(vm) > 1000, "only %llu page writes in 300 ms",
		  (unsigned long long)tg_total(vm));
	CHECK(tg_status(vm, 0)->passes > 0);	/* the guest re-checked itself */
	verify_ok(vm, NULL);
	vm_destroy(vm);
}

TEST(four_vcpus_all_progress)
{
	struct vm *vm = tg_boot(&(struct tg_opts){ .vcpus = 4, .working_set = 16 << 20 });

	CHECK_EQ(vm_start(vm), 0);
	tg_sleep_ms(400);
	CHECK_EQ(vm_pause(vm), 0);
	for (unsigned v = 0; v < 4; v++)
		CHECK_MSG(tg_status(vm, v)->counter > 0, "vCPU %u did nothing", v);
	verify_ok(vm, NULL);
	vm_destroy(vm);
}

TEST(pause_stops_every_vcpu_and_resume_continues)
{
	struct vm *vm = tg_boot(&(struct tg_opts){ .vcpus = 2, .working_set = 16 << 20 });
	uint64_t a, b, c;

	CHECK_EQ(vm_start(vm), 0);
	tg_sleep_ms(100);
	for (int round = 0; round < 20; round++) {
		CHECK_EQ(vm_pause(vm), 0);
		a = tg_total(vm);
		tg_sleep_ms(20);
		b = tg_total(vm);
		CHECK_MSG(a == b, "guest ran while paused: %llu -> %llu",
			  (unsigned long long)a, (unsigned long long)b);
		verify_ok(vm, NULL);
		CHECK_EQ(vm_resume(vm), 0);
		tg_sleep_ms(10);
	}
	tg_sleep_ms(50);
	CHECK_EQ(vm_pause(vm), 0);
	c = tg_total(vm);
	CHECK(c > b);
	vm_destroy(vm);
}

/* Pages written by writes [from, to) of one vCPU, as working-set indices. */
static void mark_written(const struct vm *vm, unsigned v, uint64_t from, uint64_t to,
			 uint8_t *want)
{
	const struct vmg_boot_params *bp = tg_gpa(vm, VMG_BOOT_GPA);
	uint64_t ws = bp->arg[MT_ARG_WS_PAGES];
	uint64_t first = mt_slice_first(ws, bp->nr_vcpus, v);
	uint64_t n = mt_slice_pages(ws, bp->nr_vcpus, v);

	for (uint64_t k = from; k < to && k < from + n; k++)
		want[first + k % n] = 1;
}

static void dirty_log_accuracy(enum vm_dirty_mode mode)
{
	struct vm *vm = tg_boot(&(struct tg_opts){ .vcpus = 2, .working_set = 32 << 20,
						   .dirty_rate = 40 << 20, .dirty_mode = mode,
						   .no_fill = true });
	const struct vm_region *r = &vm->regions[0];
	size_t words = vm_bitmap_bytes(r) / 8;
	uint64_t *bm = calloc(words, 8);
	uint64_t before[2], after[2], ws_first_page = VMG_FREE_GPA / VM_PAGE_SIZE;
	uint8_t *want = calloc(8192, 1);
	unsigned missing = 0, wanted = 0;

	CHECK_EQ(vm->ops->dirty_start(vm), 0);
	CHECK_EQ(vm_start(vm), 0);
	tg_sleep_ms(100);
	/* Drain: everything dirty so far is fetched and re-armed. */
	CHECK_EQ(vm_pause(vm), 0);
	CHECK_EQ(vm->ops->dirty_sync(vm, 0, bm), 0);
	CHECK_EQ(vm->ops->dirty_clear(vm, 0, 0, r->size / VM_PAGE_SIZE, bm), 0);
	memset(bm, 0, words * 8);
	before[0] = tg_status(vm, 0)->counter;
	before[1] = tg_status(vm, 1)->counter;
	CHECK_EQ(vm_resume(vm), 0);
	tg_sleep_ms(150);
	CHECK_EQ(vm_pause(vm), 0);
	after[0] = tg_status(vm, 0)->counter;
	after[1] = tg_status(vm, 1)->counter;
	CHECK_EQ(vm->ops->dirty_sync(vm, 0, bm), 0);

	/* Every page written wholly inside the interval must be reported.
	 * Writes `before` and `after` may have been cut by a pause on either
	 * side of their stores, so they may or may not show. */
	for (unsigned v = 0; v < 2; v++)
		mark_written(vm, v, before[v] + 1, after[v], want);
	for (uint64_t p = 0; p < 8192; p++) {
		uint64_t page = ws_first_page + p;

		if (!want[p])
			continue;
		wanted++;
		if (!(bm[page / 64] & (1ull << (page % 64))))
			missing++;
	}
	CHECK_MSG(wanted > 100, "guest wrote only %u pages", wanted);
	CHECK_MSG(missing == 0, "%u of %u written pages not reported dirty", missing, wanted);
	/* And the log is not simply all ones: untouched working-set pages far
	 * from the write front stay clean. */
	{
		uint64_t clean = 0;

		for (uint64_t p = 0; p < 8192; p++) {
			uint64_t page = ws_first_page + p;

			clean += !want[p] && !(bm[page / 64] & (1ull << (page % 64)));
		}
		CHECK_MSG(clean > 4096, "only %llu clean pages", (unsigned long long)clean);
	}
	CHECK_EQ(vm->ops->dirty_stop(vm), 0);
	free(bm);
	free(want);
	vm_destroy(vm);
}

TEST(dirty_bitmap_reports_every_written_page)
{
	dirty_log_accuracy(VM_DIRTY_BITMAP);
}

TEST(dirty_ring_reports_every_written_page)
{
	dirty_log_accuracy(VM_DIRTY_RING);
}

/* Copy the pages [first, first + n) of r that bm names; returns how many. */
static uint64_t copy_dirty(uint8_t *copy, const struct vm_region *r, const uint64_t *bm,
			   uint64_t first, uint64_t n)
{
	uint64_t copied = 0;

	for (uint64_t p = first; p < first + n; p++)
		if (bm[p / 64] & (1ull << (p % 64))) {
			memcpy(copy + p * VM_PAGE_SIZE, r->host + p * VM_PAGE_SIZE, VM_PAGE_SIZE);
			copied++;
		}
	return copied;
}

/* Pages where copy and r's memory differ; the first in *first_bad. */
static uint64_t pages_differing(const uint8_t *copy, const struct vm_region *r,
				uint64_t *first_bad)
{
	uint64_t differ = 0;

	for (uint64_t p = 0; p < r->size / VM_PAGE_SIZE; p++)
		if (memcmp(copy + p * VM_PAGE_SIZE, r->host + p * VM_PAGE_SIZE, VM_PAGE_SIZE) &&
		    !differ++)
			*first_bad = p;
	return differ;
}

/*
 * The cycle replication's epochs rely on: pause, fetch and re-arm the
 * dirty log, copy what it names, resume. An unpaced guest is stopped in
 * the middle of a page nearly every time, so the stores that finish the
 * page come after the re-arm: they must show in the next fetch. A copy
 * kept that way must equal the guest's RAM at the end, every page of it.
 */
static void epochs_lose_no_write(enum vm_dirty_mode mode)
{
	struct vm *vm = tg_boot(&(struct tg_opts){ .vcpus = 2, .working_set = 4 << 20,
						   .dirty_mode = mode, .no_fill = true });
	const struct vm_region *r = &vm->regions[0];
	uint64_t pages = r->size / VM_PAGE_SIZE, words = vm_bitmap_bytes(r) / 8;
	uint64_t *bm = calloc(words, 8), differ = 0, first_bad = 0, copied = 0;
	uint8_t *copy = malloc(r->size);
	const char *env = getenv("VMIGRATE_EPOCH_CYCLES");
	unsigned cycles = env ? (unsigned)atoi(env) : 400;

	CHECK(bm && copy);
	CHECK_EQ(vm->ops->dirty_start(vm), 0);
	CHECK_EQ(vm_start(vm), 0);
	tg_sleep_ms(20);
	CHECK_EQ(vm_pause(vm), 0);
	/* the base: all of RAM, with every page re-armed */
	CHECK_EQ(vm->ops->dirty_sync(vm, 0, bm), 0);
	memset(bm, 0xff, words * 8);
	CHECK_EQ(vm->ops->dirty_clear(vm, 0, 0, pages, bm), 0);
	memcpy(copy, r->host, r->size);
	for (unsigned c = 0; c < cycles; c++) {
		struct timespec ts = { 0, (long)(random() % 2000) * 1000 };

		CHECK_EQ(vm_resume(vm), 0);
		nanosleep(&ts, NULL);
		CHECK_EQ(vm_pause(vm), 0);
		memset(bm, 0, words * 8);
		CHECK_EQ(vm->ops->dirty_sync(vm, 0, bm), 0);
		CHECK_EQ(vm->ops->dirty_clear(vm, 0, 0, pages, bm), 0);
		copied += copy_dirty(copy, r, bm, 0, pages);
	}
	differ = pages_differing(copy, r, &first_bad);
	CHECK_MSG(copied > cycles, "only %llu pages copied in %u cycles",
		  (unsigned long long)copied, cycles);
	CHECK_MSG(!differ, "%llu page(s) changed without showing in the dirty log over %u "
		  "cycles (first: page %llu, gpa %#llx; counter %llu)", (unsigned long long)differ,
		  cycles, (unsigned long long)first_bad,
		  (unsigned long long)(r->gpa + first_bad * VM_PAGE_SIZE),
		  (unsigned long long)tg_total(vm));
	CHECK_EQ(vm->ops->dirty_stop(vm), 0);
	free(bm);
	free(copy);
	vm_destroy(vm);
}

TEST(epochs_bitmap_lose_no_write)
{
	epochs_lose_no_write(VM_DIRTY_BITMAP);
}

TEST(epochs_ring_lose_no_write)
{
	epochs_lose_no_write(VM_DIRTY_RING);
}

/*
 * Pre-copy's cycle with the vCPUs running, on a guest whose RAM was mapped
 * (in huge pages, where the host gives them) before tracking began: fetch
 * the log, re-arm a chunk, copy what it named, the next chunk; a last
 * fetch with the guest paused. The copy must then equal the guest's RAM.
 * A small working set, so that pages the log named are written again
 * while their chunk is in hand (a copy made before the re-arm loses them:
 * about 40 pages a run here with the bitmap; the ring re-arms at the fetch, so
 * there it checks the harvest instead).
 */
static void live_rounds_lose_no_write(enum vm_dirty_mode mode)
{
	struct vm *vm = tg_boot(&(struct tg_opts){ .vcpus = 2, .working_set = 256 << 10,
						   .dirty_mode = mode, .no_fill = true });
	const struct vm_region *r = &vm->regions[0];
	uint64_t pages = r->size / VM_PAGE_SIZE, words = vm_bitmap_bytes(r) / 8;
	uint64_t *bm = calloc(words, 8), differ = 0, first_bad = 0, copied = 0;
	uint8_t *copy = calloc(1, r->size);
	const unsigned rounds = 20;
	char how[160];
	uint64_t wrote;

	CHECK(bm && copy);
	CHECK_EQ(vm_start(vm), 0);
	tg_sleep_ms(300);
	CHECK_EQ(vm->ops->dirty_start(vm), 0);
	wrote = tg_total(vm);
	for (unsigned c = 0; c <= rounds; c++) {
		if (c == rounds)
			CHECK_EQ(vm_pause(vm), 0);
		else if (c)
			usleep(2000);	/* a round's worth of writes, however fast the last was */
		memset(bm, 0, words * 8);
		CHECK_EQ(vm->ops->dirty_sync(vm, 0, bm), 0);
		/* downwards, so the status page (written at every page) is last */
		for (uint64_t w = (pages + 63) / 64; w-- > 0;) {
			uint64_t first = w * 64, n = pages - first < 64 ? pages - first : 64;

			if (!bm[w])
				continue;
			CHECK_EQ(vm->ops->dirty_clear(vm, 0, first, n, bm), 0);
			usleep(100);	/* a chunk's send: the guest writes on */
			copied += copy_dirty(copy, r, bm, first, n);
		}
	}
	differ = pages_differing(copy, r, &first_bad);
	guest_ram_huge(how, sizeof(how));
	printf("# %llu pages copied in %u rounds, the guest wrote %llu; its RAM on %s\n",
	       (unsigned long long)copied, rounds, (unsigned long long)(tg_total(vm) - wrote), how);
	CHECK_MSG(copied > pages + rounds, "only %llu pages copied", (unsigned long long)copied);
	CHECK_MSG(!differ, "%llu page(s) changed without showing in the dirty log over %u "
		  "rounds (first: page %llu)", (unsigned long long)differ, rounds,
		  (unsigned long long)first_bad);
	CHECK_EQ(vm->ops->dirty_stop(vm), 0);
	free(bm);
	free(copy);
	vm_destroy(vm);
}

TEST(live_rounds_bitmap_lose_no_write)
{
	live_rounds_lose_no_write(VM_DIRTY_BITMAP);
}

TEST(live_rounds_ring_lose_no_write)
{
	live_rounds_lose_no_write(VM_DIRTY_RING);
}

/* Tracking switched on and off under running vCPUs (a checkpoint, a
 * migration's start and end) loses none of their writes. */
TEST(dirty_tracking_toggled_under_running_vcpus)
{
	struct vm *vm = tg_boot(&(struct tg_opts){ .vcpus = 2, .working_set = 4 << 20,
						   .no_fill = true });
	const char *env = getenv("VMIGRATE_EPOCH_CYCLES");
	unsigned cycles = env ? (unsigned)atoi(env) : 400;

	CHECK_EQ(vm_start(vm), 0);
	tg_sleep_ms(20);
	for (unsigned c = 0; c < cycles; c++) {
		CHECK_EQ(vm->ops->dirty_start(vm), 0);
		usleep(500);
		CHECK_EQ(vm->ops->dirty_stop(vm), 0);
		usleep(500);
	}
	CHECK_EQ(vm_pause(vm), 0);
	verify_ok(vm, NULL);
	vm_destroy(vm);
}

static const char *tmpfile_path(const char *name)
{
	static char path[4200];

	snprintf(path, sizeof(path), "%s/%s", test_tmpdir(), name);
	return path;
}

/* Run a memtouch guest for ms, pause, save; returns the paused vm. */
static struct vm *run_and_save(unsigned vcpus, unsigned ms, const char *path,
			       uint64_t *counters)
{
	struct vm *vm = tg_boot(&(struct tg_opts){ .vcpus = vcpus, .working_set = 16 << 20,
						   .dirty_rate = 100 << 20 });
	struct snap_result res;
	char err[512];

	CHECK_EQ(vm_start(vm), 0);
	tg_sleep_ms(ms);
	CHECK_EQ(vm_pause(vm), 0);
	verify_ok(vm, NULL);
	for (unsigned v = 0; v < vcpus; v++)
		counters[v] = tg_status(vm, v)->counter;
	CHECK_MSG(snap_save_paused(vm, path, NULL, &res, err, sizeof(err)) == 0, "%s", err);
	CHECK(res.file_bytes > 0);
	return vm;
}

TEST(state_round_trip_continues_memory_counter_and_tsc)
{
	const char *path = tmpfile_path("guest.ckpt");
	uint64_t counters[4], hb[4];
	struct snap_restore_opts ro = { 0 };
	struct vm *vm = run_and_save(4, 300, path, counters), *back;
	char err[512];

	for (unsigned v = 0; v < 4; v++)
		hb[v] = tg_status(vm, v)->heartbeat;
	vm_destroy(vm);

	back = snap_restore(path, &ro, err, sizeof(err));
	CHECK_MSG(back, "restore: %s", err);
	CHECK_EQ(back->nr_vcpus, 4);
	verify_ok(back, counters);
	for (unsigned v = 0; v < 4; v++)
		CHECK_EQ(tg_status(back, v)->counter, counters[v]);
	CHECK_EQ(vm_resume(back), 0);
	tg_sleep_ms(300);
	CHECK_EQ(vm_pause(back), 0);
	verify_ok(back, counters);
	for (unsigned v = 0; v < 4; v++) {
		const struct vmg_vcpu_status *st = tg_status(back, v);

		CHECK_MSG(st->counter > counters[v], "vCPU %u did not continue", v);
		/* Guest time continued from where it stopped: later than before,
		 * but not by the wall-clock time the guest spent saved. */
		CHECK_MSG(st->heartbeat > hb[v], "vCPU %u TSC went back", v);
	}
	vm_destroy(back);
}

static double process_cpu_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* A vCPU whose guest finished is parked by the VMM, its registers left in
 * the payload's last loop (a PAUSE spin). Restored elsewhere it must stay
 * parked: run, it would spin on a core for ever. A spinning vCPU costs a
 * whole core (hundreds of ms in the window), a parked one nothing. */
TEST(finished_vcpus_stay_parked_after_restore)
{
	const char *path = tmpfile_path("finished.ckpt");
	struct vm *vm = tg_boot(&(struct tg_opts){ .vcpus = 2, .working_set = 16 << 20,
						   .stop_after = 64 });
	struct snap_restore_opts ro = { 0 };
	struct snap_result res;
	double cpu;
	char err[512];

	CHECK_EQ(vm_start(vm), 0);
	for (int i = 0; i < 200 && tg_total(vm) < 128; i++)
		tg_sleep_ms(10);
	CHECK_EQ(tg_total(vm), 128);
	tg_sleep_ms(50);		/* both report done and are parked */
	cpu = process_cpu_ms();
	tg_sleep_ms(300);
	CHECK_MSG(process_cpu_ms() - cpu < 100, "finished guest used %.0f ms of CPU",
		  process_cpu_ms() - cpu);
	CHECK_EQ(vm_pause(vm), 0);
	CHECK_MSG(snap_save_paused(vm, path, NULL, &res, err, sizeof(err)) == 0, "%s", err);
	vm_destroy(vm);

	vm = snap_restore(path, &ro, err, sizeof(err));
	CHECK_MSG(vm, "restore: %s", err);
	CHECK_EQ(vm_resume(vm), 0);
	cpu = process_cpu_ms();
	tg_sleep_ms(300);
	CHECK_MSG(process_cpu_ms() - cpu < 100, "restored finished guest used %.0f ms of CPU",
		  process_cpu_ms() - cpu);
	CHECK_EQ(tg_total(vm), 128);
	vm_destroy(vm);
}

TEST(restore_in_a_new_process)
{
	const char *path = tmpfile_path("guest.ckpt");
	uint64_t counters[2];
	struct vm *vm = run_and_save(2, 200, path, counters);
	char min[32], bin[4200];
	pid_t pid;
	int status;

	vm_destroy(vm);
	snprintf(min, sizeof(min), "%llu", (unsigned long long)(counters[0] + counters[1] + 1));
	snprintf(bin, sizeof(bin), "%s/vmigrate", getenv("VMIGRATE_BUILD") ?
		 getenv("VMIGRATE_BUILD") : "build");
	pid = fork();
	if (pid == 0) {
		int null = open("/dev/null", O_WRONLY);

		dup2(null, 1);
		dup2(null, 2);
		execl(bin, bin, "run", "--restore", path, "--duration", "0.3", "--verify",
		      "--expect-counter-at-least", min, "--quiet", (char *)NULL);
		_exit(127);
	}
	CHECK(pid > 0);
	CHECK(waitpid(pid, &status, 0) == pid);
	CHECK_MSG(WIFEXITED(status) && WEXITSTATUS(status) == 0,
		  "vmigrate run --restore exited with %d", WEXITSTATUS(status));
}

static uint8_t *slurp(const char *path, size_t *len)
{
	struct stat st;
	int fd = open(path, O_RDONLY);
	uint8_t *buf;

	CHECK(fd >= 0 && fstat(fd, &st) == 0);
	buf = malloc(st.st_size);
	CHECK(read(fd, buf, st.st_size) == st.st_size);
	close(fd);
	*len = st.st_size;
	return buf;
}

static void spit(const char *path, const uint8_t *buf, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);

	CHECK(fd >= 0 && write(fd, buf, len) == (ssize_t)len);
	close(fd);
}

static void expect_refused(const char *path, unsigned vcpus, const char *needle)
{
	struct snap_restore_opts ro = { .nr_vcpus = vcpus };
	char err[512] = "";
	struct vm *vm = snap_restore(path, &ro, err, sizeof(err));

	CHECK_MSG(!vm, "restore of a bad image succeeded");
	CHECK_MSG(strstr(err, needle), "error \"%s\" does not say \"%s\"", err, needle);
}

TEST(load_refuses_bad_images)
{
	const char *path = tmpfile_path("good.ckpt"), *bad = tmpfile_path("bad.ckpt");
	uint64_t counters[2];
	struct vm *vm = run_and_save(2, 100, path, counters);
	size_t len;
	uint8_t *img;

	vm_destroy(vm);
	img = slurp(path, &len);

	expect_refused(path, 3, "vCPU count mismatch");

	{
		/* a newer major version, with every checksum right */
		struct td_stream s;
		uint8_t *forged;
		size_t flen;

		CHECK_EQ(td_split(img, len, &s), 0);
		s.recs[0].payload[offsetof(struct ckpt_header_rec, major)] = 9;
		td_join(&s, 0, 0, &forged, &flen);
		spit(bad, forged, flen);
		expect_refused(bad, 0, "unsupported version");
		free(forged);
		td_stream_free(&s);
	}

	spit(bad, img, len / 2);
	expect_refused(bad, 0, "truncated");

	spit(bad, img, len - 1);
	expect_refused(bad, 0, "truncated");

	img[len / 2] ^= 0x10;
	spit(bad, img, len);
	expect_refused(bad, 0, "checksum");

	expect_refused(tmpfile_path("missing.ckpt"), 0, "No such file");
	free(img);
}

TEST(verifier_catches_corrupt_page_and_counter_going_back)
{
	struct vm *vm = tg_boot(&(struct tg_opts){ .working_set = 8 << 20 });
	struct vm_verify_report rep;
	uint64_t min[1];
	uint8_t *page;

	CHECK_EQ(vm_start(vm), 0);
	tg_sleep_ms(200);
	CHECK_EQ(vm_pause(vm), 0);
	verify_ok(vm, NULL);

	page = tg_gpa(vm, VMG_FREE_GPA + 100 * VM_PAGE_SIZE);
	page[2000] ^= 1;
	CHECK_EQ(vm_memtouch_verify(vm, NULL, &rep), -EBADMSG);
	CHECK_EQ(rep.bad_pages, 1);
	CHECK_EQ(rep.first_bad_gpa, VMG_FREE_GPA + 100 * VM_PAGE_SIZE);
	page[2000] ^= 1;
	verify_ok(vm, NULL);

	min[0] = tg_status(vm, 0)->counter + 1;
	CHECK_EQ(vm_memtouch_verify(vm, &(struct vm_verify_opts){ .min_counter = min }, &rep),
		 -EBADMSG);
	CHECK(strstr(rep.msg, "went back"));
	vm_destroy(vm);
}

static volatile int bad_events;

static void count_bad(void *opaque, unsigned vcpu, uint32_t code, uint32_t arg)
{
	if (code == VMG_EV_CHECK_BAD)
		__atomic_add_fetch(&bad_events, 1, __ATOMIC_RELAXED);
}

TEST(guest_self_check_reports_corruption)
{
	struct vm_memtouch_opts mt = { .working_set = 4 << 20, .dirty_rate = 20 << 20, .seed = 3 };
	struct vm_kvm_config cfg = { .name = "t", .mem_bytes = 64 << 20, .nr_vcpus = 1,
				     .events = { .guest_event = count_bad } };
	struct vm *vm;
	char err[256];
	uint8_t *ws;
	uint64_t pages = mt.working_set / VM_PAGE_SIZE;

	tg_require_kvm();
	cfg.payload = vm_payload_find("memtouch", &cfg.payload_size);
	CHECK_EQ(vm_memtouch_args(&mt, cfg.mem_bytes, cfg.args, err, sizeof(err)), 0);
	vm = vm_kvm_create(&cfg, err, sizeof(err));
	CHECK_MSG(vm, "%s", err);
	CHECK_EQ(vm_start(vm), 0);
	tg_sleep_ms(100);
	CHECK_EQ(vm_pause(vm), 0);
	/* Damage the page the guest will reach last in this pass. */
	ws = tg_gpa(vm, VMG_FREE_GPA);
	{
		uint64_t next = tg_status(vm, 0)->counter % pages;
		uint64_t victim = next ? next - 1 : pages - 1;

		CHECK(next != 0 || tg_status(vm, 0)->counter > 0);
		ws[victim * VM_PAGE_SIZE + 100] ^= 0xff;
	}
	CHECK_EQ(vm_resume(vm), 0);
	/* A pass takes about 50 ms at 20 MiB/s over 4 MiB. */
	for (int i = 0; i < 40 && !bad_events; i++)
		tg_sleep_ms(25);
	CHECK_EQ(vm_pause(vm), 0);
	CHECK_MSG(bad_events > 0, "the guest did not notice a damaged page");
	CHECK(tg_status(vm, 0)->check_errors > 0);
	vm_destroy(vm);
}

TEST(prefill_is_loaded_and_verified)
{
	const char *path = tmpfile_path("ram.img");
	struct vm *vm = tg_boot(&(struct tg_opts){ .working_set = 8 << 20 });
	uint8_t *img = malloc(16 << 20), *p;
	struct vm_verify_report rep;
	uint64_t loaded;
	char err[256];

	td_fill(img, 16 << 20, MIX_TEXT, 5);
	spit(path, img, 16 << 20);
	CHECK_MSG(vm_memtouch_prefill(vm, path, &loaded, err, sizeof(err)) == 0, "%s", err);
	CHECK_EQ(loaded, 16 << 20);
	CHECK_EQ(vm_start(vm), 0);
	tg_sleep_ms(100);
	CHECK_EQ(vm_pause(vm), 0);
	CHECK_MSG(vm_memtouch_verify(vm, &(struct vm_verify_opts){ .prefill = path }, &rep) == 0,
		  "%s", rep.msg);
	CHECK_EQ(rep.prefill_checked, 4096);
	p = tg_gpa(vm, VMG_FREE_GPA + (8 << 20) + 12345);
	CHECK(p && *p == img[12345]);
	*p ^= 1;
	CHECK_EQ(vm_memtouch_verify(vm, &(struct vm_verify_opts){ .prefill = path }, &rep),
		 -EBADMSG);
	CHECK_EQ(rep.prefill_bad, 1);
	free(img);
	vm_destroy(vm);
}

TEST(bad_configurations_are_refused)
{
	struct vm_kvm_config cfg = { .mem_bytes = 32 << 20, .nr_vcpus = 1 };
	char err[256];
	uint64_t args[16];
	struct vm_memtouch_opts mt = { .working_set = 1ull << 30 };

	tg_require_kvm();
	cfg.payload = vm_payload_find("memtouch", &cfg.payload_size);
	CHECK(!vm_kvm_create(&cfg, err, sizeof(err)));
	CHECK(strstr(err, "64 MiB"));
	cfg.mem_bytes = 64 << 20;
	cfg.nr_vcpus = 9;
	CHECK(!vm_kvm_create(&cfg, err, sizeof(err)));
	CHECK(strstr(err, "vCPUs"));
	CHECK_EQ(vm_memtouch_args(&mt, 256 << 20, args, err, sizeof(err)), -EINVAL);
	CHECK(strstr(err, "does not fit"));
}
