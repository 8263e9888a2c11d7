/*
 * A libvirt save image from a domain checkpoint (libvirt_save_image.h):
 * libvirt reads the header and the XML, defines the domain and hands the
 * rest, QEMU's stream, to a QEMU started with -incoming.
 */
#include "libvirt_save_image.h"

#include <endian.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#define PAGE	QSTREAM_PAGE_SIZE

void lvsave_header(struct lvsave_header *h, size_t xml_len, bool was_running)
{
	memset(h, 0, sizeof(*h));
	memcpy(h->magic, LVSAVE_MAGIC, sizeof(h->magic));
	h->version = htole32(LVSAVE_VERSION);
	h->data_len = htole32((uint32_t)(xml_len + 1));
	h->was_running = htole32(was_running ? 1 : 0);
	h->format = htole32(LVSAVE_FORMAT_RAW);
}

int lvsave_header_check(const struct lvsave_header *h, bool partial, uint32_t *data_len,
			char *err, size_t errlen)
{
	/* libvirt's virQEMUSaveFormat, in its order */
	static const char *const formats[] = { "raw", "gzip", "bzip2", "xz", "lzop", "zstd" };
	const char *magic = partial ? LVSAVE_MAGIC_PARTIAL : LVSAVE_MAGIC;
	uint32_t format = le32toh(h->format), len = le32toh(h->data_len);

	if (memcmp(h->magic, magic, sizeof(h->magic))) {
		snprintf(err, errlen, "libvirt's save image does not begin with %s", magic);
		return -EBADMSG;
	}
	if (le32toh(h->version) != LVSAVE_VERSION) {
		snprintf(err, errlen, "libvirt's save image is of version %u, not %u",
			 le32toh(h->version), LVSAVE_VERSION);
		return -EBADMSG;
	}
	if (format != LVSAVE_FORMAT_RAW) {
		char what[32];

		if (format < sizeof(formats) / sizeof(formats[0]))
			snprintf(what, sizeof(what), "%s", formats[format]);
		else
			snprintf(what, sizeof(what), "format %u", format);
		snprintf(err, errlen, "libvirt compresses its memory snapshots (%s): vmigrate reads "
			 "QEMU's stream raw only; set snapshot_image_format = \"raw\" in qemu.conf",
			 what);
		return -ENOTSUP;
	}
	if (!len || len > LVSAVE_DATA_MAX || le32toh(h->cookie_offset) >= len) {
		snprintf(err, errlen, "libvirt's save image has %u bytes of XML and cookie "
			 "(cookie at %u; at most %u)", len, le32toh(h->cookie_offset),
			 LVSAVE_DATA_MAX);
		return -EBADMSG;
	}
	*data_len = len;
	return 0;
}

/* QEMU's stream of im: the setup section with the block list, one
 * iteration with every page, an empty last section, the device state. */
static int write_stream(const struct qckpt_image *im, struct qstream_writer *w)
{
	uint32_t id = im->ram_section_id;

	qstream_writer_header(w, &im->cfg);
	qstream_writer_ram_begin(w, QSTREAM_RAM_SETUP, id);
	qstream_writer_ram_blocks(w, im->blocks, im->nblocks);
	qstream_writer_ram_eos(w);
	qstream_writer_ram_begin(w, QSTREAM_RAM_ITERATE, id);
	for (unsigned b = 0; b < im->nblocks && !qstream_writer_error(w); b++) {
		uint64_t pages = im->blocks[b].used_length / PAGE;

		for (uint64_t p = 0; p < pages; p++) {
			const uint8_t *pg = im->ram[b] + p * PAGE;

			if (ckpt_page_is_zero(pg, PAGE))
				qstream_writer_ram_zero(w, b, p * PAGE, 0);
			else
				qstream_writer_ram_page(w, b, p * PAGE, pg);
		}
	}
	qstream_writer_ram_eos(w);
	qstream_writer_ram_begin(w, QSTREAM_RAM_COMPLETE, id);
	qstream_writer_ram_eos(w);
	qstream_writer_device(w, im->device, im->device_len);
	qstream_writer_flush(w);
	return qstream_writer_error(w);
}

int lvsave_write(const struct qckpt_image *im, bool running, const struct qstream_sink *sink,
		 char *err, size_t errlen)
{
	struct lvsave_header h;
	size_t xml_len = im->xml ? strlen(im->xml) : 0;
	struct qstream_writer *w;
	int ret;

	if (!xml_len || xml_len + 1 > UINT32_MAX || !im->device_len || !im->nblocks) {
		snprintf(err, errlen, "the image has no %s", !xml_len ? "domain XML" :
			 !im->nblocks ? "RAM blocks" : "device state");
		return -EINVAL;
	}
	for (unsigned b = 0; b < im->nblocks; b++)
		if (!im->ram[b]) {
			snprintf(err, errlen, "RAM block %s was not loaded", im->blocks[b].idstr);
			return -EINVAL;
		}
	lvsave_header(&h, xml_len, running);
	ret = sink->write(sink->opaque, &h, sizeof(h));
	if (!ret)
		ret = sink->write(sink->opaque, im->xml, xml_len + 1);	/* with its NUL */
	if (ret) {
		snprintf(err, errlen, "writing the save image's header: %s", strerror(-ret));
		return ret;
	}
	w = qstream_writer_new(sink);
	if (!w) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	ret = write_stream(im, w);
	if (ret)
		snprintf(err, errlen, "writing QEMU's stream: %s", qstream_writer_errmsg(w));
	qstream_writer_free(w);
	return ret;
}
