/*
 * Save and load of a kvm micro-VM's non-memory state as STATE records.
 * Layouts are in vm/KVM-STATE.md. Loading parses a whole record before it
 * touches KVM, and applies vCPU pieces in the order KVM needs (CPUID before
 * anything, MSRs before the LAPIC, events last), whatever order they came in.
 */
#include "kvm_internal.h"

#include <endian.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#define VM_STATE_VERSION	1
#define VCPU_STATE_VERSION	1
#define CHIP_STATE_VERSION	1
#define CLOCK_STATE_VERSION	1

/* VCPU record pieces: tag, then exact size (0 = variable). */
enum vcpu_tag {
	TAG_REGS = 1,
	TAG_SREGS = 2,
	TAG_XSAVE = 3,
	TAG_XCRS = 4,
	TAG_MSRS = 5,
	TAG_LAPIC = 6,
	TAG_EVENTS = 7,
	TAG_MP_STATE = 8,
	TAG_DEBUGREGS = 9,
	TAG_CPUID = 10,
	TAG_COUNT
};
#define TAG_OPTIONAL	0x80000000u
/* Optional: what the VMM knows of the vCPU beyond KVM's state (u32 flags). */
#define TAG_RUN_STATE	(TAG_OPTIONAL | 1)
#define RUN_FINISHED	1u	/* the guest finished or failed on it: never runs again */

static const size_t tag_size[TAG_COUNT] = {
	[TAG_REGS] = sizeof(struct kvm_regs),
	[TAG_SREGS] = sizeof(struct kvm_sregs),
	[TAG_XSAVE] = sizeof(struct kvm_xsave),
	[TAG_XCRS] = sizeof(struct kvm_xcrs),
	[TAG_LAPIC] = sizeof(struct kvm_lapic_state),
	[TAG_EVENTS] = sizeof(struct kvm_vcpu_events),
	[TAG_MP_STATE] = sizeof(struct kvm_mp_state),
	[TAG_DEBUGREGS] = sizeof(struct kvm_debugregs),
};

static const char *const tag_name[TAG_COUNT] = {
	[TAG_REGS] = "registers", [TAG_SREGS] = "special registers",
	[TAG_XSAVE] = "XSAVE", [TAG_XCRS] = "XCRs", [TAG_MSRS] = "MSRs",
	[TAG_LAPIC] = "LAPIC", [TAG_EVENTS] = "pending events",
	[TAG_MP_STATE] = "MP state", [TAG_DEBUGREGS] = "debug registers",
	[TAG_CPUID] = "CPUID",
};

struct vm_state_v1 {
	uint32_t nr_vcpus;
	uint32_t nr_regions;
	uint64_t mem_bytes;
	uint64_t tsc_khz;
};
_Static_assert(sizeof(struct vm_state_v1) == 24, "VM state is 24 bytes");

struct msr_entry_v1 {
	uint32_t index;
	uint32_t reserved;
	uint64_t value;
};
_Static_assert(sizeof(struct msr_entry_v1) == 16, "MSR entry is 16 bytes");

int kvm_probe_msrs(struct kvm_vm *k, char *err, size_t errlen)
{
	struct kvm_msr_list probe = { .nmsrs = 0 };
	struct kvm_msr_list *list;
	struct {
		struct kvm_msrs hdr;
		struct kvm_msr_entry e;
	} one;

	/* First call fails with E2BIG and tells the count. */
	ioctl(k->kvm_fd, KVM_GET_MSR_INDEX_LIST, &probe);
	if (probe.nmsrs == 0 || probe.nmsrs > 4096)
		return kvm_err(err, errlen, -EIO, "KVM_GET_MSR_INDEX_LIST: no MSRs");
	list = calloc(1, sizeof(*list) + probe.nmsrs * sizeof(uint32_t));
	if (!list)
		return kvm_err(err, errlen, -ENOMEM, "out of memory");
	list->nmsrs = probe.nmsrs;
	if (ioctl(k->kvm_fd, KVM_GET_MSR_INDEX_LIST, list) < 0) {
		free(list);
		return kvm_err(err, errlen, -errno, "KVM_GET_MSR_INDEX_LIST: %s", strerror(errno));
	}
	/* Keep the MSRs this vCPU can actually read. */
	k->nr_msrs = 0;
	for (uint32_t i = 0; i < list->nmsrs && k->nr_msrs < KVM_MAX_MSRS; i++) {
		memset(&one, 0, sizeof(one));
		one.hdr.nmsrs = 1;
		one.e.index = list->indices[i];
		if (ioctl(k->vcpus[0].fd, KVM_GET_MSRS, &one) == 1)
			k->msr_index[k->nr_msrs++] = list->indices[i];
	}
	free(list);
	return 0;
}

/* Read every vCPU's TSC and the VM clock right after a pause. */
void kvm_snapshot_time(struct kvm_vm *k)
{
	k->paused_time_valid = false;
	for (unsigned i = 0; i < k->pub.nr_vcpus; i++) {
		struct {
			struct kvm_msrs hdr;
			struct kvm_msr_entry e;
		} tsc = { .hdr.nmsrs = 1, .e.index = MSR_IA32_TSC };

		if (ioctl(k->vcpus[i].fd, KVM_GET_MSRS, &tsc) != 1)
			return;
		k->paused_tsc[i] = tsc.e.data;
	}
	memset(&k->paused_clock, 0, sizeof(k->paused_clock));
	if (ioctl(k->vm_fd, KVM_GET_CLOCK, &k->paused_clock) < 0)
		return;
	k->paused_time_valid = true;
}

/* ---- save ---------------------------------------------------------------- */

struct tlv_buf {
	uint8_t *data;
	size_t len, cap;
	int err;
};

static void tlv_put(struct tlv_buf *b, uint32_t tag, const void *data, size_t len)
{
	uint32_t head[2] = { htole32(tag), htole32((uint32_t)len) };

	if (b->err)
		return;
	if (b->len + sizeof(head) + len > b->cap) {
		size_t cap = (b->cap ? b->cap * 2 : 8192) + len;
		uint8_t *nd = realloc(b->data, cap);

		if (!nd) {
			b->err = -ENOMEM;
			return;
		}
		b->data = nd;
		b->cap = cap;
	}
	memcpy(b->data + b->len, head, sizeof(head));
	memcpy(b->data + b->len + sizeof(head), data, len);
	b->len += sizeof(head) + len;
}

/* Read one fixed-size piece with a GET ioctl into the buffer. */
static int get_piece(struct tlv_buf *b, int fd, unsigned long req, uint32_t tag)
{
	uint8_t tmp[sizeof(struct kvm_xsave)];

	memset(tmp, 0, tag_size[tag]);
	if (ioctl(fd, req, tmp) < 0)
		return -errno;
	tlv_put(b, tag, tmp, tag_size[tag]);
	return b->err;
}

static int save_msrs(struct kvm_vm *k, struct kvm_vcpu_ctx *c, struct tlv_buf *b)
{
	struct kvm_msrs *msrs = calloc(1, sizeof(*msrs) + k->nr_msrs * sizeof(msrs->entries[0]));
	struct msr_entry_v1 *out = calloc(k->nr_msrs ? k->nr_msrs : 1, sizeof(*out));
	int n, ret = 0;

	if (!msrs || !out) {
		ret = -ENOMEM;
		goto out;
	}
	msrs->nmsrs = k->nr_msrs;
	for (unsigned i = 0; i < k->nr_msrs; i++)
		msrs->entries[i].index = k->msr_index[i];
	n = ioctl(c->fd, KVM_GET_MSRS, msrs);
	if (n != (int)k->nr_msrs) {
		ret = n < 0 ? -errno : -EIO;
		goto out;
	}
	for (unsigned i = 0; i < k->nr_msrs; i++) {
		uint64_t value = msrs->entries[i].data;

		if (msrs->entries[i].index == MSR_IA32_TSC && k->paused_time_valid)
			value = k->paused_tsc[c->index];
		out[i].index = htole32(msrs->entries[i].index);
		out[i].value = htole64(value);
	}
	tlv_put(b, TAG_MSRS, out, k->nr_msrs * sizeof(*out));
	ret = b->err;
out:
	free(msrs);
	free(out);
	return ret;
}

static int save_cpuid(struct kvm_vcpu_ctx *c, struct tlv_buf *b)
{
	unsigned n = 256;
	struct kvm_cpuid2 *cpuid = calloc(1, sizeof(*cpuid) + n * sizeof(cpuid->entries[0]));
	int ret = 0;

	if (!cpuid)
		return -ENOMEM;
	cpuid->nent = n;
	if (ioctl(c->fd, KVM_GET_CPUID2, cpuid) < 0)
		ret = -errno;
	else
		tlv_put(b, TAG_CPUID, cpuid->entries, cpuid->nent * sizeof(cpuid->entries[0]));
	free(cpuid);
	return ret ? ret : b->err;
}

static int save_vcpu(struct kvm_vm *k, struct kvm_vcpu_ctx *c, struct ckpt_writer *w)
{
	static const struct {
		uint32_t tag;
		unsigned long req;
	} pieces[] = {
		{ TAG_REGS, KVM_GET_REGS },
		{ TAG_SREGS, KVM_GET_SREGS },
		{ TAG_XSAVE, KVM_GET_XSAVE },
		{ TAG_XCRS, KVM_GET_XCRS },
		{ TAG_LAPIC, KVM_GET_LAPIC },
		{ TAG_EVENTS, KVM_GET_VCPU_EVENTS },
		{ TAG_MP_STATE, KVM_GET_MP_STATE },
		{ TAG_DEBUGREGS, KVM_GET_DEBUGREGS },
	};
	struct tlv_buf b = { 0 };
	int ret = save_cpuid(c, &b);

	for (size_t i = 0; !ret && i < sizeof(pieces) / sizeof(pieces[0]); i++)
		ret = get_piece(&b, c->fd, pieces[i].req, pieces[i].tag);
	if (!ret)
		ret = save_msrs(k, c, &b);
	if (!ret) {
		/* A finished vCPU's registers point into its last loop (memtouch
		 * spins on PAUSE): it must stay parked wherever it is loaded. */
		uint32_t flags = htole32(c->done ? RUN_FINISHED : 0);

		tlv_put(&b, TAG_RUN_STATE, &flags, sizeof(flags));
		ret = b.err;
	}
	if (!ret)
		ret = ckpt_writer_state(w, CKPT_STATE_VCPU, c->index, VCPU_STATE_VERSION,
					false, b.data, b.len);
	free(b.data);
	return ret;
}

int kvm_save_config(struct vm *vm, struct ckpt_writer *w)
{
	struct kvm_vm *k = to_kvm(vm);
	struct vm_state_v1 vs = {
		.nr_vcpus = htole32(vm->nr_vcpus),
		.nr_regions = htole32(vm->nr_regions),
		.mem_bytes = htole64(k->mem_bytes),
		.tsc_khz = htole64(k->tsc_khz),
	};

	return ckpt_writer_state(w, CKPT_STATE_VM, 0, VM_STATE_VERSION, false, &vs, sizeof(vs));
}

int vm_kvm_config_from_record(const struct ckpt_record *rec, struct vm_kvm_config *cfg,
			      char *err, size_t errlen)
{
	struct vm_state_v1 vs;

	if (rec->type != CKPT_REC_STATE || rec->u.state.kind != CKPT_STATE_VM)
		return kvm_err(err, errlen, -EBADMSG, "image does not start with the VM's configuration");
	if (rec->u.state.version != VM_STATE_VERSION || rec->u.state.len != sizeof(vs))
		return kvm_err(err, errlen, -EBADMSG, "VM configuration version %u, %zu bytes",
			       rec->u.state.version, rec->u.state.len);
	memcpy(&vs, rec->u.state.data, sizeof(vs));
	cfg->nr_vcpus = le32toh(vs.nr_vcpus);
	cfg->mem_bytes = le64toh(vs.mem_bytes);
	return 0;
}

int kvm_save_state(struct vm *vm, struct ckpt_writer *w)
{
	struct kvm_vm *k = to_kvm(vm);
	struct kvm_clock_data clock = { 0 };
	struct kvm_pit_state2 pit;
	int ret;

	if (!k->pause_req && k->started)
		return -EBUSY;	/* state of a running guest is meaningless */
	for (unsigned chip = 0; chip < 3; chip++) {
		struct kvm_irqchip ic = { .chip_id = chip };

		if (ioctl(k->vm_fd, KVM_GET_IRQCHIP, &ic) < 0)
			return -errno;
		ret = ckpt_writer_state(w, CKPT_STATE_IRQCHIP, chip, CHIP_STATE_VERSION,
					false, &ic, sizeof(ic));
		if (ret)
			return ret;
	}
	if (ioctl(k->vm_fd, KVM_GET_PIT2, &pit) < 0)
		return -errno;
	ret = ckpt_writer_state(w, CKPT_STATE_DEVICE, 0, CHIP_STATE_VERSION, false,
				&pit, sizeof(pit));
	if (ret)
		return ret;
	if (k->paused_time_valid)
		clock = k->paused_clock;
	else if (ioctl(k->vm_fd, KVM_GET_CLOCK, &clock) < 0)
		return -errno;
	ret = ckpt_writer_state(w, CKPT_STATE_CLOCK, 0, CLOCK_STATE_VERSION, false,
				&clock, sizeof(clock));
	for (unsigned i = 0; !ret && i < vm->nr_vcpus; i++)
		ret = save_vcpu(k, &k->vcpus[i], w);
	return ret;
}

/* ---- load ---------------------------------------------------------------- */

static int load_vm(struct kvm_vm *k, const struct ckpt_record *rec, char *err, size_t errlen)
{
	struct vm_state_v1 vs;

	if (rec->u.state.len != sizeof(vs))
		return kvm_err(err, errlen, -EBADMSG, "VM state of %zu bytes", rec->u.state.len);
	memcpy(&vs, rec->u.state.data, sizeof(vs));
	if (le32toh(vs.nr_vcpus) != k->pub.nr_vcpus)
		return kvm_err(err, errlen, -EINVAL,
			       "vCPU count mismatch: the image has %u vCPUs, this guest %u",
			       le32toh(vs.nr_vcpus), k->pub.nr_vcpus);
	if (le64toh(vs.mem_bytes) != k->mem_bytes)
		return kvm_err(err, errlen, -EINVAL,
			       "memory size mismatch: the image has %llu bytes, this guest %llu",
			       (unsigned long long)le64toh(vs.mem_bytes),
			       (unsigned long long)k->mem_bytes);
	/* No TSC scaling here (KVM_CAP_TSC_CONTROL = 0): a guest moved to a host
	 * with another TSC rate sees time run at another speed, never backwards. */
	k->loaded_vm = true;
	return 0;
}

static int load_chip(struct kvm_vm *k, const struct ckpt_record *rec, char *err, size_t errlen)
{
	uint32_t chip = rec->u.state.instance;
	struct kvm_irqchip ic;

	if (chip > 2 || rec->u.state.len != sizeof(ic))
		return kvm_err(err, errlen, -EBADMSG, "interrupt controller %u state of %zu bytes",
			       chip, rec->u.state.len);
	memcpy(&ic, rec->u.state.data, sizeof(ic));
	if (ic.chip_id != chip)
		return kvm_err(err, errlen, -EBADMSG, "interrupt controller %u names chip %u",
			       chip, ic.chip_id);
	if (ioctl(k->vm_fd, KVM_SET_IRQCHIP, &ic) < 0)
		return kvm_err(err, errlen, -errno, "KVM_SET_IRQCHIP %u: %s", chip, strerror(errno));
	k->loaded_irqchip[chip] = true;
	return 0;
}

static int load_pit(struct kvm_vm *k, const struct ckpt_record *rec, char *err, size_t errlen)
{
	struct kvm_pit_state2 pit;

	if (rec->u.state.instance != 0 || rec->u.state.len != sizeof(pit))
		return kvm_err(err, errlen, -EBADMSG, "device %u state of %zu bytes",
			       rec->u.state.instance, rec->u.state.len);
	memcpy(&pit, rec->u.state.data, sizeof(pit));
	if (ioctl(k->vm_fd, KVM_SET_PIT2, &pit) < 0)
		return kvm_err(err, errlen, -errno, "KVM_SET_PIT2: %s", strerror(errno));
	k->loaded_irqchip[3] = true;
	return 0;
}

static int load_clock(struct kvm_vm *k, const struct ckpt_record *rec, char *err, size_t errlen)
{
	struct kvm_clock_data clock;

	if (rec->u.state.len != sizeof(clock))
		return kvm_err(err, errlen, -EBADMSG, "clock state of %zu bytes", rec->u.state.len);
	memcpy(&clock, rec->u.state.data, sizeof(clock));
	/* Continue from the saved value: guest time does not jump or go back. */
	clock.flags = 0;
	memset(clock.pad, 0, sizeof(clock.pad));
	if (ioctl(k->vm_fd, KVM_SET_CLOCK, &clock) < 0)
		return kvm_err(err, errlen, -errno, "KVM_SET_CLOCK: %s", strerror(errno));
	k->loaded_clock = true;
	return 0;
}

struct vcpu_pieces {
	const uint8_t *data[TAG_COUNT];
	size_t len[TAG_COUNT];
	uint32_t run_flags;		/* TAG_RUN_STATE, 0 when absent */
};

static int parse_vcpu(const struct ckpt_record *rec, struct vcpu_pieces *p,
		      char *err, size_t errlen)
{
	const uint8_t *d = rec->u.state.data;
	size_t left = rec->u.state.len;

	memset(p, 0, sizeof(*p));
	while (left) {
		uint32_t tag, len;

		if (left < 8)
			return kvm_err(err, errlen, -EBADMSG, "vCPU state: piece header cut short");
		memcpy(&tag, d, 4);
		memcpy(&len, d + 4, 4);
		tag = le32toh(tag);
		len = le32toh(len);
		d += 8;
		left -= 8;
		if (len > left)
			return kvm_err(err, errlen, -EBADMSG, "vCPU state: piece %u runs past the record",
				       tag & ~TAG_OPTIONAL);
		if (tag == TAG_RUN_STATE && len == sizeof(p->run_flags)) {
			memcpy(&p->run_flags, d, sizeof(p->run_flags));
			p->run_flags = le32toh(p->run_flags);
		} else if (tag & TAG_OPTIONAL) {
			/* from a newer writer: safe to ignore by definition */
		} else if (tag == 0 || tag >= TAG_COUNT) {
			return kvm_err(err, errlen, -EBADMSG, "vCPU state: unknown piece %u", tag);
		} else if (p->data[tag]) {
			return kvm_err(err, errlen, -EBADMSG, "vCPU state: %s twice", tag_name[tag]);
		} else if (tag_size[tag] && len != tag_size[tag]) {
			return kvm_err(err, errlen, -EBADMSG, "vCPU state: %s of %u bytes, expected %zu",
				       tag_name[tag], len, tag_size[tag]);
		} else {
			p->data[tag] = d;
			p->len[tag] = len;
		}
		d += len;
		left -= len;
	}
	for (unsigned t = 1; t < TAG_COUNT; t++)
		if (!p->data[t])
			return kvm_err(err, errlen, -EBADMSG, "vCPU state lacks %s", tag_name[t]);
	if (p->len[TAG_MSRS] % sizeof(struct msr_entry_v1) ||
	    p->len[TAG_MSRS] / sizeof(struct msr_entry_v1) > KVM_MAX_MSRS)
		return kvm_err(err, errlen, -EBADMSG, "vCPU state: MSR list of %zu bytes",
			       p->len[TAG_MSRS]);
	if (p->len[TAG_CPUID] % sizeof(struct kvm_cpuid_entry2) ||
	    p->len[TAG_CPUID] / sizeof(struct kvm_cpuid_entry2) > 256)
		return kvm_err(err, errlen, -EBADMSG, "vCPU state: CPUID of %zu bytes",
			       p->len[TAG_CPUID]);
	return 0;
}

static int set_piece(struct kvm_vcpu_ctx *c, const struct vcpu_pieces *p, uint32_t tag,
		     unsigned long req, char *err, size_t errlen)
{
	uint8_t tmp[sizeof(struct kvm_xsave)];

	memcpy(tmp, p->data[tag], p->len[tag]);
	if (tag == TAG_EVENTS) {
		struct kvm_vcpu_events *ev = (struct kvm_vcpu_events *)tmp;

		/* GET leaves these unflagged; SET only applies flagged fields. */
		ev->flags |= KVM_VCPUEVENT_VALID_NMI_PENDING | KVM_VCPUEVENT_VALID_SIPI_VECTOR;
	}
	if (ioctl(c->fd, req, tmp) < 0)
		return kvm_err(err, errlen, -errno, "vCPU %u: setting %s: %s", c->index,
			       tag_name[tag], strerror(errno));
	return 0;
}

static int load_msrs(struct kvm_vcpu_ctx *c, const struct vcpu_pieces *p, char *err, size_t errlen)
{
	size_t n = p->len[TAG_MSRS] / sizeof(struct msr_entry_v1);
	struct kvm_msrs *msrs = calloc(1, sizeof(*msrs) + n * sizeof(msrs->entries[0]));
	int ret;

	if (!msrs)
		return kvm_err(err, errlen, -ENOMEM, "out of memory");
	msrs->nmsrs = (uint32_t)n;
	for (size_t i = 0; i < n; i++) {
		struct msr_entry_v1 e;

		memcpy(&e, p->data[TAG_MSRS] + i * sizeof(e), sizeof(e));
		msrs->entries[i].index = le32toh(e.index);
		msrs->entries[i].data = le64toh(e.value);
	}
	ret = ioctl(c->fd, KVM_SET_MSRS, msrs);
	if (ret != (int)n) {
		ret = ret < 0 ? kvm_err(err, errlen, -errno, "vCPU %u: KVM_SET_MSRS: %s",
					c->index, strerror(errno)) :
			kvm_err(err, errlen, -EINVAL, "vCPU %u: this host refuses MSR %#x",
				c->index, msrs->entries[ret].index);
		free(msrs);
		return ret;
	}
	free(msrs);
	return 0;
}

static int load_cpuid(struct kvm_vcpu_ctx *c, const struct vcpu_pieces *p, char *err, size_t errlen)
{
	size_t n = p->len[TAG_CPUID] / sizeof(struct kvm_cpuid_entry2);
	struct kvm_cpuid2 *cpuid = calloc(1, sizeof(*cpuid) + p->len[TAG_CPUID]);
	int ret = 0;

	if (!cpuid)
		return kvm_err(err, errlen, -ENOMEM, "out of memory");
	cpuid->nent = (uint32_t)n;
	memcpy(cpuid->entries, p->data[TAG_CPUID], p->len[TAG_CPUID]);
	if (ioctl(c->fd, KVM_SET_CPUID2, cpuid) < 0)
		ret = kvm_err(err, errlen, -errno,
			      "vCPU %u: this host refuses the guest's CPUID: %s",
			      c->index, strerror(errno));
	free(cpuid);
	return ret;
}

static int load_vcpu(struct kvm_vm *k, const struct ckpt_record *rec, char *err, size_t errlen)
{
	uint32_t i = rec->u.state.instance;
	struct vcpu_pieces p;
	struct kvm_vcpu_ctx *c;
	int ret;

	if (i >= k->pub.nr_vcpus)
		return kvm_err(err, errlen, -EINVAL,
			       "vCPU count mismatch: the image has vCPU %u, this guest %u vCPUs",
			       i, k->pub.nr_vcpus);
	c = &k->vcpus[i];
	ret = parse_vcpu(rec, &p, err, errlen);
	if (ret)
		return ret;
	if ((ret = load_cpuid(c, &p, err, errlen)) ||
	    (ret = set_piece(c, &p, TAG_SREGS, KVM_SET_SREGS, err, errlen)) ||
	    (ret = set_piece(c, &p, TAG_REGS, KVM_SET_REGS, err, errlen)) ||
	    (ret = set_piece(c, &p, TAG_XSAVE, KVM_SET_XSAVE, err, errlen)) ||
	    (ret = set_piece(c, &p, TAG_XCRS, KVM_SET_XCRS, err, errlen)) ||
	    (ret = load_msrs(c, &p, err, errlen)) ||
	    (ret = set_piece(c, &p, TAG_MP_STATE, KVM_SET_MP_STATE, err, errlen)) ||
	    (ret = set_piece(c, &p, TAG_LAPIC, KVM_SET_LAPIC, err, errlen)) ||
	    (ret = set_piece(c, &p, TAG_EVENTS, KVM_SET_VCPU_EVENTS, err, errlen)) ||
	    (ret = set_piece(c, &p, TAG_DEBUGREGS, KVM_SET_DEBUGREGS, err, errlen)))
		return ret;
	c->done = p.run_flags & RUN_FINISHED;
	k->loaded_vcpu[i] = true;
	return 0;
}

int kvm_load_state(struct vm *vm, const struct ckpt_record *rec, char *err, size_t errlen)
{
	struct kvm_vm *k = to_kvm(vm);
	const uint32_t versions[] = {
		[CKPT_STATE_VM] = VM_STATE_VERSION,
		[CKPT_STATE_VCPU] = VCPU_STATE_VERSION,
		[CKPT_STATE_IRQCHIP] = CHIP_STATE_VERSION,
		[CKPT_STATE_CLOCK] = CLOCK_STATE_VERSION,
		[CKPT_STATE_DEVICE] = CHIP_STATE_VERSION,
	};
	uint32_t kind = rec->u.state.kind;

	if (!k->incoming)
		return kvm_err(err, errlen, -EBUSY, "state can only be loaded into a new guest");
	if (kind >= sizeof(versions) / sizeof(versions[0]) || !versions[kind]) {
		if (rec->flags & CKPT_RECF_OPTIONAL)
			return 0;
		return kvm_err(err, errlen, -EBADMSG, "unknown state kind %u", kind);
	}
	if (rec->u.state.version != versions[kind])
		return kvm_err(err, errlen, -EBADMSG,
			       "state kind %u has layout version %u, this build reads %u",
			       kind, rec->u.state.version, versions[kind]);
	switch (kind) {
	case CKPT_STATE_VM:
		return load_vm(k, rec, err, errlen);
	case CKPT_STATE_VCPU:
		if (!k->loaded_vm)
			return kvm_err(err, errlen, -EBADMSG, "vCPU state before the VM's configuration");
		return load_vcpu(k, rec, err, errlen);
	case CKPT_STATE_IRQCHIP:
		return load_chip(k, rec, err, errlen);
	case CKPT_STATE_DEVICE:
		return load_pit(k, rec, err, errlen);
	default:
		return load_clock(k, rec, err, errlen);
	}
}

int kvm_load_again(struct vm *vm, char *err, size_t errlen)
{
	struct kvm_vm *k = to_kvm(vm);

	if (k->incoming || !k->loaded_vm)
		return kvm_err(err, errlen, -EINVAL, "guest has no loaded state to replace");
	for (unsigned i = 0; i < vm->nr_vcpus; i++)
		if (k->vcpus[i].thread_started)
			return kvm_err(err, errlen, -EBUSY, "guest ran: its state is its own now");
	/* the configuration stays: an epoch carries everything else anew */
	k->loaded_clock = false;
	memset(k->loaded_irqchip, 0, sizeof(k->loaded_irqchip));
	memset(k->loaded_vcpu, 0, sizeof(k->loaded_vcpu));
	k->incoming = true;
	return 0;
}

int kvm_load_finish(struct vm *vm, char *err, size_t errlen)
{
	struct kvm_vm *k = to_kvm(vm);

	if (!k->incoming)
		return kvm_err(err, errlen, -EINVAL, "guest was not waiting for state");
	if (!k->loaded_vm)
		return kvm_err(err, errlen, -EBADMSG, "image lacks the VM state");
	if (!k->loaded_clock)
		return kvm_err(err, errlen, -EBADMSG, "image lacks the guest clock");
	for (unsigned i = 0; i < 4; i++)
		if (!k->loaded_irqchip[i])
			return kvm_err(err, errlen, -EBADMSG, "image lacks %s",
				       i < 3 ? "an interrupt controller" : "the PIT");
	for (unsigned i = 0; i < vm->nr_vcpus; i++)
		if (!k->loaded_vcpu[i])
			return kvm_err(err, errlen, -EBADMSG,
				       "vCPU count mismatch: the image lacks vCPU %u of %u",
				       i, vm->nr_vcpus);
	k->incoming = false;
	/* Loaded guests start paused; vm_resume() runs them. */
	pthread_mutex_lock(&k->lock);
	k->pause_req = true;
	pthread_mutex_unlock(&k->lock);
	return 0;
}
