/*
 * What the kvm backend needs of the host's KVM, asked without a guest (for
 * `vmigrate check`): the list below names, for each capability, the code
 * that relies on it. A capability added there belongs here too.
 */
#include "kvm_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

static const struct {
	long cap;
	const char *name, *used_for;
	bool required;
} features[] = {
	/* kvm_vm.c: memslots, set-up, CPUID, interrupt controllers, timer */
	{ KVM_CAP_USER_MEMORY, "USER_MEMORY", "guest RAM from a memfd", true },
	{ KVM_CAP_SET_TSS_ADDR, "SET_TSS_ADDR", "x86 set-up", true },
	{ KVM_CAP_EXT_CPUID, "EXT_CPUID", "the vCPUs' CPUID", true },
	{ KVM_CAP_IRQCHIP, "IRQCHIP", "in-kernel PIC and IOAPIC", true },
	{ KVM_CAP_PIT2, "PIT2", "the in-kernel timer", true },
	{ KVM_CAP_GET_TSC_KHZ, "GET_TSC_KHZ", "the TSC rate a checkpoint records", true },
	/* kvm_state.c: what a checkpoint or a migration carries */
	{ KVM_CAP_PIT_STATE2, "PIT_STATE2", "the timer's state", true },
	{ KVM_CAP_MP_STATE, "MP_STATE", "each vCPU's run state", true },
	{ KVM_CAP_XSAVE, "XSAVE", "FPU and vector registers", true },
	{ KVM_CAP_XCRS, "XCRS", "extended control registers", true },
	{ KVM_CAP_VCPU_EVENTS, "VCPU_EVENTS", "pending exceptions and interrupts", true },
	{ KVM_CAP_DEBUGREGS, "DEBUGREGS", "debug registers", true },
	{ KVM_CAP_ADJUST_CLOCK, "ADJUST_CLOCK", "the guest clock", true },
	/* kvm_dirty.c: the default dirty log, and the ring as an option */
	{ KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2, "MANUAL_DIRTY_LOG_PROTECT2",
	  "the dirty bitmap with manual clear", true },
	{ KVM_CAP_DIRTY_LOG_RING, "DIRTY_LOG_RING", "--dirty-mode ring", false },
};

int vm_kvm_probe(struct vm_kvm_feature *out, unsigned max, char *err, size_t errlen)
{
	int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC), vm, api;
	unsigned n = 0;

	if (kvm < 0)
		return kvm_err(err, errlen, -errno, "cannot open /dev/kvm: %s", strerror(errno));
	api = ioctl(kvm, KVM_GET_API_VERSION, 0);
	if (api != KVM_API_VERSION) {
		close(kvm);
		return kvm_err(err, errlen, -EPROTO, "/dev/kvm speaks API version %d, not %d", api,
			       KVM_API_VERSION);
	}
	vm = ioctl(kvm, KVM_CREATE_VM, 0);
	if (vm < 0) {
		int e = errno;

		close(kvm);
		return kvm_err(err, errlen, -e, "KVM_CREATE_VM: %s", strerror(e));
	}
	for (unsigned i = 0; i < sizeof(features) / sizeof(features[0]) && n < max; i++) {
		int v = ioctl(vm, KVM_CHECK_EXTENSION, features[i].cap);

		/* the ring has two flavours; kvm_dirty.c takes either */
		if (features[i].cap == KVM_CAP_DIRTY_LOG_RING && v <= 0)
			v = ioctl(vm, KVM_CHECK_EXTENSION, KVM_CAP_DIRTY_LOG_RING_ACQ_REL);
		out[n++] = (struct vm_kvm_feature){ .name = features[i].name,
						    .used_for = features[i].used_for,
						    .required = features[i].required,
						    .value = v < 0 ? 0 : v };
	}
	close(vm);
	close(kvm);
	return (int)n;
}
