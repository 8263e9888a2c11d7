/*
 * libvirt's QEMU save image, synthesised from a domain checkpoint: what
 * virDomainRestoreFlags reads (libvirt's qemu_saveimage.h is the authority;
 * QEMU-STREAM.md, "As a libvirt save image", writes the subset used down).
 * A header, the domain's XML, then QEMU's stream: the image's pages (zero
 * pages as QEMU's zero items) and its device state, intact.
 */
#ifndef LIBVIRT_SAVE_IMAGE_H
#define LIBVIRT_SAVE_IMAGE_H

#include <assert.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "qemu_ckpt.h"
#include "qemu_stream.h"

#define LVSAVE_MAGIC		"LibvirtQemudSave"	/* 16 bytes, no NUL */
#define LVSAVE_VERSION		2
#define LVSAVE_MAGIC_PARTIAL	"LibvirtQemudPart"	/* libvirt's, while it writes */
#define LVSAVE_FORMAT_RAW	0			/* no compression program */
#define LVSAVE_DATA_MAX		(QCKPT_XML_MAX + (2u << 20))	/* XML, cookie, padding */

/* libvirt's virQEMUSaveHeader: host-endian, which on x86 is little-endian. */
struct lvsave_header {
	char magic[16];
	uint32_t version;
	uint32_t data_len;		/* the XML and its NUL (no cookie, no padding) */
	uint32_t was_running;		/* 1: libvirt resumes the domain after loading it */
	uint32_t format;		/* LVSAVE_FORMAT_RAW */
	uint32_t cookie_offset;		/* 0: no cookie */
	uint32_t unused[14];
};
static_assert(sizeof(struct lvsave_header) == 92, "libvirt's save header is 92 bytes");

/* The save header for xml (its length without NUL) into h. */
void lvsave_header(struct lvsave_header *h, size_t xml_len, bool was_running);

/*
 * A header libvirt wrote (its memory snapshot into our FIFO): the layout
 * above, partial (written first, LVSAVE_MAGIC_PARTIAL) or complete, version
 * LVSAVE_VERSION, raw (a compressed image names its program in err: qemu.conf's
 * snapshot_image_format), data_len within LVSAVE_DATA_MAX. 0 and the bytes of
 * XML, cookie and padding before QEMU's stream in *data_len; or -EBADMSG
 * (-ENOTSUP for compression) with err.
 */
int lvsave_header_check(const struct lvsave_header *h, bool partial, uint32_t *data_len,
			char *err, size_t errlen);

/*
 * The whole save image of im (loaded with its pages) through sink: header,
 * XML, QEMU's stream. running: what was_running says. 0, or -errno with
 * err: the writer refuses what QEMU would (QEMU-STREAM.md, "Writing"), a
 * failed sink stops it (-EPIPE when libvirt went away).
 */
int lvsave_write(const struct qckpt_image *im, bool running, const struct qstream_sink *sink,
		 char *err, size_t errlen);

#endif
