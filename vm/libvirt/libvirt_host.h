/*
 * The host's libvirt, as vmigrated sees it: its domains (name, state,
 * memory, vCPUs), the QEMU migration capabilities that would change the
 * stream vmigrate carries, libvirt's own peer-to-peer live migration of a
 * domain with its stream on a unix socket, that job's statistics, and its
 * abort. libvirt stays in charge of the job, the definition and rollback;
 * this module only asks. Every call fails softly: -errno and a message,
 * never an exit, so a service without libvirt goes on with its own guests.
 */
#ifndef VMIGRATE_LV_HOST_H
#define VMIGRATE_LV_HOST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct lv_host;

/* A connection to libvirt at uri (e.g. qemu:///system); NULL with err. */
struct lv_host *lv_open(const char *uri, char *err, size_t errlen);
void lv_close(struct lv_host *h);

struct lv_domain {
	char name[256];
	char uuid[37];
	char state[24];			/* running, paused, shut off, ... (virsh's words) */
	bool active;
	uint64_t mem_bytes;		/* current */
	uint64_t max_mem_bytes;
	unsigned vcpus;
};

/* Every domain libvirt knows here, active or defined; *out is malloc'ed
 * (free it). 0 or -errno with err. */
int lv_list(struct lv_host *h, struct lv_domain **out, size_t *n, char *err, size_t errlen);
/* One domain by name: 0, -ENOENT when libvirt has none of that name. */
int lv_lookup(struct lv_host *h, const char *name, struct lv_domain *d, char *err,
	      size_t errlen);

/* The capabilities of QEMU's migration that change its stream, which
 * vmigrate's parser and writer (QEMU-STREAM.md) do not carry. */
extern const char *const lv_stream_caps[];

/* Which of lv_stream_caps the domain's QEMU has on now, comma-separated in
 * names ("" for none); 0 or -errno with err (asked through the monitor). */
int lv_stream_caps_on(struct lv_host *h, const char *name, char *names, size_t len, char *err,
		      size_t errlen);

struct lv_migrate_params {
	const char *dest_uri;		/* the destination's libvirt, as this libvirtd dials it */
	const char *migrate_uri;	/* where QEMU's stream goes: unix:///PATH */
	uint64_t bandwidth;		/* bytes/s, 0 = libvirt's default */
};

/* libvirt's peer-to-peer live migration of the domain; blocks until it
 * ends. 0 once the domain runs on the destination, -errno with libvirt's
 * message otherwise (the domain then still runs here, libvirt's rollback). */
int lv_migrate(struct lv_host *h, const char *name, const struct lv_migrate_params *p,
	       char *err, size_t errlen);
/* QEMU's downtime limit for the domain's migration, in ms; set it before
 * the migration or during it. QEMU keeps it after the job (libvirt
 * restores only what it set itself). 0 or -errno with err. */
int lv_max_downtime(struct lv_host *h, const char *name, uint64_t *ms, char *err,
		    size_t errlen);
int lv_set_max_downtime(struct lv_host *h, const char *name, uint64_t ms, char *err,
			size_t errlen);

struct lv_job_stats {
	bool active;			/* a job is running (or, completed: there was one) */
	uint64_t elapsed_ms;
	uint64_t data_total, data_processed, data_remaining;
	uint64_t memory_iteration;	/* rounds */
	uint64_t dirty_rate;		/* pages/s */
	uint64_t memory_bps;		/* bytes/s */
	uint64_t downtime_ms;
	uint64_t expected_downtime_ms;	/* not reported by every libvirt: 0 */
};

/* The domain's running job (completed: the last one that ended, left for
 * libvirt's other clients to read too). */
int lv_job_stats(struct lv_host *h, const char *name, bool completed, struct lv_job_stats *s,
		 char *err, size_t errlen);
/* virDomainAbortJob: the running migration is cancelled, the domain stays. */
int lv_abort_job(struct lv_host *h, const char *name, char *err, size_t errlen);

/* ---- what checkpoints and restores of a domain use ---- */

/* QMP command cmd (JSON text) through libvirt's monitor passthrough; with
 * fd >= 0 it travels with the command (getfd). *ret gets QEMU's "return"
 * (json_object_put it; NULL allowed); QEMU's error becomes err's text and
 * -EIO. 0 or -errno. */
struct json_object;
int lv_qmp(struct lv_host *h, const char *name, const char *cmd, int fd,
	   struct json_object **ret, char *err, size_t errlen);
/* The domain's XML as a save image keeps it (secure, migratable); malloc'ed. */
char *lv_domain_xml(struct lv_host *h, const char *name, char *err, size_t errlen);
/* Its UUID, 16 bytes. */
int lv_domain_uuid(struct lv_host *h, const char *name, uint8_t uuid[16], char *err,
		   size_t errlen);
int lv_suspend(struct lv_host *h, const char *name, char *err, size_t errlen);
int lv_resume(struct lv_host *h, const char *name, char *err, size_t errlen);
/*
 * libvirt's external memory snapshot of the domain into path (a FIFO will
 * do): libvirt writes its save image there (header, XML, QEMU's stream,
 * then the header again, marked complete, through a second open of path).
 * No metadata is kept and every disk is left out (snapshot='no'): the
 * memory only. live: VIR_DOMAIN_SNAPSHOT_CREATE_LIVE (QEMU stops the domain
 * at the end, libvirt resumes it); else libvirt pauses it for the whole
 * job. Blocks until libvirt's job ended; 0 or -errno with libvirt's message.
 */
int lv_snapshot_memory(struct lv_host *h, const char *name, const char *path, bool live,
		       char *err, size_t errlen);
/* virDomainRestoreFlags from the save image at path (a FIFO will do). */
int lv_restore(struct lv_host *h, const char *path, bool paused, char *err, size_t errlen);

#endif
