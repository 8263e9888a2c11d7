/*
 * Micro-VM benchmark: the dirty rate memtouch reaches, the cost of one
 * dirty sync (bitmap and ring) on 1 GiB and 4 GiB guests, and pause/resume
 * latency. Prints a table and one JSON line per measurement. Skips, saying
 * why, where /dev/kvm is missing.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "memtouch.h"
#include "timing.h"
#include "vm.h"

static struct vm *boot(uint64_t mem, unsigned vcpus, uint64_t ws, uint64_t rate,
		       enum mt_content content, enum vm_dirty_mode mode)
{
	struct vm_memtouch_opts mt = { .working_set = ws, .dirty_rate = rate,
				       .content = content, .seed = 1 };
	struct vm_kvm_config cfg = { .name = "bench", .mem_bytes = mem, .nr_vcpus = vcpus,
				     .dirty_mode = mode };
	char err[256];
	struct vm *vm;

	cfg.payload = vm_payload_find("memtouch", &cfg.payload_size);
	if (vm_memtouch_args(&mt, mem, cfg.args, err, sizeof(err)) ||
	    !(vm = vm_kvm_create(&cfg, err, sizeof(err)))) {
		fprintf(stderr, "bench_vm: %s\n", err);
		exit(1);
	}
	return vm;
}

static void dirty_rate(unsigned vcpus, enum mt_content content)
{
	struct vm *vm = boot(1ull << 30, vcpus, 256ull << 20, 0, content, VM_DIRTY_BITMAP);
	uint64_t a, b;
	double t0, t1;

	vm_start(vm);
	/* Past the first pass: first touches of guest RAM fault in the host. */
	t0 = tm_now();
	while (vm_memtouch_total(vm) < (256ull << 20) / 4096 + 1000 && tm_now() - t0 < 20)
		usleep(10000);
	a = vm_memtouch_total(vm);
	t0 = tm_now();
	usleep(1000000);
	b = vm_memtouch_total(vm);
	t1 = tm_now();
	vm_pause(vm);
	printf("{\"bench\":\"vm_dirty_rate\",\"vcpus\":%u,\"content\":\"%s\","
	       "\"mib_per_s\":%.0f}\n", vcpus,
	       content == MT_RANDOM ? "random" : content == MT_TEXT ? "text" : "zero-heavy",
	       (b - a) * 4096.0 / (t1 - t0) / (1 << 20));
	vm_destroy(vm);
}

static void sync_cost(uint64_t mem, enum vm_dirty_mode mode)
{
	struct vm *vm = boot(mem, 2, 256ull << 20, 100ull << 20, MT_RANDOM, mode);
	uint64_t *bm[VM_MAX_REGIONS];
	double sync[30], clear[30];
	int n = 30;

	for (unsigned r = 0; r < vm->nr_regions; r++)
		bm[r] = calloc(1, vm_bitmap_bytes(&vm->regions[r]));
	vm->ops->dirty_start(vm);
	vm_start(vm);
	for (int i = 0; i < n + 2; i++) {
		double t0, t1, t2;

		usleep(50000);
		t0 = tm_now();
		for (unsigned r = 0; r < vm->nr_regions; r++) {
			memset(bm[r], 0, vm_bitmap_bytes(&vm->regions[r]));
			vm->ops->dirty_sync(vm, r, bm[r]);
		}
		t1 = tm_now();
		for (unsigned r = 0; r < vm->nr_regions; r++)
			vm->ops->dirty_clear(vm, r, 0, vm->regions[r].size / VM_PAGE_SIZE, bm[r]);
		t2 = tm_now();
		if (i >= 2) {	/* the first syncs see all of RAM dirty */
			sync[i - 2] = (t1 - t0) * 1e3;
			clear[i - 2] = (t2 - t1) * 1e3;
		}
	}
	vm_pause(vm);
	qsort(sync, n, sizeof(double), tm_cmp_double);
	qsort(clear, n, sizeof(double), tm_cmp_double);
	printf("{\"bench\":\"vm_dirty_sync\",\"mode\":\"%s\",\"mem_gib\":%llu,"
	       "\"dirtying_mib_per_s\":100,\"sync_ms_min\":%.3f,\"sync_ms_median\":%.3f,"
	       "\"clear_ms_min\":%.3f,\"clear_ms_median\":%.3f}\n",
	       mode == VM_DIRTY_RING ? "ring" : "bitmap", (unsigned long long)(mem >> 30),
	       sync[0], sync[n / 2], clear[0], clear[n / 2]);
	vm->ops->dirty_stop(vm);
	for (unsigned r = 0; r < vm->nr_regions; r++)
		free(bm[r]);
	vm_destroy(vm);
}

static void pause_latency(unsigned vcpus)
{
	struct vm *vm = boot(256ull << 20, vcpus, 64ull << 20, 0, MT_RANDOM, VM_DIRTY_BITMAP);
	enum { N = 200 };
	double p[N], r[N];

	vm_start(vm);
	usleep(200000);
	for (int i = 0; i < N; i++) {
		double t0 = tm_now(), t1, t2;

		vm_pause(vm);
		t1 = tm_now();
		vm_resume(vm);
		t2 = tm_now();
		p[i] = (t1 - t0) * 1e6;
		r[i] = (t2 - t1) * 1e6;
		usleep(2000);
	}
	vm_pause(vm);
	qsort(p, N, sizeof(double), tm_cmp_double);
	qsort(r, N, sizeof(double), tm_cmp_double);
	printf("{\"bench\":\"vm_pause\",\"vcpus\":%u,\"pause_us_min\":%.0f,"
	       "\"pause_us_median\":%.0f,\"pause_us_p99\":%.0f,\"pause_us_max\":%.0f,"
	       "\"resume_us_median\":%.0f}\n", vcpus, p[0], p[N / 2], p[N * 99 / 100],
	       p[N - 1], r[N / 2]);
	vm_destroy(vm);
}

int main(void)
{
	char why[256];

	if (!vm_kvm_available(why, sizeof(why))) {
		printf("# bench_vm skipped: %s\n", why);
		return 0;
	}
	printf("# micro-VM benchmark (memtouch guest)\n");
	for (unsigned v = 1; v <= 4; v *= 2)
		dirty_rate(v, MT_RANDOM);
	dirty_rate(2, MT_TEXT);
	sync_cost(1ull << 30, VM_DIRTY_BITMAP);
	sync_cost(1ull << 30, VM_DIRTY_RING);
	sync_cost(4ull << 30, VM_DIRTY_BITMAP);
	sync_cost(4ull << 30, VM_DIRTY_RING);
	for (unsigned v = 1; v <= 4; v *= 2)
		pause_latency(v);
	return 0;
}
