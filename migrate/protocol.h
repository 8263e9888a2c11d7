/*
 * Control messages from the destination back to the source (and GO from
 * the source after the stream): private to migrate/.
 */
#ifndef MIGRATE_PROTOCOL_H
#define MIGRATE_PROTOCOL_H

#include <assert.h>
#include <stdint.h>

#include "ckpt.h"
#include "transport.h"

#define MIG_MSG_MAGIC	0x4d474d56u	/* "VMGM" */
#define MIG_MSG_MAX	1024u

/* Wire values; fixed forever. */
enum mig_msg_type {
	MIG_MSG_READY = 1,	/* dst: guest built, send pages */
	MIG_MSG_LOADED = 2,	/* dst: stream complete and verified, state loaded */
	MIG_MSG_GO = 3,		/* src: I will never run it again: resume it */
	MIG_MSG_RUNNING = 4,	/* dst: it runs here */
	MIG_MSG_ERROR = 5,	/* either: payload is a reason, then the end */
	MIG_MSG_ROUND = 6,	/* dst: reached MARKER n (le64): rounds before n applied */
	MIG_MSG_STANDBY = 7,	/* src: I run on; keep your copy paused, as a standby */
	MIG_MSG_DIGESTS = 8,	/* dst, standby sync: digests of pages it holds
				 * already (digests.h); count 0 ends them */
	MIG_MSG_PAGE_REQ = 9,	/* dst, post-copy, fault channel: pages its guest
				 * waits for (struct mig_page_req each) */
	MIG_MSG_ALL_IN = 10,	/* dst, post-copy: every owed page arrived (struct
				 * mig_all_in): the source may let its copy go */
	MIG_MSG_MISSING = 11,	/* dst, post-copy recovery: bitmap words of the
				 * pages it still lacks; words 0 ends them */
};

struct mig_page_req {
	uint32_t slot;		/* region table position */
	uint32_t reserved;
	uint64_t page;
};
static_assert(sizeof(struct mig_page_req) == 16, "a page request is 16 bytes");
#define MIG_PAGE_REQ_MAX	(MIG_MSG_MAX / sizeof(struct mig_page_req))

struct mig_all_in {
	uint64_t requests;	/* pages the guest asked for */
	uint32_t fault_p50_us, fault_p99_us;	/* its waits for them */
};
static_assert(sizeof(struct mig_all_in) == 16, "ALL_IN is 16 bytes");

struct mig_missing_hdr {
	uint32_t slot;
	uint32_t words;		/* le64 bitmap words after this header */
	uint64_t first_word;
};
static_assert(sizeof(struct mig_missing_hdr) == 16, "MISSING's header is 16 bytes");
#define MIG_MISSING_WORDS	((MIG_MSG_MAX - sizeof(struct mig_missing_hdr)) / 8)

struct mig_msg_hdr {
	uint32_t magic;
	uint16_t type;
	uint16_t reserved;
	uint32_t len;		/* payload bytes, at most MIG_MSG_MAX */
};
static_assert(sizeof(struct mig_msg_hdr) == 12, "message header is 12 bytes");

int mig_msg_send(struct xport *x, uint16_t type, const void *payload, uint32_t len);
/* Receive one message; text payloads come back NUL-terminated in buf, and
 * *len (may be NULL) says how long the payload was. */
int mig_msg_recv(struct xport *x, uint16_t *type, char *buf, size_t buflen, uint32_t *len);

/*
 * A source that gives a stream up before its COMMIT says why in it: an
 * ABORT record (FORMAT.md, STATE kind 9) on the control stream and on
 * every data stream, so the destination reports "cancelled by the source"
 * or the source's reason, not the stream's end.
 */
int mig_abort_write(struct ckpt_writer *w, const char *why);
/* An ABORT record's reason as a string (cut to len - 1, controls as '?'). */
void mig_abort_reason(const struct ckpt_record *rec, char *out, size_t len);
/* What the destination reports for that reason. */
void mig_abort_explain(const char *reason, char *err, size_t errlen);

#endif
