/*
 * The kvm micro-VM: guest RAM in one shmem file (guest_ram.c), one thread
 * per vCPU, and pause/resume that kicks every vCPU out of KVM_RUN with a
 * signal.
 *
 * vCPU thread:                      pauser (vm_pause):
 *   lock                              lock
 *   immediate_exit = 0                pause_req = true
 *   while pause_req: wait             for each vCPU: immediate_exit = 1, kick
 *   unlock                            wait until nr_paused == nr_vcpus
 *   KVM_RUN ... handle exit           unlock
 *
 * Because a vCPU clears immediate_exit under the lock before it looks at
 * pause_req, a kick can never be lost between the check and KVM_RUN.
 */
#include "kvm_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "guest_abi.h"
#include "guest_ram.h"

#define KICK_SIGNAL	SIGUSR1
#define PAUSE_REKICK_MS	20

int kvm_err(char *err, size_t len, int ret, const char *fmt, ...)
{
	va_list ap;

	if (err && len) {
		va_start(ap, fmt);
		vsnprintf(err, len, fmt, ap);
		va_end(ap);
	}
	return ret;
}

static void kick_handler(int sig)
{
	(void)sig;	/* its only job is to make KVM_RUN return EINTR */
}

static void setup_kick_handler(void)
{
	struct sigaction sa = { .sa_handler = kick_handler };

	sigemptyset(&sa.sa_mask);
	sigaction(KICK_SIGNAL, &sa, NULL);
}

static void install_kick_handler(void)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;

	pthread_once(&once, setup_kick_handler);
}

bool vm_kvm_available(char *why, size_t len)
{
	int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);

	if (fd < 0) {
		kvm_err(why, len, 0, "cannot open /dev/kvm: %s", strerror(errno));
		return false;
	}
	if (ioctl(fd, KVM_GET_API_VERSION, 0) != KVM_API_VERSION) {
		close(fd);
		kvm_err(why, len, 0, "/dev/kvm speaks an unknown API version");
		return false;
	}
	close(fd);
	return true;
}

int kvm_set_memslots(struct kvm_vm *k, bool log_dirty)
{
	for (unsigned i = 0; i < k->pub.nr_regions; i++) {
		const struct vm_region *r = &k->pub.regions[i];
		struct kvm_userspace_memory_region slot = {
			.slot = i,
			.flags = log_dirty ? KVM_MEM_LOG_DIRTY_PAGES : 0,
			.guest_phys_addr = r->gpa,
			.memory_size = r->size,
			.userspace_addr = (uintptr_t)r->host,
		};

		if (ioctl(k->vm_fd, KVM_SET_USER_MEMORY_REGION, &slot) < 0)
			return -errno;
	}
	return 0;
}

/* Low RAM up to 3 GiB, the rest from 4 GiB, like a PC leaves room for MMIO. */
static int setup_memory(struct kvm_vm *k, const struct vm_kvm_config *cfg,
			char *err, size_t errlen)
{
	uint64_t low = cfg->mem_bytes < VMG_LOW_LIMIT ? cfg->mem_bytes : VMG_LOW_LIMIT;

	if (cfg->adopt_memfd) {
		struct stat st;

		k->memfd = fcntl(cfg->memfd, F_DUPFD_CLOEXEC, 0);
		if (k->memfd < 0 || fstat(k->memfd, &st) < 0)
			return kvm_err(err, errlen, -errno, "the RAM to adopt: %s", strerror(errno));
		if ((uint64_t)st.st_size != cfg->mem_bytes)
			return kvm_err(err, errlen, -EINVAL, "the RAM to adopt is not %llu bytes",
				       (unsigned long long)cfg->mem_bytes);
	} else {
		k->memfd = guest_ram_create(cfg->mem_bytes, cfg->hugetlb, err, errlen);
		if (k->memfd < 0)
			return k->memfd;
	}
	k->mem = mmap(NULL, cfg->mem_bytes, PROT_READ | PROT_WRITE, MAP_SHARED,
		      k->memfd, 0);
	if (k->mem == MAP_FAILED) {
		k->mem = NULL;
		return kvm_err(err, errlen, -errno, "mapping guest RAM: %s", strerror(errno));
	}
	k->mem_bytes = cfg->mem_bytes;

	k->pub.regions[0] = (struct vm_region){ .id = 0, .gpa = 0, .size = low,
		.host = k->mem, .memfd = k->memfd, .memfd_offset = 0 };
	k->pub.nr_regions = 1;
	if (cfg->mem_bytes > low) {
		k->pub.regions[1] = (struct vm_region){ .id = 1, .gpa = VMG_HIGH_GPA,
			.size = cfg->mem_bytes - low, .host = k->mem + low,
			.memfd = k->memfd, .memfd_offset = low };
		k->pub.nr_regions = 2;
	}
	if (kvm_set_memslots(k, false) < 0)
		return kvm_err(err, errlen, -errno, "KVM_SET_USER_MEMORY_REGION: %s",
			       strerror(errno));
	return 0;
}

static int create_vcpus(struct kvm_vm *k, char *err, size_t errlen)
{
	int mmap_size = ioctl(k->kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0);

	if (mmap_size < (int)sizeof(struct kvm_run))
		return kvm_err(err, errlen, -EINVAL, "KVM_GET_VCPU_MMAP_SIZE: %s",
			       strerror(errno));
	for (unsigned i = 0; i < k->pub.nr_vcpus; i++) {
		struct kvm_vcpu_ctx *c = &k->vcpus[i];

		c->vm = k;
		c->index = i;
		c->fd = ioctl(k->vm_fd, KVM_CREATE_VCPU, i);
		if (c->fd < 0)
			return kvm_err(err, errlen, -errno, "KVM_CREATE_VCPU %u: %s", i,
				       strerror(errno));
		c->run_size = mmap_size;
		c->run = mmap(NULL, mmap_size, PROT_READ | PROT_WRITE, MAP_SHARED, c->fd, 0);
		if (c->run == MAP_FAILED) {
			c->run = NULL;
			return kvm_err(err, errlen, -errno, "mapping vCPU %u: %s", i,
				       strerror(errno));
		}
		if (k->dirty_mode == VM_DIRTY_RING) {
			c->ring = mmap(NULL, k->ring_entries * sizeof(struct kvm_dirty_gfn),
				       PROT_READ | PROT_WRITE, MAP_SHARED, c->fd,
				       KVM_DIRTY_LOG_PAGE_OFFSET * getpagesize());
			if (c->ring == MAP_FAILED) {
				c->ring = NULL;
				return kvm_err(err, errlen, -errno, "mapping dirty ring of vCPU %u: %s",
					       i, strerror(errno));
			}
		}
	}
	return 0;
}

static void flush_console(struct kvm_vm *k, struct kvm_vcpu_ctx *c)
{
	if (c->console_len && k->events.console)
		k->events.console(k->events.opaque, c->console, c->console_len);
	c->console_len = 0;
}

static void mark_done(struct kvm_vm *k, struct kvm_vcpu_ctx *c, int err, const char *why)
{
	pthread_mutex_lock(&k->lock);
	c->done = true;
	pthread_cond_broadcast(&k->cond);
	pthread_mutex_unlock(&k->lock);
	if (k->events.stopped)
		k->events.stopped(k->events.opaque, c->index, err, why);
}

static void handle_io(struct kvm_vm *k, struct kvm_vcpu_ctx *c)
{
	struct kvm_run *run = c->run;
	uint8_t *data = (uint8_t *)run + run->io.data_offset;

	c->io_pending = true;
	if (run->io.direction == KVM_EXIT_IO_IN) {
		memset(data, 0xff, (size_t)run->io.size * run->io.count);
		return;
	}
	if (run->io.port == VMG_PORT_CONSOLE) {
		for (uint32_t i = 0; i < run->io.count; i++) {
			char ch = (char)data[i * run->io.size];

			c->console[c->console_len++] = ch;
			if (ch == '\n' || c->console_len == sizeof(c->console))
				flush_console(k, c);
		}
	} else if (run->io.port == VMG_PORT_EVENT && run->io.size == 4) {
		uint32_t v;

		memcpy(&v, data, 4);
		if (k->events.guest_event)
			k->events.guest_event(k->events.opaque, c->index,
					      VMG_EVENT_CODE(v), VMG_EVENT_ARG(v));
		if (VMG_EVENT_CODE(v) == VMG_EV_DONE)
			mark_done(k, c, 0, "guest finished");
		else if (VMG_EVENT_CODE(v) == VMG_EV_PANIC)
			mark_done(k, c, -EFAULT, "guest panicked");
	}
}

/* Handle one exit; false when this vCPU must not run again. */
static bool handle_exit(struct kvm_vm *k, struct kvm_vcpu_ctx *c)
{
	struct kvm_run *run = c->run;
	char why[128];

	switch (run->exit_reason) {
	case KVM_EXIT_IO:
		handle_io(k, c);
		return true;
	case KVM_EXIT_MMIO:
		c->io_pending = true;
		if (!run->mmio.is_write)
			memset(run->mmio.data, 0xff, sizeof(run->mmio.data));
		return true;
	case KVM_EXIT_INTR:
		return true;
	case KVM_EXIT_DIRTY_RING_FULL:
		kvm_ring_harvest(k);
		return true;
	case KVM_EXIT_HLT:
		mark_done(k, c, 0, "guest halted");
		return false;
	case KVM_EXIT_SHUTDOWN:
		mark_done(k, c, -EFAULT, "guest shut down (triple fault)");
		return false;
	case KVM_EXIT_FAIL_ENTRY:
		snprintf(why, sizeof(why), "VM entry failed, hardware reason %#llx",
			 (unsigned long long)run->fail_entry.hardware_entry_failure_reason);
		mark_done(k, c, -EIO, why);
		return false;
	case KVM_EXIT_INTERNAL_ERROR:
		snprintf(why, sizeof(why), "KVM internal error, suberror %u",
			 run->internal.suberror);
		mark_done(k, c, -EIO, why);
		return false;
	default:
		snprintf(why, sizeof(why), "unexpected exit reason %u", run->exit_reason);
		mark_done(k, c, -EIO, why);
		return false;
	}
}

static void *vcpu_thread(void *arg)
{
	struct kvm_vcpu_ctx *c = arg;
	struct kvm_vm *k = c->vm;
	sigset_t set;

	sigemptyset(&set);
	sigaddset(&set, KICK_SIGNAL);
	pthread_sigmask(SIG_UNBLOCK, &set, NULL);

	for (;;) {
		pthread_mutex_lock(&k->lock);
		if ((k->pause_req || k->stop_req || c->done) && c->io_pending) {
			/* Finish the last I/O exit without running guest code, so
			 * the saved state is consistent (KVM API, KVM_RUN). */
			pthread_mutex_unlock(&k->lock);
			c->run->immediate_exit = 1;
			ioctl(c->fd, KVM_RUN, 0);
			c->io_pending = false;
			continue;
		}
		c->run->immediate_exit = 0;
		while ((k->pause_req || c->done) && !k->stop_req) {
			if (!c->paused) {
				c->paused = true;
				k->nr_paused++;
				pthread_cond_broadcast(&k->cond);
			}
			pthread_cond_wait(&k->cond, &k->lock);
		}
		if (c->paused) {
			c->paused = false;
			k->nr_paused--;
		}
		if (k->stop_req) {
			pthread_mutex_unlock(&k->lock);
			break;
		}
		pthread_mutex_unlock(&k->lock);

		if (ioctl(c->fd, KVM_RUN, 0) < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			char why[96];

			snprintf(why, sizeof(why), "KVM_RUN: %s", strerror(errno));
			mark_done(k, c, -errno, why);
			continue;
		}
		c->io_pending = false;
		handle_exit(k, c);
	}
	flush_console(k, c);
	return NULL;
}

/* Kick every vCPU out of KVM_RUN; called with the lock held. */
static void kick_all(struct kvm_vm *k)
{
	for (unsigned i = 0; i < k->pub.nr_vcpus; i++) {
		struct kvm_vcpu_ctx *c = &k->vcpus[i];

		c->run->immediate_exit = 1;
		if (c->thread_started)
			pthread_kill(c->thread, KICK_SIGNAL);
	}
}

static int kvm_start(struct vm *vm)
{
	struct kvm_vm *k = to_kvm(vm);

	if (k->incoming)
		return -EINVAL;
	pthread_mutex_lock(&k->lock);
	if (k->started) {
		pthread_mutex_unlock(&k->lock);
		return -EALREADY;
	}
	k->started = true;
	pthread_mutex_unlock(&k->lock);
	for (unsigned i = 0; i < vm->nr_vcpus; i++) {
		struct kvm_vcpu_ctx *c = &k->vcpus[i];
		sigset_t block, old;
		int ret;

		/* The thread starts with the kick blocked and unblocks it itself. */
		sigemptyset(&block);
		sigaddset(&block, KICK_SIGNAL);
		pthread_sigmask(SIG_BLOCK, &block, &old);
		ret = pthread_create(&c->thread, NULL, vcpu_thread, c);
		pthread_sigmask(SIG_SETMASK, &old, NULL);
		if (ret)
			return -ret;
		c->thread_started = true;
	}
	return 0;
}

static int kvm_pause(struct vm *vm)
{
	struct kvm_vm *k = to_kvm(vm);
	unsigned started = 0;

	pthread_mutex_lock(&k->lock);
	k->pause_req = true;
	for (unsigned i = 0; i < vm->nr_vcpus; i++)
		started += k->vcpus[i].thread_started;
	kick_all(k);
	while (k->nr_paused < started) {
		struct timespec ts;

		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += PAUSE_REKICK_MS * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		if (pthread_cond_timedwait(&k->cond, &k->lock, &ts) == ETIMEDOUT)
			kick_all(k);	/* a vCPU between exits: kick again */
	}
	pthread_mutex_unlock(&k->lock);
	kvm_snapshot_time(k);
	return 0;
}

static int kvm_resume(struct vm *vm)
{
	struct kvm_vm *k = to_kvm(vm);

	if (k->incoming)
		return -EINVAL;
	k->paused_time_valid = false;
	pthread_mutex_lock(&k->lock);
	k->pause_req = false;
	pthread_cond_broadcast(&k->cond);
	pthread_mutex_unlock(&k->lock);
	if (!k->started)
		return kvm_start(vm);
	return 0;
}

static void kvm_destroy(struct vm *vm)
{
	struct kvm_vm *k = to_kvm(vm);

	pthread_mutex_lock(&k->lock);
	k->stop_req = true;
	pthread_cond_broadcast(&k->cond);
	kick_all(k);
	pthread_mutex_unlock(&k->lock);
	for (unsigned i = 0; i < KVM_MAX_VCPUS; i++) {
		struct kvm_vcpu_ctx *c = &k->vcpus[i];

		if (c->thread_started)
			pthread_join(c->thread, NULL);
		if (c->ring)
			munmap(c->ring, k->ring_entries * sizeof(struct kvm_dirty_gfn));
		if (c->run)
			munmap(c->run, c->run_size);
		if (c->fd >= 0)
			close(c->fd);
	}
	kvm_dirty_release(k);
	if (k->mem)
		munmap(k->mem, k->mem_bytes);
	if (k->memfd >= 0)
		close(k->memfd);
	if (k->vm_fd >= 0)
		close(k->vm_fd);
	if (k->kvm_fd >= 0)
		close(k->kvm_fd);
	free(k->cpuid);
	pthread_mutex_destroy(&k->lock);
	pthread_cond_destroy(&k->cond);
	pthread_mutex_destroy(&k->ring_lock);
	free(k);
}

static const struct vm_ops kvm_ops = {
	.name = "kvm",
	.start = kvm_start,
	.pause = kvm_pause,
	.resume = kvm_resume,
	.dirty_start = kvm_dirty_start,
	.dirty_sync = kvm_dirty_sync,
	.dirty_clear = kvm_dirty_clear,
	.dirty_stop = kvm_dirty_stop,
	.save_config = kvm_save_config,
	.save_state = kvm_save_state,
	.load_state = kvm_load_state,
	.load_finish = kvm_load_finish,
	.load_again = kvm_load_again,
	.destroy = kvm_destroy,
};

static bool valid_config(const struct vm_kvm_config *cfg, char *err, size_t errlen)
{
	if (cfg->mem_bytes < (64ull << 20) || cfg->mem_bytes > (8ull << 30) ||
	    cfg->mem_bytes % (2ull << 20)) {
		kvm_err(err, errlen, 0, "guest memory must be 64 MiB to 8 GiB in 2 MiB steps");
		return false;
	}
	if (cfg->nr_vcpus < 1 || cfg->nr_vcpus > KVM_MAX_VCPUS) {
		kvm_err(err, errlen, 0, "a guest has 1 to %d vCPUs", KVM_MAX_VCPUS);
		return false;
	}
	if (cfg->payload && (cfg->payload_size == 0 || cfg->payload_size > VMG_MAX_PAYLOAD)) {
		kvm_err(err, errlen, 0, "payload of %zu bytes (at most %llu)",
			cfg->payload_size, (unsigned long long)VMG_MAX_PAYLOAD);
		return false;
	}
	return true;
}

struct vm *vm_kvm_create(const struct vm_kvm_config *cfg, char *err, size_t errlen)
{
	struct kvm_vm *k;

	if (!valid_config(cfg, err, errlen))
		return NULL;
	k = calloc(1, sizeof(*k));
	if (!k) {
		kvm_err(err, errlen, 0, "out of memory");
		return NULL;
	}
	k->kvm_fd = k->vm_fd = k->memfd = -1;
	for (unsigned i = 0; i < KVM_MAX_VCPUS; i++)
		k->vcpus[i].fd = -1;
	pthread_mutex_init(&k->lock, NULL);
	pthread_cond_init(&k->cond, NULL);
	pthread_mutex_init(&k->ring_lock, NULL);
	k->pub.ops = &kvm_ops;
	k->pub.nr_vcpus = cfg->nr_vcpus;
	snprintf(k->pub.name, sizeof(k->pub.name), "%s", cfg->name ? cfg->name : "guest");
	k->events = cfg->events;
	if (getrandom(k->pub.uuid, sizeof(k->pub.uuid), 0) != sizeof(k->pub.uuid)) {
		kvm_err(err, errlen, 0, "getrandom: %s", strerror(errno));
		goto fail;
	}
	k->dirty_mode = cfg->dirty_mode;
	k->incoming = !cfg->payload;
	install_kick_handler();

	k->kvm_fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (k->kvm_fd < 0) {
		kvm_err(err, errlen, 0, "cannot open /dev/kvm: %s", strerror(errno));
		goto fail;
	}
	k->vm_fd = ioctl(k->kvm_fd, KVM_CREATE_VM, 0);
	if (k->vm_fd < 0) {
		kvm_err(err, errlen, 0, "KVM_CREATE_VM: %s", strerror(errno));
		goto fail;
	}
	if (kvm_dirty_init(k, err, errlen))
		goto fail;
	if (setup_memory(k, cfg, err, errlen))
		goto fail;
	if (ioctl(k->vm_fd, KVM_SET_TSS_ADDR, 0xfffbd000ul) < 0 ||
	    ioctl(k->vm_fd, KVM_CREATE_IRQCHIP, 0) < 0) {
		kvm_err(err, errlen, 0, "creating the interrupt controllers: %s", strerror(errno));
		goto fail;
	}
	{
		struct kvm_pit_config pit = { .flags = 0 };

		if (ioctl(k->vm_fd, KVM_CREATE_PIT2, &pit) < 0) {
			kvm_err(err, errlen, 0, "KVM_CREATE_PIT2: %s", strerror(errno));
			goto fail;
		}
	}
	if (create_vcpus(k, err, errlen))
		goto fail;
	{
		int khz = ioctl(k->vcpus[0].fd, KVM_GET_TSC_KHZ, 0);

		if (khz <= 0) {
			kvm_err(err, errlen, 0, "KVM_GET_TSC_KHZ: %s", strerror(errno));
			goto fail;
		}
		k->tsc_khz = (uint32_t)khz;
	}
	if (kvm_setup_cpuid(k, err, errlen) || kvm_probe_msrs(k, err, errlen))
		goto fail;
	if (cfg->payload && kvm_boot_setup(k, cfg, err, errlen))
		goto fail;
	return &k->pub;
fail:
	kvm_destroy(&k->pub);
	return NULL;
}
