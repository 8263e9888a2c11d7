/*
 * Checkpoints of libvirt domains in vmigrate's format (QEMU-STREAM.md,
 * "In a checkpoint file", is normative): QEMU's stream captured into a
 * ckpt-format file with the pages stored by RAM block and offset, the
 * device state kept intact as an opaque blob, the domain's XML beside it;
 * and the other way, a chain of such files read back into one image whose
 * pages and blob a writer turns into QEMU's stream again.
 *
 * Everything read from a file is hostile until checked: a chain whose
 * records, regions, blocks or state do not agree is refused with a message
 * that says what.
 */
#ifndef QEMU_CKPT_H
#define QEMU_CKPT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ckpt.h"
#include "qemu_stream.h"

/* The STATE kind of a domain checkpoint's records, and its instances. */
#define QCKPT_STATE_KIND	CKPT_STATE_QEMU
#define QCKPT_INST_CONFIG	0	/* machine, uuid, blocks, vCPUs, run state */
#define QCKPT_INST_XML		1	/* the domain's XML */
#define QCKPT_INST_DEVICE	2	/* device state, pieces from here on */
#define QCKPT_VERSION		1

#define QCKPT_XML_MAX		(4u << 20)	/* bytes of domain XML */
#define QCKPT_DEVICE_PIECE	(1u << 20)	/* bytes a device record holds at most */
#define QCKPT_DEVICE_MAX	(256u << 20)	/* bytes of device state in all */
#define QCKPT_MAX_BLOCKS	CKPT_MAX_REGIONS	/* one region a block */

/* A domain's image: what a chain of its checkpoint files adds up to. */
struct qckpt_image {
	struct ckpt_image_info info;		/* the newest file's HEADER */
	struct qstream_config cfg;
	uint32_t ram_section_id;		/* QEMU's id of its "ram" section */
	bool was_running;			/* the domain ran when it was captured */
	unsigned vcpus;
	unsigned nblocks;
	struct qstream_block blocks[QCKPT_MAX_BLOCKS];	/* block i = region i */
	char *xml;				/* NUL-terminated */
	uint8_t *device;			/* the blob, from QEMU's first device section on */
	size_t device_len;
	uint8_t *ram[QCKPT_MAX_BLOCKS];		/* NULL when only hashes are kept */
	uint64_t *hash[QCKPT_MAX_BLOCKS];	/* XXH3-64 of each page, or NULL */
	uint8_t digest[16];			/* the newest file's COMMIT digest */
};

/* Whether the checkpoint file at path holds a domain (a config record of
 * QCKPT_STATE_KIND): false for a micro-VM's and for what does not read. */
bool qckpt_is_domain_file(const char *path);

/*
 * Read a chain of files (newest first: files[0] the one asked for, files[n-1]
 * a full checkpoint; as snap_chain() finds them) into im: every record
 * checked (and the MAC, given a key), each file the very parent its child
 * names, the same regions and blocks all along, the state of the newest.
 * With hashes_only, each page's hash is kept instead of its content (what an
 * incremental on top of it compares against). 0, or -errno with err.
 */
int qckpt_image_load(char *const *files, unsigned n, const uint8_t *mac_key, size_t mac_key_len,
		     bool hashes_only, struct qckpt_image *im, char *err, size_t errlen);
void qckpt_image_free(struct qckpt_image *im);

/* One file on its own (its parents not read): every record as above, and
 * its domain state as the layout allows; its vCPUs and device bytes. */
int qckpt_file_check(const char *path, const uint8_t *mac_key, size_t mac_key_len,
		     unsigned *vcpus, uint64_t *device_bytes, char *err, size_t errlen);

/* Write im (loaded with content) as one full checkpoint to fd: what a
 * merge of its chain is. 0 or -errno; the digest and the bytes in res_*. */
int qckpt_image_write(const struct qckpt_image *im, int fd, const uint8_t *mac_key,
		      size_t mac_key_len, uint8_t image_uuid[16], uint8_t digest[16],
		      uint64_t *file_bytes, char *err, size_t errlen);

/* ---- capture: QEMU's stream into a checkpoint file ---- */

struct qckpt_capture_opts {
	const char *domain_name;	/* into HEADER */
	const char *xml;		/* the domain's XML, stored as it is */
	unsigned vcpus;
	bool was_running;
	/* An incremental: the parent image (hashes loaded) and its identity. */
	const struct qckpt_image *parent;
	const uint8_t *mac_key;
	size_t mac_key_len;
	enum ckpt_compressor compress;	/* what compresses the pages (0: LZ4) */
};

struct qckpt_capture_stats {
	uint64_t stream_bytes;		/* QEMU's stream */
	uint64_t pages_seen;		/* page items of the stream */
	uint64_t pages_written;		/* pages with content in the file */
	uint64_t pages_unchanged;	/* skipped: as in the parent */
	uint64_t device_bytes;
	uint64_t file_bytes;
	uint8_t image_uuid[16];
	uint8_t digest[16];
};

struct qckpt_capture;

/* A capture writing to fd (not owned); NULL with err. */
struct qckpt_capture *qckpt_capture_new(int fd, const struct qckpt_capture_opts *o,
					char *err, size_t errlen);
/* A qstream_event_fn: the parser's events, in order. */
int qckpt_capture_event(void *capture, const struct qstream_event *ev);
/* After the parser's END: the state records, END, INDEX and COMMIT. */
int qckpt_capture_finish(struct qckpt_capture *c);
const char *qckpt_capture_errmsg(const struct qckpt_capture *c);
void qckpt_capture_stats(const struct qckpt_capture *c, struct qckpt_capture_stats *out);
void qckpt_capture_free(struct qckpt_capture *c);

#endif
