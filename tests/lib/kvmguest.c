/*
 * Test guests on /dev/kvm.
 */
#include "kvmguest.h"

#include <time.h>

#include "harness.h"

void tg_require_kvm(void)
{
	char why[256];

	if (!vm_kvm_available(why, sizeof(why)))
		SKIP("%s", why);
}

struct vm *tg_boot(const struct tg_opts *o)
{
	struct vm_memtouch_opts mt = {
		.working_set = o->working_set ? o->working_set : 16ull << 20,
		.dirty_rate = o->dirty_rate,
		.content = o->content,
		.seed = 7,
		.fill_first = !o->no_fill,
		.stop_after = o->stop_after,
	};
	struct vm_kvm_config cfg = {
		.name = "test",
		.mem_bytes = o->mem ? o->mem : 128ull << 20,
		.nr_vcpus = o->vcpus ? o->vcpus : 1,
		.dirty_mode = o->dirty_mode,
	};
	char err[256];
	struct vm *vm;

	tg_require_kvm();
	cfg.payload = vm_payload_find("memtouch", &cfg.payload_size);
	CHECK(cfg.payload);
	CHECK_MSG(vm_memtouch_args(&mt, cfg.mem_bytes, cfg.args, err, sizeof(err)) == 0, "%s", err);
	vm = vm_kvm_create(&cfg, err, sizeof(err));
	CHECK_MSG(vm, "vm_kvm_create: %s", err);
	return vm;
}

void *tg_gpa(const struct vm *vm, uint64_t gpa)
{
	for (unsigned i = 0; i < vm->nr_regions; i++) {
		const struct vm_region *r = &vm->regions[i];

		if (gpa >= r->gpa && gpa < r->gpa + r->size)
			return r->host + (gpa - r->gpa);
	}
	return NULL;
}

const struct vmg_vcpu_status *tg_status(const struct vm *vm, unsigned vcpu)
{
	return (const struct vmg_vcpu_status *)tg_gpa(vm, VMG_STATUS_GPA) + vcpu;
}

uint64_t tg_total(const struct vm *vm)
{
	return vm_memtouch_total(vm);
}

void tg_sleep_ms(unsigned ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts))
		;
}

double tg_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}
