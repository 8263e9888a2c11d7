/*
 * QEMU's migration stream carried as vmigrate's records (QEMU-STREAM.md,
 * "Carried as records", is normative). The encoder takes the parser's
 * events on the source: RAM pages become ckpt-format PAGES records (zero
 * pages as zero runs, LZ4 where it pays, every record checksummed, the
 * whole sealed by COMMIT), everything else becomes an event message
 * carried intact (the configuration, commands, section boundaries, the
 * block list, device state). The decoder on the destination checks both
 * and drives the stream writer, so the destination QEMU gets a valid
 * stream with the pages in the order QEMU sent them.
 *
 * What the encoder emits and the decoder takes are messages, each a kind
 * and a payload; whoever carries them keeps their order and their bounds
 * (libvirt_frames.c puts one in a frame). Both ends are hostile to each
 * other until checked: the decoder refuses what the format does not allow
 * with a message that says what.
 */
#ifndef QEMU_STREAM_RECORDS_H
#define QEMU_STREAM_RECORDS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "ckpt.h"
#include "qemu_stream.h"

/* Message kinds: values fixed on the wire (QEMU-STREAM.md). */
#define QSREC_MSG_EVENT		1	/* one stream event that is not a page */
#define QSREC_MSG_RECORDS	2	/* bytes of the ckpt-format stream */

/* Event codes, the first le32 of an EVENT message. */
#define QSREC_EV_CONFIG		1
#define QSREC_EV_COMMAND	2
#define QSREC_EV_RAM_BEGIN	3
#define QSREC_EV_RAM_BLOCKS	4
#define QSREC_EV_RAM_EOS	5
#define QSREC_EV_DEVICE		6

/* Largest EVENT message: device state in pieces of QSREC_DEVICE_CHUNK
 * (a block list, at most 8 + 64 x (1 + 255 + 8) bytes, is smaller). */
#define QSREC_DEVICE_CHUNK	(128u << 10)
#define QSREC_EVENT_MAX		(4u + QSREC_DEVICE_CHUNK)
/* Largest RECORDS message: one whole record (the encoder sends one a message). */
#define QSREC_RECORDS_MAX	(CKPT_MAGIC_LEN + sizeof(struct ckpt_rec_hdr) + CKPT_MAX_PAYLOAD)

/* Where the encoder's messages go: all of iov as one message of kind, or
 * a negative errno (which stops the encoder). */
struct qsrec_out {
	int (*send)(void *opaque, unsigned kind, const struct iovec *iov, int iovcnt);
	void *opaque;
};

struct qsrec_enc_opts {
	const char *guest_name;		/* into the records' HEADER */
	bool lz4;			/* try LZ4 on pages */
	bool lz4_auto;			/* ... only where it pays (lz4_auto.h) */
	bool zstd;			/* zstd instead of LZ4 (format 1.2: for a
					 * destination that reads it) */
	unsigned batch_pages;		/* pages a PAGES record, 0 = default */
	bool queued;			/* out.send only queues: another thread sends */
};

struct qsrec_enc_stats {
	uint64_t record_bytes;		/* the ckpt-format stream */
	uint64_t event_bytes;		/* EVENT payloads, device state included */
	uint64_t pages[CKPT_ENC_COUNT];	/* by CKPT_ENC_*, zero runs as pages */
};

struct qsrec_encoder;

struct qsrec_encoder *qsrec_encoder_new(const struct qsrec_out *out,
					const struct qsrec_enc_opts *opts);
void qsrec_encoder_free(struct qsrec_encoder *e);
/* A qstream_event_fn: pass the parser's events in order. 0 or -errno;
 * the reason of a refusal is in qsrec_encoder_errmsg. Errors stick. */
int qsrec_encoder_event(void *encoder, const struct qstream_event *ev);
const char *qsrec_encoder_errmsg(const struct qsrec_encoder *e);
void qsrec_encoder_stats(const struct qsrec_encoder *e, struct qsrec_enc_stats *out);

struct qsrec_decoder;

/* The decoder writes the re-synthesised stream through w (not owned). */
struct qsrec_decoder *qsrec_decoder_new(struct qstream_writer *w);
void qsrec_decoder_free(struct qsrec_decoder *d);
/* Room for the next message of len bytes (len at most QSREC_EVENT_MAX or
 * QSREC_RECORDS_MAX, by kind), to receive it into without a copy; NULL
 * for a length out of bounds or no memory. */
uint8_t *qsrec_decoder_space(struct qsrec_decoder *d, unsigned kind, size_t len);
/* The message received into the space: checked and applied. 0, -EBADMSG
 * for what the format refuses, or the writer's error. Errors stick. */
int qsrec_decoder_message(struct qsrec_decoder *d, unsigned kind, size_t len);
/* The same for a message in caller memory (tests, the fuzzer). */
int qsrec_decoder_feed(struct qsrec_decoder *d, unsigned kind, const void *buf, size_t len);
/* The sender said the stream ended: 0 when it was whole (records
 * committed, device state begun), else -EBADMSG. Flushes the writer. */
int qsrec_decoder_finish(struct qsrec_decoder *d);
const char *qsrec_decoder_errmsg(const struct qsrec_decoder *d);
/* Whether every record arrived and the COMMIT matched. */
bool qsrec_decoder_committed(const struct qsrec_decoder *d);
/* Whether device state began (the destination QEMU may close from then on). */
bool qsrec_decoder_device_begun(const struct qsrec_decoder *d);
/* Bytes of the ckpt-format stream received so far. */
uint64_t qsrec_decoder_record_bytes(const struct qsrec_decoder *d);

#endif
