/*
 * vmigrated and the host's libvirt domains (vm/libvirt/libvirt_host.h):
 * their place in list and info, and their live migration with vmigrate
 * as the data plane. libvirt runs the job (peer to peer, its own
 * rollback); QEMU's stream goes to a unix socket of ours, through the
 * QEMU stream parser, over the peer session (TLS) as vmigrate's records
 * (its pages) and events (the rest) to the destination's service, which
 * writes it, re-synthesised, into the socket the destination QEMU listens
 * on, and carries QEMU's return path back.
 */
#ifndef LIBVIRT_JOBS_H
#define LIBVIRT_JOBS_H

#include <stdbool.h>
#include <stddef.h>

#include <json-c/json.h>

#include "peer.h"

#define LVD_DEFAULT_URI		"qemu:///system"
#define LVD_DEFAULT_SOCK_DIR	"/run/vmigrate"

/* The service's libvirt settings (its configuration: --libvirt URI,
 * "none" for off; --libvirt-socket-dir DIR, the same path on every host:
 * libvirt has the destination QEMU listen where the source QEMU dials). */
struct lvd_config {
	char uri[256];			/* "" = off */
	char sock_dir[256];
	char jobs_dir[512];		/* STATE-DIR/libvirt-jobs: one JSON file a job */
	char last_err[512];		/* the last failure logged, to log it once */
};

/* At service start: directories; says once if libvirt is off. */
void lvd_init(struct lvd_config *c, const char *state_dir);

/* The domains, as list entries ({"kind":"libvirt",...}) appended to
 * guests; nothing when libvirt is off or cannot be reached (logged once). */
void lvd_list(struct lvd_config *c, struct json_object *guests);
/* info of a domain; NULL when libvirt has none of that name (or is off). */
struct json_object *lvd_info(struct lvd_config *c, const char *name);
/* Whether libvirt has a domain of that name. */
bool lvd_has(struct lvd_config *c, const char *name);

/* What a migrate request of a domain becomes, checked in the service
 * before anything starts: the domain runs, nothing asked for would alter
 * QEMU's stream, none of QEMU's stream-altering capabilities is on. */
struct lvd_outgoing {
	char name[256];
	char job[128];
	char dest[256];			/* the other service, HOST[:PORT] */
	char dest_uri[512];		/* the other libvirt */
	char sock[400];			/* our socket, unix:// of the migrate URI */
	unsigned long long bandwidth, max_downtime_ms;
	char compress[8];		/* on the records: "auto", "lz4", "zstd", "off" */
	unsigned channels;		/* data channels for the records, 0 = the session */
	bool rdma;			/* the data channels over RDMA (the session stays TLS) */
	struct peer_config peer;
	int io_timeout_ms;
};

/* NULL and *out filled when the migration may start; else the error. */
struct json_object *lvd_prepare(struct lvd_config *c, struct json_object *req,
				const struct peer_config *pc, int io_timeout_ms,
				struct lvd_outgoing *out);
/* In the forked child: the whole outgoing job. Never returns. */
_Noreturn void lvd_run_outgoing(const struct lvd_config *c, const struct lvd_outgoing *o);
/* In the incoming child, after peer_accept() returned a "libvirt-in"
 * hello: feed the destination QEMU. Never returns. */
_Noreturn void lvd_run_incoming(const char *sock_dir, const char *jobs_dir,
				const struct peer_config *pc, struct xport *x,
				const struct peer_hello *h);

/* A job's progress (as the micro-VM's: done, stats{status,...}); NULL when
 * no libvirt job has that id here. */
struct json_object *lvd_job(struct lvd_config *c, const char *job);
/* Append the libvirt jobs (running; with completed, the finished ones). */
void lvd_jobs(struct lvd_config *c, struct json_object *jobs, bool running, bool completed);
/* Jobs whose process was killed: marked failed, their QEMU socket removed
 * (the service calls it now and then; the processes are its children). */
void lvd_sweep(struct lvd_config *c);
/* cancel: virDomainAbortJob; NULL when no libvirt job has that id. */
struct json_object *lvd_cancel(struct lvd_config *c, const char *job);

#endif
