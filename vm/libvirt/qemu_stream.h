/*
 * QEMU's migration stream, the subset QEMU 7.2 writes for a pre-copy
 * migration with no stream-altering capability (QEMU-STREAM.md beside this
 * file is normative). A push parser turns the bytes QEMU sends, in whatever
 * chunks a socket delivers them, into events: the configuration, the RAM
 * block list, each page, the end of each RAM section, and the device state
 * from the first device section on, carried intact. A writer turns those
 * events back into a stream that a QEMU 7.2 `-incoming` loads, byte for
 * byte the stream they came from. The return path's messages (destination
 * to source) have a parser and an encoder of their own.
 *
 * Everything the parser reads is hostile until checked: each refusal names
 * its reason (enum qstream_error and a message), a stream-altering
 * capability by its QEMU name.
 */
#ifndef QEMU_STREAM_H
#define QEMU_STREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define QSTREAM_PAGE_SIZE	4096u		/* x86's TARGET_PAGE_SIZE */
#define QSTREAM_NAME_MAX	255u		/* RAMBlock idstr, machine type */
#define QSTREAM_MAX_BLOCKS	128u		/* RAMBlocks in the list */
#define QSTREAM_MAX_RAM		(1ull << 48)	/* bytes: each block, and all */

/* Why a parser stopped; internal, never written anywhere. */
enum qstream_error {
	QSTREAM_OK = 0,
	QSTREAM_E_TRUNCATED,	/* input ended before the device state */
	QSTREAM_E_MAGIC,	/* not a QEMU stream */
	QSTREAM_E_VERSION,	/* stream version not 3, ram section not 4 */
	QSTREAM_E_CAPABILITY,	/* a stream-altering capability (or a multifd
				 * channel's magic): the message names it */
	QSTREAM_E_UNKNOWN,	/* unknown item, command, flag, subsection */
	QSTREAM_E_ORDER,	/* not allowed at this point of the stream */
	QSTREAM_E_DUPLICATE,	/* a second one of what comes once */
	QSTREAM_E_LENGTH,	/* a length or count over its cap or wrong */
	QSTREAM_E_RANGE,	/* page outside its block, unknown block */
	QSTREAM_E_FIELD,	/* a value the format does not allow */
	QSTREAM_E_FOOTER,	/* section footer missing or mismatched */
	QSTREAM_E_CONSUMER,	/* the event callback refused */
	QSTREAM_E_COUNT
};

const char *qstream_error_name(enum qstream_error e);

/* The header and the configuration section: the stream's first event. */
struct qstream_config {
	bool has_machine;		/* a configuration section was sent */
	char machine[QSTREAM_NAME_MAX + 1];	/* "pc-i440fx-7.2" */
	bool has_uuid;			/* its configuration/uuid subsection */
	uint8_t uuid[16];
};

struct qstream_block {
	char idstr[QSTREAM_NAME_MAX + 1];	/* "pc.ram", NUL-terminated */
	uint64_t used_length;			/* bytes, whole pages */
};

/* Which of the "ram" section's three kinds of section. */
enum qstream_ram_section {
	QSTREAM_RAM_SETUP,	/* SECTION_START: the block list */
	QSTREAM_RAM_ITERATE,	/* SECTION_PART: one iteration's pages */
	QSTREAM_RAM_COMPLETE,	/* SECTION_END: the last pages */
};

enum qstream_command {
	QSTREAM_CMD_OPEN_RETURN_PATH,
	QSTREAM_CMD_PING,
};

enum qstream_event_type {
	QSTREAM_EV_CONFIG = 1,	/* u.config: first, exactly once */
	QSTREAM_EV_COMMAND,	/* u.command, between sections */
	QSTREAM_EV_RAM_BEGIN,	/* u.ram: a "ram" section begins */
	QSTREAM_EV_RAM_BLOCKS,	/* u.blocks: the list, in the setup section */
	QSTREAM_EV_RAM_PAGE,	/* u.page, in an iterate or complete section */
	QSTREAM_EV_RAM_EOS,	/* u.ram: the section ended (EOS, footer) */
	QSTREAM_EV_DEVICE,	/* u.device: device state, intact, in order */
	QSTREAM_EV_END,		/* the input ended after the device state */
};

struct qstream_event {
	enum qstream_event_type type;
	uint64_t offset;		/* stream offset of the item's first byte */
	union {
		const struct qstream_config *config;
		struct {
			enum qstream_command cmd;
			uint32_t value;		/* PING's */
		} command;
		struct {
			enum qstream_ram_section kind;
			uint32_t section_id;
		} ram;
		struct {
			const struct qstream_block *list;
			unsigned count;
		} blocks;
		struct {
			unsigned block;		/* index in the block list */
			uint64_t offset;	/* in the block, page aligned */
			const uint8_t *data;	/* QSTREAM_PAGE_SIZE bytes, or */
			uint8_t fill;		/* data NULL: every byte is fill */
		} page;
		struct {
			const uint8_t *data;
			size_t len;
		} device;
	} u;
};

/* Pointers in an event are valid only during the callback. Returns 0, or
 * a negative errno that stops the parser (QSTREAM_E_CONSUMER). */
typedef int (*qstream_event_fn)(void *opaque, const struct qstream_event *ev);

struct qstream_stats {
	uint64_t bytes;			/* the whole stream */
	uint64_t pages;			/* PAGE items (QEMU's "normal") */
	uint64_t zero_pages;		/* ZERO items (QEMU's "duplicate") */
	uint64_t ram_sections;		/* START, PART and END of "ram" */
	uint64_t device_bytes;		/* from the first device section on */
};

/* ---- parser ------------------------------------------------------------ */

struct qstream_parser;

struct qstream_parser *qstream_parser_new(qstream_event_fn fn, void *opaque);
/* Before the first byte: the stream is one of QEMU's background-snapshot,
 * whose RAM ends with its last iteration (no END section; QEMU-STREAM.md). */
void qstream_parser_background_snapshot(struct qstream_parser *p);
void qstream_parser_free(struct qstream_parser *p);

/*
 * Feed the next len bytes, any amount. Returns 0, -EBADMSG for input the
 * format refuses (reason in qstream_parser_error/errmsg), or the callback's
 * errno. Errors stick: every later call returns the same.
 */
int qstream_parser_feed(struct qstream_parser *p, const void *data, size_t len);
/* The input ended: 0 with QSTREAM_EV_END when it was inside the device
 * state (the only place a stream may end), else -EBADMSG, truncated. */
int qstream_parser_finish(struct qstream_parser *p);
enum qstream_error qstream_parser_error(const struct qstream_parser *p);
const char *qstream_parser_errmsg(const struct qstream_parser *p);
const struct qstream_stats *qstream_parser_stats(const struct qstream_parser *p);
/* Whether the device state began: from then on the rest is opaque. */
bool qstream_parser_in_device_state(const struct qstream_parser *p);

/* ---- writer ------------------------------------------------------------ */

/* Where a writer's bytes go: all of buf or a negative errno. */
struct qstream_sink {
	int (*write)(void *opaque, const void *buf, size_t len);
	void *opaque;
};

struct qstream_writer;

struct qstream_writer *qstream_writer_new(const struct qstream_sink *sink);
/* Flushes nothing: call qstream_writer_flush first. */
void qstream_writer_free(struct qstream_writer *w);

/*
 * In the order the parser's events come; the writer refuses (-EINVAL, a
 * message in qstream_writer_errmsg) what the parser would refuse, so that
 * what it writes always parses. Every call is a no-op once one failed; the
 * first error sticks. Output is buffered: qstream_writer_flush pushes it
 * to the sink (QSTREAM_EV_END does too).
 */
int qstream_writer_header(struct qstream_writer *w, const struct qstream_config *cfg);
int qstream_writer_command(struct qstream_writer *w, enum qstream_command cmd,
			   uint32_t value);
int qstream_writer_ram_begin(struct qstream_writer *w, enum qstream_ram_section kind,
			     uint32_t section_id);
int qstream_writer_ram_blocks(struct qstream_writer *w, const struct qstream_block *list,
			      unsigned count);
int qstream_writer_ram_page(struct qstream_writer *w, unsigned block, uint64_t offset,
			    const void *data);
int qstream_writer_ram_zero(struct qstream_writer *w, unsigned block, uint64_t offset,
			    uint8_t fill);
int qstream_writer_ram_eos(struct qstream_writer *w);
int qstream_writer_device(struct qstream_writer *w, const void *data, size_t len);
/* Any parser event, dispatched to the calls above. */
int qstream_writer_event(struct qstream_writer *w, const struct qstream_event *ev);
int qstream_writer_flush(struct qstream_writer *w);
int qstream_writer_error(const struct qstream_writer *w);
const char *qstream_writer_errmsg(const struct qstream_writer *w);
const struct qstream_stats *qstream_writer_stats(const struct qstream_writer *w);

/* ---- return path ------------------------------------------------------- */

/* The messages a pre-copy destination sends its source. */
enum qstream_rp_type {
	QSTREAM_RP_SHUT,	/* the last message: value 0 = loaded, else failed */
	QSTREAM_RP_PONG,	/* value: the PING's */
	QSTREAM_RP_RESUME_ACK,	/* value: as sent */
};

struct qstream_rp_msg {
	enum qstream_rp_type type;
	uint32_t value;
};

#define QSTREAM_RP_MSG_LEN	8	/* every message above, encoded */

/* Encodes m into out; returns QSTREAM_RP_MSG_LEN, or 0 for a bad type. */
size_t qstream_rp_encode(const struct qstream_rp_msg *m, uint8_t out[QSTREAM_RP_MSG_LEN]);

struct qstream_rp_parser;

typedef int (*qstream_rp_fn)(void *opaque, const struct qstream_rp_msg *m);

struct qstream_rp_parser *qstream_rp_parser_new(qstream_rp_fn fn, void *opaque);
void qstream_rp_parser_free(struct qstream_rp_parser *rp);
/* As qstream_parser_feed; nothing may follow SHUT. */
int qstream_rp_parser_feed(struct qstream_rp_parser *rp, const void *data, size_t len);
/* 0 when the input ended between messages, -EBADMSG inside one. */
int qstream_rp_parser_finish(struct qstream_rp_parser *rp);
enum qstream_error qstream_rp_parser_error(const struct qstream_rp_parser *rp);
const char *qstream_rp_parser_errmsg(const struct qstream_rp_parser *rp);

#endif
