/*
 * ckpt-format: the one record format for live streams and checkpoint files.
 * A writer turns pages, state and markers into records on a sink; a reader
 * pulls records from a source and refuses anything FORMAT.md does not allow.
 */
#ifndef CKPT_H
#define CKPT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "ckpt_wire.h"
#include "page_codec.h"

struct ckpt_region {
	uint32_t id;
	uint64_t gpa;
	uint64_t size;
};

/* What the HEADER record says about a guest image. */
struct ckpt_image_info {
	uint16_t major, minor;		/* filled in by the reader */
	uint32_t flags;			/* CKPT_HDRF_* */
	uint32_t page_size;
	uint8_t guest_uuid[16];
	uint8_t image_uuid[16];
	char guest_name[CKPT_NAME_LEN];
	uint64_t created_ns;
	uint32_t region_count;
	struct ckpt_region regions[CKPT_MAX_REGIONS];
};

/* Where records go: writes all of iov or fails with a negative errno. */
struct ckpt_sink {
	int (*writev)(void *opaque, const struct iovec *iov, int iovcnt);
	void *opaque;
};

/*
 * Where records come from: reads up to len bytes, looping over short reads.
 * Returns the bytes read (less than len only at end of input) or -errno.
 */
struct ckpt_source {
	long (*read)(void *opaque, void *buf, size_t len);
	void *opaque;
};

/* ---- writer ------------------------------------------------------------ */

struct ckpt_writer_opts {
	struct ckpt_codec_opts codec;
	/* With codec.lz4 (and not codec.zstd): try LZ4 only while it pays,
	 * judged by the measured cost of compressing against that of writing
	 * the bytes it saves (lz4_auto.h). For streams over links of unknown
	 * speed. With codec.zstd the header says format 1.2 (FORMAT.md), which
	 * readers of 1.0 and 1.1 refuse. */
	bool lz4_auto;
	/* The sink only queues what another thread sends: lz4_auto weighs
	 * compressing and sending as overlapping (lz4_auto.h, overlapped). */
	bool lz4_auto_overlapped;
	unsigned batch_pages;		/* entries per PAGES record, 0 = default */
	bool build_index;		/* emit INDEX records (files) */
	/* With a key, COMMIT carries an HMAC-SHA-256 of every byte before it. */
	const uint8_t *mac_key;
	size_t mac_key_len;
	/* PAGES records as LIVE (FORMAT.md): raw pages are sent from where
	 * they are, not copied, each under a checksum of its own, so a page
	 * the guest writes while it is read arrives torn and is owed, not
	 * applied. Only for a stream that sends every such page again (a
	 * migration's dirty log) to a reader that tracks what is owed; not with
	 * a MAC key, not with deltas. The pages must stay mapped until the
	 * record is written. */
	bool live_pages;
};

struct ckpt_writer_stats {
	uint64_t records;
	uint64_t bytes;			/* everything written to the sink */
	uint64_t page_bytes;		/* data area bytes of PAGES records */
	uint64_t data_pages;		/* pages with content in the PAGES records
					 * written: page_bytes is their data (pages[]
					 * also counts those still in the open batch) */
	uint64_t pages[CKPT_ENC_COUNT];	/* by CKPT_ENC_*; zero runs count pages */
	uint64_t run_pages;		/* of pages[CKPT_ENC_ZERO], given as zero runs */
};

/* Of page counts by CKPT_ENC_*: those with content (every encoding but
 * ZERO), and of them those sent compressed (LZ4, DELTA, ZSTD). */
static inline uint64_t ckpt_enc_content_pages(const uint64_t pages[CKPT_ENC_COUNT])
{
	return pages[CKPT_ENC_RAW] + pages[CKPT_ENC_LZ4] + pages[CKPT_ENC_DELTA] +
	       pages[CKPT_ENC_ZSTD];
}

static inline uint64_t ckpt_enc_compressed_pages(const uint64_t pages[CKPT_ENC_COUNT])
{
	return pages[CKPT_ENC_LZ4] + pages[CKPT_ENC_DELTA] + pages[CKPT_ENC_ZSTD];
}

struct ckpt_writer;

struct ckpt_writer *ckpt_writer_new(const struct ckpt_sink *sink,
				    const struct ckpt_writer_opts *opts);
void ckpt_writer_free(struct ckpt_writer *w);

/* Every call below is a no-op once one has failed; the first error sticks. */
int ckpt_writer_header(struct ckpt_writer *w, const struct ckpt_image_info *info);
int ckpt_writer_parent(struct ckpt_writer *w, const uint8_t image_uuid[16],
		       const uint8_t digest[16]);
int ckpt_writer_marker(struct ckpt_writer *w, uint32_t kind, uint64_t number);
/* prev: the version the reader already holds, or NULL. */
int ckpt_writer_page(struct ckpt_writer *w, uint32_t region_id, uint64_t page,
		     const void *data, const void *prev);
int ckpt_writer_zero_run(struct ckpt_writer *w, uint32_t region_id,
			 uint64_t first_page, uint64_t count);
int ckpt_writer_flush(struct ckpt_writer *w);
int ckpt_writer_state(struct ckpt_writer *w, uint32_t kind, uint32_t instance,
		      uint32_t version, bool optional, const void *data,
		      size_t len);
/* END, INDEX (if built) and COMMIT; digest_out (16 bytes) may be NULL. */
int ckpt_writer_finish(struct ckpt_writer *w, uint8_t *digest_out);
int ckpt_writer_error(const struct ckpt_writer *w);
/* The buffers every PAGES record is sent from (entries, page data), so a
 * channel can register them and send records without copying (RDMA).
 * Valid from ckpt_writer_header until ckpt_writer_free; returns how many
 * it filled in (0 before the header). */
int ckpt_writer_buffers(const struct ckpt_writer *w, struct iovec out[2]);
const struct ckpt_writer_stats *ckpt_writer_stats(const struct ckpt_writer *w);

/* ---- reader ------------------------------------------------------------ */

/* Why a reader stopped; internal, never written anywhere. */
enum ckpt_error {
	CKPT_OK = 0,
	CKPT_E_IO,		/* the source failed */
	CKPT_E_TRUNCATED,	/* input ended inside or before a record */
	CKPT_E_MAGIC,
	CKPT_E_VERSION,
	CKPT_E_CHECKSUM,
	CKPT_E_SEQUENCE,	/* seq not previous + 1: lost, repeated, reordered */
	CKPT_E_UNKNOWN_TYPE,	/* a required record type this reader lacks */
	CKPT_E_ORDER,		/* record not allowed here */
	CKPT_E_DUPLICATE,	/* second HEADER/PARENT/END, repeated state or page */
	CKPT_E_LENGTH,		/* length does not fit the record or a cap */
	CKPT_E_RANGE,		/* region, page or offset out of range */
	CKPT_E_FIELD,		/* reserved bits set, bad enum or page size */
	CKPT_E_ENCODING,	/* page data does not decode */
	CKPT_E_DIGEST,		/* COMMIT digest or record count mismatch */
	CKPT_E_TRAILING,	/* bytes after COMMIT */
	CKPT_E_MAC,		/* a key was given and the MAC is missing or wrong */
	CKPT_E_NOMEM,
	CKPT_E_COUNT
};

const char *ckpt_error_name(enum ckpt_error e);

struct ckpt_pages_view {
	uint32_t region_id;
	uint32_t count;
	const struct ckpt_page_entry *entries;	/* little-endian, validated */
	const uint8_t *sums;			/* LIVE: XXH3-64 of each entry's data
						 * (le64), checked when applied; else NULL */
	const uint8_t *data;
	size_t data_len;
	bool applied;				/* read into the target's memory as it
						 * came (ckpt_reader_read_into) */
};

struct ckpt_record {
	uint16_t type;
	uint16_t flags;
	uint64_t seq;
	uint64_t offset;		/* of the record header in the stream */
	const uint8_t *payload;		/* valid until the next call */
	uint32_t length;
	union {
		const struct ckpt_image_info *header;
		struct {
			uint8_t image_uuid[16];
			uint8_t digest[16];
		} parent;
		struct {
			uint32_t kind;
			uint64_t number;
		} marker;
		struct ckpt_pages_view pages;
		struct {
			uint32_t kind, instance, version;
			const uint8_t *data;
			size_t len;
		} state;
		struct {
			uint64_t pages_total;
		} end;
		struct {
			uint32_t region_id, count;
			uint64_t first_page;
			const uint8_t *offsets;	/* count little-endian u64 */
		} index;
		struct {
			uint64_t index_offset;
			uint8_t digest[16];
			uint32_t mac_alg;
			uint8_t mac[32];
		} commit;
	} u;
};

struct ckpt_reader_opts {
	bool allow_trailing;		/* live streams: stop after COMMIT */
	/* With a key, the image must carry a matching HMAC-SHA-256. */
	const uint8_t *mac_key;
	size_t mac_key_len;
	/* Read as format 1.0's (1.1's) readers do, refusing later minors
	 * (tests: a destination of an earlier version). */
	bool only_1_0;
	bool only_1_1;
};

struct ckpt_reader;

struct ckpt_reader *ckpt_reader_new(const struct ckpt_source *src,
				    const struct ckpt_reader_opts *opts);
void ckpt_reader_free(struct ckpt_reader *r);

/*
 * Next record. Returns 0 with *rec filled, 1 after COMMIT when the stream
 * ended properly, or a negative errno (-EBADMSG for bad input) with the
 * reason in ckpt_reader_error() and ckpt_reader_errmsg(). Errors stick.
 * Skippable records of unknown type are passed over silently.
 */
int ckpt_reader_next(struct ckpt_reader *r, struct ckpt_record *rec);
struct ckpt_page_target;
/*
 * From now on, LIVE PAGES records are read straight into target's memory
 * (raw pages land where they belong, with no copy through the reader's
 * buffer) and applied as they are read: ckpt_reader_next returns them with
 * u.pages.applied set, and ckpt_reader_apply on them does nothing. Only for
 * memory nothing else reads meanwhile (a migration's destination before its
 * guest runs); target must outlive the reader and have no place callback.
 */
void ckpt_reader_read_into(struct ckpt_reader *r, const struct ckpt_page_target *target);
enum ckpt_error ckpt_reader_error(const struct ckpt_reader *r);
const char *ckpt_reader_errmsg(const struct ckpt_reader *r);
const struct ckpt_image_info *ckpt_reader_info(const struct ckpt_reader *r);

/* Guest memory a PAGES record decodes into, indexed like the region table. */
struct ckpt_page_target {
	uint8_t *host[CKPT_MAX_REGIONS];	/* NULL: region not mapped */
	/* Optional: make a run of pages zero without touching them (punch a
	 * hole in the guest's memfd); returns 0 or -errno. Without it, zero
	 * pages are checked and cleared only where they are not zero. */
	int (*zero_range)(void *opaque, unsigned slot, uint64_t first_page,
			  uint64_t count);
	void *opaque;
	unsigned zero_range_min;		/* runs shorter are cleared in place */
	/* Optional: write whole pages through the memory's file instead of
	 * the mapping (pwritev into a memfd needs no page fault and no
	 * clearing of fresh pages). fd[slot] < 0 or use_fd false: mapping. */
	bool use_fd;
	int fd[CKPT_MAX_REGIONS];
	uint64_t fd_offset[CKPT_MAX_REGIONS];
	/* Optional, and then it alone receives the pages: count whole decoded
	 * pages from first_page on at data, or count zero pages (data NULL).
	 * For memory that must never be seen half-written (post-copy places
	 * each page atomically with userfaultfd). DELTA is refused. */
	int (*place)(void *opaque, unsigned slot, uint64_t first_page, uint64_t count,
		     const void *data);
	/* Optional, for LIVE records: where torn pages are kept owed (below).
	 * Without it a torn page fails the record. */
	struct ckpt_torn *torn;
};

/*
 * Pages of LIVE records that arrived torn (their checksum did not match:
 * the guest wrote them while they were read) are not applied but owed: a
 * bit a page in owed[slot] until a later record delivers the page whole.
 * The readers of one stream's channels share it (atomic updates).
 */
struct ckpt_torn {
	uint64_t *owed[CKPT_MAX_REGIONS];
	uint64_t owed_pages;		/* bits set now */
	uint64_t torn_pages;		/* pages that arrived torn, in all */
};

/*
 * Decode every page of a PAGES record into target memory. DELTA pages use
 * what the target holds as the previous version. Returns 0 or -EBADMSG with
 * the reason recorded in the reader.
 */
int ckpt_reader_apply(struct ckpt_reader *r, const struct ckpt_record *rec,
		      const struct ckpt_page_target *target);

/* A copy of rec that stays valid after the reader moves on (a standby
 * holds an epoch's records until the epoch is complete): its payload and
 * views point into *owned, which the caller frees. 0 or -ENOMEM. */
int ckpt_record_dup(const struct ckpt_record *rec, struct ckpt_record *out,
		    uint8_t **owned);

/* Region table position of a region id, or -1. */
int ckpt_info_region_slot(const struct ckpt_image_info *info, uint32_t id);

/* ---- random access to files (random_access.c) ----------------------------- */

/* A record header in host order, with the bytes its checksum covers. */
struct ckpt_rec_info {
	uint16_t type, flags;
	uint32_t length;
	uint64_t checksum;
	uint8_t summed[CKPT_REC_HDR_SUMMED];
};

/* The header of the record at offset; -EBADMSG if short or oversized. */
int ckpt_pread_header(int fd, uint64_t offset, struct ckpt_rec_info *out);
/* The record at offset with its payload in *buf (grown with realloc) and
 * its checksum checked: 0, -EBADMSG or -ENOMEM. */
int ckpt_pread_record(int fd, uint64_t offset, struct ckpt_rec_info *out, uint8_t **buf);
/* The payload of the record at offset (its header already read into ri)
 * straight into the caller's buffers, split over parts whose lengths add up
 * to ri->length, its checksum checked: 0, -EBADMSG or -ENOMEM. The parts
 * hold unchecked bytes after a failure. */
int ckpt_pread_payload(int fd, uint64_t offset, const struct ckpt_rec_info *ri,
		       const struct iovec *parts, int nparts);
/* The file's digest recomputed from its record headers (payloads are
 * skipped: their checksums are in the headers) and matched against its
 * COMMIT: 0 with digest set, or -EBADMSG for an incomplete or altered file. */
int ckpt_file_digest(int fd, uint8_t digest[16]);

/* Sources and sinks over memory, for tests, fuzzing and benchmarks. */
struct ckpt_membuf {
	uint8_t *data;
	size_t len, cap, pos;
	bool fixed;			/* data is caller-owned: no growth */
};
void ckpt_membuf_sink(struct ckpt_membuf *m, struct ckpt_sink *sink);
void ckpt_membuf_source(struct ckpt_membuf *m, struct ckpt_source *src);
void ckpt_membuf_release(struct ckpt_membuf *m);

/* A source and a sink over a file descriptor. */
void ckpt_fd_sink(int *fd, struct ckpt_sink *sink);
void ckpt_fd_source(int *fd, struct ckpt_source *src);

#endif
