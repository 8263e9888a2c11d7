/*
 * On-the-wire and on-disk layout of vmigrate records (format 1.x).
 * FORMAT.md beside this file is normative; these structs mirror it byte for
 * byte. Every multi-byte field is little-endian; use the ckpt_le helpers.
 */
#ifndef CKPT_WIRE_H
#define CKPT_WIRE_H

#include <assert.h>
#include <stdint.h>

/* Every stream and file starts with these 8 bytes, then records. */
#define CKPT_MAGIC		"VMIGCKPT"
#define CKPT_MAGIC_LEN		8
#define CKPT_VERSION_MAJOR	1
#define CKPT_VERSION_MINOR	2
#define CKPT_MINOR_LIVE		1	/* the first minor with LIVE records: written
					 * only by streams that use them */
#define CKPT_MINOR_ZSTD		2	/* the first minor with ZSTD pages: written
					 * only by writers that may use them */

/* Record types. Values are fixed forever; retired ones stay reserved. */
#define CKPT_REC_HEADER		1
#define CKPT_REC_PARENT		2
#define CKPT_REC_MARKER		3
#define CKPT_REC_PAGES		4
#define CKPT_REC_STATE		5
#define CKPT_REC_END		6
#define CKPT_REC_INDEX		7
#define CKPT_REC_COMMIT		8

/* Record header flags. */
#define CKPT_RECF_OPTIONAL	0x0001u	/* a reader may skip it if unknown */
#define CKPT_RECF_LIVE		0x0002u	/* PAGES read from running memory: a
					 * checksum for each page (format 1.1) */
#define CKPT_RECF_KNOWN		(CKPT_RECF_OPTIONAL | CKPT_RECF_LIVE)

/* Image header flags. */
#define CKPT_HDRF_INCREMENTAL	0x00000001u
#define CKPT_HDRF_KNOWN		CKPT_HDRF_INCREMENTAL

/* Marker kinds. */
#define CKPT_MARK_ROUND		1	/* live migration / live checkpoint round */
#define CKPT_MARK_EPOCH		2	/* replication epoch */

/* Page encodings in a PAGES record. */
#define CKPT_ENC_ZERO		0	/* `size` = run length in pages, no data */
#define CKPT_ENC_RAW		1	/* page_size bytes */
#define CKPT_ENC_LZ4		2	/* LZ4 block, decodes to page_size bytes */
#define CKPT_ENC_DELTA		3	/* LZ4 block of (new XOR previous page) */
#define CKPT_ENC_ZSTD		4	/* zstd frame, decodes to page_size bytes (1.2) */
#define CKPT_ENC_COUNT		5	/* encodings defined: sizes arrays indexed by them */

/* Digest and MAC algorithms named in COMMIT. */
#define CKPT_DIGEST_XXH3_128	1
#define CKPT_MAC_NONE		0
#define CKPT_MAC_HMAC_SHA256	1

/* Limits a reader enforces before allocating anything. */
#define CKPT_MAX_PAYLOAD	(16u << 20)
#define CKPT_MAX_REGIONS	64u
#define CKPT_MAX_BATCH_ENTRIES	4096u
#define CKPT_MAX_REGION_BYTES	(1ull << 40)
#define CKPT_MAX_INDEX_ENTRIES	(1u << 20)
#define CKPT_MIN_PAGE_SIZE	4096u
#define CKPT_MAX_PAGE_SIZE	65536u
#define CKPT_NAME_LEN		64u

struct ckpt_rec_hdr {
	uint16_t type;
	uint16_t flags;
	uint32_t length;	/* payload bytes following this header */
	uint64_t seq;		/* 0 for HEADER, then +1 per record */
	uint64_t checksum;	/* XXH3-64 of the first 16 header bytes || payload */
};
static_assert(sizeof(struct ckpt_rec_hdr) == 24, "record header is 24 bytes");
#define CKPT_REC_HDR_SUMMED	16	/* header bytes covered by the checksum */

struct ckpt_region_desc {
	uint32_t id;
	uint32_t flags;		/* must be 0 in 1.0 */
	uint64_t gpa;		/* guest-physical base */
	uint64_t size;		/* bytes, a multiple of page_size */
};
static_assert(sizeof(struct ckpt_region_desc) == 24, "region entry is 24 bytes");

struct ckpt_header_rec {
	uint16_t major;
	uint16_t minor;
	uint32_t flags;
	uint32_t page_size;
	uint32_t region_count;
	uint8_t guest_uuid[16];
	uint8_t image_uuid[16];
	char guest_name[CKPT_NAME_LEN];	/* NUL-padded, NUL-terminated */
	uint64_t created_ns;		/* CLOCK_REALTIME of the writer */
	/* struct ckpt_region_desc regions[region_count] follow */
};
static_assert(sizeof(struct ckpt_header_rec) == 120, "header record is 120 bytes");

struct ckpt_parent_rec {
	uint8_t image_uuid[16];
	uint8_t digest[16];		/* the parent's COMMIT digest */
};
static_assert(sizeof(struct ckpt_parent_rec) == 32, "parent record is 32 bytes");

struct ckpt_marker_rec {
	uint32_t kind;
	uint32_t reserved;		/* must be 0 */
	uint64_t number;		/* strictly increasing per kind */
};
static_assert(sizeof(struct ckpt_marker_rec) == 16, "marker record is 16 bytes");

struct ckpt_pages_rec {
	uint32_t region_id;
	uint32_t count;			/* entries that follow */
	/* struct ckpt_page_entry entries[count], then the data area */
};
static_assert(sizeof(struct ckpt_pages_rec) == 8, "pages record head is 8 bytes");

struct ckpt_page_entry {
	uint64_t page;			/* page index within the region */
	uint32_t size;			/* data bytes, or run length for ZERO */
	uint8_t encoding;
	uint8_t reserved[3];		/* must be 0 */
};
static_assert(sizeof(struct ckpt_page_entry) == 16, "page entry is 16 bytes");

struct ckpt_state_rec {
	uint32_t kind;			/* CKPT_STATE_* */
	uint32_t instance;		/* vCPU index, device instance */
	uint32_t version;		/* of this kind's payload layout */
	uint32_t reserved;		/* must be 0 */
	/* kind-specific bytes follow */
};
static_assert(sizeof(struct ckpt_state_rec) == 16, "state record head is 16 bytes");

/* State kinds; the payload layouts are owned by the guest backends. */
#define CKPT_STATE_VM		1	/* VM-wide: vCPU count, backend, clock */
#define CKPT_STATE_VCPU		2
#define CKPT_STATE_IRQCHIP	3
#define CKPT_STATE_CLOCK	4
#define CKPT_STATE_DEVICE	5
#define CKPT_STATE_GUEST	6	/* payload-specific (e.g. memtouch params) */
#define CKPT_STATE_EPOCH	7	/* seal of a replication epoch (below) */
#define CKPT_STATE_SWITCH	8	/* le64 token: the primary stopped for good (below) */
#define CKPT_STATE_ABORT	9	/* the reason: the writer gives the stream up */
#define CKPT_ABORT_MAX		255	/* bytes of an ABORT's reason */
#define CKPT_STATE_POSTCOPY	10	/* pages still owed at a post-copy switch (below) */
#define CKPT_STATE_QEMU		11	/* a libvirt domain's (vm/libvirt/QEMU-STREAM.md) */

/* CKPT_STATE_POSTCOPY, version 1: a bitmap of region_id's pages, page
 * first_page + k owed when bit k (of le64 word k / 64) is set. */
struct ckpt_postcopy_rec {
	uint32_t region_id;
	uint32_t reserved;
	uint64_t first_page;
	uint64_t count;			/* pages the bitmap covers */
	/* then (count + 63) / 64 le64 words */
};
static_assert(sizeof(struct ckpt_postcopy_rec) == 24, "postcopy record is 24 bytes");

/* CKPT_STATE_EPOCH, version 1: the last record of epoch `epoch`. */
struct ckpt_epoch_seal {
	uint64_t token;			/* fencing token of the primary that wrote it */
	uint64_t epoch;			/* = the number of the EPOCH marker before it */
	uint64_t pages;			/* page entries of the epoch (zero runs count pages) */
	uint64_t states;		/* STATE records of the epoch before this one */
};
static_assert(sizeof(struct ckpt_epoch_seal) == 32, "epoch seal is 32 bytes");

struct ckpt_end_rec {
	uint64_t pages_total;		/* page entries written (zero runs count pages) */
	uint64_t records;		/* records before this one */
};
static_assert(sizeof(struct ckpt_end_rec) == 16, "end record is 16 bytes");

struct ckpt_index_rec {
	uint32_t region_id;
	uint32_t count;
	uint64_t first_page;
	/* uint64_t offset[count]: file offset of the PAGES record holding the
	 * page's latest version, 0 when this file does not hold the page */
};
static_assert(sizeof(struct ckpt_index_rec) == 16, "index record head is 16 bytes");

struct ckpt_commit_rec {
	uint32_t digest_alg;
	uint32_t mac_alg;
	uint64_t index_offset;		/* first INDEX record, 0 when none */
	uint64_t records;		/* records before this one */
	uint8_t digest[16];
	uint8_t mac[32];
};
static_assert(sizeof(struct ckpt_commit_rec) == 72, "commit record is 72 bytes");

/* A file ends with exactly one COMMIT record of this size. */
#define CKPT_COMMIT_TOTAL	(sizeof(struct ckpt_rec_hdr) + sizeof(struct ckpt_commit_rec))

#endif
