/*
 * One guest's process: owns the VM and its KVM descriptors, serves
 * requests from vmigrated on its own socket, and sends or receives the
 * guest's memory itself when it migrates. Started by vmigrated with fork;
 * it outlives a restart of the service, which finds it again by its socket.
 */
#ifndef WORKER_H
#define WORKER_H

#include <json-c/json.h>
#include <stdbool.h>
#include <stdint.h>

#include "memtouch.h"
#include "migrate.h"
#include "peer.h"
#include "vm.h"

struct worker_spec {
	char name[64];
	char dir[512];			/* where guests' sockets live */
	uint64_t mem;
	unsigned vcpus;
	char guest[256];		/* payload name or path */
	struct vm_memtouch_opts mt;
	char prefill[512];
	enum vm_dirty_mode dirty_mode;
	int io_timeout_ms;
	struct peer_config peer;	/* how to talk to other hosts */
	int home_port;			/* the service's port for peers (0: unknown) */
	char control[600];		/* the service's reports socket: job results go
					 * there (metrics.h) */
	char lv_sock_dir[256];		/* libvirt domains: where QEMU's stream sockets are */
	char lv_jobs_dir[512];		/* and their jobs' files */
};

/* Fill a spec from a start request; -EINVAL with err on bad fields. */
int worker_spec_from_json(struct json_object *req, struct worker_spec *s,
			  char *err, size_t errlen);

/* In the forked child: boot the guest, tell the parent through ready_fd
 * (one JSON line), then serve until the guest is gone. Never returns. */
_Noreturn void worker_run_boot(const struct worker_spec *s, int ready_fd);
/* In the forked child: open the accepted peer connection (TLS, hello,
 * authentication), then receive the guest it names. Never returns. */
_Noreturn void worker_run_incoming(const struct worker_spec *s, int peer_fd);

/* In the forked child: restore a guest from a checkpoint file (and its
 * parent chain) and run it; lazy: run first, load memory behind it.
 * Never returns. */
_Noreturn void worker_run_restore(const struct worker_spec *s, const char *file,
				  const char *key_file, bool lazy, int ready_fd);

/* A migrate or replicate request's migration parameters (io_timeout_ms:
 * the default for a silent peer), checked with mig_params_check; -EINVAL
 * with err when they are bad or could never finish. */
int worker_mig_params(struct json_object *req, int io_timeout_ms, struct mig_params *p,
		      char *err, size_t errlen);

/* Path of a guest's socket. */
void worker_sock_path(const char *dir, const char *name, char *out, size_t len);

#endif
